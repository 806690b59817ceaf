package endpoint

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"
)

// trackedConn reports its end exactly once: on a read error (peer closed,
// reset) or on Close, whichever comes first. Closing it again is not an
// error: sipgo closes a connection once more after its read fails, and
// would log that error.
type trackedConn struct {
	net.Conn
	once      sync.Once
	onClose   func(remote string)
	closeOnce sync.Once
	closeErr  error
}

func (c *trackedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil {
		c.ended()
	}
	return n, err
}

func (c *trackedConn) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.Conn.Close() })
	c.ended()
	return c.closeErr
}

func (c *trackedConn) ended() {
	c.once.Do(func() { c.onClose(c.Conn.RemoteAddr().String()) })
}

// trackingListener wraps accepted connections in trackedConn. With limits,
// it also applies the connection caps and the idle timeout.
type trackingListener struct {
	net.Listener
	onClose func(remote string)
	limits  *connLimits
}

func (l *trackingListener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || l.limits == nil {
				return nil, err
			}
			// Out of file descriptors, or a connection reset while queued:
			// sipgo would stop accepting for good on an error, so wait and
			// go on (as net/http does).
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			if !l.limits.acceptFailed(err, delay) {
				return nil, net.ErrClosed
			}
			continue
		}
		delay = 0
		if l.limits == nil {
			return &trackedConn{Conn: c, onClose: l.onClose}, nil
		}
		if tc := l.limits.admit(c, l.onClose); tc != nil {
			return tc, nil
		}
	}
}

// dialListener hands connections we dialled to sipgo's TCP server loop, which
// registers them in its pool and reads them exactly like accepted ones: that
// is how one connection carries requests both ways.
type dialListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newDialListener(addr net.Addr) *dialListener {
	return &dialListener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

var errEndpointClosed = errors.New("SIP endpoint closed")

func (l *dialListener) hand(ctx context.Context, c net.Conn) error {
	select {
	case l.conns <- c:
		return nil
	case <-l.closed:
		return errEndpointClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *dialListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *dialListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *dialListener) Addr() net.Addr { return l.addr }
