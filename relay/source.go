package relay

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// SourceOptions describe a device-side receive leg.
type SourceOptions struct {
	// ID names the session in logs (e.g. the call ID).
	ID string
	// Peer is the device's media address to dial; TCPActive only. When it
	// is not known yet (it comes in the device's answer to our offer),
	// leave it zero and call Connect once it is.
	Peer netip.AddrPort
	// Expect, when not empty, lists the only IPs media is accepted from:
	// UDP packets (the latch only takes these) and TCP connections. More
	// can be added later with ExpectFrom (the device's SDP answer).
	Expect []netip.Addr
	// OnIdle runs once, on its own goroutine, when no packet has arrived for
	// Config.IdleTimeout. The owner usually closes the session.
	OnIdle func()
}

// ErrReverseTaken: a Source carries reverse media from one Sink only.
var ErrReverseTaken = errors.New("relay: source already has a sink carrying reverse media; remove it first")

// Source is a receive leg on a local port, feeding any number of Sinks.
// A UDP Source latches on the first sender (from ExpectIP if set): the
// address announced in SDP is often wrong behind NAT.
type Source struct {
	Leg
	r       *Relay
	opts    SourceOptions
	pool    *portPool
	port    int
	created time.Time

	udp  *udpSock
	ln   *net.TCPListener
	conn atomic.Pointer[net.TCPConn]

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// connect hands a TCPActive source its peer when it was not known at
	// NewSource.
	connect chan netip.AddrPort
	hasPeer atomic.Bool
	// expect is the set of IPs media is accepted from (empty: any).
	expect atomic.Pointer[[]netip.Addr]

	mu         sync.Mutex // guards closed, hasReverse and changes to sinks
	closed     bool
	hasReverse bool
	sinks      atomic.Pointer[[]*Sink]

	// back sends reverse media to the device on this leg.
	back output

	// Reader goroutine state.
	in inbound
	// gop is what a joining Sink gets first: the packets since the last
	// PS key frame (keyed), or, while no key frame was seen and no Sink
	// exists, since the stream began.
	gop      backlog
	keyed    bool
	sawKey   bool           // a key frame was seen: keep gop's memory between GOPs
	peer     netip.AddrPort // latched UDP sender
	lastPeer int64          // UnixNano of its last packet

	idleTimer *time.Timer
}

// NewSource opens a receive leg on bindIP with a port from the pool.
func (r *Relay) NewSource(bindIP string, t Transport, opts SourceOptions) (*Source, error) {
	if t < UDP || t > TCPActive {
		return nil, fmt.Errorf("relay: unknown transport %v", t)
	}
	ip, err := parseBindIP(bindIP)
	if err != nil {
		return nil, err
	}
	if t == TCPActive && opts.Peer.IsValid() {
		if err := r.checkPeer(ip, opts.Peer); err != nil {
			return nil, err
		}
	}
	port, uc, ln, err := r.openLeg(ip, t)
	if err != nil {
		return nil, err
	}
	s := &Source{
		Leg:     newLeg(t, netip.AddrPortFrom(ip, uint16(port)), r.log.With().Str("session", opts.ID).Str("leg", "source").Logger()),
		r:       r,
		opts:    opts,
		pool:    r.pool(ip),
		port:    port,
		created: time.Now(),
		ln:      ln,
	}
	s.in.leg = &s.Leg
	s.back = output{leg: &s.Leg, maxUDP: r.cfg.MaxUDPPayload}
	s.sinks.Store(&[]*Sink{})
	s.ExpectFrom(opts.Expect...)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.connect = make(chan netip.AddrPort, 1)
	if t == TCPActive && opts.Peer.IsValid() {
		s.hasPeer.Store(true)
		s.connect <- opts.Peer
	}
	if uc != nil {
		if s.udp, err = newUDPSock(uc); err != nil {
			uc.Close()
			s.pool.free(port)
			return nil, fmt.Errorf("relay: UDP socket on %s: %w", s.local, err)
		}
		// Video arrives in bursts of a frame's packets.
		_ = uc.SetReadBuffer(1 << 20)
		s.back.udp = s.udp
		s.markReady()
	}
	if !r.track(s) {
		s.closeIO()
		s.pool.free(port)
		return nil, errors.New("relay: closed")
	}
	if r.cfg.IdleTimeout > 0 && opts.OnIdle != nil {
		// Armed only once stored: checkIdle re-arms it through the field.
		s.idleTimer = time.AfterFunc(math.MaxInt64, s.checkIdle)
		s.idleTimer.Reset(r.cfg.IdleTimeout)
	}
	s.wg.Add(1)
	go s.run()
	ev := s.log.Info()
	if opts.Peer.IsValid() {
		ev = ev.Stringer("peer", opts.Peer)
	}
	ev.Msg("media source open")
	return s, nil
}

// checkPeer refuses a TCP-active peer the relay may not dial from ip.
func (r *Relay) checkPeer(ip netip.Addr, peer netip.AddrPort) error {
	if err := r.checkDest(peer, nil); err != nil {
		return err
	}
	if peer.Addr().Unmap().Is4() != ip.Is4() {
		return fmt.Errorf("relay: bind IP %s and device address %s are of different IP families", ip, peer)
	}
	return nil
}

// Connect gives a TCPActive Source opened without a peer the address to
// dial (from the device's SDP answer). It may be called once.
func (s *Source) Connect(peer netip.AddrPort) error {
	if s.transport != TCPActive {
		return fmt.Errorf("relay: Connect on a %v source; only tcp-active sources dial", s.transport)
	}
	if err := s.r.checkPeer(s.local.Addr(), peer); err != nil {
		return err
	}
	if !s.hasPeer.CompareAndSwap(false, true) {
		return errors.New("relay: source already has its peer")
	}
	s.connect <- peer // buffered: never blocks
	s.log.Info().Stringer("peer", peer).Msg("media source dialling device")
	return nil
}

// dial waits for the peer (given at NewSource or by Connect) and dials it.
func (s *Source) dial() (*net.TCPConn, error) {
	select {
	case peer := <-s.connect:
		return dialRetry(s.ctx, s.local, peer, s.r.cfg.ConnectTimeout, &s.log)
	case <-s.ctx.Done():
		return nil, s.ctx.Err()
	}
}

func (r *Relay) track(s *Source) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.sources[s] = struct{}{}
	return true
}

func (r *Relay) forget(s *Source) {
	r.mu.Lock()
	delete(r.sources, s)
	r.mu.Unlock()
}

func (s *Source) run() {
	defer s.wg.Done()
	var err error
	switch s.transport {
	case UDP:
		err = readUDP(s.udp, &s.in, s.latch, s.fanout)
	case TCPPassive:
		err = s.serveTCP(s.acceptFrom(s.ln, s.admit, nil))
	case TCPActive:
		err = s.serveTCP(s.dial())
	}
	if s.ctx.Err() == nil {
		s.fail(err)
	}
}

// ExpectFrom adds ips to the addresses media is accepted from.
func (s *Source) ExpectFrom(ips ...netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var list []netip.Addr
	if old := s.expect.Load(); old != nil {
		list = append(list, *old...)
	}
	for _, ip := range ips {
		if ip = ip.Unmap(); ip.IsValid() && !slices.Contains(list, ip) {
			list = append(list, ip)
		}
	}
	s.expect.Store(&list)
}

// expected reports whether media may come from ip.
func (s *Source) expected(ip netip.Addr) bool {
	list := s.expect.Load()
	return list == nil || len(*list) == 0 || slices.Contains(*list, ip.Unmap())
}

// admit takes a TCP connection from an expected IP only.
func (s *Source) admit(ip netip.Addr) error {
	if !s.expected(ip) {
		return fmt.Errorf("%s is not an expected address %v", ip, *s.expect.Load())
	}
	return nil
}

func (s *Source) serveTCP(conn *net.TCPConn, err error) error {
	if err != nil {
		return err
	}
	s.conn.Store(conn)
	if s.ctx.Err() != nil { // Close ran before the connection was stored
		conn.Close()
		return nil
	}
	s.back.tcp.Store(conn)
	s.markReady()
	return readFrames(conn, &s.in, s.fanout)
}

var truncatedReason = fmt.Sprintf("UDP datagram larger than %d bytes", maxDatagram)

// readUDP reads batches from u until it is closed; accept filters senders.
func readUDP(u *udpSock, in *inbound, accept func(netip.AddrPort, int64) bool, deliver func(*scratch, []pkt, int64)) error {
	defer u.release()
	for {
		sc, n, err := u.read()
		if err != nil {
			return err
		}
		now := time.Now().UnixNano()
		pkts := sc.pkts[:0]
		for i := 0; i < n; i++ {
			switch {
			case sc.trunc[i]:
				in.drop(truncatedReason, 1)
			case !accept(sc.from[i], now):
				in.drop("sender is not the latched or expected peer", 1)
			default:
				if p, ok := in.admit(sc.slot(i)[:frameHeaderLen+sc.size[i]]); ok {
					pkts = append(pkts, p)
				}
			}
		}
		in.commit(now)
		deliver(sc, pkts, now)
	}
}

// latch takes the first sender (from an expected IP) as the device, and
// lets another take over once the latched one has been silent RelatchAfter.
func (s *Source) latch(from netip.AddrPort, now int64) bool {
	if from == s.peer {
		s.lastPeer = now
		return true
	}
	if !s.expected(from.Addr()) {
		return false
	}
	old := s.peer
	if old.IsValid() && now-s.lastPeer < int64(s.r.cfg.RelatchAfter) {
		return false
	}
	s.peer, s.lastPeer = from, now
	peer := new(netip.AddrPort) // not &from: that would move every call's from to the heap
	*peer = from
	s.back.dest.Store(peer)
	if old.IsValid() {
		s.log.Warn().Stringer("old", old).Stringer("peer", from).Msg("media source re-latched to a new sender")
	} else {
		s.log.Info().Stringer("peer", from).Msg("media source latched")
	}
	return true
}

func (s *Source) fanout(sc *scratch, pkts []pkt, now int64) {
	if len(pkts) == 0 {
		return
	}
	sinks := *s.sinks.Load()
	for _, k := range sinks {
		if !k.primed {
			k.primed = true
			s.gop.replay(func(b []pkt) { k.out.send(sc, b, now) })
		}
	}
	if len(sinks) > 0 && !s.keyed && !s.gop.empty() {
		// The set-up packets of a stream without a key frame yet went to
		// the first Sinks; later ones start live.
		s.forgetGOP()
	}
	for _, k := range sinks {
		k.out.send(sc, pkts, now)
	}
	s.keep(pkts, len(sinks) > 0)
}

// keep copies pkts into gop for Sinks that join later: from each key frame
// on, or everything while no Sink watches. Packets are kept after they were
// sent: sending only rewrites sequence, SSRC and frame prefix, which every
// later send rewrites again.
func (s *Source) keep(pkts []pkt, watched bool) {
	for _, p := range pkts {
		if p.key {
			s.gop.reset()
			s.keyed, s.sawKey = true, true
		}
		if !s.keyed && watched {
			continue
		}
		if s.gop.push(p) {
			continue
		}
		if !s.keyed {
			s.in.drop("no receiver yet and the set-up backlog is full", 1)
			continue
		}
		// A GOP larger than the bound: a half GOP would show a broken
		// picture, so receivers joining before the next key frame start live.
		s.keyed = false
		s.forgetGOP()
	}
}

// forgetGOP empties gop; a stream that never had a key frame (not PS, or
// not packetized frame by frame) gives its memory back.
func (s *Source) forgetGOP() {
	if s.sawKey {
		s.gop.reset()
	} else {
		s.gop = backlog{}
	}
}

// IdleSince is when the last packet arrived, or when the leg opened.
func (s *Source) IdleSince() time.Time {
	if last := s.Leg.in.last.Load(); last != 0 {
		return time.Unix(0, last)
	}
	return s.created
}

func (s *Source) checkIdle() {
	if s.closing.Load() {
		return
	}
	timeout := s.r.cfg.IdleTimeout
	idle := time.Since(s.IdleSince())
	if idle < timeout {
		s.idleTimer.Reset(timeout - idle)
		return
	}
	s.log.Warn().Dur("idle", idle).Msg("no media from the device")
	s.opts.OnIdle()
}

// Sinks is the number of Sinks the Source feeds.
func (s *Source) Sinks() int { return len(*s.sinks.Load()) }

// Close ends the Source and all its Sinks, and frees their ports once their
// goroutines have stopped. It is safe to call more than once.
func (s *Source) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	sinks := *s.sinks.Load()
	s.sinks.Store(&[]*Sink{})
	s.mu.Unlock()

	s.closing.Store(true)
	s.cancel()
	if s.idleTimer != nil {
		s.idleTimer.Stop()
	}
	s.closeIO()
	s.wg.Wait()
	for _, k := range sinks {
		k.close()
	}
	s.pool.free(s.port)
	s.r.forget(s)
	s.finish()
	st := s.Stats()
	s.log.Info().Uint64("packets", st.In.Packets).Uint64("lost", st.In.Lost).Uint64("dropped", st.In.Dropped).Msg("media source closed")
}

func (s *Source) closeIO() {
	if s.udp != nil {
		s.udp.conn.Close()
	}
	if s.ln != nil {
		s.ln.Close()
	}
	if c := s.conn.Load(); c != nil {
		c.Close()
	}
}

func (s *Source) addSink(k *Sink) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("relay: source is closed")
	}
	if k.reverse {
		if s.hasReverse {
			return ErrReverseTaken
		}
		s.hasReverse = true
	}
	sinks := append(slices.Clone(*s.sinks.Load()), k)
	s.sinks.Store(&sinks)
	return nil
}

// RemoveSink stops feeding k and closes it. It returns how many Sinks are
// left: at 0 the owner usually closes the Source (stream sharing ends).
func (s *Source) RemoveSink(k *Sink) int {
	s.mu.Lock()
	cur := *s.sinks.Load()
	i := slices.Index(cur, k)
	if i < 0 {
		s.mu.Unlock()
		return len(cur)
	}
	sinks := slices.Delete(slices.Clone(cur), i, i+1)
	s.sinks.Store(&sinks)
	s.mu.Unlock()

	k.close()
	if k.reverse {
		s.mu.Lock()
		s.hasReverse = false
		s.mu.Unlock()
	}
	return len(sinks)
}
