package endpoint

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/metrics"
	"github.com/gbproxy/gbproxy/security/testpki"
)

const testID = "34020000002000000001"

// closedConns records OnConnClosed calls.
type closedConns struct {
	mu  sync.Mutex
	got []string
}

func (c *closedConns) add(remote string) {
	c.mu.Lock()
	c.got = append(c.got, remote)
	c.mu.Unlock()
}

func (c *closedConns) has(remote string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.got {
		if r == remote {
			return true
		}
	}
	return false
}

// tlsEndpoint serves a zone on 127.0.0.1 with a TLS listener using cfg (nil:
// none); handlers are registered by setup before serving.
func tlsEndpoint(t *testing.T, cfg *tls.Config, setup func(*Endpoint)) (*Endpoint, *metrics.Registry, *closedConns) {
	t.Helper()
	m := metrics.New()
	closed := &closedConns{}
	opts := Options{Name: "lower", Listen: "127.0.0.1:0", Logger: zerolog.New(zerolog.NewTestWriter(t)), Metrics: m, OnConnClosed: closed.add}
	if cfg != nil {
		opts.TLSListen, opts.TLSConfig = "127.0.0.1:0", cfg
	}
	e, err := Listen(opts)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(e)
	}
	e.Serve()
	t.Cleanup(func() { e.Close() })
	return e, m, closed
}

// readSIP reads one SIP message from a stream.
func readSIP(r *bufio.Reader) (sip.Message, error) {
	tp := textproto.NewReader(r)
	var head strings.Builder
	length := 0
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return nil, err
		}
		head.WriteString(line + "\r\n")
		if line == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && (strings.EqualFold(k, "Content-Length") || k == "l") {
			length, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	return sip.ParseMessage(append([]byte(head.String()), body...))
}

func rawRegister(local, server string) string {
	return fmt.Sprintf("REGISTER sip:%s@3402000000 SIP/2.0\r\n"+
		"Via: SIP/2.0/TLS %s;rport;branch=z9hG4bK%d\r\n"+
		"From: <sip:34020000001320000001@3402000000>;tag=abc\r\n"+
		"To: <sip:34020000001320000001@3402000000>\r\n"+
		"Call-ID: tls-test-%d@%s\r\n"+
		"CSeq: 1 REGISTER\r\n"+
		"Contact: <sip:34020000001320000001@%s;transport=tls>\r\n"+
		"Max-Forwards: 70\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n",
		testID, local, time.Now().UnixNano(), time.Now().UnixNano(), server, local)
}

// A TLS client's request is answered on its connection, and a request from
// us to that peer goes down the same connection, with a TLS Via and a
// Contact saying ;transport=tls.
func TestTLSPeerRequestsBothWaysOnItsConnection(t *testing.T) {
	pki := testpki.New(t)
	peers := make(chan Peer, 1)
	e, _, closed := tlsEndpoint(t, pki.ServerConfig(true), func(e *Endpoint) {
		e.Handle(sip.REGISTER, func(req *sip.Request, tx sip.ServerTransaction) {
			peers <- PeerOf(req)
			e.Respond(tx, req, sip.StatusOK, "OK", nil)
		})
	})
	conn, err := tls.Dial("tcp", e.TLSAddr(), pki.ClientConfig(true))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	local := conn.LocalAddr().String()
	if _, err := io.WriteString(conn, rawRegister(local, e.TLSAddr())); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	msg, err := readSIP(r)
	if err != nil {
		t.Fatal(err)
	}
	if res, ok := msg.(*sip.Response); !ok || res.StatusCode != 200 {
		t.Fatalf("REGISTER over TLS answered %v, want 200", firstLine(msg))
	}
	peer := <-peers
	if peer.Transport != "TLS" || peer.Addr != local {
		t.Fatalf("handler saw the request from %v, want TLS %s", peer, local)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan *sip.Response, 1)
	go func() {
		req := e.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", User: "34020000001320000001", Host: "3402000000"}, peer,
			sip.Uri{Scheme: "sip", User: testID, Host: "3402000000"}, sip.Uri{Scheme: "sip", User: "34020000001320000001", Host: "3402000000"})
		res, err := e.Do(ctx, req)
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	msg, err = readSIP(r)
	if err != nil {
		t.Fatalf("our OPTIONS did not come down the TLS connection: %v", err)
	}
	req, ok := msg.(*sip.Request)
	if !ok || req.Method != sip.OPTIONS {
		t.Fatalf("got %s, want OPTIONS", firstLine(msg))
	}
	_, tlsPort := SplitHostPort(e.TLSAddr())
	if via := req.Via(); via.Transport != "TLS" || via.Port != tlsPort {
		t.Errorf("Via %s, want transport TLS and our TLS port %d", via.Value(), tlsPort)
	}
	if ct := req.Contact(); ct == nil || ct.Address.UriParams.GetOr("transport", "") != "tls" || ct.Address.Port != tlsPort {
		t.Errorf("Contact %v, want ;transport=tls on port %d", req.Contact(), tlsPort)
	}
	if _, err := io.WriteString(conn, sip.NewResponseFromRequest(req, 200, "OK", nil).String()); err != nil {
		t.Fatal(err)
	}
	if res := <-done; res == nil || res.StatusCode != 200 {
		t.Fatalf("OPTIONS over TLS: %v", res)
	}
	conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for !closed.has(local) {
		if time.Now().After(deadline) {
			t.Fatal("OnConnClosed not called for the TLS connection")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// With require_client_cert, a client without a certificate (or with one
// from another CA) is refused in the handshake: no request reaches a
// handler, and the refusal is counted.
func TestTLSClientWithoutCertificateRefused(t *testing.T) {
	pki := testpki.New(t)
	e, m, _ := tlsEndpoint(t, pki.ServerConfig(true), func(e *Endpoint) {
		e.Handle(sip.REGISTER, func(req *sip.Request, tx sip.ServerTransaction) {
			t.Errorf("request from a refused client reached the handler")
			e.Respond(tx, req, sip.StatusOK, "OK", nil)
		})
	})
	stranger := testpki.New(t).ClientConfig(true)
	stranger.RootCAs = pki.Pool() // trusts our server, presents a certificate we did not sign
	for name, cfg := range map[string]*tls.Config{"no certificate": pki.ClientConfig(false), "foreign certificate": stranger} {
		conn, err := tls.Dial("tcp", e.TLSAddr(), cfg)
		if err != nil {
			continue // refused in the handshake already (TLS 1.2)
		}
		// TLS 1.3: the client finishes first; the server's verdict arrives on read.
		io.WriteString(conn, rawRegister(conn.LocalAddr().String(), e.TLSAddr()))
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if msg, err := readSIP(bufio.NewReader(conn)); err == nil {
			t.Errorf("%s: answered %s, want the connection refused", name, firstLine(msg))
		} else if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("%s: connection left open", name)
		}
		conn.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for m.Value("gbproxy_tls_handshake_failures_total", "side", "lower") != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("handshake failures counted: %d, want 2", m.Value("gbproxy_tls_handshake_failures_total", "side", "lower"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// DialTLS opens one connection that carries requests both ways: ours to
// the peer, and the peer's back to us, which sipgo never dials for.
func TestDialTLSCarriesRequestsBothWays(t *testing.T) {
	pki := testpki.New(t)
	fromA := make(chan Peer, 1)
	var b *Endpoint
	b, _, _ = tlsEndpoint(t, pki.ServerConfig(true), func(e *Endpoint) {
		e.Handle(sip.OPTIONS, func(req *sip.Request, tx sip.ServerTransaction) {
			fromA <- PeerOf(req)
			e.Respond(tx, req, sip.StatusOK, "OK", nil)
		})
	})
	fromB := make(chan Peer, 1)
	a, _, closedA := tlsEndpoint(t, nil, func(e *Endpoint) {
		e.Handle(sip.OPTIONS, func(req *sip.Request, tx sip.ServerTransaction) {
			fromB <- PeerOf(req)
			e.Respond(tx, req, sip.StatusOK, "OK", nil)
		})
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	if _, err := a.DialTLS(ctx, b.TLSAddr(), testpki.New(t).ClientConfig(true)); err == nil {
		t.Fatal("DialTLS accepted a server certificate from an untrusted CA")
	}
	remote, err := a.DialTLS(ctx, b.TLSAddr(), pki.ClientConfig(true))
	if err != nil {
		t.Fatal(err)
	}
	if again, err := a.DialTLS(ctx, b.TLSAddr(), pki.ClientConfig(true)); err != nil || again != remote {
		t.Fatalf("second DialTLS: %s %v, want the same connection %s", again, err, remote)
	}
	uri := sip.Uri{Scheme: "sip", User: testID, Host: "3402000000"}
	options := func(e *Endpoint, to Peer) {
		t.Helper()
		res, err := e.Do(ctx, e.NewRequest(sip.OPTIONS, uri, to, uri, uri))
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("OPTIONS to %v: %v %v", to, res, err)
		}
	}
	options(a, Peer{Transport: "TLS", Addr: remote})
	seen := <-fromA
	if seen.Transport != "TLS" {
		t.Fatalf("B saw A's request over %s", seen.Transport)
	}
	options(b, seen) // back down A's connection: A listens on no TLS port
	if got := <-fromB; got.Transport != "TLS" || got.Addr != remote {
		t.Fatalf("A saw B's request from %v, want TLS %s", got, remote)
	}
	b.CloseConn(seen.Addr)
	deadline := time.Now().Add(5 * time.Second)
	for !closedA.has(remote) || a.HasConn(remote) {
		if time.Now().After(deadline) {
			t.Fatal("A did not see its dialled TLS connection close")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func firstLine(m sip.Message) string {
	line, _, _ := strings.Cut(m.String(), "\r\n")
	return line
}
