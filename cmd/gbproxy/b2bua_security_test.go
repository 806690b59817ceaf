package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
	"github.com/gbproxy/gbproxy/cmd/gbsim/sim/media"
)

// Media and teardown of live calls as a border gateway must handle them,
// over real sockets: 127.0.0.1 is the upper platform and the device,
// 127.0.0.2 an attacker on the upper's network.

const attackerIP = "127.0.0.2"

// rawUpper sends an upper platform's INVITE by hand, so that a test decides
// when (and from where) the media connection is made.
type rawUpper struct {
	t  *testing.T
	cl *sipgo.Client
	to string // the proxy's upper-side SIP address
}

func newRawUpper(t *testing.T, p *testProxy) *rawUpper {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent(upperID), sipgo.WithUserAgentHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ua.Close() })
	return &rawUpper{t: t, cl: cl, to: p.cascade.UpperAddr()}
}

// tcpOffer is an SDP offer in which the upper dials the media (a=setup:active).
func tcpOffer(channelID, mediaIP string) string {
	return strings.Join([]string{"v=0", "o=" + upperID + " 0 0 IN IP4 " + mediaIP, "s=Play", "u=" + channelID + ":0",
		"c=IN IP4 " + mediaIP, "t=0 0", "m=video 9 TCP/RTP/AVP 96", "a=recvonly", "a=rtpmap:96 PS/90000",
		"a=setup:active", "a=connection:new", "y=0100000077", ""}, "\r\n")
}

// invite sends INVITE with offer for channelID and ACKs a 2xx.
func (u *rawUpper) invite(ctx context.Context, channelID, offer string) (*sip.Request, *sip.Response) {
	u.t.Helper()
	host, port, _ := net.SplitHostPort(u.to)
	pn, _ := strconv.Atoi(port)
	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: channelID, Host: host, Port: pn})
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: upperID, Host: upperID[:10]}, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(8))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: channelID, Host: proxyDomain}})
	req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: upperID, Host: "127.0.0.1"}})
	req.AppendHeader(sip.NewHeader("Subject", channelID+":0100000077,"+upperID+":0"))
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody([]byte(offer))
	tx, err := u.cl.TransactionRequest(ctx, req)
	if err != nil {
		u.t.Fatal(err)
	}
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				continue
			}
			if res.IsSuccess() {
				if err := u.cl.WriteRequest(u.inDialog(sip.ACK, req, res, req.CSeq().SeqNo)); err != nil {
					u.t.Fatal(err)
				}
			}
			return req, res
		case <-tx.Done():
			u.t.Fatalf("INVITE: %v", tx.Err())
		case <-ctx.Done():
			u.t.Fatal("INVITE: no final answer")
		}
	}
}

// inDialog builds a request in the dialog of inv and its 2xx res.
func (u *rawUpper) inDialog(method sip.RequestMethod, inv *sip.Request, res *sip.Response, cseq uint32) *sip.Request {
	target := inv.Recipient
	if ct := res.Contact(); ct != nil {
		target = ct.Address
	}
	req := sip.NewRequest(method, target)
	req.AppendHeader(sip.HeaderClone(inv.From()))
	req.AppendHeader(sip.HeaderClone(res.To()))
	req.AppendHeader(sip.HeaderClone(inv.CallID()))
	req.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: method})
	req.SetDestination(u.to)
	return req
}

// bye hangs up the dialog of inv/res.
func (u *rawUpper) bye(ctx context.Context, inv *sip.Request, res *sip.Response) {
	u.t.Helper()
	got, err := u.cl.Do(ctx, u.inDialog(sip.BYE, inv, res, inv.CSeq().SeqNo+1))
	if err != nil || got.StatusCode != 200 {
		u.t.Fatalf("BYE: %v %v", err, got)
	}
}

// expectRefused connects from ip to addr and fails unless the connection
// is closed at once with nothing received (the reset may fail the connect).
func expectRefused(t *testing.T, ip, addr string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp4", addr)
	if err != nil {
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("connect from %s to %s: %v; want it accepted and reset, or reset", ip, addr, err)
		}
		return
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("media connection from %s: read %d bytes, err %v; want it closed at once with no media", ip, n, err)
	}
}

// gauge reads one unlabelled sample from the proxy's /metrics.
func gauge(t *testing.T, p *testProxy, name string) float64 {
	t.Helper()
	return metricValue(t, p.httpLn.Addr().String(), name)
}

// An upper that dials its TCP media (we listen) gets the stream only from
// its own address within media_allow: an attacker who connects first, from
// 127.0.0.2, is refused and counted, and the upper then receives the video.
func TestTCPPassiveMediaRefusesOtherAddresses(t *testing.T) {
	for _, c := range []struct {
		name     string
		platform string // media_allow of the upper
		mediaIP  string // the offer's c=
	}{
		{"not the upper's address", "", "127.0.0.1"},
		// The offer names the attacker's address, which media_allow excludes.
		{"outside media_allow", `      media_allow: ["127.0.0.1/32"]`, attackerIP},
	} {
		t.Run(c.name, func(t *testing.T) {
			rig := newLiveRig(t, rigOptions{platform: c.platform})
			ctx := ctxTimeout(t, 20*time.Second)
			up := newRawUpper(t, rig.p)
			inv, res := up.invite(ctx, rig.ch, tcpOffer(rig.ch, c.mediaIP))
			if res.StatusCode != 200 {
				t.Fatalf("INVITE answered %d %s", res.StatusCode, res.Reason)
			}
			answer, err := sim.ParseSDP(res.Body())
			if err != nil {
				t.Fatal(err)
			}
			// The device streams from its ACK: an accepted stranger would
			// get the early packets at once.
			eventually(t, 5*time.Second, "device streaming", func() bool {
				s := rig.p.sessions()
				return len(s) == 1
			})
			for range 3 {
				expectRefused(t, attackerIP, answer.Addr())
			}
			refused := func() int64 {
				return rig.p.metrics.Value("gbproxy_media_connections_refused_total", "platform", upperID)
			}
			eventually(t, 2*time.Second, "refusals counted", func() bool { return refused() == 3 })

			recv := media.DialTCPReceiver(answer.Addr(), 2*time.Second) // from 127.0.0.1
			defer recv.Close()
			if _, err := recv.WaitPackets(ctx, 50); err != nil {
				t.Fatalf("the upper got no stream after the refusals: %v", err)
			}
			if got := refused(); got != 3 {
				t.Errorf("%d refusals counted, want 3", got)
			}
			up.bye(ctx, inv, res)
			requireClean(t, rig.p)
		})
	}
}

// When neither address of the upper is in its media_allow, the INVITE is
// refused before the device is called.
func TestTCPPassiveMediaOutsideMediaAllowRefused(t *testing.T) {
	rig := newLiveRig(t, rigOptions{platform: `      media_allow: ["10.0.0.0/8"]`})
	ctx := ctxTimeout(t, 10*time.Second)
	_, res := newRawUpper(t, rig.p).invite(ctx, rig.ch, tcpOffer(rig.ch, "127.0.0.1"))
	if res.StatusCode != 403 || !strings.Contains(res.Reason, "media_allow") {
		t.Fatalf("INVITE answered %d %q, want 403 naming media_allow", res.StatusCode, res.Reason)
	}
	if n := len(rig.dev.Streams()); n != 0 {
		t.Errorf("device got %d INVITEs", n)
	}
	requireClean(t, rig.p)
}

// A device answering with an unusable media address gets the upper a 502
// saying why, not a 200 OK without media; the device call is ended and
// nothing is left.
func TestDeviceAnswerWithoutUsableAddressIs502(t *testing.T) {
	rig := newLiveRig(t, rigOptions{device: func(c *sim.DeviceConfig) { c.MediaIP = "0.0.0.0" }})
	ctx := ctxTimeout(t, 15*time.Second)
	_, err := rig.upper.Play(ctx, proxyID, rig.ch, sim.PlayOptions{})
	var se *sim.StatusError
	if !errors.As(err, &se) || se.Status != 502 || !strings.Contains(se.Reason, "unspecified") {
		t.Fatalf("Play: %v; want 502 with a reason naming the unspecified address", err)
	}
	eventually(t, 5*time.Second, "device call ended by BYE", func() bool {
		st := rig.dev.Streams()
		return len(st) == 1 && st[0].Ended
	})
	requireClean(t, rig.p)
	if n := rig.p.metrics.Value("gbproxy_calls_total", "platform", upperID, "result", "502"); n != 1 {
		t.Errorf("gbproxy_calls_total{result=502} = %d, want 1", n)
	}
}

// The upper that hangs up gets 200 to its BYE and no BYE back, even when it
// closes its TCP media first (as many do); ports are freed at once and the
// end is recorded as the upper's BYE.
func TestUpperByeGetsNoByeBack(t *testing.T) {
	for _, mode := range []string{"udp", "tcp-active"} {
		t.Run(mode, func(t *testing.T) {
			rig := newLiveRig(t, rigOptions{})
			ctx := ctxTimeout(t, 20*time.Second)
			play, err := rig.upper.Play(ctx, proxyID, rig.ch, sim.PlayOptions{Transport: mode})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := play.WaitPackets(ctx, 20); err != nil {
				t.Fatal(err)
			}
			_ = play.Receiver().Close() // the media goes first
			if err := play.Bye(ctx); err != nil {
				t.Fatalf("upper's BYE: %v (ended by %s)", err, play.EndedBy())
			}
			eventually(t, time.Second, "session gone and relay ports free", func() bool {
				s, _, _ := rig.p.b2bua.Counts()
				return s == 0 && rig.p.relay.PortsInUse() == 0 && len(rig.p.sessions()) == 0
			})
			m := rig.p.metrics
			eventually(t, 2*time.Second, "end recorded", func() bool { return m.Value("gbproxy_call_ends_total", "reason", "upper BYE") == 1 })
			if n := m.Value("gbproxy_call_ends_total", "reason", "upper media leg failed"); n != 0 {
				t.Errorf("%d calls recorded as upper media leg failed", n)
			}
			// endCall runs once: "upper BYE" means no BYE was sent, so the
			// journal is final here.
			for _, r := range rig.upper.Requests() {
				if r.Method == "BYE" {
					t.Fatalf("the upper got a BYE for the call it hung up (from %s)", r.Source)
				}
			}
			requireClean(t, rig.p)
		})
	}
}

// gbproxy_sessions counts what /api/v1/sessions lists: a call whose device
// has not answered yet is not a session.
func TestSessionsGaugeCountsEstablishedOnly(t *testing.T) {
	rig := newLiveRig(t, rigOptions{device: func(c *sim.DeviceConfig) { c.InviteDelay = 1500 * time.Millisecond }})
	ctx := ctxTimeout(t, 15*time.Second)
	type result struct {
		play *sim.Play
		err  error
	}
	done := make(chan result, 1)
	go func() {
		p, err := rig.upper.Play(ctx, proxyID, rig.ch, sim.PlayOptions{})
		done <- result{p, err}
	}()
	eventually(t, 5*time.Second, "device holding our INVITE", func() bool { return len(rig.dev.Streams()) == 1 })
	if g, n := gauge(t, rig.p, "gbproxy_sessions"), len(rig.p.sessions()); g != 0 || n != 0 {
		t.Fatalf("while the device has not answered: gbproxy_sessions %v, /api/v1/sessions %d; want 0 and 0", g, n)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.play.Close()
	if g, n := gauge(t, rig.p, "gbproxy_sessions"), len(rig.p.sessions()); g != 1 || n != 1 {
		t.Fatalf("once answered: gbproxy_sessions %v, /api/v1/sessions %d; want 1 and 1", g, n)
	}
	// The set-up time includes the device's 1.5 s: in the (1, 2.5] bucket.
	s := scrapeSeries(t, "http://"+rig.p.httpLn.Addr().String()+"/metrics")
	setup := `gbproxy_invite_setup_seconds_bucket{platform="` + upperID + `",result="ok",le="%s"}`
	if s[fmt.Sprintf(setup, "1")] != 0 || s[fmt.Sprintf(setup, "2.5")] != 1 || s[fmt.Sprintf(setup, "+Inf")] != 1 {
		t.Errorf("gbproxy_invite_setup_seconds: le=1 %v, le=2.5 %v, le=+Inf %v; want 0, 1, 1",
			s[fmt.Sprintf(setup, "1")], s[fmt.Sprintf(setup, "2.5")], s[fmt.Sprintf(setup, "+Inf")])
	}
	if err := r.play.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	requireClean(t, rig.p)
	if g := gauge(t, rig.p, "gbproxy_sessions"); g != 0 {
		t.Errorf("after BYE: gbproxy_sessions %v", g)
	}
}

// A refused INVITE's From user never becomes a metric label.
func TestRefusedInviteLabelIsNotFromTheWire(t *testing.T) {
	rig := newLiveRig(t, rigOptions{})
	ctx := ctxTimeout(t, 10*time.Second)
	up := newRawUpper(t, rig.p)
	// A claimed platform ID that is not configured: sent raw with another From.
	host, port, _ := net.SplitHostPort(up.to)
	pn, _ := strconv.Atoi(port)
	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: rig.ch, Host: host, Port: pn})
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "junk-label-value", Host: "x"}, Params: sip.NewParams()}
	from.Params.Add("tag", "t1")
	req.AppendHeader(from)
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody([]byte(tcpOffer(rig.ch, "127.0.0.1")))
	res, err := up.cl.Do(ctx, req)
	if err != nil || res.StatusCode/100 == 2 {
		t.Fatalf("INVITE from an unknown platform: %v %v", err, res)
	}
	var text strings.Builder
	if err := rig.p.metrics.WritePrometheus(&text); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(text.String(), "junk-label-value") {
		t.Fatal("the From user of a refused INVITE became a metric label")
	}
	// The guard refuses it before the B2BUA: counted under a fixed reason.
	if res.StatusCode != sip.StatusForbidden {
		t.Errorf("INVITE from an unknown platform answered %d, want 403", res.StatusCode)
	}
	// The INVITE and the ACK to our 403 (dropped): each is counted.
	if n := rig.p.metrics.Value("gbproxy_sip_refused_total", "side", "upper", "reason", "unknown_platform"); n < 1 {
		t.Errorf("gbproxy_sip_refused_total{side=upper,reason=unknown_platform} = %d, want at least 1", n)
	}
}

// Toward the device, a TCP-passive media leg (the device dials us) takes
// its connection only from the device: a stranger on the lower network who
// connects first, from 127.0.0.2, is refused and cannot feed the upper a
// stream of its own; the device then connects and the upper gets video.
func TestDeviceSideTCPPassiveRefusesStrangers(t *testing.T) {
	rig := newLiveRig(t, rigOptions{streamMode: "tcp-passive", device: func(c *sim.DeviceConfig) { c.InviteDelay = 1500 * time.Millisecond }})
	ctx := ctxTimeout(t, 20*time.Second)
	done := make(chan *sim.Play, 1)
	go func() {
		play, err := rig.upper.Play(ctx, proxyID, rig.ch, sim.PlayOptions{})
		if err != nil {
			t.Error(err)
		}
		done <- play
	}()
	inv, err := rig.dev.WaitRequest(ctx, "INVITE", "")
	if err != nil {
		t.Fatal(err)
	}
	offer, err := sim.ParseSDP(inv.Request.Body())
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		expectRefused(t, attackerIP, offer.Addr())
	}
	play := <-done
	if play == nil {
		t.FailNow()
	}
	if _, err := play.WaitPackets(ctx, 50); err != nil {
		t.Fatalf("the device's own connection was not taken after the refusals: %v", err)
	}
	if err := play.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	requireClean(t, rig.p)
}
