package load

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/gbnote"
)

const (
	testDeviceID = "34020000001320000001"
	testUpperID  = "44010000002000000001"
)

func TestRunQueriesDirect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const n = 2000
	res, err := RunQueries(ctx, QueryConfig{Direct: true, DeviceID: testDeviceID, UpperID: testUpperID, Queries: n, Concurrency: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("direct: %+v", res)
	if res.Completed != n || res.Failed != 0 || res.WrongSN != 0 || len(res.FailReasons) != 0 {
		t.Fatalf("got %+v, want %d completed, none failed or mismatched", res, n)
	}
	if res.P50 <= 0 || res.P99 < res.P50 || res.P99 > res.Elapsed || res.Rate <= 0 {
		t.Errorf("implausible figures: %+v", res)
	}
	if want := float64(n) / res.Elapsed.Seconds(); res.Rate != want {
		t.Errorf("Rate %.0f, want Completed/Elapsed = %.0f", res.Rate, want)
	}
}

// fakeRelay stands in for gbproxy: it challenges the device's REGISTER and
// asks it for its catalog, registers itself to the upper, relays queries
// down and Responses up with its own SNs, and sends the upper one Response
// nobody asked for. It drops the first query and the first Response it
// gets, so both sides must retransmit.
type fakeRelay struct {
	t            *testing.T
	lower, upper *net.UDPConn
	upperAddr    *net.UDPAddr
	down, up     messageTemplate // to the device, to the upper

	mu              sync.Mutex
	device          *net.UDPAddr
	authorized      bool   // the device's REGISTER carried valid credentials
	catalog         string // the device's Catalog Response
	responseTo      string // Request-URI of the device's Responses
	upperSN         map[int64][]byte
	relayed         map[string]bool // Call-IDs of queries passed down
	droppedQuery    bool
	droppedResponse bool
	next            int64
	notes           noteTally // with a signer: the Note checks of the requests received
}

func startFakeRelay(t *testing.T, upperAddr string) *fakeRelay {
	return startSigningRelay(t, upperAddr, nil)
}

// startSigningRelay starts a fakeRelay that, with note, signs what it sends and checks the Note of
// every request but REGISTER it receives (counting, not refusing).
func startSigningRelay(t *testing.T, upperAddr string, note *gbnote.Signer) *fakeRelay {
	ua, err := net.ResolveUDPAddr("udp", upperAddr)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRelay{t: t, lower: loopbackUDP(t), upper: loopbackUDP(t), upperAddr: ua, upperSN: map[int64][]byte{}, relayed: map[string]bool{}}
	f.down = newTemplate(testServerID, testDomain, testDeviceID, testDomain, f.lower.LocalAddr().String(), "relay-down-")
	f.up = newTemplate(testServerID, testDomain, testUpperID, testUpperID[:10], f.upper.LocalAddr().String(), "relay-up-")
	f.down.note, f.up.note = note, note
	serveFake(t, &f.mu, f.lower, f.upper, f.notes.checking(note, f.fromDevice), f.notes.checking(note, f.fromUpper))
	f.register("")
	return f
}

func (f *fakeRelay) register(authorization string) {
	var b bytes.Buffer
	b.WriteString("REGISTER sip:" + testUpperID + "@" + testUpperID[:10] + " SIP/2.0\r\nVia: SIP/2.0/UDP " + f.upper.LocalAddr().String() + ";rport;branch=z9hG4bKrelayreg" + strconv.Itoa(len(authorization)) + "\r\n")
	b.WriteString("From: <sip:" + testServerID + "@" + testDomain + ">;tag=r\r\nTo: <sip:" + testServerID + "@" + testDomain + ">\r\n")
	b.WriteString("Call-ID: relay-register\r\nCSeq: " + strconv.Itoa(1+len(authorization)) + " REGISTER\r\nExpires: 3600\r\n")
	if authorization != "" {
		b.WriteString("Authorization: " + authorization + "\r\n")
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	f.upper.WriteToUDP(b.Bytes(), f.upperAddr)
}

func (f *fakeRelay) reply(c *net.UDPConn, req message, to *net.UDPAddr, status, extra string) {
	c.WriteToUDP(appendReply(nil, req.raw, status, extra), to)
}

func (f *fakeRelay) fromDevice(msg message, from *net.UDPAddr) {
	m := peekMANSCDP(msg.body)
	switch {
	case msg.status != 0:
	case msg.method == "REGISTER" && msg.header("Authorization") == "":
		f.reply(f.lower, msg, from, "401 Unauthorized", `WWW-Authenticate: Digest realm="`+testDomain+`", nonce="n-`+testDeviceID+`", opaque="op", algorithm=MD5`+"\r\n")
	case msg.method == "REGISTER":
		f.authorized = (&fakeRegistrar{}).validDigest(msg, testDeviceID)
		f.device = from
		f.reply(f.lower, msg, from, "200 OK", "Expires: 3600\r\n")
		query := `<?xml version="1.0"?><Query><CmdType>Catalog</CmdType><SN>5</SN><DeviceID>` + testDeviceID + `</DeviceID></Query>`
		f.lower.WriteToUDP(f.down.appendMessage(nil, 0, []byte(query)), from)
	case m.is(rootResponse, []byte("Catalog")):
		f.catalog = string(msg.body)
		f.reply(f.lower, msg, from, "200 OK", "")
	case m.is(rootResponse, cmdDeviceStatus) && !f.droppedResponse:
		f.droppedResponse = true
	case m.is(rootResponse, cmdDeviceStatus):
		f.reply(f.lower, msg, from, "200 OK", "")
		f.responseTo = strings.Fields(string(msg.raw))[1]
		sn, _ := atoi(m.sn)
		if upperSN, ok := f.upperSN[int64(sn)]; ok {
			delete(f.upperSN, int64(sn))
			f.next++
			f.upper.WriteToUDP(f.up.appendMessage(nil, f.next, appendDeviceStatusResponse(nil, upperSN, m.deviceID)), f.upperAddr)
		}
	}
}

func (f *fakeRelay) fromUpper(msg message, from *net.UDPAddr) {
	m := peekMANSCDP(msg.body)
	switch {
	case msg.status == 401:
		f.register(`Digest username="` + testServerID + `", realm="r", nonce="n", uri="sip:u", response="0"`)
	case msg.status != 0:
	case !m.is(rootQuery, cmdDeviceStatus):
		f.t.Errorf("upper sent %s with body %q", msg.method, msg.body)
	case !f.droppedQuery:
		f.droppedQuery = true
		f.next++
		f.upper.WriteToUDP(f.up.appendMessage(nil, f.next, appendDeviceStatusResponse(nil, []byte("77777777"), m.deviceID)), f.upperAddr)
	default:
		f.reply(f.upper, msg, from, "200 OK", "")
		if f.relayed[msg.callID] || f.device == nil {
			return
		}
		f.relayed[msg.callID] = true
		f.next++
		ours := 1_000_000 + f.next
		f.upperSN[ours] = bytes.Clone(m.sn)
		f.lower.WriteToUDP(f.down.appendMessage(nil, f.next, appendDeviceStatusQuery(nil, ours, string(m.deviceID))), f.device)
	}
}

func TestQueryLoadThroughRelay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const n = 300
	q, err := NewQueryLoad(QueryConfig{ProxyID: testServerID, Domain: testDomain, DeviceID: testDeviceID, Password: testPassword,
		UpperID: testUpperID, Queries: n, Concurrency: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, err := q.Run(ctx); err == nil || !strings.Contains(err.Error(), "SetProxy") {
		t.Fatalf("Run without the proxy's addresses: %v, want an error naming SetProxy", err)
	}
	f := startFakeRelay(t, q.UpperAddr())
	if err := q.WaitRegistered(ctx); err != nil {
		t.Fatal(err)
	}
	if err := q.SetProxy(f.lower.LocalAddr().String(), f.upper.LocalAddr().String()); err != nil {
		t.Fatal(err)
	}
	res, err := q.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("through relay: %+v", res)
	if res.Completed != n || res.Failed != 0 || res.WrongSN != 1 {
		t.Fatalf("got %+v, want %d completed, none failed, the unasked Response counted in WrongSN", res, n)
	}
	if res.Retransmits < 2 {
		t.Errorf("the dropped query and Response were not both re-sent: %+v", res)
	}
	if res.Elapsed < timerT1 {
		t.Errorf("run took %v: the query that was dropped once should have waited %v to be re-sent", res.Elapsed, timerT1)
	}

	// A second run reuses the registration and Call-IDs do not collide.
	q.cfg.Queries = 50
	if res, err := q.Run(ctx); err != nil || res.Completed != 50 {
		t.Fatalf("second run: %+v, %v", res, err)
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.authorized {
		t.Error("the device's REGISTER did not carry valid digest credentials")
	}
	if want := "sip:" + testServerID + "@" + testDomain; f.responseTo != want {
		t.Errorf("device sent its Responses to %q, want %q", f.responseTo, want)
	}
	if !strings.Contains(f.catalog, "<SN>5</SN>") || !strings.Contains(f.catalog, "<SumNum>1</SumNum>") {
		t.Errorf("Catalog query not answered with a one-item catalog: %q", f.catalog)
	}
}

func TestQueryLoadCountsTimeouts(t *testing.T) {
	// A proxy that takes nothing: every query times out after being re-sent.
	silent, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	q, err := NewQueryLoad(QueryConfig{ProxyID: testServerID, DeviceID: testDeviceID, UpperID: testUpperID, Queries: 3, Timeout: 700 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	q.registered = true // nothing to register to
	q.upper.regOnce.Do(func() { close(q.upper.registered) })
	if err := q.SetProxy(silent.LocalAddr().String(), silent.LocalAddr().String()); err != nil {
		t.Fatal(err)
	}
	res, err := q.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed != 0 || res.Failed != 3 || res.FailReasons["timeout: no final response nor Response"] != 3 || res.Retransmits != 3 {
		t.Fatalf("got %+v, want 3 timeouts, each query re-sent once (at 500 ms, before the 700 ms timeout)", res)
	}
}

func TestQueryConfigRejected(t *testing.T) {
	for _, cfg := range []QueryConfig{
		{Direct: true, DeviceID: "123", UpperID: testUpperID, Queries: 1},
		{Direct: true, DeviceID: testDeviceID, UpperID: "4401000000200000000x", Queries: 1},
		{Direct: true, DeviceID: testDeviceID, UpperID: testUpperID},
		{DeviceID: testDeviceID, UpperID: testUpperID, Queries: 1}, // no ProxyID
		{Direct: true, DeviceID: testDeviceID, UpperID: testUpperID, Queries: 1, UpperListen: "256.0.0.1:0"},
		{Direct: true, DeviceID: testDeviceID, UpperID: testUpperID, Queries: 1, Note: gbnote.Config{Seed: "s", Algorithm: "SHA-1"}},
	} {
		if q, err := NewQueryLoad(cfg); err == nil {
			q.Close()
			t.Errorf("NewQueryLoad(%+v) accepted a bad config", cfg)
		}
	}
}

func TestMessageBuildAndScan(t *testing.T) {
	tmpl := newTemplate(testUpperID, "4401000000", testDeviceID, "3402000000", "127.0.0.1:5060", "gbq-x-1-")
	body := appendDeviceStatusQuery(nil, 42, testDeviceID)
	wantBody := `<?xml version="1.0" encoding="GB2312"?>` + "\r\n<Query>\r\n<CmdType>DeviceStatus</CmdType>\r\n<SN>42</SN>\r\n<DeviceID>" + testDeviceID + "</DeviceID>\r\n</Query>\r\n"
	if string(body) != wantBody {
		t.Fatalf("query body:\n%s\nwant:\n%s", body, wantBody)
	}
	raw := tmpl.appendMessage(nil, 42, body)
	want := "MESSAGE sip:" + testDeviceID + "@3402000000 SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bKgbq-x-1-42\r\n" +
		"From: <sip:" + testUpperID + "@4401000000>;tag=f42\r\n" +
		"To: <sip:" + testDeviceID + "@3402000000>\r\n" +
		"Call-ID: gbq-x-1-42\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: Application/MANSCDP+xml\r\n" +
		"User-Agent: gbsim-load\r\nContent-Length: " + strconv.Itoa(len(wantBody)) + "\r\n\r\n" + wantBody
	if string(raw) != want {
		t.Fatalf("message:\n%s\nwant:\n%s", raw, want)
	}

	h, err := scan(raw)
	if err != nil {
		t.Fatal(err)
	}
	if string(h.method) != "MESSAGE" || h.status != 0 || h.cseq != 1 || !bytes.Equal(h.body, body) {
		t.Errorf("scan: %+v", h)
	}
	if n, ok := tmpl.number(h.callID); !ok || n != 42 {
		t.Errorf("number(%q) = %d, %v; want 42", h.callID, n, ok)
	}
	if _, ok := tmpl.number([]byte("gbq-x-2-42")); ok {
		t.Error("a Call-ID of another run was taken for this run's")
	}
	m := peekMANSCDP(h.body)
	if !m.is(rootQuery, cmdDeviceStatus) || string(m.sn) != "42" || string(m.deviceID) != testDeviceID {
		t.Errorf("peekMANSCDP: root %q cmd %q sn %q id %q", m.root, m.cmdType, m.sn, m.deviceID)
	}

	reply := appendReply(nil, raw, "200 OK", "")
	r, err := parse(reply)
	if err != nil {
		t.Fatal(err)
	}
	if r.status != 200 || r.callID != "gbq-x-1-42" || r.cseq != 1 || !strings.HasSuffix(r.header("To"), ";tag=gbsimload") ||
		r.header("Via") != "SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bKgbq-x-1-42" || r.header("From") != "<sip:"+testUpperID+"@4401000000>;tag=f42" {
		t.Errorf("reply:\n%s", reply)
	}

	resp := appendDeviceStatusResponse(nil, m.sn, m.deviceID)
	pm := peekMANSCDP(resp)
	if !pm.is(rootResponse, cmdDeviceStatus) || string(pm.sn) != "42" || string(pm.deviceID) != testDeviceID ||
		!bytes.Contains(resp, []byte("<Result>OK</Result>\r\n<Online>ONLINE</Online>\r\n<Status>OK</Status>")) {
		t.Errorf("response body:\n%s", resp)
	}
}

func TestScanCompactAndFoldedNames(t *testing.T) {
	raw := "SIP/2.0 404 Not Found\r\nv: SIP/2.0/UDP 1.2.3.4\r\ni:  abc \r\ncseq: 7 MESSAGE\r\nt: <sip:x@y>;tag=1\r\n\r\n"
	h, err := scan([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if h.status != 404 || string(h.reason) != "Not Found" || string(h.callID) != "abc" || h.cseq != 7 {
		t.Errorf("scan: %+v", h)
	}
	if reply := string(appendReply(nil, []byte(raw), "200 OK", "")); strings.Count(reply, "tag=") != 1 {
		t.Errorf("a tagged To got a second tag:\n%s", reply)
	}
	m := peekMANSCDP([]byte("<?xml version=\"1.0\"?>\n<Response attr=\"1\">\n<CmdType> DeviceStatus </CmdType><SN>9</SN></Response>"))
	if string(m.root) != "Response" || string(m.cmdType) != "DeviceStatus" || m.deviceID != nil {
		t.Errorf("peekMANSCDP with attributes and spaces: %+v", m)
	}
}

func TestResendFollowsTimerE(t *testing.T) {
	var r resend
	now := time.Unix(0, 0)
	r.sent(now)
	var gaps []time.Duration
	last := now
	for at := now; at.Sub(now) < 20*time.Second; at = at.Add(10 * time.Millisecond) {
		if r.due(at) {
			gaps = append(gaps, at.Sub(last))
			last = at
		}
	}
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second, 4 * time.Second}
	if len(gaps) < len(want) {
		t.Fatalf("re-sent after %v, want %v…", gaps, want)
	}
	for i, w := range want {
		if gaps[i] != w {
			t.Fatalf("re-sent after %v, want %v…", gaps, want)
		}
	}
	if r.sends != len(gaps)+1 {
		t.Errorf("sends %d after %d re-sends", r.sends, len(gaps))
	}
}

// FuzzScan: no datagram makes the hot-path parser or reply builder panic,
// and what scan accepts parse accepts alike.
func FuzzScan(f *testing.F) {
	tmpl := newTemplate(testUpperID, "4401000000", testDeviceID, "3402000000", "127.0.0.1:5060", "gbq-x-1-")
	f.Add(tmpl.appendMessage(nil, 1, appendDeviceStatusQuery(nil, 1, testDeviceID)))
	f.Add([]byte("SIP/2.0 200 OK\r\ni: a\r\nCSeq: 1 MESSAGE\r\n\r\n"))
	f.Add([]byte("REGISTER sip:x SIP/2.0\r\nCall-ID:\r\nCSeq: x\r\n\r\n"))
	f.Add([]byte("SIP/2.0 99 \r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := scan(b)
		msg, perr := parse(b)
		if (err == nil) != (perr == nil) {
			t.Fatalf("scan error %v, parse error %v", err, perr)
		}
		if err != nil {
			return
		}
		if msg.callID != string(h.callID) || msg.cseq != h.cseq || msg.status != h.status {
			t.Fatalf("parse %+v disagrees with scan %+v", msg, h)
		}
		peekMANSCDP(h.body)
		if _, err := scan(appendReply(nil, b, "200 OK", "")); err != nil {
			t.Fatalf("reply to an accepted request does not scan: %v", err)
		}
	})
}

// loopbackUDP opens a UDP socket on 127.0.0.1 for a fake peer.
func loopbackUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// serveFake reads both sockets of a fake middle box (device side, upper
// side) until the test ends, and hands each parsed message to that side's
// handler under mu.
func serveFake(t *testing.T, mu *sync.Mutex, lower, upper *net.UDPConn, fromDevice, fromUpper func(message, *net.UDPAddr)) {
	var wg sync.WaitGroup
	for _, c := range []*net.UDPConn{lower, upper} {
		handle := fromDevice
		if c == upper {
			handle = fromUpper
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 65536)
			for {
				n, from, err := c.ReadFromUDP(buf)
				if err != nil {
					return
				}
				msg, err := parse(bytes.Clone(buf[:n]))
				if err != nil {
					t.Errorf("load generator sent an unparsable message: %v\n%s", err, buf[:n])
					continue
				}
				mu.Lock()
				handle(msg, from)
				mu.Unlock()
			}
		}()
	}
	t.Cleanup(func() { lower.Close(); upper.Close(); wg.Wait() })
}
