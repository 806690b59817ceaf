package sim

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim/media"
)

// fastRate plays DefaultVideo at 250 fps, so a test streams the whole clip in 0.2 s.
const fastRate = 250

func firstChannel(d *Device) string { return d.cfg.Channels[0].ID }

// playAndCompare plays the device's first channel and checks the media end to end: the upper
// received exactly the bytes the device sent, a GB program stream of the device's video.
func playAndCompare(t *testing.T, ctx context.Context, u *Upper, d *Device, opts PlayOptions) (*Play, StreamInfo) {
	t.Helper()
	p, err := u.Play(ctx, devID, firstChannel(d), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	// StreamOnce: the device goes quiet after the clip, so the payloads can be compared whole.
	s, err := d.WaitStream(ctx, func(s StreamInfo) bool { return s.CallID == p.CallID() && s.Acked && !s.Streaming && s.Packets > 0 })
	if err != nil {
		t.Fatal(err)
	}
	if s.MediaErr != "" {
		t.Fatalf("device media error: %s", s.MediaErr)
	}
	sent := d.SentPayload(p.CallID())
	if len(sent) != s.Bytes {
		t.Fatalf("SentPayload has %d bytes, stream info says %d", len(sent), s.Bytes)
	}
	if _, err := p.WaitBytes(ctx, len(sent)); err != nil {
		t.Fatal(err)
	}
	if got := p.Payload(); !bytes.Equal(got, sent) {
		t.Fatalf("received %d payload bytes that differ from the %d sent", len(got), len(sent))
	}
	dm, err := media.Demux(sent)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dm.Video, media.DefaultVideo) || dm.StreamTypes[media.StreamIDVideo] != media.StreamTypeH264 || dm.Packs != 50 {
		t.Fatalf("demuxed %d video bytes, %d packs, stream types %v: want the default clip in 50 packs, H.264 in 0xE0",
			len(dm.Video), dm.Packs, dm.StreamTypes)
	}
	pkts := p.Packets()
	if len(pkts) != s.Packets {
		t.Fatalf("received %d packets, device sent %d", len(pkts), s.Packets)
	}
	ssrc, _ := parseSSRC(s.SSRC)
	for i, pk := range pkts {
		if pk.SSRC != ssrc || pk.PayloadType != 96 || (i > 0 && pk.Sequence != pkts[i-1].Sequence+1) {
			t.Fatalf("packet %d: %+v, want SSRC %d PT 96 and consecutive sequence numbers", i, pk, ssrc)
		}
	}
	return p, s
}

func TestPlayLiveVideo(t *testing.T) {
	// The device's transport as the upper's choice makes it: the device dials a passive upper.
	deviceSide := map[string]string{"udp": "udp", "tcp-passive": "tcp-active", "tcp-active": "tcp-passive"}
	for _, sipTransport := range transports {
		for _, mt := range []string{"udp", "tcp-passive", "tcp-active"} {
			t.Run(sipTransport+"/"+mt, func(t *testing.T) {
				checkGoroutines(t)
				ctx := testContext(t)
				u, d := startPair(t, sipTransport, DeviceConfig{FrameRate: fastRate, StreamOnce: true})
				p, s := playAndCompare(t, ctx, u, d, PlayOptions{Transport: mt})

				if s.Transport != deviceSide[mt] || s.ChannelID != firstChannel(d) || s.Status != 200 {
					t.Errorf("stream %+v: want transport %s, channel %s, status 200", s, deviceSide[mt], firstChannel(d))
				}
				if s.SSRC != p.SSRC || p.Answer.SSRC != p.SSRC || len(p.SSRC) != 10 {
					t.Errorf("SSRC offered %q, answered %q, used %q: want one 10-digit value", p.SSRC, p.Answer.SSRC, s.SSRC)
				}
				// The INVITE as the device saw it.
				inv, err := d.WaitRequest(ctx, "INVITE", "")
				if err != nil {
					t.Fatal(err)
				}
				if sipTransport == "tcp" && !inv.OnRegConn {
					t.Error("INVITE did not come down the device's registration connection")
				}
				subj := inv.Request.GetHeader("Subject")
				if subj == nil || subj.Value() != firstChannel(d)+":"+p.SSRC+","+upperID+":0" {
					t.Errorf("Subject %v", subj)
				}
				offer := string(inv.Request.Body())
				for _, want := range []string{"s=Play\r\n", "u=" + firstChannel(d) + ":0\r\n", "a=recvonly\r\n",
					"a=rtpmap:96 PS/90000\r\n", "a=rtpmap:98 H264/90000\r\n", "y=" + p.SSRC + "\r\n", "o=" + upperID + " 0 0 IN IP4 127.0.0.1\r\n"} {
					if !strings.Contains(offer, want) {
						t.Errorf("offer lacks %q:\n%s", want, offer)
					}
				}
				// The answer as the upper saw it.
				ans := string(p.Response.Body())
				wantSetup := map[string]string{"udp": "", "tcp-passive": "a=setup:active\r\n", "tcp-active": "a=setup:passive\r\n"}[mt]
				for _, want := range []string{"o=" + firstChannel(d) + " 0 0 IN IP4 127.0.0.1\r\n", "s=Play\r\n", "a=sendonly\r\n",
					"a=rtpmap:96 PS/90000\r\n", "y=" + p.SSRC + "\r\n", "f=v/2/4/25/1/4096a/1/8/1\r\n", wantSetup} {
					if !strings.Contains(ans, want) {
						t.Errorf("answer lacks %q:\n%s", want, ans)
					}
				}
				if (mt == "udp") == strings.Contains(ans, "TCP/RTP/AVP") || (mt != "udp") != strings.Contains(ans, "a=connection:new") {
					t.Errorf("answer's proto or connection line wrong for %s:\n%s", mt, ans)
				}
				if ct := p.Response.GetHeader("Content-Type"); ct == nil || ct.Value() != "application/sdp" {
					t.Errorf("answer Content-Type %v", ct)
				}

				if err := p.Bye(ctx); err != nil {
					t.Fatal(err)
				}
				s, err = d.WaitStream(ctx, func(s StreamInfo) bool { return s.CallID == p.CallID() && s.Ended })
				if err != nil {
					t.Fatal(err)
				}
				if s.EndReason != EndBye || p.EndedBy() != "bye-sent" {
					t.Errorf("end reason %q / %q, want %q / bye-sent", s.EndReason, p.EndedBy(), EndBye)
				}
				if ack, err := d.WaitRequest(ctx, "ACK", ""); err != nil || (sipTransport == "tcp" && !ack.OnRegConn) {
					t.Errorf("ACK: %v (on registration connection: %v)", err, ack.OnRegConn)
				}
			})
		}
	}
}

func TestDeviceHangsUpAndLoops(t *testing.T) {
	for _, sipTransport := range transports {
		t.Run(sipTransport, func(t *testing.T) {
			checkGoroutines(t)
			ctx := testContext(t)
			// Looping: more frames than the clip has must go out.
			u, d := startPair(t, sipTransport, DeviceConfig{FrameRate: fastRate})
			p, err := u.Play(ctx, devID, firstChannel(d), PlayOptions{Transport: "tcp-passive"})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if _, err := p.Receiver().Wait(ctx, func(s media.Stats) bool { return s.Bytes > 2*len(media.DefaultVideo) }); err != nil {
				t.Fatal(err)
			}
			if err := d.HangUp(ctx, p.CallID()); err != nil {
				t.Fatal(err)
			}
			select {
			case <-p.Ended():
			case <-ctx.Done():
				t.Fatal("the upper did not see the device's BYE")
			}
			if p.EndedBy() != "bye-received" {
				t.Errorf("ended by %q", p.EndedBy())
			}
			s, _ := d.Stream(p.CallID())
			if !s.Ended || s.EndReason != EndHangUp || s.Streaming {
				t.Errorf("stream after HangUp: %+v", s)
			}
			if bye, err := u.WaitRequest(ctx, "BYE", ""); err != nil || bye.Transport != strings.ToUpper(sipTransport) {
				t.Errorf("BYE at the upper: %v, transport %s", err, bye.Transport)
			}
			dm, err := media.Demux(p.Payload())
			clip := media.DefaultVideo
			if err != nil || dm.Packs <= 50 || dm.PSMs < 3 || !bytes.HasPrefix(dm.Video, clip) ||
				!bytes.HasPrefix(clip, dm.Video[len(clip):min(len(dm.Video), 2*len(clip))]) {
				t.Errorf("looped stream: %v, %d packs, %d PSMs, %d video bytes: want the clip again after the clip",
					err, dm.Packs, dm.PSMs, len(dm.Video))
			}
			if err := d.HangUp(ctx, p.CallID()); err == nil {
				t.Error("a second HangUp succeeded")
			}
		})
	}
}

func TestStopMediaKeepsCall(t *testing.T) {
	checkGoroutines(t)
	ctx := testContext(t)
	u, d := startPair(t, "udp", DeviceConfig{FrameRate: fastRate})
	p, err := u.Play(ctx, devID, firstChannel(d), PlayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.WaitPackets(ctx, 20); err != nil {
		t.Fatal(err)
	}
	if err := d.StopMedia(p.CallID()); err != nil {
		t.Fatal(err)
	}
	s, _ := d.Stream(p.CallID())
	time.Sleep(100 * time.Millisecond) // in-flight datagrams
	got := len(p.Packets())
	time.Sleep(200 * time.Millisecond)
	if n := len(p.Packets()); n != got || got != s.Packets {
		t.Errorf("packets went on after StopMedia: %d, then %d; device sent %d", got, n, s.Packets)
	}
	if s.Ended || s.Streaming {
		t.Errorf("after StopMedia: ended %v streaming %v, want the call up and quiet", s.Ended, s.Streaming)
	}
	if err := p.Bye(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestInviteRejectedAndCancelled(t *testing.T) {
	for _, sipTransport := range transports {
		t.Run(sipTransport, func(t *testing.T) {
			checkGoroutines(t)
			ctx := testContext(t)
			u, d := startPair(t, sipTransport, DeviceConfig{InviteStatus: 486})
			_, err := u.Play(ctx, devID, firstChannel(d), PlayOptions{})
			var se *StatusError
			if !errors.As(err, &se) || se.Status != 486 {
				t.Fatalf("Play = %v, want a StatusError 486", err)
			}
			if s := d.Streams(); len(s) != 1 || s[0].Status != 486 || s[0].EndReason != EndReject {
				t.Errorf("streams %+v", s)
			}
			if _, err := u.Play(ctx, devID, "34020000001329999999", PlayOptions{}); !errors.As(err, &se) || se.Status != 404 {
				t.Errorf("Play of an unknown channel = %v, want 404", err)
			}

			_, d2 := startPairWith(t, u, sipTransport, "34020000001320000002", DeviceConfig{InviteDelay: 3 * time.Second})
			short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err = u.Play(short, "34020000001320000002", "34020000001320000002", PlayOptions{Transport: "tcp-passive"})
			if err == nil || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Play with an expiring context = %v", err)
			}
			if time.Since(start) > 2*time.Second {
				t.Errorf("Play took %v to give up", time.Since(start))
			}
			s, err := d2.WaitStream(ctx, func(s StreamInfo) bool { return s.Ended })
			if err != nil {
				t.Fatal(err)
			}
			if s.EndReason != EndCancel || s.Status != 487 {
				t.Errorf("cancelled stream: reason %q status %d, want %q 487", s.EndReason, s.Status, EndCancel)
			}
			// The upper's ACK to the 487 is still on its way: a device closing while sipgo handles it
			// makes sipgo open a socket for the answer that nothing closes (a leak checkGoroutines sees).
			time.Sleep(100 * time.Millisecond)
		})
	}
}

// startPairWith registers one more device with this ID to u.
func startPairWith(t *testing.T, u *Upper, transport, id string, cfg DeviceConfig) (*Upper, *Device) {
	t.Helper()
	cfg.ID, cfg.Server, cfg.Transport = id, u.Addr(), transport
	d := newDevice(t, cfg)
	if err := d.Start(testContext(t)); err != nil {
		t.Fatal(err)
	}
	return u, d
}

func TestPlayQuirks(t *testing.T) {
	t.Run("listen late", func(t *testing.T) {
		checkGoroutines(t)
		ctx := testContext(t)
		u, d := startPair(t, "tcp", DeviceConfig{FrameRate: fastRate, StreamOnce: true})
		start := time.Now()
		_, s := playAndCompare(t, ctx, u, d, PlayOptions{Transport: "tcp-passive", ListenLate: 300 * time.Millisecond})
		if s.Transport != "tcp-active" || time.Since(start) < 300*time.Millisecond {
			t.Errorf("transport %s, done after %v", s.Transport, time.Since(start))
		}
	})
	for _, sipTransport := range transports {
		t.Run("retransmit INVITE over "+sipTransport, func(t *testing.T) {
			checkGoroutines(t)
			ctx := testContext(t)
			u, d := startPair(t, sipTransport, DeviceConfig{FrameRate: fastRate, StreamOnce: true})
			p, s := playAndCompare(t, ctx, u, d, PlayOptions{Transport: "udp", RetransmitInvite: true})
			if p.InviteResponses != 2 {
				t.Errorf("%d 2xx answers taken, want 2", p.InviteResponses)
			}
			if sipTransport == "tcp" && s.Retransmissions != 1 {
				// Over UDP sipgo's transaction absorbs it and the device's 2xx retransmission answers.
				t.Errorf("device answered %d INVITE retransmissions, want 1", s.Retransmissions)
			}
			if len(d.Streams()) != 1 {
				t.Errorf("%d calls at the device, want 1", len(d.Streams()))
			}
		})
	}
	t.Run("no SSRC, ms timestamps, other port", func(t *testing.T) {
		checkGoroutines(t)
		ctx := testContext(t)
		u, d := startPair(t, "udp", DeviceConfig{FrameRate: fastRate, StreamOnce: true, TimestampMS: true, SendFromOtherPort: true})
		p, s := playAndCompare(t, ctx, u, d, PlayOptions{NoSSRC: true})
		if p.SSRC != "" || strings.Contains(string(p.Offer.Raw), "y=") {
			t.Errorf("offer has y=: %q", p.Offer.Raw)
		}
		if len(s.SSRC) != 10 || p.Answer.SSRC != s.SSRC || !strings.HasPrefix(s.SSRC, "0") {
			t.Errorf("device SSRC %q, answered %q: want its own 10-digit live SSRC", s.SSRC, p.Answer.SSRC)
		}
		pk := p.Packets()
		var frames []uint32
		for _, x := range pk {
			if len(frames) == 0 || frames[len(frames)-1] != x.Timestamp {
				frames = append(frames, x.Timestamp)
			}
		}
		for i := 1; i < len(frames); i++ {
			if frames[i]-frames[i-1] != 4 { // 1000 ms / 250 fps
				t.Fatalf("timestamp step %d, want 4 (ms at 250 fps)", frames[i]-frames[i-1])
			}
		}
		if src := p.Receiver().Stats().Sources; len(src) != 1 || src[0] == s.LocalAddr || src[0] != s.Source {
			t.Errorf("media came from %v; announced %s, sent from %s", src, s.LocalAddr, s.Source)
		}
	})
	t.Run("large TCP packets", func(t *testing.T) {
		checkGoroutines(t)
		ctx := testContext(t)
		u, d := startPair(t, "udp", DeviceConfig{FrameRate: fastRate, StreamOnce: true, TCPMaxRTPPacket: 65535})
		p, _ := playAndCompare(t, ctx, u, d, PlayOptions{Transport: "tcp-active"})
		biggest := 0
		for _, x := range p.Packets() {
			biggest = max(biggest, x.PayloadLen)
		}
		if biggest <= 1400 {
			t.Errorf("largest payload %d bytes: TCPMaxRTPPacket not applied", biggest)
		}
	})
}

// TestDeviceAnswersSeedInvite sends the seed document's TCP-passive INVITE by hand over UDP and
// receives the media on a plain listener.
func TestDeviceAnswersSeedInvite(t *testing.T) {
	checkGoroutines(t)
	ctx := testContext(t)
	_, d := startPair(t, "udp", DeviceConfig{FrameRate: fastRate, StreamOnce: true})
	rx, err := media.ListenTCPReceiver("127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	pc := listenUDP(t)
	ch := firstChannel(d)
	body := "v=0\r\no=" + upperID + " 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		"m=video " + strconv.Itoa(rx.Port()) + " TCP/RTP/AVP 96 98 97\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\n" +
		"a=rtpmap:98 H264/90000\r\na=rtpmap:97 MPEG4/90000\r\na=setup:passive\r\ny=0100000001\r\n"
	callID := "seed-" + randomHex(4)
	inv := rawRequest(pc, "INVITE", ch+"@"+d.LocalAddr(), callID, "", "Subject: "+ch+":0100000001,"+upperID+":0\r\nContent-Type: application/sdp\r\n", body)
	res := rawExchange(t, pc, d.LocalAddr(), inv)
	if res.StatusCode != 200 {
		t.Fatalf("INVITE answered %d", res.StatusCode)
	}
	ans, err := ParseSDP(res.Body())
	if err != nil {
		t.Fatal(err)
	}
	if ans.Setup != "active" || ans.Connection != "new" || ans.SSRC != "0100000001" || ans.Direction != "sendonly" ||
		ans.RTPMap["96"] != "PS/90000" || ans.Origin != ch || !ans.TCP() || len(ans.Formats) != 1 {
		t.Errorf("answer:\n%s", ans.Raw)
	}
	if toTag(res) == "" || res.Contact() == nil {
		t.Error("200 OK without To tag or Contact")
	}
	// No media before the ACK.
	time.Sleep(100 * time.Millisecond)
	if n := rx.Stats().Packets; n != 0 {
		t.Fatalf("%d packets before the ACK", n)
	}
	ack := replaceCSeq(rawRequest(pc, "ACK", ch+"@"+d.LocalAddr(), callID, toTag(res), "", ""), res.CSeq().SeqNo, "ACK")
	if _, err := pc.WriteTo([]byte(ack), mustUDPAddr(t, d.LocalAddr())); err != nil {
		t.Fatal(err)
	}
	s, err := d.WaitStream(ctx, func(s StreamInfo) bool { return s.Acked && !s.Streaming && s.Packets > 0 })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rx.WaitBytes(ctx, s.Bytes); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rx.Payload(), d.SentPayload(callID)) {
		t.Error("received payload differs from SentPayload")
	}
	for _, pk := range rx.Packets() {
		if pk.SSRC != 100000001 {
			t.Fatalf("RTP SSRC %d, want y= 0100000001", pk.SSRC)
		}
	}
	// BYE from the raw peer, then a BYE for an unknown call.
	bye := replaceCSeq(rawRequest(pc, "BYE", ch+"@"+d.LocalAddr(), callID, toTag(res), "", ""), res.CSeq().SeqNo+1, "BYE")
	if r := rawExchange(t, pc, d.LocalAddr(), bye); r.StatusCode != 200 {
		t.Errorf("BYE answered %d", r.StatusCode)
	}
	if r := rawExchange(t, pc, d.LocalAddr(), rawRequest(pc, "BYE", ch+"@"+d.LocalAddr(), "nope", "x", "", "")); r.StatusCode != 481 {
		t.Errorf("BYE for an unknown call answered %d, want 481", r.StatusCode)
	}
}

func TestUpperRefusesStrayBye(t *testing.T) {
	checkGoroutines(t)
	u := startUpper(t, UpperConfig{})
	pc := listenUDP(t)
	to := upperID + "@" + u.Addr()
	if r := rawExchange(t, pc, u.Addr(), rawRequest(pc, "BYE", to, "stray-"+randomHex(4), "b2", "", "")); r.StatusCode != 481 {
		t.Errorf("stray BYE answered %d, want 481", r.StatusCode)
	}
	// A stray ACK gets no answer and must not disturb the upper.
	if _, err := pc.WriteTo([]byte(rawRequest(pc, "ACK", to, "stray", "b2", "", "")), mustUDPAddr(t, u.Addr())); err != nil {
		t.Fatal(err)
	}
	if r := rawExchange(t, pc, u.Addr(), rawRequest(pc, "OPTIONS", to, "opt-"+randomHex(4), "", "", "")); r.StatusCode != 200 {
		t.Errorf("OPTIONS after a stray ACK answered %d", r.StatusCode)
	}
}

func TestParseSDP(t *testing.T) {
	s, err := ParseSDP([]byte("v=0\no=34020000001310000002 0 0 IN IP4 192.168.0.111\ns=Play\ni=VCam Live Video\n" +
		"c=IN IP4 192.168.0.111\nt=0 0\nm=video 9724 TCP/RTP/AVP 96\na=sendonly\na=rtpmap:96 PS/90000\n" +
		"a=streamprofile:0\na=setup:active\na=connection:new\ny=0100000001\nf=v/0/0/0/0/0a/0/0/0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Addr() != "192.168.0.111:9724" || !s.TCP() || s.Setup != "active" || s.SSRC != "0100000001" ||
		s.Format != "v/0/0/0/0/0a/0/0/0" || s.Origin != "34020000001310000002" || transportOf(s) != "tcp-passive" {
		t.Errorf("%+v", s)
	}
	for _, bad := range []string{"v=0\nc=IN IP4 1.2.3.4\n", "m=video 1 RTP/AVP 96\n", "c=IN IP4 1.2.3.4\nm=video 1 TCP/RTP/AVP 96\n"} {
		if _, err := ParseSDP([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func mustUDPAddr(t *testing.T, s string) net.Addr {
	t.Helper()
	a, err := net.ResolveUDPAddr("udp", s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// replaceCSeq rewrites a raw request's CSeq line.
func replaceCSeq(req string, n uint32, method string) string {
	i := strings.Index(req, "CSeq: ")
	j := strings.Index(req[i:], "\r\n")
	return req[:i] + "CSeq: " + strconv.FormatUint(uint64(n), 10) + " " + method + req[i+j:]
}
