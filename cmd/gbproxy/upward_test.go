package main

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
)

func TestProxyRegistersUpwardAndSurvivesUpperRestart(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			up := newUpper(t, "127.0.0.1:0", nil)
			addr := up.Addr()
			p := startProxy(t, "", upperPlatformYAML(addr, transport))
			st, err := up.WaitRegistered(ctxTimeout(t, 5*time.Second), proxyID)
			if err != nil {
				t.Fatal(err)
			}
			if want := map[string]string{"udp": "UDP", "tcp": "TCP"}[transport]; st.Transport != want {
				t.Errorf("registered over %s, want %s", st.Transport, want)
			}
			eventually(t, 3*time.Second, "keepalives at the upper", func() bool {
				l, _ := up.Lower(proxyID)
				return l.Keepalives >= 2
			})
			eventually(t, 3*time.Second, "API shows registered", func() bool {
				pl := p.platform(upperID)
				return pl.Registered && pl.LastError == ""
			})

			// The upper restarts on the same address and forgets us.
			up.Close()
			eventually(t, 5*time.Second, "proxy notices the upper is gone", func() bool { return !p.platform(upperID).Registered })
			up2 := newUpper(t, addr, nil)
			if _, err := up2.WaitRegistered(ctxTimeout(t, 20*time.Second), proxyID); err != nil {
				t.Fatalf("no re-registration after the upper restarted: %v", err)
			}
			eventually(t, 3*time.Second, "API shows registered again", func() bool { return p.platform(upperID).Registered })

			// Graceful shutdown unregisters.
			p.stop()
			if l, _ := up2.Lower(proxyID); l.Registered {
				t.Error("proxy did not unregister (Expires: 0) on shutdown")
			}
		})
	}
}

func TestUpperKeepaliveTimeoutReRegisters(t *testing.T) {
	up := newUpper(t, "127.0.0.1:0", nil)
	p := startProxy(t, "", upperPlatformYAML(up.Addr(), "udp"))
	first, err := up.WaitRegistered(ctxTimeout(t, 5*time.Second), proxyID)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "API shows registered", func() bool { return p.platform(upperID).Registered })
	up.SetKeepaliveReply(false)
	// Offline and re-registered (the upper still takes REGISTERs) within
	// milliseconds: count the loss rather than poll for it.
	eventually(t, 5*time.Second, "registration lost after unanswered keepalives", func() bool {
		return p.metrics.Value("gbproxy_upper_registrations_total", "platform", upperID, "result", "failed") >= 1
	})
	up.SetKeepaliveReply(true)
	eventually(t, 5*time.Second, "re-registered", func() bool {
		l, _ := up.Lower(proxyID)
		return l.Registrations > first.Registrations && p.platform(upperID).Registered
	})
}

func TestRedirect302(t *testing.T) {
	target := newUpper(t, "127.0.0.1:0", func(c *sim.UpperConfig) { c.ID = "44010000002000000002" })
	redirector := newUpper(t, "127.0.0.1:0", func(c *sim.UpperConfig) {
		c.Redirect = "44010000002000000002@" + target.Addr()
	})
	p := startProxy(t, "", upperPlatformYAML(redirector.Addr(), "udp"))
	if _, err := target.WaitRegistered(ctxTimeout(t, 5*time.Second), proxyID); err != nil {
		t.Fatalf("not registered at the redirect target: %v", err)
	}
	eventually(t, 3*time.Second, "API shows the redirect target", func() bool {
		pl := p.platform(upperID)
		return pl.Registered && pl.Server == "44010000002000000002@"+target.Addr()
	})
	// The redirected server fails: we go back to the redirecting server,
	// which (restarted as a plain registrar) now takes us itself.
	addr := redirector.Addr()
	redirector.Close()
	target.Close()
	plain := newUpper(t, addr, nil)
	if _, err := plain.WaitRegistered(ctxTimeout(t, 10*time.Second), proxyID); err != nil {
		t.Fatalf("did not go back to the redirecting server: %v", err)
	}
}

func TestUpperCatalogQueryReturnsDeviceChannels(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			up := newUpper(t, "127.0.0.1:0", nil)
			p := startProxy(t, "", upperPlatformYAML(up.Addr(), transport))
			d1 := newDevice(t, p, "34020000001320000011", "udp", 3, nil)
			d2 := newDevice(t, p, "34030000001320000012", "tcp", 2, func(c *sim.DeviceConfig) { c.Charset = "utf-8" })
			for _, d := range []*sim.Device{d1, d2} {
				if err := d.Start(ctxTimeout(t, 5*time.Second)); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, 3*time.Second, "catalogs stored", func() bool {
				return len(p.channels("34020000001320000011")) == 3 && len(p.channels("34030000001320000012")) == 2
			})
			if _, err := up.WaitRegistered(ctxTimeout(t, 5*time.Second), proxyID); err != nil {
				t.Fatal(err)
			}
			items, sum, err := up.QueryCatalog(ctxTimeout(t, 5*time.Second), proxyID)
			if err != nil {
				t.Fatal(err)
			}
			if sum != 5 || len(items) != 5 {
				t.Fatalf("SumNum %d with %d items, want 5", sum, len(items))
			}
			names := map[string]string{}
			for _, it := range items {
				names[it.DeviceID] = it.Name
			}
			if names["34020000001311100001"] != "测试摄像机1号" || names["34030000001311200002"] != "测试摄像机2号" {
				t.Errorf("names as the upper sees them: %v", names)
			}
		})
	}
}

func TestMalformedInputGets400AndServerKeepsWorking(t *testing.T) {
	p := startProxy(t, "", "")
	id := "34020000001320000013"
	d := newDevice(t, p, id, "udp", 0, nil)
	if err := d.Start(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("udp", p.lowerAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	local := conn.LocalAddr().String()
	send := func(msg string) string {
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := conn.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		n, err := conn.Read(buf)
		if err != nil {
			return ""
		}
		return string(buf[:n])
	}
	// Garbage and a request without mandatory headers: no crash.
	conn.Write([]byte("\x00\x01garbage\r\n\r\n"))
	badXML := "<?xml version=\"1.0\"?><Notify><CmdType>Keepalive</CmdType><SN>1<"
	msg := "MESSAGE sip:" + proxyID + "@" + proxyDomain + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + local + ";rport;branch=z9hG4bK-bad-1\r\n" +
		"From: <sip:" + id + "@" + proxyDomain + ">;tag=1\r\n" +
		"To: <sip:" + proxyID + "@" + proxyDomain + ">\r\n" +
		"Call-ID: bad-xml-1\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n" +
		"Content-Type: Application/MANSCDP+xml\r\n" +
		"Content-Length: " + itoa(len(badXML)) + "\r\n\r\n" + badXML
	if res := send(msg); len(res) < 12 || res[:12] != "SIP/2.0 400 " {
		t.Fatalf("malformed MANSCDP answered %q, want 400", firstLine(res))
	}
	noFrom := "REGISTER sip:" + proxyID + "@" + proxyDomain + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + local + ";rport;branch=z9hG4bK-bad-2\r\n" +
		"To: <sip:" + id + "@" + proxyDomain + ">\r\n" +
		"Call-ID: bad-reg-1\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
	if res := send(noFrom); len(res) < 12 || res[:12] != "SIP/2.0 400 " {
		t.Fatalf("REGISTER without From answered %q, want 400", firstLine(res))
	}
	// The registered device is untouched and a new one can still register.
	if dev, _ := p.device(id); !dev.Online {
		t.Fatal("registered device lost after malformed input")
	}
	d2 := newDevice(t, p, "34020000001320000014", "tcp", 0, nil)
	if err := d2.Start(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatalf("registration after malformed input: %v", err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func firstLine(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '\r' || s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}
