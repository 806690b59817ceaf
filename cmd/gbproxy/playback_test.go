package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
	"github.com/gbproxy/gbproxy/cmd/gbsim/sim/media"
)

// Recordings end to end: playback controlled with MANSRTSP, download ending
// with MediaStatus 121, and RecordInfo at NVR scale, through the proxy
// between the simulators over real sockets.

// waitPositions waits until the upper has n frames with a PS timestamp.
func waitPositions(t *testing.T, ctx context.Context, play *sim.Play, n int) []sim.Position {
	t.Helper()
	for {
		if pos := play.Positions(); len(pos) >= n {
			return pos
		}
		seen := play.Receiver().Stats().Packets
		if _, err := play.Receiver().Wait(ctx, func(s media.Stats) bool { return s.Packets > seen }); err != nil {
			t.Fatalf("only %d frames arrived, want %d: %v", len(play.Positions()), n, err)
		}
	}
}

// info sends a MANSRTSP request and wants the device's 200 with an RTSP 200
// body back.
func info(t *testing.T, ctx context.Context, play *sim.Play, body string) {
	t.Helper()
	status, answer, err := play.Info(ctx, body)
	if err != nil || status != 200 || !strings.HasPrefix(answer, "RTSP/1.0 200 OK") {
		t.Fatalf("INFO %q: status %d body %q err %v", strings.Fields(body)[0], status, answer, err)
	}
}

const clock = 90000 // PS and RTP timestamps run at 90 kHz

func TestPlaybackControl(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			rig := newLiveRig(t, rigOptions{sipTransport: transport})
			ctx := ctxTimeout(t, 40*time.Second)
			start := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
			end := start.Add(10 * time.Minute)
			play, err := rig.upper.Playback(ctx, proxyID, rig.ch, start, end, sim.PlayOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer play.Close()
			if play.Answer.Session != "Playback" || play.Answer.Start != start.Unix() || play.Answer.Stop != end.Unix() {
				t.Fatalf("answer to the upper: s=%s t=%d %d, want Playback %d %d", play.Answer.Session, play.Answer.Start, play.Answer.Stop, start.Unix(), end.Unix())
			}
			// The device's INVITE: its own channel, the same t=, a history SSRC.
			dev, err := rig.dev.WaitStream(ctx, func(s sim.StreamInfo) bool { return s.Offer.Session == "Playback" })
			if err != nil {
				t.Fatal(err)
			}
			if dev.ChannelID != rig.ch || dev.Offer.URI != rig.ch+":0" || dev.Offer.Start != start.Unix() || dev.Offer.Stop != end.Unix() || !strings.HasPrefix(dev.Offer.SSRC, "1") {
				t.Fatalf("device INVITE: channel %s u=%s t=%d %d y=%s", dev.ChannelID, dev.Offer.URI, dev.Offer.Start, dev.Offer.Stop, dev.Offer.SSRC)
			}
			pos := waitPositions(t, ctx, play, 10)
			if pos[0].PTS > 2*clock {
				t.Fatalf("playback starts at %.1f s, want the start of the range", float64(pos[0].PTS)/clock)
			}

			controlPlayback(t, ctx, play, rig.dev, dev.CallID)

			// Sessions lists it as a playback; after BYE nothing is left,
			// and INFO in the ended dialog gets 481.
			if s := rig.p.sessions(); len(s) != 1 || s[0].Kind != "playback" {
				t.Fatalf("sessions: %+v", s)
			}
			if err := play.Bye(ctx); err != nil {
				t.Fatal(err)
			}
			if status, _, err := play.Info(ctx, sim.RTSPPlay(5)); err != nil || status != 481 {
				t.Fatalf("INFO after BYE: %d %v, want 481", status, err)
			}
			requireClean(t, rig.p)
		})
	}
}

// A playback is never shared: two at once are two device calls.
func TestPlaybackNotShared(t *testing.T) {
	rig := newLiveRig(t, rigOptions{})
	ctx := ctxTimeout(t, 30*time.Second)
	start := time.Now().Add(-time.Hour).Truncate(time.Second)
	var plays []*sim.Play
	for range 2 {
		play, err := rig.upper.Playback(ctx, proxyID, rig.ch, start, start.Add(time.Minute), sim.PlayOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer play.Close()
		waitPositions(t, ctx, play, 5)
		plays = append(plays, play)
	}
	if _, streams, _ := rig.p.b2bua.Counts(); streams != 2 {
		t.Fatalf("%d device streams for two playbacks, want 2", streams)
	}
	// Seeking one leaves the other where it is.
	info(t, ctx, plays[0], sim.RTSPSeek(1, 50))
	n := len(plays[1].Positions())
	pos := waitPositions(t, ctx, plays[1], n+10)
	if last := pos[len(pos)-1].PTS; last > 10*clock {
		t.Fatalf("the other playback moved to %.1f s", float64(last)/clock)
	}
	// MANSRTSP on a live session is refused: the stream is shared.
	live := rig.startPlay(t, ctx, rig.upper, sim.PlayOptions{})
	defer live.Close()
	if status, _, err := live.Info(ctx, sim.RTSPPause(1)); err != nil || status != 488 {
		t.Fatalf("INFO on a live session: %d %v, want 488", status, err)
	}
}

// controlPlayback seeks play to 300 s, sets Scale 2, pauses and resumes,
// and proves each step from the PS timestamps the upper receives; then that
// the SSRC toward the upper never changed and that the device (dev, call
// devCall) got every INFO in its dialog, body unchanged, CSeq growing.
func controlPlayback(t *testing.T, ctx context.Context, play *sim.Play, dev *sim.Device, devCall string) {
	t.Helper()
	// Seek: the position jumps to 300 s.
	info(t, ctx, play, sim.RTSPSeek(1, 300))
	n := len(play.Positions())
	pos := waitPositions(t, ctx, play, n+15)
	last := pos[len(pos)-1]
	if last.PTS < 300*clock || last.PTS > 310*clock {
		t.Fatalf("after seeking to 300 s the position is %.1f s", float64(last.PTS)/clock)
	}

	// Scale 2: the position advances twice as fast as the sender's clock.
	info(t, ctx, play, sim.RTSPScale(2, 2))
	n = len(play.Positions()) + 3 // frames in flight were sent at the old pace
	pos = waitPositions(t, ctx, play, n+40)
	a, b := pos[n], pos[len(pos)-1]
	if ratio := float64(b.PTS-a.PTS) / float64(b.RTP-a.RTP); ratio < 1.8 || ratio > 2.2 {
		t.Fatalf("at Scale 2 the position advanced %.2f× the clock, want 2×", ratio)
	}

	// Pause: the position stands still while the clock runs on.
	info(t, ctx, play, sim.RTSPPause(3))
	const paused = 600 * time.Millisecond
	time.Sleep(paused) // the pause itself, not a synchronisation
	n = len(play.Positions())
	info(t, ctx, play, sim.RTSPPlay(4))
	pos = waitPositions(t, ctx, play, n+10)
	before, after := pos[n-1], pos[n]
	if clockGap := after.RTP - before.RTP; clockGap < uint32(paused.Seconds()*clock) {
		t.Fatalf("the sender's clock moved %d ticks across the pause, want ≥ %v", clockGap, paused)
	}
	if posGap := after.PTS - before.PTS; posGap > clock/4 {
		t.Fatalf("the position moved %.2f s across a pause, want one frame", float64(posGap)/clock)
	}

	// One SSRC toward the upper throughout; the device got every
	// INFO in its dialog, body unchanged, CSeq growing.
	for _, p := range play.Packets() {
		if p.SSRC != play.Packets()[0].SSRC {
			t.Fatalf("SSRC changed from %d to %d during control", play.Packets()[0].SSRC, p.SSRC)
		}
	}
	var cseqs []uint32
	var bodies []string
	for _, r := range dev.Requests() {
		if r.Method == "INFO" && r.Request.CallID().Value() == devCall {
			cseqs = append(cseqs, r.Request.CSeq().SeqNo)
			bodies = append(bodies, string(r.Request.Body()))
		}
	}
	want := []string{sim.RTSPSeek(1, 300), sim.RTSPScale(2, 2), sim.RTSPPause(3), sim.RTSPPlay(4)}
	if len(bodies) != len(want) {
		t.Fatalf("device got %d INFOs, want %d", len(bodies), len(want))
	}
	for i := range want {
		if bodies[i] != want[i] || (i > 0 && cseqs[i] <= cseqs[i-1]) {
			t.Fatalf("INFO %d at the device: CSeq %v body %q, want %q", i, cseqs, bodies[i], want[i])
		}
	}
}

func TestDownloadEndOfFile(t *testing.T) {
	for _, tc := range []struct {
		name      string
		transport string
		upperBye  bool
	}{
		{"upper BYE/udp", "udp", true},
		{"upper BYE/tcp", "tcp", true},
		{"grace/udp", "udp", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rig := newLiveRig(t, rigOptions{sipTransport: tc.transport, extraTop: "media:\n  end_of_file_grace: 1s\n"})
			ctx := ctxTimeout(t, 30*time.Second)
			start := time.Now().Add(-time.Hour).Truncate(time.Second)
			end := start.Add(4 * time.Second)
			play, err := rig.upper.Download(ctx, proxyID, rig.ch, start, end, 4, sim.PlayOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer play.Close()
			if play.Answer.Session != "Download" || play.Answer.FileSize != 4*256<<10 {
				t.Fatalf("answer to the upper: s=%s a=filesize:%d", play.Answer.Session, play.Answer.FileSize)
			}
			dev, err := rig.dev.WaitStream(ctx, func(s sim.StreamInfo) bool { return s.Offer.Session == "Download" })
			if err != nil {
				t.Fatal(err)
			}
			if dev.Offer.DownloadSpeed != 4 || !strings.HasPrefix(dev.Offer.SSRC, "1") {
				t.Fatalf("device INVITE: a=downloadspeed:%d y=%s", dev.Offer.DownloadSpeed, dev.Offer.SSRC)
			}
			ms, err := play.WaitMediaStatus(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if ms.DeviceID != rig.ch || !bytes.Contains(ms.Body, []byte("<NotifyType>121</NotifyType>")) {
				t.Fatalf("MediaStatus at the upper: %s", ms.Body)
			}
			// In the dialog: from our side of it (the channel the upper called, our tag).
			ourTag, _ := play.Response.To().Params.Get("tag")
			if tag, _ := ms.Request.From().Params.Get("tag"); tag != ourTag || ms.Request.From().Address.User != rig.ch || !ms.Request.To().Params.Has("tag") {
				t.Fatalf("MediaStatus not in the upper's dialog: From %s To %s", ms.Request.From().Value(), ms.Request.To().Value())
			}
			pos := play.Positions()
			if len(pos) == 0 || pos[len(pos)-1].PTS < 3*clock {
				t.Fatalf("download ended before the end of the range: %d frames", len(pos))
			}
			if tc.upperBye {
				if err := play.Bye(ctx); err != nil {
					t.Fatal(err)
				}
			} else {
				waitEnded(t, ctx, play, "end of file without the upper's BYE")
			}
			requireClean(t, rig.p)
			if s, _ := rig.dev.Stream(dev.CallID); !s.Ended {
				t.Fatal("the device call is still up")
			}
		})
	}
}

// TestRecordInfoAtScale: an NVR's 2,000 recordings, a few per MESSAGE,
// reach the upper complete and in its charset.
func TestRecordInfoAtScale(t *testing.T) {
	for _, tc := range []struct {
		transport string
		per       int
	}{{"udp", 2}, {"tcp", 25}} {
		t.Run(tc.transport, func(t *testing.T) {
			t.Parallel()
			rig := newLiveRig(t, rigOptions{sipTransport: tc.transport, platform: "      charset: utf-8",
				device: func(c *sim.DeviceConfig) { c.RecordsPerQuery, c.RecordsPerMessage = 2000, tc.per }})
			ctx := ctxTimeout(t, 60*time.Second)
			ans, err := rig.upper.Request(ctx, proxyID, "Query", "RecordInfo", rig.ch,
				sim.Field{Name: "StartTime", Value: "2026-11-24T00:00:00"}, sim.Field{Name: "EndTime", Value: "2026-11-25T00:00:00"},
				sim.Field{Name: "Type", Value: "all"})
			if err != nil {
				t.Fatal(err)
			}
			if !ans.Complete || ans.Items() != 2000 || len(ans.Bodies) != 2000/tc.per {
				t.Fatalf("RecordInfo: complete %v, %d items in %d bodies, want 2000 in %d", ans.Complete, ans.Items(), len(ans.Bodies), 2000/tc.per)
			}
			for _, b := range ans.Bodies {
				if b.Err != nil || b.SN != ans.SN || b.DeviceID != rig.ch || b.SumNum != 2000 {
					t.Fatalf("body: SN %d DeviceID %s SumNum %d err %v", b.SN, b.DeviceID, b.SumNum, b.Err)
				}
			}
			// On the wire the bodies are UTF-8, as the platform is configured.
			seen := 0
			for _, r := range rig.upper.Requests() {
				if r.CmdType != "RecordInfo" || r.SN != ans.SN {
					continue
				}
				seen++
				raw := r.Request.Body()
				if !bytes.Contains(bytes.ToLower(raw[:min(len(raw), 60)]), []byte(`encoding="utf-8"`)) || !bytes.Contains(raw, []byte("录像存储1")) {
					t.Fatalf("body not in UTF-8: %q", raw[:min(len(raw), 120)])
				}
			}
			if seen != len(ans.Bodies) {
				t.Fatalf("%d RecordInfo MESSAGEs in the journal, %d bodies", seen, len(ans.Bodies))
			}
		})
	}
}
