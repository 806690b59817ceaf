package main

import (
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gbproxy/gbproxy/configs"
)

// An admin API reachable beyond loopback needs http.token: without one the
// proxy does not start; with one, requests without it get 401.
func TestAPIRequiresTokenBeyondLoopback(t *testing.T) {
	store := filepath.Join(t.TempDir(), "gbproxy.db")
	open := mergeYAML(proxyYAML(store, ""), "http: {listen: \"0.0.0.0:0\"}\n")
	if _, err := configs.Parse([]byte(open)); err == nil || !strings.Contains(err.Error(), "http.token") {
		t.Fatalf("config with the API on 0.0.0.0 and no token: err = %v, want one naming http.token", err)
	}

	const token = "s3cret-operator-token"
	p := startProxy(t, "", "http: {listen: \"0.0.0.0:0\", token: \""+token+"\"}\n")
	_, port, _ := net.SplitHostPort(p.httpLn.Addr().String())
	base := "http://127.0.0.1:" + port
	get := func(path, auth string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	for _, path := range []string{"/api/v1/devices", "/api/v1/sessions", "/metrics", "/api/v1/platforms"} {
		for _, auth := range []string{"", "Bearer wrong-token", "Basic " + token, "Bearer " + token + "x"} {
			if code, _ := get(path, auth); code != http.StatusUnauthorized {
				t.Errorf("GET %s with %q: %d, want 401", path, auth, code)
			}
		}
		if code, body := get(path, "Bearer "+token); code != http.StatusOK {
			t.Errorf("GET %s with the token: %d %s", path, code, body)
		}
	}
	req, _ := http.NewRequest("DELETE", base+"/api/v1/sessions/any", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("DELETE session without token: %d, want 401", res.StatusCode)
	}
	if code, _ := get("/healthz", ""); code != http.StatusOK {
		t.Errorf("/healthz without token: %d, want 200 (load balancers)", code)
	}
}
