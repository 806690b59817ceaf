package endpoint

import (
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// connLimits applies the caps on accepted TCP/TLS connections and closes
// those not claimed (Endpoint.Claim) within the idle timeout. Connections we
// dial are neither counted nor timed: we opened them for a peer we trust.
type connLimits struct {
	e        *Endpoint
	maxTotal int
	maxPerIP int           // 0: no per-IP cap
	idle     time.Duration // 0: no idle timeout

	mu       sync.Mutex
	total    int
	perIP    map[netip.Addr]int
	accepted map[string]*connState // by remote ip:port
}

type connState struct {
	conn    *trackedConn
	claimed bool
	idle    *time.Timer
}

func newConnLimits(e *Endpoint, opts Options) *connLimits {
	l := &connLimits{e: e, maxTotal: opts.MaxConns, maxPerIP: opts.MaxConnsPerIP, idle: opts.IdleTimeout,
		perIP: map[netip.Addr]int{}, accepted: map[string]*connState{}}
	files := openFileLimit(e.log)
	if l.maxTotal <= 0 {
		// Each zone takes at most a quarter of the file limit, so with both
		// zones full half is left for media ports, files and the API.
		l.maxTotal = int(min(files/4, 1<<20))
	}
	return l
}

// admit counts c in and starts its idle timer, or closes it when it is over
// a cap (nil then).
func (l *connLimits) admit(c net.Conn, onClose func(string)) *trackedConn {
	remote, ip := c.RemoteAddr().String(), addrIP(c.RemoteAddr())
	l.mu.Lock()
	var reason string
	var limit int
	switch {
	case l.total >= l.maxTotal:
		reason, limit = "total_cap", l.maxTotal
	case l.maxPerIP > 0 && l.perIP[ip] >= l.maxPerIP:
		reason, limit = "per_ip_cap", l.maxPerIP
	}
	if reason != "" {
		l.mu.Unlock()
		l.closed(ip, remote, reason, func(ev *zerolog.Event) {
			ev.Int("limit", limit).Msg("TCP connection refused: over the connection cap (raise security.max_conns_per_ip if one address legitimately needs more)")
		})
		c.Close()
		return nil
	}
	l.total++
	l.perIP[ip]++
	st := &connState{}
	st.conn = &trackedConn{Conn: c, onClose: func(r string) {
		l.release(remote, ip, st)
		onClose(r)
	}}
	if l.idle > 0 {
		st.idle = time.AfterFunc(l.idle, func() { l.idleExpired(remote, ip, st) })
	}
	l.accepted[remote] = st
	l.mu.Unlock()
	return st.conn
}

func (l *connLimits) release(remote string, ip netip.Addr, st *connState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perIP[ip]--; l.perIP[ip] <= 0 {
		delete(l.perIP, ip)
	}
	if l.accepted[remote] == st {
		delete(l.accepted, remote)
	}
	if st.idle != nil {
		st.idle.Stop()
	}
}

func (l *connLimits) idleExpired(remote string, ip netip.Addr, st *connState) {
	l.mu.Lock()
	live := !st.claimed && l.accepted[remote] == st
	l.mu.Unlock()
	if !live {
		return
	}
	l.closed(ip, remote, "idle", func(ev *zerolog.Event) {
		ev.Str("idle_timeout", l.idle.String()).Msg("TCP connection closed: no successful REGISTER on it within the idle timeout")
	})
	st.conn.Close()
}

func (l *connLimits) claim(remote string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st := l.accepted[remote]; st != nil {
		st.claimed = true
		if st.idle != nil {
			st.idle.Stop()
		}
	}
}

// closed counts a connection we closed and logs it, bounded per source.
func (l *connLimits) closed(ip netip.Addr, remote, reason string, msg func(*zerolog.Event)) {
	l.e.metrics.Inc("gbproxy_sip_conns_closed_total", "side", l.e.name, "reason", reason)
	if ok, suppressed := l.e.drops.allow(ip, reason, time.Now()); ok {
		msg(l.e.log.Warn().Str("remote", remote).Str("reason", reason).Int("suppressed", suppressed))
	}
}

// acceptFailed logs a failed accept (bounded) and waits delay; false when
// the endpoint closed meanwhile.
func (l *connLimits) acceptFailed(err error, delay time.Duration) bool {
	l.e.metrics.Inc("gbproxy_sip_conns_closed_total", "side", l.e.name, "reason", "accept_error")
	if ok, suppressed := l.e.drops.allow(netip.Addr{}, "accept_error", time.Now()); ok {
		l.e.log.Error().Err(err).Str("retry_in", delay.String()).Int("suppressed", suppressed).
			Msg("could not accept a TCP connection (out of file descriptors? check ulimit -n and the connection caps)")
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-l.e.done:
		return false
	case <-t.C:
		return true
	}
}

// Claim marks the TCP/TLS connection from remote as authenticated (a
// REGISTER succeeded on it, or it carries a known peer's requests): it is no
// longer closed for idling.
func (e *Endpoint) Claim(remote string) {
	e.conns.claim(remote)
}

// openFileLimit raises the soft limit on open files to the hard limit, as
// operators expect of a server (Go's runtime does so at start, but a
// wrapper may have lowered it again), and returns the soft limit.
func openFileLimit(log zerolog.Logger) uint64 {
	fileLimitOnce.Do(func() {
		var rl syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			fileLimitCur = 1024
			log.Warn().Err(err).Msg("could not read the open file limit; assuming 1024")
			return
		}
		if rl.Cur < rl.Max {
			old := rl.Cur
			rl.Cur = rl.Max
			if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
				rl.Cur = old
				log.Warn().Err(err).Uint64("soft", old).Uint64("hard", rl.Max).Msg("could not raise the open file limit to its hard limit")
			} else {
				log.Info().Uint64("from", old).Uint64("to", rl.Cur).Msg("raised the open file limit to its hard limit")
			}
		}
		fileLimitCur = rl.Cur
	})
	return fileLimitCur
}

var (
	fileLimitOnce sync.Once
	fileLimitCur  uint64
)
