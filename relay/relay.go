// Package relay forwards RTP media between a device-side leg and one or more
// upper-side legs, as a GB/T 28181 cascade needs: the SSRC is rewritten to
// each receiver's value, sequence numbers stay continuous across sender
// restarts, each leg may be UDP, TCP passive or TCP active (RFC 4571
// framing), packets too large for a UDP datagram on an Ethernet path (only
// TCP-framed ones can be) are split for UDP receivers, one device stream can
// feed many receivers, and a receiver joining a running PS stream starts at
// its last key frame.
//
// A Source is a receive leg; each Sink added to it is a send leg with its own
// SSRC and numbering. Nothing in the relay depends on RTP timestamps (some
// devices step them in milliseconds). The owner (the B2BUA) decides the
// lifetime: it closes Sources, removes Sinks, and watches Done/OnIdle.
//
// Reverse media (two-way audio) is either a Sink with Reverse set (the upper
// sends back on the sink's leg and the relay forwards it to the device on
// the source's leg) or, when the SDP gives it its own ports, simply a Source
// on the upper side with a Sink toward the device.
package relay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Config sets the relay's ports and limits.
type Config struct {
	// PortMin and PortMax bound the RTP ports of every leg; only even ports
	// are used. Each bind IP has its own pool over this range.
	PortMin, PortMax int
	// IdleTimeout is how long a Source may receive nothing before its
	// OnIdle hook runs; 0 disables the watch.
	IdleTimeout time.Duration
	// MaxUDPPayload is the largest RTP packet sent whole on a UDP leg; a
	// larger one that arrived over TCP is split into several RTP packets
	// instead of IP fragments. A packet that arrived as a UDP datagram is
	// never split: it already crossed a UDP path, and splitting the common
	// 1,412-byte packets would double the packet rate. Default 1472 (a
	// 1,500-byte Ethernet MTU less the IPv4 and UDP headers).
	MaxUDPPayload int
	// ConnectTimeout bounds the retries of a TCP-active leg: some uppers open
	// their listener only after their 200 OK. Default 5 s.
	ConnectTimeout time.Duration
	// RelatchAfter is how long a latched UDP peer must be silent before
	// another address may take over (a device behind NAT that restarted its
	// stream from a new port). Default 2 s.
	RelatchAfter time.Duration
	// AllowedDest, when not empty, lists the only networks the relay sends
	// media to or dials, so that forged SDP cannot aim it at a third party.
	AllowedDest []netip.Prefix
	// Logger receives one line per leg event; the relay adds no global state.
	Logger zerolog.Logger
}

const (
	defaultMaxUDPPayload  = 1472
	defaultConnectTimeout = 5 * time.Second
	defaultRelatchAfter   = 2 * time.Second
	// tcpWriteTimeout bounds a write to a TCP leg whose peer stopped
	// reading: the legs fed by the same source must not stall longer.
	tcpWriteTimeout = 2 * time.Second
	// connectRetryEvery spaces the connect attempts of a TCP-active leg.
	connectRetryEvery = 100 * time.Millisecond
)

// Transport is how one leg carries RTP.
type Transport int

const (
	UDP        Transport = iota // RTP datagrams (SDP RTP/AVP)
	TCPPassive                  // we listen, the peer connects (SDP TCP/RTP/AVP, a=setup:passive)
	TCPActive                   // we connect to the peer (SDP TCP/RTP/AVP, a=setup:active)
)

func (t Transport) String() string {
	switch t {
	case UDP:
		return "udp"
	case TCPPassive:
		return "tcp-passive"
	case TCPActive:
		return "tcp-active"
	}
	return fmt.Sprintf("transport(%d)", int(t))
}

// ErrDestNotAllowed is returned (wrapped) when a leg would send to or dial an
// address outside Config.AllowedDest.
var ErrDestNotAllowed = errors.New("destination not in the relay's allowed list")

// Relay owns the port pools and the open Sources.
type Relay struct {
	cfg Config
	log zerolog.Logger

	mu      sync.Mutex
	pools   map[netip.Addr]*portPool
	sources map[*Source]struct{}
	closed  bool
}

// New checks cfg and returns a relay with no legs.
func New(cfg Config) (*Relay, error) {
	if cfg.PortMin < 1 || cfg.PortMax > 65535 || cfg.PortMin > cfg.PortMax {
		return nil, fmt.Errorf("relay: port range %d-%d is invalid; use 1 <= PortMin <= PortMax <= 65535", cfg.PortMin, cfg.PortMax)
	}
	if cfg.PortMin == cfg.PortMax && cfg.PortMin%2 == 1 {
		return nil, fmt.Errorf("relay: port range %d-%d holds no even port; RTP ports are even", cfg.PortMin, cfg.PortMax)
	}
	if cfg.MaxUDPPayload == 0 {
		cfg.MaxUDPPayload = defaultMaxUDPPayload
	}
	if cfg.MaxUDPPayload < 2*maxFragHeader || cfg.MaxUDPPayload > 65507 {
		return nil, fmt.Errorf("relay: MaxUDPPayload %d is out of range; use %d-65507 (1472 fits a 1,500-byte Ethernet MTU)", cfg.MaxUDPPayload, 2*maxFragHeader)
	}
	if cfg.IdleTimeout < 0 {
		return nil, fmt.Errorf("relay: IdleTimeout %v is negative; use 0 to disable the no-media watch", cfg.IdleTimeout)
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	if cfg.RelatchAfter <= 0 {
		cfg.RelatchAfter = defaultRelatchAfter
	}
	return &Relay{
		cfg:     cfg,
		log:     cfg.Logger.With().Str("component", "relay").Logger(),
		pools:   make(map[netip.Addr]*portPool),
		sources: make(map[*Source]struct{}),
	}, nil
}

// Close closes every Source (and so every Sink). New legs are refused after.
func (r *Relay) Close() {
	r.mu.Lock()
	r.closed = true
	srcs := make([]*Source, 0, len(r.sources))
	for s := range r.sources {
		srcs = append(srcs, s)
	}
	r.mu.Unlock()
	for _, s := range srcs {
		s.Close()
	}
}

// PortsInUse is the number of ports currently taken, over all bind IPs.
func (r *Relay) PortsInUse() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, p := range r.pools {
		n += p.inUse()
	}
	return n
}

func (r *Relay) pool(ip netip.Addr) *portPool {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.pools[ip]
	if !ok {
		p = newPortPool(ip, r.cfg.PortMin, r.cfg.PortMax)
		r.pools[ip] = p
	}
	return p
}

// checkDest refuses an unusable destination, and one outside the relay's
// allowed list or the leg's own (both apply when both are set).
func (r *Relay) checkDest(dest netip.AddrPort, legAllowed []netip.Prefix) error {
	return CheckDest(dest, r.cfg.AllowedDest, legAllowed)
}

// CheckDest refuses an unusable media destination, and one outside any of
// the non-empty allowed lists (wrapping ErrDestNotAllowed), so that a caller
// can refuse a forged SDP before setting anything up.
func CheckDest(dest netip.AddrPort, allowedLists ...[]netip.Prefix) error {
	if !dest.IsValid() || dest.Port() == 0 || dest.Addr().IsUnspecified() {
		return fmt.Errorf("relay: destination %q is not a usable address:port; check the peer's SDP c= and m= lines", dest)
	}
	if !Allowed(dest.Addr(), allowedLists...) {
		return fmt.Errorf("relay: refusing to send media to %s: %w; add its network to the allowed list if it is a real peer", dest, ErrDestNotAllowed)
	}
	return nil
}

// Allowed says whether ip is in every non-empty list.
func Allowed(ip netip.Addr, allowedLists ...[]netip.Prefix) bool {
	ip = ip.Unmap()
	for _, allowed := range allowedLists {
		if len(allowed) > 0 && !slices.ContainsFunc(allowed, func(p netip.Prefix) bool { return p.Contains(ip) }) {
			return false
		}
	}
	return true
}

func parseBindIP(s string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("relay: media bind IP %q is not an IP address: %w", s, err)
	}
	return ip.Unmap(), nil
}

func network(base string, ip netip.Addr) string {
	if ip.Is4() {
		return base + "4"
	}
	return base + "6"
}

// openLeg allocates a port on bindIP and opens the socket t needs there:
// a UDP socket, a TCP listener, or nothing yet for TCP active (the dial binds
// the port later; the pool only checks it is free now).
func (r *Relay) openLeg(bindIP netip.Addr, t Transport) (port int, udp *net.UDPConn, ln *net.TCPListener, err error) {
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return 0, nil, nil, errors.New("relay: closed")
	}
	bind := func(p int) error {
		addr := netip.AddrPortFrom(bindIP, uint16(p))
		switch t {
		case UDP:
			c, err := net.ListenUDP(network("udp", bindIP), net.UDPAddrFromAddrPort(addr))
			if err != nil {
				return err
			}
			udp = c
		case TCPPassive:
			l, err := net.ListenTCP(network("tcp", bindIP), net.TCPAddrFromAddrPort(addr))
			if err != nil {
				return err
			}
			ln = l
		case TCPActive:
			l, err := net.ListenTCP(network("tcp", bindIP), net.TCPAddrFromAddrPort(addr))
			if err != nil {
				return err
			}
			return l.Close()
		default:
			return fmt.Errorf("unknown transport %v", t)
		}
		return nil
	}
	port, err = r.pool(bindIP).alloc(bind)
	return port, udp, ln, err
}

func isClosed(err error) bool { return errors.Is(err, net.ErrClosed) }
