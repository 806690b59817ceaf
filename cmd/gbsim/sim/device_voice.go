package sim

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim/media"
)

// Voice broadcast as a GB/T 28181-2016 §9.12 audio-output device does it: Notify Broadcast is
// answered 200, then a Response Broadcast, then an INVITE to SourceID at the server (m=audio,
// recvonly, y= our SSRC); the audio that arrives is recorded. Snapshots (2022 §9.14): a
// DeviceConfig SnapShotConfig is answered like any DeviceConfig, then UploadSnapShotFinished
// follows with the same SessionID.

// Voice is one broadcast call the device made.
type Voice struct {
	SourceID, TargetID string
	SSRC               uint32 // the y= we asked the audio under
	Answer             SDP    // the server's SDP answer
	receiver           *media.Receiver
	dlg                dialog
	dest               string
	d                  *Device
	mu                 sync.Mutex
	ended              chan struct{}
	endOnce            sync.Once
}

// Receiver is where the audio arrives: Packets (with SSRC) and Payload (concatenated).
func (v *Voice) Receiver() *media.Receiver { return v.receiver }

// Ended is closed when the server sent BYE.
func (v *Voice) Ended() <-chan struct{} { return v.ended }

// Bye ends the call from the device side.
func (v *Voice) Bye(ctx context.Context) error {
	v.mu.Lock()
	req := v.dlg.newRequest(sip.BYE, v.dest, v.d.transport)
	v.mu.Unlock()
	v.finish()
	res, err := v.d.clientDo(ctx, req)
	if err != nil {
		return fmt.Errorf("voice BYE: %w", err)
	}
	if res.StatusCode/100 != 2 {
		return &StatusError{Method: "BYE", Status: res.StatusCode, Reason: res.Reason}
	}
	return nil
}

func (v *Voice) finish() {
	v.endOnce.Do(func() {
		close(v.ended)
		_ = v.receiver.Close()
	})
}

type broadcastNotify struct {
	XMLName  xml.Name `xml:"Notify"`
	CmdType  string   `xml:"CmdType"`
	SN       int      `xml:"SN"`
	SourceID string   `xml:"SourceID"`
	TargetID string   `xml:"TargetID"`
}

// Voices returns the broadcast calls the device made, in order.
func (d *Device) Voices() []*Voice { return d.voices.all() }

// WaitVoice returns the oldest broadcast call not returned before, waiting for one.
func (d *Device) WaitVoice(ctx context.Context) (*Voice, error) {
	return d.voices.wait(ctx, "voice broadcast", func(*Voice) bool { return true })
}

// onBroadcast answers a Notify Broadcast (already answered 200): Response OK, then the INVITE.
func (d *Device) onBroadcast(body []byte) {
	var n broadcastNotify
	if err := decodeBody(body, &n); err != nil {
		d.log.Warn("unreadable Broadcast", "error", err)
		return
	}
	d.goAnswer(command{CmdType: n.CmdType, SN: n.SN}, func(ctx context.Context) error {
		mctx, cancel := context.WithTimeout(ctx, d.requestTimeout())
		err := d.sendMANSCDP(mctx, resultResponse{CmdType: "Broadcast", SN: n.SN, DeviceID: n.TargetID, Result: "OK"})
		cancel()
		if err != nil {
			return err
		}
		// The INVITE waits as long as its transaction lives (Timer B): the server calls the
		// source first, and may re-send a lost 200 OK.
		ctx, cancel = context.WithTimeout(ctx, maxRequestTimeout)
		defer cancel()
		d.mu.Lock()
		d.ssrcSeq++
		seq := d.ssrcSeq
		d.mu.Unlock()
		ssrc, _ := strconv.ParseUint(nextSSRC(d.cfg.ServerID, seq), 10, 32)
		v, err := d.InviteVoice(ctx, n.SourceID, n.TargetID, uint32(ssrc))
		if err != nil {
			return fmt.Errorf("voice INVITE to %s: %w", n.SourceID, err)
		}
		d.voices.add(v)
		return nil
	})
}

// InviteVoice INVITEs sourceID at the server for broadcast audio to targetID under ssrc (UDP,
// PCMA or PS), and ACKs its 2xx.
func (d *Device) InviteVoice(ctx context.Context, sourceID, targetID string, ssrc uint32) (*Voice, error) {
	ip := d.mediaIP()
	rx, err := media.ListenUDPReceiver(net.JoinHostPort(ip, "0"))
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	dest := d.serverAddr
	d.mu.Unlock()
	host, portStr, _ := net.SplitHostPort(dest)
	port, _ := strconv.Atoi(portStr)
	y := fmt.Sprintf("%010d", ssrc)
	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: sourceID, Host: host, Port: port})
	req.SetDestination(dest)
	req.SetTransport(d.transport)
	from := &sip.FromHeader{Address: d.selfURI(), Params: sip.NewParams()}
	from.Params.Add("tag", randomHex(5))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: sourceID, Host: defaultDomain(sourceID)}, Params: sip.NewParams()})
	cid := sip.CallIDHeader(randomHex(10))
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE})
	req.AppendHeader(d.contact())
	req.AppendHeader(sip.NewHeader("Subject", sourceID+":0,"+targetID+":"+y))
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody(sdpLines("v=0", "o="+targetID+" 0 0 IN IP4 "+ip, "s=Play", "i=VCam BroadCast Session", "c=IN IP4 "+ip, "t=0 0",
		fmt.Sprintf("m=audio %d RTP/AVP 8 96", rx.Port()), "a=recvonly", "a=rtpmap:8 PCMA/8000/1", "a=rtpmap:96 PS/90000",
		"y="+y, "f=v/0/0/0/0/0a/1/8/1"))
	d.mu.Lock()
	client := d.client
	d.mu.Unlock()
	if client == nil {
		_ = rx.Close()
		return nil, errors.New("device not started")
	}
	tx, err := client.TransactionRequest(ctx, req)
	if err != nil {
		_ = rx.Close()
		return nil, err
	}
	defer tx.Terminate()
	again := make(chan *sip.Response, 8) // the server's 200 OK re-sent
	if ctx2, ok := tx.(*sip.ClientTx); ok {
		ctx2.OnRetransmission(func(res *sip.Response) {
			select {
			case again <- res:
			default:
			}
		})
	}
	ignored := 0
	for {
		var res *sip.Response
		select {
		case res = <-tx.Responses():
		case res = <-again:
		case <-tx.Done():
			_ = rx.Close()
			return nil, fmt.Errorf("voice INVITE: %w", cmpErr(tx.Err(), errors.New("no answer")))
		case <-ctx.Done():
			_ = rx.Close()
			return nil, ctx.Err()
		}
		if res.IsProvisional() {
			continue
		}
		if res.StatusCode/100 == 2 && ignored < d.cfg.VoiceOKsIgnored {
			ignored++
			d.log.Info("ignoring a 200 OK to the voice INVITE, as if lost", "call_id", cid.Value())
			continue
		}
		if res.StatusCode/100 != 2 {
			_ = rx.Close()
			return nil, &StatusError{Method: "INVITE", Status: res.StatusCode, Reason: res.Reason}
		}
		ans, err := ParseSDP(res.Body())
		if err != nil {
			_ = rx.Close()
			return nil, err
		}
		v := &Voice{SourceID: sourceID, TargetID: targetID, SSRC: ssrc, Answer: ans, receiver: rx, d: d, dest: dest,
			ended: make(chan struct{}),
			dlg: dialog{callID: cid.Value(), local: from.Address, remote: req.To().Address, localTag: fromTag(req),
				remoteTag: toTag(res), target: req.Recipient, cseq: 1}}
		if c := res.Contact(); c != nil {
			v.dlg.target = c.Address
		}
		ack := sip.NewRequest(sip.ACK, v.dlg.target)
		ack.AppendHeader(sip.HeaderClone(req.From()))
		ack.AppendHeader(sip.HeaderClone(res.To()))
		ack.AppendHeader(sip.HeaderClone(req.CallID()))
		ack.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.ACK})
		ack.SetDestination(dest)
		ack.SetTransport(d.transport)
		if d.cfg.VoiceNoAck {
			d.log.Info("not acknowledging the 200 OK to the voice INVITE", "call_id", cid.Value())
		} else if err := client.WriteRequest(ack); err != nil {
			d.log.Warn("voice ACK failed", "error", err)
		}
		d.mu.Lock()
		d.voiceCalls[cid.Value()] = v
		d.mu.Unlock()
		return v, nil
	}
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func (d *Device) clientDo(ctx context.Context, req *sip.Request) (*sip.Response, error) {
	d.mu.Lock()
	client := d.client
	d.mu.Unlock()
	if client == nil {
		return nil, errors.New("device not started")
	}
	return client.Do(ctx, req)
}

// closeVoices ends every broadcast call (no BYE: the device is closing) and closes its receiver.
func (d *Device) closeVoices() {
	d.mu.Lock()
	voices := slices.Collect(maps.Values(d.voiceCalls))
	d.mu.Unlock()
	for _, v := range voices {
		v.finish()
	}
}

// onVoiceBye ends a broadcast call the server hung up; false when req is not for one.
func (d *Device) onVoiceBye(req *sip.Request, tx sip.ServerTransaction) bool {
	d.mu.Lock()
	v := d.voiceCalls[req.CallID().Value()]
	d.mu.Unlock()
	if v == nil {
		return false
	}
	v.finish()
	respond(d.log, tx, sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil))
	return true
}

type snapShotFinished struct {
	XMLName   xml.Name `xml:"Notify"`
	CmdType   string   `xml:"CmdType"`
	SN        int      `xml:"SN"`
	DeviceID  string   `xml:"DeviceID"`
	SessionID string   `xml:"SessionID"`
	FileIDs   []string `xml:"SnapShotList>SnapShotFileID"`
}

// finishSnapshot reports the pictures of a SnapShotConfig uploaded (nothing is uploaded: the
// simulator names SnapNum files).
func (d *Device) finishSnapshot(cmd command) {
	var cfg struct {
		SnapNum   int    `xml:"SnapNum"`
		SessionID string `xml:"SessionID"`
	}
	inner, _ := cmd.field("SnapShotConfig")
	if err := xml.Unmarshal([]byte("<c>"+inner+"</c>"), &cfg); err != nil {
		d.log.Warn("unreadable SnapShotConfig", "error", err)
		return
	}
	n := snapShotFinished{CmdType: "UploadSnapShotFinished", SN: d.nextSN(), DeviceID: d.targetID(cmd), SessionID: cfg.SessionID}
	for i := range max(cfg.SnapNum, 1) {
		n.FileIDs = append(n.FileIDs, fmt.Sprintf("%s-%d", cfg.SessionID, i+1))
	}
	d.goAnswer(cmd, func(ctx context.Context) error { return d.sendMANSCDP(ctx, n) })
}
