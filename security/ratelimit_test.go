package security

import (
	"fmt"
	"testing"
	"time"
)

func TestRateLimiterBurstAndRate(t *testing.T) {
	l := NewRateLimiter(50, 100, 0)
	t0 := time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)
	allowed := func(key string, now time.Time, n int) int {
		got := 0
		for range n {
			if l.Allow(key, now) {
				got++
			}
		}
		return got
	}
	if got := allowed("127.0.0.2", t0, 150); got != 100 {
		t.Fatalf("burst: %d of 150 allowed at once, want 100", got)
	}
	if got := allowed("127.0.0.3", t0, 5); got != 5 {
		t.Fatalf("another key: %d of 5 allowed, want 5", got)
	}
	if got := allowed("127.0.0.2", t0.Add(100*time.Millisecond), 10); got != 5 {
		t.Fatalf("after 100ms at 50/s: %d allowed, want 5", got)
	}
	if got := allowed("127.0.0.2", t0.Add(10*time.Second), 150); got != 100 {
		t.Fatalf("after a long idle: %d allowed, want the burst of 100 and no more", got)
	}
	// A clock going back refills nothing.
	if got := allowed("127.0.0.2", t0, 10); got != 0 {
		t.Fatalf("clock back: %d allowed, want 0", got)
	}
}

func TestRateLimiterBounded(t *testing.T) {
	const maxKeys = 1000
	l := NewRateLimiter(1, 10, maxKeys)
	now := time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)
	const attacker = "127.0.0.2"
	for range 10 {
		l.Allow(attacker, now)
	}
	// 100,000 spoofed sources while the drained attacker keeps sending: the
	// table stays bounded and the attacker is never handed a fresh bucket.
	for i := range 100_000 {
		now = now.Add(time.Microsecond)
		l.Allow(fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&0xff, i&0xff), now)
		if l.Allow(attacker, now) {
			t.Fatalf("drained key allowed during a flood of new keys (step %d)", i)
		}
	}
	l.mu.Lock()
	n := len(l.buckets)
	l.mu.Unlock()
	if n > maxKeys {
		t.Fatalf("%d keys tracked, cap %d", n, maxKeys)
	}
}

func TestRateLimiterNoAllocForKnownKey(t *testing.T) {
	l := NewRateLimiter(1e6, 10, 0)
	key := fmt.Sprintf("192.0.2.%d", 10) // not a constant: as a key from the wire would be
	now := time.Now()
	l.Allow(key, now)
	if n := testing.AllocsPerRun(1000, func() { l.Allow(key, now) }); n != 0 {
		t.Fatalf("Allow allocates %.1f times per call for a known key", n)
	}
}

func BenchmarkRateLimiterAllow(b *testing.B) {
	l := NewRateLimiter(1e9, 100, 0)
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("10.0.%d.%d", i>>8, i&0xff)
	}
	now := time.Now()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		l.Allow(keys[i&1023], now)
		i++
	}
}
