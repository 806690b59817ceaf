package b2bua

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/b2bua/sdp"
	"github.com/gbproxy/gbproxy/directory"
	"github.com/gbproxy/gbproxy/endpoint"
	"github.com/gbproxy/gbproxy/relay"
	"github.com/gbproxy/gbproxy/security"
)

// stream is our call to a device for one channel, and the relay Source that
// receives its media. Every upper watching the channel is a Sink on it.
type stream struct {
	kind      string // s= of the call: Play (shared), Playback or Download (never shared)
	channelID string
	deviceID  string
	peer      endpoint.Peer
	callID    string // device leg
	ssrc      uint32 // the y= we offered
	ssrcLower string // the y= the device answered (or ours)
	// identity is the Monitor-User-Identity of the device dialog: the first
	// viewer's INVITE's, extended by our gateway ID.
	identity string
	src      *relay.Source
	log      zerolog.Logger

	ctx    context.Context // cancelled when nobody waits for the device any more
	cancel context.CancelFunc
	ready  chan struct{} // closed when answered or failed
	err    error         // set before ready is closed when the device did not answer 2xx

	// device dialog once answered, guarded by mu (teardown may race it)
	invite   *sip.Request
	response *sip.Response
	cseq     uint32       // of our last request in the device dialog
	answer   *sdp.Session // set before ready is closed

	refs    int // calls attached, guarded by B2BUA.mu
	endOnce sync.Once

	mu    sync.Mutex // guards ended against attach: teardown may race set-up
	ended bool
}

// setDialog records the device dialog once answered. It reports whether
// the stream has ended meanwhile: endStream took no dialog to end then, so
// the caller must send the BYE.
func (st *stream) setDialog(inv *sip.Request, res *sip.Response) (ended bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.invite, st.response = inv, res
	st.cseq = inv.CSeq().SeqNo
	return st.ended
}

// dialog is the device dialog: nil until answered.
func (st *stream) dialog() (*sip.Request, *sip.Response) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.invite, st.response
}

// nextCSeq is the CSeq of our next request in the device dialog.
func (st *stream) nextCSeq() uint32 {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.cseq++
	return st.cseq
}

// attach gives st its relay leg and SSRC unless it has ended meanwhile.
func (st *stream) attach(src *relay.Source, ssrc uint32) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.ended {
		return false
	}
	st.src, st.ssrc = src, ssrc
	return true
}

// transportOf maps lower.stream_mode to the relay's transport.
func transportOf(mode string) relay.Transport {
	switch mode {
	case "tcp-passive":
		return relay.TCPPassive
	case "tcp-active":
		return relay.TCPActive
	}
	return relay.UDP
}

// joinStream attaches c to the channel's running live stream, or starts
// one, and waits until the device has answered. A playback or download
// always gets a device call of its own: its position and pace are its
// viewer's.
func (b *B2BUA) joinStream(ctx context.Context, c *call, callee directory.Callee, offer *sdp.Session, kind string) (*stream, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, failWith(sip.StatusServiceUnavailable, "proxy shutting down")
	}
	var st *stream
	if kind == kindLive {
		st = b.streams[callee.ChannelID]
	}
	fresh := st == nil
	if fresh {
		st = &stream{kind: kind, channelID: callee.ChannelID, deviceID: callee.DeviceID, peer: callee.Peer,
			callID: sip.GenerateTagN(24), ready: make(chan struct{}),
			identity: security.ForwardIdentity(b.cfg.GatewayID(), endpoint.HeaderValue(c.invite, security.MonitorUserIdentityHeader), c.upperID)}
		st.ctx, st.cancel = context.WithCancel(b.ctx)
		st.log = b.log.With().Str("channel_id", st.channelID).Str("device_id", st.deviceID).Str("lower_call_id", st.callID).Str("kind", kind).Logger()
		if kind == kindLive {
			b.streams[callee.ChannelID] = st
		}
		b.byLower[st.callID] = st
		b.wg.Add(1) // under b.mu, not closed: Close waits for the device call
	}
	st.refs++
	c.st = st
	b.mu.Unlock()
	if fresh {
		go func() {
			defer b.wg.Done()
			b.callDevice(st, offer)
		}()
	} else {
		c.log.Info().Str("channel_id", st.channelID).Msg("channel already streaming; sharing the device stream")
	}
	select {
	case <-st.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if st.err != nil {
		return nil, st.err
	}
	return st, nil
}

// release detaches one call; the last one out ends the device call.
func (b *B2BUA) release(st *stream, reason string) {
	b.mu.Lock()
	st.refs--
	last := st.refs == 0
	if last && b.streams[st.channelID] == st {
		// Under the same lock: a new INVITE for the channel must call the
		// device again, not join a stream being torn down.
		delete(b.streams, st.channelID)
	}
	b.mu.Unlock()
	if last {
		b.endStream(st, "last receiver left ("+reason+")", true)
	}
}

// callDevice sends our INVITE to the device and completes st with its
// answer or its failure.
func (b *B2BUA) callDevice(st *stream, upperOffer *sdp.Session) {
	// fail ends the stream: ports first, then a BYE if the device answered.
	fail := func(err error) {
		st.err = err
		st.log.Warn().Err(err).Msg("device stream not set up")
		close(st.ready)
		b.endStream(st, "device stream not set up", true)
	}
	mode := b.dir.StreamMode(st.deviceID)
	ssrc, err := b.ssrc.take(st.kind != kindLive)
	if err != nil {
		fail(failWith(sip.StatusServiceUnavailable, err.Error()))
		return
	}
	// Media counts only from the device: its signalling address now, the
	// address of its SDP answer once known. Anyone else on the lower
	// network could otherwise feed the upper a stream of their own.
	signalling, _ := netip.ParseAddrPort(st.peer.Addr)
	src, err := b.relay.NewSource(b.lowerBind, transportOf(mode), relay.SourceOptions{
		ID:     st.channelID,
		Expect: []netip.Addr{signalling.Addr()},
		OnIdle: func() {
			b.endStream(st, fmt.Sprintf("no media from the device for %v", b.cfg.Media.NoMediaTimeout), true)
		},
	})
	if err != nil {
		b.ssrc.release(ssrc)
		fail(failWith(sip.StatusServiceUnavailable, "no media port toward the device: "+err.Error()))
		return
	}
	if !st.attach(src, ssrc) {
		src.Close()
		b.ssrc.release(ssrc)
		fail(b.cancelled(false))
		return
	}
	st.ssrcLower = formatSSRC(ssrc)
	req := b.deviceInvite(st, upperOffer, mode)
	res, err := b.inviteDevice(st, req)
	if err != nil {
		fail(err)
		return
	}
	ended := st.setDialog(req, res)
	if err := b.ack(st, req, res); err != nil {
		st.log.Warn().Err(err).Msg("ACK to the device failed to send")
	}
	if ended {
		b.byeDevice(st, req, res)
	}
	if ended || st.ctx.Err() != nil { // ended while the 200 OK was on its way
		fail(b.cancelled(false))
		return
	}
	ans, err := sdp.Parse(res.Body())
	var m *sdp.Media
	var peer netip.AddrPort
	if err == nil {
		if m = ans.FirstMedia("video"); m == nil {
			err = errors.New("no video media")
		} else {
			peer, err = answerAddr(ans, m)
		}
	}
	if err == nil {
		st.src.ExpectFrom(peer.Addr())
	}
	if err == nil && st.src.Transport() == relay.TCPActive {
		err = st.src.Connect(peer)
	}
	if err != nil {
		fail(failWith(sip.StatusBadGateway, "device answered unusable SDP: "+err.Error()))
		return
	}
	st.answer = ans
	if ans.SSRC != "" {
		st.ssrcLower = ans.SSRC
	}
	st.log.Info().Str("transport", mode).Str("ssrc_lower", st.ssrcLower).Stringer("media", st.src.LocalAddr()).Msg("device stream answered")
	close(st.ready)
	b.goTracked(func() {
		b.endOnFailure(&st.src.Leg, func(err error) { b.endStream(st, "device media leg failed: "+err.Error(), true) })
	})
}

// answerAddr is the device's media address from its answer, refused when
// it cannot carry the stream: port 0 (the device declined it, RFC 3264
// §6), or a c= that is missing, not an address, unspecified, multicast or
// broadcast (we offered unicast). A 200 OK to the upper would carry no media.
func answerAddr(ans *sdp.Session, m *sdp.Media) (netip.AddrPort, error) {
	if m.Port == 0 {
		return netip.AddrPort{}, errors.New("port 0 (the device declined the video stream)")
	}
	a, err := ans.Addr(m)
	if err != nil {
		return a, err
	}
	switch ip := a.Addr(); {
	case ip.IsUnspecified():
		return a, fmt.Errorf("c= address %s is unspecified", ip)
	case ip.IsMulticast():
		return a, fmt.Errorf("c= address %s is multicast; we asked for unicast", ip)
	case ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return a, fmt.Errorf("c= address %s is broadcast", ip)
	}
	return a, nil
}

// deviceInvite is our INVITE to the device: our Call-ID and tags, Subject
// "channel:ssrc,proxy:0" and an offer of the relay's device-side address.
func (b *B2BUA) deviceInvite(st *stream, upperOffer *sdp.Session, mode string) *sip.Request {
	ip := announce(b.cfg.Lower.MediaExternalIP, b.lowerBind, b.lower, st.peer.Addr)
	um := upperOffer.FirstMedia("video")
	m := sdp.Media{Kind: "video", Port: int(st.src.LocalAddr().Port()), Proto: "RTP/AVP", Formats: um.Formats}
	m.Attributes = codecAttributes(um)
	m.SetAttr(deviceDirection(um), "")
	switch mode {
	case "tcp-passive":
		m.Proto = "TCP/RTP/AVP"
		m.SetAttr("setup", "passive")
		m.SetAttr("connection", "new")
	case "tcp-active":
		m.Proto = "TCP/RTP/AVP"
		m.SetAttr("setup", "active")
		m.SetAttr("connection", "new")
	}
	offer := &sdp.Session{
		Origin:       sdp.Origin{Username: b.cfg.ID, SessionID: "0", SessionVersion: "0", Address: ip},
		Name:         st.kind,
		URI:          st.channelID + ":0",
		ConnectionIP: ip,
		StartTime:    upperOffer.StartTime, StopTime: upperOffer.StopTime,
		Media:  []sdp.Media{m},
		SSRC:   st.ssrcLower,
		Format: upperOffer.Format,
	}
	host, port := endpoint.SplitHostPort(st.peer.Addr)
	req := b.lower.NewRequest(sip.INVITE,
		sip.Uri{Scheme: "sip", User: st.channelID, Host: host, Port: port},
		st.peer,
		sip.Uri{Scheme: "sip", User: b.cfg.ID, Host: b.cfg.Domain},
		sip.Uri{Scheme: "sip", User: st.channelID, Host: b.cfg.Domain})
	cid := sip.CallIDHeader(st.callID)
	req.ReplaceHeader(&cid)
	req.AppendHeader(sip.NewHeader("Subject", st.channelID+":"+st.ssrcLower+","+b.cfg.ID+":0"))
	req.AppendHeader(sip.NewHeader(security.MonitorUserIdentityHeader, st.identity))
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody(offer.Marshal())
	return req
}

// inviteDevice runs the INVITE transaction: the final 2xx, or an error
// carrying the answer for the upper. Nobody waiting any more, or no answer
// within lower.invite_timeout, sends CANCEL.
func (b *B2BUA) inviteDevice(st *stream, req *sip.Request) (*sip.Response, error) {
	ctx, cancel := context.WithTimeout(st.ctx, b.cfg.Lower.InviteTimeout)
	defer cancel()
	tx, err := b.lower.Transaction(ctx, req)
	if err != nil {
		return nil, failWith(sip.StatusTemporarilyUnavailable, "device unreachable: "+err.Error())
	}
	provisional := false
	for {
		res, err := b.lower.NextResponse(ctx, req, tx)
		switch {
		case err != nil && ctx.Err() != nil:
			return b.cancelDevice(st, req, tx, provisional)
		case err != nil:
			tx.Terminate()
			return nil, failWith(sip.StatusRequestTimeout, "device did not answer: "+err.Error())
		case res.IsProvisional():
			provisional = true
		case res.IsSuccess():
			tx.OnRetransmission(func(r *sip.Response) {
				if r.IsSuccess() {
					_ = b.ack(st, req, r) // our ACK was lost: the device repeats its 200
				}
			})
			return res, nil
		default:
			tx.Terminate()
			return nil, deviceRefusal(res)
		}
	}
}

// deviceRefusal maps the device's final error to the upper's answer: its
// own code, except those about our leg (authentication), which become 502.
func deviceRefusal(res *sip.Response) error {
	switch res.StatusCode {
	case sip.StatusUnauthorized, sip.StatusProxyAuthRequired, sip.StatusIntervalToBrief:
		return failWith(sip.StatusBadGateway, fmt.Sprintf("device answered %d %s to our INVITE", res.StatusCode, res.Reason))
	}
	return &statusError{code: res.StatusCode, phrase: res.Reason, detail: fmt.Sprintf("device answered %d %s", res.StatusCode, res.Reason)}
}

// cancelDevice ends our pending INVITE to the device with CANCEL; a 200
// that crossed the CANCEL is ACKed and ended with BYE.
func (b *B2BUA) cancelDevice(st *stream, req *sip.Request, tx sip.ClientTransaction, provisional bool) (*sip.Response, error) {
	timedOut := st.ctx.Err() == nil
	b.cancelInvite(b.lower, req, tx, provisional, st.log, func(res *sip.Response) { b.crossedCancel(st, req, res) })
	return nil, b.cancelled(timedOut)
}

// cancelInvite sends CANCEL on ep for a pending INVITE of ours (RFC 3261
// §9.1: only after a provisional response) and settles the transaction: a
// 2xx that crossed the CANCEL goes to crossed, which must ACK it and end
// the dialog with BYE.
func (b *B2BUA) cancelInvite(ep *endpoint.Endpoint, req *sip.Request, tx sip.ClientTransaction, provisional bool, log zerolog.Logger, crossed func(*sip.Response)) {
	defer tx.Terminate()
	wait, done := context.WithTimeout(b.ctx, 2*time.Second)
	defer done()
	// final takes the INVITE's next answer: true when it was final (a 2xx
	// goes to crossed) or none came in time, false for a provisional one.
	final := func(res *sip.Response, err error) bool {
		if err == nil && res.IsProvisional() {
			return false
		}
		if err == nil && res.IsSuccess() {
			crossed(res)
		}
		return true
	}
	for !provisional { // nothing heard yet: wait briefly for a provisional so CANCEL may go
		if final(ep.NextResponse(wait, req, tx)) {
			return
		}
		provisional = true
	}
	ctx, c := context.WithTimeout(b.ctx, byeTimeout)
	if _, err := ep.Do(ctx, newCancel(req)); err != nil {
		log.Warn().Err(err).Msg("CANCEL got no answer")
	}
	c()
	for !final(ep.NextResponse(wait, req, tx)) {
	}
}

// crossedCancel takes a 2xx that crossed our CANCEL: ACK, and BYE unless
// the stream's teardown, still to come, sends it after freeing the ports.
func (b *B2BUA) crossedCancel(st *stream, req *sip.Request, res *sip.Response) {
	ended := st.setDialog(req, res)
	_ = b.ack(st, req, res)
	if ended {
		b.byeDevice(st, req, res)
	}
}

func (b *B2BUA) cancelled(timedOut bool) error {
	if timedOut {
		return failWith(sip.StatusRequestTimeout, fmt.Sprintf("device did not answer within lower.invite_timeout (%v)", b.cfg.Lower.InviteTimeout))
	}
	return failWith(sip.StatusTemporarilyUnavailable, "the device call ended before the device answered")
}

// newCancel builds CANCEL for req: same Request-URI, top Via, From, To,
// Call-ID and CSeq number (RFC 3261 §9.1).
func newCancel(req *sip.Request) *sip.Request {
	c := sip.NewRequest(sip.CANCEL, req.Recipient)
	c.AppendHeader(sip.HeaderClone(req.Via()))
	c.AppendHeader(sip.HeaderClone(req.From()))
	c.AppendHeader(sip.HeaderClone(req.To()))
	c.AppendHeader(sip.HeaderClone(req.CallID()))
	c.AppendHeader(&sip.CSeqHeader{SeqNo: req.CSeq().SeqNo, MethodName: sip.CANCEL})
	mf := sip.MaxForwardsHeader(70)
	c.AppendHeader(&mf)
	c.AppendHeader(sip.NewHeader("User-Agent", endpoint.Product))
	c.SetBody(nil)
	c.SetTransport(req.Transport())
	c.SetDestination(req.Destination())
	c.Laddr = req.Laddr
	return c
}

// ack acknowledges the device's 2xx: a request of the dialog, sent on the
// device's own connection or to its registered address.
func (b *B2BUA) ack(st *stream, inv *sip.Request, res *sip.Response) error {
	ack := b.deviceRequest(st, sip.ACK, inv, res, inv.CSeq().SeqNo)
	return b.lower.WriteRequest(ack)
}

// deviceRequest builds a request in the device dialog. Requests go where
// the device registered from (GB/T 28181 NAT rule), not to its Contact.
func (b *B2BUA) deviceRequest(st *stream, method sip.RequestMethod, inv *sip.Request, res *sip.Response, cseq uint32) *sip.Request {
	target := inv.Recipient
	if ct := res.Contact(); ct != nil {
		target = ct.Address
	}
	from := sip.HeaderClone(inv.From()).(*sip.FromHeader)
	to := sip.HeaderClone(res.To()).(*sip.ToHeader)
	req := inDialog(b.lower, method, target, st.peer, from, to, inv.CallID().Value(), cseq)
	req.AppendHeader(sip.NewHeader(security.MonitorUserIdentityHeader, st.identity))
	return req
}

// byeDevice ends our call to the device (dialog inv/res), best effort.
func (b *B2BUA) byeDevice(st *stream, inv *sip.Request, res *sip.Response) {
	req := b.deviceRequest(st, sip.BYE, inv, res, st.nextCSeq())
	ctx, cancel := context.WithTimeout(b.ctx, byeTimeout)
	defer cancel()
	ans, err := b.lower.Do(ctx, req)
	if err != nil || !ans.IsSuccess() {
		st.log.Warn().Err(err).Int("status", statusOf(ans)).Msg("device did not take our BYE; the stream is ended on our side")
	}
}

func (b *B2BUA) handleLowerBye(req *sip.Request, tx sip.ServerTransaction) {
	b.mu.Lock()
	st := b.byLower[req.CallID().Value()]
	b.mu.Unlock()
	if st == nil && b.byeBroadcast(req, tx, true) {
		return
	}
	if st == nil {
		b.lower.Respond(tx, req, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist", nil)
		return
	}
	b.lower.Respond(tx, req, sip.StatusOK, "OK", nil)
	b.endStream(st, "BYE from the device", false)
}

// endStream ends the device call and every upper call on it. byeDevice is
// false when the device ended it (or never answered).
func (b *B2BUA) endStream(st *stream, reason string, byeDevice bool) {
	st.endOnce.Do(func() {
		b.mu.Lock()
		if b.streams[st.channelID] == st {
			delete(b.streams, st.channelID)
		}
		delete(b.byLower, st.callID)
		var calls []*call
		for _, c := range b.calls {
			if c.st == st && c.live() {
				calls = append(calls, c)
			}
		}
		b.mu.Unlock()
		st.cancel()               // a pending device INVITE is cancelled
		for _, c := range calls { // calls still setting up fail on their own
			b.goOrRun(func() { b.endCall(c, reason, true) })
		}
		st.mu.Lock()
		st.ended = true // from here setDialog's caller ends a dialog we do not take
		src, ssrc := st.src, st.ssrc
		inv, res := st.invite, st.response
		st.mu.Unlock()
		if src != nil {
			src.Close()
		}
		if ssrc != 0 {
			b.ssrc.release(ssrc)
		}
		st.log.Info().Str("reason", reason).Msg("device stream ended")
		// Last: a device that is gone must not hold the ports for byeTimeout.
		if byeDevice && res != nil {
			b.byeDevice(st, inv, res)
		}
	})
}
