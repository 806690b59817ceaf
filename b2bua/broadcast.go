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

// Voice broadcast, GB/T 28181-2016 §9.12: once an upper's Notify Broadcast
// has reached a device (the cascade routes it), the device INVITEs the
// upper's voice SourceID here. We answer it from the relay and call that
// SourceID at the upper ourselves (recvonly); the audio the upper sends is
// relayed to the device under the SSRC the device asked for. Media runs the
// other way from live video: a Source on the upper side, a Sink toward the
// device.

// voiceCall is one broadcast: the device's dialog with us and ours with
// the upper's voice source.
type voiceCall struct {
	bc       directory.Broadcast
	deviceID string
	dev      *sip.Request // the device's INVITE
	devPeer  endpoint.Peer
	localTag string        // ours in the device's dialog
	devSSRC  uint32        // the device's y=: what it receives under
	devHeld  bool          // devSSRC is held in the pool on our behalf
	final    *finalAnswer  // our answer to the device, kept for repeats
	upSSRC   uint32        // our y= toward the upper
	up       *sip.Request  // our INVITE to the upper
	upRes    *sip.Response // its 200
	src      *relay.Source // upper side
	sink     *relay.Sink   // device side
	answered chan struct{} // closed once final is set
	acked    chan struct{} // closed by the device's ACK (or the end of the call)
	ackOnce  sync.Once
	started  time.Time
	log      zerolog.Logger
	endOnce  sync.Once
}

// ack stops the re-sending of our 200 OK to the device.
func (v *voiceCall) ack() { v.ackOnce.Do(func() { close(v.acked) }) }

// voiceTable holds the broadcasts by either dialog's Call-ID.
type voiceTable struct {
	dir      directory.Directory
	mu       sync.Mutex
	byDevice map[string]*voiceCall
	byUpper  map[string]*voiceCall
}

func newVoiceTable(dir directory.Directory) *voiceTable {
	return &voiceTable{dir: dir, byDevice: map[string]*voiceCall{}, byUpper: map[string]*voiceCall{}}
}

// handleDeviceInvite serves a device's INVITE to a broadcast's SourceID.
// The lower guard has bound it to the device that registered.
func (b *B2BUA) handleDeviceInvite(req *sip.Request, tx sip.ServerTransaction) {
	callID := req.CallID().Value()
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	t := b.voice
	t.mu.Lock()
	v := t.byDevice[callID]
	if v == nil && tagOf(req.To().Params) == "" && !closed {
		v = &voiceCall{deviceID: req.From().Address.User, dev: req, devPeer: endpoint.PeerOf(req),
			localTag: sip.GenerateTagN(16), answered: make(chan struct{}), acked: make(chan struct{}), started: time.Now()}
		v.log = b.log.With().Str("lower_call_id", callID).Str("device_id", v.deviceID).Str("source_id", req.Recipient.User).Logger()
		t.byDevice[callID] = v
		t.mu.Unlock()
		b.answerBroadcast(v, req, tx)
		return
	}
	t.mu.Unlock()
	if v == nil {
		b.lower.Respond(tx, req, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist", nil)
		return
	}
	select { // a repeated INVITE: the same answer
	case <-v.answered:
		v.log.Info().Msg("INVITE repeated by the device; answered again with the same response")
		respondFinal(b.lower, tx, req, v.final)
	case <-tx.Done():
	}
}

// handleDeviceAck takes the device's ACK of our 200 OK to its broadcast
// INVITE; nothing else of ours asks a device for an ACK.
func (b *B2BUA) handleDeviceAck(req *sip.Request, _ sip.ServerTransaction) {
	b.voice.mu.Lock()
	v := b.voice.byDevice[req.CallID().Value()]
	b.voice.mu.Unlock()
	if v != nil && tagOf(req.To().Params) == v.localTag {
		v.ack()
	}
}

// answerBroadcast sets the broadcast up and answers the device.
func (b *B2BUA) answerBroadcast(v *voiceCall, req *sip.Request, tx sip.ServerTransaction) {
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.Lower.InviteTimeout)
	defer cancel()
	tx.OnCancel(func(*sip.Request) { cancel() })
	answer, err := b.setUpBroadcast(ctx, v, req, tx)
	if err != nil {
		var se *statusError
		if !errors.As(err, &se) {
			se = failWith(sip.StatusInternalServerError, err.Error())
		}
		v.log.Warn().Int("status", se.code).Str("reason", se.detail).Msg("broadcast INVITE from the device refused")
		b.metrics.Inc("gbproxy_broadcasts_total", "result", resultLabel(se.code))
		b.setFinal(v, &finalAnswer{code: se.code, reason: cmpOr(se.phrase, "Error") + " (" + phraseSafe.Replace(se.detail) + ")"})
		respondFinal(b.lower, tx, req, v.final)
		b.endBroadcast(v, "set-up failed", false, true)
		return
	}
	to := sip.HeaderClone(req.To()).(*sip.ToHeader)
	to.Params = to.Params.Clone()
	to.Params.Add("tag", v.localTag)
	contact := &sip.ContactHeader{Address: b.lower.Contact(v.bc.SourceID, v.devPeer)}
	b.setFinal(v, &finalAnswer{code: sip.StatusOK, reason: "OK", body: answer,
		headers: []sip.Header{to, contact, sip.NewHeader("Content-Type", "application/sdp")}})
	respondFinal(b.lower, tx, req, v.final)
	b.metrics.Inc("gbproxy_broadcasts_total", "result", "200")
	v.log.Info().Str("upper_id", v.bc.UpperID).Str("channel_id", v.bc.ChannelID).Str("call_id", v.up.CallID().Value()).
		Str("ssrc_lower", formatSSRC(v.devSSRC)).Stringer("upper_media", v.src.LocalAddr()).Stringer("device_media", v.sink.LocalAddr()).
		Msg("voice broadcast answered")
	b.goTracked(func() {
		if !b.awaitAck(b.lower, req, v.final, v.acked, v.log) {
			v.log.Warn().Msg("no ACK from the device for our 200 OK; ending the broadcast")
			b.endBroadcast(v, "no ACK from the device", true, true)
		}
	})
}

// setFinal records the answer to the device; from then on (a 2xx) the
// API, teardown and repeats may read v.
func (b *B2BUA) setFinal(v *voiceCall, f *finalAnswer) {
	b.voice.mu.Lock()
	v.final = f
	b.voice.mu.Unlock()
	close(v.answered)
}

// setUpBroadcast finds the broadcast, calls the upper's voice source and
// returns our SDP answer to the device.
func (b *B2BUA) setUpBroadcast(ctx context.Context, v *voiceCall, req *sip.Request, tx sip.ServerTransaction) ([]byte, error) {
	if b.voice.dir == nil {
		return nil, failWith(sip.StatusNotFound, "voice broadcast not wired")
	}
	offer, err := sdp.Parse(req.Body())
	if err != nil {
		return nil, failWith(sip.StatusBadRequest, "SDP: "+err.Error())
	}
	m := offer.FirstMedia("audio")
	if m == nil {
		return nil, failWith(sip.StatusNotAcceptableHere, "SDP has no audio media (only voice broadcast INVITEs are taken from devices)")
	}
	leg, err := upperLeg(offer, m) // the device's leg reads like an upper's
	if err != nil {
		return nil, failWith(sip.StatusNotAcceptableHere, err.Error())
	}
	sourceID := req.Recipient.User
	v.bc, err = b.voice.dir.TakeBroadcast(ctx, v.deviceID, sourceID)
	switch {
	case errors.Is(err, directory.ErrNoBroadcast):
		return nil, failWith(sip.StatusNotFound, "no broadcast from "+sourceID+" pending for this device")
	case err != nil:
		return nil, failWith(sip.StatusServiceUnavailable, "upper platform unreachable: "+err.Error())
	}
	v.log = v.log.With().Str("upper_id", v.bc.UpperID).Str("channel_id", v.bc.ChannelID).Str("through_node", v.bc.Through).Logger()
	if v.devSSRC, v.devHeld, err = b.upperSSRC(offer.SSRC, false); err != nil {
		return nil, failWith(sip.StatusServiceUnavailable, err.Error())
	}
	if v.upSSRC, err = b.ssrc.take(false); err != nil {
		return nil, failWith(sip.StatusServiceUnavailable, err.Error())
	}
	b.lower.Respond(tx, req, sip.StatusTrying, "Trying", nil)
	upperIP, _ := netip.ParseAddrPort(v.bc.Peer.Addr)
	src, err := b.relay.NewSource(b.upperBind, relay.UDP, relay.SourceOptions{
		ID: req.CallID().Value(), Expect: []netip.Addr{upperIP.Addr()},
		OnIdle: func() {
			b.endBroadcast(v, fmt.Sprintf("no audio from the upper platform for %v", b.cfg.Media.NoMediaTimeout), true, true)
		},
	})
	if err != nil {
		return nil, failWith(sip.StatusServiceUnavailable, "no media port toward the upper platform: "+err.Error())
	}
	b.voice.mu.Lock()
	v.src = src
	b.voice.mu.Unlock()
	ans, err := b.inviteSource(ctx, v, offer, m)
	if err != nil {
		return nil, err
	}
	var accept []netip.Addr
	if leg.transport == relay.TCPPassive {
		accept = b.devicePeers(v, offer, m)
	}
	v.sink, err = v.src.AddSink(b.lowerBind, leg.transport, leg.dest, v.devSSRC, relay.SinkOptions{ID: v.dev.CallID().Value(), AcceptFrom: accept})
	if err != nil {
		return nil, failWith(sip.StatusServiceUnavailable, "no media port toward the device: "+err.Error())
	}
	b.goTracked(func() {
		b.endOnFailure(&v.src.Leg, func(err error) { b.endBroadcast(v, "upper media leg failed: "+err.Error(), true, true) })
	})
	b.goTracked(func() {
		b.endOnFailure(&v.sink.Leg, func(err error) { b.endBroadcast(v, "device media leg failed: "+err.Error(), true, true) })
	})
	return b.deviceAnswer(v, offer, ans, leg).Marshal(), nil
}

// devicePeers are the addresses a device may connect TCP media from: its
// SDP c= and its signalling address.
func (b *B2BUA) devicePeers(v *voiceCall, offer *sdp.Session, m *sdp.Media) []netip.Addr {
	var out []netip.Addr
	if a, err := offer.Addr(m); err == nil && !a.Addr().IsUnspecified() {
		out = append(out, a.Addr().Unmap())
	}
	if a, err := netip.ParseAddrPort(v.devPeer.Addr); err == nil {
		out = append(out, a.Addr().Unmap())
	}
	return out
}

// inviteSource calls the upper's voice source: recvonly at the relay's
// upper-side port, the device's codecs. It returns the upper's SDP answer.
func (b *B2BUA) inviteSource(ctx context.Context, v *voiceCall, devOffer *sdp.Session, dm *sdp.Media) (*sdp.Session, error) {
	ip := announce(b.cfg.Upper.MediaExternalIP, b.upperBind, b.upper, v.bc.Peer.Addr)
	m := sdp.Media{Kind: "audio", Port: int(v.src.LocalAddr().Port()), Proto: "RTP/AVP", Formats: dm.Formats}
	m.Attributes = codecAttributes(dm)
	m.SetAttr("recvonly", "")
	offer := &sdp.Session{
		Origin:       sdp.Origin{Username: b.cfg.ID, SessionID: "0", SessionVersion: "0", Address: ip},
		Name:         "Play",
		ConnectionIP: ip,
		Media:        []sdp.Media{m},
		SSRC:         formatSSRC(v.upSSRC),
		Format:       devOffer.Format,
	}
	req := b.upper.NewRequest(sip.INVITE, v.bc.URI, v.bc.Peer, sip.Uri{Scheme: "sip", User: b.cfg.ID, Host: b.cfg.Domain}, v.bc.To)
	req.AppendHeader(sip.NewHeader("Subject", v.bc.SourceID+":"+formatSSRC(v.upSSRC)+","+b.cfg.ID+":0"))
	req.AppendHeader(sip.NewHeader(security.MonitorUserIdentityHeader,
		security.ForwardIdentity(b.cfg.GatewayID(), endpoint.HeaderValue(v.dev, security.MonitorUserIdentityHeader), v.deviceID)))
	if v.bc.Through != "" {
		// Through the node registered to the upper; signed on its way out.
		req.AppendHeader(sip.NewHeader(directory.ToUpperHeader, v.bc.UpperID))
	}
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody(offer.Marshal())
	b.voice.mu.Lock()
	v.up = req
	b.voice.byUpper[req.CallID().Value()] = v
	b.voice.mu.Unlock()
	tx, err := b.upper.Transaction(ctx, req)
	if err != nil {
		return nil, failWith(sip.StatusTemporarilyUnavailable, "upper platform unreachable: "+err.Error())
	}
	defer tx.Terminate()
	provisional := false
	for {
		res, err := b.upper.NextResponse(ctx, req, tx)
		switch {
		case err != nil && ctx.Err() != nil:
			// A 200 crossing our CANCEL is ACKed here and BYE'd by the
			// set-up's failure (endBroadcast), so the upper's leg is not left open.
			b.cancelInvite(b.upper, req, tx, provisional, v.log, func(res *sip.Response) { b.upperAnswered(v, req, res) })
			return nil, failWith(sip.StatusRequestTimeout, "the upper's voice source did not answer within lower.invite_timeout, or the device cancelled")
		case err != nil:
			return nil, failWith(sip.StatusRequestTimeout, "upper platform did not answer: "+err.Error())
		case res.IsProvisional():
			provisional = true
		case !res.IsSuccess():
			return nil, &statusError{code: res.StatusCode, phrase: res.Reason,
				detail: fmt.Sprintf("upper platform answered %d %s to our INVITE of its voice source", res.StatusCode, res.Reason)}
		default:
			b.upperAnswered(v, req, res)
			ans, err := sdp.Parse(res.Body())
			if err != nil || ans.FirstMedia("audio") == nil {
				return nil, failWith(sip.StatusBadGateway, "upper platform answered unusable SDP for its voice source")
			}
			if a, err := ans.Addr(ans.FirstMedia("audio")); err == nil {
				v.src.ExpectFrom(a.Addr())
			}
			return ans, nil
		}
	}
}

// upperAnswered takes the upper's 2xx to our INVITE req: the dialog is
// up (endBroadcast BYEs it) and ACKed.
func (b *B2BUA) upperAnswered(v *voiceCall, req *sip.Request, res *sip.Response) {
	b.voice.mu.Lock()
	v.upRes = res
	b.voice.mu.Unlock()
	if err := b.upper.WriteRequest(b.upperDialogRequest(v, sip.ACK, req.CSeq().SeqNo)); err != nil {
		v.log.Warn().Err(err).Msg("ACK to the upper platform failed to send")
	}
}

// deviceAnswer is our SDP to the device: the relay's device-side address,
// sendonly, the codecs the upper answered and the device's own y=.
func (b *B2BUA) deviceAnswer(v *voiceCall, offer, upper *sdp.Session, leg legSpec) *sdp.Session {
	ip := announce(b.cfg.Lower.MediaExternalIP, b.lowerBind, b.lower, v.devPeer.Addr)
	um := upper.FirstMedia("audio")
	m := sdp.Media{Kind: "audio", Port: int(v.sink.LocalAddr().Port()), Proto: "RTP/AVP", Formats: um.Formats}
	if leg.transport != relay.UDP {
		m.Proto = "TCP/RTP/AVP"
	}
	m.Attributes = codecAttributes(um)
	m.SetAttr("sendonly", "")
	if leg.setup != "" {
		m.SetAttr("setup", leg.setup)
		m.SetAttr("connection", "new")
	}
	return &sdp.Session{
		Origin:       sdp.Origin{Username: v.bc.SourceID, SessionID: "0", SessionVersion: "0", Address: ip},
		Name:         "Play",
		ConnectionIP: ip,
		Media:        []sdp.Media{m},
		SSRC:         formatSSRC(v.devSSRC),
		Format:       cmpOr(upper.Format, offer.Format),
	}
}

// upperDialogRequest is a request in our dialog with the upper's source.
func (b *B2BUA) upperDialogRequest(v *voiceCall, method sip.RequestMethod, cseq uint32) *sip.Request {
	target := v.up.Recipient
	if ct := v.upRes.Contact(); ct != nil {
		target = ct.Address
	}
	from := sip.HeaderClone(v.up.From()).(*sip.FromHeader)
	to := sip.HeaderClone(v.upRes.To()).(*sip.ToHeader)
	return inDialog(b.upper, method, target, v.bc.Peer, from, to, v.up.CallID().Value(), cseq)
}

// byeBroadcast ends the broadcast whose dialog a BYE belongs to, from the
// device (fromDevice) or the upper; false when it belongs to none.
func (b *B2BUA) byeBroadcast(req *sip.Request, tx sip.ServerTransaction, fromDevice bool) bool {
	b.voice.mu.Lock()
	var v *voiceCall
	if fromDevice {
		v = b.voice.byDevice[req.CallID().Value()]
	} else {
		v = b.voice.byUpper[req.CallID().Value()]
	}
	b.voice.mu.Unlock()
	if v == nil {
		return false
	}
	ep, reason := b.upper, "BYE from the upper platform"
	if fromDevice {
		ep, reason = b.lower, "BYE from the device"
	}
	ep.Respond(tx, req, sip.StatusOK, "OK", nil)
	v.ack() // a BYE means our 200 OK arrived
	b.endBroadcast(v, reason, !fromDevice, fromDevice)
	return true
}

// endBroadcast frees v's media and SSRCs first, then BYEs the legs that
// did not end themselves.
func (b *B2BUA) endBroadcast(v *voiceCall, reason string, byeDevice, byeUpper bool) {
	v.endOnce.Do(func() {
		v.ack() // nothing more to re-send
		b.voice.mu.Lock()
		delete(b.voice.byDevice, v.dev.CallID().Value())
		if v.up != nil {
			delete(b.voice.byUpper, v.up.CallID().Value())
		}
		src, upRes, final := v.src, v.upRes, v.final
		b.voice.mu.Unlock()
		if src != nil {
			src.Close() // its sinks with it
		}
		if v.devHeld {
			b.ssrc.release(v.devSSRC)
		}
		if v.upSSRC != 0 {
			b.ssrc.release(v.upSSRC)
		}
		v.log.Info().Str("reason", reason).Msg("voice broadcast ended")
		b.metrics.Inc("gbproxy_call_ends_total", "reason", reasonLabel(reason))
		if byeUpper && upRes != nil {
			b.bye(v.log, b.upper, b.upperDialogRequest(v, sip.BYE, v.up.CSeq().SeqNo+1), "upper platform")
		}
		if byeDevice && final.ok() {
			b.bye(v.log, b.lower, b.deviceDialogRequest(v, sip.BYE), "device")
		}
	})
}

// deviceDialogRequest is a request of ours in the device's dialog, where
// we are the called party.
func (b *B2BUA) deviceDialogRequest(v *voiceCall, method sip.RequestMethod) *sip.Request {
	return calleeRequest(b.lower, method, v.dev, v.localTag, v.devPeer, v.dev.CallID().Value(), 1)
}

func (b *B2BUA) bye(log zerolog.Logger, ep *endpoint.Endpoint, req *sip.Request, who string) {
	ctx, cancel := context.WithTimeout(b.ctx, byeTimeout)
	defer cancel()
	res, err := ep.Do(ctx, req)
	if err != nil || !res.IsSuccess() {
		log.Warn().Err(err).Int("status", statusOf(res)).Msg(who + " did not take our BYE; the broadcast is ended on our side")
	}
}

// broadcastsOf lists the established broadcasts, for a device (all when
// deviceID is empty).
func (b *B2BUA) broadcastsOf(deviceID string) []*voiceCall {
	b.voice.mu.Lock()
	defer b.voice.mu.Unlock()
	var out []*voiceCall
	for _, v := range b.voice.byDevice {
		if (deviceID == "" || v.deviceID == deviceID) && v.final.ok() {
			out = append(out, v)
		}
	}
	return out
}

// endBroadcasts ends the broadcasts of deviceID (all when empty), both
// legs BYE'd, each through spawn (on its own goroutine).
func (b *B2BUA) endBroadcasts(deviceID, reason string, spawn func(func())) {
	for _, v := range b.broadcastsOf(deviceID) {
		spawn(func() { b.endBroadcast(v, reason, true, true) })
	}
}

// broadcastSessions are the established broadcasts as the API lists them.
func (b *B2BUA) broadcastSessions() []Session {
	var out []Session
	for _, v := range b.broadcastsOf("") {
		in, sent := v.src.Stats().In, v.sink.Stats().Out
		out = append(out, Session{
			CallID: v.up.CallID().Value(), ChannelID: v.bc.ChannelID, UpperID: v.bc.UpperID, Kind: "broadcast",
			UpperTransport: v.src.Transport().String(), LowerTransport: v.sink.Transport().String(),
			SSRCUpper: formatSSRC(v.upSSRC), SSRCLower: formatSSRC(v.devSSRC),
			Packets: sent.Packets, Bytes: sent.Bytes, Lost: in.Lost, StartedAt: v.started,
			DeviceID: v.deviceID, UpperChannelID: v.bc.TargetID, LowerCallID: v.dev.CallID().Value(), LastPacketAt: in.Last,
		})
	}
	return out
}

// hangupBroadcast ends the broadcast whose upper-side Call-ID is callID.
func (b *B2BUA) hangupBroadcast(callID string) bool {
	b.voice.mu.Lock()
	v := b.voice.byUpper[callID]
	live := v != nil && v.final.ok()
	b.voice.mu.Unlock()
	if !live {
		return false
	}
	b.endBroadcast(v, "ended through the API", true, true)
	return true
}
