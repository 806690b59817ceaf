// Package etcdtest runs a real single-member etcd (the `etcd` binary,
// Debian's etcd-server) on 127.0.0.1 random ports for tests. A test without
// the binary is skipped with a message, or fails when GBPROXY_REQUIRE_ETCD=1
// (CI).
package etcdtest

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Server is one etcd process; Stop and Start again keep its data and ports.
type Server struct {
	t        testing.TB
	bin, dir string
	client   int // port
	peer     int // port
	log      *logBuffer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs etcd in t.TempDir() and waits until it reports healthy; it is
// killed in t.Cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		if os.Getenv("GBPROXY_REQUIRE_ETCD") == "1" {
			t.Fatalf("etcd binary not found and GBPROXY_REQUIRE_ETCD=1: %v", err)
		}
		t.Skip("etcd binary not found (apt-get install etcd-server); skipping the cluster test")
	}
	s := &Server{t: t, bin: bin, dir: filepath.Join(t.TempDir(), "etcd"), client: freePort(t), peer: freePort(t), log: &logBuffer{}}
	t.Cleanup(s.Stop)
	s.Start()
	return s
}

// Endpoint is the client URL.
func (s *Server) Endpoint() string { return "http://127.0.0.1:" + strconv.Itoa(s.client) }

// Start starts the process (again) and waits for health.
func (s *Server) Start() {
	s.t.Helper()
	peer := "http://127.0.0.1:" + strconv.Itoa(s.peer)
	cmd := exec.Command(s.bin, //nolint:gosec // G204: etcd from PATH, arguments of our own making
		"--name", "gbproxy-test",
		"--data-dir", s.dir,
		"--listen-client-urls", s.Endpoint(),
		"--advertise-client-urls", s.Endpoint(),
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", "gbproxy-test="+peer,
		"--log-level", "error",
	)
	s.mu.Lock()
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		s.mu.Unlock()
		s.t.Fatalf("start etcd: %v", err)
	}
	done := make(chan struct{})
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	go func() { _ = cmd.Wait(); close(done) }() // killed by Stop: its exit status says nothing

	deadline := time.Now().Add(30 * time.Second)
	for {
		if healthy(s.Endpoint()) {
			return
		}
		select {
		case <-done:
			s.t.Fatalf("etcd exited at start: %s", s.log.tail())
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("etcd not healthy within 30s: %s", s.log.tail())
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}

// Stop kills the process (SIGKILL: as a crash) and waits for it.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	if err := cmd.Process.Kill(); err != nil {
		s.t.Logf("kill etcd: %v", err)
	}
	<-done
}

func healthy(endpoint string) bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(endpoint + "/health")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return err == nil && resp.StatusCode == http.StatusOK && bytes.Contains(body, []byte(`"health":"true"`))
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// logBuffer keeps etcd's output for failure messages; the process writes
// while a failing test reads.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.b.Bytes()
	return string(b[max(0, len(b)-4000):])
}
