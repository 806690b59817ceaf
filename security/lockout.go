package security

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// LockoutConfig sets how failed digest attempts lock sources out. Zero fields
// take the defaults. Three counts run side by side so that changing the
// username on every guess, or the source address, does not escape them.
type LockoutConfig struct {
	// MaxFailures failures for one (ID, source IP) within Window lock that
	// pair out for LockFor. Defaults: 5, 5m, 10m.
	MaxFailures int
	Window      time.Duration
	LockFor     time.Duration
	// MaxFailuresPerIP failures from one source IP within Window, whatever
	// the IDs, lock that IP out for LockFor. Default 30.
	MaxFailuresPerIP int
	// MaxFailuresPerID failures for one ID within Window, from any addresses,
	// refuse that ID from every address but its RegisteredIP for LockFor, so
	// that the registered device keeps working. Default 20.
	MaxFailuresPerID int
}

// lockout holds the three failure tables. Only the (ID, IP) record is
// cleared by a success: a valid login must not reset an attacker's count on
// the IP or on the ID.
type lockout struct {
	pair *failureTracker[pairKey]
	ip   *failureTracker[string]
	id   *failureTracker[string]
}

type pairKey struct{ id, ip string }

// maxKeyID bounds the ID part of a key: GB IDs have 20 digits, and a longer
// From user must not make the tables large.
const maxKeyID = 64

func newLockout(cfg LockoutConfig, maxRecords int) *lockout {
	if cfg.MaxFailures <= 0 {
		cfg.MaxFailures = 5
	}
	if cfg.Window <= 0 {
		cfg.Window = 5 * time.Minute
	}
	if cfg.LockFor <= 0 {
		cfg.LockFor = 10 * time.Minute
	}
	if cfg.MaxFailuresPerIP <= 0 {
		cfg.MaxFailuresPerIP = 30
	}
	if cfg.MaxFailuresPerID <= 0 {
		cfg.MaxFailuresPerID = 20
	}
	ownPair := func(k pairKey) pairKey { return pairKey{strings.Clone(k.id), strings.Clone(k.ip)} }
	return &lockout{
		pair: newFailureTracker(cfg.MaxFailures, cfg.Window, cfg.LockFor, maxRecords, ownPair),
		ip:   newFailureTracker(cfg.MaxFailuresPerIP, cfg.Window, cfg.LockFor, maxRecords, strings.Clone),
		id:   newFailureTracker(cfg.MaxFailuresPerID, cfg.Window, cfg.LockFor, maxRecords, strings.Clone),
	}
}

func keyID(id string) string { return id[:min(len(id), maxKeyID)] }

// check returns ErrLockedOut if any lock applies to an attempt for id from ip.
func (l *lockout) check(id, ip, registeredIP string, now time.Time) error {
	if until, locked := l.ip.lockedUntil(ip, now); locked {
		return fmt.Errorf("%w: source %s until %s after repeated failures with any ID",
			ErrLockedOut, ip, until.Format(time.RFC3339))
	}
	k := keyID(id)
	if until, locked := l.pair.lockedUntil(pairKey{k, ip}, now); locked {
		return fmt.Errorf("%w: ID %q from %s until %s after repeated failures",
			ErrLockedOut, clip(id), ip, until.Format(time.RFC3339))
	}
	if until, locked := l.id.lockedUntil(k, now); locked && !sameIP(ip, sourceIP(registeredIP)) {
		return fmt.Errorf("%w: ID %q from %s until %s: too many failures for this ID from several addresses; only its registered address may try",
			ErrLockedOut, clip(id), ip, until.Format(time.RFC3339))
	}
	return nil
}

func (l *lockout) fail(id, ip string, now time.Time) {
	k := keyID(id)
	l.pair.fail(pairKey{k, ip}, now)
	l.ip.fail(ip, now)
	l.id.fail(k, now)
}

func (l *lockout) succeed(id, ip string) { l.pair.reset(pairKey{keyID(id), ip}) }

// sameIP compares two IPs, ignoring the IPv4-in-IPv6 form.
func sameIP(a, b string) bool {
	if a == b {
		return a != ""
	}
	x, errX := netip.ParseAddr(a)
	y, errY := netip.ParseAddr(b)
	return errX == nil && errY == nil && x.Unmap() == y.Unmap()
}

// failureTracker counts failures per key and locks a key out after
// maxFailures within window. A locked record does not change until its lock
// ends, so attempts while locked never extend it. Memory is bounded by max
// records: when full, a sweep drops expired records (at most once a second, as
// it is O(n)), and failing that one record is evicted, preferring one that is
// not locked so that flooding new keys does not easily lift a lockout.
type failureTracker[K comparable] struct {
	mu          sync.Mutex
	maxFailures int
	window      time.Duration
	lockFor     time.Duration
	max         int
	own         func(K) K // copies a key's strings so a record never pins a received message
	records     map[K]failureRecord
	lastSweep   time.Time
}

type failureRecord struct {
	count       int
	windowStart time.Time
	lockedUntil time.Time
}

// evictionSample is how many records an eviction looks at for an unlocked one.
const evictionSample = 8

func newFailureTracker[K comparable](maxFailures int, window, lockFor time.Duration, max int, own func(K) K) *failureTracker[K] {
	return &failureTracker[K]{
		maxFailures: maxFailures,
		window:      window,
		lockFor:     lockFor,
		max:         max,
		own:         own,
		records:     make(map[K]failureRecord),
	}
}

func (t *failureTracker[K]) lockedUntil(k K, now time.Time) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.records[k]
	return r.lockedUntil, ok && now.Before(r.lockedUntil)
}

func (t *failureTracker[K]) fail(k K, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.records[k]
	if ok && now.Before(r.lockedUntil) {
		return
	}
	if !ok {
		if len(t.records) >= t.max {
			t.makeRoom(now)
		}
		k = t.own(k)
	}
	if !ok || now.Sub(r.windowStart) > t.window {
		r = failureRecord{windowStart: now}
	}
	r.count++
	if r.count >= t.maxFailures {
		// A new window starts when the lockout does: once it ends, the key
		// gets maxFailures fresh attempts.
		r = failureRecord{windowStart: now, lockedUntil: now.Add(t.lockFor)}
	}
	t.records[k] = r
}

func (t *failureTracker[K]) reset(k K) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.records, k)
}

func (t *failureTracker[K]) makeRoom(now time.Time) {
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
	var victim K
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
