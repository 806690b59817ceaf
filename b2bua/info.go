package b2bua

import (
	"context"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/endpoint"
)

// MANSRTSP playback control (GB/T 28181 §9.8.2, Annex B): the upper's INFO
// in its dialog goes to the device in ours, body unchanged; the device's
// answer comes back. The relay leg is left alone: a pause, seek or speed
// change only changes what the device sends on it.

// inDialogTimeout bounds one request we send inside a dialog (INFO,
// MESSAGE): a peer that is gone must not hold the handler.
const inDialogTimeout = 5 * time.Second

func (b *B2BUA) requestContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.ctx, inDialogTimeout)
}

// handleUpperInfo forwards a MANSRTSP INFO to the device of the upper's
// playback or download.
func (b *B2BUA) handleUpperInfo(req *sip.Request, tx sip.ServerTransaction) {
	if b.forwardedInDialog(req, tx) {
		return
	}
	b.mu.Lock()
	c := b.calls[dialogKey(req.CallID().Value(), tagOf(req.From().Params))]
	if c != nil && (!c.live() || tagOf(req.To().Params) != c.localTag || req.From().Address.User != c.upperID) {
		c = nil
	}
	b.mu.Unlock()
	if c == nil {
		b.log.Info().Str("call_id", req.CallID().Value()).Str("remote", req.Source()).Msg("INFO outside any session answered 481")
		b.upper.Respond(tx, req, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist", nil)
		return
	}
	st := c.st
	if st.kind == kindLive {
		// A live stream is shared: one viewer must not pause it for all.
		b.upper.Respond(tx, req, sip.StatusNotAcceptableHere, "Not Acceptable Here (MANSRTSP controls playback and download only)", nil)
		return
	}
	if ct := endpoint.HeaderValue(req, "Content-Type"); !strings.EqualFold(strings.TrimSpace(ct), "Application/MANSRTSP") {
		b.upper.Respond(tx, req, sip.StatusUnsupportedMediaType, "Unsupported Media Type (want Application/MANSRTSP)", nil,
			sip.NewHeader("Accept", "Application/MANSRTSP"))
		return
	}
	inv, res := st.dialog()
	if res == nil {
		b.upper.Respond(tx, req, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist", nil)
		return
	}
	out := b.deviceRequest(st, sip.INFO, inv, res, st.nextCSeq())
	out.AppendHeader(sip.NewHeader("Content-Type", "Application/MANSRTSP"))
	out.SetBody(req.Body())
	log := c.log.With().Str("channel_id", st.channelID).Str("lower_call_id", st.callID).Str("mansrtsp", rtspMethod(req.Body())).Logger()
	ctx, cancel := b.requestContext()
	defer cancel()
	ans, err := b.lower.Do(ctx, out)
	if err != nil {
		log.Warn().Err(err).Msg("device did not answer the forwarded MANSRTSP INFO")
		b.upper.Respond(tx, req, sip.StatusRequestTimeout, "Request Timeout (device did not answer)", nil)
		return
	}
	var headers []sip.Header
	if ct := ans.ContentType(); ct != nil {
		headers = append(headers, sip.NewHeader("Content-Type", ct.Value()))
	}
	b.upper.Respond(tx, req, ans.StatusCode, ans.Reason, ans.Body(), headers...)
	log.Info().Int("status", ans.StatusCode).Msg("MANSRTSP INFO forwarded to the device")
}

// rtspMethod is the first word of a MANSRTSP body (PLAY, PAUSE,
// TEARDOWN), at most 16 bytes, for the log.
func rtspMethod(body []byte) string {
	f := strings.Fields(string(body[:min(len(body), 64)]))
	if len(f) == 0 {
		return ""
	}
	return f[0][:min(len(f[0]), 16)]
}
