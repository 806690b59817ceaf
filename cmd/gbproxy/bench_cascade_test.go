package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/load"
	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
)

const benchQueries = 50000

// BenchmarkRoutedQueries measures DeviceStatus queries upper→device→upper
// through a gbproxy process (two transactions each way at the proxy per
// query) with the raw-UDP generator playing both ends, against the same
// generator exchanging the same messages directly, in the same run: once
// saturating (64 in flight) for throughput, once lightly loaded (4 in
// flight) for the latency the proxy adds.
func BenchmarkRoutedQueries(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const lightUpper = "44020000002000000001"
	heavy := load.QueryConfig{ProxyID: proxyID, Domain: proxyDomain, DeviceID: "34020000001320000001", Password: devicePass,
		UpperID: upperID, Queries: benchQueries, Concurrency: 64}
	light := heavy
	light.DeviceID, light.UpperID, light.Queries, light.Concurrency = "34020000001320000002", lightUpper, 5000, 4

	var platforms []string
	loads := map[string]*load.QueryLoad{}
	for name, cfg := range map[string]load.QueryConfig{"heavy": heavy, "light": light} {
		q, err := load.NewQueryLoad(cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer q.Close()
		loads[name] = q
		platforms = append(platforms, fmt.Sprintf("{id: %q, address: %q, transport: udp, password: x, keepalive_interval: 60s}", cfg.UpperID, q.UpperAddr()))
	}
	px := startProxyProcess(b, buildProxy(b), "["+strings.Join(platforms, ", ")+"]")
	results := map[string][2]load.QueryResult{} // direct, routed
	for name, cfg := range map[string]load.QueryConfig{"heavy": heavy, "light": light} {
		direct := cfg
		direct.Direct = true
		base, err := load.RunQueries(ctx, direct)
		if err != nil {
			b.Fatal(err)
		}
		q := loads[name]
		if err := q.SetProxy(px.lower, px.upper); err != nil {
			b.Fatal(err)
		}
		if err := q.WaitRegistered(ctx); err != nil {
			b.Fatal(err)
		}
		routed, err := q.Run(ctx)
		if err != nil {
			b.Fatal(err)
		}
		results[name] = [2]load.QueryResult{base, routed}
		if routed.Failed > 0 || routed.WrongSN > 0 {
			b.Errorf("%s: %d routed queries failed (%v), %d answers with a wrong SN", name, routed.Failed, routed.FailReasons, routed.WrongSN)
		}
	}
	h, l := results["heavy"], results["light"]
	b.ReportMetric(h[1].Rate, "queries/s")
	b.ReportMetric(h[0].Rate, "direct-queries/s")
	b.ReportMetric(h[1].Rate/h[0].Rate, "ratio")
	b.ReportMetric(float64(l[1].P50-l[0].P50)/1e6, "added-p50-ms")
	b.ReportMetric(float64(l[1].P99-l[0].P99)/1e6, "added-p99-ms")
	b.ReportMetric(0, "ns/op")
	summary := fmt.Sprintf("routed DeviceStatus queries: %d with 64 in flight: %.0f/s through gbproxy vs %.0f/s direct (ratio %.2f; goal ≥ 10000/s), "+
		"p50 %v p99 %v (direct %v %v); %d with 4 in flight: p50 %v p99 %v vs direct p50 %v p99 %v, added p50 %v p99 %v (goal p99 ≤ 2 ms); "+
		"failed %d, retransmits %d, wrong SN %d",
		heavy.Queries, h[1].Rate, h[0].Rate, h[1].Rate/h[0].Rate, h[1].P50, h[1].P99, h[0].P50, h[0].P99,
		light.Queries, l[1].P50, l[1].P99, l[0].P50, l[0].P99, l[1].P50-l[0].P50, l[1].P99-l[0].P99,
		h[1].Failed+l[1].Failed, h[1].Retransmits+l[1].Retransmits, h[1].WrongSN+l[1].WrongSN)
	b.Log(summary)
	fmt.Println(summary)
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
