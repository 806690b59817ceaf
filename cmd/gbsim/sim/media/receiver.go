package media

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"
)

// Receiver receives RTP over UDP or TCP (RFC 4571 framing) and records every packet and the
// concatenated payloads (for PS over RTP, the program stream). RTCP and packets that do not parse as
// RTP are counted in Stats.Invalid and otherwise ignored.
type Receiver struct {
	network string // "udp", "tcp-passive" or "tcp-active"
	local   string // announced local address (tcp-active: the remote it dials)
	wg      sync.WaitGroup
	ctx     context.Context
	cancel  context.CancelFunc

	mu       sync.Mutex
	packets  []PacketInfo
	payload  []byte
	invalid  int
	sources  []string // peers seen, in order
	err      error    // first failure: listen, accept or dial
	closers  []func() error
	changed  chan struct{}
	closedRx bool
}

// Stats summarises what a receiver got.
type Stats struct {
	Packets int
	Bytes   int // payload bytes
	Invalid int
	Sources []string // remote addresses seen (UDP sources or TCP peers), in order
	Err     error
}

func newReceiver(network, local string) *Receiver {
	ctx, cancel := context.WithCancel(context.Background())
	return &Receiver{network: network, local: local, ctx: ctx, cancel: cancel, changed: make(chan struct{})}
}

// ListenUDPReceiver receives RTP datagrams on addr ("ip:0" picks a port).
func ListenUDPReceiver(addr string) (*Receiver, error) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("media receiver: listen UDP %s: %w", addr, err)
	}
	r := newReceiver("udp", pc.LocalAddr().String())
	r.addCloser(pc.Close)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				r.fail(err)
				return
			}
			r.record(from.String(), buf[:n])
		}
	}()
	return r, nil
}

// ListenTCPReceiver receives RTP over TCP as the passive side (RFC 4145 setup:passive): it listens
// on addr and reads every connection it accepts. With delay > 0 it reserves the port now and opens
// the listener only after delay, so that a peer connecting early is refused and must retry.
func ListenTCPReceiver(addr string, delay time.Duration) (*Receiver, error) {
	if delay <= 0 {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("media receiver: listen TCP %s: %w", addr, err)
		}
		r := newReceiver("tcp-passive", ln.Addr().String())
		r.serveTCP(ln)
		return r, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("media receiver: %q: %w", addr, err)
	}
	if port == "0" {
		p, err := ReservePort("tcp", host)
		if err != nil {
			return nil, fmt.Errorf("media receiver: reserve TCP port on %s: %w", host, err)
		}
		port = strconv.Itoa(p)
	}
	r := newReceiver("tcp-passive", net.JoinHostPort(host, port))
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		select {
		case <-time.After(delay):
		case <-r.ctx.Done():
			return
		}
		ln, err := net.Listen("tcp", r.local)
		if err != nil {
			r.fail(fmt.Errorf("listen TCP %s late: %w", r.local, err))
			return
		}
		r.serveTCP(ln)
	}()
	return r, nil
}

// DialTCPReceiver receives RTP over TCP as the active side (RFC 4145 setup:active): it connects to
// remote in the background, retrying for retryFor (DefaultConnectRetry when 0).
func DialTCPReceiver(remote string, retryFor time.Duration) *Receiver {
	r := newReceiver("tcp-active", remote)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		conn, err := dialRetry(r.ctx, "", remote, retryFor)
		if err != nil {
			r.fail(err)
			return
		}
		if !r.addCloser(conn.Close) {
			return
		}
		r.readTCP(conn)
	}()
	return r
}

func (r *Receiver) serveTCP(ln net.Listener) {
	if !r.addCloser(ln.Close) {
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				r.fail(err)
				return
			}
			if !r.addCloser(conn.Close) {
				return
			}
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.readTCP(conn)
			}()
		}
	}()
}

func (r *Receiver) readTCP(conn net.Conn) {
	from := conn.RemoteAddr().String()
	r.mu.Lock()
	r.sources = append(r.sources, from)
	r.mu.Unlock()
	r.notify()
	buf := make([]byte, MaxRTPSizeTCP)
	for {
		pkt, err := ReadFramed(conn, buf)
		if err != nil {
			return // peer closed, or Close
		}
		r.record("", pkt)
	}
}

// addCloser registers c to run at Close; false (and c run now) when the receiver is closed already.
func (r *Receiver) addCloser(c func() error) bool {
	r.mu.Lock()
	if r.closedRx {
		r.mu.Unlock()
		_ = c()
		return false
	}
	r.closers = append(r.closers, c)
	r.mu.Unlock()
	return true
}

func (r *Receiver) fail(err error) {
	r.mu.Lock()
	if r.err == nil && !r.closedRx && !errors.Is(err, net.ErrClosed) {
		r.err = err
	}
	r.mu.Unlock()
	r.notify()
}

// record keeps one packet; from is a UDP source ("" over TCP, whose peer is recorded on accept).
func (r *Receiver) record(from string, pkt []byte) {
	if len(pkt) >= 2 && pkt[1] >= 192 && pkt[1] <= 223 { // RTCP (RFC 5761 §4)
		r.mu.Lock()
		r.invalid++
		r.mu.Unlock()
		return
	}
	info, payload, err := ParseRTP(pkt)
	r.mu.Lock()
	if from != "" && (len(r.sources) == 0 || r.sources[len(r.sources)-1] != from) {
		r.sources = append(r.sources, from)
	}
	if err != nil {
		r.invalid++
	} else {
		r.packets = append(r.packets, info)
		r.payload = append(r.payload, payload...)
	}
	r.mu.Unlock()
	r.notify()
}

func (r *Receiver) notify() {
	r.mu.Lock()
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// Network returns "udp", "tcp-passive" or "tcp-active".
func (r *Receiver) Network() string { return r.network }

// LocalAddr returns the ip:port the receiver listens on; for tcp-active, the address it dials.
func (r *Receiver) LocalAddr() string { return r.local }

// Port returns the port of LocalAddr.
func (r *Receiver) Port() int {
	_, p, _ := net.SplitHostPort(r.local)
	n, _ := strconv.Atoi(p)
	return n
}

// Packets returns the packets received so far, in arrival order.
func (r *Receiver) Packets() []PacketInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]PacketInfo(nil), r.packets...)
}

// Payload returns a copy of the concatenated payloads received so far.
func (r *Receiver) Payload() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.payload...)
}

// Stats returns counters, the peers seen and the first error.
func (r *Receiver) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Stats{Packets: len(r.packets), Bytes: len(r.payload), Invalid: r.invalid,
		Sources: append([]string(nil), r.sources...), Err: r.err}
}

// Wait waits until cond holds for the receiver's Stats, or ctx ends. A listen, accept or dial
// failure ends the wait with that error.
func (r *Receiver) Wait(ctx context.Context, cond func(Stats) bool) (Stats, error) {
	for {
		r.mu.Lock()
		changed := r.changed
		r.mu.Unlock()
		s := r.Stats()
		if cond(s) {
			return s, nil
		}
		if s.Err != nil {
			return s, fmt.Errorf("media receiver (%s %s): %w", r.network, r.local, s.Err)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return s, fmt.Errorf("media receiver (%s %s): %d packets, %d bytes so far: %w", r.network, r.local, s.Packets, s.Bytes, ctx.Err())
		}
	}
}

// WaitPackets waits until at least n packets arrived.
func (r *Receiver) WaitPackets(ctx context.Context, n int) (Stats, error) {
	return r.Wait(ctx, func(s Stats) bool { return s.Packets >= n })
}

// WaitBytes waits until at least n payload bytes arrived.
func (r *Receiver) WaitBytes(ctx context.Context, n int) (Stats, error) {
	return r.Wait(ctx, func(s Stats) bool { return s.Bytes >= n })
}

// Close stops receiving: it closes the sockets and waits for the readers to end. What was received
// stays readable.
func (r *Receiver) Close() error {
	r.mu.Lock()
	if r.closedRx {
		r.mu.Unlock()
		return nil
	}
	r.closedRx = true
	closers := r.closers
	r.closers = nil
	r.mu.Unlock()
	r.cancel()
	for _, c := range closers {
		_ = c()
	}
	r.wg.Wait()
	return nil
}
