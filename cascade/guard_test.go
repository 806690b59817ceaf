package cascade

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
	"github.com/gbproxy/gbproxy/configs"
	"github.com/gbproxy/gbproxy/endpoint"
	"github.com/gbproxy/gbproxy/security"
	"github.com/gbproxy/gbproxy/store"
)

const (
	udpDev     = "34020000001320000101"
	udpDevChan = "34020000001310000101"
	tcpDev     = "34020000001320000102"
	expiredDev = "34020000001320000103"
	udpDevAt   = "127.0.0.1:5000"
	tcpDevAt   = "127.0.0.1:6000"
)

// guardCascade is a Cascade with a registry (no sockets): a UDP device with
// one channel, a TCP device, a device whose registration ran out, and one
// upper platform at 127.0.0.1 with allow_from 10.0.0.0/8.
func guardCascade(t testing.TB, bindSource string) *Cascade {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	now := time.Now()
	cfg := &configs.Config{ID: selfID, Lower: configs.LowerConfig{BindSource: bindSource, AllowUnknown: true, Password: "secret"}}
	e := &env{cfg: cfg, sig: newSignalling(cfg), log: zerolog.Nop(), store: st, now: func() time.Time { return now }, ctx: ctx, tasks: &tasks{}}
	l := &lowerSide{env: e, registry: newRegistry(st, zerolog.Nop(), selfID),
		digest: security.NewDigestServer(security.DigestConfig{Realm: "3402000000"})}
	l.allowed.Store(&allowedTable{})
	up := &upperSide{env: e, registry: l.registry, devices: l}
	l.feed = up
	c := &Cascade{env: e, lower: l, upper: up}
	r := c.lower.registry
	r.register(Device{ID: udpDev, Transport: "UDP", Remote: udpDevAt, ExpiresAt: now.Add(time.Hour)})
	r.register(Device{ID: tcpDev, Transport: "TCP", Remote: tcpDevAt, ExpiresAt: now.Add(time.Hour)})
	r.register(Device{ID: expiredDev, Transport: "UDP", Remote: "127.0.0.1:5001", ExpiresAt: now.Add(-time.Second)})
	r.setChannels(udpDev, []manscdp.CatalogItem{{DeviceID: udpDevChan, ParentID: udpDev}}, true, now)
	u, err := newUpperClient(up, configs.PlatformConfig{
		ID: upperA, Address: "127.0.0.1:5060", Transport: "tcp", AllowFrom: []string{"10.0.0.0/8"},
	}, configs.ShareConfig{})
	if err != nil {
		t.Fatal(err)
	}
	u.remote = "127.0.0.3:7000" // the TCP connection we registered on
	up.uppers.Store(newUpperSet([]*upperClient{u}))
	return c
}

// guardRequest is a request as the transport layer hands it over.
func guardRequest(method sip.RequestMethod, from, transport, source string) *sip.Request {
	req := sip.NewRequest(method, sip.Uri{Scheme: "sip", User: selfID, Host: "127.0.0.1", Port: 5060})
	if from != "" {
		fh := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: from, Host: "3402000000"}, Params: sip.NewParams()}
		fh.Params.Add("tag", "a1")
		req.AppendHeader(fh)
	}
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: selfID, Host: "3402000000"}, Params: sip.NewParams()})
	cid := sip.CallIDHeader("guard-test")
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: method})
	req.SetTransport(transport)
	req.SetSource(source)
	return req
}

type guardCase struct {
	name      string
	method    sip.RequestMethod
	from      string
	transport string
	source    string
	code      int
	label     string
	known     bool
}

func checkGuard(t *testing.T, g endpoint.Guard, cases []guardCase) {
	t.Helper()
	for _, tc := range cases {
		v := g.Admit(guardRequest(tc.method, tc.from, tc.transport, tc.source))
		if v.Code != tc.code || v.Label != tc.label || v.Known != tc.known {
			t.Errorf("%s: verdict %+v, want code %d label %q known %v", tc.name, v, tc.code, tc.label, tc.known)
		}
		if v.Code == sip.StatusForbidden && v.Reason == "" {
			t.Errorf("%s: 403 without a reason phrase", tc.name)
		}
	}
}

func TestLowerGuardBindsToRegisteredSource(t *testing.T) {
	common := []guardCase{
		{"keepalive from its address", sip.MESSAGE, udpDev, "UDP", udpDevAt, 0, "", true},
		{"NOTIFY from another IP", sip.NOTIFY, udpDev, "UDP", "127.0.0.2:5000", 403, refusedWrongSource, false},
		{"UDP device's ID over TCP", sip.MESSAGE, udpDev, "TCP", udpDevAt, 403, refusedWrongSource, false},
		{"TCP device on its connection", sip.MESSAGE, tcpDev, "TCP", tcpDevAt, 0, "", true},
		{"TCP device's ID on another connection", sip.MESSAGE, tcpDev, "TCP", "127.0.0.1:6001", 403, refusedWrongSource, false},
		{"TCP device's ID over UDP from its address", sip.MESSAGE, tcpDev, "UDP", tcpDevAt, 403, refusedWrongSource, false},
		{"unknown ID", sip.MESSAGE, "34020000001320000199", "UDP", udpDevAt, 403, refusedNotRegistered, false},
		{"expired registration", sip.MESSAGE, expiredDev, "UDP", "127.0.0.1:5001", 403, refusedNotRegistered, false},
		{"no From", sip.MESSAGE, "", "UDP", udpDevAt, 403, refusedNotRegistered, false},
		{"BYE from the channel's device", sip.BYE, udpDevChan, "UDP", udpDevAt, 0, "", true},
		{"BYE with a channel ID from elsewhere", sip.BYE, udpDevChan, "UDP", "127.0.0.2:5000", 403, refusedWrongSource, false},
		{"INVITE from elsewhere", sip.INVITE, udpDev, "UDP", "127.0.0.2:5000", 403, refusedWrongSource, false},
		// REGISTERs are screened here: without credentials, a stateless 401.
		{"REGISTER from elsewhere challenged, unknown", sip.REGISTER, udpDev, "UDP", "127.0.0.2:5000", 401, "", false},
		{"REGISTER from its address challenged", sip.REGISTER, udpDev, "UDP", udpDevAt, 401, "", true},
		{"REGISTER of a new device challenged", sip.REGISTER, "34020000001320000199", "UDP", "127.0.0.2:5000", 401, "", false},
		{"OPTIONS from anyone", sip.OPTIONS, "34020000001320000199", "UDP", "127.0.0.2:5000", 0, "", false},
		{"OPTIONS from the device", sip.OPTIONS, udpDev, "UDP", udpDevAt, 0, "", true},
	}
	t.Run("ip", func(t *testing.T) {
		c := guardCascade(t, "ip")
		checkGuard(t, &lowerGuard{l: c.lower, mode: "ip"}, append(common,
			guardCase{"same IP, new port", sip.MESSAGE, udpDev, "UDP", "127.0.0.1:5999", 0, "", true}))
	})
	t.Run("ip-port", func(t *testing.T) {
		c := guardCascade(t, "ip-port")
		checkGuard(t, &lowerGuard{l: c.lower, mode: "ip-port"}, append(common,
			guardCase{"same IP, new port", sip.MESSAGE, udpDev, "UDP", "127.0.0.1:5999", 403, refusedWrongSource, false}))
	})
	t.Run("off", func(t *testing.T) {
		c := guardCascade(t, "off")
		checkGuard(t, &lowerGuard{l: c.lower, mode: "off"}, []guardCase{
			{"keepalive from its address", sip.MESSAGE, udpDev, "UDP", udpDevAt, 0, "", true},
			{"from another IP passes, not known", sip.MESSAGE, udpDev, "UDP", "127.0.0.2:5000", 0, "", false},
			{"TCP ID on another connection passes, not known", sip.MESSAGE, tcpDev, "TCP", "127.0.0.1:6001", 0, "", false},
			{"unknown ID", sip.MESSAGE, "34020000001320000199", "UDP", udpDevAt, 403, refusedNotRegistered, false},
		})
	})
}

func TestUpperGuardBindsToPlatformAddress(t *testing.T) {
	c := guardCascade(t, "ip")
	checkGuard(t, &upperGuard{up: c.upper}, []guardCase{
		{"from its address host, any port", sip.MESSAGE, upperA, "UDP", "127.0.0.1:40000", 0, "", true},
		{"INVITE from its address host", sip.INVITE, upperA, "UDP", "127.0.0.1:5060", 0, "", true},
		{"on our registered connection", sip.SUBSCRIBE, upperA, "TCP", "127.0.0.3:7000", 0, "", true},
		{"its connection's address over UDP", sip.MESSAGE, upperA, "UDP", "127.0.0.3:7000", 403, refusedWrongSource, false},
		{"from allow_from", sip.INVITE, upperA, "UDP", "10.1.2.3:5060", 0, "", true},
		{"spoofed MESSAGE", sip.MESSAGE, upperA, "UDP", "127.0.0.2:5060", 403, refusedWrongSource, false},
		{"spoofed SUBSCRIBE over TCP", sip.SUBSCRIBE, upperA, "TCP", "127.0.0.2:5060", 403, refusedWrongSource, false},
		{"spoofed INVITE", sip.INVITE, upperA, "UDP", "127.0.0.2:5060", 403, refusedWrongSource, false},
		{"spoofed BYE", sip.BYE, upperA, "UDP", "127.0.0.2:5060", 403, refusedWrongSource, false},
		{"unknown platform", sip.MESSAGE, "44010000002000000099", "UDP", "127.0.0.1:5060", 403, refusedUnknownPlatform, false},
		{"OPTIONS from anyone", sip.OPTIONS, "44010000002000000099", "UDP", "127.0.0.2:5060", 0, "", false},
		{"OPTIONS from the platform", sip.OPTIONS, upperA, "UDP", "127.0.0.1:5060", 0, "", true},
	})
}

func TestUpperGuardResolvesHostName(t *testing.T) {
	c := guardCascade(t, "ip")
	u, err := newUpperClient(c.upper, configs.PlatformConfig{ID: "44010000002000000002", Address: "localhost:5060"}, configs.ShareConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if !u.sentFrom("UDP", "127.0.0.1:5060") {
		t.Fatal("request from localhost's address refused for a platform at localhost:5060")
	}
	if u.sentFrom("UDP", "127.0.0.2:5060") {
		t.Fatal("request from 127.0.0.2 admitted for a platform at localhost:5060")
	}
}

// The upper guard reads the running set: a platform added at run time is
// admitted from its address, a removed one no longer is.
func TestUpperGuardFollowsRunningSet(t *testing.T) {
	c := guardCascade(t, "ip")
	g := &upperGuard{up: c.upper}
	const added = "44010000002000000003"
	src := netip.MustParseAddr("127.0.0.9")
	if v := g.Admit(guardRequest(sip.MESSAGE, added, "UDP", "127.0.0.9:5060")); v.Code != sip.StatusForbidden || g.KnownSource(src) {
		t.Fatalf("platform not yet added admitted: %+v", v)
	}
	u, err := newUpperClient(c.upper, configs.PlatformConfig{ID: added, Address: "127.0.0.9:5060", Transport: "udp"}, configs.ShareConfig{})
	if err != nil {
		t.Fatal(err)
	}
	c.upper.uppers.Store(c.upper.uppers.Load().replaced(u))
	if v := g.Admit(guardRequest(sip.MESSAGE, added, "UDP", "127.0.0.9:5060")); v.Code != 0 || !g.KnownSource(src) {
		t.Fatalf("added platform refused from its address: %+v", v)
	}
	c.upper.uppers.Store(c.upper.uppers.Load().without(added))
	if v := g.Admit(guardRequest(sip.MESSAGE, added, "UDP", "127.0.0.9:5060")); v.Code != sip.StatusForbidden || v.Label != refusedUnknownPlatform || g.KnownSource(src) {
		t.Fatalf("removed platform still admitted: %+v", v)
	}
	if c.upper.upperByID(upperA) == nil {
		t.Fatal("the other platform went with it")
	}
}

func TestKeepaliveNeverMovesDevice(t *testing.T) {
	c := guardCascade(t, "ip")
	r := c.lower.registry
	now := c.now()
	for _, src := range []struct{ transport, remote string }{{"UDP", "127.0.0.2:5000"}, {"TCP", "127.0.0.1:7777"}} {
		if known, _ := r.keepalive(udpDev, src.transport, src.remote, now); !known {
			t.Fatalf("keepalive of a registered device not known")
		}
		if d, _ := r.Device(udpDev); d.Remote != udpDevAt || d.Transport != "UDP" {
			t.Fatalf("keepalive from %s %s moved the device to %s %s", src.transport, src.remote, d.Transport, d.Remote)
		}
	}
	r.keepalive(udpDev, "UDP", "127.0.0.1:5999", now)
	if d, _ := r.Device(udpDev); d.Remote != "127.0.0.1:5999" {
		t.Fatalf("UDP port change from the same IP not followed: remote %s", d.Remote)
	}
}

// BenchmarkAdmit is the binding check per request on the read path: a
// keepalive from a device's registered address, and one from elsewhere
// (refused: the endpoint logs and counts it).
func BenchmarkAdmit(b *testing.B) {
	c := guardCascade(b, "ip")
	g := &lowerGuard{l: c.lower, mode: "ip"}
	// The plain path: parsing the keepalive, which every request costs.
	raw := []byte(guardRequest(sip.MESSAGE, udpDev, "UDP", udpDevAt).String())
	b.Run("plain", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := sip.ParseMessage(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, bc := range []struct{ name, source string }{{"bound", udpDevAt}, {"refused", "127.0.0.2:5000"}} {
		req := guardRequest(sip.MESSAGE, udpDev, "UDP", bc.source)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				g.Admit(req)
			}
		})
	}
}

// An upper registration lost and regained within a second is routine: one
// info line, no error asking the operator to check passwords.
func TestRegainedUpperRegistrationLogLevel(t *testing.T) {
	for _, tc := range []struct {
		gap   time.Duration
		level string
	}{{200 * time.Millisecond, `"level":"info"`}, {3 * time.Second, `"level":"warn"`}} {
		c := guardCascade(t, "ip")
		u := c.upper.upperList()[0]
		u.remote = "" // no endpoint here to close a connection on
		var buf bytes.Buffer
		u.log = zerolog.New(&buf)
		now := time.Now()
		c.now = func() time.Time { return now }
		u.registered(u.target(), 3600)
		buf.Reset()
		u.lost(u.target(), errors.New("TCP connection to upper platform closed"))
		now = now.Add(tc.gap)
		u.registered(u.target(), 3600)
		out := buf.String()
		if !strings.Contains(out, tc.level) || strings.Contains(out, `"level":"error"`) || strings.Contains(out, "password") {
			t.Errorf("regained after %s: log %s, want one %s line and no error", tc.gap, out, tc.level)
		}
		if want := `"after":"` + tc.gap.String() + `"`; !strings.Contains(out, want) {
			t.Errorf("regained after %s: log %s, want the gap as %s", tc.gap, out, want)
		}
	}
}

// KnownSource names the IPs whose datagrams are parsed before any limit:
// a device record's, a platform's address, allow_from and our connection.
func TestGuardsKnowSourcesByIP(t *testing.T) {
	c := guardCascade(t, "ip")
	lower, upper := &lowerGuard{l: c.lower, mode: "ip"}, &upperGuard{up: c.upper}
	for _, tc := range []struct {
		g     interface{ KnownSource(netip.Addr) bool }
		ip    string
		known bool
	}{
		{lower, hostOf(udpDevAt), true},
		{lower, hostOf(tcpDevAt), true},
		{lower, "127.0.0.2", false},
		{upper, "127.0.0.1", true}, // its address
		{upper, "10.9.8.7", true},  // allow_from
		{upper, "127.0.0.3", true}, // our connection
		{upper, "192.0.2.1", false},
	} {
		if got := tc.g.KnownSource(netip.MustParseAddr(tc.ip)); got != tc.known {
			t.Errorf("%T.KnownSource(%s) = %v, want %v", tc.g, tc.ip, got, tc.known)
		}
	}
}
