package relay

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
)

// SinkOptions describe an upper-side send leg.
type SinkOptions struct {
	// ID names the receiver in logs (e.g. the upper's call ID).
	ID string
	// AcceptFrom, when not empty, lists the only IPs whose connection a
	// TCPPassive sink accepts (the upper's SDP c= and signalling address);
	// AllowedDest and Config.AllowedDest apply as well. Other connections
	// are reset and counted in Stats.Refused; the sink keeps waiting.
	AcceptFrom []netip.Addr
	// OnRefused, when set, runs on the sink's goroutine for each connection
	// refused (for the owner's metrics).
	OnRefused func(from netip.AddrPort)
	// Reverse forwards the RTP the upper sends on this leg (two-way audio)
	// to the device on the Source's leg, numbered continuously and with
	// ReverseSSRC. On UDP only packets from the destination's IP are taken.
	// A Source has at most one such Sink.
	Reverse     bool
	ReverseSSRC uint32
	// AllowedDest, when not empty, lists the only networks this sink may
	// send to or dial, on top of Config.AllowedDest (a per-upper list).
	AllowedDest []netip.Prefix
}

// Sink is a send leg fed by a Source: its own port (the one announced in
// SDP, which UDP packets leave from), SSRC and sequence numbering.
type Sink struct {
	Leg
	src     *Source
	dest    netip.AddrPort
	accept  []netip.Addr   // TCPPassive: who may connect (empty: any)
	allowed []netip.Prefix // the sink's own allow-list
	refused func(netip.AddrPort)
	reverse bool
	pool    *portPool
	port    int

	out output  // used by the Source's reader goroutine
	in  inbound // reverse media, used by the Sink's goroutine
	// primed: the Source's reader goroutine has sent it the packets since
	// the last key frame (only that goroutine uses it).
	primed bool

	udp  *udpSock
	ln   *net.TCPListener
	conn atomic.Pointer[net.TCPConn]

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// AddSink opens a send leg on bindIP and starts feeding it. dest is the
// upper's media address for UDP and TCPActive (ignored for TCPPassive,
// where the upper connects to LocalAddr). Every packet leaves with ssrc.
// It fails with ErrDestNotAllowed when dest is outside Config.AllowedDest.
func (s *Source) AddSink(bindIP string, t Transport, dest netip.AddrPort, ssrc uint32, opts SinkOptions) (*Sink, error) {
	if t < UDP || t > TCPActive {
		return nil, fmt.Errorf("relay: unknown transport %v", t)
	}
	ip, err := parseBindIP(bindIP)
	if err != nil {
		return nil, err
	}
	if t != TCPPassive {
		if err := s.r.checkDest(dest, opts.AllowedDest); err != nil {
			return nil, err
		}
		if dest.Addr().Unmap().Is4() != ip.Is4() {
			return nil, fmt.Errorf("relay: bind IP %s and destination %s are of different IP families; bind the upper side to an IP of the destination's family", ip, dest)
		}
		dest = netip.AddrPortFrom(dest.Addr().Unmap(), dest.Port())
	}
	port, uc, ln, err := s.r.openLeg(ip, t)
	if err != nil {
		return nil, err
	}
	log := s.log.With().Str("leg", "sink").Str("sink", opts.ID).Uint32("ssrc", ssrc).Logger()
	k := &Sink{
		Leg:     newLeg(t, netip.AddrPortFrom(ip, uint16(port)), log),
		src:     s,
		dest:    dest,
		allowed: opts.AllowedDest,
		refused: opts.OnRefused,
		reverse: opts.Reverse,
		pool:    s.r.pool(ip),
		port:    port,
		ln:      ln,
	}
	for _, ip := range opts.AcceptFrom {
		k.accept = append(k.accept, ip.Unmap())
	}
	k.out = output{leg: &k.Leg, ssrc: ssrc, maxUDP: s.r.cfg.MaxUDPPayload}
	k.in.leg = &k.Leg
	k.ctx, k.cancel = context.WithCancel(context.Background())
	if uc != nil {
		if k.udp, err = newUDPSock(uc); err != nil {
			k.close()
			uc.Close()
			return nil, fmt.Errorf("relay: UDP socket on %s: %w", k.local, err)
		}
		k.out.udp = k.udp
		k.out.dest.Store(&dest)
		k.markReady()
	}
	if err := s.addSink(k); err != nil {
		k.close()
		return nil, err
	}
	if k.reverse {
		// The previous reverse sink, if any, has stopped: s.back is ours.
		s.back.ssrc = opts.ReverseSSRC
	}
	if t != UDP || k.reverse {
		k.wg.Add(1)
		go k.run()
	}
	ev := k.log.Info().Bool("reverse", k.reverse)
	if t != TCPPassive {
		ev = ev.Stringer("dest", dest)
	} else if len(k.accept) > 0 {
		ev = ev.Str("accept_from", fmt.Sprint(k.accept))
	}
	ev.Msg("media sink added")
	return k, nil
}

func (k *Sink) run() {
	defer k.wg.Done()
	var err error
	switch k.transport {
	case UDP:
		err = readUDP(k.udp, &k.in, k.fromUpper, k.src.back.send)
	case TCPPassive:
		err = k.serveTCP(k.acceptFrom(k.ln, k.admit, k.refused))
	case TCPActive:
		err = k.serveTCP(dialRetry(k.ctx, k.local, k.dest, k.src.r.cfg.ConnectTimeout, &k.log))
	}
	if k.ctx.Err() == nil {
		k.fail(err)
	}
}

// admit takes a TCP connection from an accepted IP within the allow-lists.
func (k *Sink) admit(ip netip.Addr) error {
	if len(k.accept) > 0 && !slices.Contains(k.accept, ip) {
		return fmt.Errorf("not one of the peer's addresses %v", k.accept)
	}
	if !Allowed(ip, k.src.r.cfg.AllowedDest, k.allowed) {
		return ErrDestNotAllowed
	}
	return nil
}

func (k *Sink) fromUpper(from netip.AddrPort, _ int64) bool {
	return from.Addr() == k.dest.Addr()
}

func (k *Sink) serveTCP(conn *net.TCPConn, err error) error {
	if err != nil {
		return err
	}
	k.conn.Store(conn)
	if k.ctx.Err() != nil { // close ran before the connection was stored
		conn.Close()
		return nil
	}
	k.out.tcp.Store(conn)
	k.markReady()
	if k.reverse {
		return readFrames(conn, &k.in, k.src.back.send)
	}
	// Nothing is expected from the upper; reading tells when it hangs up.
	if _, err := io.Copy(io.Discard, conn); err != nil {
		return err
	}
	return fmt.Errorf("relay: upper %s closed the media connection", conn.RemoteAddr())
}

// close stops the Sink's goroutine and frees its port. The Source may still
// be writing to it with an older list of sinks: those writes fail quietly on
// the closed socket.
func (k *Sink) close() {
	if !k.closing.CompareAndSwap(false, true) {
		return
	}
	k.cancel()
	if k.udp != nil {
		k.udp.conn.Close()
	}
	if k.ln != nil {
		k.ln.Close()
	}
	if c := k.conn.Load(); c != nil {
		c.Close()
	}
	k.wg.Wait()
	k.pool.free(k.port)
	k.finish()
	st := k.Stats()
	k.log.Info().Uint64("packets", st.Out.Packets).Uint64("dropped", st.Out.Dropped).Msg("media sink closed")
}
