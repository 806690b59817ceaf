package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
)

const (
	benchQueries     = 20000
	benchConcurrency = 64
)

// BenchmarkRoutedQueries measures DeviceStatus queries upper→device→upper
// through gbproxy (each is two transactions each way at the proxy), and the
// same exchange between the same simulators with no proxy, in the same run.
func BenchmarkRoutedQueries(b *testing.B) {
	const devID = "34020000001320000001"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// Direct: the device registers to the upper simulator itself.
	quiet := func(c *sim.UpperConfig) { c.QuietPeriod = 5 * time.Second } // loss under load costs a retransmit, not a failure
	direct := newUpper(b, "127.0.0.1:0", quiet)
	dd := newDevice(b, nil, devID, "udp", 1, func(c *sim.DeviceConfig) {
		c.Server, c.ServerID, c.Domain, c.Password = direct.Addr(), upperID, upperID[:10], upperPass
		c.KeepaliveInterval = time.Minute
	})
	if err := dd.Start(ctx); err != nil {
		b.Fatal(err)
	}
	base := runQueries(b, ctx, direct, devID, devID)
	dd.Close()

	up := newUpper(b, "127.0.0.1:0", quiet)
	p := startProxy(b, "", upperPlatformYAML(up.Addr(), "udp")+"\nlower:\n  listen: \"127.0.0.1:0\"\n  keepalive_interval: 60s\n")
	pd := newDevice(b, p, devID, "udp", 1, func(c *sim.DeviceConfig) { c.KeepaliveInterval = time.Minute })
	if err := pd.Start(ctx); err != nil {
		b.Fatal(err)
	}
	if _, err := up.WaitRegistered(ctx, proxyID); err != nil {
		b.Fatal(err)
	}
	eventually(b, 5*time.Second, "device online at the proxy", func() bool { d, ok := p.device(devID); return ok && d.Online })
	routed := runQueries(b, ctx, up, proxyID, devID)

	b.ReportMetric(routed.rate, "queries/s")
	b.ReportMetric(base.rate, "direct-queries/s")
	b.ReportMetric(routed.rate/base.rate, "ratio")
	b.ReportMetric(float64(routed.p50-base.p50)/1e6, "added-p50-ms")
	b.ReportMetric(float64(routed.p99-base.p99)/1e6, "added-p99-ms")
	b.ReportMetric(0, "ns/op")
	summary := fmt.Sprintf("routed DeviceStatus queries, %d with %d in flight: %.0f/s through gbproxy vs %.0f/s direct (ratio %.2f; goal ≥ 10000/s); "+
		"latency p50 %v p99 %v vs direct p50 %v p99 %v: added p50 %v p99 %v (goal p99 ≤ 2 ms); failures %d (direct %d)",
		benchQueries, benchConcurrency, routed.rate, base.rate, routed.rate/base.rate, routed.p50, routed.p99, base.p50, base.p99,
		routed.p50-base.p50, routed.p99-base.p99, routed.failed, base.failed)
	b.Log(summary)
	fmt.Println(summary)
	if routed.failed > 0 {
		b.Errorf("%d routed queries failed", routed.failed)
	}
}

type queryRun struct {
	rate     float64
	p50, p99 time.Duration
	failed   int
}

// runQueries sends benchQueries DeviceStatus queries for target to lowerID,
// benchConcurrency at a time, and times each until its Response arrived.
func runQueries(b *testing.B, ctx context.Context, up *sim.Upper, lowerID, target string) queryRun {
	b.Helper()
	lat := make([]time.Duration, benchQueries)
	var failed sync.Map
	var wg sync.WaitGroup
	next := make(chan int, benchQueries)
	for i := range benchQueries {
		next <- i
	}
	close(next)
	start := time.Now()
	for range benchConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				t0 := time.Now()
				ans, err := up.Request(ctx, lowerID, "Query", "DeviceStatus", target)
				lat[i] = time.Since(t0)
				if err != nil || ans.Status != 200 || !ans.Complete {
					failed.Store(i, err)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	run := queryRun{rate: benchQueries / elapsed.Seconds(), p50: lat[len(lat)/2], p99: lat[len(lat)*99/100]}
	failed.Range(func(any, any) bool { run.failed++; return true })
	return run
}

// BenchmarkCatalog20k times a 20,000-channel catalog from gbproxy to an
// upper platform over UDP and over TCP.
func BenchmarkCatalog20k(b *testing.B) {
	const n, devID = 20000, "34020000001320000001"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	overUDP := newUpper(b, "127.0.0.1:0", nil)
	const tcpUpper = "44020000002000000001"
	overTCP := newUpper(b, "127.0.0.1:0", func(c *sim.UpperConfig) { c.ID, c.Domain = tcpUpper, tcpUpper[:10] })
	p := startProxy(b, "", twoPlatformsYAML(overUDP.Addr(), tcpUpper, overTCP.Addr()))
	dev := newDevice(b, p, devID, "tcp", n, func(c *sim.DeviceConfig) { c.CatalogPerMessage = 50; c.KeepaliveInterval = time.Minute })
	if err := dev.Start(ctx); err != nil {
		b.Fatal(err)
	}
	eventually(b, time.Minute, "20,000 channels stored", func() bool { return len(p.channels(devID)) == n })
	times := map[string]time.Duration{}
	for name, u := range map[string]*sim.Upper{"udp": overUDP, "tcp": overTCP} {
		id := proxyID
		if _, err := u.WaitRegistered(ctx, id); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		items, sum, err := u.QueryCatalog(ctx, id)
		times[name] = time.Since(start)
		if err != nil || len(items) != n || sum != n {
			b.Fatalf("catalog over %s: %d items, SumNum %d: %v", name, len(items), sum, err)
		}
	}
	b.ReportMetric(times["udp"].Seconds(), "udp-s")
	b.ReportMetric(times["tcp"].Seconds(), "tcp-s")
	b.ReportMetric(0, "ns/op")
	summary := fmt.Sprintf("20,000-channel catalog to an upper platform: UDP %v (complete), TCP %v (goal < 10 s); a peer sending one channel per MESSAGE every 50 ms needs ~17 min",
		times["udp"].Round(time.Millisecond), times["tcp"].Round(time.Millisecond))
	b.Log(summary)
	fmt.Println(summary)
}

// twoPlatformsYAML registers upward to the UDP upper (upperID) and a TCP one.
func twoPlatformsYAML(udpAddr, tcpID, tcpAddr string) string {
	return fmt.Sprintf(`
upper:
  listen: "127.0.0.1:0"
  platforms:
    - {id: %q, address: %q, transport: udp, password: %q, keepalive_interval: 60s, retry_interval: 300ms}
    - {id: %q, address: %q, transport: tcp, password: %q, keepalive_interval: 60s, retry_interval: 300ms}
`, upperID, udpAddr, upperPass, tcpID, tcpAddr, upperPass)
}
