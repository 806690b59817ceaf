package endpoint

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// tlsHandshakeTimeout bounds how long an accepted connection may take to
// finish its TLS handshake: a client that connects and stays silent must not
// hold the connection for ever.
const tlsHandshakeTimeout = 10 * time.Second

// ConnOriented reports whether a peer on this transport ("TCP", "TLS") is
// reached down its own connection rather than at an address (UDP).
func ConnOriented(transport string) bool { return transport == "TCP" || transport == "TLS" }

// listenTLS opens the zone's TLS listener. Accepted connections are served
// by sipgo's TLS transport (pooled under "tls"), so requests to a TLS peer
// go down its connection like TCP ones.
func (e *Endpoint) listenTLS(addr string, cfg *tls.Config) error {
	if cfg == nil {
		return fmt.Errorf("%s side: tls_listen %s without a TLS configuration (cert and key)", e.name, addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s side: listen TLS %s: %w (is another process using the port?)", e.name, addr, err)
	}
	e.tlsPort = ln.Addr().(*net.TCPAddr).Port
	// The connection caps and idle timeout apply below TLS, to the raw
	// connections, before any handshake work.
	e.tlsLn = &tlsListener{Listener: &trackingListener{Listener: ln, onClose: e.connClosed, limits: e.conns}, cfg: cfg, e: e}
	return nil
}

// TLSAddr is the TLS listen address, "" when the zone has none.
func (e *Endpoint) TLSAddr() string {
	if e.tlsLn == nil {
		return ""
	}
	return e.tlsLn.Addr().String()
}

// DialTLS opens (or reuses) a persistent TLS connection to addr, verified
// with cfg (ServerName defaults to addr's host), that carries requests both
// ways like Dial's TCP connection. Its end is reported through OnConnClosed.
func (e *Endpoint) DialTLS(ctx context.Context, addr string, cfg *tls.Config) (string, error) {
	if e.hasConn("tls", addr) {
		return addr, nil
	}
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName, _ = SplitHostPort(addr)
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("connect TLS %s: %w", addr, err)
	}
	conn := tls.Client(raw, cfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return "", fmt.Errorf("TLS handshake with %s: %w (check the peer's certificate against tls.ca and tls.server_name, and our client certificate)", addr, err)
	}
	return e.hand(ctx, "tls", e.tlsDialed, &clientTLSConn{Conn: conn, e: e})
}

// clientTLSConn logs the peer's TLS alert on a connection we dialled: under
// TLS 1.3 a server refuses our certificate only after our handshake has
// returned, and the operator would otherwise see just a timeout.
type clientTLSConn struct {
	*tls.Conn
	e    *Endpoint
	once sync.Once
}

func (c *clientTLSConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	var op *net.OpError
	if err != nil && errors.As(err, &op) && op.Op == "remote error" {
		c.once.Do(func() {
			c.e.log.Warn().Err(err).Str("remote", c.RemoteAddr().String()).
				Msg("peer refused our TLS connection; check our client certificate (tls.cert, tls.key) against what the peer trusts")
		})
	}
	return n, err
}

// tlsListener wraps accepted (tracked, limited) connections for TLS; the
// handshake itself runs on the connection's first read, in sipgo's
// per-connection goroutine, so a slow client cannot stall the accept loop.
type tlsListener struct {
	net.Listener
	cfg *tls.Config
	e   *Endpoint
}

func (l *tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &serverTLSConn{Conn: tls.Server(c, l.cfg), e: l.e}, nil
}

// serverTLSConn completes the handshake, within tlsHandshakeTimeout, before
// its first read and logs a failure: a client refused for its certificate
// is the operator's business.
type serverTLSConn struct {
	*tls.Conn
	e    *Endpoint
	once sync.Once
	err  error
}

func (c *serverTLSConn) Read(b []byte) (int, error) {
	c.once.Do(c.handshake)
	if c.err != nil {
		return 0, c.err
	}
	return c.Conn.Read(b)
}

func (c *serverTLSConn) handshake() {
	ctx, cancel := context.WithTimeout(context.Background(), tlsHandshakeTimeout)
	defer cancel()
	if c.err = c.HandshakeContext(ctx); c.err != nil {
		c.e.metrics.Inc("gbproxy_tls_handshake_failures_total", "side", c.e.name)
		c.e.log.Warn().Err(c.err).Str("remote", c.RemoteAddr().String()).
			Msg("TLS handshake failed; connection closed (with require_client_cert, clients need a certificate signed by client_ca)")
	}
}
