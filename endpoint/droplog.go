package endpoint

import (
	"net"
	"net/netip"
	"sync"
	"time"
	"unicode/utf8"
)

// maxQuote bounds how much of a received message a log line quotes.
const maxQuote = 256

// clip is s cut to at most maxQuote bytes, on a rune boundary.
func clip(s string) string {
	if len(s) <= maxQuote {
		return s
	}
	cut := maxQuote
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func clipBytes(b []byte) string {
	if len(b) > maxQuote+utf8.UTFMax {
		b = b[:maxQuote+utf8.UTFMax]
	}
	return clip(string(b))
}

// dropLog bounds the log lines about refused or dropped input, so a flood
// cannot turn into a log flood: at most one line per source and reason per
// interval, and at most maxLines lines per interval overall. A written line
// carries how many were suppressed for its source and reason since the last
// one (the metrics count every event).
type dropLog struct {
	interval time.Duration
	maxLines int

	mu          sync.Mutex
	windowStart time.Time
	lines       int
	sources     map[dropKey]dropState
}

type dropKey struct {
	ip     netip.Addr
	reason string
}

type dropState struct {
	last       time.Time
	suppressed int
}

// maxDropSources bounds the per-source memory; past it the table starts over.
const maxDropSources = 4096

func newDropLog() *dropLog {
	return &dropLog{interval: 5 * time.Second, maxLines: 20, sources: map[dropKey]dropState{}}
}

// allow reports whether a line about reason from ip may be written now, and
// how many were suppressed before it.
func (d *dropLog) allow(ip netip.Addr, reason string, now time.Time) (bool, int) {
	key := dropKey{ip, reason}
	d.mu.Lock()
	defer d.mu.Unlock()
	st, seen := d.sources[key]
	if seen && now.Sub(st.last) < d.interval {
		st.suppressed++
		d.sources[key] = st
		return false, 0
	}
	if now.Sub(d.windowStart) >= d.interval {
		d.windowStart, d.lines = now, 0
	}
	if d.lines >= d.maxLines {
		if seen {
			st.suppressed++
			d.sources[key] = st
		}
		return false, 0
	}
	if !seen && len(d.sources) >= maxDropSources {
		clear(d.sources)
	}
	d.lines++
	d.sources[key] = dropState{last: now}
	return true, st.suppressed
}

// addrIP is the IP of a UDP or TCP address (IPv4-mapped addresses unmapped).
func addrIP(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	return sourceIP(a.String())
}

// sourceIP is the IP of an ip:port string (the zero Addr when it is none).
func sourceIP(hostport string) netip.Addr {
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
