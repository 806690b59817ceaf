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
	benchPlaybacks  = 50  // concurrent playback sessions, each its own device call
	benchInfoRounds = 200 // INFOs each session sends, PAUSE and PLAY alternately
	benchPlayDevice = "34020000001320000001"
)

// BenchmarkPlaybackInfo measures MANSRTSP control of recordings through a
// gbproxy process: 50 playbacks of one camera's recording stream at once,
// and each sends PAUSE and PLAY alternately, waiting for the 200 before the
// next. The same exchange runs direct (the upper simulator calling the
// device simulator registered straight to it) in the same run, so the
// figures show what the proxy adds: INFO round-trip p50/p99, INFO/s, and the
// proxy's RSS per playback session.
func BenchmarkPlaybackInfo(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	devCh := sim.MakeChannels(benchPlayDevice, 1)[0].ID

	// Direct: the device registers to the upper itself.
	du := newUpper(b, "127.0.0.1:0", nil)
	dd := newDevice(b, nil, benchPlayDevice, "udp", 1, func(c *sim.DeviceConfig) {
		c.ServerID, c.Domain, c.Server, c.Password = upperID, upperID[:10], du.Addr(), upperPass
		c.KeepaliveInterval = 20 * time.Second
	})
	if err := dd.Start(ctx); err != nil {
		b.Fatal(err)
	}
	if _, err := du.WaitRegistered(ctx, benchPlayDevice); err != nil {
		b.Fatal(err)
	}
	plays := startPlaybacks(b, ctx, du, benchPlayDevice, devCh)
	direct := exchangeInfo(ctx, plays)
	hangUp(plays)
	dd.Close()
	du.Close()

	// Through gbproxy: the upper as the proxy's upper platform, the device
	// registered to the proxy.
	b.Setenv("GBPROXY_MEDIA_PORT_MIN", "41000") // apart from other benchmarks' proxies
	b.Setenv("GBPROXY_MEDIA_PORT_MAX", "41999")
	oneAddressForAll(b)
	u := newUpper(b, "127.0.0.1:0", nil)
	px := startProxyProcess(b, buildProxy(b),
		fmt.Sprintf("[{id: %q, address: %q, transport: udp, password: %q, keepalive_interval: 60s}]", upperID, u.Addr(), upperPass))
	dev := newDevice(b, nil, benchPlayDevice, "udp", 1, func(c *sim.DeviceConfig) {
		c.Server, c.KeepaliveInterval = px.lower, 20*time.Second
	})
	if err := dev.Start(ctx); err != nil {
		b.Fatal(err)
	}
	if _, err := u.WaitRegistered(ctx, proxyID); err != nil {
		b.Fatal(err)
	}
	eventually(b, 15*time.Second, "the device's channel stored at the proxy", func() bool { return countJSON(b, px.http, "/api/v1/channels") == 1 })
	rssBefore := vmRSSKiB(b, px.pid)
	plays = startPlaybacks(b, ctx, u, proxyID, devCh)
	rssHeld := vmRSSKiB(b, px.pid)
	sessions := countJSON(b, px.http, "/api/v1/sessions")
	routed := exchangeInfo(ctx, plays)
	atDevice := 0 // the 200s the upper got must be the device's
	for _, s := range dev.Streams() {
		if r, ok := dev.Recording(s.CallID); ok {
			atDevice += r.Infos
		}
	}
	hangUp(plays)
	checkSessionsGone(b, px.http, func() int {
		up := 0
		for _, s := range dev.Streams() {
			if !s.Ended {
				up++
			}
		}
		return up
	}, "after hanging up the playbacks")

	if direct.failed > 0 || routed.failed > 0 || sessions != benchPlaybacks || atDevice != benchPlaybacks*benchInfoRounds {
		b.Errorf("INFO exchanges failed: %d through gbproxy (%v), %d direct (%v); the proxy listed %d of %d playbacks; the device answered %d of %d INFOs",
			routed.failed, routed.reasons, direct.failed, direct.reasons, sessions, benchPlaybacks, atDevice, benchPlaybacks*benchInfoRounds)
	}
	perSession := float64(rssHeld-rssBefore) / benchPlaybacks
	b.ReportMetric(routed.rate, "INFO/s")
	b.ReportMetric(direct.rate, "direct-INFO/s")
	b.ReportMetric(routed.rate/direct.rate, "ratio")
	b.ReportMetric(float64(routed.p50)/1e6, "p50-ms")
	b.ReportMetric(float64(routed.p99)/1e6, "p99-ms")
	b.ReportMetric(float64(routed.p50-direct.p50)/1e6, "added-p50-ms")
	b.ReportMetric(float64(routed.p99-direct.p99)/1e6, "added-p99-ms")
	b.ReportMetric(perSession, "KiB/playback")
	b.ReportMetric(0, "ns/op") // one op is the whole run; its time says nothing
	summary := fmt.Sprintf("playback MANSRTSP INFO (PAUSE/PLAY → 200, %d playbacks × %d INFOs, media flowing): through gbproxy %.0f INFO/s p50 %v p99 %v, "+
		"direct %.0f INFO/s p50 %v p99 %v (ratio %.2f, added p50 %v p99 %v); failed %d (direct %d); "+
		"proxy RSS %d → %d KiB with %d playbacks up = %.1f KiB/playback",
		benchPlaybacks, benchInfoRounds, routed.rate, routed.p50, routed.p99, direct.rate, direct.p50, direct.p99,
		routed.rate/direct.rate, routed.p50-direct.p50, routed.p99-direct.p99, routed.failed, direct.failed,
		rssBefore, rssHeld, sessions, perSession)
	b.Log(summary)
	fmt.Println(summary)
}

// startPlaybacks has u play benchPlaybacks recordings of channel from lowerID
// and waits until each streams.
func startPlaybacks(b *testing.B, ctx context.Context, u *sim.Upper, lowerID, channel string) []*sim.Play {
	b.Helper()
	start := time.Now().Add(-time.Hour).Truncate(time.Second)
	var plays []*sim.Play
	for range benchPlaybacks {
		p, err := u.Playback(ctx, lowerID, channel, start, start.Add(30*time.Minute), sim.PlayOptions{})
		if err != nil {
			hangUp(plays)
			b.Fatalf("playback %d of %d via %s: %v", len(plays)+1, benchPlaybacks, lowerID, err)
		}
		plays = append(plays, p)
	}
	for i, p := range plays {
		if _, err := p.Receiver().WaitPackets(ctx, 1); err != nil {
			hangUp(plays)
			b.Fatalf("playback %d via %s: no media: %v", i+1, lowerID, err)
		}
	}
	return plays
}

func hangUp(plays []*sim.Play) {
	var wg sync.WaitGroup
	for _, p := range plays {
		wg.Go(p.Close)
	}
	wg.Wait()
}

type infoResult struct {
	p50, p99 time.Duration
	rate     float64 // INFOs answered 200 a second, all sessions together
	failed   int
	reasons  map[string]int
}

// exchangeInfo has every playback send benchInfoRounds INFOs, PAUSE and
// PLAY alternately, each after the previous one's answer, all playbacks at
// once; it times each round trip.
func exchangeInfo(ctx context.Context, plays []*sim.Play) infoResult {
	var (
		mu   sync.Mutex
		rtts []time.Duration
		res  = infoResult{reasons: map[string]int{}}
		wg   sync.WaitGroup
	)
	begin := time.Now()
	for _, p := range plays {
		wg.Go(func() {
			for i := range benchInfoRounds {
				body := sim.RTSPPause(i + 1)
				if i%2 == 1 {
					body = sim.RTSPPlay(i + 1)
				}
				t0 := time.Now()
				status, _, err := p.Info(ctx, body)
				rtt := time.Since(t0)
				mu.Lock()
				switch {
				case err != nil:
					res.failed++
					res.reasons[err.Error()]++
				case status != 200:
					res.failed++
					res.reasons[fmt.Sprintf("status %d", status)]++
				default:
					rtts = append(rtts, rtt)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(begin)
	slices.Sort(rtts)
	if n := len(rtts); n > 0 {
		res.p50, res.p99 = rtts[n/2].Round(10*time.Microsecond), rtts[min(n-1, n*99/100)].Round(10*time.Microsecond)
	}
	res.rate = float64(len(rtts)) / elapsed.Seconds()
	return res
}
