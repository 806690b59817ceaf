package b2bua

import (
	"cmp"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/b2bua/sdp"
	"github.com/gbproxy/gbproxy/directory"
	"github.com/gbproxy/gbproxy/endpoint"
)

// A cluster node registered to an upper platform takes its INVITEs for
// channels held by other nodes. It passes them on to the owning node's
// upper side as a signalling-only B2BUA: the same Call-ID, tags, CSeq and
// SDP, so that the owner answers as to the upper itself and its answer SDP
// (its own relay's upper-side address) reaches the upper unchanged. Media
// then flows between the owner's relay and the upper: one relay hop. We stay
// in the dialog's path (our Contact on both legs) and pass ACK, BYE, and
// INFO and in-dialog MESSAGE (MediaStatus at the end of a file) each way;
// the call ends when either side ends it, when the owner leaves the cluster
// (BYE to the upper), when the upper's registration is lost or the platform
// removed, through the API, or on Close (BYE both ways).
//
// The same runs the other way for a voice broadcast taken up on another
// node: that node calls the upper's voice source through us (signed,
// marked with directory.ToUpperHeader), as the platform takes calls only
// from the node registered to it; we pass the INVITE on to the platform.
//
// A request another node forwarded carries its signature header
// (directory.ForwardedHeader); an INVITE that would be forwarded again is
// refused 482: nodes that disagree about a channel's owner must not pass
// it around.

// forwarded is one call passed through this node: an upper's call to
// another node, or (toUpper) another node's call to an upper.
type forwarded struct {
	callID    string
	upperID   string
	toUpper   bool   // the caller is the node, the callee the upper
	callerTag string // the caller's From tag
	targetID  string // the channel (voice source) as the upper named it
	channelID string // and as the owner knows it
	deviceID  string
	kind      string        // the offer's s=, as the API shows it
	inv       *sip.Request  // the caller's INVITE
	caller    endpoint.Peer // where requests to the caller go
	callee    endpoint.Peer // where requests to the callee go
	node      string        // the other node
	out       *sip.Request  // our INVITE to the callee
	res       *sip.Response // the callee's 2xx, once answered
	gone      <-chan struct{}

	final      *finalAnswer // what every copy of the INVITE is answered
	answered   chan struct{}
	acked      chan struct{}
	ackOnce    sync.Once
	ended      chan struct{}
	endOnce    sync.Once
	calleeCSeq atomic.Uint32 // the highest CSeq of the callee's requests to the caller
	callerCSeq atomic.Uint32 // and of the caller's to the callee
	callerGone atomic.Bool   // the caller cancelled
	started    time.Time     // set with res
	log        zerolog.Logger
}

// callee names the side we call, for logs.
func (f *forwarded) calleeName() string {
	if f.toUpper {
		return "upper platform"
	}
	return "cluster node holding the channel"
}

// callerName names the side that called.
func (f *forwarded) callerName() string {
	if f.toUpper {
		return "cluster node calling the upper"
	}
	return "upper platform"
}

// forwardedCall is the forwarded call of Call-ID id.
func (b *B2BUA) forwardedCall(id string) *forwarded {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.fwd[id]
}

// forwardInvite takes an upper's INVITE when it is for a channel on another
// node, another node's INVITE for an upper, or a repeat of one it
// forwarded; false leaves it to this node.
func (b *B2BUA) forwardInvite(req *sip.Request, tx sip.ServerTransaction) bool {
	if f := b.forwardedCall(req.CallID().Value()); f != nil {
		select {
		case <-f.answered:
		case <-tx.Done():
			return true
		}
		respondFinal(b.upper, tx, req, f.final)
		return true
	}
	if tagOf(req.To().Params) != "" {
		return false
	}
	if req.GetHeader(directory.ForwardedHeader) != nil && req.GetHeader(directory.ToUpperHeader) != nil {
		b.forwardToUpper(req, tx)
		return true
	}
	target := req.Recipient.User
	if target == "" {
		target = req.To().Address.User
	}
	_, err := b.dir.Callee(req.From().Address.User, target)
	var rem *directory.RemoteError
	if !errors.As(err, &rem) {
		return false
	}
	if req.GetHeader(directory.ForwardedHeader) != nil {
		b.log.Warn().Str("call_id", req.CallID().Value()).Str("target_id", target).Str("node", rem.Node).Str("remote", req.Source()).
			Msg("INVITE forwarded by another cluster node is for a channel this node places on a third one; refused 482 rather than forwarded again")
		b.metrics.Inc("gbproxy_calls_total", "platform", b.platformLabel(req.From().Address.User), "result", "482")
		b.upper.Respond(tx, req, sip.StatusLoopDetected, "Loop Detected (forwarded once already)", nil)
		return true
	}
	kind := kindLive
	if offer, err := sdp.Parse(req.Body()); err == nil {
		kind = cmp.Or(sessionKind(offer.Name), kindLive)
	}
	host, port := endpoint.SplitHostPort(rem.Addr)
	uri := req.Recipient
	uri.Host, uri.Port = host, port
	f := &forwarded{
		callID: req.CallID().Value(), upperID: req.From().Address.User, callerTag: tagOf(req.From().Params),
		targetID: target, channelID: rem.ChannelID, deviceID: rem.DeviceID, kind: kind,
		inv: req, caller: endpoint.PeerOf(req), callee: endpoint.Peer{Transport: "UDP", Addr: rem.Addr}, node: rem.Node, gone: rem.Gone,
	}
	b.startForward(f, req, tx, uri)
	return true
}

// forwardToUpper passes another node's INVITE (verified by the upper
// guard) on to the upper platform it names, when we are registered to it.
func (b *B2BUA) forwardToUpper(req *sip.Request, tx sip.ServerTransaction) {
	log := b.log.With().Str("call_id", req.CallID().Value()).Str("target_id", req.Recipient.User).Str("remote", req.Source()).Logger()
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.Lower.InviteTimeout)
	rt, err := b.dir.ToUpper(ctx, req)
	cancel()
	if err != nil {
		log.Warn().Err(err).Msg("INVITE another cluster node passes through us to an upper platform refused 503")
		b.upper.Respond(tx, req, sip.StatusServiceUnavailable, "Service Unavailable ("+phraseSafe.Replace(err.Error())+")", nil)
		return
	}
	f := &forwarded{
		callID: req.CallID().Value(), upperID: rt.UpperID, toUpper: true, callerTag: tagOf(req.From().Params),
		targetID: req.Recipient.User, kind: "broadcast", // as the API lists broadcasts
		inv: req, caller: endpoint.Peer{Transport: "UDP", Addr: rt.NodeAddr}, callee: rt.Peer, node: rt.Node, gone: rt.Gone,
	}
	b.startForward(f, req, tx, rt.URI)
}

// startForward registers f and runs its INVITE toward uri.
func (b *B2BUA) startForward(f *forwarded, req *sip.Request, tx sip.ServerTransaction, uri sip.Uri) {
	f.answered, f.acked, f.ended = make(chan struct{}), make(chan struct{}), make(chan struct{})
	f.callerCSeq.Store(req.CSeq().SeqNo)
	f.log = b.log.With().Str("call_id", f.callID).Str("upper_id", f.upperID).Str("target_id", f.targetID).
		Str("node", f.node).Bool("to_upper", f.toUpper).Logger()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		b.upper.Respond(tx, req, sip.StatusServiceUnavailable, "Service Unavailable (proxy shutting down)", nil)
		return
	}
	b.fwd[f.callID] = f
	b.mu.Unlock()
	b.runForward(f, req, tx, uri)
}

// runForward runs our INVITE transaction with the callee and answers the
// caller with what the callee answers.
func (b *B2BUA) runForward(f *forwarded, req *sip.Request, tx sip.ServerTransaction, uri sip.Uri) {
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.Lower.InviteTimeout)
	defer cancel()
	tx.OnCancel(func(*sip.Request) { f.callerGone.Store(true); cancel() })
	go func() {
		select {
		case <-f.gone:
			cancel()
		case <-ctx.Done():
		}
	}()
	b.upper.Respond(tx, req, sip.StatusTrying, "Trying", nil)
	f.out = b.upper.Forward(req, uri, f.callee)
	otx, err := b.upper.Transaction(ctx, f.out)
	if err != nil {
		b.refuseForward(f, req, tx, sip.StatusServiceUnavailable, "Service Unavailable ("+f.calleeName()+" unreachable)")
		return
	}
	provisional := false
	for {
		res, err := b.upper.NextResponse(ctx, f.out, otx)
		switch {
		case err != nil && ctx.Err() != nil:
			b.cancelInvite(b.upper, f.out, otx, provisional, f.log, func(res *sip.Response) {
				f.res = res
				b.ackCallee(f)
				b.byeCallee(f)
			})
			if f.callerGone.Load() {
				// sipgo answered the CANCEL 200 and the INVITE 487.
				f.final = &finalAnswer{code: sip.StatusRequestTerminated, reason: "Request Terminated"}
				close(f.answered)
				b.endForward(f, "cancelled by the "+f.callerName(), false, false)
				return
			}
			b.refuseForward(f, req, tx, sip.StatusRequestTimeout, "Request Timeout ("+f.calleeName()+" did not answer)")
			return
		case err != nil:
			otx.Terminate()
			b.refuseForward(f, req, tx, sip.StatusRequestTimeout, "Request Timeout ("+f.calleeName()+" did not answer)")
			return
		case res.IsProvisional():
			provisional = true
			if res.StatusCode > sip.StatusTrying {
				b.upper.RespondWith(tx, req, b.toCaller(f, res).response(b.upper, req))
			}
		case res.IsSuccess():
			otx.OnRetransmission(func(r *sip.Response) {
				if r.IsSuccess() {
					b.ackCallee(f) // our ACK was lost: the callee repeats its 200
				}
			})
			b.answerForward(f, req, tx, res)
			return
		default:
			otx.Terminate()
			f.final = b.toCaller(f, res)
			close(f.answered)
			respondFinal(b.upper, tx, req, f.final)
			f.log.Info().Int("status", res.StatusCode).Msg("forwarded INVITE refused by the " + f.calleeName())
			b.endForward(f, "refused by the "+f.calleeName(), false, false)
			return
		}
	}
}

func (b *B2BUA) refuseForward(f *forwarded, req *sip.Request, tx sip.ServerTransaction, code int, reason string) {
	f.log.Warn().Int("status", code).Msg("forwarded INVITE failed: " + reason)
	f.final = &finalAnswer{code: code, reason: reason}
	close(f.answered)
	respondFinal(b.upper, tx, req, f.final)
	b.endForward(f, "set-up failed", false, false)
}

// toCaller is the callee's answer as ours: its code, reason, To tag and body
// unchanged, our Contact so that the dialog's requests come through us.
func (b *B2BUA) toCaller(f *forwarded, res *sip.Response) *finalAnswer {
	headers := []sip.Header{sip.HeaderClone(res.To())}
	if res.StatusCode/100 == 2 || res.StatusCode/100 == 1 {
		headers = append(headers, &sip.ContactHeader{Address: b.upper.Contact(b.cfg.ID, f.caller)})
	}
	if ct := res.GetHeader("Content-Type"); ct != nil {
		headers = append(headers, sip.HeaderClone(ct))
	}
	return &finalAnswer{code: res.StatusCode, reason: res.Reason, body: res.Body(), headers: headers}
}

// answerForward passes the callee's 2xx to the caller and keeps the call
// until either side ends it or the other node leaves the cluster.
func (b *B2BUA) answerForward(f *forwarded, req *sip.Request, tx sip.ServerTransaction, res *sip.Response) {
	f.res, f.started = res, time.Now()
	f.final = b.toCaller(f, res)
	close(f.answered)
	respondFinal(b.upper, tx, req, f.final)
	f.log.Info().Msg("forwarded call answered by the " + f.calleeName() + "; its media flows between the other node's relay and the upper platform")
	b.goTracked(func() {
		if !b.awaitAck(b.upper, req, f.final, f.acked, f.log) {
			f.log.Warn().Msg("no ACK from the " + f.callerName() + " for the forwarded 200 OK; ending the call")
			b.endForward(f, "no ACK", true, true)
		}
	})
	b.goTracked(func() {
		select {
		case <-f.gone:
			// BYE to the upper, whichever side it is.
			f.log.Warn().Msg("the other cluster node of a forwarded call left the cluster; ending the call")
			b.endForward(f, "owning node gone", !f.toUpper, f.toUpper)
		case <-f.ended:
		case <-b.ctx.Done():
		}
	})
}

// forwardedAck passes the caller's ACK of a forwarded call on; false when
// req is not one.
func (b *B2BUA) forwardedAck(req *sip.Request) bool {
	f := b.forwardedCall(req.CallID().Value())
	if f == nil {
		return false
	}
	if f.answeredOK() {
		f.ackOnce.Do(func() { close(f.acked) })
		b.ackCallee(f)
	}
	return true
}

// ackCallee acknowledges the callee's 2xx (after the caller's ACK).
func (b *B2BUA) ackCallee(f *forwarded) {
	ack := b.outRequest(f, sip.ACK, f.out.CSeq().SeqNo)
	if err := b.upper.WriteRequest(ack); err != nil {
		f.log.Warn().Err(err).Msg("ACK to the " + f.calleeName() + " failed")
	}
}

// outRequest is a request of ours in the dialog with the callee, as the
// caller's side of it.
func (b *B2BUA) outRequest(f *forwarded, method sip.RequestMethod, cseq uint32) *sip.Request {
	target := f.out.Recipient
	if ct := f.res.Contact(); ct != nil {
		target = ct.Address
	}
	return inDialog(b.upper, method, target, f.callee, sip.HeaderClone(f.out.From()).(*sip.FromHeader),
		sip.HeaderClone(f.res.To()).(*sip.ToHeader), f.callID, cseq)
}

// ForwardedMessage passes a MESSAGE inside a forwarded call (the owner's
// MediaStatus at the end of a file, GB/T 28181 §9.8) to the other side;
// false when req is not of one. The cascade hands it every in-dialog
// MESSAGE of the upper side first.
func (b *B2BUA) ForwardedMessage(req *sip.Request, tx sip.ServerTransaction) bool {
	return b.forwardedInDialog(req, tx)
}

// forwardedInDialog passes a BYE, INFO or MESSAGE of a forwarded call to
// the other side and its answer back; a BYE ends the call. False when req
// is not of a forwarded call.
func (b *B2BUA) forwardedInDialog(req *sip.Request, tx sip.ServerTransaction) bool {
	f := b.forwardedCall(req.CallID().Value())
	if f == nil || !f.answeredOK() {
		return false
	}
	fromCaller := tagOf(req.From().Params) == f.callerTag
	fromUpper := fromCaller != f.toUpper
	var out *sip.Request
	if fromCaller {
		target := f.out.Recipient
		if ct := f.res.Contact(); ct != nil {
			target = ct.Address
		}
		f.callerCSeq.Store(max(f.callerCSeq.Load(), req.CSeq().SeqNo))
		out = b.upper.Forward(req, target, f.callee)
	} else {
		f.calleeCSeq.Store(max(f.calleeCSeq.Load(), req.CSeq().SeqNo))
		out = b.upper.Forward(req, upperTarget(f.inv), f.caller)
	}
	if req.Method == sip.BYE {
		b.mu.Lock()
		delete(b.fwd, f.callID) // an INFO right behind the BYE finds no session
		b.mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(b.ctx, byeTimeout)
	defer cancel()
	res, err := b.upper.Do(ctx, out)
	switch {
	case err != nil && req.Method == sip.BYE:
		f.log.Warn().Err(err).Bool("from_upper", fromUpper).Msg("BYE not taken by the other side of a forwarded call; ended here")
		b.upper.Respond(tx, req, sip.StatusOK, "OK", nil)
	case err != nil:
		b.upper.Respond(tx, req, sip.StatusRequestTimeout, "Request Timeout", nil)
	default:
		b.upper.Respond(tx, req, res.StatusCode, res.Reason, res.Body(), copyHeader(res, "Content-Type")...)
	}
	if req.Method == sip.BYE {
		reason := "owning node BYE"
		if fromUpper {
			reason = reasonUpperBye
		}
		b.endForward(f, reason, false, false)
	}
	return true
}

func copyHeader(res *sip.Response, name string) []sip.Header {
	if h := res.GetHeader(name); h != nil {
		return []sip.Header{sip.HeaderClone(h)}
	}
	return nil
}

// upperTarget is where the caller's INVITE says its dialog requests go.
func upperTarget(inv *sip.Request) sip.Uri {
	if ct := inv.Contact(); ct != nil {
		return ct.Address
	}
	return inv.From().Address
}

// endForward forgets a forwarded call, sending BYE to the sides asked.
func (b *B2BUA) endForward(f *forwarded, reason string, byeCaller, byeCallee bool) {
	f.endOnce.Do(func() {
		b.mu.Lock()
		if b.fwd[f.callID] == f {
			delete(b.fwd, f.callID)
		}
		b.mu.Unlock()
		close(f.ended)
		if byeCaller && f.answeredOK() {
			b.byeCaller(f)
		}
		if byeCallee && f.answeredOK() {
			b.byeCallee(f)
		}
		b.metrics.Inc("gbproxy_call_ends_total", "reason", reasonLabel(reason))
		f.log.Info().Str("reason", reason).Msg("forwarded call ended")
	})
}

// byeCaller ends the caller's dialog as the callee's side of it.
func (b *B2BUA) byeCaller(f *forwarded) {
	from := sip.HeaderClone(f.res.To()).(*sip.ToHeader)
	to := sip.HeaderClone(f.inv.From()).(*sip.FromHeader)
	cseq := max(f.calleeCSeq.Load(), f.inv.CSeq().SeqNo) + 1
	req := inDialog(b.upper, sip.BYE, upperTarget(f.inv), f.caller,
		&sip.FromHeader{DisplayName: from.DisplayName, Address: from.Address, Params: from.Params},
		&sip.ToHeader{DisplayName: to.DisplayName, Address: to.Address, Params: to.Params}, f.callID, cseq)
	ctx, cancel := context.WithTimeout(context.Background(), byeTimeout)
	defer cancel()
	if res, err := b.upper.Do(ctx, req); err != nil || !res.IsSuccess() {
		f.log.Warn().Err(err).Int("status", statusOf(res)).Msg(f.callerName() + " did not take our BYE of a forwarded call")
	}
}

// byeCallee ends the dialog with the callee as the caller's side of it.
func (b *B2BUA) byeCallee(f *forwarded) {
	req := b.outRequest(f, sip.BYE, f.callerCSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), byeTimeout)
	defer cancel()
	if res, err := b.upper.Do(ctx, req); err != nil || !res.IsSuccess() {
		f.log.Warn().Err(err).Int("status", statusOf(res)).Msg(f.calleeName() + " did not take our BYE of a forwarded call")
	}
}

// endForwards ends the answered forwarded calls that keep says, BYE both
// ways, each through run.
func (b *B2BUA) endForwards(keep func(*forwarded) bool, reason string, run func(func())) {
	for _, f := range b.forwardedList(func(f *forwarded) bool { return f.answeredOK() && keep(f) }) {
		run(func() { b.endForward(f, reason, true, true) })
	}
}

// forwardedSessions are the answered forwarded calls as the API shows
// them: Node is the owner, which relays the media and has the counters.
func (b *B2BUA) forwardedSessions() []Session {
	var out []Session
	for _, f := range b.forwardedList(func(f *forwarded) bool { return f.answeredOK() }) {
		upper := f.caller
		if f.toUpper {
			upper = f.callee
		}
		out = append(out, Session{
			CallID: f.callID, ChannelID: f.channelID, UpperID: f.upperID, Kind: sessionLabel(f.kind),
			UpperTransport: upper.Transport, StartedAt: f.started, DeviceID: f.deviceID, UpperChannelID: f.targetID, Node: f.node,
		})
	}
	return out
}

// forwardedList is a copy of the forwarded calls that keep says.
func (b *B2BUA) forwardedList(keep func(*forwarded) bool) []*forwarded {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*forwarded
	for _, f := range b.fwd {
		if keep(f) {
			out = append(out, f)
		}
	}
	return out
}

// answeredOK: the callee's 2xx is in (f.res may be read).
func (f *forwarded) answeredOK() bool {
	select {
	case <-f.answered:
		return f.final.ok()
	default:
		return false
	}
}
