package sim

import (
	"context"
	"fmt"
	"net"
	"sync"

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
	callID   string
	conn     *net.UDPConn
	rtp      *media.Packetizer
	dlg      dialog
	route    lowerRoute
	u        *Upper
	mu       sync.Mutex
	ended    chan struct{}
	endOnce  sync.Once
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
	v := &VoiceSource{SourceID: req.Recipient.User, Offer: offer, SSRC: ssrc, callID: req.CallID().Value(),
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
	u.voices[v.callID] = v
	u.mu.Unlock()
	u.log.Info("voice source called", "lower", lowerID, "source", v.SourceID, "dest", offer.Addr())
	u.respond(tx, res)
	u.voiceJournal.add(v)
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
