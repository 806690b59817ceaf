package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
	"github.com/gbproxy/gbproxy/configs"
)

const upper2ID = "44010000002000000002"

// platformBody is a POST body for an upper platform at addr.
func platformBody(id, addr, password string) string {
	return fmt.Sprintf(`{"id": %q, "address": %q, "transport": "udp", "password": %q, "keepalive_interval": "300ms", "retry_interval": "300ms"}`, id, addr, password)
}

func newUpper2(t *testing.T) *sim.Upper {
	return newUpper(t, "127.0.0.1:0", func(c *sim.UpperConfig) { c.ID, c.Domain = upper2ID, upper2ID[:10] })
}

// A platform added at run time registers and serves the catalog; a new
// password re-registers with it; deleting it unregisters and ends its
// sessions only.
func TestManagePlatformAtRunTime(t *testing.T) {
	rig := newLiveRig(t, rigOptions{})
	p := rig.p
	ctx := ctxTimeout(t, 60*time.Second)
	play1, err := rig.upper.Play(ctx, proxyID, rig.ch, sim.PlayOptions{})
	if err != nil {
		t.Fatal(err)
	}

	up2 := newUpper2(t)
	if code, body := p.do("POST", "/api/v1/platforms", platformBody(upper2ID, up2.Addr(), upperPass)); code != 201 || strings.Contains(body, upperPass) {
		t.Fatalf("POST platform: %d %s", code, body)
	}
	if _, err := up2.WaitRegistered(ctx, proxyID); err != nil {
		t.Fatal(err)
	}
	items, _, err := up2.QueryCatalog(ctx, proxyID)
	if err != nil || !slices.ContainsFunc(items, func(it sim.CatalogItem) bool { return it.DeviceID == rig.ch }) {
		t.Fatalf("catalog to the added platform: %v %+v", err, items)
	}

	// A wrong password: the proxy registers again with it at once, refused.
	before, _ := up2.Lower(proxyID)
	if code, body := p.do("PUT", "/api/v1/platforms/"+upper2ID, `{"address": "`+up2.Addr()+`", "password": "not-the-password", "keepalive_interval": "300ms", "retry_interval": "300ms"}`); code != 200 {
		t.Fatalf("PUT: %d %s", code, body)
	}
	eventually(t, 5*time.Second, "registration with the new password refused", func() bool {
		pl := p.platform(upper2ID)
		return !pl.Registered && strings.Contains(pl.LastError, "credentials refused")
	})
	if l, _ := up2.Lower(proxyID); l.Registrations != before.Registrations {
		t.Fatalf("the simulator took the wrong password: %+v", l)
	}
	// The right one (omitted keys take the defaults, password is sent).
	if code, body := p.do("PUT", "/api/v1/platforms/"+upper2ID, platformBody(upper2ID, up2.Addr(), upperPass)); code != 200 {
		t.Fatalf("PUT: %d %s", code, body)
	}
	if _, err := up2.WaitLower(ctx, proxyID, func(l sim.LowerState) bool { return l.Registrations > before.Registrations }); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "registered with the new password", func() bool { return p.platform(upper2ID).Registered })

	play2, err := up2.Play(ctx, proxyID, rig.ch, sim.PlayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := play2.WaitPackets(ctx, 10); err != nil {
		t.Fatal(err)
	}

	if code, body := p.do("DELETE", "/api/v1/platforms/"+upper2ID, ""); code != 204 {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	if l, _ := up2.Lower(proxyID); l.Registered {
		t.Error("no unregistration (Expires: 0) at the removed platform")
	}
	select {
	case <-play2.Ended():
	case <-ctx.Done():
		t.Fatal("the removed platform's session did not end")
	}
	got := len(play1.Payload())
	if _, err := play1.WaitBytes(ctx, got+10000); err != nil {
		t.Fatalf("the other platform's session stopped flowing: %v", err)
	}
	if s := p.sessions(); len(s) != 1 || s[0].UpperID != upperID {
		t.Errorf("sessions after removal: %+v", s)
	}
	if code, _ := p.do("GET", "/api/v1/platforms/"+upper2ID, ""); code != 404 {
		t.Errorf("removed platform: GET %d", code)
	}

	for _, c := range []struct {
		method, path, body string
		code               int
		prefix             string
	}{
		{"POST", "/api/v1/platforms", platformBody(upperID, "127.0.0.1:5060", "x"), 409, "id:"},
		{"POST", "/api/v1/platforms", platformBody(upper2ID, "nowhere", "x"), 400, "address:"},
		{"POST", "/api/v1/platforms", `{"id": "` + upper2ID + `", "address": "127.0.0.1:1", "colour": "red"}`, 400, "colour:"},
		{"POST", "/api/v1/platforms", `{"id": "` + upper2ID + `", "address": "127.0.0.1:1", "keepalive_interval": "soon"}`, 400, "keepalive_interval:"},
		{"PUT", "/api/v1/platforms/" + upper2ID, `{"address": "127.0.0.1:1"}`, 404, "no upper platform"},
		{"PUT", "/api/v1/platforms/" + upperID, `{"id": "` + upper2ID + `"}`, 400, "id:"},
		{"DELETE", "/api/v1/platforms/" + upper2ID, "", 404, "no upper platform"},
	} {
		if code, body := p.do(c.method, c.path, c.body); code != c.code || !strings.HasPrefix(body, c.prefix) {
			t.Errorf("%s %s %s: %d %q, want %d %q…", c.method, c.path, c.body, code, body, c.code, c.prefix)
		}
	}
}

// An allowed device added at run time registers with its own password;
// deleting it unregisters it, ends its session and forgets its channels.
func TestManageDevicesAtRunTime(t *testing.T) {
	rig := newLiveRig(t, rigOptions{extraLower: "  allow_unknown: false\n  devices: [{id: \"" + liveDevice + "\"}]"})
	p := rig.p
	ctx := ctxTimeout(t, 40*time.Second)
	const dev2 = "34020000001320000002"
	newDev := func() *sim.Device {
		return newDevice(t, p, dev2, "udp", 2, func(c *sim.DeviceConfig) { c.Password = "dev2-secret" })
	}
	if err := newDev().Start(ctxTimeout(t, time.Second)); err == nil {
		t.Fatal("a device not yet allowed registered")
	}
	if code, body := p.do("POST", "/api/v1/devices", `{"id": "`+dev2+`", "password": "dev2-secret", "stream_mode": "udp"}`); code != 201 || strings.Contains(body, "dev2-secret") || !strings.Contains(body, `"password_set": true`) {
		t.Fatalf("POST device: %d %s", code, body)
	}
	d := newDev()
	if err := d.Start(ctx); err != nil {
		t.Fatalf("allowed device does not register: %v", err)
	}
	ch := sim.MakeChannels(dev2, 2)[0].ID
	eventually(t, 10*time.Second, "its channels stored", func() bool { return len(p.channels(dev2)) == 2 })
	var allowed []map[string]any
	p.api("/api/v1/devices/allowed", &allowed)
	if len(allowed) != 2 || allowed[1]["id"] != dev2 || allowed[1]["password"] != nil {
		t.Errorf("allowed list: %v", allowed)
	}
	play, err := rig.upper.Play(ctx, proxyID, ch, sim.PlayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := play.WaitPackets(ctx, 5); err != nil {
		t.Fatal(err)
	}
	if code, body := p.do("DELETE", "/api/v1/devices/"+dev2, ""); code != 204 {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	select {
	case <-play.Ended():
	case <-ctx.Done():
		t.Fatal("the removed device's session did not end")
	}
	if _, ok := p.device(dev2); ok || len(p.channels(dev2)) != 0 {
		t.Error("removed device still listed with its channels")
	}
	if code, _ := p.do("DELETE", "/api/v1/devices/"+dev2, ""); code != 404 {
		t.Errorf("second DELETE: %d", code)
	}
	if code, body := p.do("POST", "/api/v1/devices", `{"id": "`+liveDevice+`"}`); code != 409 {
		t.Errorf("POST of a listed device: %d %s", code, body)
	}
	if code, body := p.do("PUT", "/api/v1/devices/"+liveDevice, `{"stream_mode": "sideways"}`); code != 400 || !strings.HasPrefix(body, "stream_mode:") {
		t.Errorf("bad stream_mode: %d %s", code, body)
	}
}

// What the API adds survives a restart on the same store, and the file's
// edits made while stopped are applied over it.
func TestManagedSetSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	up2 := newUpper2(t)
	p := startProxy(t, dir, "")
	if code, body := p.do("POST", "/api/v1/platforms", platformBody(upper2ID, up2.Addr(), upperPass)); code != 201 {
		t.Fatalf("POST platform: %d %s", code, body)
	}
	if code, body := p.do("POST", "/api/v1/devices", `{"id": "34020000001320000002"}`); code != 201 {
		t.Fatalf("POST device: %d %s", code, body)
	}
	eventually(t, 5*time.Second, "registered to the added platform", func() bool { return p.platform(upper2ID).Registered })
	p.stop()
	if l, _ := up2.Lower(proxyID); l.Registered {
		t.Fatal("not unregistered at stop")
	}

	// The file now lists a device: added to the stored set.
	p2 := startProxy(t, dir, "lower:\n  listen: \"127.0.0.1:0\"\n  devices: [{id: \"34020000001320000003\"}]\n")
	if _, err := up2.WaitRegistered(ctxTimeout(t, 5*time.Second), proxyID); err != nil {
		t.Fatalf("API-added platform not back after restart: %v", err)
	}
	var allowed []map[string]any
	p2.api("/api/v1/devices/allowed", &allowed)
	var ids []string
	for _, d := range allowed {
		ids = append(ids, fmt.Sprint(d["id"]))
	}
	if fmt.Sprint(ids) != "[34020000001320000002 34020000001320000003]" {
		t.Errorf("allowed after restart: %v", ids)
	}
}

// SIGHUP, a real signal to this process caught by main's signal loop,
// applies the edited file's platforms; a bad file changes nothing.
func TestSIGHUPReload(t *testing.T) {
	up2 := newUpper2(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "gbproxy.yaml")
	base := proxyYAML(filepath.Join(dir, "gbproxy.db"), "")
	write := func(doc string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(base)
	cfg, err := configs.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	a, err := start(cfg, zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), logs)))
	if err != nil {
		t.Fatal(err)
	}
	p := &testProxy{app: a, t: t, store: dir}
	t.Cleanup(p.stop)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP)
	done := make(chan os.Signal)
	go func() { done <- a.serveSignals(path, sig) }()
	t.Cleanup(func() {
		signal.Stop(sig)
		close(sig)
		<-done
	})
	hup := func() {
		t.Helper()
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}

	platform := fmt.Sprintf("upper:\n  listen: \"127.0.0.1:0\"\n  platforms:\n    - {id: %q, address: %q, password: %q, keepalive_interval: 300ms, retry_interval: 300ms}\n", upper2ID, up2.Addr(), upperPass)
	write(mergeYAML(base, platform))
	hup()
	if _, err := up2.WaitRegistered(ctxTimeout(t, 5*time.Second), proxyID); err != nil {
		t.Fatalf("platform added to the file not registered after SIGHUP: %v", err)
	}

	for i, bad := range []string{
		strings.Replace(platform, "address:", "adress:", 1), // unknown key
		strings.Replace(platform, up2.Addr(), "nowhere", 1), // invalid address
		platform + "  bogus: [",                             // not YAML
	} {
		write(mergeYAML(base, bad))
		hup()
		eventually(t, 5*time.Second, "bad file refused with a log line", func() bool {
			return strings.Count(logs.String(), "SIGHUP: config not reloaded, nothing changed") == i+1
		})
	}
	if pc, _ := p.cascade.PlatformConfig(upper2ID); pc.Address != up2.Addr() || !p.platform(upper2ID).Registered {
		t.Fatalf("a bad file changed the platform: %+v", pc)
	}
	write(mergeYAML(base, strings.Replace(platform, "300ms, retry", "400ms, retry", 1)))
	hup()
	eventually(t, 5*time.Second, "valid edit applied after the bad ones", func() bool {
		pc, ok := p.cascade.PlatformConfig(upper2ID)
		return ok && pc.KeepaliveInterval == 400*time.Millisecond && pc.Address == up2.Addr()
	})
	if !p.platform(upper2ID).Registered {
		t.Error("platform lost its registration over the bad files")
	}

	write(base)
	hup()
	eventually(t, 5*time.Second, "unregistered after the platform left the file", func() bool {
		l, _ := up2.Lower(proxyID)
		return !l.Registered
	})
	var ps []json.RawMessage
	p.api("/api/v1/platforms", &ps)
	if len(ps) != 0 {
		t.Errorf("platforms after removal: %s", ps)
	}
}

// lockedBuffer collects log lines written from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
