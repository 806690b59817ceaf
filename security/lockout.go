package security

import (
	"sync"
	"time"
)

// failureTracker counts bad-credential results per (username, source IP) and
// locks a pair out after maxFailures within window. Memory is bounded by max
// records: when full, a sweep drops expired records (at most once a second, as
// it is O(n)), and failing that one record is evicted, preferring one that is
// not locked so that flooding new pairs does not easily lift a lockout.
type failureTracker struct {
	mu          sync.Mutex
	maxFailures int
	window      time.Duration
	lockoutFor  time.Duration
	max         int
	records     map[failureKey]failureRecord
	lastSweep   time.Time
}

type failureKey struct{ user, source string }

type failureRecord struct {
	count       int
	windowStart time.Time
	lockedUntil time.Time
}

// evictionSample is how many records an eviction looks at for an unlocked one.
const evictionSample = 8

func newFailureTracker(maxFailures int, window, lockoutFor time.Duration, max int) *failureTracker {
	return &failureTracker{
		maxFailures: maxFailures,
		window:      window,
		lockoutFor:  lockoutFor,
		max:         max,
		records:     make(map[failureKey]failureRecord),
	}
}

func (t *failureTracker) lockedUntil(k failureKey, now time.Time) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.records[k]
	return r.lockedUntil, ok && now.Before(r.lockedUntil)
}

func (t *failureTracker) fail(k failureKey, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.records[k]
	if !ok && len(t.records) >= t.max {
		t.makeRoom(now)
	}
	if !ok || now.Sub(r.windowStart) > t.window {
		r = failureRecord{windowStart: now, lockedUntil: r.lockedUntil}
	}
	r.count++
	if r.count >= t.maxFailures {
		// A new window starts when the lockout does: once it ends, the pair
		// gets maxFailures fresh attempts.
		r = failureRecord{windowStart: now, lockedUntil: now.Add(t.lockoutFor)}
	}
	t.records[k] = r
}

func (t *failureTracker) reset(k failureKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.records, k)
}

func (t *failureTracker) makeRoom(now time.Time) {
	if now.Sub(t.lastSweep) >= time.Second {
		t.lastSweep = now
		for k, r := range t.records {
			if now.Sub(r.windowStart) > t.window && !now.Before(r.lockedUntil) {
				delete(t.records, k)
			}
		}
		if len(t.records) < t.max {
			return
		}
	}
	var victim failureKey
	seen := 0
	for k, r := range t.records {
		victim = k
		seen++
		if !now.Before(r.lockedUntil) || seen == evictionSample {
			break
		}
	}
	delete(t.records, victim)
}
