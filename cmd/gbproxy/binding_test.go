package main

import (
	"bufio"
	"fmt"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
)

// attacker is the second loopback address: another host on the same network.
const attacker = "127.0.0.2"

var rawSeq atomic.Int64

// rawRequest builds a SIP request as a third party would write it by hand.
func rawRequest(method, local, transport, from, to, body string, extra ...string) string {
	n := rawSeq.Add(1)
	var b strings.Builder
	fmt.Fprintf(&b, "%s sip:%s@%s SIP/2.0\r\n", method, to, proxyDomain)
	fmt.Fprintf(&b, "Via: SIP/2.0/%s %s;rport;branch=z9hG4bK-raw%d\r\n", transport, local, n)
	fmt.Fprintf(&b, "From: <sip:%s@%s>;tag=raw%d\r\n", from, from[:10], n)
	fmt.Fprintf(&b, "To: <sip:%s@%s>\r\n", to, proxyDomain)
	fmt.Fprintf(&b, "Call-ID: raw-%d@%s\r\nCSeq: 1 %s\r\nMax-Forwards: 70\r\n", n, attacker, method)
	fmt.Fprintf(&b, "Contact: <sip:%s@%s>\r\n", from, local)
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	if body != "" {
		b.WriteString("Content-Type: Application/MANSCDP+xml\r\n")
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
	return b.String()
}

// sendUDP sends one request from laddr (ip:0) to addr and returns the
// status code of the first final response (0: none within 3 s).
func sendUDP(t *testing.T, laddr, addr string, build func(local string) string) int {
	t.Helper()
	conn, err := net.ListenPacket("udp", laddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	to, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WriteTo([]byte(build(conn.LocalAddr().String())), to); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 65535)
	for {
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			return 0
		}
		if code := statusCode(string(buf[:n])); code >= 200 {
			return code
		}
	}
}

// sendTCP sends one request on conn and returns the status code of the
// first final response (0: none within 3 s).
func sendTCP(t *testing.T, conn net.Conn, build func(local string) string) int {
	t.Helper()
	if _, err := conn.Write([]byte(build(conn.LocalAddr().String()))); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	r := textproto.NewReader(bufio.NewReader(conn))
	for {
		line, err := r.ReadLine()
		if err != nil {
			return 0
		}
		hdr, err := r.ReadMIMEHeader()
		if err != nil {
			return 0
		}
		if n, _ := strconv.Atoi(hdr.Get("Content-Length")); n > 0 {
			if _, err := r.R.Discard(n); err != nil {
				return 0
			}
		}
		if code := statusCode(line); code >= 200 {
			return code
		}
	}
}

func statusCode(msg string) int {
	f := strings.Fields(firstLine(msg))
	if len(f) < 2 || f[0] != "SIP/2.0" {
		return 0
	}
	code, _ := strconv.Atoi(f[1])
	return code
}

func keepaliveBody(id string) string {
	return `<?xml version="1.0" encoding="GB2312"?>` + "\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>7</SN>\r\n<DeviceID>" + id + "</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
}

// catalogDelBody is a catalog change notification deleting channel.
func catalogDelBody(id, channel string) string {
	return `<?xml version="1.0" encoding="GB2312"?>` + "\r\n<Notify>\r\n<CmdType>Catalog</CmdType>\r\n<SN>8</SN>\r\n<DeviceID>" + id +
		"</DeviceID>\r\n<SumNum>1</SumNum>\r\n<DeviceList Num=\"1\">\r\n<Item>\r\n<DeviceID>" + channel + "</DeviceID>\r\n<Event>DEL</Event>\r\n</Item>\r\n</DeviceList>\r\n</Notify>\r\n"
}

func queryBody(cmdType, id string) string {
	return `<?xml version="1.0" encoding="GB2312"?>` + "\r\n<Query>\r\n<CmdType>" + cmdType + "</CmdType>\r\n<SN>9</SN>\r\n<DeviceID>" + id + "</DeviceID>\r\n</Query>\r\n"
}

// A third host's keepalive and catalog NOTIFY with a registered device's ID
// are refused and change nothing.
func TestBindingSpoofedDeviceRequestsOverUDP(t *testing.T) {
	p := startProxy(t, "", "")
	id := "34020000001320000201"
	d := newDevice(t, p, id, "udp", 2, nil)
	if err := d.Start(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "2 channels stored", func() bool { return len(p.channels(id)) == 2 })
	chans := p.channels(id)

	if code := sendUDP(t, attacker+":0", p.lowerAddr(), func(local string) string {
		return rawRequest("MESSAGE", local, "UDP", id, proxyID, keepaliveBody(id))
	}); code != 403 {
		t.Errorf("spoofed keepalive from %s answered %d, want 403", attacker, code)
	}
	if code := sendUDP(t, attacker+":0", p.lowerAddr(), func(local string) string {
		return rawRequest("NOTIFY", local, "UDP", id, proxyID, catalogDelBody(id, chans[0].ID), "Event: Catalog", "Subscription-State: active")
	}); code != 403 {
		t.Errorf("spoofed catalog NOTIFY from %s answered %d, want 403", attacker, code)
	}
	dev, _ := p.device(id)
	if dev.Remote != d.LocalAddr() || dev.Transport != "UDP" || !dev.Online {
		t.Errorf("device after spoofed requests: %+v, want online at UDP %s", dev, d.LocalAddr())
	}
	if got := p.channels(id); len(got) != 2 || got[0] != chans[0] || got[1] != chans[1] {
		t.Errorf("channels after a spoofed DEL: %+v, want %+v", got, chans)
	}
	// The device itself still gets through.
	if code := sendUDP(t, "127.0.0.1:0", p.lowerAddr(), func(local string) string {
		return rawRequest("MESSAGE", local, "UDP", "34020000001320000299", proxyID, keepaliveBody("34020000001320000299"))
	}); code != 403 {
		t.Errorf("keepalive of an unregistered ID answered %d, want 403", code)
	}
	before, _ := p.device(id)
	eventually(t, 3*time.Second, "the real device's keepalives still taken", func() bool {
		now, _ := p.device(id)
		return now.LastKeepalive != nil && before.LastKeepalive != nil && now.LastKeepalive.After(*before.LastKeepalive)
	})
}

// Over TCP a device's requests count only on the connection it registered on.
func TestBindingOtherTCPConnection(t *testing.T) {
	p := startProxy(t, "", "")
	id := "34020000001320000202"
	d := newDevice(t, p, id, "tcp", 1, nil)
	if err := d.Start(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	for _, local := range []string{"127.0.0.1", attacker} {
		dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 3 * time.Second}
		conn, err := dialer.Dial("tcp", p.lowerAddr())
		if err != nil {
			t.Fatal(err)
		}
		code := sendTCP(t, conn, func(l string) string { return rawRequest("MESSAGE", l, "TCP", id, proxyID, keepaliveBody(id)) })
		conn.Close()
		if code != 403 {
			t.Errorf("keepalive with the device's ID on another connection from %s answered %d, want 403", local, code)
		}
	}
	if dev, _ := p.device(id); dev.Remote != d.LocalAddr() || dev.Transport != "TCP" || !dev.Online {
		t.Errorf("device after keepalives on other connections: %+v, want online on TCP %s", dev, d.LocalAddr())
	}
}

func oneUpperYAML(upperAddr, allowFrom string) string {
	return fmt.Sprintf(`
upper:
  listen: "127.0.0.1:0"
  platforms:
    - id: %q
      address: %q
      transport: udp
      password: %q
      keepalive_interval: 300ms
      retry_interval: 300ms
      allow_from: [%s]
`, upperID, upperAddr, upperPass, allowFrom)
}

// A third host putting a configured upper platform's ID in From gets 403
// for MESSAGE, SUBSCRIBE and INVITE, and the device never sees them;
// allow_from admits a second address of the platform.
func TestBindingSpoofedUpperRequests(t *testing.T) {
	devID := "34020000001320000203"
	channel := devID[:10] + "131" + devID[13:]
	setup := func(t *testing.T, allowFrom string) (*testProxy, *sim.Upper, *sim.Device) {
		up := newUpper(t, "127.0.0.1:0", nil)
		p := startProxy(t, "", oneUpperYAML(up.Addr(), allowFrom))
		d := newDevice(t, p, devID, "udp", 0, func(c *sim.DeviceConfig) {
			c.Channels = []sim.Channel{{ID: channel, Name: "cam", Status: "ON"}}
		})
		if err := d.Start(ctxTimeout(t, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
		eventually(t, 3*time.Second, "channel stored", func() bool { return len(p.channels(devID)) == 1 })
		if _, err := up.WaitRegistered(ctxTimeout(t, 5*time.Second), proxyID); err != nil {
			t.Fatal(err)
		}
		return p, up, d
	}
	upperAddr := func(p *testProxy) string { return p.cascade.UpperAddr() }
	sdp := "v=0\r\no=" + upperID + " 0 0 IN IP4 " + attacker + "\r\ns=Play\r\nc=IN IP4 " + attacker + "\r\nt=0 0\r\nm=video 30000 RTP/AVP 96\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\ny=0100000001\r\n"

	t.Run("refused", func(t *testing.T) {
		p, up, d := setup(t, "")
		for _, tc := range []struct {
			method, to, body string
			extra            []string
		}{
			{"MESSAGE", proxyID, queryBody("DeviceInfo", channel), nil},
			{"SUBSCRIBE", proxyID, queryBody("Catalog", proxyID), []string{"Event: Catalog", "Expires: 600"}},
			{"INVITE", channel, "", []string{"Subject: " + channel + ":0100000001," + upperID + ":0"}},
		} {
			code := sendUDP(t, attacker+":0", upperAddr(p), func(local string) string {
				if tc.method == "INVITE" {
					return strings.Replace(rawRequest(tc.method, local, "UDP", upperID, tc.to, "", tc.extra...),
						"Content-Length: 0\r\n\r\n", "Content-Type: APPLICATION/SDP\r\nContent-Length: "+itoa(len(sdp))+"\r\n\r\n"+sdp, 1)
				}
				return rawRequest(tc.method, local, "UDP", upperID, tc.to, tc.body, tc.extra...)
			})
			if code != 403 {
				t.Errorf("spoofed %s from %s with the upper's ID answered %d, want 403", tc.method, attacker, code)
			}
		}
		// The real upper's query goes the same way: once it is through,
		// anything spoofed that got through would have been too.
		if _, err := up.Query(ctxTimeout(t, 5*time.Second), proxyID, "DeviceStatus", channel); err != nil {
			t.Fatalf("the real upper's query: %v", err)
		}
		if _, err := d.WaitRequest(ctxTimeout(t, 3*time.Second), "MESSAGE", "DeviceStatus"); err != nil {
			t.Fatal(err)
		}
		for _, r := range d.Requests() {
			if r.Method == "INVITE" || r.Method == "SUBSCRIBE" || r.CmdType == "DeviceInfo" {
				t.Errorf("device received %s %s from a spoofed upper request", r.Method, r.CmdType)
			}
		}
		var subs struct{ Upper []map[string]any }
		p.api("/api/v1/subscriptions", &subs)
		if len(subs.Upper) != 0 {
			t.Errorf("spoofed SUBSCRIBE left subscriptions: %+v", subs.Upper)
		}
	})
	t.Run("allow_from", func(t *testing.T) {
		p, _, d := setup(t, `"`+attacker+`/32"`)
		code := sendUDP(t, attacker+":0", upperAddr(p), func(local string) string {
			return rawRequest("MESSAGE", local, "UDP", upperID, proxyID, queryBody("DeviceInfo", channel))
		})
		if code != 200 {
			t.Fatalf("MESSAGE from an allow_from address answered %d, want 200", code)
		}
		if _, err := d.WaitRequest(ctxTimeout(t, 3*time.Second), "MESSAGE", "DeviceInfo"); err != nil {
			t.Fatalf("query from an allow_from address did not reach the device: %v", err)
		}
	})
}

// A REGISTER for a registered device from another address moves it only
// with the right password.
func TestReRegisterFromAnotherAddress(t *testing.T) {
	p := startProxy(t, "", "")
	id := "34020000001320000204"
	home := newDevice(t, p, id, "udp", 2, nil)
	if err := home.Start(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "2 channels stored", func() bool { return len(p.channels(id)) == 2 })
	home.SetKeepalive(false) // from here on only the REGISTERs below speak for the ID

	wrong := newDevice(t, p, id, "udp", 0, func(c *sim.DeviceConfig) { c.LocalAddr, c.Password = attacker+":0", "wrong" })
	res, err := wrong.Register(ctxTimeout(t, 5*time.Second), 3600)
	if err != nil || res.StatusCode != 403 {
		t.Fatalf("REGISTER from %s with a wrong password: %v %v, want 403", attacker, res, err)
	}
	if dev, _ := p.device(id); dev.Remote != home.LocalAddr() || !dev.Online {
		t.Fatalf("device after a wrong-password REGISTER elsewhere: %+v, want online at %s", dev, home.LocalAddr())
	}
	if n := len(p.channels(id)); n != 2 {
		t.Fatalf("channels after a wrong-password REGISTER elsewhere: %d, want 2", n)
	}

	moved := newDevice(t, p, id, "udp", 2, func(c *sim.DeviceConfig) { c.LocalAddr = attacker + ":0" })
	res, err = moved.Register(ctxTimeout(t, 5*time.Second), 3600)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("REGISTER from %s with the right password: %v %v, want 200", attacker, res, err)
	}
	if dev, _ := p.device(id); dev.Remote != moved.LocalAddr() || !dev.Online {
		t.Fatalf("device after registering from %s: %+v, want online at %s", attacker, dev, moved.LocalAddr())
	}
	// Its old address is no longer it.
	if code := sendUDP(t, "127.0.0.1:0", p.lowerAddr(), func(local string) string {
		return rawRequest("MESSAGE", local, "UDP", id, proxyID, keepaliveBody(id))
	}); code != 403 {
		t.Errorf("keepalive from the old address after the move answered %d, want 403", code)
	}
}

// Subscriptions from an upper: Expires capped, one per (platform, kind,
// target) however many SUBSCRIBEs, and a global cap answered 503.
func TestUpperSubscriptionLimits(t *testing.T) {
	up := newUpper(t, "127.0.0.1:0", nil)
	p := startProxy(t, "", oneUpperYAML(up.Addr(), "")+"  subscribe_expires_max: 120\n  max_subscriptions: 3\n")
	ctx := ctxTimeout(t, 60*time.Second)
	if _, err := up.WaitRegistered(ctx, proxyID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "proxy registered to the upper", func() bool { return p.platform(upperID).Registered })

	sub, err := up.Subscribe(ctx, proxyID, "Catalog", proxyID, 86400)
	if err != nil {
		t.Fatal(err)
	}
	if sub.Expires() != 120 {
		t.Errorf("granted Expires %d, want capped 120", sub.Expires())
	}
	const many = 1000
	for i := range many {
		if _, err := up.Subscribe(ctx, proxyID, "Catalog", proxyID, 600); err != nil {
			t.Fatalf("SUBSCRIBE %d: %v", i, err)
		}
	}
	type apiSub struct {
		Kind     string `json:"kind"`
		TargetID string `json:"target_id"`
		CallID   string `json:"call_id"`
	}
	var subs struct{ Upper []apiSub }
	p.api("/api/v1/subscriptions", &subs)
	if len(subs.Upper) != 1 || subs.Upper[0].Kind != "Catalog" || subs.Upper[0].TargetID != proxyID {
		t.Fatalf("after %d SUBSCRIBEs for one target: %d subscriptions %+v, want 1", many+1, len(subs.Upper), subs.Upper)
	}

	for _, kind := range []string{"Alarm", "MobilePosition"} {
		if _, err := up.Subscribe(ctx, proxyID, kind, proxyID, 600); err != nil {
			t.Fatalf("%s subscription within the cap: %v", kind, err)
		}
	}
	over, err := up.Subscribe(ctx, proxyID, "PTZPosition", proxyID, 600)
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("subscription over max_subscriptions: %v %v, want 503", over, err)
	}
	// Replacing one at the cap still works.
	if _, err := up.Subscribe(ctx, proxyID, "Alarm", proxyID, 600); err != nil {
		t.Fatalf("replacing a subscription at the cap: %v", err)
	}
	p.api("/api/v1/subscriptions", &subs)
	if len(subs.Upper) != 3 {
		t.Fatalf("subscriptions at the cap: %+v, want 3", subs.Upper)
	}
}
