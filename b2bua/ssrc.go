package b2bua

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
)

// ssrcPool hands out GB/T 28181 SSRCs (§9.2.1 / appendix: ten decimal
// digits): the first is 0 for live and 1 for playback, the next five are
// digits 4-8 of the SIP domain, the last four a serial. A value is never
// handed out again while it is in use.
type ssrcPool struct {
	prefix string // 0 + five domain digits, without the history digit
	mu     sync.Mutex
	inUse  map[uint32]bool
	next   int
}

const ssrcSerials = 10000

var errSSRCExhausted = errors.New("all 10,000 SSRCs of this domain are in use")

func newSSRCPool(domain string) *ssrcPool {
	digits := "00000"
	if len(domain) >= 8 {
		digits = domain[3:8]
	}
	return &ssrcPool{prefix: digits, inUse: map[uint32]bool{}, next: 1}
}

// take returns a free SSRC for live (history false) or playback streams.
func (p *ssrcPool) take(history bool) (uint32, error) {
	kind := "0"
	if history {
		kind = "1"
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for range ssrcSerials {
		serial := p.next
		p.next = p.next%(ssrcSerials-1) + 1 // 0001..9999
		v, _ := strconv.ParseUint(fmt.Sprintf("%s%s%04d", kind, p.prefix, serial), 10, 32)
		if !p.inUse[uint32(v)] {
			p.inUse[uint32(v)] = true
			return uint32(v), nil
		}
	}
	return 0, errSSRCExhausted
}

// hold marks an SSRC chosen elsewhere (an upper's y=) as in use, so that
// we never hand it out too; it reports false when it already was.
func (p *ssrcPool) hold(v uint32) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inUse[v] {
		return false
	}
	p.inUse[v] = true
	return true
}

func (p *ssrcPool) release(v uint32) {
	p.mu.Lock()
	delete(p.inUse, v)
	p.mu.Unlock()
}

func (p *ssrcPool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.inUse)
}

// formatSSRC writes an SSRC the way y= carries it: ten decimal digits.
func formatSSRC(v uint32) string { return fmt.Sprintf("%010d", v) }

// parseSSRC reads a y= value; ok is false when it is not a 32-bit number.
func parseSSRC(s string) (uint32, bool) {
	v, err := strconv.ParseUint(s, 10, 32)
	return uint32(v), err == nil
}
