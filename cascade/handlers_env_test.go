package cascade

// The handler tests drive both sides' SIP handlers with sipgo's siptest
// server-transaction recorders: no test request arrives over a socket. What
// a handler sends onward (queries to devices, answers and NOTIFYs to upper
// platforms) does leave over UDP, to fake peers on 127.0.0.1 that record it
// and answer 200: the zone's sipgo.Client, which could take a siptest
// requester, is private to package endpoint, and a loopback peer sees
// exactly what a real one would.
//
// Every handler, guard and Cascade field the tests reach is named in this
// file only, so that splitting Cascade changes one place.

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/emiago/sipgo/siptest"
	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
	"github.com/gbproxy/gbproxy/configs"
	"github.com/gbproxy/gbproxy/endpoint"
	"github.com/gbproxy/gbproxy/metrics"
	"github.com/gbproxy/gbproxy/security"
	"github.com/gbproxy/gbproxy/store"
)

// IDs of the handler tests; the camera is that of the MANSCDP samples in
// manscdp/testdata.
const (
	envProxyID  = "34020000002000000001"
	envDomain   = "3402000000"
	envUpperID  = "44010000002000000001"
	envUpperPW  = "upper-secret"
	envCamera   = "62010201001320000393" // catalog_response.xml: a camera whose one channel is its own ID
	envCameraPW = "camera-secret"
	envNVR      = "34020000001110000001" // an NVR with the lower's default password (lower.devices takes 20-digit IDs only)
	envLowerPW  = "lower-secret"
	envStranger = "34020000001320000999" // in no device list
	envSubMax   = 600                    // upper.subscribe_expires_max
)

// handlerEnv is a Cascade with both zones open on 127.0.0.1, one upper
// platform configured at a fake peer, and a fake peer the test's devices
// register from. Start is not called: nothing registers upward and no
// background loop runs; only the zones read their sockets, for the fake
// peers' answers.
type handlerEnv struct {
	t      *testing.T
	c      *Cascade
	clock  *testClock
	logs   *lockedBuffer
	upper  *fakePeer // the configured upper platform
	device *fakePeer // where devices register from
}

func newHandlerEnv(t *testing.T, mutate func(*configs.Config)) *handlerEnv {
	t.Helper()
	e := &handlerEnv{t: t, clock: &testClock{now: time.Now().Truncate(time.Millisecond)}, logs: &lockedBuffer{}}
	e.upper, e.device = newFakePeer(t), newFakePeer(t)
	dir := t.TempDir()
	cfg, err := configs.Parse([]byte(`
id: "` + envProxyID + `"
domain: "` + envDomain + `"
lower:
  listen: "127.0.0.1:0"
  password: "` + envLowerPW + `"
  allow_unknown: false
  devices:
    - {id: "` + envCamera + `", password: "` + envCameraPW + `"}
    - {id: "` + envNVR + `"}
  register_expires_max: 1800
upper:
  listen: "127.0.0.1:0"
  subscribe_expires_max: ` + strconv.Itoa(envSubMax) + `
  platforms:
    - {id: "` + envUpperID + `", address: "` + e.upper.addr() + `", transport: udp, password: "` + envUpperPW + `"}
store: {path: "` + filepath.Join(dir, "gbproxy.db") + `"}
`))
	if err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(cfg)
	}
	st, err := store.Open(cfg.Store.Path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(e.logs).Level(zerolog.DebugLevel)
	c, err := New(cfg, st, log, metrics.New())
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	c.now = e.clock.Now // before anything runs
	e.c = c
	c.LowerEndpoint().Serve()
	c.UpperEndpoint().Serve()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.Close(ctx)
		st.Close()
		if t.Failed() {
			t.Logf("proxy log:\n%s", e.logs.String())
		}
	})
	return e
}

// Entry points, as the zones route requests to them.

// register is what the registrar answers a REGISTER: the lower guard screens
// it (challenge, refusals, all stateless), handleRegister serves the rest.
func (e *handlerEnv) register(req *sip.Request) *sip.Response {
	if v := e.admitLower(req); v.Code != 0 {
		return e.c.LowerEndpoint().NewResponse(req, v.Code, v.Reason, nil, v.Headers...)
	}
	return e.serve(e.c.lower.handleRegister, req)
}

func (e *handlerEnv) admitLower(req *sip.Request) endpoint.Verdict {
	return (&lowerGuard{l: e.c.lower, mode: e.c.cfg.Lower.BindSource}).Admit(req)
}

func (e *handlerEnv) admitUpper(req *sip.Request) endpoint.Verdict {
	return (&upperGuard{up: e.c.upper}).Admit(req)
}

func (e *handlerEnv) lowerMessage(req *sip.Request) *sip.Response {
	return e.serve(e.c.lower.handleLowerMessage, req)
}

func (e *handlerEnv) lowerNotify(req *sip.Request) *sip.Response {
	return e.serve(e.c.lower.handleLowerNotify, req)
}

func (e *handlerEnv) upperMessage(req *sip.Request) *sip.Response {
	return e.serve(e.c.upper.handleUpperMessage, req)
}

func (e *handlerEnv) upperSubscribe(req *sip.Request) *sip.Response {
	return e.serve(e.c.upper.handleUpperSubscribe, req)
}

// serve runs h on req in a recorded server transaction and returns the one
// final response h must send.
func (e *handlerEnv) serve(h endpoint.Handler, req *sip.Request) *sip.Response {
	e.t.Helper()
	tx := siptest.NewServerTxRecorder(req)
	defer tx.Terminate()
	h(req, tx)
	var final []*sip.Response
	for _, res := range tx.Result() {
		if !res.IsProvisional() {
			final = append(final, res)
		}
	}
	if len(final) != 1 {
		e.t.Fatalf("%s handler sent %d final responses, want 1", req.Method, len(final))
	}
	return final[0]
}

// Requests as the transport layer hands them over.

// request is a UDP request from user fromID at the fake peer from, to the
// proxy, with a MANSCDP body when body is not nil; headers replace those of
// the same name.
func (e *handlerEnv) request(method sip.RequestMethod, fromID string, from *fakePeer, body []byte, headers ...sip.Header) *sip.Request {
	host, port := endpoint.SplitHostPort(from.addr())
	req := sip.NewRequest(method, sip.Uri{Scheme: "sip", User: envProxyID, Host: envDomain})
	via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: host, Port: port, Params: sip.NewParams()}
	via.Params.Add("branch", sip.GenerateBranch())
	req.AppendHeader(via)
	fh := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: fromID, Host: envDomain}, Params: sip.NewParams()}
	fh.Params.Add("tag", sip.GenerateTagN(8))
	req.AppendHeader(fh)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: envProxyID, Host: envDomain}, Params: sip.NewParams()})
	cid := sip.CallIDHeader(sip.GenerateTagN(16))
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: method})
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: fromID, Host: host, Port: port}})
	if body != nil {
		req.AppendHeader(sip.NewHeader("Content-Type", contentTypeMANSCDP))
	}
	req.SetBody(body)
	for _, h := range headers {
		if req.GetHeader(h.Name()) != nil {
			req.ReplaceHeader(h)
		} else {
			req.AppendHeader(h)
		}
	}
	req.SetTransport("UDP")
	req.SetSource(from.addr())
	return req
}

// registerRequest is device id's REGISTER with one Call-ID per device, as a
// device keeps across its attempts; auth "" sends no credentials.
func (e *handlerEnv) registerRequest(id string, cseq uint32, expires int, auth string) *sip.Request {
	cid := sip.CallIDHeader("reg-" + id)
	req := e.request(sip.REGISTER, id, e.device, nil, &cid,
		&sip.CSeqHeader{SeqNo: cseq, MethodName: sip.REGISTER},
		&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: id, Host: envDomain}, Params: sip.NewParams()},
		sip.NewHeader("Expires", strconv.Itoa(expires)),
		sip.NewHeader("User-Agent", "IP Camera"))
	if auth != "" {
		req.AppendHeader(sip.NewHeader("Authorization", auth))
	}
	return req
}

// registerAs runs a device's whole registration: REGISTER, the 401
// challenge, REGISTER with credentials for password. It returns the final
// answer.
func (e *handlerEnv) registerAs(id, password string, expires int) *sip.Response {
	e.t.Helper()
	first := e.registerRequest(id, 1, expires, "")
	res := e.register(first)
	if res.StatusCode != sip.StatusUnauthorized {
		e.t.Fatalf("REGISTER without credentials answered %d %s, want a 401 challenge", res.StatusCode, res.Reason)
	}
	auth, err := security.Authorize(endpoint.HeaderValue(res, "WWW-Authenticate"), "REGISTER", first.Recipient.String(), id, security.Secret{Password: password})
	if err != nil {
		e.t.Fatalf("answer the challenge: %v", err)
	}
	return e.register(e.registerRequest(id, 2, expires, auth))
}

// online registers id (it must succeed) and waits for the Catalog query that
// a fresh registration sends it.
func (e *handlerEnv) online(id, password string) {
	e.t.Helper()
	if res := e.registerAs(id, password, 3600); res.StatusCode != sip.StatusOK {
		e.t.Fatalf("register %s: %d %s", id, res.StatusCode, res.Reason)
	}
	e.device.await(e.t, "Catalog query to "+id, func(r *sip.Request) bool {
		return r.Method == sip.MESSAGE && toUser(r) == id && isMANSCDP(r, manscdp.RootQuery, "Catalog")
	})
}

// withCamera puts the sample camera online with its catalog (one channel:
// its own ID), shared with the upper (share all by default).
func (e *handlerEnv) withCamera(t *testing.T) {
	t.Helper()
	e.online(envCamera, envCameraPW)
	if res := e.lowerMessage(e.request(sip.MESSAGE, envCamera, e.device, testdata(t, "catalog_response.xml"))); res.StatusCode != sip.StatusOK {
		t.Fatalf("catalog answered %d", res.StatusCode)
	}
}

// testdata is a MANSCDP sample from manscdp/testdata.
func testdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("manscdp", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// setSN and setDeviceID edit a sample's first SN / DeviceID element.
func setSN(body []byte, sn int64) []byte {
	return setElement(body, "SN", strconv.FormatInt(sn, 10))
}

func setDeviceID(body []byte, id string) []byte { return setElement(body, "DeviceID", id) }

func setElement(body []byte, name, value string) []byte {
	open, end := []byte("<"+name+">"), []byte("</"+name+">")
	i := bytes.Index(body, open)
	j := bytes.Index(body, end)
	if i < 0 || j < i {
		panic("sample has no <" + name + ">")
	}
	return bytes.Join([][]byte{body[:i+len(open)], []byte(value), body[j:]}, nil)
}

func isMANSCDP(r *sip.Request, root, cmdType string) bool {
	hdr, err := manscdp.Peek(r.Body())
	return err == nil && hdr.Root == root && hdr.CmdType == cmdType
}

func peek(t *testing.T, r *sip.Request) manscdp.Header {
	t.Helper()
	hdr, err := manscdp.Peek(r.Body())
	if err != nil {
		t.Fatalf("%s body unreadable: %v\n%s", r.Method, err, r.Body())
	}
	return hdr
}

// fakePeer is a SIP peer on a UDP socket of 127.0.0.1: it records every
// request it receives and answers each with status (200 unless set).
type fakePeer struct {
	conn    net.PacketConn
	mu      sync.Mutex
	reqs    []*sip.Request
	status  int
	arrived chan struct{} // a request was recorded
	done    chan struct{}
}

func newFakePeer(t *testing.T) *fakePeer {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &fakePeer{conn: conn, status: sip.StatusOK, arrived: make(chan struct{}, 1), done: make(chan struct{})}
	go p.serve()
	t.Cleanup(func() {
		conn.Close()
		<-p.done
	})
	return p
}

func (p *fakePeer) addr() string { return p.conn.LocalAddr().String() }

func (p *fakePeer) answerWith(status int) {
	p.mu.Lock()
	p.status = status
	p.mu.Unlock()
}

func (p *fakePeer) serve() {
	defer close(p.done)
	buf := make([]byte, 65535)
	for {
		n, from, err := p.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		msg, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
		req, ok := msg.(*sip.Request)
		if err != nil || !ok {
			continue
		}
		p.mu.Lock()
		p.reqs = append(p.reqs, req)
		status := p.status
		p.mu.Unlock()
		select {
		case p.arrived <- struct{}{}:
		default:
		}
		res := sip.NewResponseFromRequest(req, status, "", nil)
		p.conn.WriteTo([]byte(res.String()), from)
	}
}

// await returns the first request received that matches, waiting up to 5 s.
func (p *fakePeer) await(t *testing.T, what string, match func(*sip.Request) bool) *sip.Request {
	t.Helper()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for {
		if got := p.matching(match); len(got) > 0 {
			return got[0]
		}
		select {
		case <-p.arrived:
		case <-deadline.C:
			t.Fatalf("fake peer received no %s within 5 s", what)
		}
	}
}

func (p *fakePeer) matching(match func(*sip.Request) bool) []*sip.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*sip.Request
	for _, r := range p.reqs {
		if match(r) {
			out = append(out, r)
		}
	}
	return out
}

// testClock is the Cascade's clock in the tests.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// lockedBuffer collects the proxy's log lines; background goroutines may
// still write after a test ends, which testing.T would not allow.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// header is res's value of name, "" if none.
func header(res *sip.Response, name string) string {
	return strings.TrimSpace(endpoint.HeaderValue(res, name))
}

// eventually polls cond until it holds, for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5 s", what)
		}
		<-tick.C
	}
}

// channel is the registry's view of channel id.
func (e *handlerEnv) channel(id string) (ChannelView, bool) {
	for _, ch := range e.c.Registry().Channels() {
		if ch.ID == id {
			return ch, true
		}
	}
	return ChannelView{}, false
}

func (e *handlerEnv) deviceRecord(id string) (Device, bool) { return e.c.Registry().Device(id) }
