package sim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim/media"
)

// Live video defaults.
const (
	// defaultDeviceFormat is the f= line a device answers with when the offer has none: H.264,
	// 4CIF (4), 25 fps, CBR (1) 4096 kbit/s; G.711 (1), 8 kbit/s, 8 kHz (1).
	defaultDeviceFormat = "v/2/4/25/1/4096a/1/8/1"
	// ackTimeout is RFC 3261 Timer H (64·T1): a 200 OK unacknowledged by then ends the call.
	ackTimeout = 32 * time.Second
	// defaultMaxRecorded bounds the payload bytes a device keeps per call for SentPayload.
	defaultMaxRecorded = 32 << 20
	t1                 = 500 * time.Millisecond
	t2                 = 4 * time.Second
)

// Why a device call ended (StreamInfo.EndReason).
const (
	EndBye    = "bye"    // the peer sent BYE
	EndHangUp = "hangup" // HangUp: the device sent BYE
	EndCancel = "cancel" // the INVITE was cancelled before the answer
	EndReject = "reject" // the INVITE was answered with an error status
	EndNoAck  = "no-ack" // the 200 OK was never acknowledged
	EndClose  = "close"  // the device was closed
)

// StreamInfo describes one INVITE a device received and the live stream it sent for it.
type StreamInfo struct {
	CallID    string
	ChannelID string // Request-URI user of the INVITE
	// Transport is the media transport as seen from the device: "udp"; "tcp-active" when the
	// device dials (the offer said a=setup:passive); "tcp-passive" when the device listens.
	Transport string
	SSRC      string // y= of the answer, the SSRC of every RTP packet sent (as 10 decimal digits)
	Status    int    // final status the INVITE was answered with (0 while pending)
	LocalAddr string // media address announced in the answer's c=/m=
	// Remote is the media peer: where RTP is sent (udp, tcp-active) or who connected (tcp-passive).
	Remote string
	// Source is the address RTP left from (differs from LocalAddr with SendFromOtherPort).
	Source string
	// Retransmissions counts retransmitted INVITEs answered again with the same 200 OK.
	Retransmissions int
	Acked           bool
	Streaming       bool // the media loop is running (a TCP connection may still be pending)
	Packets, Bytes  int  // RTP packets and payload bytes sent
	// Received counts RTP packets the peer sent back on a UDP media leg answered a=sendrecv
	// (two-way audio: the offer said sendrecv).
	Received      int
	Ended         bool
	EndReason     string // EndBye, EndHangUp, EndCancel, EndReject, EndNoAck, EndClose; "" while up
	MediaErr      string // why the media stopped early: connect or send failure
	Offer, Answer SDP    // Answer is zero unless the INVITE was answered 200
	Started       time.Time
}

// deviceCall is one INVITE dialog on the device side.
type deviceCall struct {
	info     StreamInfo // guarded by Device.mu
	cseq     uint32     // of the INVITE
	fromTag  string
	ok       *sip.Response // the 200 OK, re-sent on retransmitted INVITEs
	payload  []byte        // guarded by Device.mu; capped at MaxRecordedPayload
	acked    chan struct{}
	ackOnce  sync.Once
	byeMu    sync.Mutex // serialises in-dialog requests
	dlg      dialog     // guarded by byeMu
	dest     string     // where in-dialog requests go
	udpConn  *net.UDPConn
	tcpLn    net.Listener
	media    context.CancelFunc // stops the media loop; nil before it starts
	mediaEnd chan struct{}      // closed when the media loop returned
	rec      *recording         // playback and download: position, pace, pause
}

func (c *deviceCall) ack() { c.ackOnce.Do(func() { close(c.acked) }) }

// Streams returns every INVITE the device received, in arrival order.
func (d *Device) Streams() []StreamInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]StreamInfo, 0, len(d.callOrder))
	for _, id := range d.callOrder {
		out = append(out, d.calls[id].info)
	}
	return out
}

// Stream returns the stream of one call, and whether the device saw that Call-ID.
func (d *Device) Stream(callID string) (StreamInfo, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.calls[callID]
	if !ok {
		return StreamInfo{}, false
	}
	return c.info, true
}

// WaitStream waits until a stream satisfies cond and returns it (the first in arrival order).
func (d *Device) WaitStream(ctx context.Context, cond func(StreamInfo) bool) (StreamInfo, error) {
	for {
		changed := d.streamChange.changed()
		for _, s := range d.Streams() {
			if cond(s) {
				return s, nil
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return StreamInfo{}, fmt.Errorf("device %s: awaited stream not seen (%d calls): %w", d.cfg.ID, len(d.Streams()), ctx.Err())
		}
	}
}

// SentPayload returns the RTP payloads sent in a call, concatenated: the program stream, to compare
// byte for byte with what a receiver got. Recording stops before MaxRecordedPayload bytes.
func (d *Device) SentPayload(callID string) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c, ok := d.calls[callID]; ok {
		return slices.Clone(c.payload)
	}
	return nil
}

// StopMedia stops sending media in a call without ending it (no BYE), e.g. to test a peer's
// no-media timeout. It waits for the media loop to return.
func (d *Device) StopMedia(callID string) error {
	d.mu.Lock()
	c, ok := d.calls[callID]
	d.mu.Unlock()
	if !ok {
		return fmt.Errorf("device %s: no call %s", d.cfg.ID, callID)
	}
	d.stopMedia(c)
	return nil
}

// HangUp ends a call from the device side: it stops the media and sends BYE (over TCP down the
// registration connection), failing unless the BYE is answered 2xx.
func (d *Device) HangUp(ctx context.Context, callID string) error {
	d.mu.Lock()
	c, ok := d.calls[callID]
	up := ok && !c.info.Ended && c.info.Status == sip.StatusOK
	if up {
		c.info.Ended, c.info.EndReason = true, EndHangUp
	}
	d.mu.Unlock()
	if !up {
		return fmt.Errorf("device %s: no answered call %s in progress", d.cfg.ID, callID)
	}
	d.streamChange.notify()
	d.stopMedia(c)
	d.releaseMedia(c)
	return d.sendBye(ctx, c)
}

func (d *Device) sendBye(ctx context.Context, c *deviceCall) error {
	c.byeMu.Lock()
	req := c.dlg.newRequest(sip.BYE, c.dest, d.transport)
	c.byeMu.Unlock()
	req.AppendHeader(d.contact())
	req.AppendHeader(sip.NewHeader("User-Agent", userAgent))
	d.mu.Lock()
	client := d.client
	d.mu.Unlock()
	res, err := client.Do(ctx, req)
	if err != nil {
		return fmt.Errorf("device %s: BYE (Call-ID %s) to %s over %s: %w", d.cfg.ID, c.dlg.callID, c.dest, d.transport, err)
	}
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("device %s: BYE (Call-ID %s): %w", d.cfg.ID, c.dlg.callID, &StatusError{Method: "BYE", Status: res.StatusCode, Reason: res.Reason})
	}
	return nil
}

// nextSSRC makes a live-video SSRC as GB/T 28181 §F has it: 0 (live), 5 digits of the domain, and
// a 4-digit sequence.
func nextSSRC(domainID string, seq int) string {
	digits := "00000"
	if len(domainID) >= 8 {
		digits = domainID[3:8]
	}
	return "0" + digits + fmt.Sprintf("%04d", seq%10000)
}

// mediaIP is the address a device announces and binds for media.
func (d *Device) mediaIP() string {
	if d.cfg.MediaIP != "" {
		return d.cfg.MediaIP
	}
	d.mu.Lock()
	local := d.regLocal
	if local == "" && d.udpConn != nil {
		local = d.udpConn.LocalAddr().String()
	}
	d.mu.Unlock()
	if host, _, err := net.SplitHostPort(local); err == nil && net.ParseIP(host) != nil && !net.ParseIP(host).IsUnspecified() {
		return host
	}
	return "127.0.0.1"
}

// onInvite answers a live-video INVITE (s=Play) for the device or one of its channels, as an IPC
// does: 200 OK with a sendonly PS/90000 answer, media after the ACK.
func (d *Device) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	reply := func(code int, reason string) {
		respond(d.log, tx, sip.NewResponseFromRequest(req, code, reason, nil))
	}
	if req.CallID() == nil || req.CSeq() == nil || req.From() == nil || req.To() == nil {
		reply(sip.StatusBadRequest, "Missing Dialog Headers")
		return
	}
	callID := req.CallID().Value()
	d.mu.Lock()
	old := d.calls[callID]
	d.mu.Unlock()
	if old != nil {
		d.onInviteAgain(req, tx, old)
		return
	}
	if toTag(req) != "" {
		reply(sip.StatusCallTransactionDoesNotExists, "Call Does Not Exist") // re-INVITE in an unknown dialog
		return
	}
	channelID := req.Recipient.User
	offer, err := ParseSDP(req.Body())
	c := &deviceCall{
		info: StreamInfo{CallID: callID, ChannelID: channelID, Offer: offer, Started: time.Now()},
		cseq: req.CSeq().SeqNo, fromTag: fromTag(req), acked: make(chan struct{}),
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		reply(sip.StatusServiceUnavailable, "Shutting Down")
		return
	}
	d.calls[callID] = c
	d.callOrder = append(d.callOrder, callID)
	d.mu.Unlock()
	d.streamChange.notify()
	reject := func(code int, reason string) {
		d.endCall(c, EndReject, code)
		reply(code, reason)
	}
	switch {
	case !d.knows(channelID):
		reject(sip.StatusNotFound, "Channel Not Found")
		return
	case err != nil:
		d.log.Warn("INVITE with unusable SDP", "call_id", callID, "error", err)
		reject(sip.StatusBadRequest, "Bad SDP")
		return
	case !strings.EqualFold(offer.Session, "Play") && recordingKind(offer) == "":
		reject(488, "Only Play, Playback and Download Simulated")
		return
	}
	if d.cfg.InviteDelay > 0 {
		respond(d.log, tx, sip.NewResponseFromRequest(req, sip.StatusTrying, "Trying", nil))
		cancelled := make(chan struct{})
		var once sync.Once
		if !tx.OnCancel(func(*sip.Request) { once.Do(func() { close(cancelled) }) }) {
			once.Do(func() { close(cancelled) })
		}
		select {
		case <-time.After(d.cfg.InviteDelay):
		case <-cancelled: // sipgo answered the CANCEL 200 and the INVITE 487
			d.log.Info("INVITE cancelled", "call_id", callID)
			d.endCall(c, EndCancel, sip.StatusRequestTerminated)
			return
		case <-d.ctx.Done():
			reject(sip.StatusServiceUnavailable, "Shutting Down")
			return
		}
	}
	if d.cfg.InviteStatus != 0 {
		reject(d.cfg.InviteStatus, "Rejected By Configuration")
		return
	}
	res, err := d.answerInvite(req, c, offer)
	if err != nil {
		d.log.Warn("cannot answer INVITE", "call_id", callID, "error", err)
		reject(sip.StatusInternalServerError, "Media Setup Failed")
		return
	}
	if err := d.respondFinal(req, tx, res); err != nil {
		d.log.Warn("send 200 OK to INVITE failed", "call_id", callID, "error", err)
	}
	d.log.Info("INVITE answered", "call_id", callID, "channel", channelID, "transport", c.info.Transport,
		"ssrc", c.info.SSRC, "media", c.info.LocalAddr, "peer", offer.Addr())
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.wg.Add(1)
	d.mu.Unlock()
	go d.awaitAck(req, tx, c)
}

// onInviteAgain answers an INVITE whose Call-ID is known: a retransmission (same CSeq) gets the
// same 200 OK again; a re-INVITE is not simulated.
func (d *Device) onInviteAgain(req *sip.Request, tx sip.ServerTransaction, c *deviceCall) {
	d.mu.Lock()
	ok := c.ok
	retrans := req.CSeq().SeqNo == c.cseq && fromTag(req) == c.fromTag && toTag(req) == ""
	if retrans && ok != nil {
		c.info.Retransmissions++
	}
	d.mu.Unlock()
	switch {
	case retrans && ok != nil:
		d.log.Info("INVITE retransmission answered with the same 200 OK", "call_id", c.info.CallID)
		d.streamChange.notify()
		if err := d.respondFinal(req, tx, ok); err != nil {
			d.log.Warn("re-send 200 OK failed", "call_id", c.info.CallID, "error", err)
		}
	case retrans:
		// Still pending (InviteDelay), or answered with an error: the transaction layer re-sends
		// error answers itself; a retransmission on a new transaction has nothing to add.
		d.log.Info("INVITE retransmission ignored", "call_id", c.info.CallID)
	default:
		respond(d.log, tx, sip.NewResponseFromRequest(req, sip.StatusNotImplemented, "Re-INVITE Not Simulated", nil))
	}
}

// answerInvite opens the media socket the answer announces and builds the 200 OK.
func (d *Device) answerInvite(req *sip.Request, c *deviceCall, offer SDP) (*sip.Response, error) {
	ip := d.mediaIP()
	transport := transportOf(offer)
	var port int
	switch transport {
	case "udp":
		conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
		if err != nil {
			return nil, fmt.Errorf("listen UDP on %s: %w", ip, err)
		}
		c.udpConn, port = conn, conn.LocalAddr().(*net.UDPAddr).Port
	case "tcp-active":
		p, err := media.ReservePort("tcp", ip) // announced, and the local port the device dials from
		if err != nil {
			return nil, err
		}
		port = p
	case "tcp-passive":
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			return nil, fmt.Errorf("listen TCP on %s: %w", ip, err)
		}
		c.tcpLn, port = ln, ln.Addr().(*net.TCPAddr).Port
	}
	ssrc := offer.SSRC
	if _, err := parseSSRC(ssrc); err != nil {
		if ssrc != "" {
			d.log.Warn("offer's y= unusable, using our own SSRC", "y", ssrc)
		}
		d.mu.Lock()
		d.ssrcSeq++
		ssrc = nextSSRC(d.cfg.Domain+"0000000000", d.ssrcSeq) // domain: 10 digits
		d.mu.Unlock()
	}
	format := offer.Format
	if format == "" {
		format = defaultDeviceFormat
	}
	proto, setup := "RTP/AVP", ""
	switch transport {
	case "tcp-active":
		proto, setup = "TCP/RTP/AVP", "active"
	case "tcp-passive":
		proto, setup = "TCP/RTP/AVP", "passive"
	}
	session, timing := "Play", "t=0 0"
	if kind := recordingKind(offer); kind != "" {
		session, timing = kind, "t="+strconv.FormatInt(offer.Start, 10)+" "+strconv.FormatInt(offer.Stop, 10)
	}
	lines := []string{
		"v=0",
		"o=" + c.info.ChannelID + " 0 0 IN IP4 " + ip,
		"s=" + session,
		"c=IN IP4 " + ip,
		timing,
		"m=video " + strconv.Itoa(port) + " " + proto + " 96",
		"a=" + answerDirection(offer.Direction),
		"a=rtpmap:96 PS/90000",
	}
	if session == "Download" {
		lines = append(lines, "a=filesize:"+strconv.FormatInt(recordingFileSize(offer), 10))
	}
	if setup != "" {
		lines = append(lines, "a=setup:"+setup, "a=connection:new")
	}
	lines = append(lines, "y="+ssrc, "f="+format)
	body := sdpLines(lines...)
	answer, err := ParseSDP(body)
	if err != nil {
		return nil, fmt.Errorf("own answer does not parse: %w", err)
	}

	res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil)
	localTag := randomHex(5)
	res.To().Params.Add("tag", localTag)
	res.AppendHeader(d.contact())
	res.AppendHeader(sip.NewHeader("User-Agent", userAgent))
	ct := sip.ContentTypeHeader("application/sdp")
	res.AppendHeader(&ct)
	res.SetBody(body)

	target := req.From().Address
	if ct := req.Contact(); ct != nil {
		target = ct.Address
	}
	dest := d.notifyDest(req)
	d.mu.Lock()
	// Set before Status: HangUp reads the dialog only once it sees the 200.
	c.dlg = dialog{callID: c.info.CallID, local: req.To().Address, remote: req.From().Address,
		localTag: localTag, remoteTag: fromTag(req), target: target}
	c.dest = dest
	c.ok = res
	c.info.Transport, c.info.SSRC, c.info.Answer = transport, ssrc, answer
	c.info.LocalAddr = net.JoinHostPort(ip, strconv.Itoa(port))
	c.info.Remote = offer.Addr()
	c.info.Status = sip.StatusOK
	d.mu.Unlock()
	d.streamChange.notify()
	return res, nil
}

// respondFinal sends a 2xx to an INVITE. Over UDP the transaction sends it (and awaitAck repeats
// it until the ACK). Over TCP the transaction is ended first and the answer written straight to the
// connection: sipgo's accepted transaction would swallow a retransmitted INVITE, which must reach
// onInvite to get the same 200 OK again (some upper platforms retransmit INVITE even over TCP).
func (d *Device) respondFinal(req *sip.Request, tx sip.ServerTransaction, res *sip.Response) error {
	if !connOriented(req.Transport()) {
		return tx.Respond(res)
	}
	tx.Terminate()
	d.mu.Lock()
	ua := d.ua
	d.mu.Unlock()
	return ua.TransportLayer().WriteMsg(res)
}

// awaitAck waits for the ACK, re-sending the 200 OK over UDP (RFC 3261 §13.3.1.4), then streams.
func (d *Device) awaitAck(req *sip.Request, tx sip.ServerTransaction, c *deviceCall) {
	defer d.wg.Done()
	deadline := time.NewTimer(ackTimeout)
	defer deadline.Stop()
	interval := t1
	retransmit := time.NewTimer(interval)
	defer retransmit.Stop()
	var acks <-chan *sip.Request
	if stx, ok := tx.(*sip.ServerTx); ok && !connOriented(req.Transport()) {
		acks = stx.Acks() // an ACK that reuses the INVITE's branch matches the transaction
	}
	for {
		select {
		case <-c.acked:
		case <-acks:
			c.ack()
		case <-retransmit.C:
			if !connOriented(req.Transport()) {
				d.mu.Lock()
				ok := c.ok
				d.mu.Unlock()
				_ = tx.Respond(ok)
				interval = min(interval*2, t2)
				retransmit.Reset(interval)
			}
			continue
		case <-deadline.C:
			d.log.Warn("200 OK to INVITE never acknowledged; ending the call", "call_id", c.info.CallID)
			if d.endCall(c, EndNoAck, 0) {
				d.releaseMedia(c)
				ctx, cancel := context.WithTimeout(d.ctx, 5*time.Second)
				if err := d.sendBye(ctx, c); err != nil {
					d.log.Warn("BYE after missing ACK failed", "error", err)
				}
				cancel()
			}
			return
		case <-d.ctx.Done():
			return
		}
		break
	}
	d.mu.Lock()
	c.info.Acked = true
	ended := c.info.Ended
	d.mu.Unlock()
	d.streamChange.notify()
	if !ended {
		d.startMedia(c)
	}
}

// onAck marks the call's 200 OK acknowledged.
func (d *Device) onAck(req *sip.Request) {
	if req.CallID() == nil {
		return
	}
	d.mu.Lock()
	c := d.calls[req.CallID().Value()]
	d.mu.Unlock()
	if c != nil {
		c.ack()
	}
}

// onBye ends a call at the peer's request: media stopped, 200 OK; an unknown call gets 481.
func (d *Device) onBye(req *sip.Request, tx sip.ServerTransaction) {
	if req.CallID() != nil && d.onVoiceBye(req, tx) {
		return
	}
	var c *deviceCall
	if req.CallID() != nil {
		d.mu.Lock()
		c = d.calls[req.CallID().Value()]
		d.mu.Unlock()
	}
	if c == nil || !d.endCall(c, EndBye, 0) {
		respond(d.log, tx, sip.NewResponseFromRequest(req, sip.StatusCallTransactionDoesNotExists, "Call Does Not Exist", nil))
		return
	}
	c.ack() // a BYE before the ACK ends the wait
	d.stopMedia(c)
	d.releaseMedia(c)
	d.log.Info("BYE received, stream stopped", "call_id", c.info.CallID)
	respond(d.log, tx, sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil))
}

// endCall marks a call ended (status, when not 0, is its final answer); false when it already was.
func (d *Device) endCall(c *deviceCall, reason string, status int) bool {
	d.mu.Lock()
	if c.info.Ended {
		d.mu.Unlock()
		return false
	}
	c.info.Ended, c.info.EndReason = true, reason
	if status != 0 {
		c.info.Status = status
	}
	d.mu.Unlock()
	d.streamChange.notify()
	return true
}

// startMedia runs the media loop of an acknowledged call in the background.
func (d *Device) startMedia(c *deviceCall) {
	d.mu.Lock()
	if d.closed || c.media != nil || c.info.Ended {
		d.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(d.ctx)
	c.media, c.mediaEnd = cancel, make(chan struct{})
	c.info.Streaming = true
	d.wg.Add(1)
	d.mu.Unlock()
	d.streamChange.notify()
	go func() {
		defer d.wg.Done()
		defer close(c.mediaEnd)
		err := d.runMedia(ctx, c)
		d.mu.Lock()
		c.info.Streaming = false
		if err != nil && ctx.Err() == nil {
			c.info.MediaErr = err.Error()
		}
		d.mu.Unlock()
		d.streamChange.notify()
		if err != nil && ctx.Err() == nil {
			d.log.Warn("media stopped", "call_id", c.info.CallID, "error", err)
		}
	}()
}

// stopMedia stops the media loop and waits for it.
func (d *Device) stopMedia(c *deviceCall) {
	d.mu.Lock()
	cancel, done := c.media, c.mediaEnd
	d.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// releaseMedia closes the sockets the answer opened (those the media loop did not take over).
func (d *Device) releaseMedia(c *deviceCall) {
	d.mu.Lock()
	conn, ln := c.udpConn, c.tcpLn
	c.udpConn, c.tcpLn = nil, nil
	d.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}
	if ln != nil {
		_ = ln.Close()
	}
}

// runMedia connects as the answer said and streams the video until ctx ends (or once through).
func (d *Device) runMedia(ctx context.Context, c *deviceCall) error {
	d.mu.Lock()
	transport, local, remote, ssrcStr := c.info.Transport, c.info.LocalAddr, c.info.Remote, c.info.SSRC
	conn, ln := c.udpConn, c.tcpLn
	c.udpConn, c.tcpLn = nil, nil // owned by this loop from now on
	d.mu.Unlock()
	ssrc, _ := parseSSRC(ssrcStr)
	if (transport == "udp" && conn == nil) || (transport == "tcp-passive" && ln == nil) {
		return errors.New("media sockets already released")
	}
	var s media.Sender
	var err error
	switch transport {
	case "udp":
		if d.cfg.SendFromOtherPort {
			// NAT quirk: the announced socket stays open but silent; RTP leaves from another port.
			other, lerr := net.ListenUDP("udp", &net.UDPAddr{IP: conn.LocalAddr().(*net.UDPAddr).IP})
			if lerr != nil {
				_ = conn.Close()
				return lerr
			}
			defer conn.Close()
			conn = other
		}
		s, err = media.NewUDPSender(conn, remote)
		if err != nil {
			_ = conn.Close()
		} else if answerDirection(c.info.Offer.Direction) == "sendrecv" {
			go d.countReverse(c, conn)
		}
	case "tcp-active":
		s, err = media.DialTCPSender(ctx, local, remote, d.cfg.MediaConnectRetry)
	case "tcp-passive":
		s, err = media.AcceptTCPSender(ctx, ln)
		_ = ln.Close()
	}
	if err != nil {
		return err
	}
	defer s.Close()
	d.mu.Lock()
	c.info.Source = s.LocalAddr()
	if transport == "tcp-passive" {
		c.info.Remote = s.RemoteAddr()
	}
	d.mu.Unlock()
	d.streamChange.notify()
	maxPkt := media.DefaultMaxRTPSize
	switch {
	case transport != "udp" && d.cfg.TCPMaxRTPPacket > 0:
		maxPkt = d.cfg.TCPMaxRTPPacket
	case transport == "udp" && d.cfg.UDPMaxRTPPacket > 0:
		maxPkt = d.cfg.UDPMaxRTPPacket
	}
	if recordingKind(c.info.Offer) != "" {
		return d.runRecording(ctx, c, s, media.PacketizerConfig{SSRC: ssrc, MaxPacketSize: maxPkt, FirstSequence: uint16(randomUint32())})
	}
	cfg := media.StreamConfig{
		Frames: d.frames, FrameRate: d.cfg.FrameRate, Loop: !d.cfg.StreamOnce,
		Packetizer: media.PacketizerConfig{SSRC: ssrc, MaxPacketSize: maxPkt, TimestampMS: d.cfg.TimestampMS,
			FirstSequence: uint16(randomUint32()), FirstTimestamp: randomUint32()},
		FirstPTS: uint64(randomUint32()),
	}
	err = media.Stream(ctx, cfg, s, func(_, payload []byte) {
		d.mu.Lock()
		c.info.Packets++
		c.info.Bytes += len(payload)
		if len(c.payload)+len(payload) <= d.cfg.MaxRecordedPayload && d.cfg.MaxRecordedPayload > 0 {
			c.payload = append(c.payload, payload...)
		}
		d.mu.Unlock()
		d.streamChange.notify()
	})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// closeCalls ends every call at Close: media stopped, sockets closed, no BYE.
func (d *Device) closeCalls() {
	d.mu.Lock()
	calls := make([]*deviceCall, 0, len(d.calls))
	for _, c := range d.calls {
		calls = append(calls, c)
	}
	d.mu.Unlock()
	for _, c := range calls {
		d.endCall(c, EndClose, 0)
		d.releaseMedia(c)
	}
}

// answerDirection is the device's a= direction for an offer's: a camera sends, and also takes
// media back (two-way audio) when the offer sends too.
func answerDirection(offered string) string {
	if offered == "sendrecv" {
		return "sendrecv"
	}
	return "sendonly"
}

// countReverse counts the RTP packets arriving on a UDP media socket until it is closed.
func (d *Device) countReverse(c *deviceCall, conn *net.UDPConn) {
	buf := make([]byte, 65536)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return
		}
		if _, _, err := media.ParseRTP(buf[:n]); err != nil {
			continue
		}
		d.mu.Lock()
		c.info.Received++
		d.mu.Unlock()
		d.streamChange.notify()
	}
}
