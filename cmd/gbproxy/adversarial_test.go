package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// Adversarial tests: what a second host on the network (127.0.0.2) can try
// with a hand-written SIP client, over real sockets.

// rawClient is a hand-written SIP client for one device ID over one UDP or
// TCP socket bound to a chosen local IP: an attacker's script, or a device
// simple enough to time its round trips exactly.
type rawClient struct {
	t      testing.TB
	conn   net.Conn
	tcp    bool
	r      *bufio.Reader // TCP: messages are framed by Content-Length
	parser *sip.Parser
	buf    []byte
	id     string
	callID string // of the REGISTERs, kept across refreshes as RFC 3261 asks
	cseq   int
}

func dialRaw(t testing.TB, network, localIP, server, id string) *rawClient {
	t.Helper()
	var local net.Addr = &net.UDPAddr{IP: net.ParseIP(localIP)}
	if network == "tcp" {
		local = &net.TCPAddr{IP: net.ParseIP(localIP)}
	}
	d := net.Dialer{LocalAddr: local, Timeout: 3 * time.Second}
	conn, err := d.Dial(network, server)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	n := rawSeq.Add(1)
	return &rawClient{t: t, conn: conn, tcp: network == "tcp", r: bufio.NewReader(conn), parser: sip.NewParser(),
		buf: make([]byte, 65535), id: id, callID: fmt.Sprintf("adv-reg-%d@%s", n, localIP)}
}

func (c *rawClient) local() string { return c.conn.LocalAddr().String() }

func (c *rawClient) transport() string {
	if c.tcp {
		return "TCP"
	}
	return "UDP"
}

// read returns the next message received, parsed.
func (c *rawClient) read() (sip.Message, error) {
	if !c.tcp {
		n, err := c.conn.Read(c.buf)
		if err != nil {
			return nil, err
		}
		return c.parser.ParseSIP(c.buf[:n])
	}
	var msg bytes.Buffer
	tp := textproto.NewReader(c.r)
	length := 0
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return nil, err
		}
		if line == "" && msg.Len() == 0 {
			continue // CRLF keep-alive
		}
		msg.WriteString(line + "\r\n")
		if line == "" {
			break
		}
		if name, value, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(name), "Content-Length") {
			length, _ = strconv.Atoi(strings.TrimSpace(value))
		}
	}
	if _, err := io.CopyN(&msg, c.r, int64(length)); err != nil {
		return nil, err
	}
	return c.parser.ParseSIP(msg.Bytes())
}

// roundTrip sends msg and returns the final response with callID, skipping
// requests the proxy sends meanwhile (its catalog query after a REGISTER).
func (c *rawClient) roundTrip(msg, callID string, timeout time.Duration) (*sip.Response, error) {
	if _, err := c.conn.Write([]byte(msg)); err != nil {
		return nil, err
	}
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	for {
		m, err := c.read()
		if err != nil {
			return nil, err
		}
		if res, ok := m.(*sip.Response); ok && res.StatusCode >= 200 && res.CallID() != nil && res.CallID().Value() == callID {
			return res, nil
		}
	}
}

// mustRoundTrip is roundTrip failing the test when no answer comes in 3 s.
func (c *rawClient) mustRoundTrip(msg, callID string) *sip.Response {
	c.t.Helper()
	res, err := c.roundTrip(msg, callID, 3*time.Second)
	if err != nil {
		c.t.Fatalf("%s from %s: no final response: %v", firstLine(msg), c.local(), err)
	}
	return res
}

// registerMsg is the next REGISTER of the client's registration, with
// authorization as its Authorization header ("" for none).
func (c *rawClient) registerMsg(authorization string) string {
	c.cseq++
	var b strings.Builder
	fmt.Fprintf(&b, "REGISTER sip:%s@%s SIP/2.0\r\n", proxyID, proxyDomain)
	fmt.Fprintf(&b, "Via: SIP/2.0/%s %s;rport;branch=z9hG4bK-adv%d\r\n", c.transport(), c.local(), rawSeq.Add(1))
	fmt.Fprintf(&b, "From: <sip:%s@%s>;tag=adv%d\r\nTo: <sip:%s@%s>\r\n", c.id, c.id[:10], len(c.callID), c.id, c.id[:10])
	fmt.Fprintf(&b, "Call-ID: %s\r\nCSeq: %d REGISTER\r\nMax-Forwards: 70\r\n", c.callID, c.cseq)
	fmt.Fprintf(&b, "Contact: <sip:%s@%s>\r\nExpires: 3600\r\n", c.id, c.local())
	if authorization != "" {
		b.WriteString("Authorization: " + authorization + "\r\n")
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return b.String()
}

// register does a REGISTER exchange, answering the 401 challenge with
// digest credentials for password; it returns the final response and the
// Authorization sent (empty when there was no challenge).
func (c *rawClient) register(password string) (*sip.Response, string) {
	c.t.Helper()
	res := c.mustRoundTrip(c.registerMsg(""), c.callID)
	if res.StatusCode != sip.StatusUnauthorized {
		return res, ""
	}
	auth := answerChallenge(c.t, res, c.id, password)
	return c.mustRoundTrip(c.registerMsg(auth), c.callID), auth
}

func answerChallenge(t testing.TB, res *sip.Response, id, password string) string {
	t.Helper()
	h := res.GetHeader("WWW-Authenticate")
	if h == nil {
		t.Fatalf("401 without WWW-Authenticate: %s", res.StartLine())
	}
	chal, err := digest.ParseChallenge(h.Value())
	if err != nil {
		t.Fatal(err)
	}
	cred, err := digest.Digest(chal, digest.Options{Method: "REGISTER", URI: "sip:" + proxyID + "@" + proxyDomain, Username: id, Password: password})
	if err != nil {
		t.Fatal(err)
	}
	return cred.String()
}

// request builds a request of any method from the client's ID to the proxy,
// with its own Call-ID, and returns it with that Call-ID.
func (c *rawClient) request(method, from, body string) (msg, callID string) {
	n := rawSeq.Add(1)
	callID = fmt.Sprintf("adv-%d@%s", n, c.local())
	var b strings.Builder
	fmt.Fprintf(&b, "%s sip:%s@%s SIP/2.0\r\n", method, proxyID, proxyDomain)
	fmt.Fprintf(&b, "Via: SIP/2.0/%s %s;rport;branch=z9hG4bK-adv%d\r\n", c.transport(), c.local(), n)
	fmt.Fprintf(&b, "From: <sip:%s@%s>;tag=adv%d\r\nTo: <sip:%s@%s>\r\n", from, from[:10], n, proxyID, proxyDomain)
	fmt.Fprintf(&b, "Call-ID: %s\r\nCSeq: 1 %s\r\nMax-Forwards: 70\r\n", callID, method)
	if body != "" {
		b.WriteString("Content-Type: Application/MANSCDP+xml\r\n")
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
	return b.String(), callID
}

// keepalive sends the client's ID's keepalive and returns the answer's
// status and the round trip (status 0: no answer within timeout).
func (c *rawClient) keepalive(timeout time.Duration) (int, time.Duration) {
	msg, callID := c.request("MESSAGE", c.id, keepaliveBody(c.id))
	start := time.Now()
	res, err := c.roundTrip(msg, callID, timeout)
	if err != nil {
		return 0, time.Since(start)
	}
	return res.StatusCode, time.Since(start)
}

// lockoutYAML sets the three lockout thresholds.
func lockoutYAML(perPair, perIP, perID int) string {
	return fmt.Sprintf(`
security:
  lockout: {max_failures: %d, max_failures_per_ip: %d, max_failures_per_id: %d, window: 5m, lock_for: 10m}
`, perPair, perIP, perID)
}

// A source that guesses passwords with a new device ID every time is locked
// out after lockout.max_failures_per_ip failures, even for a right password;
// a device registering from another address meanwhile is not affected.
func TestAdversarialRotatingUsernameBruteForce(t *testing.T) {
	const maxPerIP = 10
	p := startProxy(t, "", lockoutYAML(5, maxPerIP, 20))
	legitID := "34020000001320000301"
	legit := newDevice(t, p, legitID, "udp", 1, nil)

	for i := range maxPerIP {
		id := fmt.Sprintf("340200000013200%05d", 10000+i)
		res, _ := dialRaw(t, "udp", attacker, p.lowerAddr(), id).register(fmt.Sprintf("guess-%d", i))
		if res.StatusCode != sip.StatusForbidden || strings.Contains(res.Reason, "locked") {
			t.Fatalf("guess %d (ID %s) from %s answered %d %q, want 403 for wrong credentials", i, id, attacker, res.StatusCode, res.Reason)
		}
		if i == maxPerIP/2 { // the legitimate device comes up in the middle of the attack
			if err := legit.Start(ctxTimeout(t, 5*time.Second)); err != nil {
				t.Fatalf("legitimate device registering from 127.0.0.1 during the attack: %v", err)
			}
		}
	}
	// Locked out: even the right password for an ID not tried yet.
	fresh := dialRaw(t, "udp", attacker, p.lowerAddr(), "34020000001320099999")
	res, _ := fresh.register(devicePass)
	if res.StatusCode != sip.StatusForbidden || !strings.Contains(res.Reason, "locked out") {
		t.Fatalf("right password for a new ID from %s after %d rotating guesses answered %d %q, want 403 locked out",
			attacker, maxPerIP, res.StatusCode, res.Reason)
	}
	if _, ok := p.device("34020000001320099999"); ok {
		t.Error("a locked-out source registered a device")
	}

	// The legitimate device, and a new one, from 127.0.0.1 are not locked out.
	if res, err := legit.Register(ctxTimeout(t, 5*time.Second), 3600); err != nil || res.StatusCode != sip.StatusOK {
		t.Fatalf("legitimate device re-registering after the attack: %v %v, want 200", res, err)
	}
	other := newDevice(t, p, "34020000001320000302", "udp", 0, nil)
	if res, err := other.Register(ctxTimeout(t, 5*time.Second), 3600); err != nil || res.StatusCode != sip.StatusOK {
		t.Fatalf("new device from 127.0.0.1 while %s is locked out: %v %v, want 200", attacker, res, err)
	}
	requireKeepalivesTaken(t, p, legitID, legit.LocalAddr())
}

// requireKeepalivesTaken checks that device id is online at remote and that
// its keepalives keep being taken.
func requireKeepalivesTaken(t *testing.T, p *testProxy, id, remote string) {
	t.Helper()
	before, ok := p.device(id)
	if !ok || !before.Online || before.Remote != remote || before.LastKeepalive == nil {
		t.Fatalf("device %s: %+v, want online at %s with keepalives", id, before, remote)
	}
	eventually(t, 3*time.Second, "device "+id+"'s keepalives still taken", func() bool {
		now, _ := p.device(id)
		return now.Online && now.Remote == remote && now.LastKeepalive != nil && now.LastKeepalive.After(*before.LastKeepalive)
	})
}

// Guessing one registered device's password from elsewhere locks that ID for
// new addresses, never for the address the device is registered from.
func TestAdversarialGuessesForOneID(t *testing.T) {
	const maxPerID = 5
	p := startProxy(t, "", lockoutYAML(50, 50, maxPerID))
	id := "34020000001320000303"
	d := newDevice(t, p, id, "udp", 1, nil)
	if err := d.Start(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	for i := range maxPerID + 2 {
		res, _ := dialRaw(t, "udp", attacker, p.lowerAddr(), id).register(fmt.Sprintf("guess-%d", i))
		if res.StatusCode != sip.StatusForbidden {
			t.Fatalf("guess %d for %s from %s answered %d %q, want 403", i, id, attacker, res.StatusCode, res.Reason)
		}
		// After every guess the real device still registers and is where it was.
		if res, err := d.Register(ctxTimeout(t, 5*time.Second), 3600); err != nil || res.StatusCode != sip.StatusOK {
			t.Fatalf("real device re-registering after guess %d: %v %v, want 200", i, res, err)
		}
	}
	// The ID is locked for new addresses: the right password from a third
	// address does not move the device.
	res, _ := dialRaw(t, "udp", "127.0.0.3", p.lowerAddr(), id).register(devicePass)
	if res.StatusCode != sip.StatusForbidden || !strings.Contains(res.Reason, "locked out") {
		t.Fatalf("right password for %s from a new address after %d guesses answered %d %q, want 403 locked out", id, maxPerID, res.StatusCode, res.Reason)
	}
	requireKeepalivesTaken(t, p, id, d.LocalAddr())
}

// A captured Authorization cannot be used again, by the device or by
// anyone else: each nonce is good for one REGISTER.
func TestAdversarialNonceReplay(t *testing.T) {
	p := startProxy(t, "", "")
	id := "34020000001320000304"
	dev := dialRaw(t, "udp", "127.0.0.1", p.lowerAddr(), id)
	res, auth := dev.register(devicePass)
	if res.StatusCode != sip.StatusOK || auth == "" {
		t.Fatalf("REGISTER with digest: %d %q (Authorization %q), want 200 after a challenge", res.StatusCode, res.Reason, auth)
	}
	stale := func(who string, res *sip.Response) {
		t.Helper()
		if res.StatusCode == sip.StatusForbidden {
			return
		}
		if res.StatusCode != sip.StatusUnauthorized {
			t.Fatalf("replayed Authorization from %s answered %d %q, want 401 stale=true or 403", who, res.StatusCode, res.Reason)
		}
		chal, err := digest.ParseChallenge(res.GetHeader("WWW-Authenticate").Value())
		if err != nil || !chal.Stale {
			t.Fatalf("replayed Authorization from %s: challenge %v (%v), want stale=true", who, res.GetHeader("WWW-Authenticate"), err)
		}
	}
	// The same client replays it in its next REGISTER: the response is
	// right, the nonce used up, so 401 stale=true (RFC 2617 §3.2.1).
	again := dev.mustRoundTrip(dev.registerMsg(auth), dev.callID)
	if again.StatusCode != sip.StatusUnauthorized {
		t.Fatalf("device replaying its own Authorization answered %d %q, want 401 stale=true", again.StatusCode, again.Reason)
	}
	stale("the device", again)
	// A third host that captured it.
	thief := dialRaw(t, "udp", attacker, p.lowerAddr(), id)
	stale(attacker, thief.mustRoundTrip(thief.registerMsg(auth), thief.callID))
	if d, _ := p.device(id); d.Remote != dev.local() || !d.Online {
		t.Fatalf("device after replays: %+v, want online at %s", d, dev.local())
	}
}

// Requests with made-up methods, from registered and unregistered sources,
// to both sides, over UDP and TCP, create no metric series: label values
// never come from the wire.
func TestAdversarialJunkMethodsNoNewSeries(t *testing.T) {
	// Every junk request must be answered, so none is dropped before the
	// code that counts it.
	p := startProxy(t, "", `
security: {unauthenticated_rate: 100000, unauthenticated_burst: 100000}
`)
	metricsURL := "http://" + p.httpLn.Addr().String() + "/metrics"
	// The attacker is a device too (the registrar is open), so its junk
	// passes the source binding and reaches the SIP stack.
	const attackerID = "34020000001320000305"
	regUDP := dialRaw(t, "udp", attacker, p.lowerAddr(), attackerID)
	regTCP := dialRaw(t, "tcp", attacker, p.lowerAddr(), "34020000001320000306")
	for _, c := range []*rawClient{regUDP, regTCP} {
		if res, _ := c.register(devicePass); res.StatusCode != sip.StatusOK {
			t.Fatalf("attacker's own REGISTER over %s: %d %q", c.transport(), res.StatusCode, res.Reason)
		}
	}
	type source struct {
		name       string
		c          *rawClient
		registered bool
	}
	sources := []source{
		{"udp-registered", regUDP, true},
		{"udp-unregistered", dialRaw(t, "udp", attacker, p.lowerAddr(), attackerID), false},
		{"udp-upper", dialRaw(t, "udp", attacker, p.cascade.UpperAddr(), attackerID), false},
		{"tcp-registered", regTCP, true},
		{"tcp-unregistered", dialRaw(t, "tcp", attacker, p.lowerAddr(), attackerID), false},
	}
	rng := rand.New(rand.NewPCG(9, 9))
	var tokens []string // every method and From user sent
	junk := func(s source) {
		t.Helper()
		method := randomToken(rng)
		from := s.c.id
		if !s.registered {
			from = fmt.Sprintf("%010d%010d", rng.IntN(1e10), rng.IntN(1e10))
		}
		tokens = append(tokens, method, from)
		msg, callID := s.c.request(method, from, "")
		res, err := s.c.roundTrip(msg, callID, 3*time.Second)
		if err != nil {
			t.Fatalf("%s: junk method %s not answered: %v", s.name, method, err)
		}
		// Registered sources pass the binding and reach the SIP stack,
		// which does not know the method; the others are refused before.
		want := sip.StatusForbidden
		if s.registered {
			want = sip.StatusMethodNotAllowed
		}
		if res.StatusCode != want {
			t.Fatalf("%s: junk method %s answered %d %q, want %d", s.name, method, res.StatusCode, res.Reason, want)
		}
	}
	for _, s := range sources { // each path once, so its fixed series exist
		junk(s)
	}
	before := scrapeSeries(t, metricsURL)
	const udpJunk, tcpJunk = 500, 100
	for i := range udpJunk {
		junk(sources[i%3])
	}
	for i := range tcpJunk {
		junk(sources[3+i%2])
	}
	after := scrapeSeries(t, metricsURL)

	var added []string
	for s := range after {
		if _, ok := before[s]; !ok && !fixedRefusalSeries(s) {
			added = append(added, s)
		}
	}
	t.Logf("%d junk requests: %d series before, %d after, %d new ones not from fixed sets", udpJunk+tcpJunk, len(before), len(after), len(added))
	if len(added) > 0 {
		t.Errorf("junk methods created %d metric series, e.g. %v", len(added), added[:min(len(added), 5)])
	}
	for s := range after {
		for _, tok := range tokens {
			if strings.Contains(s, tok) {
				t.Fatalf("a value from the wire (%q) became a label: %s", tok, s)
			}
		}
	}
}

// randomToken is a SIP method token that no SIP stack knows.
func randomToken(rng *rand.Rand) string {
	const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := []byte("JUNK")
	for range 4 + rng.IntN(8) {
		b = append(b, letters[rng.IntN(len(letters))])
	}
	return string(b)
}

// fixedRefusalSeries reports the series a refusal may create the first time
// it happens: a counter of refused requests or closed connections with a
// reason from the endpoint's fixed set.
func fixedRefusalSeries(s string) bool {
	for _, name := range []string{"gbproxy_sip_refused_total{", "gbproxy_sip_conns_closed_total{"} {
		if strings.HasPrefix(s, name) {
			for _, r := range []string{"rate_limited", "not_registered", "wrong_source", "unknown_platform", "malformed",
				"cseq", "version", "unparseable", "oversize", "per_ip_cap", "total_cap", "idle"} {
				if strings.Contains(s, `reason="`+r+`"`) {
					return true
				}
			}
		}
	}
	return false
}

// scrapeSeries returns /metrics as series (name and labels) to value.
func scrapeSeries(t testing.TB, url string) map[string]float64 {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("/metrics line without a value: %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return out
}
