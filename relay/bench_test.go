//go:build linux

package relay

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The throughput benchmarks feed 1,400-byte RTP packets from a generator in
// a child process (so that its CPU time is not counted as the relay's),
// through either the relay or the simplest Go forwarding loop, back to a
// socket the child reads. Both run in the same benchmark, against the same
// generator, so the ratio is meaningful on any machine.

const (
	benchPacket    = 1400
	generatorEnv   = "RELAY_BENCH_GENERATOR" // "udp" or "tcp": run as the generator
	generatorBurst = batchSize               // packets per stream in a row, like one video frame
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(generatorEnv); mode != "" {
		runGenerator(mode)
		return
	}
	os.Exit(m.Run())
}

// runGenerator is the child process: it opens the destination socket and
// reads (and discards) what arrives there, prints its address, reads the
// targets from stdin, and sends RTP to every target as fast as it can until
// killed.
func runGenerator(mode string) {
	dst, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	_ = dst.SetReadBuffer(4 << 20)
	fmt.Println(dst.LocalAddr())
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil {
		os.Exit(1)
	}
	var targets []netip.AddrPort
	for _, s := range strings.Split(strings.TrimSpace(line), ",") {
		targets = append(targets, netip.MustParseAddrPort(s))
	}
	go func() {
		u, _ := newUDPSock(dst)
		for {
			if _, _, err := u.read(); err != nil {
				os.Exit(1)
			}
		}
	}()

	st := &stream{ssrc: 1}
	pkt := st.next(make([]byte, benchPacket-rtpMinLen), false)
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
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	_ = c.SetWriteBuffer(4 << 20)
	// GSO keeps the generator cheap; receivers still get one datagram per
	// packet, as from cameras.
	u, _ := newUDPSock(c)
	sc := newScratch()
	bufs := make([][]byte, generatorBurst)
	for i := range bufs {
		bufs[i] = append([]byte(nil), pkt...)
	}
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

// forwarder is one side of the comparison: where the generator sends, and
// how many packets went out so far.
type forwarder struct {
	targets   []netip.AddrPort
	forwarded func() uint64
	close     func()
}

func relayForwarder(b *testing.B, src Transport, streams int, sink netip.AddrPort) forwarder {
	r := newTestRelay(b, nil)
	var f forwarder
	sinks := make([]*Sink, streams)
	for i := range streams {
		s, err := r.NewSource(loopback, src, SourceOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if sinks[i], err = s.AddSink(loopback, UDP, sink, uint32(i), SinkOptions{}); err != nil {
			b.Fatal(err)
		}
		f.targets = append(f.targets, s.LocalAddr())
	}
	f.forwarded = func() uint64 {
		var n uint64
		for _, k := range sinks {
			n += k.Leg.out.packets.Load()
		}
		return n
	}
	f.close = r.Close
	return f
}

// baselineForwarder is the naive relay: a goroutine per stream reading a
// packet and writing it on, with no RTP logic at all.
func baselineForwarder(b *testing.B, src Transport, streams int, dst netip.AddrPort) forwarder {
	sink := net.UDPAddrFromAddrPort(dst)
	var f forwarder
	var wg sync.WaitGroup
	counts := make([]atomic.Uint64, streams)
	var closers []io.Closer
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
					n, _, err := out.ReadFrom(buf)
					if err != nil {
						return
					}
					if _, err := out.WriteTo(buf[:n], sink); err != nil && isClosed(err) {
						return
					}
					counts[i].Add(1)
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
				if _, err := io.ReadFull(rd, buf[:n]); err != nil {
					return
				}
				if _, err := out.WriteTo(buf[:n], sink); err != nil && isClosed(err) {
					return
				}
				counts[i].Add(1)
			}
		}()
	}
	f.forwarded = func() uint64 {
		var n uint64
		for i := range counts {
			n += counts[i].Load()
		}
		return n
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

type measure struct {
	pps       float64
	cpuPerPkt time.Duration
	cores     float64 // CPU used by the forwarder, in cores
	peerCores float64 // CPU used by the generator process over its life, in cores
}

// run starts the generator, sets up the forwarder toward it, skips the
// ramp-up, then times n forwarded packets (the benchmark timer runs only
// here when timed).
func run(b *testing.B, mode string, build func(dst netip.AddrPort) forwarder, n int, timed bool) (m measure) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), generatorEnv+"="+mode, "GOMAXPROCS=1")
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	started := time.Now()
	stopGenerator := func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if ps := cmd.ProcessState; ps != nil {
			m.peerCores = float64(ps.UserTime()+ps.SystemTime()) / float64(time.Since(started))
		}
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		stopGenerator()
		b.Fatal("generator did not start: ", err)
	}
	f := build(netip.MustParseAddrPort(strings.TrimSpace(line)))
	defer func() {
		stopGenerator() // first: the naive loops end when their input does
		f.close()
	}()
	var list []string
	for _, t := range f.targets {
		list = append(list, t.String())
	}
	if _, err := fmt.Fprintln(stdin, strings.Join(list, ",")); err != nil {
		b.Fatal(err)
	}
	wait := func(target uint64) {
		deadline := time.Now().Add(time.Minute)
		for {
			if f.forwarded() >= target {
				return
			}
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
	t0, c0 := time.Now(), cpuTime()
	start := f.forwarded()
	wait(start + uint64(n))
	end := f.forwarded()
	t1, c1 := time.Now(), cpuTime()
	if timed {
		b.StopTimer()
	}
	elapsed, packets := t1.Sub(t0), end-start
	m.pps = float64(packets) / elapsed.Seconds()
	m.cpuPerPkt = (c1 - c0) / time.Duration(packets)
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
			b.ReportAllocs()
			n := max(b.N, 1000)
			base := run(b, mode, func(dst netip.AddrPort) forwarder { return baselineForwarder(b, src, streams, dst) }, n, false)
			rel := run(b, mode, func(dst netip.AddrPort) forwarder { return relayForwarder(b, src, streams, dst) }, n, true)
			b.ReportMetric(rel.pps, "pkts/s")
			b.ReportMetric(rel.pps*benchPacket*8/1e9, "Gbit/s")
			b.ReportMetric(float64(rel.cpuPerPkt.Nanoseconds())/1e3, "us-cpu/pkt")
			b.ReportMetric(base.pps, "naive-pkts/s")
			b.ReportMetric(float64(base.cpuPerPkt.Nanoseconds())/1e3, "naive-us-cpu/pkt")
			b.ReportMetric(rel.pps/base.pps, "x-naive")
			b.Logf("cores used: relay %.2f (its generator %.2f), naive %.2f (its generator %.2f)", rel.cores, rel.peerCores, base.cores, base.peerCores)
		})
	}
}

func BenchmarkUDPToUDP(b *testing.B) { benchForward(b, UDP) }
func BenchmarkTCPToUDP(b *testing.B) { benchForward(b, TCPPassive) }

// BenchmarkIdleSourceMemory reports the Go memory (heap and stacks) one idle
// leg costs; kernel socket buffers hold nothing while idle.
func BenchmarkIdleSourceMemory(b *testing.B) {
	const legs = 1000
	for _, c := range []struct {
		name string
		src  Transport
		sink bool
	}{{"udp", UDP, false}, {"udp+udp-sink", UDP, true}, {"tcp-passive", TCPPassive, false}} {
		b.Run(c.name, func(b *testing.B) {
			var perLeg float64
			for range b.N {
				r := newTestRelay(b, nil)
				before := goMemory()
				for range legs {
					s, err := r.NewSource(loopback, c.src, SourceOptions{OnIdle: func() {}})
					if err != nil {
						b.Fatal(err)
					}
					if c.sink {
						if _, err := s.AddSink(loopback, UDP, netip.MustParseAddrPort("127.0.0.1:9"), 1, SinkOptions{}); err != nil {
							b.Fatal(err)
						}
					}
				}
				perLeg = float64(goMemory()-before) / legs
				r.Close()
			}
			b.ReportMetric(perLeg, "B/idle-source")
		})
	}
}

func goMemory() uint64 {
	time.Sleep(20 * time.Millisecond) // let the new goroutines park
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc + m.StackInuse
}
