// Package etcdtest runs a real single-member etcd (the `etcd` binary,
// Debian's etcd-server) on 127.0.0.1 random ports for tests, optionally
// over TLS with client certificates and with RBAC auth. A test without the
// binary is skipped with a message, or fails when GBPROXY_REQUIRE_ETCD=1
// (CI).
package etcdtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
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

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/gbproxy/gbproxy/security/testpki"
)

// Prefix is what the user of Options.User may read and write: every key
// gbproxy keeps in etcd.
const Prefix = "/gbproxy/"

// Options of StartWith; the zero value is Start's plain etcd.
type Options struct {
	// PKI makes etcd serve clients over https with its server certificate
	// and require a client certificate its CA signed (--client-cert-auth).
	PKI *testpki.PKI
	// User and Password, when set, become an etcd user with read-write on
	// Prefix, and auth is enabled (root gets a random password).
	User, Password string
}

// Server is one etcd process; Stop and Start again keep its data and ports.
type Server struct {
	t        testing.TB
	bin, dir string
	client   int // port
	peer     int // port
	log      *logBuffer
	opts     Options
	tlsFiles testpki.Files

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs etcd in t.TempDir() and waits until it reports healthy; it is
// killed in t.Cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith is Start with TLS and/or auth as opts say.
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		if os.Getenv("GBPROXY_REQUIRE_ETCD") == "1" {
			t.Fatalf("etcd binary not found and GBPROXY_REQUIRE_ETCD=1: %v", err)
		}
		t.Skip("etcd binary not found (apt-get install etcd-server); skipping the cluster test")
	}
	tmp := t.TempDir()
	s := &Server{t: t, bin: bin, dir: filepath.Join(tmp, "etcd"), client: freePort(t), peer: freePort(t), log: &logBuffer{}, opts: opts}
	if opts.PKI != nil {
		s.tlsFiles = opts.PKI.Write(t, tmp)
	}
	t.Cleanup(s.Stop)
	s.Start()
	if opts.User != "" {
		s.enableAuth()
	}
	return s
}

// Endpoint is the client URL.
func (s *Server) Endpoint() string {
	scheme := "http://"
	if s.opts.PKI != nil {
		scheme = "https://"
	}
	return scheme + "127.0.0.1:" + strconv.Itoa(s.client)
}

// TLSFiles are the PKI's certificates and keys as PEM files (zero without
// Options.PKI), for a config that names them.
func (s *Server) TLSFiles() testpki.Files { return s.tlsFiles }

// Client is a client of this etcd as user (none: before auth is on),
// presenting the PKI's client certificate over TLS; closed in t.Cleanup.
func (s *Server) Client(user, password string) *clientv3.Client {
	s.t.Helper()
	cfg := clientv3.Config{Endpoints: []string{s.Endpoint()}, DialTimeout: 5 * time.Second, Username: user, Password: password, Logger: zap.NewNop()}
	if s.opts.PKI != nil {
		cfg.TLS = s.opts.PKI.ClientConfig(true)
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		s.t.Fatalf("etcd client: %v", err)
	}
	s.t.Cleanup(func() { cli.Close() })
	return cli
}

// enableAuth makes root (with a random password) and Options.User with
// read-write on Prefix, then turns auth on, through the Go client's Auth
// API (etcdctl may not be installed).
func (s *Server) enableAuth() {
	s.t.Helper()
	cli := s.Client("", "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rootPw := make([]byte, 16)
	_, _ = rand.Read(rootPw)
	steps := []struct {
		what string
		do   func() error
	}{
		{"add root", func() error { _, err := cli.UserAdd(ctx, "root", hex.EncodeToString(rootPw)); return err }},
		{"grant root", func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err }},
		{"add role", func() error { _, err := cli.RoleAdd(ctx, "gbproxy"); return err }},
		{"grant prefix", func() error {
			_, err := cli.RoleGrantPermission(ctx, "gbproxy", Prefix, clientv3.GetPrefixRangeEnd(Prefix), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		}},
		{"add user", func() error { _, err := cli.UserAdd(ctx, s.opts.User, s.opts.Password); return err }},
		{"grant user", func() error { _, err := cli.UserGrantRole(ctx, s.opts.User, "gbproxy"); return err }},
		{"enable auth", func() error { _, err := cli.AuthEnable(ctx); return err }},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			s.t.Fatalf("etcd auth: %s: %v", st.what, err)
		}
	}
}

// Start starts the process (again) and waits for health.
func (s *Server) Start() {
	s.t.Helper()
	peer := "http://127.0.0.1:" + strconv.Itoa(s.peer)
	args := []string{
		"--name", "gbproxy-test",
		"--data-dir", s.dir,
		"--listen-client-urls", s.Endpoint(),
		"--advertise-client-urls", s.Endpoint(),
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", "gbproxy-test=" + peer,
		"--log-level", "error",
	}
	if s.opts.PKI != nil {
		args = append(args, "--cert-file", s.tlsFiles.ServerCert, "--key-file", s.tlsFiles.ServerKey,
			"--trusted-ca-file", s.tlsFiles.CA, "--client-cert-auth")
	}
	cmd := exec.Command(s.bin, args...) //nolint:gosec // G204: etcd from PATH, arguments of our own making
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
		if s.healthy() {
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

func (s *Server) healthy() bool {
	c := http.Client{Timeout: time.Second}
	if s.opts.PKI != nil {
		c.Transport = &http.Transport{TLSClientConfig: s.opts.PKI.ClientConfig(true)}
		defer c.CloseIdleConnections()
	}
	resp, err := c.Get(s.Endpoint() + "/health")
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
