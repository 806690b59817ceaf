package main

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
)

// BenchmarkChannelList100k: a gbproxy subprocess holding 100,000 channels
// (one simulated NVR over TCP) answers /api/v1/channels?limit=100 — the
// first page repeatedly, then every page by its Link — beside the whole
// unpaged list (the answer before paging existed) as the same-run baseline.
// Goals: a page in < 50 ms; RSS grows by no more than a few MB while paging.
func BenchmarkChannelList100k(b *testing.B) {
	const n, devID = 100000, "34020000001110000001"
	oneAddressForAll(b)
	px := startProxyProcess(b, buildProxy(b), "", "catalog_timeout: 5m")
	ctx := ctxTimeout(b, 10*time.Minute)
	dev := newDevice(b, nil, devID, "tcp", n, func(c *sim.DeviceConfig) {
		c.Server, c.CatalogPerMessage, c.KeepaliveInterval = px.lower, 100, time.Minute
	})
	if err := dev.Start(ctx); err != nil {
		b.Fatal(err)
	}
	base := "http://" + px.http
	get := func(path string) (time.Duration, http.Header, int) {
		start := time.Now()
		res, err := http.Get(base + path)
		if err != nil {
			b.Fatal(err)
		}
		size, err := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		took := time.Since(start)
		if err != nil || res.StatusCode != 200 {
			b.Fatalf("GET %s: %s %v", path, res.Status, err)
		}
		return took, res.Header, int(size)
	}
	eventually(b, 5*time.Minute, "100,000 channels stored", func() bool {
		_, hdr, _ := get("/api/v1/channels?limit=1")
		return hdr.Get("X-Total-Count") == strconv.Itoa(n)
	})

	first := make([]time.Duration, 200)
	for i := range first {
		first[i], _, _ = get("/api/v1/channels?limit=100")
	}
	rssBefore := vmRSSKiB(b, px.pid)
	var pages []time.Duration
	for next := "/api/v1/channels?limit=100"; next != ""; {
		took, hdr, _ := get(next)
		pages = append(pages, took)
		next = ""
		if link := hdr.Get("Link"); link != "" {
			next = strings.TrimSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`)
		}
	}
	rssPaged := vmRSSKiB(b, px.pid)
	whole, _, wholeSize := get("/api/v1/channels")
	rssWhole := vmRSSKiB(b, px.pid)

	p50, p99 := percentile(first, 0.5), percentile(first, 0.99)
	all50, all99 := percentile(pages, 0.5), percentile(pages, 0.99)
	b.ReportMetric(float64(p50)/1e6, "page-p50-ms")
	b.ReportMetric(float64(p99)/1e6, "page-p99-ms")
	b.ReportMetric(float64(whole)/1e6, "whole-list-ms")
	b.ReportMetric(float64(rssPaged-rssBefore)/1024, "paging-rss-MiB")
	b.ReportMetric(float64(rssWhole-rssPaged)/1024, "whole-list-rss-MiB")
	b.ReportMetric(0, "ns/op")
	summary := fmt.Sprintf("100,000 channels: /api/v1/channels?limit=100 first page p50 %v p99 %v (goal < 50 ms); all %d pages by Link p50 %v p99 %v; "+
		"RSS %d → %d KiB while paging (+%d KiB; goal a few MB). Baseline, the whole list unpaged: %v, %d MB, RSS +%d KiB",
		p50.Round(time.Microsecond), p99.Round(time.Microsecond), len(pages), all50.Round(time.Microsecond), all99.Round(time.Microsecond),
		rssBefore, rssPaged, rssPaged-rssBefore, whole.Round(time.Millisecond), wholeSize>>20, rssWhole-rssPaged)
	b.Log(summary)
	fmt.Println(summary)
	if len(pages) != n/100 {
		b.Errorf("paging by Link took %d pages, want %d", len(pages), n/100)
	}
}
