package relay

import (
	"fmt"
	"net/netip"
	"sync"
)

// portPool hands out even RTP ports of [min, max] on one bind IP. A port stays
// taken until freed, even if its socket is already closed, so that a port
// announced in SDP is never given to a second session meanwhile.
type portPool struct {
	ip       netip.Addr
	min, max int // both even
	mu       sync.Mutex
	next     int
	used     map[int]bool
}

func newPortPool(ip netip.Addr, min, max int) *portPool {
	min += min & 1
	max -= max & 1
	return &portPool{ip: ip, min: min, max: max, next: min, used: make(map[int]bool)}
}

// alloc finds the next free even port on which bind succeeds, starting after
// the last port handed out so that freed ports rest a while before reuse
// (late packets of an old session then do not reach a new one). Ports that
// fail to bind (taken by another program) are skipped.
func (p *portPool) alloc(bind func(port int) error) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := (p.max-p.min)/2 + 1
	var lastErr error
	for i := 0; i < n; i++ {
		port := p.next
		p.next += 2
		if p.next > p.max {
			p.next = p.min
		}
		if p.used[port] {
			continue
		}
		if err := bind(port); err != nil {
			lastErr = err
			continue
		}
		p.used[port] = true
		return port, nil
	}
	if lastErr != nil {
		return 0, fmt.Errorf("relay: no RTP port of %d-%d on %s could be bound (last error: %w); widen the port range or free the ports", p.min, p.max, p.ip, lastErr)
	}
	return 0, fmt.Errorf("relay: all %d RTP ports of %d-%d on %s are in use; widen the port range or end sessions", n, p.min, p.max, p.ip)
}

func (p *portPool) free(port int) {
	p.mu.Lock()
	delete(p.used, port)
	p.mu.Unlock()
}

func (p *portPool) inUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.used)
}
