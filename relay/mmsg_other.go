//go:build !linux

package relay

import (
	"net"
	"net/netip"
	"syscall"
)

// Portable fallback: one datagram per syscall. gbproxy runs on Linux, where
// mmsg_linux.go batches; this keeps the package building elsewhere.

type sysBatch struct{}

func (sc *scratch) initSys() {}

type udpSock struct {
	conn *net.UDPConn
	sc   *scratch
}

func newUDPSock(c *net.UDPConn) (*udpSock, error) { return &udpSock{conn: c}, nil }

func (u *udpSock) read() (*scratch, int, error) {
	if u.sc == nil {
		u.sc = getScratch()
	}
	n, from, err := u.conn.ReadFromUDPAddrPort(u.sc.slot(0)[frameHeaderLen:])
	if err != nil {
		return nil, 0, err
	}
	u.sc.size[0], u.sc.from[0], u.sc.trunc[0] = n, from, false
	return u.sc, 1, nil
}

func (u *udpSock) release() {
	if u.sc != nil {
		putScratch(u.sc)
		u.sc = nil
	}
}

func (u *udpSock) write(sc *scratch, dest netip.AddrPort) (int, error) {
	sent := 0
	for _, m := range sc.out {
		b := m.body
		if len(m.hdr) > 0 {
			b = append(m.hdr[:len(m.hdr):len(m.hdr)], m.body...)
		}
		if _, err := u.conn.WriteToUDPAddrPort(b, dest); err != nil {
			if isClosed(err) {
				sc.out = sc.out[:0]
				return sent, err
			}
			continue
		}
		sent++
	}
	sc.out = sc.out[:0]
	return sent, nil
}

func reuseAddr(_, _ string, c syscall.RawConn) error { return nil }
