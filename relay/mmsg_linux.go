package relay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Batched UDP I/O with recvmmsg/sendmmsg, and UDP GSO on send.
// golang.org/x/net/ipv4's ReadBatch does the same receive syscall but
// allocates a net.UDPAddr and its IP for every datagram; here source
// addresses are decoded into netip.AddrPort values, so the forwarding path
// does not allocate.

// mmsghdr is struct mmsghdr; Go pads it to the C size on 32 and 64 bits.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

const sockaddrLen = unix.SizeofSockaddrInet6 // room for either family

type sysBatch struct {
	rhdr  [batchSize]mmsghdr
	riov  [batchSize]unix.Iovec
	names [batchSize][sockaddrLen]byte

	whdr    [outCap]mmsghdr
	wiov    [2 * outCap]unix.Iovec
	cmsg    [outCap]segmentCmsg
	groups  [outCap]int // datagrams carried by each whdr
	dest    [sockaddrLen]byte
	pending []mmsghdr // not yet sent part of whdr
	sent    int
	errno   syscall.Errno
	sendFn  func(fd uintptr) bool
}

// segmentCmsg is a UDP_SEGMENT control message; the Go layout matches
// CMSG_DATA's offset and CMSG_SPACE(2) on 32- and 64-bit Linux.
type segmentCmsg struct {
	hdr     unix.Cmsghdr
	segSize [2]byte
	_       [6]byte
}

const (
	// UDP GSO limits: segments per send (UDP_MAX_SEGMENTS on older
	// kernels) and bytes per send (an IPv4 datagram's payload).
	maxGSOSegments = 64
	maxGSOBytes    = 65507
)

func (sc *scratch) initSys() {
	s := &sc.sys
	for i := range s.rhdr {
		slot := sc.slot(i)[frameHeaderLen:]
		s.riov[i].Base = &slot[0]
		s.riov[i].SetLen(len(slot))
		s.rhdr[i].hdr.Iov = &s.riov[i]
		s.rhdr[i].hdr.SetIovlen(1)
		s.rhdr[i].hdr.Name = &s.names[i][0]
	}
	s.sendFn = sc.sendmmsg
}

// udpSock is a UDP socket with batched reads. One goroutine reads; any
// goroutine may write, each with its own scratch.
type udpSock struct {
	conn *net.UDPConn
	rc   syscall.RawConn
	gso  atomic.Bool // kernel accepts UDP_SEGMENT on this socket

	// Reader state, used by the one reading goroutine.
	sc     *scratch // held from a successful read until the socket drains
	n      int
	err    error
	readFn func(fd uintptr) bool
}

func newUDPSock(c *net.UDPConn) (*udpSock, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	u := &udpSock{conn: c, rc: rc}
	u.readFn = u.recvmmsg
	_ = rc.Control(func(fd uintptr) {
		_, err := unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT)
		u.gso.Store(err == nil)
	})
	return u, nil
}

// read waits for datagrams and returns a batch holding n of them. The
// batch stays with the socket: the next read reuses it, and gives it back to
// the pool when the socket has nothing more, before waiting.
func (u *udpSock) read() (*scratch, int, error) {
	if err := u.rc.Read(u.readFn); err != nil {
		return nil, 0, err
	}
	return u.sc, u.n, u.err
}

// release gives the held batch back; for a reader that stops.
func (u *udpSock) release() {
	if u.sc != nil {
		putScratch(u.sc)
		u.sc = nil
	}
}

func (u *udpSock) recvmmsg(fd uintptr) bool {
	if u.sc == nil {
		u.sc = getScratch()
	}
	sc := u.sc
	h := &sc.sys.rhdr
	for i := range h {
		h[i].hdr.Namelen = sockaddrLen
		h[i].hdr.Flags = 0
	}
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&h[0])), batchSize, 0, 0, 0)
		switch errno {
		case 0:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			u.release()
			return false
		default:
			u.n, u.err = 0, os.NewSyscallError("recvmmsg", errno)
			return true
		}
		for i := 0; i < int(n); i++ {
			sc.size[i] = int(h[i].len)
			sc.trunc[i] = h[i].hdr.Flags&unix.MSG_TRUNC != 0
			sc.from[i] = decodeSockaddr(sc.sys.names[i][:h[i].hdr.Namelen])
		}
		u.n, u.err = int(n), nil
		return true
	}
}

// write sends the datagrams queued in sc.out to dest and empties the
// queue. A datagram the kernel refuses (no route, firewall) is skipped; it
// returns how many went out and the error that stopped it (socket closed).
func (u *udpSock) write(sc *scratch, dest netip.AddrPort) (int, error) {
	nameLen := encodeSockaddr(&sc.sys.dest, dest)
	msgs := sc.out
	sc.out = sc.out[:0]
	return u.writeMsgs(&sc.sys, msgs, nameLen, u.gso.Load())
}

func (u *udpSock) writeMsgs(s *sysBatch, msgs []outMsg, nameLen uint32, gso bool) (int, error) {
	sent := 0
	for len(msgs) > 0 {
		nh, packed := s.pack(msgs, nameLen, gso)
		done, errno, err := u.sendPacked(s, nh)
		doneMsgs := 0
		for _, g := range s.groups[:done] {
			doneMsgs += g
		}
		sent += doneMsgs
		if err != nil {
			return sent, err
		}
		if errno == 0 {
			msgs = msgs[packed:]
			continue
		}
		msgs = msgs[doneMsgs:]
		g := s.groups[done]
		if g > 1 {
			// GSO refused (segment larger than the path MTU, or a device
			// without UDP segmentation): send that run one by one.
			if errno == unix.EIO {
				u.gso.Store(false)
			}
			n, err := u.writeMsgs(s, msgs[:g], nameLen, false)
			sent += n
			if err != nil {
				return sent, err
			}
		}
		msgs = msgs[g:] // a single refused datagram is skipped
	}
	return sent, nil
}

// pack fills whdr from msgs and returns how many headers it filled and how
// many datagrams they carry. With gso, a run of datagrams of one size (the
// last may be shorter) goes in one header with a UDP_SEGMENT control message:
// the kernel then walks its send path once per run instead of per datagram.
func (s *sysBatch) pack(msgs []outMsg, nameLen uint32, gso bool) (headers, packed int) {
	iv, i := 0, 0
	for ; i < len(msgs) && headers < outCap; headers++ {
		first, count, total := iv, 0, 0
		seg := len(msgs[i].hdr) + len(msgs[i].body)
		for i < len(msgs) {
			m := msgs[i]
			l := len(m.hdr) + len(m.body)
			if count > 0 && (!gso || l > seg || count == maxGSOSegments || total+l > maxGSOBytes) {
				break
			}
			for _, b := range [2][]byte{m.hdr, m.body} {
				if len(b) > 0 {
					s.wiov[iv].Base = &b[0]
					s.wiov[iv].SetLen(len(b))
					iv++
				}
			}
			count, total, i = count+1, total+l, i+1
			if l < seg {
				break // only the last datagram of a run may be shorter
			}
		}
		h := &s.whdr[headers].hdr
		h.Name = &s.dest[0]
		h.Namelen = nameLen
		h.Iov = &s.wiov[first]
		h.SetIovlen(iv - first)
		h.Control = nil
		h.SetControllen(0)
		if count > 1 {
			c := &s.cmsg[headers]
			c.hdr.Level, c.hdr.Type = unix.SOL_UDP, unix.UDP_SEGMENT
			c.hdr.SetLen(unix.CmsgLen(2))
			binary.NativeEndian.PutUint16(c.segSize[:], uint16(seg))
			h.Control = (*byte)(unsafe.Pointer(c))
			h.SetControllen(unix.CmsgSpace(2))
		}
		s.groups[headers] = count
	}
	return headers, i
}

// sendPacked sends whdr[:n]. It returns how many headers went out before the
// kernel refused one (errno then tells why), or n.
func (u *udpSock) sendPacked(s *sysBatch, n int) (int, syscall.Errno, error) {
	s.pending = s.whdr[:n]
	done := 0
	for len(s.pending) > 0 {
		if err := u.rc.Write(s.sendFn); err != nil {
			return done, 0, err
		}
		if s.errno != 0 {
			return done, s.errno, nil
		}
		done += s.sent
		s.pending = s.pending[s.sent:]
	}
	return done, 0, nil
}

func (sc *scratch) sendmmsg(fd uintptr) bool {
	s := &sc.sys
	for {
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&s.pending[0])), uintptr(len(s.pending)), 0, 0, 0)
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		s.sent, s.errno = int(n), errno
		return true
	}
}

// encodeSockaddr writes a as a sockaddr_in (IPv4) or sockaddr_in6 into b
// and returns its length.
func encodeSockaddr(b *[sockaddrLen]byte, a netip.AddrPort) uint32 {
	clear(b[:])
	binary.BigEndian.PutUint16(b[2:4], a.Port())
	if ip := a.Addr(); ip.Is4() {
		binary.NativeEndian.PutUint16(b[0:2], unix.AF_INET)
		v4 := ip.As4()
		copy(b[4:8], v4[:])
		return unix.SizeofSockaddrInet4
	}
	binary.NativeEndian.PutUint16(b[0:2], unix.AF_INET6)
	v6 := a.Addr().As16()
	copy(b[8:24], v6[:])
	return unix.SizeofSockaddrInet6
}

func decodeSockaddr(b []byte) netip.AddrPort {
	if len(b) < 4 {
		return netip.AddrPort{}
	}
	port := binary.BigEndian.Uint16(b[2:4])
	switch binary.NativeEndian.Uint16(b[0:2]) {
	case unix.AF_INET:
		if len(b) >= unix.SizeofSockaddrInet4 {
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port)
		}
	case unix.AF_INET6:
		if len(b) >= unix.SizeofSockaddrInet6 {
			return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])).Unmap(), port)
		}
	}
	return netip.AddrPort{}
}

// reuseAddr lets a TCP-active leg bind its announced port again while an
// earlier connection from that port is in TIME_WAIT.
func reuseAddr(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	}); err != nil {
		return err
	}
	return serr
}
