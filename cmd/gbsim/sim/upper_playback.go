package sim

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim/media"
)

// Playback asks a registered lower for the recording of channelID between start and end (GB/T
// 28181 §9.8): INVITE s=Playback with u=<channel>:0, t=<start> <end> and a history SSRC (first
// digit 1). The call is a *Play: media, Bye and Close work as for live video; Info controls it.
func (u *Upper) Playback(ctx context.Context, lowerID, channelID string, start, end time.Time, opts PlayOptions) (*Play, error) {
	return u.call(ctx, lowerID, channelID, callSpec{session: "Playback", timing: timing(start, end)}, opts)
}

// Download asks for the recording as Playback does, with s=Download and a=downloadspeed:speed
// (the device sends speed times faster than real time). The answer's a=filesize is in
// Play.Answer.FileSize.
func (u *Upper) Download(ctx context.Context, lowerID, channelID string, start, end time.Time, speed int, opts PlayOptions) (*Play, error) {
	return u.call(ctx, lowerID, channelID, callSpec{session: "Download", timing: timing(start, end),
		attrs: []string{"a=downloadspeed:" + strconv.Itoa(speed)}}, opts)
}

func timing(start, end time.Time) string {
	return "t=" + strconv.FormatInt(start.Unix(), 10) + " " + strconv.FormatInt(end.Unix(), 10)
}

// MANSRTSP request bodies (GB/T 28181 Annex B) for Info. cseq is the RTSP CSeq.
func RTSPPlay(cseq int) string {
	return fmt.Sprintf("PLAY RTSP/1.0\r\nCSeq: %d\r\nRange: npt=now-\r\n", cseq)
}
func RTSPSeek(cseq int, sec float64) string {
	return fmt.Sprintf("PLAY RTSP/1.0\r\nCSeq: %d\r\nRange: npt=%s-\r\n", cseq, strconv.FormatFloat(sec, 'f', -1, 64))
}
func RTSPScale(cseq int, x float64) string {
	return fmt.Sprintf("PLAY RTSP/1.0\r\nCSeq: %d\r\nScale: %s\r\n", cseq, strconv.FormatFloat(x, 'f', -1, 64))
}
func RTSPPause(cseq int) string {
	return fmt.Sprintf("PAUSE RTSP/1.0\r\nCSeq: %d\r\nPauseTime: now\r\n", cseq)
}
func RTSPTeardown(cseq int) string { return fmt.Sprintf("TEARDOWN RTSP/1.0\r\nCSeq: %d\r\n", cseq) }

// Info sends an INFO with a MANSRTSP body in the call's dialog and returns the final answer: its
// status and body (the MANSRTSP response).
func (p *Play) Info(ctx context.Context, mansrtsp string) (int, string, error) {
	p.sendMu.Lock()
	req := p.dlg.newRequest(sip.INFO, p.route.dest, p.route.transport)
	p.sendMu.Unlock()
	req.AppendHeader(&sip.ContactHeader{Address: contactURI(p.u.cfg.ID, p.u.addr)})
	req.AppendHeader(sip.NewHeader("User-Agent", userAgent))
	ct := sip.ContentTypeHeader("Application/MANSRTSP")
	req.AppendHeader(&ct)
	req.SetBody([]byte(mansrtsp))
	res, err := p.route.client.Do(ctx, req)
	if err != nil {
		return 0, "", fmt.Errorf("INFO to lower %s (Call-ID %s): %w", p.LowerID, p.callID, err)
	}
	return res.StatusCode, string(res.Body()), nil
}

// WaitMediaStatus waits for a MediaStatus MESSAGE received in this call's dialog (answered 200 by
// the upper) and returns it.
func (p *Play) WaitMediaStatus(ctx context.Context) (Received, error) {
	return p.u.journal.wait(ctx, "MediaStatus in call "+p.callID, func(r Received) bool {
		return r.Method == "MESSAGE" && strings.EqualFold(r.CmdType, "MediaStatus") &&
			r.Request.CallID() != nil && r.Request.CallID().Value() == p.callID
	})
}

// Position is one received frame of a playback: its RTP timestamp (the sender's clock) and its PS
// presentation time (the position in the recording), both at 90 kHz.
type Position struct {
	RTP uint32
	PTS uint64
}

// Positions pairs the received frames, in order, with the PTS of their program stream. A frame
// still arriving is left out.
func (p *Play) Positions() []Position {
	pkts, payload := p.receiver.Packets(), p.receiver.Payload()
	var frames []uint32
	for i, pk := range pkts {
		if i == 0 || pk.Timestamp != pkts[i-1].Timestamp || pkts[i-1].Marker {
			frames = append(frames, pk.Timestamp)
		}
	}
	d, _ := media.Demux(payload) // the last frame may be incomplete
	if d == nil {
		return nil
	}
	n := min(len(frames), len(d.PTS))
	out := make([]Position, n)
	for i := range n {
		out[i] = Position{RTP: frames[i], PTS: d.PTS[i]}
	}
	return out
}
