package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
)

// Floods from the attacker's address against gbproxy as a process of its
// own, so that its RSS and descriptors are its alone; bounded in count and
// time. A legitimate device keeps working meanwhile.

// TestFlood builds the proxy once for its subtests.
func TestFlood(t *testing.T) {
	bin := buildProxy(t)
	t.Run("unknown-keepalives", func(t *testing.T) { testKeepaliveFlood(t, bin) })
	t.Run("idle-tcp", func(t *testing.T) { testIdleTCPFlood(t, bin) })
}

// keepaliveFlood is the flood's size: the 100,000 in 5 s with
// GBPROXY_FLOOD=full, else 20,000 in 2 s, which keeps make test (-race, 2
// cores, other packages' tests alongside) quick and its timing steady.
func keepaliveFlood() (n int, within time.Duration) {
	if os.Getenv("GBPROXY_FLOOD") == "full" {
		return 100_000, 5 * time.Second
	}
	return 20_000, 2 * time.Second
}

const (
	floodSockets = 4
	// rssSlackKiB is how far above its baseline RSS may stay after a flood.
	rssSlackKiB = 32 << 10
	// rssSettle bounds the wait for RSS to come back after the flood.
	rssSettle = 12 * time.Second
	// keepaliveP99 bounds the legitimate device's keepalive round trip.
	keepaliveP99 = 50 * time.Millisecond
	// keepaliveEvery is the legitimate device's keepalive period in the flood.
	keepaliveEvery = 10 * time.Millisecond
)

// Keepalives from unknown device IDs, far more than the unauthenticated
// rate limit allows, are answered or dropped without state: RSS comes back
// to its baseline, and a registered device's keepalives keep their round
// trip under 50 ms at p99.
func testKeepaliveFlood(t *testing.T, bin string) {
	n, within := keepaliveFlood()
	px := startProxyProcess(t, bin, "")
	const legitID = "34020000001320000401"
	legit := dialRaw(t, "udp", "127.0.0.1", px.lower, legitID)
	if res, _ := legit.register(devicePass); res.StatusCode != 200 {
		t.Fatalf("legitimate device's REGISTER: %d %q", res.StatusCode, res.Reason)
	}
	// Warm-up: both the device's path and the refusals' path have run
	// before the baseline is taken.
	for range 50 {
		if status, _ := legit.keepalive(time.Second); status != 200 {
			t.Fatalf("legitimate keepalive before the flood answered %d, want 200", status)
		}
	}
	newFlood(t, px.lower, 1000, 200*time.Millisecond).wait()
	baseline := vmRSSKiB(t, px.pid)
	metricsURL := "http://" + px.http + "/metrics"
	seen := func() float64 { // flood requests the proxy refused or dropped
		s := scrapeSeries(t, metricsURL)
		return s[`gbproxy_sip_refused_total{side="lower",reason="rate_limited"}`] + s[`gbproxy_sip_refused_total{side="lower",reason="not_registered"}`]
	}
	seenBefore, cpuBefore := seen(), cpuTime(t, px.pid)

	// The device keeps alive every 10 ms during the flood: enough round
	// trips for a p99 that is not just the maximum.
	var rtts []time.Duration
	lost := 0
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(keepaliveEvery)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			status, rtt := legit.keepalive(time.Second)
			if status != 200 {
				lost++
			}
			rtts = append(rtts, rtt)
		}
	}()
	f := newFlood(t, px.lower, n, within)
	peak := baseline
	for !f.waitFor(100 * time.Millisecond) {
		peak = max(peak, vmRSSKiB(t, px.pid))
	}
	elapsed := f.elapsed
	close(stop)
	<-stopped
	atEnd := vmRSSKiB(t, px.pid)
	peak = max(peak, atEnd)
	cpu, reached := cpuTime(t, px.pid)-cpuBefore, seen()-seenBefore

	// RSS comes back within the slack (sampled every 200 ms).
	floodEnd := time.Now()
	settled, settledAfter := atEnd, time.Duration(0)
	for settled > baseline+rssSlackKiB && time.Since(floodEnd) < rssSettle {
		time.Sleep(200 * time.Millisecond) // sampling period of an external measurement
		settled, settledAfter = vmRSSKiB(t, px.pid), time.Since(floodEnd)
	}
	p99 := percentile(rtts, 0.99)
	online := deviceOnline(t, px.http, legitID, legit.local())

	summary := fmt.Sprintf("keepalive flood: %d unknown-ID keepalives from %s in %v (%d answered; the proxy counted %.0f refused or dropped over the rate limit; its CPU %v); "+
		"legitimate keepalive every %v: %d round trips, p50 %v p99 %v max %v, %d lost; RSS baseline %d KiB, peak %d, at flood end %d, %d after %v (limit +%d); device online %v",
		n, attacker, elapsed.Round(time.Millisecond), f.answered.Load(), reached, cpu,
		keepaliveEvery, len(rtts), percentile(rtts, 0.5), p99, percentile(rtts, 1), lost, baseline, peak, atEnd, settled, settledAfter.Round(time.Millisecond), rssSlackKiB, online)
	t.Log(summary)
	fmt.Println(summary)

	if reached < float64(n)/2 {
		t.Errorf("the proxy refused or dropped %.0f of the %d flood requests: did the flood reach it, and were they refused before any handler?", reached, n)
	}
	// A lost keepalive counts as a 1 s round trip: p99 allows one in a hundred.
	if len(rtts) < 10 || p99 >= keepaliveP99 {
		t.Errorf("legitimate keepalives during the flood: %d round trips, p99 %v (%d lost); want p99 < %v", len(rtts), p99, lost, keepaliveP99)
	}
	if settled > baseline+rssSlackKiB {
		t.Errorf("RSS %d KiB %v after the flood, baseline %d KiB: more than %d KiB above it", settled, rssSettle, baseline, rssSlackKiB)
	}
	if !online {
		t.Error("the legitimate device is not online at its address after the flood")
	}
}

// flood sends keepalive MESSAGEs, each from a new random device ID, from
// floodSockets sockets on the attacker's address, evenly over a period.
type flood struct {
	conns    []*net.UDPConn
	answered atomic.Int64
	sent     atomic.Int64
	done     chan struct{}
	readers  sync.WaitGroup
	elapsed  time.Duration
}

func newFlood(t *testing.T, target string, n int, within time.Duration) *flood {
	t.Helper()
	to, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	f := &flood{done: make(chan struct{})}
	for range floodSockets {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(attacker)})
		if err != nil {
			t.Fatal(err)
		}
		f.conns = append(f.conns, c)
	}
	t.Cleanup(f.close)
	start := time.Now()
	var senders sync.WaitGroup
	for i, c := range f.conns {
		f.readers.Go(func() {
			buf := make([]byte, 4096)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
				f.answered.Add(1)
			}
		})
		senders.Go(func() { f.send(c, to, n/floodSockets, within, start, uint64(i)) })
	}
	go func() {
		senders.Wait()
		f.elapsed = time.Since(start)
		close(f.done)
	}()
	return f
}

// send paces n messages over within from start, in batches.
func (f *flood) send(c *net.UDPConn, to *net.UDPAddr, n int, within time.Duration, start time.Time, seed uint64) {
	const idMark, seqMark = "IIIIIIIIIIIIIIIIIIII", "SSSSSSSSSS"
	msg := []byte(fmt.Sprintf("MESSAGE sip:%s@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;rport;branch=z9hG4bK-fl%s\r\n"+
		"From: <sip:%s@%s>;tag=fl%s\r\nTo: <sip:%s@%s>\r\nCall-ID: fl%s@%s\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n"+
		"Content-Type: Application/MANSCDP+xml\r\nContent-Length: %d\r\n\r\n%s",
		proxyID, proxyDomain, c.LocalAddr(), seqMark, idMark, proxyDomain, seqMark, proxyID, proxyDomain, seqMark, attacker,
		len(keepaliveBody(idMark)), keepaliveBody(idMark)))
	ids, seqs := markOffsets(msg, idMark), markOffsets(msg, seqMark)
	rng := rand.New(rand.NewPCG(seed, uint64(start.UnixNano())))
	const batch = 50
	for i := range n {
		if i%batch == 0 {
			if wait := time.Until(start.Add(within * time.Duration(i) / time.Duration(n))); wait > 0 {
				time.Sleep(wait) // pacing the sender, not waiting for the proxy
			}
		}
		id := rng.Uint64()
		for _, off := range ids {
			putDigits(msg[off:off+len(idMark)], id)
		}
		seq := seed*1e9 + uint64(i)
		for _, off := range seqs {
			putDigits(msg[off:off+len(seqMark)], seq)
		}
		if _, err := c.WriteToUDP(msg, to); err == nil {
			f.sent.Add(1)
		}
	}
}

func markOffsets(msg []byte, mark string) []int {
	var out []int
	for i := 0; ; {
		j := bytes.Index(msg[i:], []byte(mark))
		if j < 0 {
			return out
		}
		out = append(out, i+j)
		i += j + len(mark)
	}
}

// putDigits writes v in decimal into b, right-aligned and zero-padded;
// v's high digits beyond len(b) are dropped.
func putDigits(b []byte, v uint64) {
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
}

// waitFor reports whether the flood has been sent, waiting at most d.
func (f *flood) waitFor(d time.Duration) bool {
	select {
	case <-f.done:
		return true
	case <-time.After(d):
		return false
	}
}

// wait waits for the flood to be sent.
func (f *flood) wait() { <-f.done }

func (f *flood) close() {
	<-f.done
	for _, c := range f.conns {
		c.Close()
	}
	f.readers.Wait()
}

// percentile is the q-quantile of ds (nearest rank), 0 for none.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)].Round(10 * time.Microsecond)
}

// getJSON decodes the proxy process's API answer at path.
func getJSON(t testing.TB, httpAddr, path string, v any) {
	t.Helper()
	res, err := http.Get("http://" + httpAddr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("GET %s: %s", path, res.Status)
	}
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

func deviceOnline(t testing.TB, httpAddr, id, remote string) bool {
	var devs []apiDevice
	getJSON(t, httpAddr, "/api/v1/devices", &devs)
	for _, d := range devs {
		if d.ID == id {
			return d.Online && d.Remote == remote
		}
	}
	return false
}

// cpuTime is the CPU time process pid has used (Linux /proc, user + system).
func cpuTime(t testing.TB, pid int) time.Duration {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("read CPU time of gbproxy: %v (this test needs Linux /proc)", err)
	}
	// Fields after the command name, which is in parentheses: utime and stime are the 12th and 13th.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ is 100 on Linux
}

// fdCount is the number of open descriptors of process pid (Linux /proc).
func fdCount(t testing.TB, pid int) int {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("count descriptors of gbproxy: %v (this test needs Linux /proc)", err)
	}
	return len(fds)
}

// 5,000 idle TCP connections from one address: all but max_conns_per_ip
// are closed at once, the rest after tcp_idle_timeout; meanwhile the API
// answers and a live play works; the proxy's descriptors come back.
func testIdleTCPFlood(t *testing.T, bin string) {
	const (
		conns = 5000
		perIP = 64
		idle  = 2 * time.Second
	)
	raiseFileLimit(t, conns+1000)
	t.Setenv("GBPROXY_SECURITY_TCP_IDLE_TIMEOUT", idle.String())
	t.Setenv("GBPROXY_SECURITY_MAX_CONNS_PER_IP", strconv.Itoa(perIP))
	ctx := ctxTimeout(t, 30*time.Second)
	up := newUpper(t, "127.0.0.1:0", nil)
	px := startProxyProcess(t, bin, fmt.Sprintf("[{id: %q, address: %q, transport: udp, password: %q, keepalive_interval: 1s, retry_interval: 300ms}]",
		upperID, up.Addr(), upperPass))
	const devID = "34020000001320000402"
	dev := newDevice(t, nil, devID, "udp", 1, func(c *sim.DeviceConfig) { c.Server = px.lower })
	if err := dev.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := up.WaitRegistered(ctx, proxyID); err != nil {
		t.Fatal(err)
	}
	ch := sim.MakeChannels(devID, 1)[0].ID
	eventually(t, 5*time.Second, "the device's channel stored", func() bool {
		var chans []apiChannel
		getJSON(t, px.http, "/api/v1/channels", &chans)
		return len(chans) == 1 && chans[0].ID == ch
	})
	metricsURL := "http://" + px.http + "/metrics"
	closedFor := func(reason string) float64 {
		return scrapeSeries(t, metricsURL)[`gbproxy_sip_conns_closed_total{side="lower",reason="`+reason+`"}`]
	}
	baseFDs := fdCount(t, px.pid)

	start := time.Now()
	attack := dialMany(t, attacker, px.lower, conns)
	dialled := time.Since(start)
	eventually(t, 5*time.Second, fmt.Sprintf("%d connections over the cap closed", conns-perIP), func() bool {
		return closedFor("per_ip_cap") == conns-perIP
	})
	held := fdCount(t, px.pid) - baseFDs
	idleEarly := closedFor("idle")
	early := time.Since(start) < idle-200*time.Millisecond // idle timers started after start

	// Meanwhile the API answers and a live play works.
	apiStart := time.Now()
	if !deviceOnline(t, px.http, devID, dev.LocalAddr()) {
		t.Error("device not online in the API during the connection flood")
	}
	apiTime := time.Since(apiStart)
	play, err := up.Play(ctx, proxyID, ch, sim.PlayOptions{Transport: "udp"})
	if err != nil {
		t.Fatalf("live play during the connection flood: %v", err)
	}
	if _, err := play.WaitPackets(ctx, 20); err != nil {
		t.Fatalf("live play during the connection flood: no media: %v", err)
	}
	if err := play.Bye(ctx); err != nil {
		t.Fatal(err)
	}

	eventually(t, idle+5*time.Second, fmt.Sprintf("the %d held connections closed for idling", perIP), func() bool {
		return closedFor("idle") == perIP
	})
	idleClosed := time.Since(start)
	// The proxy closed every connection: each reads end of file at once
	// (the deadline is for a scheduler that may be slow to run the read).
	open := 0
	for _, c := range attack {
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); isTimeout(err) {
			if open++; open == 5 {
				break // enough to fail; the rest would take 100 ms each
			}
		}
	}
	eventually(t, 5*time.Second, "the proxy's descriptors back to their baseline", func() bool { return fdCount(t, px.pid) <= baseFDs+2 })

	summary := fmt.Sprintf("idle TCP flood: %d connections from %s dialled in %v; %.0f closed over the per-IP cap, %d held (descriptors above the baseline of %d), "+
		"%v idle-closed within %v of the first dial (timeout %v); API answered in %v and a live play worked meanwhile; descriptors back to %d",
		conns, attacker, dialled.Round(time.Millisecond), closedFor("per_ip_cap"), held, baseFDs, perIP, idleClosed.Round(time.Millisecond), idle,
		apiTime.Round(time.Microsecond), fdCount(t, px.pid))
	t.Log(summary)
	fmt.Println(summary)

	if held > perIP+4 { // a few for the play's signalling
		t.Errorf("the proxy held %d descriptors more during the flood, want at most max_conns_per_ip %d", held, perIP)
	}
	if early && idleEarly != 0 {
		t.Errorf("%.0f connections closed for idling before tcp_idle_timeout %v", idleEarly, idle)
	}
	if idleClosed < idle {
		t.Errorf("held connections all closed %v after the first dial, before tcp_idle_timeout %v", idleClosed, idle)
	}
	if open > 0 {
		t.Errorf("%d of the attacker's connections still open after the idle timeout", open)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// dialMany opens n TCP connections from localIP to addr and leaves them idle.
func dialMany(t *testing.T, localIP, addr string, n int) []net.Conn {
	t.Helper()
	const dialers = 8
	conns := make([]net.Conn, n)
	errs := make([]error, dialers)
	var wg sync.WaitGroup
	for w := range dialers {
		wg.Go(func() {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}, Timeout: 5 * time.Second}
			for i := w; i < n; i += dialers {
				c, err := d.Dial("tcp", addr)
				if err != nil {
					errs[w] = fmt.Errorf("connection %d: %w", i, err)
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	for _, err := range errs {
		if err != nil {
			t.Fatalf("dial %s from %s: %v", addr, localIP, err)
		}
	}
	return conns
}

// raiseFileLimit sets the soft open-file limit to the hard one, which must
// allow need descriptors (the proxy process inherits it).
func raiseFileLimit(t *testing.T, need uint64) {
	t.Helper()
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if rl.Max < need {
		t.Fatalf("open file limit %d is below the %d this test needs: raise it (ulimit -Hn)", rl.Max, need)
	}
	if rl.Cur < need {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			t.Fatal(err)
		}
	}
}
