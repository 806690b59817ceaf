package b2bua

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/configs"
	"github.com/gbproxy/gbproxy/directory"
	"github.com/gbproxy/gbproxy/endpoint"
	"github.com/gbproxy/gbproxy/metrics"
	"github.com/gbproxy/gbproxy/relay"
)

const (
	testUpper   = "44010000002000000001"
	testChannel = "34020000001320000001"
)

// fakeDevice answers every INVITE 200 with the SDP answer it is given and
// counts the BYEs it gets, over UDP on 127.0.0.1.
type fakeDevice struct {
	addr string
	byes atomic.Int32
}

func newFakeDevice(t *testing.T, answer string) *fakeDevice {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ua, err := sipgo.NewUA()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	d := &fakeDevice{addr: conn.LocalAddr().String()}
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		res := sip.NewResponseFromRequest(req, 200, "OK", []byte(answer))
		res.To().Params.Add("tag", "dev")
		res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: testChannel, Host: "127.0.0.1"}})
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		_ = tx.Respond(res)
	})
	srv.OnAck(func(*sip.Request, sip.ServerTransaction) {})
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		d.byes.Add(1)
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	go func() { _ = srv.ServeUDP(conn) }()
	t.Cleanup(func() { ua.Close(); conn.Close() })
	return d
}

type oneCallee struct{ c directory.Callee }

func (o oneCallee) Callee(string, string) (directory.Callee, error) { return o.c, nil }

func (o oneCallee) ForUpper(_ string, body []byte) ([]byte, error) { return body, nil }

func (o oneCallee) StreamMode(string) string { return "udp" }

func (o oneCallee) MediaAllow(id string) ([]netip.Prefix, bool) { return nil, id == testUpper }

func (o oneCallee) TakeBroadcast(context.Context, string, string) (directory.Broadcast, error) {
	return directory.Broadcast{}, directory.ErrNoBroadcast
}

func (o oneCallee) ToUpper(context.Context, *sip.Request) (directory.UpperRoute, error) {
	return directory.UpperRoute{}, directory.ErrUnknownPlatform
}

// newTestB2BUA is a B2BUA on 127.0.0.1 whose every channel is dev's.
func newTestB2BUA(t *testing.T, dev string) (*B2BUA, *endpoint.Endpoint, *relay.Relay) {
	t.Helper()
	return newTestB2BUAWith(t, oneCallee{directory.Callee{ChannelID: testChannel, DeviceID: testChannel, Peer: endpoint.Peer{Transport: "UDP", Addr: dev}}})
}

// newTestB2BUAWith is a B2BUA on 127.0.0.1 asking dir.
func newTestB2BUAWith(t *testing.T, dir directory.Directory) (*B2BUA, *endpoint.Endpoint, *relay.Relay) {
	t.Helper()
	cfg, err := configs.Parse([]byte(fmt.Sprintf(`
id: "34020000002000000001"
domain: "3402000000"
lower: {listen: "127.0.0.1:0", invite_timeout: 3s}
upper:
  listen: "127.0.0.1:0"
  platforms:
    - {id: %q, address: "127.0.0.1:5060", password: "x"}
`, testUpper)))
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(zerolog.NewTestWriter(t))
	m := metrics.New()
	lower, err := endpoint.Listen(endpoint.Options{Name: "lower", Listen: "127.0.0.1:0", Logger: log, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	upper, err := endpoint.Listen(endpoint.Options{Name: "upper", Listen: "127.0.0.1:0", Logger: log, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	r, err := relay.New(relay.Config{PortMin: 40000, PortMax: 40998, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	b := New(Options{Config: cfg, Lower: lower, Upper: upper, Relay: r, Logger: log, Metrics: m, Directory: dir})
	lower.Serve()
	upper.Serve()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		b.Close(ctx)
		r.Close()
		lower.Close()
		upper.Close()
	})
	return b, upper, r
}

// upperInvite sends a UDP live INVITE (with extra headers) to the upper
// side and returns the final answer.
func upperInvite(t *testing.T, to string, extra ...sip.Header) *sip.Response {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgentHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer ua.Close()
	cl, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	host, port := endpoint.SplitHostPort(to)
	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: testChannel, Host: host, Port: port})
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: testUpper, Host: "4401000000"}, Params: sip.NewParams()}
	from.Params.Add("tag", "up")
	req.AppendHeader(from)
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	for _, h := range extra {
		req.AppendHeader(h)
	}
	req.SetBody([]byte("v=0\r\no=" + testUpper + " 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		"m=video 30000 RTP/AVP 96\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\ny=0100000001\r\n"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := cl.Do(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// A device's answer that cannot carry the stream gets the upper a 502
// saying why, and the device call a BYE; no session, stream, SSRC or port
// is left.
func TestUnusableDeviceAnswerIs502(t *testing.T) {
	answer := func(c string, port int) string {
		s := "v=0\r\no=" + testChannel + " 0 0 IN IP4 127.0.0.1\r\ns=Play\r\n"
		if c != "" {
			s += "c=IN IP4 " + c + "\r\n"
		}
		return s + "t=0 0\r\nm=video " + strconv.Itoa(port) + " RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\ny=0100000002\r\n"
	}
	for _, c := range []struct{ name, sdp, why string }{
		{"port 0", answer("127.0.0.1", 0), "port 0"},
		{"unspecified", answer("0.0.0.0", 5000), "unspecified"},
		{"no c=", answer("", 5000), "no c= address"},
		{"not an address", answer("camera.invalid", 5000), "not an IP address"},
		{"multicast", answer("239.1.1.1", 5000), "multicast"},
		{"broadcast", answer("255.255.255.255", 5000), "broadcast"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dev := newFakeDevice(t, c.sdp)
			b, upper, r := newTestB2BUA(t, dev.addr)
			res := upperInvite(t, upper.Addr())
			if res.StatusCode != 502 || !strings.Contains(res.Reason, c.why) {
				t.Fatalf("upper got %d %q, want 502 saying %q", res.StatusCode, res.Reason, c.why)
			}
			deadline := time.Now().Add(5 * time.Second)
			for {
				s, st, ssrc := b.Counts()
				b.mu.Lock()
				calls := len(b.calls)
				b.mu.Unlock()
				if s == 0 && st == 0 && ssrc == 0 && calls == 0 && r.PortsInUse() == 0 && dev.byes.Load() == 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("left: sessions %d, streams %d, SSRCs %d, calls %d, ports %d; device BYEs %d", s, st, ssrc, calls, r.PortsInUse(), dev.byes.Load())
				}
				time.Sleep(10 * time.Millisecond)
			}
			if n := b.metrics.Value("gbproxy_calls_total", "platform", testUpper, "result", "502"); n != 1 {
				t.Errorf("gbproxy_calls_total{result=502} = %d", n)
			}
		})
	}
}

// Label values are configured IDs or fixed codes, whatever comes in.
func TestMetricLabelsAreBounded(t *testing.T) {
	b := &B2BUA{dir: oneCallee{}}
	if got := b.platformLabel(testUpper); got != testUpper {
		t.Errorf("configured platform labelled %q", got)
	}
	if got := b.platformLabel("evil\"label"); got != "unknown" {
		t.Errorf("unconfigured platform labelled %q", got)
	}
	for code, want := range map[int]string{502: "502", 487: "487", 486: "4xx", 603: "6xx", 399: "3xx", 999: "6xx"} {
		if got := resultLabel(code); got != want {
			t.Errorf("resultLabel(%d) = %q, want %q", code, got, want)
		}
	}
}
