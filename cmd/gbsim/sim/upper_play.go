package sim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim/media"
)

// StatusError is a final non-2xx answer to a request a simulator sent.
type StatusError struct {
	Method string
	Status int
	Reason string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s answered %d %s", e.Method, e.Status, e.Reason)
}

// cancelWait bounds how long Play waits for the 487 after sending CANCEL.
const cancelWait = 2 * time.Second

// PlayOptions tune Upper.Play. Zero values take the documented defaults.
type PlayOptions struct {
	// Transport of the media: "udp" (default); "tcp-passive", the upper listens (a=setup:passive)
	// and accepts the connection the lower makes; "tcp-active", the upper dials the address of the
	// answer (a=setup:active).
	Transport string
	// MediaIP is announced in o= and c= and listened on; default the upper's listen IP.
	MediaIP string
	// SSRC is the y= value offered; default "0" + digits 4-8 of the upper's ID + a 4-digit sequence.
	SSRC string
	// NoSSRC omits y= from the offer.
	NoSSRC bool
	// ListenLate (tcp-passive) opens the media listener only this long after the 200 OK arrives, so
	// that a peer dialling at once is refused and must retry, as a widely used platform does.
	ListenLate time.Duration
	// RetransmitInvite sends the identical INVITE again (same Call-ID, CSeq and branch, over TCP too)
	// when the first 200 OK arrives, ignores that 200 OK and takes the answer to the retransmission,
	// as a widely used platform sometimes does.
	RetransmitInvite bool
	// ConnectRetry (tcp-active) is how long the upper retries connecting; default 5 s.
	ConnectRetry time.Duration
	// TalkBack offers a=sendrecv instead of recvonly: the upper will send media (two-way audio) back
	// on the same leg.
	TalkBack bool
}

// Play is a live-video call the upper made to a lower, and the media it receives.
type Play struct {
	LowerID, ChannelID string
	Transport          string // as asked: udp, tcp-passive or tcp-active
	SSRC               string // y= offered, "" with NoSSRC
	Offer              SDP
	// Answer is the lower's SDP: Answer.SSRC its y=, Answer.Addr() its media address, Answer.Setup
	// its TCP role.
	Answer   SDP
	Response *sip.Response // the 200 OK acknowledged
	// InviteResponses counts the 2xx answers received (2 when RetransmitInvite was answered).
	InviteResponses int

	u        *Upper
	route    lowerRoute
	receiver *media.Receiver
	callID   string
	sendMu   sync.Mutex // serialises in-dialog requests
	dlg      dialog     // guarded by sendMu

	mu       sync.Mutex
	ended    chan struct{}
	endOnce  sync.Once
	endedBy  string // "bye-received", "bye-sent", "closed"
	released bool
}

// CallID returns the call's Call-ID.
func (p *Play) CallID() string { return p.callID }

// Receiver returns the media receiver: packets, payload, waits.
func (p *Play) Receiver() *media.Receiver { return p.receiver }

// Packets returns the RTP packets received so far.
func (p *Play) Packets() []media.PacketInfo { return p.receiver.Packets() }

// Payload returns the RTP payloads received so far, concatenated: the program stream.
func (p *Play) Payload() []byte { return p.receiver.Payload() }

// WaitPackets waits until n RTP packets arrived.
func (p *Play) WaitPackets(ctx context.Context, n int) (media.Stats, error) {
	return p.receiver.WaitPackets(ctx, n)
}

// WaitBytes waits until n payload bytes arrived.
func (p *Play) WaitBytes(ctx context.Context, n int) (media.Stats, error) {
	return p.receiver.WaitBytes(ctx, n)
}

// Ended is closed when the call ends: the lower's BYE (answered 200), Bye or Close.
func (p *Play) Ended() <-chan struct{} { return p.ended }

// EndedBy says how the call ended: "bye-received", "bye-sent" or "closed"; "" while it is up.
func (p *Play) EndedBy() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.endedBy
}

func (p *Play) end(by string) bool {
	first := false
	p.endOnce.Do(func() {
		p.mu.Lock()
		p.endedBy = by
		p.mu.Unlock()
		close(p.ended)
		first = true
	})
	return first
}

// Bye hangs up: BYE in the dialog (over the lower's registered route), failing unless answered
// 2xx. The receiver stops; what it received stays readable.
func (p *Play) Bye(ctx context.Context) error {
	if !p.end("bye-sent") {
		return fmt.Errorf("play %s: call ended already (%s)", p.callID, p.EndedBy())
	}
	defer p.release()
	p.sendMu.Lock()
	req := p.dlg.newRequest(sip.BYE, p.route.dest, p.route.transport)
	p.sendMu.Unlock()
	req.AppendHeader(&sip.ContactHeader{Address: contactURI(p.u.cfg.ID, p.u.addr)})
	res, err := p.route.client.Do(ctx, req)
	if err != nil {
		return fmt.Errorf("BYE to lower %s (Call-ID %s): %w", p.LowerID, p.callID, err)
	}
	if res.StatusCode/100 != 2 {
		return &StatusError{Method: "BYE", Status: res.StatusCode, Reason: res.Reason}
	}
	return nil
}

// Close hangs up with a BYE (waiting at most 2 s for its answer) unless the call ended already,
// and stops the receiver.
func (p *Play) Close() {
	select {
	case <-p.ended:
	default:
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := p.Bye(ctx); err != nil {
			p.u.log.Info("BYE at Close failed", "call_id", p.callID, "error", err)
		}
		cancel()
	}
	p.release()
}

// release stops the receiver and forgets the call.
func (p *Play) release() {
	p.mu.Lock()
	done := p.released
	p.released = true
	p.mu.Unlock()
	if done {
		return
	}
	_ = p.receiver.Close()
	p.u.mu.Lock()
	delete(p.u.plays, p.callID)
	p.u.mu.Unlock()
}

// Play asks a registered lower for live video of channelID (GB/T 28181 §9.2): INVITE with a
// recvonly offer over the lower's registered route (its own TCP connection over TCP), ACK of the
// 200 OK, then media reception as opts.Transport says. When ctx ends before the final answer it
// sends CANCEL and returns an error; a non-2xx answer is a *StatusError.
func (u *Upper) Play(ctx context.Context, lowerID, channelID string, opts PlayOptions) (*Play, error) {
	return u.call(ctx, lowerID, channelID, callSpec{session: "Play", timing: "t=0 0"}, opts)
}

// callSpec is what tells a live call, a playback and a download apart in the offer.
type callSpec struct {
	session string   // s=
	timing  string   // the t= line
	attrs   []string // more media a= lines
}

func (u *Upper) call(ctx context.Context, lowerID, channelID string, spec callSpec, opts PlayOptions) (*Play, error) {
	r, err := u.route(lowerID)
	if err != nil {
		return nil, err
	}
	if opts.Transport == "" {
		opts.Transport = "udp"
	}
	ip := opts.MediaIP
	if ip == "" {
		ip, _, _ = net.SplitHostPort(u.addr)
		if parsed := net.ParseIP(ip); parsed == nil || parsed.IsUnspecified() {
			ip = "127.0.0.1"
		}
	}
	ssrc := opts.SSRC
	if ssrc == "" {
		ssrc = nextSSRC(u.cfg.ID, int(u.ssrcSeq.Add(1)))
		if spec.session != "Play" {
			ssrc = "1" + ssrc[1:] // history
		}
	}
	if opts.NoSSRC {
		ssrc = ""
	}
	p := &Play{LowerID: lowerID, ChannelID: channelID, Transport: opts.Transport, SSRC: ssrc, u: u, route: r,
		callID: randomHex(12), ended: make(chan struct{})}

	// The media socket first: its port goes in the offer.
	var port int
	proto, setup := "TCP/RTP/AVP", ""
	switch opts.Transport {
	case "udp":
		proto = "RTP/AVP"
		p.receiver, err = media.ListenUDPReceiver(net.JoinHostPort(ip, "0"))
		if err == nil {
			port = p.receiver.Port()
		}
	case "tcp-passive":
		setup = "passive"
		if opts.ListenLate > 0 {
			port, err = media.ReservePort("tcp", ip) // listened on once the 200 OK is in
		} else {
			p.receiver, err = media.ListenTCPReceiver(net.JoinHostPort(ip, "0"), 0)
			if err == nil {
				port = p.receiver.Port()
			}
		}
	case "tcp-active":
		setup = "active"
		// The upper dials; the port announced is reserved but not used (RFC 4145 allows 9).
		port, err = media.ReservePort("tcp", ip)
	default:
		return nil, fmt.Errorf("play: transport %q: want udp, tcp-passive or tcp-active", opts.Transport)
	}
	if err != nil {
		return nil, fmt.Errorf("play %s: media socket: %w", channelID, err)
	}
	failed := true
	defer func() {
		if failed && p.receiver != nil {
			_ = p.receiver.Close()
		}
	}()

	lines := []string{
		"v=0",
		"o=" + u.cfg.ID + " 0 0 IN IP4 " + ip,
		"s=" + spec.session,
		"u=" + channelID + ":0",
		"c=IN IP4 " + ip,
		spec.timing,
		"m=video " + strconv.Itoa(port) + " " + proto + " 96 97 98",
		"a=" + map[bool]string{false: "recvonly", true: "sendrecv"}[opts.TalkBack],
		"a=rtpmap:96 PS/90000",
		"a=rtpmap:97 MPEG4/90000",
		"a=rtpmap:98 H264/90000",
	}
	if setup != "" {
		lines = append(lines, "a=setup:"+setup, "a=connection:new")
	}
	lines = append(lines, spec.attrs...)
	if ssrc != "" {
		lines = append(lines, "y="+ssrc)
	}
	body := sdpLines(lines...)
	if p.Offer, err = ParseSDP(body); err != nil {
		return nil, fmt.Errorf("play: own offer does not parse: %w", err)
	}

	target := sip.Uri{Scheme: "sip", User: channelID, Host: r.uri.Host}
	p.dlg = dialog{callID: p.callID, local: u.selfURI(), remote: target, localTag: randomHex(5), target: target,
		cseq: uint32(randomUint32()%30000) + 1}
	req := p.dlg.newRequest(sip.INVITE, r.dest, r.transport)
	req.AppendHeader(&sip.ContactHeader{Address: contactURI(u.cfg.ID, u.addr)})
	subjectSSRC := ssrc
	if subjectSSRC == "" {
		subjectSSRC = "0"
	}
	req.AppendHeader(sip.NewHeader("Subject", channelID+":"+subjectSSRC+","+u.cfg.ID+":0"))
	req.AppendHeader(sip.NewHeader("Allow", "INVITE, ACK, BYE, CANCEL, INFO, MESSAGE, NOTIFY, SUBSCRIBE"))
	req.AppendHeader(sip.NewHeader("User-Agent", userAgent))
	ct := sip.ContentTypeHeader("application/sdp")
	req.AppendHeader(&ct)
	req.SetBody(body)

	u.mu.Lock()
	u.plays[p.callID] = p // known before the INVITE leaves: a BYE may follow the 200 OK closely
	u.mu.Unlock()
	defer func() {
		if failed {
			u.mu.Lock()
			delete(u.plays, p.callID)
			u.mu.Unlock()
		}
	}()

	res, n, err := u.invite(ctx, r, req, opts.RetransmitInvite)
	if err != nil {
		return nil, fmt.Errorf("play %s at lower %s: %w", channelID, lowerID, err)
	}
	p.Response, p.InviteResponses = res, n
	p.dlg.remoteTag = toTag(res)
	if c := res.Contact(); c != nil {
		p.dlg.target = c.Address
	}
	if err := u.ack(r, req, res); err != nil {
		return nil, fmt.Errorf("play %s: ACK: %w", channelID, err)
	}
	answer, err := ParseSDP(res.Body())
	if err != nil {
		byeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cancelWait)
		_, _ = r.client.Do(byeCtx, p.dlg.newRequest(sip.BYE, r.dest, r.transport))
		cancel()
		return nil, fmt.Errorf("play %s: answer SDP unusable, call hung up: %w", channelID, err)
	}
	p.Answer = answer
	switch {
	case opts.Transport == "tcp-active":
		p.receiver = media.DialTCPReceiver(answer.Addr(), opts.ConnectRetry)
	case opts.Transport == "tcp-passive" && p.receiver == nil:
		p.receiver, err = media.ListenTCPReceiver(net.JoinHostPort(ip, strconv.Itoa(port)), opts.ListenLate)
		if err != nil {
			return nil, fmt.Errorf("play %s: %w", channelID, err)
		}
	}
	failed = false
	u.log.Info("play started", "lower", lowerID, "channel", channelID, "call_id", p.callID, "transport", opts.Transport,
		"ssrc", ssrc, "answer_ssrc", answer.SSRC, "answer_media", answer.Addr(), "answer_setup", answer.Setup)
	return p, nil
}

// invite sends req and returns its 2xx and the number of 2xx seen. With retransmit, the first 2xx
// is ignored: the identical INVITE goes out again and the next 2xx (sipgo hands 2xx
// retransmissions to OnRetransmission) is the answer.
func (u *Upper) invite(ctx context.Context, r lowerRoute, req *sip.Request, retransmit bool) (*sip.Response, int, error) {
	tx, err := r.client.TransactionRequest(ctx, req)
	if err != nil {
		return nil, 0, fmt.Errorf("INVITE to %s/%s: %w", r.dest, r.transport, err)
	}
	defer tx.Terminate()
	again := make(chan *sip.Response, 8)
	for {
		select {
		case res := <-tx.Responses():
			switch {
			case res.IsProvisional():
				continue
			case res.StatusCode/100 != 2:
				return nil, 0, &StatusError{Method: "INVITE", Status: res.StatusCode, Reason: res.Reason}
			case !retransmit:
				return res, 1, nil
			}
			ctx2, ok := tx.(*sip.ClientTx)
			if !ok {
				return nil, 1, errors.New("INVITE retransmission: unexpected transaction type")
			}
			ctx2.OnRetransmission(func(res *sip.Response) {
				select {
				case again <- res:
				default:
				}
			})
			u.log.Info("ignoring the first 200 OK and retransmitting the INVITE", "call_id", req.CallID().Value())
			// Straight to the transport: an identical copy, not a new (re-stamped) transaction.
			if err := u.ua.TransportLayer().WriteMsg(req); err != nil {
				return nil, 1, fmt.Errorf("INVITE retransmission: %w", err)
			}
		case res := <-again:
			return res, 2, nil
		case <-tx.Done():
			if err := tx.Err(); err != nil {
				return nil, 0, fmt.Errorf("INVITE to %s/%s: %w", r.dest, r.transport, err)
			}
			return nil, 0, fmt.Errorf("INVITE to %s/%s: transaction ended without an answer", r.dest, r.transport)
		case <-ctx.Done():
			u.cancelInvite(r, req, tx)
			return nil, 0, fmt.Errorf("INVITE cancelled: %w", ctx.Err())
		}
	}
}

// cancelInvite sends CANCEL for req (RFC 3261 §9.1) and waits briefly for the INVITE's final answer,
// acknowledging a 2xx that crossed the CANCEL with ACK and BYE.
func (u *Upper) cancelInvite(r lowerRoute, req *sip.Request, tx sip.ClientTransaction) {
	cancelReq := sip.NewRequest(sip.CANCEL, req.Recipient)
	cancelReq.AppendHeader(sip.HeaderClone(req.Via()))
	cancelReq.AppendHeader(sip.HeaderClone(req.From()))
	cancelReq.AppendHeader(sip.HeaderClone(req.To()))
	cancelReq.AppendHeader(sip.HeaderClone(req.CallID()))
	cancelReq.AppendHeader(&sip.CSeqHeader{SeqNo: req.CSeq().SeqNo, MethodName: sip.CANCEL})
	maxFwd := sip.MaxForwardsHeader(70)
	cancelReq.AppendHeader(&maxFwd)
	cancelReq.SetDestination(req.Destination())
	cancelReq.SetTransport(req.Transport())
	ctx, cancel := context.WithTimeout(u.ctx, cancelWait)
	defer cancel()
	res, err := r.client.Do(ctx, cancelReq, sipgo.ClientRequestBuild)
	if err != nil {
		u.log.Warn("CANCEL failed", "call_id", req.CallID().Value(), "error", err)
		return
	}
	u.log.Info("INVITE cancelled", "call_id", req.CallID().Value(), "cancel_status", res.StatusCode)
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				continue
			}
			if res.StatusCode/100 == 2 { // the answer crossed the CANCEL: end the call properly
				_ = u.ack(r, req, res)
				dl := dialog{callID: req.CallID().Value(), local: req.From().Address, remote: req.To().Address,
					localTag: fromTag(req), remoteTag: toTag(res), target: req.Recipient, cseq: req.CSeq().SeqNo}
				if c := res.Contact(); c != nil {
					dl.target = c.Address
				}
				_, _ = r.client.Do(ctx, dl.newRequest(sip.BYE, r.dest, r.transport))
			}
			return
		case <-tx.Done():
			return
		case <-ctx.Done():
			return
		}
	}
}

// ack acknowledges a 2xx to req (RFC 3261 §13.2.2.4): Request-URI the answer's Contact, sent down
// the lower's route like every request.
func (u *Upper) ack(r lowerRoute, req *sip.Request, res *sip.Response) error {
	target := req.Recipient
	if c := res.Contact(); c != nil {
		target = c.Address
	}
	ack := sip.NewRequest(sip.ACK, target)
	ack.AppendHeader(sip.HeaderClone(req.From()))
	ack.AppendHeader(sip.HeaderClone(res.To()))
	ack.AppendHeader(sip.HeaderClone(req.CallID()))
	ack.AppendHeader(&sip.CSeqHeader{SeqNo: req.CSeq().SeqNo, MethodName: sip.ACK})
	ack.AppendHeader(sip.NewHeader("User-Agent", userAgent))
	ack.SetDestination(r.dest)
	ack.SetTransport(r.transport)
	return r.client.WriteRequest(ack)
}

// onBye answers a BYE in a play dialog with 200 and ends the play; any other BYE gets 481.
func (u *Upper) onBye(req *sip.Request, tx sip.ServerTransaction) {
	var p *Play
	if id := req.CallID(); id != nil {
		u.mu.Lock()
		p = u.plays[id.Value()]
		u.mu.Unlock()
	}
	if p == nil || !p.end("bye-received") {
		u.log.Info("BYE for an unknown call refused", "source", req.Source())
		u.reply(req, tx, sip.StatusCallTransactionDoesNotExists, "Call Does Not Exist")
		return
	}
	u.log.Info("BYE received, play ended", "lower", p.LowerID, "channel", p.ChannelID, "call_id", p.callID)
	u.reply(req, tx, sip.StatusOK, "OK")
	p.release()
}
