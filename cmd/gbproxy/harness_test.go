package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
	"github.com/gbproxy/gbproxy/configs"
)

const (
	proxyID     = "34020000002000000001"
	proxyDomain = "3402000000"
	upperID     = "44010000002000000001"
	upperPass   = "upper-secret"
	devicePass  = "12345678"
)

// testProxy is a gbproxy started in-process on 127.0.0.1 ephemeral ports.
type testProxy struct {
	*app
	t     testing.TB
	store string
	once  sync.Once
}

// proxyYAML is the base test config; extra is merged over it.
func proxyYAML(storePath, extra string) string {
	return fmt.Sprintf(`
id: %q
domain: %q
lower:
  listen: "127.0.0.1:0"
  keepalive_interval: 300ms
  keepalive_timeout_count: 2
  catalog_timeout: 2s
upper:
  listen: "127.0.0.1:0"
store: {path: %q}
http: {listen: "127.0.0.1:0"}
log: {level: debug}
`, proxyID, proxyDomain, storePath) + extra
}

// upperPlatformYAML configures one upper platform at addr.
func upperPlatformYAML(addr, transport string) string {
	return fmt.Sprintf(`
upper:
  listen: "127.0.0.1:0"
  platforms:
    - id: %q
      address: %q
      transport: %s
      password: %q
      expires: 3600
      keepalive_interval: 300ms
      keepalive_timeout_count: 2
      retry_interval: 300ms
`, upperID, addr, transport, upperPass)
}

func startProxy(t testing.TB, storeDir, extra string) *testProxy {
	t.Helper()
	if storeDir == "" {
		storeDir = t.TempDir()
	}
	path := filepath.Join(storeDir, "gbproxy.db")
	cfg, err := configs.Parse([]byte(mergeYAML(proxyYAML(path, ""), extra)))
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	if _, bench := t.(*testing.B); bench {
		log = zerolog.Nop() // logging every message would be what the benchmark measures
	}
	a, err := start(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	p := &testProxy{app: a, t: t, store: storeDir}
	t.Cleanup(func() { p.stop() })
	return p
}

// mergeYAML lets a test's extra document replace whole top-level sections of
// the base (viper merges nested maps, but we want simple, explicit tests).
func mergeYAML(base, extra string) string {
	if extra == "" {
		return base
	}
	sections := map[string]bool{}
	for _, line := range strings.Split(extra, "\n") {
		if line != "" && line[0] != ' ' && strings.Contains(line, ":") {
			sections[strings.SplitN(line, ":", 2)[0]] = true
		}
	}
	var out []string
	skip := false
	for _, line := range strings.Split(base, "\n") {
		if line != "" && line[0] != ' ' {
			skip = sections[strings.SplitN(line, ":", 2)[0]]
		}
		if !skip {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n") + "\n" + extra
}

func (p *testProxy) stop() {
	p.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.app.stop(ctx); err != nil {
			p.t.Errorf("stop: %v", err)
		}
	})
}

func (p *testProxy) lowerAddr() string { return p.cascade.LowerAddr() }

func (p *testProxy) api(path string, v any) {
	p.t.Helper()
	res, err := http.Get("http://" + p.httpLn.Addr().String() + path)
	if err != nil {
		p.t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		p.t.Fatalf("GET %s: %s", path, res.Status)
	}
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		p.t.Fatalf("GET %s: %v", path, err)
	}
}

// do sends a request with a JSON body to the API and returns status and body.
func (p *testProxy) do(method, path, body string) (int, string) {
	p.t.Helper()
	req, err := http.NewRequest(method, "http://"+p.httpLn.Addr().String()+path, strings.NewReader(body))
	if err != nil {
		p.t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

type apiDevice struct {
	ID            string     `json:"id"`
	Online        bool       `json:"online"`
	Transport     string     `json:"transport"`
	Remote        string     `json:"remote"`
	ExpiresAt     time.Time  `json:"expires_at"`
	LastKeepalive *time.Time `json:"last_keepalive"`
}

type apiChannel struct {
	ID       string `json:"id"`
	DeviceID string `json:"device_id"`
	Name     string `json:"name"`
	Status   string `json:"status"`
}

type apiPlatform struct {
	ID         string `json:"id"`
	Address    string `json:"address"`
	Transport  string `json:"transport"`
	Registered bool   `json:"registered"`
	LastError  string `json:"last_error"`
	Server     string `json:"server"`
}

func (p *testProxy) device(id string) (apiDevice, bool) {
	var devs []apiDevice
	p.api("/api/v1/devices", &devs)
	for _, d := range devs {
		if d.ID == id {
			return d, true
		}
	}
	return apiDevice{}, false
}

func (p *testProxy) channels(deviceID string) []apiChannel {
	var all, out []apiChannel
	p.api("/api/v1/channels", &all)
	for _, c := range all {
		if c.DeviceID == deviceID {
			out = append(out, c)
		}
	}
	return out
}

func (p *testProxy) platform(id string) apiPlatform {
	var ps []apiPlatform
	p.api("/api/v1/platforms", &ps)
	for _, pl := range ps {
		if pl.ID == id {
			return pl
		}
	}
	p.t.Fatalf("platform %s not in API", id)
	return apiPlatform{}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// newDevice makes a device registering to p (nil: mutate sets the server).
func newDevice(t testing.TB, p *testProxy, id, transport string, channels int, mutate func(*sim.DeviceConfig)) *sim.Device {
	t.Helper()
	server := ""
	if p != nil {
		server = p.lowerAddr()
	}
	cfg := sim.DeviceConfig{
		ID: id, ServerID: proxyID, Domain: proxyDomain, Server: server,
		Transport: transport, Password: devicePass,
		KeepaliveInterval: 100 * time.Millisecond, RetryInterval: 200 * time.Millisecond,
		Channels: sim.MakeChannels(id, channels),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	d, err := sim.NewDevice(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func newUpper(t testing.TB, listen string, mutate func(*sim.UpperConfig)) *sim.Upper {
	t.Helper()
	cfg := sim.UpperConfig{ID: upperID, Domain: upperID[:10], Password: upperPass, Listen: listen}
	if mutate != nil {
		mutate(&cfg)
	}
	u, err := sim.NewUpper(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// freeAddr is a 127.0.0.1 address whose port is free for both UDP and TCP
// (a SIP zone listens on both) at the time of asking.
func freeAddr(t testing.TB) string {
	t.Helper()
	for range 20 {
		u, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := u.LocalAddr().String()
		l, err := net.Listen("tcp", addr)
		u.Close()
		if err == nil {
			l.Close()
			return addr
		}
	}
	t.Fatal("no port free for both UDP and TCP on 127.0.0.1")
	return ""
}

// freePort is freeAddr's port.
func freePort(t testing.TB) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(freeAddr(t))
	n, _ := strconv.Atoi(port)
	return n
}
