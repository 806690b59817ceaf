package endpoint

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/metrics"
)

// libLogs receives what sipgo logs through its default logger.
var libLogs syncBuffer

func TestMain(m *testing.M) {
	// Before any endpoint exists: sipgo reads its default logger unsynchronised.
	RouteLibraryLogs(zerolog.New(&libLogs))
	os.Exit(m.Run())
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Split(strings.TrimSpace(s.b.String()), "\n")
}

// linesWith counts the log lines containing sub, and fails on any line over 1 KB.
func (s *syncBuffer) linesWith(t *testing.T, sub string) int {
	t.Helper()
	n := 0
	for _, l := range s.lines() {
		if len(l) > 1024 {
			t.Fatalf("log line of %d bytes: %.300s…", len(l), l)
		}
		if strings.Contains(l, sub) {
			n++
		}
	}
	return n
}

type guardFunc func(*sip.Request) Verdict

func (f guardFunc) Admit(req *sip.Request) Verdict { return f(req) }

// fromAttacker refuses requests from 127.0.0.2 with 403 and passes the
// others as known.
var fromAttacker = guardFunc(func(req *sip.Request) Verdict {
	if strings.HasPrefix(req.Source(), "127.0.0.2:") {
		return Verdict{Code: 403, Reason: "Forbidden (wrong source)", Label: "wrong_source",
			Headers: []sip.Header{sip.NewHeader("Warning", `399 gbproxy "not the registered address"`)}}
	}
	return Verdict{Known: true}
})

type testEP struct {
	*Endpoint
	logs    *syncBuffer
	metrics *metrics.Registry
	calls   atomic.Int64 // handler runs
}

// newTestEP serves MESSAGE, OPTIONS and REGISTER (which claims its
// connection) with 200 on 127.0.0.1.
func newTestEP(t testing.TB, opts Options) *testEP {
	t.Helper()
	te := &testEP{logs: &syncBuffer{}, metrics: metrics.New()}
	opts.Name, opts.Listen = "lower", "127.0.0.1:0"
	opts.Logger = zerolog.New(te.logs)
	opts.Metrics = te.metrics
	e, err := Listen(opts)
	if err != nil {
		t.Fatal(err)
	}
	te.Endpoint = e
	ok := func(req *sip.Request, tx sip.ServerTransaction) {
		te.calls.Add(1)
		if req.Method == sip.REGISTER {
			e.Claim(req.Source())
		}
		e.Respond(tx, req, 200, "OK", nil)
	}
	for _, m := range []sip.RequestMethod{sip.MESSAGE, sip.OPTIONS, sip.REGISTER} {
		e.Handle(m, ok)
	}
	e.Serve()
	t.Cleanup(func() { e.Close() })
	return te
}

func (te *testEP) refusedCount(reason string) int64 {
	return te.metrics.Value("gbproxy_sip_refused_total", "side", "lower", "reason", reason)
}

var seq atomic.Int64

// request is a minimal request as a peer at via (transport/host:port) sends it.
func request(method, cseqMethod, version, via string) []byte {
	n := seq.Add(1)
	return fmt.Appendf(nil, "%s sip:34020000002000000001@3402000000 %s\r\n"+
		"Via: SIP/2.0/%s;rport;branch=z9hG4bK-t%d\r\n"+
		"From: <sip:34020000001320000001@3402000000>;tag=f%d\r\n"+
		"To: <sip:34020000002000000001@3402000000>\r\n"+
		"Call-ID: c%d@test\r\n"+
		"CSeq: 20 %s\r\n"+
		"Max-Forwards: 70\r\n"+
		"Content-Length: 0\r\n\r\n", method, version, via, n, n, n, cseqMethod)
}

type udpPeer struct {
	t    testing.TB
	conn net.PacketConn
	to   net.Addr
}

func newUDPPeer(t testing.TB, ip string, to string) *udpPeer {
	t.Helper()
	c, err := net.ListenPacket("udp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	addr, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		t.Fatal(err)
	}
	return &udpPeer{t: t, conn: c, to: addr}
}

func (p *udpPeer) via() string { return "UDP " + p.conn.LocalAddr().String() }

func (p *udpPeer) send(b []byte) {
	p.t.Helper()
	if _, err := p.conn.WriteTo(b, p.to); err != nil {
		p.t.Fatal(err)
	}
}

// recv waits (2 s at most) for the next response.
func (p *udpPeer) recv() *sip.Response {
	p.t.Helper()
	buf := make([]byte, 65535)
	p.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _, err := p.conn.ReadFrom(buf)
	if err != nil {
		p.t.Fatalf("no response: %v", err)
	}
	msg, err := sip.ParseMessage(buf[:n])
	if err != nil {
		p.t.Fatalf("unparseable response: %v\n%s", err, buf[:n])
	}
	res, ok := msg.(*sip.Response)
	if !ok {
		p.t.Fatalf("got a request, not a response:\n%s", buf[:n])
	}
	return res
}

// eventually polls cond until it holds, for up to 5 s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestUDPRefusalIsStatelessAndSkipsHandler(t *testing.T) {
	te := newTestEP(t, Options{Guard: fromAttacker})
	attacker := newUDPPeer(t, "127.0.0.2", te.Addr())
	attacker.send(request("MESSAGE", "MESSAGE", "SIP/2.0", attacker.via()))
	res := attacker.recv()
	if res.StatusCode != 403 || res.Reason != "Forbidden (wrong source)" {
		t.Fatalf("got %d %s, want 403", res.StatusCode, res.Reason)
	}
	if to := res.To(); to == nil || !to.Params.Has("tag") {
		t.Fatalf("403 without To tag: %v", res.To())
	}
	for name, want := range map[string]string{"User-Agent": Product, "X-GB-Ver": GBVersion, "Warning": `399 gbproxy "not the registered address"`} {
		if h := res.GetHeader(name); h == nil || h.Value() != want {
			t.Fatalf("%s = %v, want %q", name, h, want)
		}
	}
	if via := res.Via(); via == nil || via.Params.GetOr("received", "") != "127.0.0.2" {
		t.Fatalf("Via without received: %v", res.Via())
	}
	// An ACK refused is only dropped; the device's own request passes.
	attacker.send(request("ACK", "ACK", "SIP/2.0", attacker.via()))
	device := newUDPPeer(t, "127.0.0.1", te.Addr())
	device.send(request("MESSAGE", "MESSAGE", "SIP/2.0", device.via()))
	if res := device.recv(); res.StatusCode != 200 {
		t.Fatalf("device got %d, want 200", res.StatusCode)
	}
	eventually(t, "the ACK counted", func() bool { return te.refusedCount("wrong_source") == 2 })
	if n := te.calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want once (the device's request)", n)
	}
	if n := te.logs.linesWith(t, `"reason":"wrong_source"`); n != 1 {
		t.Fatalf("%d refusal log lines, want 1 (bounded per source):\n%s", n, strings.Join(te.logs.lines(), "\n"))
	}
}

// A transaction per refusal would hold its request and timers for 32 s;
// 20,000 of them take tens of MB.
func TestUDPRefusedFloodKeepsNoState(t *testing.T) {
	te := newTestEP(t, Options{Guard: fromAttacker})
	attacker := newUDPPeer(t, "127.0.0.2", te.Addr())
	warm := func(n int) {
		for range n {
			attacker.send(request("MESSAGE", "MESSAGE", "SIP/2.0", attacker.via()))
			if res := attacker.recv(); res.StatusCode != 403 {
				t.Fatalf("got %d, want 403", res.StatusCode)
			}
		}
	}
	warm(100)
	before := heapInUse()
	warm(20000)
	after := heapInUse()
	if grown := int64(after) - int64(before); grown > 4<<20 {
		t.Fatalf("heap grew by %d KB over 20,000 refused requests", grown>>10)
	}
	if n := te.calls.Load(); n != 0 {
		t.Fatalf("handler ran %d times", n)
	}
	if n := te.refusedCount("wrong_source"); n != 20100 {
		t.Fatalf("refused_total = %d, want 20100", n)
	}
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

func TestUDPOversizeAndGarbageDropped(t *testing.T) {
	te := newTestEP(t, Options{})
	attacker := newUDPPeer(t, "127.0.0.2", te.Addr())
	// A valid MESSAGE larger than sipgo's read buffer would be parsed cut.
	big := request("MESSAGE", "MESSAGE", "SIP/2.0", attacker.via())
	big = bytes.Replace(big, []byte("Content-Length: 0"), fmt.Appendf(nil, "Content-Length: %d", 40000), 1)
	big = append(big, bytes.Repeat([]byte("x"), 40000)...)
	attacker.send(big)
	eventually(t, "the oversize datagram counted", func() bool { return te.refusedCount("oversize") == 1 })
	if n := te.logs.linesWith(t, "as large as the read buffer"); n != 1 {
		t.Fatalf("%d oversize log lines, want 1", n)
	}

	start := time.Now()
	garbage := bytes.Repeat([]byte("\x01garbage "), 30000/9)
	for i := range int64(200) {
		// One at a time: a burst of 30 KB datagrams overflows the socket buffer.
		attacker.send(garbage)
		eventually(t, "the garbage counted", func() bool { return te.refusedCount("unparseable") == i+1 })
	}
	allowed := 1 + int(time.Since(start)/(5*time.Second))
	if n := te.logs.linesWith(t, "not a SIP message"); n < 1 || n > allowed {
		t.Fatalf("%d log lines for 200 garbage datagrams, want 1..%d", n, allowed)
	}
	if n := te.calls.Load(); n != 0 {
		t.Fatalf("handler ran %d times", n)
	}
	// sipgo saw none of it: it would have logged the whole datagram.
	if n := libLogs.linesWith(t, "garbage"); n != 0 {
		t.Fatalf("sipgo logged the garbage %d times", n)
	}
	// Signalling still works.
	device := newUDPPeer(t, "127.0.0.1", te.Addr())
	device.send(request("OPTIONS", "OPTIONS", "SIP/2.0", device.via()))
	if res := device.recv(); res.StatusCode != 200 {
		t.Fatalf("device got %d", res.StatusCode)
	}
}

func TestVersionAndCSeqChecks(t *testing.T) {
	te := newTestEP(t, Options{})
	cases := []struct {
		method, cseq, version string
		code                  int
		reason                string
	}{
		{"MESSAGE", "MESSAGE", "SIP/3.0", 505, "version"},
		{"MESSAGE", "INVITE", "SIP/2.0", 400, "cseq"},
	}
	for _, tc := range cases {
		udp := newUDPPeer(t, "127.0.0.2", te.Addr())
		udp.send(request(tc.method, tc.cseq, tc.version, udp.via()))
		res := udp.recv()
		if res.StatusCode != tc.code || res.SipVersion != "SIP/2.0" {
			t.Fatalf("UDP %s %s / CSeq %s: got %s %d, want SIP/2.0 %d", tc.method, tc.version, tc.cseq, res.SipVersion, res.StatusCode, tc.code)
		}
		tcp := dialTCP(t, "127.0.0.2", te.Addr())
		res = tcp.roundTrip(request(tc.method, tc.cseq, tc.version, "TCP "+tcp.LocalAddr().String()))
		if res.StatusCode != tc.code {
			t.Fatalf("TCP %s %s / CSeq %s: got %d, want %d", tc.method, tc.version, tc.cseq, res.StatusCode, tc.code)
		}
		if n := te.refusedCount(tc.reason); n != 2 {
			t.Fatalf("refused{reason=%s} = %d, want 2", tc.reason, n)
		}
	}
	if n := te.calls.Load(); n != 0 {
		t.Fatalf("handler ran %d times", n)
	}
}

func TestRateLimitUnknownSources(t *testing.T) {
	var mu sync.Mutex
	budget := map[string]int{}
	limit := func(ip string) bool {
		mu.Lock()
		defer mu.Unlock()
		budget[ip]++
		return budget[ip] <= 5
	}
	// 127.0.0.1 is a known peer: never limited.
	known := guardFunc(func(req *sip.Request) Verdict { return Verdict{Known: strings.HasPrefix(req.Source(), "127.0.0.1:")} })
	te := newTestEP(t, Options{Guard: known, Limit: limit})
	attacker := newUDPPeer(t, "127.0.0.2", te.Addr())
	for range 10 {
		attacker.send(request("OPTIONS", "OPTIONS", "SIP/2.0", attacker.via()))
	}
	for range 5 {
		if res := attacker.recv(); res.StatusCode != 200 {
			t.Fatalf("got %d", res.StatusCode)
		}
	}
	eventually(t, "5 drops", func() bool { return te.refusedCount("rate_limited") == 5 })
	device := newUDPPeer(t, "127.0.0.1", te.Addr())
	for range 10 {
		device.send(request("OPTIONS", "OPTIONS", "SIP/2.0", device.via()))
		if res := device.recv(); res.StatusCode != 200 {
			t.Fatalf("known peer got %d", res.StatusCode)
		}
	}
	// Over TCP too.
	tcp := dialTCP(t, "127.0.0.2", te.Addr())
	tcp.write(request("OPTIONS", "OPTIONS", "SIP/2.0", "TCP "+tcp.LocalAddr().String()))
	eventually(t, "the TCP drop", func() bool { return te.refusedCount("rate_limited") == 6 })
	if n := te.calls.Load(); n != 15 {
		t.Fatalf("handler ran %d times, want 15", n)
	}
}

func TestTCPGuardRefusesBeforeHandler(t *testing.T) {
	te := newTestEP(t, Options{Guard: fromAttacker})
	c := dialTCP(t, "127.0.0.2", te.Addr())
	res := c.roundTrip(request("MESSAGE", "MESSAGE", "SIP/2.0", "TCP "+c.LocalAddr().String()))
	if res.StatusCode != 403 || res.GetHeader("Warning") == nil {
		t.Fatalf("got %d %v", res.StatusCode, res.GetHeader("Warning"))
	}
	if n := te.calls.Load(); n != 0 {
		t.Fatalf("handler ran %d times", n)
	}
	if n := te.refusedCount("wrong_source"); n != 1 {
		t.Fatalf("refused = %d", n)
	}
}

type tcpPeer struct {
	net.Conn
	t testing.TB
	r *bufio.Reader
}

func dialTCP(t testing.TB, ip, to string) *tcpPeer {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", to)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &tcpPeer{Conn: c, t: t, r: bufio.NewReader(c)}
}

func (c *tcpPeer) write(b []byte) {
	c.t.Helper()
	if _, err := c.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

// roundTrip sends b and reads one response (without body) within 2 s.
func (c *tcpPeer) roundTrip(b []byte) *sip.Response {
	c.t.Helper()
	c.write(b)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	var head []byte
	for !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		line, err := c.r.ReadBytes('\n')
		if err != nil {
			c.t.Fatalf("no response: %v", err)
		}
		head = append(head, line...)
	}
	msg, err := sip.ParseMessage(head)
	if err != nil {
		c.t.Fatalf("%v\n%s", err, head)
	}
	return msg.(*sip.Response)
}

// closedByPeer waits (5 s at most) for the other side to close c.
func (c *tcpPeer) closedByPeer() bool {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.r.ReadByte()
	return err != nil && !os.IsTimeout(err)
}

func TestConnCapPerIP(t *testing.T) {
	te := newTestEP(t, Options{MaxConnsPerIP: 3})
	var conns []*tcpPeer
	for range 5 {
		conns = append(conns, dialTCP(t, "127.0.0.2", te.Addr()))
	}
	for _, c := range conns[3:] {
		if !c.closedByPeer() {
			t.Fatal("connection over the per-IP cap left open")
		}
	}
	for _, c := range conns[:3] {
		if res := c.roundTrip(request("OPTIONS", "OPTIONS", "SIP/2.0", "TCP "+c.LocalAddr().String())); res.StatusCode != 200 {
			t.Fatalf("got %d", res.StatusCode)
		}
	}
	other := dialTCP(t, "127.0.0.1", te.Addr())
	if res := other.roundTrip(request("OPTIONS", "OPTIONS", "SIP/2.0", "TCP "+other.LocalAddr().String())); res.StatusCode != 200 {
		t.Fatalf("another address got %d", res.StatusCode)
	}
	// A closed connection frees its slot.
	conns[0].Close()
	eventually(t, "a freed slot", func() bool {
		c := dialTCP(t, "127.0.0.2", te.Addr())
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, err := c.r.ReadByte()
		return os.IsTimeout(err)
	})
	if n := te.metrics.Value("gbproxy_sip_conns_closed_total", "side", "lower", "reason", "per_ip_cap"); n < 2 {
		t.Fatalf("per_ip_cap closes = %d", n)
	}
}

// 5,000 connections from one address: the cap holds and UDP signalling goes on.
func TestConnFloodCapped(t *testing.T) {
	if testing.Short() {
		t.Skip("5,000 connections")
	}
	te := newTestEP(t, Options{MaxConnsPerIP: 64, MaxConns: 200})
	for range 5000 {
		c := dialTCP(t, "127.0.0.2", te.Addr())
		_ = c // kept open until the test ends
	}
	eventually(t, "4,936 refused", func() bool {
		return te.metrics.Value("gbproxy_sip_conns_closed_total", "side", "lower", "reason", "per_ip_cap") == 5000-64
	})
	te.conns.mu.Lock()
	total := te.conns.total
	te.conns.mu.Unlock()
	if total != 64 {
		t.Fatalf("%d connections held, want 64", total)
	}
	device := newUDPPeer(t, "127.0.0.1", te.Addr())
	device.send(request("MESSAGE", "MESSAGE", "SIP/2.0", device.via()))
	if res := device.recv(); res.StatusCode != 200 {
		t.Fatalf("device got %d", res.StatusCode)
	}
	if n := te.logs.linesWith(t, "over the connection cap"); n != 1 {
		t.Fatalf("%d cap log lines, want 1", n)
	}
}

func TestIdleUnclaimedConnectionsClosed(t *testing.T) {
	knownUser := guardFunc(func(req *sip.Request) Verdict {
		return Verdict{Known: req.From() != nil && req.From().Address.User == "known"}
	})
	te := newTestEP(t, Options{Guard: knownUser, IdleTimeout: time.Second})
	// Claimed by its REGISTER.
	registered := dialTCP(t, "127.0.0.2", te.Addr())
	if res := registered.roundTrip(request("REGISTER", "REGISTER", "SIP/2.0", "TCP "+registered.LocalAddr().String())); res.StatusCode != 200 {
		t.Fatal(res.StatusCode)
	}
	// Claimed by a request from a known peer.
	known := dialTCP(t, "127.0.0.2", te.Addr())
	req := bytes.Replace(request("MESSAGE", "MESSAGE", "SIP/2.0", "TCP "+known.LocalAddr().String()),
		[]byte("sip:34020000001320000001@"), []byte("sip:known@"), 1)
	if res := known.roundTrip(req); res.StatusCode != 200 {
		t.Fatal(res.StatusCode)
	}
	// Opened last: when it is closed, the others' timers have run out too.
	idle := dialTCP(t, "127.0.0.2", te.Addr())
	if !idle.closedByPeer() {
		t.Fatal("unclaimed connection not closed")
	}
	for _, c := range []*tcpPeer{registered, known} {
		if res := c.roundTrip(request("OPTIONS", "OPTIONS", "SIP/2.0", "TCP "+c.LocalAddr().String())); res.StatusCode != 200 {
			t.Fatalf("claimed connection: got %d", res.StatusCode)
		}
	}
	if n := te.metrics.Value("gbproxy_sip_conns_closed_total", "side", "lower", "reason", "idle"); n != 1 {
		t.Fatalf("idle closes = %d, want 1", n)
	}
	if n := te.logs.linesWith(t, `"idle_timeout":"1s"`); n != 1 {
		t.Fatalf("idle log lines = %d:\n%s", n, strings.Join(te.logs.lines(), "\n"))
	}
}

func TestJunkMethodsCreateNoSeries(t *testing.T) {
	te := newTestEP(t, Options{Guard: fromAttacker})
	device := newUDPPeer(t, "127.0.0.1", te.Addr())
	attacker := newUDPPeer(t, "127.0.0.2", te.Addr())
	junk := func(i int) {
		m := fmt.Sprintf("JUNK%d", i)
		device.send(request(m, m, "SIP/2.0", device.via()))
		if res := device.recv(); res.StatusCode != 405 {
			t.Fatalf("junk method: got %d, want 405", res.StatusCode)
		}
		attacker.send(request(m, m, "SIP/2.0", attacker.via()))
		if res := attacker.recv(); res.StatusCode != 403 {
			t.Fatalf("junk method from attacker: got %d, want 403", res.StatusCode)
		}
	}
	junk(0) // the "other" series exist from here on
	before := seriesCount(t, te.metrics)
	for i := 1; i <= 250; i++ {
		junk(i)
	}
	if after := seriesCount(t, te.metrics); after != before {
		t.Fatalf("500 junk requests created %d series", after-before)
	}
	if n := te.metrics.Value("gbproxy_sip_messages_total", "side", "lower", "direction", "in", "method", "other", "status", ""); n != 502 {
		t.Fatalf(`method="other" in = %d, want 502`, n)
	}
}

func seriesCount(t *testing.T, m *metrics.Registry) int {
	var b strings.Builder
	if err := m.WritePrometheus(&b); err != nil {
		t.Fatal(err)
	}
	return strings.Count(b.String(), "\n")
}

func TestLabels(t *testing.T) {
	for code, want := range map[int]string{0: "other", 99: "other", 100: "100", 699: "699", 700: "other", -1: "other"} {
		if got := statusLabel(code); got != want {
			t.Errorf("statusLabel(%d) = %q, want %q", code, got, want)
		}
	}
	if methodLabel("MESSAGE") != "MESSAGE" || methodLabel("message") != "other" || methodLabel(`X"`) != "other" {
		t.Error("methodLabel")
	}
}

func TestLibraryLogsThroughZerolog(t *testing.T) {
	sip.DefaultLogger().Warn("TCP ref went negative", "ip", "127.0.0.1:5060", "data", strings.Repeat("x", 30000))
	sip.DefaultLogger().Debug("TCP reference decrement")
	if n := libLogs.linesWith(t, `"ip":"127.0.0.1:5060"`); n != 1 {
		t.Fatalf("sipgo warning lines = %d:\n%s", n, strings.Join(libLogs.lines(), "\n"))
	}
	if n := libLogs.linesWith(t, "reference decrement"); n != 0 {
		t.Fatal("debug line written")
	}
}

func FuzzFilterDatagram(f *testing.F) {
	e, err := Listen(Options{Name: "lower", Listen: "127.0.0.1:0", Logger: zerolog.Nop(), Guard: fromAttacker})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { e.Close() })
	for _, s := range [][]byte{
		request("MESSAGE", "MESSAGE", "SIP/2.0", "UDP 127.0.0.2:5060"),
		request("INVITE", "ACK", "SIP/3.0", "UDP 127.0.0.2:5060"),
		[]byte("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\r\nCSeq: 1 MESSAGE\r\n\r\n"),
		[]byte("\r\n\r\n"),
		[]byte("MESSAGE sip:a SIP/2.0\r\nCSeq: x\r\n\r\n"),
	} {
		f.Add(s, false)
	}
	src := &net.UDPAddr{IP: net.ParseIP("127.0.0.2"), Port: 9}
	f.Fuzz(func(t *testing.T, data []byte, full bool) {
		e.filterDatagram(data, full, src)
	})
}

func BenchmarkUDPFilter(b *testing.B) {
	e, err := Listen(Options{Name: "lower", Listen: "127.0.0.1:0", Logger: zerolog.Nop(), Guard: fromAttacker, Metrics: metrics.New()})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	keepalive := request("MESSAGE", "MESSAGE", "SIP/2.0", "UDP 127.0.0.1:5060")
	for _, bc := range []struct {
		name string
		src  string
		pass bool
	}{{"pass", "127.0.0.1", true}, {"refused", "127.0.0.2", false}} {
		// The refusals go to a socket nobody reads: the kernel drops them.
		sink, err := net.ListenPacket("udp", bc.src+":0")
		if err != nil {
			b.Fatal(err)
		}
		defer sink.Close()
		src := sink.LocalAddr()
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if e.filterDatagram(keepalive, false, src) != bc.pass {
					b.Fatal("unexpected verdict")
				}
			}
		})
	}
}

// Connections gbproxy closes (idle, CloseConn) leave no warning from sipgo.
func TestClosingAConnectionLogsNoLibraryWarning(t *testing.T) {
	te := newTestEP(t, Options{IdleTimeout: 100 * time.Millisecond})
	c := dialTCP(t, "127.0.0.2", te.Addr())
	if !c.closedByPeer() {
		t.Fatal("not closed")
	}
	eventually(t, "sipgo to drop the connection", func() bool { return !te.HasConn(c.LocalAddr().String()) })
	if n := libLogs.linesWith(t, "->"+c.LocalAddr().String()); n != 0 {
		t.Fatalf("%d sipgo warnings about the connection:\n%s", n, strings.Join(libLogs.lines(), "\n"))
	}
}

// A Call-ID or user part far longer than any GB peer writes is refused
// before anything downstream logs or stores it.
func TestOverlongIdentifiersRefused(t *testing.T) {
	te := newTestEP(t, Options{})
	long := strings.Repeat("9", 300)
	for name, mangle := range map[string]func(string) string{
		"Call-ID":   func(m string) string { return strings.Replace(m, "Call-ID: c", "Call-ID: "+long, 1) },
		"From user": func(m string) string { return strings.Replace(m, "From: <sip:", "From: <sip:"+long, 1) },
		"URI user":  func(m string) string { return strings.Replace(m, "MESSAGE sip:", "MESSAGE sip:"+long, 1) },
	} {
		udp := newUDPPeer(t, "127.0.0.2", te.Addr())
		udp.send([]byte(mangle(string(request("MESSAGE", "MESSAGE", "SIP/2.0", udp.via())))))
		if res := udp.recv(); res.StatusCode != 400 {
			t.Errorf("%s of 300 bytes: got %d, want 400", name, res.StatusCode)
		}
	}
	if n := te.calls.Load(); n != 0 {
		t.Fatalf("handler ran %d times", n)
	}
}

// sourceGuard knows 127.0.0.1 by IP alone.
type sourceGuard struct{ guardFunc }

func (sourceGuard) KnownSource(ip netip.Addr) bool { return ip == netip.MustParseAddr("127.0.0.1") }

// Datagrams from an IP no peer of ours uses are rate limited before they are
// parsed (a flood costs a map lookup each); a known IP's are all parsed.
func TestUnknownSourcesLimitedBeforeParsing(t *testing.T) {
	var mu sync.Mutex
	budget := map[string]int{}
	limit := func(ip string) bool {
		mu.Lock()
		defer mu.Unlock()
		budget[ip]++
		return budget[ip] <= 5
	}
	te := newTestEP(t, Options{Guard: sourceGuard{func(*sip.Request) Verdict { return Verdict{} }}, Limit: limit})
	for _, ip := range []string{"127.0.0.2", "127.0.0.1"} {
		peer := newUDPPeer(t, ip, te.Addr())
		for range 20 {
			peer.send([]byte("garbage that is not SIP"))
		}
	}
	eventually(t, "all 40 datagrams accounted for", func() bool {
		return te.refusedCount(reasonUnparseable)+te.refusedCount(reasonRateLimited) == 40
	})
	if u, r := te.refusedCount(reasonUnparseable), te.refusedCount(reasonRateLimited); u != 25 || r != 15 {
		t.Fatalf("parsed %d and dropped unparsed %d; want 25 (5 + the known IP's 20) and 15", u, r)
	}
}
