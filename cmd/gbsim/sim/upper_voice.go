package sim

import (
	"context"
	"fmt"
	"maps"
	"math"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim/media"
)

// The upper platform's side of a GB/T 28181-2016 §9.12 voice broadcast: it sends Notify
// Broadcast, is called back at its SourceID (it answers sendonly) and sends the audio.

// VoiceSource is a call a lower made to one of the upper's voice sources.
type VoiceSource struct {
	SourceID string
	Offer    SDP // the lower's offer: where the audio goes
	SSRC     uint32
	Remote   string // where the INVITE came from (ip:port): a platform takes it only from the lower registered to it
	callID   string
	conn     *net.UDPConn
	rtp      *media.Packetizer
	dlg      dialog
	route    lowerRoute
	u        *Upper
	mu       sync.Mutex
	ended    chan struct{}
	endOnce  sync.Once
	late     *sip.Response // the 200 OK held back by VoiceAnswerDelay
	lateOnce sync.Once
}

// Ended is closed when the call ended (BYE either way).
func (v *VoiceSource) Ended() <-chan struct{} { return v.ended }

// Send sends each payload as one RTP packet (payload type 8, PCMA) to the lower's address.
func (v *VoiceSource) Send(payloads ...[]byte) error {
	dest, err := net.ResolveUDPAddr("udp", v.Offer.Addr())
	if err != nil {
		return err
	}
	for _, p := range payloads {
		v.mu.Lock()
		pkts := v.rtp.Packetize(p)
		v.mu.Unlock()
		for _, pkt := range pkts {
			if _, err := v.conn.WriteToUDP(pkt, dest); err != nil {
				return err
			}
		}
	}
	return nil
}

// Bye ends the call from the upper's side.
func (v *VoiceSource) Bye(ctx context.Context) error {
	v.mu.Lock()
	req := v.dlg.newRequest(sip.BYE, v.route.dest, v.route.transport)
	v.mu.Unlock()
	v.finish()
	res, err := v.route.client.Do(ctx, req)
	if err != nil {
		return fmt.Errorf("voice BYE: %w", err)
	}
	if res.StatusCode/100 != 2 {
		return &StatusError{Method: "BYE", Status: res.StatusCode, Reason: res.Reason}
	}
	return nil
}

func (v *VoiceSource) finish() {
	v.endOnce.Do(func() {
		close(v.ended)
		_ = v.conn.Close()
	})
}

// WaitVoiceSource returns the oldest voice-source call not returned before, waiting for one.
func (u *Upper) WaitVoiceSource(ctx context.Context) (*VoiceSource, error) {
	return u.voiceJournal.wait(ctx, "voice source call", func(*VoiceSource) bool { return true })
}

// Broadcast sends Notify Broadcast (SourceID, TargetID) to a lower and returns the MESSAGE's
// status and the Response Broadcast bodies that came with its SN.
func (u *Upper) Broadcast(ctx context.Context, lowerID, sourceID, targetID string) (Answer, error) {
	ans := Answer{SN: u.nextSN()}
	body := fmt.Appendf(nil, "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Notify>\r\n<CmdType>Broadcast</CmdType>\r\n"+
		"<SN>%d</SN>\r\n<SourceID>%s</SourceID>\r\n<TargetID>%s</TargetID>\r\n</Notify>\r\n", ans.SN, sourceID, targetID)
	p, res, err := u.startCommand(ctx, lowerID, "Broadcast", ans.SN, body)
	if err != nil {
		return ans, err
	}
	defer u.dropPending(ans.SN)
	ans.Status, ans.Reason = res.StatusCode, res.Reason
	if res.StatusCode/100 != 2 {
		return ans, nil
	}
	bodies, err := u.nextBodies(ctx, p, 0)
	if err != nil {
		return ans, fmt.Errorf("Broadcast to %s: no Response: %w", lowerID, err)
	}
	for _, b := range bodies {
		ans.Bodies = append(ans.Bodies, newAnswerBody(b))
	}
	ans.Complete = true
	return ans, nil
}

// onVoiceInvite answers a lower's INVITE to a voice source: 200 with sendonly audio from a local
// UDP port.
func (u *Upper) onVoiceInvite(req *sip.Request, tx sip.ServerTransaction) {
	offer, err := ParseSDP(req.Body())
	if err != nil || offer.Media != "audio" {
		u.reply(req, tx, sip.StatusNotAcceptableHere, "Audio Offer Expected")
		return
	}
	host, _, _ := net.SplitHostPort(u.addr)
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(host)})
	if err != nil {
		u.reply(req, tx, sip.StatusServiceUnavailable, "No Media Port")
		return
	}
	ssrc := uint32(1000000000 + u.ssrcSeq.Add(1))
	rtp, err := media.NewPacketizer(media.PacketizerConfig{SSRC: ssrc, PayloadType: 8})
	if err != nil {
		_ = conn.Close()
		u.reply(req, tx, sip.StatusInternalServerError, "Packetizer")
		return
	}
	lowerID := req.From().Address.User
	r := lowerRoute{client: u.udpClient, dest: req.Source(), transport: req.Transport()}
	if connOriented(req.Transport()) {
		r.client = u.tcpClient
	}
	v := &VoiceSource{SourceID: req.Recipient.User, Offer: offer, SSRC: ssrc, Remote: req.Source(), callID: req.CallID().Value(),
		conn: conn, rtp: rtp, route: r, u: u, ended: make(chan struct{})}
	localTag := randomHex(5)
	v.dlg = dialog{callID: v.callID, local: req.To().Address, remote: req.From().Address, localTag: localTag,
		remoteTag: fromTag(req), target: req.From().Address, cseq: 1}
	if c := req.Contact(); c != nil {
		v.dlg.target = c.Address
	}
	port := conn.LocalAddr().(*net.UDPAddr).Port
	res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", sdpLines("v=0", "o="+v.SourceID+" 0 0 IN IP4 "+host, "s=Play",
		"c=IN IP4 "+host, "t=0 0", fmt.Sprintf("m=audio %d RTP/AVP 8", port), "a=rtpmap:8 PCMA/8000", "a=sendonly",
		fmt.Sprintf("y=%010d", ssrc)))
	res.To().Params.Add("tag", localTag)
	res.AppendHeader(&sip.ContactHeader{Address: contactURI(v.SourceID, u.addr)})
	res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	u.mu.Lock()
	closed := u.closed
	if !closed {
		u.voices[v.callID] = v
	}
	u.mu.Unlock()
	if closed {
		_ = conn.Close()
		u.reply(req, tx, sip.StatusServiceUnavailable, "Closing")
		return
	}
	u.log.Info("voice source called", "lower", lowerID, "source", v.SourceID, "dest", offer.Addr())
	if u.cfg.VoiceAnswerDelay > 0 {
		u.answerLate(v, req, tx, res)
		return
	}
	u.respond(tx, res)
	u.voiceJournal.add(v)
}

// answerLate rings (180) for VoiceAnswerDelay, then sends res. The INVITE's transaction ends at
// the 180, so that a CANCEL reaches onVoiceCancel, which sends res first: the 200 OK has crossed
// the CANCEL, and no 487 follows that could overtake it.
func (u *Upper) answerLate(v *VoiceSource, req *sip.Request, tx sip.ServerTransaction, res *sip.Response) {
	v.mu.Lock()
	v.late = res
	v.mu.Unlock()
	u.reply(req, tx, sip.StatusRinging, "Ringing")
	tx.Terminate()
	select {
	case <-time.After(u.cfg.VoiceAnswerDelay):
		u.sendLate(v)
	case <-v.ended:
	case <-u.ctx.Done():
	}
}

// sendLate sends the 200 OK answerLate holds, once.
func (u *Upper) sendLate(v *VoiceSource) {
	v.lateOnce.Do(func() {
		v.mu.Lock()
		res := v.late
		v.mu.Unlock()
		res.AppendHeader(sip.NewHeader(headerGBVersion, gbVersion))
		if err := u.ua.TransportLayer().WriteMsg(res); err != nil {
			u.log.Warn("late 200 OK not sent", "call_id", v.callID, "error", err)
		}
		u.voiceJournal.add(v)
	})
}

// onVoiceCancel answers a CANCEL of a ringing voice-source call: the 200 OK goes first, then
// 200 to the CANCEL; false when req is not for one.
func (u *Upper) onVoiceCancel(req *sip.Request, tx sip.ServerTransaction) bool {
	u.mu.Lock()
	v := u.voices[req.CallID().Value()]
	u.mu.Unlock()
	if v == nil {
		return false
	}
	v.mu.Lock()
	late := v.late != nil
	v.mu.Unlock()
	if !late {
		return false
	}
	u.log.Info("CANCEL for a ringing voice source: the 200 OK crosses it", "call_id", v.callID)
	u.sendLate(v)
	u.reply(req, tx, sip.StatusOK, "OK")
	return true
}

// closeVoices ends every voice-source call (no BYE: the upper is closing) and closes its socket.
func (u *Upper) closeVoices() {
	u.mu.Lock()
	voices := slices.Collect(maps.Values(u.voices))
	u.mu.Unlock()
	for _, v := range voices {
		v.finish()
	}
}

// onVoiceBye ends a voice-source call the lower hung up; false when req is not for one.
func (u *Upper) onVoiceBye(req *sip.Request, tx sip.ServerTransaction) bool {
	u.mu.Lock()
	v := u.voices[req.CallID().Value()]
	u.mu.Unlock()
	if v == nil {
		return false
	}
	v.finish()
	u.reply(req, tx, sip.StatusOK, "OK")
	return true
}

// PCMATone is n samples (8 kHz) of a sine at hz, half scale, G.711 A-law encoded: what an operator
// hears on the device's loudspeaker. A whole number of cycles a second loops without a click.
func PCMATone(hz float64, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = alaw(int16(16383 * math.Sin(2*math.Pi*hz*float64(i)/8000)))
	}
	return out
}

// alaw encodes one linear sample as G.711 A-law (ITU-T G.711, as in the reference g711.c).
func alaw(sample int16) byte {
	v, mask := int(sample)>>3, byte(0xD5)
	if v < 0 {
		v, mask = -v-1, 0x55
	}
	seg := 0
	for seg < 8 && v >= 0x20<<seg {
		seg++
	}
	if seg == 8 {
		return 0x7F ^ mask
	}
	a := byte(seg << 4)
	if seg < 2 {
		a |= byte(v>>1) & 0x0F
	} else {
		a |= byte(v>>seg) & 0x0F
	}
	return a ^ mask
}
