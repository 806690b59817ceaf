package sim

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

const (
	upperID  = "34020000002000000001"
	devID    = "34020000001320000001"
	password = "gb-secret"
)

// checkGoroutines fails the test when goroutines started during it outlive its cleanups.
// Registered first, its cleanup runs last.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		// Generous: once, under a loaded -race run of every package, 3 s was
		// not enough for a closed stack to wind down; a real leak never does.
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("goroutines leaked: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func startUpper(t *testing.T, cfg UpperConfig) *Upper {
	t.Helper()
	if cfg.ID == "" {
		cfg.ID = upperID
	}
	if cfg.Password == "" {
		cfg.Password = password
	}
	u, err := NewUpper(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := u.Close(); err != nil {
			t.Errorf("close upper: %v", err)
		}
	})
	return u
}

func newDevice(t *testing.T, cfg DeviceConfig) *Device {
	t.Helper()
	if cfg.ID == "" {
		cfg.ID = devID
	}
	if cfg.ServerID == "" {
		cfg.ServerID = upperID
	}
	if cfg.Password == "" {
		cfg.Password = password
	}
	d, err := NewDevice(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("close device: %v", err)
		}
	})
	return d
}

func TestDeviceRegistersAndKeepsAlive(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			checkGoroutines(t)
			ctx := testContext(t)
			u := startUpper(t, UpperConfig{Expires: 600})
			d := newDevice(t, DeviceConfig{Server: u.Addr(), Transport: transport, Expires: 3600, KeepaliveInterval: 30 * time.Millisecond})
			if err := d.Start(ctx); err != nil {
				t.Fatal(err)
			}
			l, err := u.WaitRegistered(ctx, devID)
			if err != nil {
				t.Fatal(err)
			}
			if want := strings.ToUpper(transport); l.Transport != want {
				t.Errorf("registered over %s, want %s", l.Transport, want)
			}
			if l.Source != d.LocalAddr() || !strings.HasSuffix(l.Contact, "@"+d.LocalAddr()) {
				t.Errorf("source %s contact %s, want both at the device's %s", l.Source, l.Contact, d.LocalAddr())
			}
			if l.Expires != 600 {
				t.Errorf("granted expires %d, want the upper's cap 600", l.Expires)
			}
			challenged, err := u.WaitRequest(ctx, "REGISTER", "")
			if err != nil {
				t.Fatal(err)
			}
			authorized, err := u.WaitRequest(ctx, "REGISTER", "")
			if err != nil {
				t.Fatal(err)
			}
			if challenged.Request.GetHeader("Authorization") != nil || authorized.Request.GetHeader("Authorization") == nil {
				t.Error("want a REGISTER without credentials, then one with")
			}
			if _, err := time.Parse(gbDateLayout, d.LastRegisterDate()); err != nil {
				t.Errorf("Date from 200 OK %q: %v", d.LastRegisterDate(), err)
			}
			if _, err := u.WaitLower(ctx, devID, func(l LowerState) bool { return l.Keepalives >= 3 }); err != nil {
				t.Fatal(err)
			}
			ka, err := u.WaitRequest(ctx, "MESSAGE", "Keepalive")
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"<Notify>", "<DeviceID>" + devID + "</DeviceID>", "<Status>OK</Status>"} {
				if !strings.Contains(string(ka.Body), want) {
					t.Errorf("keepalive body lacks %s:\n%s", want, ka.Body)
				}
			}
			if ct := ka.Request.ContentType(); ct == nil || ct.Value() != "Application/MANSCDP+xml" {
				t.Errorf("keepalive Content-Type %v", ct)
			}
			if got := ka.Request.Recipient.String(); got != "sip:"+upperID+"@3402000000" {
				t.Errorf("keepalive Request-URI %s", got)
			}
		})
	}
}

// TestDeviceRegisterWireFormat checks the REGISTER exchange against a hand-written registrar, so the
// device is not only tested against this package's own Upper.
func TestDeviceRegisterWireFormat(t *testing.T) {
	checkGoroutines(t)
	ctx := testContext(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	d := newDevice(t, DeviceConfig{Server: pc.LocalAddr().String(), Password: "pw", KeepaliveInterval: -1})

	type result struct {
		res *sip.Response
		err error
	}
	done := make(chan result, 1)
	register := func(expires int) {
		go func() {
			res, err := d.Register(ctx, expires)
			done <- result{res, err}
		}()
	}
	register(600)
	first := readRequest(t, pc)
	wantURI := "sip:" + upperID + "@3402000000"
	if first.Method != sip.REGISTER || first.Recipient.String() != wantURI {
		t.Fatalf("first request %s, want REGISTER %s", first.StartLine(), wantURI)
	}
	self := "sip:" + devID + "@3402000000"
	if first.From().Address.String() != self || first.To().Address.String() != self {
		t.Errorf("From %s To %s, want both %s", first.From().Address.String(), first.To().Address.String(), self)
	}
	if !first.Via().Params.Has("rport") {
		t.Errorf("Via %s lacks rport", first.Via().Value())
	}
	if got := first.Contact().Address.String(); got != "sip:"+devID+"@"+first.Source() {
		t.Errorf("Contact %s, want the device's address %s", got, first.Source())
	}
	if got := headerInt(first, "Expires", -1); got != 600 {
		t.Errorf("Expires %d, want 600", got)
	}
	writeResponse(t, pc, first, "401 Unauthorized",
		`WWW-Authenticate: Digest realm="3402000000", nonce="n0nce", opaque="0paque", algorithm=MD5`)

	second := readRequest(t, pc)
	if second.CSeq().SeqNo != first.CSeq().SeqNo+1 || second.CallID().Value() != first.CallID().Value() {
		t.Errorf("CSeq %d→%d Call-ID %s→%s: want CSeq+1 in the same call", first.CSeq().SeqNo, second.CSeq().SeqNo, first.CallID().Value(), second.CallID().Value())
	}
	cred, err := digest.ParseCredentials(second.GetHeader("Authorization").Value())
	if err != nil {
		t.Fatal(err)
	}
	ha1 := md5Sum(devID + ":3402000000:pw")
	ha2 := md5Sum("REGISTER:" + wantURI)
	if want := md5Sum(ha1 + ":n0nce:" + ha2); cred.Response != want || cred.Opaque != "0paque" || cred.Username != devID || cred.URI != wantURI {
		t.Errorf("credentials %+v, want response %s for user %s, uri %s, opaque returned", cred, want, devID, wantURI)
	}
	writeResponse(t, pc, second, "200 OK", "Expires: 600", "Date: 2026-11-24T13:05:00.000")
	r := <-done
	if r.err != nil || r.res.StatusCode != 200 {
		t.Fatalf("Register = %v, %v", r.res, r.err)
	}
	if d.LastRegisterDate() != "2026-11-24T13:05:00.000" || !d.Registered() {
		t.Errorf("after 200: date %q registered %v", d.LastRegisterDate(), d.Registered())
	}

	register(0)
	third := readRequest(t, pc)
	if third.CSeq().SeqNo <= second.CSeq().SeqNo || headerInt(third, "Expires", -1) != 0 {
		t.Errorf("unregister CSeq %d (previous %d), Expires %d", third.CSeq().SeqNo, second.CSeq().SeqNo, headerInt(third, "Expires", -1))
	}
	writeResponse(t, pc, third, "200 OK")
	if r := <-done; r.err != nil || d.Registered() {
		t.Errorf("unregister: err %v, still registered %v", r.err, d.Registered())
	}
}

func md5Sum(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

func readRequest(t *testing.T, pc net.PacketConn) *sip.Request {
	t.Helper()
	buf := make([]byte, 65535)
	_ = pc.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, addr, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := sip.ParseMessage(buf[:n])
	if err != nil {
		t.Fatalf("parse %q: %v", buf[:n], err)
	}
	req, ok := msg.(*sip.Request)
	if !ok {
		t.Fatalf("got %s, want a request", msg.String())
	}
	req.SetSource(addr.String())
	return req
}

func writeResponse(t *testing.T, pc net.PacketConn, req *sip.Request, status string, extra ...string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("SIP/2.0 " + status + "\r\n")
	for _, name := range []string{"Via", "From", "To", "Call-ID", "CSeq"} {
		for _, h := range req.GetHeaders(name) {
			b.WriteString(h.String() + "\r\n")
		}
	}
	for _, e := range extra {
		b.WriteString(e + "\r\n")
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	addr, err := net.ResolveUDPAddr("udp", req.Source())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.WriteTo([]byte(b.String()), addr); err != nil {
		t.Fatal(err)
	}
}

func TestQueryCatalog(t *testing.T) {
	for _, tc := range []struct {
		transport, charset string
		perMessage         int
	}{
		{"udp", CharsetGB2312, 1},
		{"udp", CharsetUTF8AsGB2312, 1},
		{"tcp", CharsetGB2312, 2},
		{"tcp", CharsetUTF8, 5},
	} {
		t.Run(fmt.Sprintf("%s/%s/%d", tc.transport, tc.charset, tc.perMessage), func(t *testing.T) {
			checkGoroutines(t)
			ctx := testContext(t)
			u := startUpper(t, UpperConfig{})
			chans := MakeChannels(devID, 5)
			d := newDevice(t, DeviceConfig{Server: u.Addr(), Transport: tc.transport, Channels: chans,
				Charset: tc.charset, CatalogPerMessage: tc.perMessage})
			if err := d.Start(ctx); err != nil {
				t.Fatal(err)
			}
			items, sum, err := u.QueryCatalog(ctx, devID)
			if err != nil {
				t.Fatal(err)
			}
			if sum != len(chans) || len(items) != len(chans) {
				t.Fatalf("SumNum %d, %d items; want %d", sum, len(items), len(chans))
			}
			for i, it := range items {
				if it.DeviceID != chans[i].ID || it.Name != chans[i].Name || it.Status != "ON" || it.ParentID != devID {
					t.Errorf("item %d = %+v, want %+v", i, it, chans[i])
				}
			}

			q, err := d.WaitRequest(ctx, "MESSAGE", "Catalog")
			if err != nil {
				t.Fatal(err)
			}
			if q.OnRegConn != (tc.transport == "tcp") || q.Source != u.Addr() {
				t.Errorf("query from %s/%s on registration connection %v; want from %s, on it only over TCP",
					q.Source, q.Transport, q.OnRegConn, u.Addr())
			}
			var responses []Received
			for _, r := range u.Requests() {
				if r.CmdType == "Catalog" {
					responses = append(responses, r)
				}
			}
			if want := (len(chans) + tc.perMessage - 1) / tc.perMessage; len(responses) != want {
				t.Errorf("%d Catalog Response MESSAGEs, want %d", len(responses), want)
			}
			raw := responses[0].Request.Body()
			if declaresGB := strings.Contains(string(raw), `encoding="GB2312"`); declaresGB != (tc.charset != CharsetUTF8) {
				t.Errorf("charset %s: declaration in %q", tc.charset, raw[:50])
			}
			if isUTF8 := utf8.Valid(raw); isUTF8 != (tc.charset != CharsetGB2312) {
				t.Errorf("charset %s: body valid UTF-8 = %v", tc.charset, isUTF8)
			}
		})
	}
}

func TestDeviceAnswersQueries(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			checkGoroutines(t)
			ctx := testContext(t)
			u := startUpper(t, UpperConfig{})
			d := newDevice(t, DeviceConfig{Server: u.Addr(), Transport: transport, Channels: MakeChannels(devID, 3),
				Manufacturer: "海康", Model: "DS-2CD", Firmware: "V5.5"})
			if err := d.Start(ctx); err != nil {
				t.Fatal(err)
			}
			info, err := u.Query(ctx, devID, "DeviceInfo", "")
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"<CmdType>DeviceInfo</CmdType>", "<Result>OK</Result>", "<Manufacturer>海康</Manufacturer>",
				"<Model>DS-2CD</Model>", "<Firmware>V5.5</Firmware>", "<Channel>3</Channel>"} {
				if !strings.Contains(string(info), want) {
					t.Errorf("DeviceInfo lacks %s:\n%s", want, info)
				}
			}
			status, err := u.Query(ctx, devID, "DeviceStatus", "")
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"<Result>OK</Result>", "<Online>ONLINE</Online>", "<Status>OK</Status>", "<DeviceTime>"} {
				if !strings.Contains(string(status), want) {
					t.Errorf("DeviceStatus lacks %s:\n%s", want, status)
				}
			}
			for _, cmd := range []string{"DeviceInfo", "DeviceStatus"} {
				r, err := d.WaitRequest(ctx, "MESSAGE", cmd)
				if err != nil {
					t.Fatal(err)
				}
				if r.OnRegConn != (transport == "tcp") || r.Transport != strings.ToUpper(transport) {
					t.Errorf("%s arrived over %s, on registration connection %v", cmd, r.Transport, r.OnRegConn)
				}
			}
		})
	}
}

func TestWrongPasswordIsForbidden(t *testing.T) {
	checkGoroutines(t)
	ctx := testContext(t)
	u := startUpper(t, UpperConfig{})
	d := newDevice(t, DeviceConfig{Server: u.Addr(), Password: "wrong"})
	if err := d.Start(ctx); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("Start with a wrong password = %v, want a 403 error", err)
	}
	if l, _ := u.Lower(devID); l.Registered || d.Registered() {
		t.Error("device registered with a wrong password")
	}
}

func TestUnregister(t *testing.T) {
	checkGoroutines(t)
	ctx := testContext(t)
	u := startUpper(t, UpperConfig{})
	d := newDevice(t, DeviceConfig{Server: u.Addr(), Transport: "tcp"})
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := d.Register(ctx, 0)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("unregister = %v, %v", res, err)
	}
	if l, _ := u.Lower(devID); l.Registered || d.Registered() {
		t.Errorf("still registered after Expires: 0 (upper %v, device %v)", l.Registered, d.Registered())
	}
}

func TestKeepaliveTimeoutMakesDeviceRegisterAgain(t *testing.T) {
	checkGoroutines(t)
	ctx := testContext(t)
	u := startUpper(t, UpperConfig{})
	d := newDevice(t, DeviceConfig{Server: u.Addr(), KeepaliveInterval: 20 * time.Millisecond})
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := u.WaitLower(ctx, devID, func(l LowerState) bool { return l.Keepalives >= 1 }); err != nil {
		t.Fatal(err)
	}
	u.SetKeepaliveReply(false)
	if _, err := u.WaitLower(ctx, devID, func(l LowerState) bool { return l.Registrations >= 2 }); err != nil {
		t.Fatal(err)
	}
}

func TestSetKeepalivePauses(t *testing.T) {
	checkGoroutines(t)
	ctx := testContext(t)
	u := startUpper(t, UpperConfig{})
	d := newDevice(t, DeviceConfig{Server: u.Addr(), KeepaliveInterval: 10 * time.Millisecond})
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := u.WaitLower(ctx, devID, func(l LowerState) bool { return l.Keepalives >= 2 }); err != nil {
		t.Fatal(err)
	}
	d.SetKeepalive(false)
	time.Sleep(50 * time.Millisecond) // let a keepalive in flight land
	before, _ := u.Lower(devID)
	time.Sleep(200 * time.Millisecond)
	if after, _ := u.Lower(devID); after.Keepalives != before.Keepalives {
		t.Errorf("keepalives went on while paused: %d → %d", before.Keepalives, after.Keepalives)
	}
	d.SetKeepalive(true)
	if _, err := u.WaitLower(ctx, devID, func(l LowerState) bool { return l.Keepalives > before.Keepalives }); err != nil {
		t.Fatal(err)
	}
}

// TestUpperRestart: over TCP the device notices the closed connection, over UDP the 404 answers to
// its keepalives; either way it registers to the restarted upper.
func TestUpperRestart(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			checkGoroutines(t)
			ctx := testContext(t)
			first, err := NewUpper(UpperConfig{ID: upperID, Password: password})
			if err != nil {
				t.Fatal(err)
			}
			d := newDevice(t, DeviceConfig{Server: first.Addr(), Transport: transport,
				KeepaliveInterval: 20 * time.Millisecond, RetryInterval: 50 * time.Millisecond})
			if err := d.Start(ctx); err != nil {
				t.Fatal(err)
			}
			firstLocal := d.LocalAddr()
			if err := first.Close(); err != nil {
				t.Fatal(err)
			}
			second := startUpper(t, UpperConfig{Listen: first.Addr()})
			l, err := second.WaitRegistered(ctx, devID)
			if err != nil {
				t.Fatal(err)
			}
			if transport == "tcp" && l.Source == firstLocal {
				t.Errorf("re-registered from %s, the closed connection's address", l.Source)
			}
		})
	}
}

// TestDeviceFollowsRedirect: the redirecting upper answers 302 (GB/T 28181-2022 注册重定向), the
// device registers where the Contact says; when that server stops taking it (its keepalives fail)
// the device runs the redirect flow again at the server it was configured with.
func TestDeviceFollowsRedirect(t *testing.T) {
	checkGoroutines(t)
	ctx := testContext(t)
	target := startUpper(t, UpperConfig{})
	redirector := startUpper(t, UpperConfig{Redirect: upperID + "@" + target.Addr(), Expires: 120})
	d := newDevice(t, DeviceConfig{Server: redirector.Addr(), KeepaliveInterval: 200 * time.Millisecond})
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	l, err := target.WaitRegistered(ctx, devID)
	if err != nil {
		t.Fatal(err)
	}
	if d.Server() != target.Addr() || l.Expires != 3600 {
		t.Errorf("device registers to %s with expiry %d, want %s (the 302's Contact) with its own 3600", d.Server(), l.Expires, target.Addr())
	}
	if l, ok := redirector.Lower(devID); ok && l.Registered {
		t.Error("redirecting upper registered the device")
	}
	redirects := func() int {
		n := 0
		for _, r := range redirector.Requests() {
			if r.Method == "REGISTER" && r.Request.GetHeader("Authorization") != nil {
				n++
			}
		}
		return n
	}
	if n := redirects(); n != 1 {
		t.Fatalf("redirector saw %d authenticated REGISTERs, want 1", n)
	}

	// The target restarts and forgets the device: its keepalives are refused, so it goes back to
	// the redirector, which sends it to the (new) target again.
	addr := target.Addr()
	if err := target.Close(); err != nil {
		t.Fatal(err)
	}
	again := startUpper(t, UpperConfig{Listen: addr})
	if _, err := again.WaitRegistered(ctx, devID); err != nil {
		t.Fatal(err)
	}
	if n := redirects(); n != 2 {
		t.Errorf("redirector saw %d authenticated REGISTERs, want 2 (the redirect flow ran again)", n)
	}
}

func TestUpperRejectsWrongPlatformID(t *testing.T) {
	checkGoroutines(t)
	ctx := testContext(t)
	u := startUpper(t, UpperConfig{})
	d := newDevice(t, DeviceConfig{Server: u.Addr(), ServerID: "34020000002000000009"})
	res, err := d.Register(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 403 {
		t.Errorf("REGISTER to the wrong platform ID answered %d, want 403", res.StatusCode)
	}
}

func TestQueryUnregisteredLowerFails(t *testing.T) {
	checkGoroutines(t)
	u := startUpper(t, UpperConfig{})
	if _, _, err := u.QueryCatalog(testContext(t), devID); err == nil {
		t.Error("catalog query to an unknown lower succeeded")
	}
}

func TestMakeChannels(t *testing.T) {
	chans := MakeChannels(devID, 12)
	seen := map[string]bool{}
	for _, ch := range chans {
		if len(ch.ID) != 20 || ch.ID[:10] != devID[:10] || ch.ID[10:13] != "131" || seen[ch.ID] {
			t.Errorf("channel ID %s: want 20 digits, device prefix, type 131, unique", ch.ID)
		}
		seen[ch.ID] = true
		if ch.ParentID != devID || ch.Status != "ON" || ch.Name == "" {
			t.Errorf("channel %+v", ch)
		}
	}
}
