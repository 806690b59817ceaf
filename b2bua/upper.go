package b2bua

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/b2bua/sdp"
	"github.com/gbproxy/gbproxy/directory"
	"github.com/gbproxy/gbproxy/endpoint"
	"github.com/gbproxy/gbproxy/relay"
)

// call is one upper platform's dialog with us.
type call struct {
	key      string // Call-ID;upper tag
	callID   string
	upperID  string
	targetID string // the channel ID the upper asked for
	invite   *sip.Request
	peer     endpoint.Peer // where our requests to the upper go
	localTag string
	started  time.Time
	cseq     atomic.Uint32 // of our last request in the upper's dialog

	// set while setting up; st and sink are fixed once answered
	cancel   context.CancelFunc
	st       *stream
	sink     *relay.Sink
	ssrc     uint32
	ssrcHeld bool // ssrc is in the pool on this call's behalf
	talkBack bool // the upper's media on its leg goes to the device

	final    *finalAnswer  // what every copy of the INVITE is answered
	answered chan struct{} // closed once final is set
	// established is set, under B2BUA.mu, once the 200 OK is final: from
	// then on other goroutines (API, teardown) may touch the call.
	established bool
	// detached is set, under B2BUA.mu, once the call's media is given back
	// while its dialog waits for the upper's BYE.
	detached  bool
	acked     chan struct{}
	ackOnce   sync.Once
	ended     chan struct{} // closed when the dialog ends
	endOnce   sync.Once
	mediaOnce sync.Once
	log       zerolog.Logger
}

// live: the call is a session as the API and metrics count it. Under
// B2BUA.mu.
func (c *call) live() bool { return c.established && !c.detached }

// finalAnswer is kept so that a retransmitted INVITE (some uppers ignore the
// first 200 OK, even over TCP) gets the identical answer.
type finalAnswer struct {
	code    int
	reason  string
	body    []byte
	headers []sip.Header
}

func dialogKey(callID, tag string) string { return callID + ";" + tag }

func tagOf(params sip.HeaderParams) string {
	if params == nil {
		return ""
	}
	t, _ := params.Get("tag")
	return t
}

func (b *B2BUA) handleInvite(req *sip.Request, tx sip.ServerTransaction) {
	if b.forwardInvite(req, tx) {
		return
	}
	callID := req.CallID().Value()
	key := dialogKey(callID, tagOf(req.From().Params))
	b.mu.Lock()
	c := b.calls[key]
	if c == nil && tagOf(req.To().Params) == "" && !b.closed {
		c = &call{
			key: key, callID: callID, upperID: req.From().Address.User, invite: req,
			peer:     endpoint.Peer{Transport: req.Transport(), Addr: req.Source()},
			localTag: sip.GenerateTagN(16), started: time.Now(),
			answered: make(chan struct{}), acked: make(chan struct{}), ended: make(chan struct{}),
		}
		c.cseq.Store(req.CSeq().SeqNo)
		c.log = b.log.With().Str("call_id", callID).Str("upper_id", c.upperID).Logger()
		b.calls[key] = c
		b.mu.Unlock()
		b.answerNew(c, req, tx)
		return
	}
	b.mu.Unlock()
	if c == nil {
		// A re-INVITE for a dialog we don't have, or we are shutting down.
		b.upper.Respond(tx, req, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist", nil)
		return
	}
	// The same INVITE again (or a session refresh): the same answer.
	select {
	case <-c.answered:
	case <-tx.Done():
		return
	}
	c.log.Info().Msg("INVITE repeated by the upper platform; answered again with the same response")
	b.respond(c, req, tx)
}

// respond sends c's final answer to req.
func (b *B2BUA) respond(c *call, req *sip.Request, tx sip.ServerTransaction) {
	respondFinal(b.upper, tx, req, c.final)
}

// respondFinal sends f to req and, for a 2xx, ends the server transaction
// at once: sipgo would otherwise swallow a retransmitted INVITE, which must
// reach our handler to be answered again, and the ACK, which ends awaitAck.
func respondFinal(ep *endpoint.Endpoint, tx sip.ServerTransaction, req *sip.Request, f *finalAnswer) {
	ep.RespondWith(tx, req, f.response(ep, req))
	if f.ok() {
		tx.Terminate()
	}
}

// response is f as the answer to req.
func (f *finalAnswer) response(ep *endpoint.Endpoint, req *sip.Request) *sip.Response {
	return ep.NewResponse(req, f.code, f.reason, f.body, f.headers...)
}

// ok: f is a 2xx (nil is not).
func (f *finalAnswer) ok() bool { return f != nil && f.code/100 == 2 }

func (b *B2BUA) answerNew(c *call, req *sip.Request, tx sip.ServerTransaction) {
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	c.cancel = cancel
	tx.OnCancel(func(*sip.Request) { cancel() })
	answer, err := b.setUp(ctx, c, req, tx)
	if ctx.Err() != nil && b.ctx.Err() == nil {
		// CANCEL: sipgo has answered it 200 and the INVITE 487.
		c.log.Info().Msg("upper platform cancelled its INVITE")
		b.metrics.Inc("gbproxy_calls_total", "platform", b.platformLabel(c.upperID), "result", "cancelled")
		c.final = &finalAnswer{code: sip.StatusRequestTerminated, reason: "Request Terminated"}
		close(c.answered)
		b.endCall(c, "cancelled by the upper platform", false)
		return
	}
	if err != nil && b.ctx.Err() != nil {
		err = failWith(sip.StatusServiceUnavailable, "proxy shutting down")
	}
	if err != nil {
		var se *statusError
		if !errors.As(err, &se) {
			se = failWith(sip.StatusInternalServerError, err.Error())
		}
		c.log.Warn().Int("status", se.code).Str("reason", se.detail).Msg("live INVITE refused")
		b.metrics.Inc("gbproxy_calls_total", "platform", b.platformLabel(c.upperID), "result", resultLabel(se.code))
		c.final = &finalAnswer{code: se.code, reason: cmpOr(se.phrase, "Error") + " (" + phraseSafe.Replace(se.detail) + ")"}
		close(c.answered)
		b.respond(c, req, tx)
		b.metrics.Observe("gbproxy_invite_setup_seconds", time.Since(c.started), "platform", b.platformLabel(c.upperID), "result", "failed")
		b.endCall(c, "set-up failed", false)
		return
	}
	to := sip.HeaderClone(req.To()).(*sip.ToHeader)
	to.Params = to.Params.Clone()
	to.Params.Add("tag", c.localTag)
	contact := &sip.ContactHeader{Address: b.upper.Contact(b.cfg.ID, endpoint.PeerOf(req))}
	b.mu.Lock()
	c.final = &finalAnswer{code: sip.StatusOK, reason: "OK", body: answer,
		headers: []sip.Header{to, contact, sip.NewHeader("Content-Type", "application/sdp")}}
	c.established = true
	b.mu.Unlock()
	close(c.answered)
	b.respond(c, req, tx)
	b.metrics.Inc("gbproxy_calls_total", "platform", b.platformLabel(c.upperID), "result", "200")
	b.metrics.Observe("gbproxy_invite_setup_seconds", time.Since(c.started), "platform", b.platformLabel(c.upperID), "result", "ok")
	c.log.Info().Str("kind", c.st.kind).Str("channel_id", c.st.channelID).Str("device_id", c.st.deviceID).Str("lower_call_id", c.st.callID).
		Str("upper_transport", c.sink.Transport().String()).Str("ssrc_upper", formatSSRC(c.ssrc)).
		Stringer("media", c.sink.LocalAddr()).Msg("session answered")
	b.goTracked(func() {
		if !b.awaitAck(b.upper, req, c.final, c.acked, c.log) {
			c.log.Warn().Msg("no ACK from the upper platform for our 200 OK; ending the call")
			b.endCall(c, "no ACK", true)
		}
	})
}

// awaitAck re-sends our 2xx f to the INVITE req on ep until acked closes
// (RFC 3261 §13.3.1.4), on every transport: some peers drop the first 200
// OK even over TCP. It reports false when no ACK came within 64·T1.
func (b *B2BUA) awaitAck(ep *endpoint.Endpoint, req *sip.Request, f *finalAnswer, acked <-chan struct{}, log zerolog.Logger) bool {
	interval := sip.T1
	deadline := time.After(64 * sip.T1)
	for {
		select {
		case <-acked:
			return true
		case <-b.ctx.Done():
			return true // Close ends the dialog
		case <-deadline:
			return false
		case <-time.After(interval):
			if err := ep.WriteResponse(f.response(ep, req)); err != nil {
				log.Debug().Err(err).Msg("200 OK retransmission failed")
			}
			interval = min(2*interval, sip.T2)
		}
	}
}

func (b *B2BUA) handleAck(req *sip.Request, _ sip.ServerTransaction) {
	if b.forwardedAck(req) {
		return
	}
	b.mu.Lock()
	c := b.calls[dialogKey(req.CallID().Value(), tagOf(req.From().Params))]
	b.mu.Unlock()
	if c != nil {
		c.ackOnce.Do(func() { close(c.acked) })
	}
}

// handleUpperBye answers the upper's BYE and ends its leg without a BYE
// back; a pending INVITE is ended with CANCEL, not BYE (RFC 3261 §15).
func (b *B2BUA) handleUpperBye(req *sip.Request, tx sip.ServerTransaction) {
	if b.forwardedInDialog(req, tx) {
		return
	}
	b.mu.Lock()
	c := b.calls[dialogKey(req.CallID().Value(), tagOf(req.From().Params))]
	if c != nil && !c.established {
		c = nil
	}
	if c != nil {
		// Out of the table before our 200: an INFO the upper sends right
		// after it (over TCP it can overtake endCall) finds no session.
		delete(b.calls, c.key)
	}
	b.mu.Unlock()
	if c == nil && b.byeBroadcast(req, tx, false) {
		return
	}
	if c == nil {
		b.upper.Respond(tx, req, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist", nil)
		return
	}
	b.upper.Respond(tx, req, sip.StatusOK, "OK", nil)
	c.ackOnce.Do(func() { close(c.acked) })
	b.endCall(c, reasonUpperBye, false)
}

// reasonUpperBye is the end reason (and metric label) of a call the upper
// hung up.
const reasonUpperBye = "upper BYE"

// setUp checks the upper's offer, gets the device stream (shared or new),
// adds this upper's relay leg and returns the SDP answer.
func (b *B2BUA) setUp(ctx context.Context, c *call, req *sip.Request, tx sip.ServerTransaction) ([]byte, error) {
	c.targetID = req.Recipient.User
	if c.targetID == "" {
		c.targetID = req.To().Address.User
	}
	c.log = c.log.With().Str("target_id", c.targetID).Logger()
	offer, err := sdp.Parse(req.Body())
	if err != nil {
		return nil, failWith(sip.StatusBadRequest, "SDP: "+err.Error())
	}
	kind := sessionKind(offer.Name)
	if kind == "" {
		return nil, failWith(sip.StatusNotAcceptableHere, fmt.Sprintf("s=%s: only Play, Playback and Download are bridged", offer.Name))
	}
	m := offer.FirstMedia("video")
	if m == nil {
		return nil, failWith(sip.StatusNotAcceptableHere, "SDP has no video media")
	}
	leg, err := upperLeg(offer, m)
	if err != nil {
		return nil, failWith(sip.StatusNotAcceptableHere, err.Error())
	}
	callee, err := b.dir.Callee(c.upperID, c.targetID)
	switch {
	case errors.Is(err, directory.ErrUnknownPlatform):
		return nil, failWith(sip.StatusForbidden, "unknown platform")
	case errors.Is(err, directory.ErrNotShared):
		return nil, failWith(sip.StatusNotFound, "not shared with this platform")
	case errors.Is(err, directory.ErrDeviceOffline):
		return nil, failWith(sip.StatusTemporarilyUnavailable, "device offline")
	case err != nil:
		return nil, failWith(sip.StatusInternalServerError, err.Error())
	}
	if mf := req.MaxForwards(); mf != nil && mf.Val() <= 1 {
		return nil, failWith(sip.StatusTooManyHops, "too many hops (cascade loop?)")
	}
	// media_allow is checked before the device is called.
	var acceptFrom []netip.Addr
	if leg.transport == relay.TCPPassive {
		if acceptFrom = b.mediaPeers(c, offer, m); len(acceptFrom) == 0 {
			return nil, failWith(sip.StatusForbidden, "neither the SDP c= address nor the signalling address is in this platform's media_allow")
		}
	} else if err := relay.CheckDest(leg.dest, b.mediaAllow(c.upperID)); err != nil {
		return nil, failWith(sip.StatusForbidden, "media destination "+leg.dest.String()+" not in this platform's media_allow")
	}
	c.ssrc, c.ssrcHeld, err = b.upperSSRC(offer.SSRC, kind != kindLive)
	if err != nil {
		return nil, failWith(sip.StatusServiceUnavailable, err.Error())
	}
	b.upper.Respond(tx, req, sip.StatusTrying, "Trying", nil)

	st, err := b.joinStream(ctx, c, callee, offer, kind)
	if err != nil {
		return nil, err
	}
	// Two-way audio when both ends send (a=sendrecv): what the upper sends on
	// its leg goes to the device. One viewer of a stream at a time.
	opts := relay.SinkOptions{ID: c.callID, AllowedDest: b.mediaAllow(c.upperID), ReverseSSRC: st.ssrc,
		Reverse:    kind == kindLive && m.Direction() == "sendrecv" && st.answer.FirstMedia("video").Direction() == "sendrecv",
		AcceptFrom: acceptFrom,
		OnRefused: func(netip.AddrPort) {
			b.metrics.Inc("gbproxy_media_connections_refused_total", "platform", c.upperID) // a configured ID: Callee passed
		}}
	c.sink, err = st.src.AddSink(b.upperBind, leg.transport, leg.dest, c.ssrc, opts)
	if errors.Is(err, relay.ErrReverseTaken) {
		c.log.Info().Msg("another viewer already talks back to this device; this one only receives")
		opts.Reverse = false
		c.sink, err = st.src.AddSink(b.upperBind, leg.transport, leg.dest, c.ssrc, opts)
	}
	c.talkBack = opts.Reverse
	switch {
	case errors.Is(err, relay.ErrDestNotAllowed):
		return nil, failWith(sip.StatusForbidden, "media destination "+leg.dest.String()+" not in this platform's media_allow")
	case err != nil:
		return nil, failWith(sip.StatusServiceUnavailable, "no media port: "+err.Error())
	}
	b.goTracked(func() { b.endOnFailure(&c.sink.Leg, func(err error) { b.upperLegFailed(c, err) }) })
	return b.upperAnswer(c, offer, leg).Marshal(), nil
}

// mediaPeers are the addresses an upper may connect TCP media from: its
// SDP c= and its signalling address, those within its media_allow. Anyone
// else could otherwise take the stream of a call they did not make.
func (b *B2BUA) mediaPeers(c *call, offer *sdp.Session, m *sdp.Media) []netip.Addr {
	var out []netip.Addr
	add := func(ip netip.Addr) {
		ip = ip.Unmap()
		if ip.IsValid() && !ip.IsUnspecified() && !ip.IsMulticast() && !slices.Contains(out, ip) && relay.Allowed(ip, b.mediaAllow(c.upperID)) {
			out = append(out, ip)
		}
	}
	if a, err := offer.Addr(m); err == nil {
		add(a.Addr())
	}
	if a, err := netip.ParseAddrPort(c.peer.Addr); err == nil {
		add(a.Addr())
	}
	return out
}

// upperSSRC is the y= the upper asked for, or one of ours when it gave
// none (or an unreadable one). held says whether the pool now counts it as
// ours to release: an upper's y= that one of our streams already uses
// stays that stream's.
func (b *B2BUA) upperSSRC(y string, history bool) (v uint32, held bool, err error) {
	if v, ok := parseSSRC(y); ok {
		return v, b.ssrc.hold(v), nil
	}
	v, err = b.ssrc.take(history)
	return v, err == nil, err
}

// legSpec is an upper's media leg as its offer describes it.
type legSpec struct {
	transport relay.Transport
	dest      netip.AddrPort // UDP and TCP active: where we send or dial
	setup     string         // our a=setup in the answer
}

// upperLeg reads the transport from the offer. a=setup is the upper's role:
// passive = it listens and we dial; active (or absent, RFC 4145's default)
// = it dials us; actpass leaves us the choice and we listen, as that works
// through the upper's NAT.
func upperLeg(offer *sdp.Session, m *sdp.Media) (legSpec, error) {
	addr, addrErr := offer.Addr(m)
	if !m.TCP() {
		if addrErr != nil || addr.Port() == 0 || addr.Addr().IsUnspecified() {
			return legSpec{}, fmt.Errorf("no usable media address in the SDP (c=%s m=%d)", offer.ConnectionIP, m.Port)
		}
		return legSpec{transport: relay.UDP, dest: addr}, nil
	}
	if m.Setup() == "passive" {
		if addrErr != nil || addr.Port() == 0 || addr.Addr().IsUnspecified() {
			return legSpec{}, fmt.Errorf("a=setup:passive without a usable address to connect to (c=%s m=%d)", offer.ConnectionIP, m.Port)
		}
		return legSpec{transport: relay.TCPActive, dest: addr, setup: "active"}, nil
	}
	return legSpec{transport: relay.TCPPassive, setup: "passive"}, nil
}

// upperAnswer is our SDP to the upper: the relay's upper-side address, the
// upper's SSRC, the device's codecs and f=.
func (b *B2BUA) upperAnswer(c *call, offer *sdp.Session, leg legSpec) *sdp.Session {
	ip := announce(b.cfg.Upper.MediaExternalIP, b.upperBind, b.upper, c.peer.Addr)
	dev := c.st.answer
	dm := dev.FirstMedia("video")
	m := sdp.Media{Kind: "video", Port: int(c.sink.LocalAddr().Port()), Proto: "RTP/AVP", Formats: dm.Formats}
	if leg.transport != relay.UDP {
		m.Proto = "TCP/RTP/AVP"
	}
	m.Attributes = codecAttributes(dm)
	if c.talkBack {
		m.SetAttr("sendrecv", "")
	} else {
		m.SetAttr("sendonly", "")
	}
	if leg.setup != "" {
		m.SetAttr("setup", leg.setup)
		m.SetAttr("connection", "new")
	}
	return &sdp.Session{
		Origin:       sdp.Origin{Username: b.cfg.ID, SessionID: "0", SessionVersion: "0", Address: ip},
		Name:         c.st.kind,
		ConnectionIP: ip,
		StartTime:    offer.StartTime, StopTime: offer.StopTime,
		Media:  []sdp.Media{m},
		SSRC:   formatSSRC(c.ssrc),
		Format: cmpOr(dev.Format, offer.Format),
	}
}

// deviceDirection is our a= toward the device: sendrecv when the upper
// wants to send back too (two-way audio), else recvonly.
func deviceDirection(upper *sdp.Media) string {
	if upper.Direction() == "sendrecv" {
		return "sendrecv"
	}
	return "recvonly"
}

// codecAttributes keeps a media's attributes that describe the stream
// (rtpmap, fmtp, vendor ones) and drops those each leg sets for itself.
func codecAttributes(m *sdp.Media) []sdp.Attribute {
	var out []sdp.Attribute
	for _, a := range m.Attributes {
		switch a.Key {
		case "sendonly", "recvonly", "sendrecv", "inactive", "setup", "connection":
			continue
		}
		out = append(out, a)
	}
	return out
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// endOnFailure runs end when leg fails on its own (the peer closed its TCP
// media connection, a connect gave up), not when we close it.
func (b *B2BUA) endOnFailure(leg *relay.Leg, end func(error)) {
	select {
	case <-leg.Done():
		if err := leg.Err(); err != nil {
			end(err)
		}
	case <-b.ctx.Done():
	}
}

// upperByeGrace is how long a call whose upper media leg failed waits for
// the upper's BYE before sending its own: an upper hanging up often closes
// its TCP media just before its BYE arrives.
const upperByeGrace = 2 * time.Second

// upperLegFailed frees the call's media at once and ends its dialog with a
// BYE to the upper unless the upper's own BYE comes within upperByeGrace.
func (b *B2BUA) upperLegFailed(c *call, err error) {
	reason := "upper media leg failed: " + err.Error()
	b.freeMedia(c, reason)
	select {
	case <-c.ended:
		return
	case <-b.ctx.Done(): // Close ends the dialog
		return
	case <-time.After(upperByeGrace):
	}
	b.endCall(c, reason, true)
}

// endCall ends one upper dialog: its relay leg and SSRC freed and the
// device stream released first, then a BYE to the upper when it did not
// end the dialog itself.
func (b *B2BUA) endCall(c *call, reason string, byeUpper bool) {
	c.endOnce.Do(func() {
		b.mu.Lock()
		if b.calls[c.key] == c {
			delete(b.calls, c.key)
		}
		b.mu.Unlock()
		close(c.ended)
		if c.cancel != nil {
			c.cancel()
		}
		b.freeMedia(c, reason)
		if !c.final.ok() {
			return
		}
		b.metrics.Inc("gbproxy_call_ends_total", "reason", reasonLabel(reason))
		c.log.Info().Str("kind", c.st.kind).Str("reason", reason).Msg("session ended")
		if byeUpper {
			b.byeUpper(c)
		}
	})
}

// freeMedia gives back c's relay leg and SSRC and releases its device
// stream, once; the dialog may outlive it.
func (b *B2BUA) freeMedia(c *call, reason string) {
	c.mediaOnce.Do(func() {
		b.mu.Lock()
		c.detached = true // the stream's teardown must not end this call again
		b.mu.Unlock()
		if c.st != nil {
			if c.sink != nil {
				c.st.src.RemoveSink(c.sink)
			}
			b.release(c.st, reason)
		}
		if c.ssrcHeld {
			b.ssrc.release(c.ssrc)
		}
	})
}

// reasonLabel keeps metric labels few: the reason up to its first colon
// (every reason is ours; what follows the colon may quote a peer).
func reasonLabel(reason string) string {
	if i := strings.IndexByte(reason, ':'); i > 0 {
		return reason[:i]
	}
	return reason
}

// byeUpper sends BYE in the upper's dialog, from our side of it.
func (b *B2BUA) byeUpper(c *call) {
	req := b.upperRequest(c, sip.BYE)
	ctx, cancel := context.WithTimeout(b.ctx, byeTimeout)
	defer cancel()
	res, err := b.upper.Do(ctx, req)
	if err != nil || !res.IsSuccess() {
		c.log.Warn().Err(err).Int("status", statusOf(res)).Msg("upper platform did not take our BYE; the session is ended on our side")
	}
}

// upperRequest builds our next request in the upper's dialog.
func (b *B2BUA) upperRequest(c *call, method sip.RequestMethod) *sip.Request {
	return calleeRequest(b.upper, method, c.invite, c.localTag, c.peer, c.callID, c.cseq.Add(1))
}

// calleeRequest is a request of ours in a dialog that inv opened to us:
// to its Contact (or From), our To with localTag as From, its From as To.
func calleeRequest(ep *endpoint.Endpoint, method sip.RequestMethod, inv *sip.Request, localTag string, peer endpoint.Peer, callID string, cseq uint32) *sip.Request {
	target := inv.From().Address
	if ct := inv.Contact(); ct != nil {
		target = ct.Address
	}
	to := sip.HeaderClone(inv.From()).(*sip.FromHeader)
	from := sip.HeaderClone(inv.To()).(*sip.ToHeader)
	from.Params = from.Params.Clone()
	from.Params.Add("tag", localTag)
	return inDialog(ep, method, target, peer, &sip.FromHeader{DisplayName: from.DisplayName, Address: from.Address, Params: from.Params},
		&sip.ToHeader{DisplayName: to.DisplayName, Address: to.Address, Params: to.Params}, callID, cseq)
}

// byeTimeout bounds a BYE: a peer that is gone must not hold teardown.
const byeTimeout = 5 * time.Second

func statusOf(res *sip.Response) int {
	if res == nil {
		return 0
	}
	return res.StatusCode
}

// inDialog builds a request inside an existing dialog: our From (with our
// tag), their To (with theirs), the dialog's Call-ID and a CSeq.
func inDialog(ep *endpoint.Endpoint, method sip.RequestMethod, target sip.Uri, peer endpoint.Peer, from *sip.FromHeader, to *sip.ToHeader, callID string, cseq uint32) *sip.Request {
	req := ep.NewRequest(method, target, peer, from.Address, to.Address)
	req.ReplaceHeader(from)
	req.ReplaceHeader(to)
	cid := sip.CallIDHeader(callID)
	req.ReplaceHeader(&cid)
	req.CSeq().SeqNo = cseq
	return req
}
