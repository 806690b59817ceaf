//go:build linux

package relay

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// The benchmarks feed 1,400-byte RTP packets from a generator in a child
// process (so that its CPU time is not counted as the relay's), through
// either the relay or the simplest Go forwarding loop, back to a socket the
// child reads. Both run in the same benchmark, against the same generator,
// so the ratio is meaningful on any machine. They report figures, never
// pass/fail: the goals (≥ 1.25× the naive loop, ≤ 5 µs CPU per packet at
// 50k packets/s, 500 streams of 4 Mbit/s without loss, ≤ 64 KiB per idle
// session) are read off the output of make bench.

const (
	benchPacket  = 1400
	generatorEnv = "RELAY_BENCH_GENERATOR" // "udp", "tcp", "paced" or "idle": run as a child
	paceEnv      = "RELAY_BENCH_PACE"      // paced: "packets/s per stream,seconds"
	// pacedSinks is how many sockets the paced child receives on (streams
	// spread over them), each read by its own goroutine: an upper platform
	// has a socket per stream, and one socket read by a process sharing two
	// cores with the relay and the generator overflows, which is not the
	// relay's loss.
	pacedSinks     = 10
	generatorBurst = batchSize // flood: packets per stream in a row, like one video frame
	// framePeriod spaces the bursts of a paced stream: one video frame at
	// 25 fps, whose packets leave the camera back to back.
	framePeriod = 40 * time.Millisecond
)

var benchWindow = flag.Duration("relay.window", 2*time.Second, "how long each side of a throughput benchmark is measured")

func TestMain(m *testing.M) {
	switch os.Getenv(generatorEnv) {
	case "":
		os.Exit(m.Run())
	case "paced":
		runPacedGenerator(os.Getenv(paceEnv))
	case "idle":
		runIdle(os.Args[len(os.Args)-1])
	default:
		runGenerator(os.Getenv(generatorEnv))
	}
}

// openGeneratorSinks opens the child's n receiving sockets, prints their
// addresses and reads the targets from stdin.
func openGeneratorSinks(n int) ([]*net.UDPConn, []netip.AddrPort) {
	var dsts []*net.UDPConn
	var addrs []string
	for range n {
		dst, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		_ = dst.SetReadBuffer(4 << 20)
		dsts = append(dsts, dst)
		addrs = append(addrs, dst.LocalAddr().String())
	}
	fmt.Println(strings.Join(addrs, ","))
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil {
		os.Exit(1)
	}
	return dsts, parseAddrs(line)
}

func parseAddrs(line string) []netip.AddrPort {
	var as []netip.AddrPort
	for _, s := range strings.Split(strings.TrimSpace(line), ",") {
		as = append(as, netip.MustParseAddrPort(s))
	}
	return as
}

// drain reads (and counts) what arrives on dst until it is closed.
func drain(dst *net.UDPConn, got *atomic.Uint64) {
	u, _ := newUDPSock(dst)
	for {
		_, n, err := u.read()
		if err != nil {
			os.Exit(1)
		}
		got.Add(uint64(n))
	}
}

func generatorPacket() []byte {
	st := &stream{ssrc: 1}
	return st.next(make([]byte, benchPacket-rtpMinLen), false)
}

// runGenerator is the flood child: it reads (and discards) what arrives at
// its socket, and sends RTP to every target as fast as it can until killed.
func runGenerator(mode string) {
	dsts, targets := openGeneratorSinks(1)
	go drain(dsts[0], new(atomic.Uint64))
	pkt := generatorPacket()
	if mode == "tcp" {
		block := make([]byte, 0, generatorBurst*(benchPacket+2))
		for range generatorBurst {
			block = binary.BigEndian.AppendUint16(block, benchPacket)
			block = append(block, pkt...)
		}
		for _, t := range targets {
			go func() {
				c, err := net.Dial("tcp4", t.String())
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(1)
				}
				for {
					if _, err := c.Write(block); err != nil {
						return
					}
				}
			}()
		}
		select {}
	}
	u, sc := generatorSock()
	bufs := packetCopies(pkt, generatorBurst)
	seqs := make([]uint16, len(targets))
	for {
		for i, t := range targets {
			for _, b := range bufs {
				rewrite(b, seqs[i], uint32(i))
				seqs[i]++
				sc.out = append(sc.out, outMsg{body: b})
			}
			if _, err := u.write(sc, t); err != nil {
				os.Exit(1)
			}
		}
	}
}

// generatorSock is the child's sending socket. GSO keeps the generator
// cheap; receivers still get one datagram per packet, as from cameras.
func generatorSock() (*udpSock, *scratch) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	_ = c.SetWriteBuffer(4 << 20)
	u, _ := newUDPSock(c)
	return u, newScratch()
}

func packetCopies(pkt []byte, n int) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = append([]byte(nil), pkt...)
	}
	return bufs
}

// runPacedGenerator is the rate-limited child: every target gets pps
// packets/s, as one burst per frame period (bursts of the streams spread
// over the period), for the given seconds. Then it waits for the stragglers
// and prints what it sent, what the kernel refused, what its socket
// received and what the kernel dropped there.
func runPacedGenerator(spec string) {
	var pps, secs float64
	if _, err := fmt.Sscanf(spec, "%g,%g", &pps, &secs); err != nil {
		fmt.Fprintln(os.Stderr, "bad", paceEnv, spec, err)
		os.Exit(1)
	}
	dsts, targets := openGeneratorSinks(pacedSinks)
	var got atomic.Uint64
	var sinks []netip.AddrPort
	for _, dst := range dsts {
		go drain(dst, &got)
		sinks = append(sinks, addrOf(dst.LocalAddr()))
	}
	u, sc := generatorSock()
	perFrame := pps * framePeriod.Seconds()
	bufs := packetCopies(generatorPacket(), int(perFrame)+1)
	n := len(targets)
	next := make([]time.Duration, n)
	owed := make([]float64, n)
	seqs := make([]uint16, n)
	for i := range next {
		next[i] = framePeriod * time.Duration(i) / time.Duration(n)
	}
	dur := time.Duration(secs * float64(time.Second))
	var sent, refused uint64
	start := time.Now()
	for {
		el := time.Since(start)
		if el >= dur {
			break
		}
		earliest := dur
		for i, t := range targets {
			for next[i] <= el && next[i] < dur { // a late burst is caught up
				owed[i] += perFrame
				k := int(owed[i])
				owed[i] -= float64(k)
				for _, b := range bufs[:k] {
					rewrite(b, seqs[i], uint32(i))
					seqs[i]++
					sc.out = append(sc.out, outMsg{body: b})
				}
				ok, err := u.write(sc, t)
				if err != nil {
					os.Exit(1)
				}
				sent += uint64(ok)
				refused += uint64(k - ok)
				next[i] += framePeriod
			}
			earliest = min(earliest, next[i])
		}
		time.Sleep(earliest - time.Since(start))
	}
	sendTime := time.Since(start)
	// Stragglers: wait until nothing has arrived for a while.
	for last, quiet := got.Load(), 0; quiet < 3; {
		time.Sleep(100 * time.Millisecond)
		if now := got.Load(); now != last {
			last, quiet = now, 0
		} else {
			quiet++
		}
	}
	fmt.Printf("%d %d %d %d %d\n", sent, refused, got.Load(), udpDrops(sinks), sendTime)
	os.Exit(0)
}

// udpDrops sums the kernel's drop counters (/proc/net/udp, last column:
// datagrams refused because the receive buffer was full, or bad checksums)
// of the given 127.0.0.1 UDP sockets.
func udpDrops(socks []netip.AddrPort) uint64 {
	want := make(map[string]bool, len(socks))
	for _, a := range socks {
		want[fmt.Sprintf("0100007F:%04X", a.Port())] = true
	}
	data, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		return 0
	}
	var n uint64
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 13 || !want[f[1]] {
			continue
		}
		d, _ := strconv.ParseUint(f[12], 10, 64)
		n += d
	}
	return n
}

// fwdCounts are a forwarder's packet counts.
type fwdCounts struct {
	received  uint64 // read from the receive sockets
	dropped   uint64 // refused after reading (the relay's In.Dropped)
	forwarded uint64 // written on
	sendFail  uint64 // writes that failed (the relay's Out.Dropped)
}

// forwarder is one side of the comparison: where the generator sends, and
// how many packets went through so far.
type forwarder struct {
	targets   []netip.AddrPort // its receive sockets
	forwarded func() uint64
	counts    func() fwdCounts
	close     func()
}

// Stream i of a forwarder goes to dsts[i % len(dsts)].

func relayForwarder(b *testing.B, src Transport, streams int, dsts []netip.AddrPort) forwarder {
	r := newTestRelay(b, nil)
	var f forwarder
	sources := make([]*Source, streams)
	sinks := make([]*Sink, streams)
	for i := range streams {
		s, err := r.NewSource(loopback, src, SourceOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if sinks[i], err = s.AddSink(loopback, UDP, dsts[i%len(dsts)], uint32(i), SinkOptions{}); err != nil {
			b.Fatal(err)
		}
		sources[i] = s
		f.targets = append(f.targets, s.LocalAddr())
	}
	f.forwarded = func() uint64 {
		var n uint64
		for _, k := range sinks {
			n += k.Leg.out.packets.Load()
		}
		return n
	}
	f.counts = func() (c fwdCounts) {
		for _, s := range sources {
			st := s.Stats().In
			c.received += st.Packets
			c.dropped += st.Dropped
		}
		for _, k := range sinks {
			st := k.Stats().Out
			c.forwarded += st.Packets
			c.sendFail += st.Dropped
		}
		return c
	}
	f.close = r.Close
	return f
}

// baselineForwarder is the naive relay: a goroutine per stream reading a
// packet and writing it on, one system call each, with no RTP logic at all
// (and no allocation either: the netip forms of ReadFrom/WriteTo).
func baselineForwarder(b *testing.B, src Transport, streams int, dsts []netip.AddrPort) forwarder {
	var f forwarder
	var wg sync.WaitGroup
	recv := make([]atomic.Uint64, streams)
	sent := make([]atomic.Uint64, streams)
	failed := make([]atomic.Uint64, streams)
	var closers []io.Closer
	forward := func(i int, out *net.UDPConn, p []byte) bool {
		recv[i].Add(1)
		if _, err := out.WriteToUDPAddrPort(p, dsts[i%len(dsts)]); err != nil {
			if isClosed(err) {
				return false
			}
			failed[i].Add(1)
			return true
		}
		sent[i].Add(1)
		return true
	}
	for i := range streams {
		out, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		closers = append(closers, out)
		if src == UDP {
			_ = out.SetReadBuffer(1 << 20) // as the relay's sources
			f.targets = append(f.targets, addrOf(out.LocalAddr()))
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 2048)
				for {
					n, _, err := out.ReadFromUDPAddrPort(buf)
					if err != nil || !forward(i, out, buf[:n]) {
						return
					}
				}
			}()
			continue
		}
		ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		closers = append(closers, ln)
		f.targets = append(f.targets, addrOf(ln.Addr()))
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			rd := bufio.NewReaderSize(c, 64<<10)
			var hdr [2]byte
			buf := make([]byte, 65535)
			for {
				if _, err := io.ReadFull(rd, hdr[:]); err != nil {
					return
				}
				n := int(binary.BigEndian.Uint16(hdr[:]))
				if _, err := io.ReadFull(rd, buf[:n]); err != nil || !forward(i, out, buf[:n]) {
					return
				}
			}
		}()
	}
	f.forwarded = func() uint64 {
		var n uint64
		for i := range sent {
			n += sent[i].Load()
		}
		return n
	}
	f.counts = func() (c fwdCounts) {
		for i := range streams {
			c.received += recv[i].Load()
			c.forwarded += sent[i].Load()
			c.sendFail += failed[i].Load()
		}
		return c
	}
	f.close = func() {
		for _, c := range closers {
			c.Close()
		}
		wg.Wait()
	}
	return f
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadAvg is the machine's 1-minute load average: over ~2 (this
// benchmark's own runnable threads), other work shared the cores and the
// figures of that run are low.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	avg, _, _ := strings.Cut(string(b), " ")
	return avg
}

// mallocs is how many heap allocations, and how many bytes, the process
// has made so far.
func mallocs() (n, bytes uint64) {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.Mallocs, m.TotalAlloc
}

// child is a generator process, with the forwarder it feeds.
type child struct {
	b       *testing.B
	cmd     *exec.Cmd
	out     *bufio.Reader
	started time.Time
	f       forwarder
	cpu     time.Duration // the child's CPU time, once stopped
	life    time.Duration
}

// startChild starts a generator, builds the forwarder toward its socket
// and hands it the forwarder's addresses: it starts sending.
func startChild(b *testing.B, mode string, env []string, build func(dsts []netip.AddrPort) forwarder) *child {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), generatorEnv+"="+mode, "GOMAXPROCS=1"), env...)
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	c := &child{b: b, cmd: cmd, out: bufio.NewReader(stdout), started: time.Now()}
	line, err := c.out.ReadString('\n')
	if err != nil {
		c.stop()
		b.Fatal("generator did not start: ", err)
	}
	c.f = build(parseAddrs(line))
	var list []string
	for _, t := range c.f.targets {
		list = append(list, t.String())
	}
	if _, err := fmt.Fprintln(stdin, strings.Join(list, ",")); err != nil {
		c.stop()
		c.f.close()
		b.Fatal(err)
	}
	return c
}

func (c *child) stop() {
	if c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
	}
	if ps := c.cmd.ProcessState; ps != nil {
		c.cpu = ps.UserTime() + ps.SystemTime()
		c.life = time.Since(c.started)
	}
}

type measure struct {
	pps       float64
	cpuPerPkt time.Duration
	allocs    float64 // heap allocations per forwarded packet
	allocB    float64 // heap bytes allocated per forwarded packet
	cores     float64 // CPU used by the forwarder, in cores
	peerCores float64 // CPU used by the generator process over its life, in cores
}

// run floods the forwarder from a generator, skips the ramp-up, then
// measures over *benchWindow (the benchmark timer runs only here when
// timed).
func run(b *testing.B, mode string, build func(dsts []netip.AddrPort) forwarder, timed bool) (m measure) {
	c := startChild(b, mode, nil, build)
	f := c.f
	defer func() {
		c.stop() // first: the naive loops end when their input does
		f.close()
		m.peerCores = float64(c.cpu) / float64(c.life)
	}()
	wait := func(target uint64) {
		deadline := time.Now().Add(time.Minute)
		for f.forwarded() < target {
			if time.Now().After(deadline) {
				b.Fatalf("%s forwarding stalled at %d packets", mode, f.forwarded())
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	wait(uint64(10 * generatorBurst * len(f.targets)))
	if timed {
		b.StartTimer()
	}
	// Time first, count second at the start; count first, time second at
	// the end: a pause of this goroutine can only lower the rate measured.
	a0, ab0 := mallocs()
	t0, c0 := time.Now(), cpuTime()
	start := f.forwarded()
	time.Sleep(*benchWindow)
	end := f.forwarded()
	t1, c1 := time.Now(), cpuTime()
	a1, ab1 := mallocs()
	if timed {
		b.StopTimer()
	}
	elapsed, packets := t1.Sub(t0), end-start
	if packets == 0 {
		b.Fatalf("%s forwarding stalled at %d packets", mode, end)
	}
	m.pps = float64(packets) / elapsed.Seconds()
	m.cpuPerPkt = (c1 - c0) / time.Duration(packets)
	m.allocs = float64(a1-a0) / float64(packets)
	m.allocB = float64(ab1-ab0) / float64(packets)
	m.cores = float64(c1-c0) / float64(elapsed)
	return m
}

func benchForward(b *testing.B, src Transport) {
	mode := "udp"
	if src != UDP {
		mode = "tcp"
	}
	for _, streams := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			b.StopTimer()
			base := run(b, mode, func(dsts []netip.AddrPort) forwarder { return baselineForwarder(b, src, streams, dsts) }, false)
			rel := run(b, mode, func(dsts []netip.AddrPort) forwarder { return relayForwarder(b, src, streams, dsts) }, true)
			b.ReportMetric(rel.pps, "pkts/s")
			b.ReportMetric(rel.pps*benchPacket*8/1e9, "Gbit/s")
			b.ReportMetric(float64(rel.cpuPerPkt.Nanoseconds())/1e3, "us-cpu/pkt")
			b.ReportMetric(rel.allocs, "allocs/pkt")
			b.ReportMetric(rel.allocB, "B-alloc/pkt")
			b.ReportMetric(base.pps, "naive-pkts/s")
			b.ReportMetric(float64(base.cpuPerPkt.Nanoseconds())/1e3, "naive-us-cpu/pkt")
			b.ReportMetric(rel.pps/base.pps, "x-naive")
			b.Logf("cores used: relay %.2f (its generator %.2f), naive %.2f (its generator %.2f); naive allocs/pkt %.3f; load average %s",
				rel.cores, rel.peerCores, base.cores, base.peerCores, base.allocs, loadAvg())
		})
	}
}

// BenchmarkUDPToUDP and BenchmarkTCPToUDP measure the most packets the
// relay forwards (one UDP sink per source, SSRC rewritten) with a generator
// sending as fast as it can, against the naive loop on the same generator.
func BenchmarkUDPToUDP(b *testing.B) { benchForward(b, UDP) }
func BenchmarkTCPToUDP(b *testing.B) { benchForward(b, TCPPassive) }

// paced is the outcome of a rate-limited run.
type paced struct {
	planned           uint64 // streams × packets/s × duration
	sent, refused     uint64 // by the generator, refused: sendmmsg errors
	inDrops           uint64 // kernel drops at the forwarder's receive sockets
	fw                fwdCounts
	got, sinkDrops    uint64 // at the generator's receiving socket
	cpu, wall         time.Duration
	sendTime, genCPU  time.Duration
	ppsSent, ppsFwded float64
	load              string
}

func (p paced) loss() float64 { return 1 - float64(p.got)/float64(p.sent) }

func (p paced) cpuPerPkt() float64 {
	return float64(p.cpu.Nanoseconds()) / 1e3 / float64(max(p.fw.forwarded, 1))
}

// String tells where the packets went, in order along the path.
func (p paced) String() string {
	return fmt.Sprintf("generator sent %d of %d planned (%.0f pkts/s, %d refused by its kernel) -> %d dropped by the kernel at the forwarder's sockets -> forwarder read %d, refused %d, wrote %d (%d writes failed) -> %d dropped by the kernel at the receiving sockets -> received %d; loss %.4f%%; forwarder CPU %.2f cores over %v, generator+receiver %.2f cores; load average %s",
		p.sent, p.planned, p.ppsSent, p.refused, p.inDrops, p.fw.received, p.fw.dropped, p.fw.forwarded, p.fw.sendFail, p.sinkDrops, p.got, 100*p.loss(),
		float64(p.cpu)/float64(p.wall), p.wall.Round(time.Millisecond), float64(p.genCPU)/float64(p.wall), p.load)
}

// runPaced feeds the forwarder streams of pps packets/s each, in one burst
// per frame period, for dur, and collects every count along the way.
func runPaced(b *testing.B, build func(dsts []netip.AddrPort) forwarder, pps float64, dur time.Duration) (p paced) {
	c := startChild(b, "paced", []string{fmt.Sprintf("%s=%g,%g", paceEnv, pps, dur.Seconds())}, build)
	f := c.f
	defer f.close()
	t0, c0 := time.Now(), cpuTime()
	line, err := c.out.ReadString('\n')
	t1, c1 := time.Now(), cpuTime()
	if err != nil {
		c.stop()
		b.Fatal("paced generator failed: ", err)
	}
	var sendTime int64
	if _, err := fmt.Sscan(line, &p.sent, &p.refused, &p.got, &p.sinkDrops, &sendTime); err != nil {
		b.Fatalf("paced generator said %q: %v", line, err)
	}
	p.planned = uint64(float64(len(f.targets)) * pps * dur.Seconds())
	p.fw = f.counts()
	p.inDrops = udpDrops(f.targets)
	c.stop()
	p.cpu, p.wall, p.genCPU, p.load = c1-c0, t1.Sub(t0), c.cpu, loadAvg()
	p.sendTime = time.Duration(sendTime)
	p.ppsSent = float64(p.sent) / p.sendTime.Seconds()
	p.ppsFwded = float64(p.fw.forwarded) / p.sendTime.Seconds()
	return p
}

func benchPaced(b *testing.B, streams int, pps float64, dur time.Duration) (rel, base paced) {
	b.StopTimer()
	base = runPaced(b, func(dsts []netip.AddrPort) forwarder { return baselineForwarder(b, UDP, streams, dsts) }, pps, dur)
	b.StartTimer()
	rel = runPaced(b, func(dsts []netip.AddrPort) forwarder { return relayForwarder(b, UDP, streams, dsts) }, pps, dur)
	b.StopTimer()
	b.Logf("relay: %v", rel)
	b.Logf("naive: %v", base)
	return rel, base
}

// BenchmarkCPUAt50kPPS reports the CPU time per packet of the relay
// process (getrusage: user+system, every goroutine and the kernel work done
// in its system calls) at 50,000 packets/s in all: 100 UDP streams of 500
// packets/s, 20-packet bursts every 40 ms. Goal: ≤ 5 µs.
func BenchmarkCPUAt50kPPS(b *testing.B) {
	const streams = 100
	rel, base := benchPaced(b, streams, 50000/streams, 4*time.Second)
	b.ReportMetric(rel.cpuPerPkt(), "us-cpu/pkt")
	b.ReportMetric(base.cpuPerPkt(), "naive-us-cpu/pkt")
	b.ReportMetric(rel.ppsFwded, "pkts/s")
	b.ReportMetric(100*rel.loss(), "loss-%")
	b.ReportMetric(100*base.loss(), "naive-loss-%")
}

// BenchmarkLoss500x4Mbit feeds 500 UDP sources with 4 Mbit/s of video
// each (357 packets/s of 1,400 bytes, as one 14-15 packet frame every
// 40 ms, 2 Gbit/s in all) and reports the share of packets that did not
// reach the receiver, and the CPU used. Goal: no loss. The generator and
// receiver share the machine with the relay: the log line tells where
// packets went missing.
func BenchmarkLoss500x4Mbit(b *testing.B) {
	const streams = 500
	rel, base := benchPaced(b, streams, 4e6/8/benchPacket, 6*time.Second)
	b.ReportMetric(100*rel.loss(), "loss-%")
	b.ReportMetric(100*base.loss(), "naive-loss-%")
	b.ReportMetric(rel.ppsFwded, "pkts/s")
	b.ReportMetric(rel.ppsFwded*benchPacket*8/1e9, "Gbit/s")
	b.ReportMetric(rel.cpuPerPkt(), "us-cpu/pkt")
	b.ReportMetric(base.cpuPerPkt(), "naive-us-cpu/pkt")
	b.ReportMetric(float64(rel.cpu)/float64(rel.wall), "cores")
	b.ReportMetric(float64(base.cpu)/float64(base.wall), "naive-cores")
}

// BenchmarkIdleSourceMemory reports what one idle session costs: Go memory
// (heap in use and goroutine stacks, after a GC) and the growth of the
// process's resident set (/proc/self/statm, which adds the runtime's
// overhead: heap spans, free space kept), each over 1,000 sessions opened
// in a fresh child process. A session is a UDP source with one UDP sink;
// the source alone and a TCP-passive source are shown too. Kernel socket
// buffers hold nothing while idle. Goal: ≤ 64 KiB per session.
func BenchmarkIdleSourceMemory(b *testing.B) {
	const legs = 1000
	for _, c := range []struct{ name, unit string }{
		{"udp+udp-sink", "idle-session"},
		{"udp", "idle-source"},
		{"tcp-passive", "idle-source"},
	} {
		b.Run(c.name, func(b *testing.B) {
			var goB, rssB float64
			for range b.N {
				cmd := exec.Command(os.Args[0], "-test.run=^$", fmt.Sprintf("%s,%d", c.name, legs))
				cmd.Env = append(os.Environ(), generatorEnv+"=idle")
				cmd.Stderr = os.Stderr
				out, err := cmd.Output()
				if err != nil {
					b.Fatal(err)
				}
				var g, r int64
				if _, err := fmt.Sscan(string(out), &g, &r); err != nil {
					b.Fatalf("idle child said %q: %v", out, err)
				}
				goB, rssB = float64(g)/legs, float64(r)/legs
			}
			b.ReportMetric(goB, "go-B/"+c.unit)
			b.ReportMetric(rssB, "rss-B/"+c.unit)
		})
	}
}

// runIdle is the idle-memory child: spec is "kind,count".
func runIdle(spec string) {
	kind, count, _ := strings.Cut(spec, ",")
	n, err := strconv.Atoi(count)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bad idle spec", spec)
		os.Exit(1)
	}
	r, err := New(Config{PortMin: 20000, PortMax: 29998, Logger: zerolog.Nop()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	open := func() {
		t := UDP
		if kind == "tcp-passive" {
			t = TCPPassive
		}
		s, err := r.NewSource(loopback, t, SourceOptions{OnIdle: func() {}})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if kind == "udp+udp-sink" {
			if _, err := s.AddSink(loopback, UDP, netip.MustParseAddrPort("127.0.0.1:9"), 1, SinkOptions{}); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}
	}
	open() // first-use costs (pool, code paged in) are not per session
	go0, rss0 := goMemory(), rss()
	for range n {
		open()
	}
	go1, rss1 := goMemory(), rss()
	fmt.Println(int64(go1-go0), rss1-rss0)
	r.Close()
	os.Exit(0)
}

func goMemory() uint64 {
	time.Sleep(50 * time.Millisecond) // let the new goroutines park
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc + m.StackInuse
}

// rss is the resident set size of this process, in bytes.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}
