package cascade

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cluster"
	"github.com/gbproxy/gbproxy/endpoint"
)

// Refusal labels: Verdict.Label values, a fixed set for metrics.
const (
	refusedNotRegistered   = "not_registered"
	refusedWrongSource     = "wrong_source"
	refusedUnknownPlatform = "unknown_platform"
)

const (
	// resolveTimeout bounds one lookup of an upper platform's host name.
	resolveTimeout = 2 * time.Second
)

// lowerGuard binds requests from below to the device that registered: a
// request passes only from where its From user's REGISTER authenticated.
type lowerGuard struct {
	l    *lowerSide
	mode string // lower.bind_source
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
	deviceID, registered, bound, remote := g.l.registry.admit(id, req.Transport(), source, mode, g.l.now())
	if req.Method == sip.REGISTER {
		v := g.l.screenRegister(req)
		v.Known = bound
		return v
	}
	if req.Method == sip.OPTIONS || (registered && g.mode == "off") {
		return endpoint.Verdict{Known: bound}
	}
	switch {
	case !registered:
		return refusal(sip.StatusForbidden, "Forbidden (not registered)", refusedNotRegistered,
			"request from a device that is not registered refused; it must REGISTER first")
	case !bound:
		return refusal(sip.StatusForbidden, "Forbidden (not from the registered address)", refusedWrongSource,
			"request with a registered device's ID from another address than "+remote+" refused (spoofed, or the device moved without registering again)")
	}
	v := g.l.sig.check(req, g.l.deviceSignalling(deviceID))
	v.Hint = "request from a device failed the signalling checks; check the device's note_seed, note_algorithm and clock, or look for a cascade loop"
	v.Known = true
	return v
}

// KnownSource implements endpoint.SourceGuard: an IP no device record
// names is limited before its datagrams are parsed.
func (g *lowerGuard) KnownSource(ip netip.Addr) bool { return g.l.registry.hasDeviceAt(ip) }

// upperGuard binds requests from above to the configured upper platform
// their From names.
type upperGuard struct {
	up *upperSide
}

// Admit implements endpoint.Guard. OPTIONS always passes (a heartbeat).
func (g *upperGuard) Admit(req *sip.Request) endpoint.Verdict {
	if g.up.cluster != nil && cluster.Signed(req) {
		return g.up.admitInternal(req)
	}
	source := req.Source()
	u := g.up.upperOf(req)
	if u == nil && req.To() != nil && req.To().Params.Has("tag") {
		u = g.up.upperAt(req.Transport(), source) // in a dialog we opened to one of its IDs (voice source)
	}
	if u != nil && u.sentFrom(req.Transport(), source) {
		v := g.up.sig.check(req, u.cfg().SignallingConfig)
		v.Hint = "request from the upper platform failed the signalling checks; check its note_seed, note_algorithm and clock, or look for a cascade loop"
		v.Known = true
		return v
	}
	if req.Method == sip.OPTIONS {
		return endpoint.Verdict{}
	}
	if u == nil {
		return refusal(sip.StatusForbidden, "Forbidden (unknown platform)", refusedUnknownPlatform,
			"request from an unconfigured upper platform refused; add it to upper.platforms")
	}
	return refusal(sip.StatusForbidden, "Forbidden (not from the platform's address)", refusedWrongSource,
		"request with upper platform "+u.id+"'s ID from another address refused; if the platform has several signalling nodes, list them in its allow_from")
}

// KnownSource implements endpoint.SourceGuard: the configured platforms'
// addresses, allow_from networks and our connections to them.
func (g *upperGuard) KnownSource(ip netip.Addr) bool {
	for _, u := range g.up.upperList() {
		if u.sources.admits(ip, u.cfg().allowFrom) || u.onConnFrom(ip) {
			return true
		}
	}
	return false
}

func refusal(code int, reason, label, hint string) endpoint.Verdict {
	v := endpoint.Refuse(code, reason)
	v.Label, v.Hint = label, hint
	return v
}

// boundSource reports whether a request that came over transport from
// source is from where a device registered (regTransport, regRemote). Over
// TCP/TLS only its own connection counts; over UDP mode decides (ip: same
// IP, any port; ip-port: same address).
func boundSource(mode, regTransport, regRemote, transport, source string) bool {
	if endpoint.ConnOriented(regTransport) {
		return strings.EqualFold(transport, regTransport) && source == regRemote
	}
	if mode == "ip-port" {
		return strings.EqualFold(transport, "UDP") && source == regRemote
	}
	return strings.EqualFold(transport, "UDP") && hostOf(source) == hostOf(regRemote)
}

// hostOf is the host part of host:port (brackets of IPv6 kept), without
// allocating: it runs for every request.
func hostOf(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		return addr[:i]
	}
	return addr
}

// platformSources are the addresses an upper platform's requests may come
// from besides our own connection to it and its allow_from networks: its
// address host, resolved at start and on each new registration.
type platformSources struct {
	hosts atomic.Pointer[[]netip.Addr]
}

// admits reports whether ip is the platform's host or in allowFrom.
func (p *platformSources) admits(ip netip.Addr, allowFrom []netip.Prefix) bool {
	if hosts := p.hosts.Load(); hosts != nil {
		for _, h := range *hosts {
			if h == ip {
				return true
			}
		}
	}
	for _, pfx := range allowFrom {
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
	if endpoint.ConnOriented(transport) {
		u.mu.Lock()
		ours := source == u.remote
		u.mu.Unlock()
		if ours {
			return true
		}
	}
	ap, err := netip.ParseAddrPort(source)
	return err == nil && u.sources.admits(ap.Addr().Unmap(), u.cfg().allowFrom)
}

// onConnFrom reports whether our TCP/TLS connection to the platform is to ip.
func (u *upperClient) onConnFrom(ip netip.Addr) bool {
	u.mu.Lock()
	remote := u.remote
	u.mu.Unlock()
	ap, err := netip.ParseAddrPort(remote)
	return err == nil && ap.Addr().Unmap() == ip
}

// resolveSources looks the platform's address host (and a redirect's) up
// again. A failed lookup keeps what was known and is logged: requests from
// the platform are refused until it resolves.
func (u *upperClient) resolveSources(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	var hosts []netip.Addr
	for _, addr := range []string{u.cfg().Address, u.target().addr} {
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
