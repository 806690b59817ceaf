package security

import (
	"strings"
	"sync"
	"time"
)

// RateLimiter is a token bucket per key (typically a source IP) with a bounded
// number of keys, for requests from sources that have not authenticated. It
// is safe for concurrent use.
//
// When the table is full a new key evicts the least recently seen of a few
// sampled keys (Go's map iteration starts at a random place), so a flood of
// distinct keys cannot grow memory, and a busy key — which is what is being
// limited — is very unlikely to be evicted and handed a full bucket again.
type RateLimiter struct {
	mu      sync.Mutex
	rate    float64 // tokens per second
	burst   float64
	maxKeys int
	buckets map[string]bucket
}

type bucket struct {
	tokens float64
	last   int64 // Unix nanoseconds of the last refill
}

// rateEvictionSample is how many keys an eviction compares.
const rateEvictionSample = 8

// NewRateLimiter allows rate requests per second per key with bursts of up to
// burst (at least 1), tracking at most maxKeys keys (default 65536 when <= 0).
func NewRateLimiter(rate float64, burst int, maxKeys int) *RateLimiter {
	if maxKeys <= 0 {
		maxKeys = 1 << 16
	}
	return &RateLimiter{
		rate:    max(rate, 0),
		burst:   float64(max(burst, 1)),
		maxKeys: maxKeys,
		buckets: make(map[string]bucket),
	}
}

// Allow takes a token from key's bucket and reports whether there was one.
// It does not allocate for a key already tracked.
func (l *RateLimiter) Allow(key string, now time.Time) bool {
	t := now.UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.maxKeys {
			l.evict()
		}
		// Copy the key: it may point into a received datagram.
		key = strings.Clone(key)
		b = bucket{tokens: l.burst, last: t}
	} else if elapsed := t - b.last; elapsed > 0 { // a clock going back refills nothing
		b.tokens = min(l.burst, b.tokens+float64(elapsed)*l.rate/1e9)
		b.last = t
	}
	allowed := b.tokens >= 1
	if allowed {
		b.tokens--
	}
	l.buckets[key] = b
	return allowed
}

func (l *RateLimiter) evict() {
	var victim string
	oldest := int64(0)
	seen := 0
	for k, b := range l.buckets {
		if seen == 0 || b.last < oldest {
			victim, oldest = k, b.last
		}
		seen++
		if seen == rateEvictionSample {
			break
		}
	}
	delete(l.buckets, victim)
}
