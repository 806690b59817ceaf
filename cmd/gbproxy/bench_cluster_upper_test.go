package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/load"
)

const (
	clusterSetupCalls = 2000
	clusterSetupConcy = 32
)

// BenchmarkClusterSessionSetup measures live-session set-up when the upper
// calls a channel held by another node of a three-node cluster (the
// registering node forwards the INVITE, signalling only; the owner relays),
// against one gbproxy node in the same run. Same raw-UDP generator, same
// plan; no media flows. On one 2-core machine the figure is the overhead of
// the extra signalling hop, not scaling.
func BenchmarkClusterSessionSetup(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	b.Setenv("GBPROXY_MEDIA_PORT_MIN", "20000")
	b.Setenv("GBPROXY_MEDIA_PORT_MAX", "29999")
	b.Setenv("GBPROXY_MEDIA_NO_MEDIA_TIMEOUT", "10m")
	b.Setenv("GBPROXY_LOG_LEVEL", "warn") // as the single node: no line per call
	oneAddressForAll(b)
	cfg := load.CallConfig{ProxyID: proxyID, Domain: proxyDomain, DeviceID: "34020000001320000001", Password: devicePass,
		UpperID: upperID, Channels: 64, Timeout: 15 * time.Second, DeviceTrying: true, KeepaliveInterval: 20 * time.Second}
	platform := func(l *load.CallLoad) string {
		return fmt.Sprintf("[{id: %q, address: %q, transport: udp, password: x, keepalive_interval: 60s}]", upperID, l.UpperAddr())
	}
	// run calls through the node at upper (registered to the upper, API at
	// upperAPI) channels of the device registered at lower (API httpAddr).
	run := func(l *load.CallLoad, lower, upper, upperAPI, httpAddr string) load.CallResult {
		if err := l.SetProxy(lower, upper); err != nil {
			b.Fatal(err)
		}
		if err := l.Connect(ctx); err != nil {
			b.Fatal(err)
		}
		eventually(b, 30*time.Second, "the upper shared every channel of the device", func() bool {
			var ps []clusterPlatform
			getJSON(b, upperAPI, "/api/v1/platforms", &ps)
			return len(ps) == 1 && ps[0].SharedChannels >= cfg.Channels
		})
		res, err := l.RunPlan(ctx, load.CallPlan{Calls: clusterSetupCalls, Concurrency: clusterSetupConcy})
		if err != nil {
			b.Fatal(err)
		}
		if res.Failed > 0 {
			b.Errorf("%d of %d calls failed: %v", res.Failed, clusterSetupCalls, res.FailReasons)
		}
		checkSessionsGone(b, httpAddr, l.DeviceDialogs, "after the run")
		return res
	}

	single, err := load.NewCallLoad(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(single.Close)
	px := startProxyProcess(b, buildProxy(b), platform(single))
	one := run(single, px.lower, px.upper, px.http, px.http)

	multi, err := load.NewCallLoad(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(multi.Close)
	rig := newClusterRig(b, platform(multi))
	rig.stay = true // the device stays on the node that is not the registering one
	for _, id := range []string{"node-a", "node-b", "node-c"} {
		rig.startNode(id)
	}
	var leader string
	eventually(b, 15*time.Second, "one node registered to the upper", func() bool {
		leader = leaderOf(b, rig.nodes)
		return leader != ""
	})
	owner := "node-a"
	if owner == leader {
		owner = "node-b"
	}
	// The device registers to a node that is not the leader: every call is
	// forwarded.
	three := run(multi, rig.nodes[owner].lower, rig.nodes[leader].upper, rig.nodes[leader].http, rig.nodes[owner].http)

	b.ReportMetric(one.Rate, "setups/s-one-node")
	b.ReportMetric(three.Rate, "setups/s-three-nodes")
	b.ReportMetric(three.Rate/one.Rate, "ratio")
	b.ReportMetric(float64(one.P50.Microseconds())/1000, "p50-ms-one-node")
	b.ReportMetric(float64(three.P50.Microseconds())/1000, "p50-ms-three-nodes")
	b.ReportMetric(float64(one.P99.Microseconds())/1000, "p99-ms-one-node")
	b.ReportMetric(float64(three.P99.Microseconds())/1000, "p99-ms-three-nodes")
}
