package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
)

// Recordings three levels deep (upper ← top proxy ← middle proxy ← camera):
// each MANSRTSP INFO crosses two dialogs on its way down, each with its own
// CSeq, and the camera's MediaStatus crosses them on its way up.

// TestChainPlaybackControl: the upper plays a recording of the mapped
// channel, seeks, changes speed and pauses; the PS timestamps it receives
// prove each step, and BYE clears both proxies.
func TestChainPlaybackControl(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			r := newChainRig(t, transport, "", nil)
			ctx := ctxTimeout(t, 40*time.Second)
			start := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
			end := start.Add(10 * time.Minute)
			play, err := r.upper.Playback(ctx, proxyID, mappedTarget, start, end, sim.PlayOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer play.Close()
			if play.Answer.Session != "Playback" || play.Answer.Start != start.Unix() || play.Answer.Stop != end.Unix() {
				t.Fatalf("answer to the upper: s=%s t=%d %d, want Playback %d %d", play.Answer.Session, play.Answer.Start, play.Answer.Stop, start.Unix(), end.Unix())
			}
			cam, err := r.cam.WaitStream(ctx, func(s sim.StreamInfo) bool { return s.Offer.Session == "Playback" })
			if err != nil {
				t.Fatal(err)
			}
			if cam.ChannelID != r.ch || cam.Offer.URI != r.ch+":0" || cam.Offer.Start != start.Unix() || cam.Offer.Stop != end.Unix() || !strings.HasPrefix(cam.Offer.SSRC, "1") {
				t.Fatalf("camera INVITE: channel %s u=%s t=%d %d y=%s", cam.ChannelID, cam.Offer.URI, cam.Offer.Start, cam.Offer.Stop, cam.Offer.SSRC)
			}
			if pos := waitPositions(t, ctx, play, 10); pos[0].PTS > 2*clock {
				t.Fatalf("playback starts at %.1f s, want the start of the range", float64(pos[0].PTS)/clock)
			}
			controlPlayback(t, ctx, play, r.cam, cam.CallID)
			topS, midS := r.top.sessions(), r.mid.sessions()
			if len(topS) != 1 || len(midS) != 1 || topS[0].Kind != "playback" || midS[0].Kind != "playback" {
				t.Fatalf("sessions: top %+v, middle %+v", topS, midS)
			}
			if err := play.Bye(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := r.cam.WaitStream(ctx, func(s sim.StreamInfo) bool { return s.CallID == cam.CallID && s.Ended }); err != nil {
				t.Fatal("camera call not ended three levels down: ", err)
			}
			requireClean(t, r.top)
			requireClean(t, r.mid)
		})
	}
}

// TestChainDownloadEndOfFile: a download's a=downloadspeed reaches the
// camera and its a=filesize the upper; the camera's MediaStatus 121 arrives
// in the upper's dialog under the mapped ID; the upper's BYE then closes the
// session at both proxies and the camera.
func TestChainDownloadEndOfFile(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			r := newChainRig(t, transport, "", nil)
			ctx := ctxTimeout(t, 30*time.Second)
			start := time.Now().Add(-time.Hour).Truncate(time.Second)
			end := start.Add(4 * time.Second)
			play, err := r.upper.Download(ctx, proxyID, mappedTarget, start, end, 4, sim.PlayOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer play.Close()
			if play.Answer.Session != "Download" || play.Answer.FileSize != 4*256<<10 {
				t.Fatalf("answer to the upper: s=%s a=filesize:%d", play.Answer.Session, play.Answer.FileSize)
			}
			cam, err := r.cam.WaitStream(ctx, func(s sim.StreamInfo) bool { return s.Offer.Session == "Download" })
			if err != nil {
				t.Fatal(err)
			}
			if cam.ChannelID != r.ch || cam.Offer.DownloadSpeed != 4 || !strings.HasPrefix(cam.Offer.SSRC, "1") {
				t.Fatalf("camera INVITE: channel %s a=downloadspeed:%d y=%s", cam.ChannelID, cam.Offer.DownloadSpeed, cam.Offer.SSRC)
			}
			ms, err := play.WaitMediaStatus(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if ms.DeviceID != mappedTarget || !bytes.Contains(ms.Body, []byte("<NotifyType>121</NotifyType>")) || bytes.Contains(ms.Body, []byte(r.ch)) {
				t.Fatalf("MediaStatus at the upper, want DeviceID %s and no local ID:\n%s", mappedTarget, ms.Body)
			}
			ourTag, _ := play.Response.To().Params.Get("tag")
			if tag, _ := ms.Request.From().Params.Get("tag"); tag != ourTag || ms.Request.From().Address.User != mappedTarget || !ms.Request.To().Params.Has("tag") {
				t.Fatalf("MediaStatus not in the upper's dialog: From %s To %s", ms.Request.From().Value(), ms.Request.To().Value())
			}
			if pos := play.Positions(); len(pos) == 0 || pos[len(pos)-1].PTS < 3*clock {
				t.Fatalf("download ended before the end of the range: %d frames", len(pos))
			}
			if err := play.Bye(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := r.cam.WaitStream(ctx, func(s sim.StreamInfo) bool { return s.CallID == cam.CallID && s.Ended }); err != nil {
				t.Fatal("camera call not ended three levels down: ", err)
			}
			requireClean(t, r.top)
			requireClean(t, r.mid)
		})
	}
}
