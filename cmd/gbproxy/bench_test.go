package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/load"
)

const (
	benchDevices = 10000
	// sipgo keeps finished UDP server transactions for 64·T1 = 32 s; idle RSS
	// is read after they are gone so it shows what a registered device costs.
	benchIdle = 35 * time.Second
)

// BenchmarkRegistration10k registers 10,000 simulated devices (with digest
// and a one-channel catalog each) against a gbproxy subprocess, and against a
// stateless registrar as a same-run baseline. Run it with `make bench`.
func BenchmarkRegistration10k(b *testing.B) {
	baseline := runLoad(b, startBaselineRegistrar(b), benchDevices)

	oneAddressForAll(b)
	px := startProxyProcess(b, buildProxy(b), "")
	lower, httpAddr, pid := px.lower, px.http, px.pid
	rssBefore := vmRSSKiB(b, pid)
	res := runLoad(b, lower, benchDevices)
	online := metricValue(b, httpAddr, "gbproxy_devices_online")
	time.Sleep(benchIdle)
	rssAfter := vmRSSKiB(b, pid)

	perDevice := float64(rssAfter-rssBefore) / float64(max(res.Registered, 1))
	b.ReportMetric(res.Rate, "reg/s")
	b.ReportMetric(baseline.Rate, "baseline-reg/s")
	b.ReportMetric(res.Rate/baseline.Rate, "ratio")
	b.ReportMetric(perDevice, "KiB/device")
	b.ReportMetric(0, "ns/op") // one op is the whole run; its time says nothing
	summary := fmt.Sprintf("registration: %d/%d devices in %v = %.0f reg/s (baseline %.0f reg/s, ratio %.2f; goal ≥ 2000 reg/s), "+
		"%d failed %v, %d retransmits, %d catalogs answered, devices_online %.0f; "+
		"RSS %d → %d KiB after %v idle = %.2f KiB/device (goal ≤ 10)",
		res.Registered, benchDevices, res.Elapsed.Round(time.Millisecond), res.Rate, baseline.Rate, res.Rate/baseline.Rate,
		res.Failed, res.FailReasons, res.Retransmits, res.CatalogAnswered, online, rssBefore, rssAfter, benchIdle, perDevice)
	b.Log(summary)
	fmt.Println(summary)
	if res.Failed > 0 || int(online) != res.Registered {
		b.Errorf("proxy under load: %d of %d registrations failed (%v), %v devices online", res.Failed, benchDevices, res.FailReasons, online)
	}
}

func runLoad(b *testing.B, server string, devices int) load.Result {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := load.Run(ctx, load.Config{Server: server, ServerID: proxyID, Domain: proxyDomain, Password: devicePass,
		Devices: devices, Concurrency: 256, Sockets: 64})
	if err != nil {
		b.Fatalf("load run against %s: %v (result %+v)", server, err, res)
	}
	return res
}

// startBaselineRegistrar is the least a registrar can do: 401 to a REGISTER
// without Authorization, 200 to one with it, no verification and no state.
func startBaselineRegistrar(b *testing.B) string {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if answer := baselineAnswer(buf[:n]); answer != nil {
				conn.WriteToUDP(answer, from)
			}
		}
	}()
	return conn.LocalAddr().String()
}

func baselineAnswer(req []byte) []byte {
	head, _, _ := bytes.Cut(req, []byte("\r\n\r\n"))
	if !bytes.HasPrefix(head, []byte("REGISTER ")) {
		return nil
	}
	var out bytes.Buffer
	status := "401 Unauthorized"
	for _, line := range strings.Split(string(head), "\r\n")[1:] {
		name, _, _ := strings.Cut(line, ":")
		switch strings.ToLower(name) {
		case "via", "from", "to", "call-id", "cseq":
			out.WriteString(line + "\r\n")
		case "authorization":
			status = "200 OK"
		}
	}
	if status != "200 OK" {
		out.WriteString(`WWW-Authenticate: Digest realm="` + proxyDomain + `", nonce="baseline", opaque="baseline", algorithm=MD5` + "\r\n")
	}
	out.WriteString("Content-Length: 0\r\n\r\n")
	return append([]byte("SIP/2.0 "+status+"\r\n"), out.Bytes()...)
}

// buildProxy builds the gbproxy binary for a benchmark to run as a process
// of its own, apart from the load generator's runtime.
func buildProxy(b testing.TB) string {
	bin := filepath.Join(b.TempDir(), "gbproxy")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go build gbproxy: %v\n%s", err, out)
	}
	return bin
}

type proxyProcess struct {
	lower, upper, http string
	pid                int
	// kill ends the process at once (SIGKILL), as a crash would.
	kill func()
}

// oneAddressForAll lifts the per-IP limit on requests from unregistered
// sources for the child proxy: the load generators play thousands of
// devices from 127.0.0.1 (as behind one NAT), and the limit would be what
// the benchmark measured.
func oneAddressForAll(b testing.TB) {
	b.Setenv("GBPROXY_SECURITY_UNAUTHENTICATED_RATE", "1000000")
	b.Setenv("GBPROXY_SECURITY_UNAUTHENTICATED_BURST", "1000000")
}

// startProxyProcess runs bin on free 127.0.0.1 ports, with platforms as its
// upper.platforms YAML list ("" for none) and lowerKeys as more lower keys
// (YAML flow "key: value" pairs), and waits for its HTTP API.
func startProxyProcess(b testing.TB, bin, platforms string, lowerKeys ...string) proxyProcess {
	if platforms == "" {
		platforms = "[]"
	}
	return launchProxy(b, bin, func(lower, upper, httpAddr, dir string) string {
		return fmt.Sprintf(`id: %q
domain: %q
lower: {listen: %q, password: %q, keepalive_interval: 60s%s}
upper: {listen: %q, platforms: %s}
store: {path: %q}
http: {listen: %q}
log: {level: warn}
`, proxyID, proxyDomain, lower, devicePass, strings.Join(append([]string{""}, lowerKeys...), ", "), upper, platforms, filepath.Join(dir, "gbproxy.db"), httpAddr)
	})
}

// launchProxy runs bin on a config that configFor writes for free
// 127.0.0.1 addresses (lower and upper SIP, HTTP) and a directory of its
// own, and waits for its HTTP API. Ports are free when picked, but another
// test may take one before the child binds it: then the child exits saying
// so and it is started again on new ports.
func launchProxy(b testing.TB, bin string, configFor func(lower, upper, httpAddr, dir string) string) proxyProcess {
	for attempt := 1; ; attempt++ {
		p, err := tryProxyProcess(b, bin, configFor)
		if err == nil {
			return p
		}
		if !errors.Is(err, errPortTaken) || attempt == 3 {
			b.Fatal(err)
		}
	}
}

var errPortTaken = errors.New("a port picked for gbproxy was taken before it started")

func tryProxyProcess(b testing.TB, bin string, configFor func(lower, upper, httpAddr, dir string) string) (proxyProcess, error) {
	dir := b.TempDir()
	lower, upper, httpAddr := freeAddr(b), freeAddr(b), freeTCPPort(b)
	cfgPath := filepath.Join(dir, "gbproxy.yaml")
	if err := os.WriteFile(cfgPath, []byte(configFor(lower, upper, httpAddr, dir)), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", cfgPath)
	logPath := filepath.Join(dir, "gbproxy.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer logFile.Close() // the child keeps its own descriptor
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		b.Fatalf("start gbproxy: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := http.Get("http://" + httpAddr + "/metrics")
		if err == nil {
			res.Body.Close()
			break
		}
		select {
		case <-exited:
			logs, _ := os.ReadFile(logPath)
			if bytes.Contains(logs, []byte("address already in use")) {
				return proxyProcess{}, errPortTaken
			}
			return proxyProcess{}, fmt.Errorf("gbproxy exited at start:\n%s", tail(logs))
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			logs, _ := os.ReadFile(logPath)
			return proxyProcess{}, fmt.Errorf("gbproxy did not serve HTTP on %s within 10 s: %w\n%s", httpAddr, err, tail(logs))
		}
		time.Sleep(50 * time.Millisecond)
	}
	var once sync.Once
	stop := func(sig os.Signal) {
		once.Do(func() {
			cmd.Process.Signal(sig)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
		})
	}
	b.Cleanup(func() {
		stop(os.Interrupt)
		if logs, _ := os.ReadFile(logPath); len(logs) > 0 {
			b.Logf("gbproxy log (warnings and errors, last 2000 bytes):\n%s", tail(logs))
		}
	})
	return proxyProcess{lower: lower, upper: upper, http: httpAddr, pid: cmd.Process.Pid,
		kill: func() { stop(os.Kill) }}, nil
}

func freeTCPPort(b testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// vmRSSKiB reads the resident set size of a process from /proc (Linux only).
func vmRSSKiB(b testing.TB, pid int) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatalf("read RSS of gbproxy: %v (this benchmark needs Linux /proc)", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kib, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			if err != nil {
				b.Fatalf("parse VmRSS %q: %v", rest, err)
			}
			return kib
		}
	}
	b.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// metricValue reads one unlabelled sample from the proxy's /metrics.
func metricValue(b testing.TB, httpAddr, name string) float64 {
	b.Helper()
	res, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		b.Fatalf("GET /metrics: %v", err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				b.Fatalf("parse %s %q: %v", name, rest, err)
			}
			return v
		}
	}
	b.Fatalf("%s not in /metrics", name)
	return 0
}
