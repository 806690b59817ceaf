package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/gbnote"
	"github.com/gbproxy/gbproxy/cmd/gbsim/load"
	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
)

const benchQueries = 50000

// BenchmarkRoutedQueries measures DeviceStatus queries upper→device→upper
// through a gbproxy process (two transactions each way at the proxy per
// query) with the raw-UDP generator playing both ends, against the same
// generator exchanging the same messages directly, in the same run: once
// saturating (64 in flight) for throughput, once lightly loaded (4 in
// flight) for the latency the proxy adds. "note-require" repeats it with
// signalling_digest require on the upper platform and the device (every
// request both ways signed and verified: Date and Note) against "off".
// Each has a gbproxy process of its own, stopped before the next starts:
// the transactions sipgo keeps 32 s after a run would slow the next one.
func BenchmarkRoutedQueries(b *testing.B) {
	heavy := load.QueryConfig{ProxyID: proxyID, Domain: proxyDomain, DeviceID: "34020000001320000001", Password: devicePass,
		UpperID: upperID, Queries: benchQueries, Concurrency: 64}
	light := heavy
	light.DeviceID, light.UpperID, light.Queries, light.Concurrency = "34020000001320000002", "44020000002000000001", 5000, 4
	var off, signed [2][2]load.QueryResult // heavy, light × direct, routed
	b.Run("off", func(b *testing.B) {
		off = routedQueries(b, heavy, light)
		h, l := off[0], off[1]
		b.Logf("%d with 64 in flight: %.0f/s through gbproxy vs %.0f/s direct (ratio %.2f; goal ≥ 10000/s), p50 %v p99 %v (direct %v %v); "+
			"%d with 4 in flight: p50 %v p99 %v vs direct p50 %v p99 %v, added p50 %v p99 %v (goal p99 ≤ 2 ms); retransmits %d",
			heavy.Queries, h[1].Rate, h[0].Rate, h[1].Rate/h[0].Rate, h[1].P50, h[1].P99, h[0].P50, h[0].P99,
			light.Queries, l[1].P50, l[1].P99, l[0].P50, l[0].P99, l[1].P50-l[0].P50, l[1].P99-l[0].P99, h[1].Retransmits+l[1].Retransmits)
	})
	note := gbnote.Config{Seed: "bench-note-seed", Algorithm: gbnote.MD5}
	heavy.Note, light.Note = note, note
	b.Run("note-require", func(b *testing.B) {
		signed = routedQueries(b, heavy, light)
		h, l := signed[0], signed[1]
		b.ReportMetric(h[1].Rate/off[0][1].Rate, "ratio-to-off")
		b.ReportMetric(float64(l[1].P50-off[1][1].P50)/1e6, "added-to-off-p50-ms")
		b.ReportMetric(float64(l[1].P99-off[1][1].P99)/1e6, "added-to-off-p99-ms")
		b.Logf("%s Note on every request both ways, %d with 64 in flight: %.0f/s through gbproxy (%.2f× off's %.0f/s; direct signed %.0f/s), p50 %v p99 %v; "+
			"%d with 4 in flight: p50 %v p99 %v vs off p50 %v p99 %v (added p50 %v p99 %v); retransmits %d",
			note.Algorithm, heavy.Queries, h[1].Rate, h[1].Rate/off[0][1].Rate, off[0][1].Rate, h[0].Rate, h[1].P50, h[1].P99,
			light.Queries, l[1].P50, l[1].P99, off[1][1].P50, off[1][1].P99, l[1].P50-off[1][1].P50, l[1].P99-off[1][1].P99, h[1].Retransmits+l[1].Retransmits)
	})
}

// routedQueries runs heavy and light, directly and then through a gbproxy
// process of their own (with signalling_digest require toward both when
// they sign), and reports the common metrics.
func routedQueries(b *testing.B, heavy, light load.QueryConfig) (res [2][2]load.QueryResult) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfgs := [2]load.QueryConfig{heavy, light}
	var loads [2]*load.QueryLoad
	var platforms, devices []string
	for i, cfg := range cfgs {
		q, err := load.NewQueryLoad(cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer q.Close()
		loads[i] = q
		digest := ""
		if cfg.Note.Seed != "" {
			digest = fmt.Sprintf(", signalling_digest: require, note_seed: %q, note_algorithm: %s", cfg.Note.Seed, cfg.Note.Algorithm)
			devices = append(devices, fmt.Sprintf("{id: %q%s}", cfg.DeviceID, digest))
		}
		platforms = append(platforms, fmt.Sprintf("{id: %q, address: %q, transport: udp, password: x, keepalive_interval: 60s%s}", cfg.UpperID, q.UpperAddr(), digest))
	}
	oneAddressForAll(b)
	px := startProxyProcess(b, buildProxy(b), "["+strings.Join(platforms, ", ")+"]", "devices: ["+strings.Join(devices, ", ")+"]")
	// Light first: its latencies are then read on a process not yet
	// holding heavy's finished transactions.
	for _, i := range []int{1, 0} {
		cfg := cfgs[i]
		direct := cfg
		direct.Direct = true
		base, err := load.RunQueries(ctx, direct)
		if err != nil {
			b.Fatal(err)
		}
		if err := loads[i].SetProxy(px.lower, px.upper); err != nil {
			b.Fatal(err)
		}
		if err := loads[i].WaitRegistered(ctx); err != nil {
			b.Fatal(err)
		}
		routed, err := loads[i].Run(ctx)
		if err != nil {
			b.Fatal(err)
		}
		res[i] = [2]load.QueryResult{base, routed}
		if routed.Failed > 0 || routed.WrongSN > 0 {
			b.Errorf("%d in flight: %d routed queries failed (%v), %d answers with a wrong SN", cfg.Concurrency, routed.Failed, routed.FailReasons, routed.WrongSN)
		}
	}
	h, l := res[0], res[1]
	b.ReportMetric(h[1].Rate, "queries/s")
	b.ReportMetric(h[0].Rate, "direct-queries/s")
	b.ReportMetric(h[1].Rate/h[0].Rate, "ratio")
	b.ReportMetric(float64(l[1].P50)/1e6, "p50-ms")
	b.ReportMetric(float64(l[1].P99)/1e6, "p99-ms")
	b.ReportMetric(float64(l[1].P50-l[0].P50)/1e6, "added-p50-ms")
	b.ReportMetric(float64(l[1].P99-l[0].P99)/1e6, "added-p99-ms")
	b.ReportMetric(0, "ns/op")
	return res
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
