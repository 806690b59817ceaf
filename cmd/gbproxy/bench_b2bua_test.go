package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/load"
)

const (
	setupHeavyCalls = 5000 // 64 in flight: throughput
	setupLightCalls = 1000 // 4 in flight: the latency the proxy adds
	setupHeld       = 1000 // sessions held up for the memory figure
	setupReuseCalls = 5000 // 64 in flight on 64 channels
	// setupIdle outlasts sipgo's 64·T1 transaction lifetime, as benchIdle.
	setupIdle = 35 * time.Second
)

// BenchmarkSessionSetup measures live-session set-up through a gbproxy
// process: the raw-UDP generator plays the upper platform (INVITE, ACK, BYE)
// and the device (registered with digest, a 1,000-channel catalog, 200 OK
// with an SDP answer to the proxy's own INVITE; no media flows), against
// the same generator's upper calling its device directly in the same run.
// It also holds 1,000 established sessions to read the proxy's RSS per
// session, and checks that sessions and relay ports all come back.
func BenchmarkSessionSetup(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	// Two relay ports (device side, upper side) per session: room for 2,500.
	b.Setenv("GBPROXY_MEDIA_PORT_MIN", "20000")
	b.Setenv("GBPROXY_MEDIA_PORT_MAX", "29999")
	b.Setenv("GBPROXY_MEDIA_NO_MEDIA_TIMEOUT", "10m") // no media flows
	cfg := load.CallConfig{ProxyID: proxyID, Domain: proxyDomain, DeviceID: "34020000001320000001", Password: devicePass,
		UpperID: upperID, Channels: setupHeld, Timeout: 15 * time.Second, DeviceTrying: true, KeepaliveInterval: 20 * time.Second}
	// Closed after the proxy has stopped (cleanups run last-in first-out),
	// so that its unregistration is answered.
	l, err := load.NewCallLoad(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(l.Close)
	direct := cfg
	direct.Direct, direct.Channels = true, 64
	dl, err := load.NewCallLoad(direct)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(dl.Close)

	oneAddressForAll(b)
	px := startProxyProcess(b, buildProxy(b),
		fmt.Sprintf("[{id: %q, address: %q, transport: udp, password: x, keepalive_interval: 60s}]", upperID, l.UpperAddr()))
	if err := l.SetProxy(px.lower, px.upper); err != nil {
		b.Fatal(err)
	}
	if err := l.Connect(ctx); err != nil {
		b.Fatal(err)
	}
	eventually(b, 30*time.Second, "the device's 1,000 channels stored", func() bool { return countJSON(b, px.http, "/api/v1/channels") >= setupHeld })

	// Memory first, on a proxy that has not made a call yet.
	time.Sleep(2 * time.Second)
	rssBefore := vmRSSKiB(b, px.pid)
	held, err := l.RunPlan(ctx, load.CallPlan{Calls: setupHeld, Concurrency: 64, Hold: true})
	if err != nil {
		b.Fatal(err)
	}
	rssHeld := vmRSSKiB(b, px.pid)
	sessionsHeld := countJSON(b, px.http, "/api/v1/sessions")
	portsHeld := metricValue(b, px.http, "gbproxy_relay_ports_in_use")
	if held.Held != setupHeld || sessionsHeld != setupHeld {
		b.Errorf("held %d of %d sessions (failures %v, device %v); the proxy lists %d", held.Held, setupHeld, held.FailReasons, held.DeviceProblems, sessionsHeld)
	}
	time.Sleep(setupIdle)
	rssIdle := vmRSSKiB(b, px.pid)
	sessionsIdle := countJSON(b, px.http, "/api/v1/sessions")
	hung, err := l.HangUp(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if hung.Failed > 0 {
		b.Errorf("hanging up the held sessions: %d BYEs failed: %v", hung.Failed, hung.FailReasons)
	}
	checkSessionsGone(b, px.http, l.DeviceDialogs, "after hanging up the held sessions")

	// Throughput (64 in flight) and latency (4 in flight), each against the
	// direct exchange. A call takes the channel idle longest of 1,000, so a
	// channel is called again long after its last call ended.
	type pair struct{ direct, routed load.CallResult }
	runs := map[string]pair{}
	for _, plan := range []struct {
		name         string
		calls, concy int
	}{{"heavy", setupHeavyCalls, 64}, {"light", setupLightCalls, 4}} {
		base, err := dl.RunPlan(ctx, load.CallPlan{Calls: plan.calls, Concurrency: plan.concy})
		if err != nil {
			b.Fatal(err)
		}
		routed, err := l.RunPlan(ctx, load.CallPlan{Calls: plan.calls, Concurrency: plan.concy})
		if err != nil {
			b.Fatal(err)
		}
		runs[plan.name] = pair{base, routed}
		if routed.Failed > 0 || base.Failed > 0 {
			b.Errorf("%s: %d calls through gbproxy failed (%v), %d direct (%v)", plan.name, routed.Failed, routed.FailReasons, base.Failed, base.FailReasons)
		}
		if routed.DeviceInvites != routed.Setups {
			b.Errorf("%s: %d set-ups through gbproxy but the device got %d INVITEs (each call ends before its channel is called again, so each should reach the device)",
				plan.name, routed.Setups, routed.DeviceInvites)
		}
		checkSessionsGone(b, px.http, l.DeviceDialogs, "after the "+plan.name+" run")
	}
	// Each of 64 channels called again as soon as its call ended: the new
	// INVITE meets the old call's teardown. Sharing the old device stream
	// is fine; a call answered and then ended by the proxy is not.
	reuse, err := l.RunPlan(ctx, load.CallPlan{Calls: setupReuseCalls, Concurrency: 64, Channels: 64})
	if err != nil {
		b.Fatal(err)
	}
	if reuse.Failed > 0 || reuse.EndedByPeer > 0 {
		b.Errorf("channels called again at once: %d of %d calls failed (%v), %d ended by the proxy's BYE right after set-up; "+
			"%d set-ups reached the device (%d shared the device stream of the channel's previous call, being torn down)",
			reuse.Failed, setupReuseCalls, reuse.FailReasons, reuse.EndedByPeer, reuse.DeviceInvites, reuse.Setups-reuse.DeviceInvites)
	}
	checkSessionsGone(b, px.http, l.DeviceDialogs, "after the channel-reuse run")
	if p := l.DeviceProblemsSeen(); len(p) > 0 {
		b.Errorf("the device found fault with the proxy: %v", p)
	}

	h, lt := runs["heavy"], runs["light"]
	perSession := float64(rssIdle-rssBefore) / float64(max(held.Held, 1))
	perSessionNow := float64(rssHeld-rssBefore) / float64(max(held.Held, 1))
	b.ReportMetric(h.routed.Rate, "setups/s")
	b.ReportMetric(h.direct.Rate, "direct-setups/s")
	b.ReportMetric(h.routed.Rate/h.direct.Rate, "ratio")
	b.ReportMetric(float64(lt.routed.P50-lt.direct.P50)/1e6, "added-p50-ms")
	b.ReportMetric(float64(lt.routed.P99-lt.direct.P99)/1e6, "added-p99-ms")
	b.ReportMetric(perSession, "KiB/session")
	b.ReportMetric(0, "ns/op")
	summary := fmt.Sprintf("live session set-up (INVITE→200 OK→ACK, then BYE): %d calls with 64 in flight: %.0f/s through gbproxy vs %.0f/s direct "+
		"(ratio %.3f; goal ≥ 200/s), p50 %v p99 %v (direct %v %v), retransmits %d; %d calls with 4 in flight: p50 %v p99 %v vs direct %v %v, "+
		"added p50 %v p99 %v; %d sessions held: set up at %.0f/s (p50 %v p99 %v), proxy lists %d, %v relay ports; RSS %d → %d KiB (%.1f KiB/session) → %d KiB after %v idle "+
		"(%d still listed) = %.1f KiB/session (goal ≤ 64); hung up at %.0f BYE/s (p50 %v p99 %v); failed %d; "+
		"%d calls on 64 channels called again at once: %.0f/s, %d failed %v, %d ended by the proxy, %d of %d set-ups without a device INVITE",
		setupHeavyCalls, h.routed.Rate, h.direct.Rate, h.routed.Rate/h.direct.Rate, h.routed.P50, h.routed.P99, h.direct.P50, h.direct.P99, h.routed.Retransmits,
		setupLightCalls, lt.routed.P50, lt.routed.P99, lt.direct.P50, lt.direct.P99, lt.routed.P50-lt.direct.P50, lt.routed.P99-lt.direct.P99,
		held.Held, held.Rate, held.P50, held.P99, sessionsHeld, portsHeld, rssBefore, rssHeld, perSessionNow, rssIdle, setupIdle, sessionsIdle, perSession,
		hung.Rate, hung.P50, hung.P99, h.routed.Failed+lt.routed.Failed+held.Failed+hung.Failed,
		setupReuseCalls, reuse.Rate, reuse.Failed, reuse.FailReasons, reuse.EndedByPeer, reuse.Setups-reuse.DeviceInvites, reuse.Setups)
	b.Log(summary)
	fmt.Println(summary)
}

// checkSessionsGone waits for the proxy's sessions, device streams and
// relay ports, and the device's dialogs (as deviceDialogs counts them), to
// come back to zero.
func checkSessionsGone(b *testing.B, httpAddr string, deviceDialogs func() int, when string) {
	b.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		sessions := countJSON(b, httpAddr, "/api/v1/sessions")
		ports := metricValue(b, httpAddr, "gbproxy_relay_ports_in_use")
		streams := metricValue(b, httpAddr, "gbproxy_device_streams")
		dialogs := deviceDialogs()
		if sessions == 0 && ports == 0 && streams == 0 && dialogs == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Errorf("%s: 15 s later the proxy still lists %d sessions, %v device streams, %v relay ports in use; the device has %d dialogs up",
				when, sessions, streams, ports, dialogs)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// countJSON is the length of the JSON array the proxy's API answers at path.
func countJSON(b *testing.B, httpAddr, path string) int {
	b.Helper()
	res, err := http.Get("http://" + httpAddr + path)
	if err != nil {
		b.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	var items []json.RawMessage
	if err := json.NewDecoder(res.Body).Decode(&items); err != nil {
		b.Fatalf("GET %s: %v", path, err)
	}
	return len(items)
}
