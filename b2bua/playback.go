package b2bua

import (
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
	"github.com/gbproxy/gbproxy/endpoint"
	"github.com/gbproxy/gbproxy/security"
)

// Recordings (GB/T 28181 §9.8, §9.9): a playback or download is bridged
// like live video, but each INVITE gets a device call of its own, the
// upper controls it with MANSRTSP in INFO (info.go), and the device tells
// the end of the file with a MediaStatus MESSAGE in its dialog.

// The s= of the calls we bridge.
const (
	kindLive     = "Play"
	kindPlayback = "Playback"
	kindDownload = "Download"
)

// sessionKind is the s= we bridge for an offer's s= (any case), or "".
func sessionKind(name string) string {
	for _, k := range [...]string{kindLive, kindPlayback, kindDownload} {
		if strings.EqualFold(strings.TrimSpace(name), k) {
			return k
		}
	}
	return ""
}

// sessionLabel is a session's kind as the API shows it.
func sessionLabel(kind string) string {
	if kind == kindLive {
		return "live"
	}
	return strings.ToLower(kind)
}

// DeviceDialogMessage takes a device's MESSAGE sent inside one of our
// device dialogs (the cascade has answered it 200): a MediaStatus is
// forwarded into the upper's dialog with the IDs and charset the upper
// knows. It reports whether the MESSAGE was ours.
func (b *B2BUA) DeviceDialogMessage(deviceID string, req *sip.Request) bool {
	b.mu.Lock()
	st := b.byLower[req.CallID().Value()]
	var c *call
	if st != nil && st.kind != kindLive {
		for _, cc := range b.calls {
			if cc.st == st && cc.live() {
				c = cc
				break
			}
		}
	}
	b.mu.Unlock()
	if st == nil || st.deviceID != deviceID {
		return false
	}
	if _, res := st.dialog(); res == nil || tagOf(req.From().Params) != tagOf(res.To().Params) {
		return false
	}
	var n manscdp.MediaStatusNotify
	if err := manscdp.Decode(req.Body(), &n); err != nil || !strings.EqualFold(n.CmdType, manscdp.CmdMediaStatus) {
		return false
	}
	if c == nil {
		st.log.Info().Str("notify_type", n.NotifyType).Msg("media status from the device after its session ended; nothing to forward")
		return true
	}
	eof := strings.TrimSpace(n.NotifyType) == manscdp.MediaStatusEndOfFile
	c.log.Info().Str("channel_id", st.channelID).Str("lower_call_id", st.callID).Str("notify_type", n.NotifyType).
		Bool("end_of_file", eof).Msg("media status from the device; forwarding it to the upper platform")
	identity := security.ForwardIdentity(b.cfg.GatewayID(), endpoint.HeaderValue(req, security.MonitorUserIdentityHeader), deviceID)
	b.goTracked(func() {
		b.forwardMediaStatus(c, req.Body(), identity)
		if eof {
			b.awaitEndOfFileBye(c)
		}
	})
	return true
}

// forwardMediaStatus sends the device's MediaStatus as a MESSAGE in the
// upper's dialog.
func (b *B2BUA) forwardMediaStatus(c *call, body []byte, identity string) {
	out, err := b.dir.ForUpper(c.upperID, body)
	if err != nil {
		c.log.Warn().Err(err).Msg("media status could not be rewritten for the upper platform; not forwarded")
		return
	}
	req := b.upperRequest(c, sip.MESSAGE)
	req.AppendHeader(sip.NewHeader(security.MonitorUserIdentityHeader, identity))
	req.AppendHeader(sip.NewHeader("Content-Type", "Application/MANSCDP+xml"))
	req.SetBody(out)
	ctx, cancel := b.requestContext()
	defer cancel()
	res, err := b.upper.Do(ctx, req)
	if err != nil || !res.IsSuccess() {
		c.log.Warn().Err(err).Int("status", statusOf(res)).Msg("upper platform did not take the media status")
	}
}

// awaitEndOfFileBye ends a session whose file ended unless the upper hangs
// up within media.end_of_file_grace.
func (b *B2BUA) awaitEndOfFileBye(c *call) {
	grace := b.cfg.Media.EndOfFileGrace
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.ended:
	case <-b.ctx.Done():
	case <-t.C:
		b.endCall(c, "end of file: no BYE from the upper within media.end_of_file_grace ("+grace.String()+")", true)
	}
}
