package cascade

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/cascade/endpoint"
)

// Refusal labels: Verdict.Label values, a fixed set for metrics.
const (
	refusedNotRegistered   = "not_registered"
	refusedWrongSource     = "wrong_source"
	refusedUnknownPlatform = "unknown_platform"
)

const (
	// refusalLogEvery: at most one refusal line per source IP this often;
	// the next line says how many were left out.
	refusalLogEvery = 5 * time.Second
	// refusalLogSources bounds the sources remembered for that; past it
	// new sources share one budget.
	refusalLogSources = 1024
	// resolveTimeout bounds one lookup of an upper platform's host name.
	resolveTimeout = 2 * time.Second
	// wireQuote caps what a log line quotes from a received message.
	wireQuote = 256
)

// lowerGuard binds requests from below to the device that registered: a
// request passes only from where its From user's REGISTER authenticated.
type lowerGuard struct {
	c    *Cascade
	mode string // lower.bind_source
	logs refusalLog
}

// Admit implements endpoint.Guard. REGISTER always passes (the registrar
// authenticates it) and so does OPTIONS (a heartbeat that changes nothing).
func (g *lowerGuard) Admit(req *sip.Request) endpoint.Verdict {
	id := fromUser(req)
	source := req.Source()
	// With bind_source off anything passes, but only what the ip rule
	// would bind counts as known (exempt from the unauthenticated limits).
	mode := g.mode
	if mode == "off" {
		mode = "ip"
	}
	deviceID, registered, bound, remote := g.c.registry.admit(id, req.Transport(), source, mode, g.c.now())
	if req.Method == sip.REGISTER || req.Method == sip.OPTIONS || (registered && g.mode == "off") {
		return endpoint.Verdict{Known: bound}
	}
	switch {
	case !registered:
		g.logs.refused(g.c.log, req, refusedNotRegistered, id, source, "", "request from a device that is not registered refused; it must REGISTER first")
		return refusal(sip.StatusForbidden, "Forbidden (not registered)", refusedNotRegistered)
	case !bound:
		g.logs.refused(g.c.log, req, refusedWrongSource, id, source, remote, "request with a registered device's ID from another address refused (spoofed, or the device moved without registering again)")
		return refusal(sip.StatusForbidden, "Forbidden (not from the registered address)", refusedWrongSource)
	}
	v := g.c.sig.check(req, g.c.sig.device(deviceID))
	if v.Code != 0 {
		g.logs.refused(g.c.log, req, v.Label, deviceID, source, "", "request from a device failed the signalling checks ("+v.Reason+"); check the device's note_seed/note_algorithm and clock, or a cascade loop")
	}
	v.Known = true
	return v
}

// upperGuard binds requests from above to the configured upper platform
// their From names.
type upperGuard struct {
	c    *Cascade
	logs refusalLog
}

// Admit implements endpoint.Guard. OPTIONS always passes (a heartbeat).
func (g *upperGuard) Admit(req *sip.Request) endpoint.Verdict {
	source := req.Source()
	u := g.c.upperOf(req)
	if u != nil && u.sentFrom(req.Transport(), source) {
		v := g.c.sig.check(req, u.cfg.SignallingConfig)
		if v.Code != 0 {
			g.logs.refused(u.log, req, v.Label, u.cfg.ID, source, "", "request from the upper platform failed the signalling checks ("+v.Reason+"); check its note_seed/note_algorithm and clock, or a cascade loop")
		}
		v.Known = true
		return v
	}
	if req.Method == sip.OPTIONS {
		return endpoint.Verdict{}
	}
	if u == nil {
		g.logs.refused(g.c.log, req, refusedUnknownPlatform, fromUser(req), source, "", "request from an unconfigured upper platform refused; add it to upper.platforms")
		return refusal(sip.StatusForbidden, "Forbidden (unknown platform)", refusedUnknownPlatform)
	}
	g.logs.refused(u.log, req, refusedWrongSource, u.cfg.ID, source, "", "request with an upper platform's ID from another address refused; if the platform has several signalling nodes, list them in its allow_from")
	return refusal(sip.StatusForbidden, "Forbidden (not from the platform's address)", refusedWrongSource)
}

func refusal(code int, reason, label string) endpoint.Verdict {
	v := endpoint.Refuse(code, reason)
	v.Label = label
	return v
}

// boundSource reports whether a request that came over transport from
// source is from where a device registered (regTransport, regRemote). Over
// TCP/TLS only its own connection counts; over UDP mode decides (ip: same
// IP, any port; ip-port: same address).
func boundSource(mode, regTransport, regRemote, transport, source string) bool {
	if connOriented(regTransport) {
		return strings.EqualFold(transport, regTransport) && source == regRemote
	}
	if mode == "ip-port" {
		return strings.EqualFold(transport, "UDP") && source == regRemote
	}
	return strings.EqualFold(transport, "UDP") && hostOf(source) == hostOf(regRemote)
}

func connOriented(transport string) bool {
	return strings.EqualFold(transport, "TCP") || strings.EqualFold(transport, "TLS")
}

// hostOf is the host part of host:port (brackets of IPv6 kept), without
// allocating: it runs for every request.
func hostOf(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		return addr[:i]
	}
	return addr
}

// clip shortens what a log line quotes from the wire.
func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// platformSources are the addresses an upper platform's requests may come
// from besides our own connection to it: its address host (resolved at
// start and on each new registration) and its allow_from networks.
type platformSources struct {
	hosts    atomic.Pointer[[]netip.Addr]
	prefixes []netip.Prefix
}

func (p *platformSources) admits(ip netip.Addr) bool {
	if hosts := p.hosts.Load(); hosts != nil {
		for _, h := range *hosts {
			if h == ip {
				return true
			}
		}
	}
	for _, pfx := range p.prefixes {
		if pfx.Contains(ip) {
			return true
		}
	}
	return false
}

// sentFrom reports whether a request that came over transport from source
// is this platform's: on the connection we registered on, from its address
// host (any port) or from its allow_from.
func (u *upperClient) sentFrom(transport, source string) bool {
	if connOriented(transport) {
		u.mu.Lock()
		ours := source == u.remote
		u.mu.Unlock()
		if ours {
			return true
		}
	}
	ap, err := netip.ParseAddrPort(source)
	return err == nil && u.sources.admits(ap.Addr().Unmap())
}

// resolveSources looks the platform's address host (and a redirect's) up
// again. A failed lookup keeps what was known and is logged: requests from
// the platform are refused until it resolves.
func (u *upperClient) resolveSources(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	var hosts []netip.Addr
	for _, addr := range []string{u.cfg.Address, u.target().addr} {
		host := hostOf(addr)
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		if ip, err := netip.ParseAddr(host); err == nil {
			hosts = append(hosts, ip.Unmap())
			continue
		}
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			u.log.Warn().Err(err).Str("host", host).Msg("upper platform's host name did not resolve; its requests are refused unless allow_from covers them")
			return
		}
		for _, ip := range ips {
			hosts = append(hosts, ip.Unmap())
		}
	}
	u.sources.hosts.Store(&hosts)
}

// refusalLog writes one line per refused request, at most one per source IP
// every refusalLogEvery under a flood, with the count left out meanwhile.
type refusalLog struct {
	mu   sync.Mutex
	seen map[string]*refusalSeen
}

type refusalSeen struct {
	until      time.Time
	suppressed int
}

// allow reports whether a line may be written for ip now, and how many
// were left out since the last one.
func (l *refusalLog) allow(ip string, now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = map[string]*refusalSeen{}
	}
	s := l.seen[ip]
	if s == nil {
		if len(l.seen) >= refusalLogSources {
			for k, old := range l.seen {
				if !now.Before(old.until) {
					delete(l.seen, k)
				}
			}
		}
		if len(l.seen) >= refusalLogSources {
			ip = "*" // many sources at once: they share one budget
			s = l.seen[ip]
		}
		if s == nil {
			l.seen[ip] = &refusalSeen{until: now.Add(refusalLogEvery)}
			return true, 0
		}
	}
	if now.Before(s.until) {
		s.suppressed++
		return false, 0
	}
	n := s.suppressed
	s.until, s.suppressed = now.Add(refusalLogEvery), 0
	return true, n
}

func (l *refusalLog) refused(log zerolog.Logger, req *sip.Request, label, id, source, registered, msg string) {
	ok, suppressed := l.allow(hostOf(source), time.Now())
	if !ok {
		return
	}
	ev := log.Warn().Str("reason", label).Str("method", clip(string(req.Method), 32)).
		Str("from", clip(id, wireQuote)).Str("remote", source).Str("call_id", clip(callIDOf(req), wireQuote))
	if registered != "" {
		ev = ev.Str("registered_remote", registered)
	}
	if suppressed > 0 {
		ev = ev.Int("suppressed", suppressed)
	}
	ev.Msg(msg)
}
