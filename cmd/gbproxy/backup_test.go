package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/store"
)

// GET /api/v1/store/backup, behind the API token, streams a copy of the
// running proxy's store that opens as a store and holds the registered
// device and its catalog.
func TestStoreBackupWhileRunning(t *testing.T) {
	const token = "backup-operator-token"
	p := startProxy(t, "", "http: {listen: \"127.0.0.1:0\", token: \""+token+"\"}\n")
	id := "34020000001320000001"
	d := newDevice(t, p, id, "udp", 3, nil)
	if err := d.Start(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "the device's 3 channels", func() bool { return len(p.cascade.Channels()) == 3 })

	url := "http://" + p.httpLn.Addr().String() + "/api/v1/store/backup"
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("backup without the token: %d, want 401", res.StatusCode)
	}

	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("backup: %d, %d bytes, err %v", res.StatusCode, len(body), err)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/octet-stream" {
		t.Errorf("Content-Type %q, want application/octet-stream", ct)
	}
	if cd := res.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, `attachment; filename="gbproxy-`) {
		t.Errorf("Content-Disposition %q", cd)
	}

	path := filepath.Join(t.TempDir(), "restored.db")
	if err := os.WriteFile(path, body, 0o600); err != nil {
		t.Fatal(err)
	}
	restored, err := store.Open(path, store.Options{Logger: zerolog.Nop()})
	if err != nil {
		t.Fatalf("the backup does not open as a store: %v", err)
	}
	defer restored.Close()
	var devices []string
	if err := restored.ForEach("devices", func(key string, _ []byte) error {
		devices = append(devices, key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(devices) != 1 || devices[0] != id {
		t.Errorf("devices in the backup: %v, want [%s]", devices, id)
	}
	channels := 0
	if err := restored.ForEach("channels", func(string, []byte) error { channels++; return nil }); err != nil {
		t.Fatal(err)
	}
	if channels != 3 {
		t.Errorf("%d channels in the backup, want 3", channels)
	}
}
