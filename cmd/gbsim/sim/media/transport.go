package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// DefaultConnectRetry is how long a TCP-active side keeps retrying its connect: some peers open
// their TCP-passive listener only after the 200 OK (or the ACK), so the first attempts are refused.
const DefaultConnectRetry = 5 * time.Second

// connectRetryPause separates two connect attempts.
const connectRetryPause = 50 * time.Millisecond

// Sender sends RTP packets to one peer.
type Sender interface {
	Send(pkt []byte) error
	LocalAddr() string  // ip:port the packets leave from
	RemoteAddr() string // ip:port they go to
	Close() error
}

// UDPSender sends each RTP packet as one datagram.
type UDPSender struct {
	conn   *net.UDPConn
	remote *net.UDPAddr
}

// NewUDPSender sends from conn (which it takes over and closes) to remote.
func NewUDPSender(conn *net.UDPConn, remote string) (*UDPSender, error) {
	addr, err := net.ResolveUDPAddr("udp", remote)
	if err != nil {
		return nil, fmt.Errorf("udp sender: remote %q: %w", remote, err)
	}
	return &UDPSender{conn: conn, remote: addr}, nil
}

// Send writes pkt as one datagram.
func (s *UDPSender) Send(pkt []byte) error {
	_, err := s.conn.WriteToUDP(pkt, s.remote)
	return err
}

// LocalAddr returns the address datagrams leave from.
func (s *UDPSender) LocalAddr() string { return s.conn.LocalAddr().String() }

// RemoteAddr returns the destination.
func (s *UDPSender) RemoteAddr() string { return s.remote.String() }

// Close closes the socket.
func (s *UDPSender) Close() error { return s.conn.Close() }

// TCPSender sends RTP packets over one TCP connection with RFC 4571 framing. Whatever the peer sends
// is read and discarded, so that a peer closing the connection is noticed at the next Send.
type TCPSender struct {
	conn net.Conn
	mu   sync.Mutex
}

func newTCPSender(conn net.Conn) *TCPSender {
	s := &TCPSender{conn: conn}
	go func() { _, _ = io.Copy(io.Discard, conn) }() // ends when the connection closes
	return s
}

// Send writes the two-byte length and the packet in one Write.
func (s *TCPSender) Send(pkt []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return WriteFramed(s.conn, pkt)
}

// LocalAddr returns the local end of the connection.
func (s *TCPSender) LocalAddr() string { return s.conn.LocalAddr().String() }

// RemoteAddr returns the peer's end of the connection.
func (s *TCPSender) RemoteAddr() string { return s.conn.RemoteAddr().String() }

// Close closes the connection.
func (s *TCPSender) Close() error { return s.conn.Close() }

// DialTCPSender connects to remote (TCP active, RFC 4145 setup:active), retrying refused or failed
// attempts until retryFor has passed or ctx ends. A non-empty local binds the connection's local
// address (e.g. the port announced in SDP); when that bind fails the kernel picks the port.
func DialTCPSender(ctx context.Context, local, remote string, retryFor time.Duration) (*TCPSender, error) {
	conn, err := dialRetry(ctx, local, remote, retryFor)
	if err != nil {
		return nil, err
	}
	return newTCPSender(conn), nil
}

// AcceptTCPSender waits for one connection on ln (TCP passive, RFC 4145 setup:passive) until ctx
// ends. The caller still owns ln.
func AcceptTCPSender(ctx context.Context, ln net.Listener) (*TCPSender, error) {
	conn, err := acceptOne(ctx, ln)
	if err != nil {
		return nil, err
	}
	return newTCPSender(conn), nil
}

func acceptOne(ctx context.Context, ln net.Listener) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("accept media connection on %s: %w", ln.Addr(), r.err)
		}
		return r.conn, nil
	case <-ctx.Done():
		_ = ln.Close() // unblocks Accept
		if r := <-ch; r.conn != nil {
			_ = r.conn.Close()
		}
		return nil, fmt.Errorf("no media connection on %s: %w", ln.Addr(), ctx.Err())
	}
}

// dialRetry dials remote until it connects, retryFor passes or ctx ends.
func dialRetry(ctx context.Context, local, remote string, retryFor time.Duration) (net.Conn, error) {
	if retryFor <= 0 {
		retryFor = DefaultConnectRetry
	}
	ctx, cancel := context.WithTimeout(ctx, retryFor)
	defer cancel()
	var laddr *net.TCPAddr
	if local != "" {
		a, err := net.ResolveTCPAddr("tcp", local)
		if err != nil {
			return nil, fmt.Errorf("dial media: local address %q: %w", local, err)
		}
		laddr = a
	}
	attempts := 0
	for {
		attempts++
		d := net.Dialer{Timeout: time.Second}
		if laddr != nil {
			d.LocalAddr = laddr
		}
		conn, err := d.DialContext(ctx, "tcp", remote)
		if err == nil {
			return conn, nil
		}
		if laddr != nil && isAddrInUse(err) {
			laddr = nil // the announced port is taken: let the kernel choose
			continue
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dial media %s: %d attempts: %w", remote, attempts, err)
		case <-time.After(connectRetryPause):
		}
	}
}

func isAddrInUse(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial" && errors.Is(err, errAddrInUse)
}

// ReservePort returns a free port on ip for network "tcp" or "udp" by binding and releasing it, to
// announce a port in SDP before listening on it (as a peer that listens late does).
func ReservePort(network, ip string) (int, error) {
	switch network {
	case "tcp":
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			return 0, err
		}
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port, nil
	case "udp":
		pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
		if err != nil {
			return 0, err
		}
		defer pc.Close()
		return pc.LocalAddr().(*net.UDPAddr).Port, nil
	}
	return 0, fmt.Errorf("reserve port: network %q: want tcp or udp", network)
}
