package configs

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultIsValid(t *testing.T) {
	cfg, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Lower.Listen != "0.0.0.0:5060" || cfg.Lower.KeepaliveInterval != time.Minute || cfg.Store.Path != "./data/gbproxy.db" {
		t.Fatalf("unexpected defaults: %+v", cfg.Lower)
	}
}

func TestEnvOverride(t *testing.T) {
	t.Setenv("GBPROXY_LOWER_LISTEN", "127.0.0.1:15060")
	t.Setenv("GBPROXY_LOWER_KEEPALIVE_INTERVAL", "5s")
	cfg, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Lower.Listen != "127.0.0.1:15060" || cfg.Lower.KeepaliveInterval != 5*time.Second {
		t.Fatalf("env not applied: %+v", cfg.Lower)
	}
}

func TestPlatformDefaultsAndMerge(t *testing.T) {
	cfg, err := Parse([]byte(`
upper:
  platforms:
    - id: "44010000002000000001"
      address: "127.0.0.1:5070"
      password: "x"
`))
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Upper.Platforms[0]
	if p.Domain != "4401000000" || p.Username != cfg.ID || p.Transport != "udp" || p.Expires != 3600 || p.RetryInterval != time.Minute {
		t.Fatalf("platform defaults: %+v", p)
	}
	if cfg.Lower.Listen != "0.0.0.0:5060" {
		t.Fatal("merge lost the default lower.listen")
	}
}

func TestValidationNamesTheKey(t *testing.T) {
	cases := map[string]string{
		`id: "123"`:                      "id:",
		"lower:\n  listen: nowhere":      "lower.listen",
		"lower:\n  listn: \"0.0.0.0:1\"": "listn",
		"upper:\n  platforms:\n    - id: \"44010000002000000001\"\n      address: \"1.2.3.4:5060\"\n      transport: sctp": "upper.platforms[0].transport",
		"lower:\n  devices:\n    - id: \"1\"":        "lower.devices[0].id",
		"media:\n  port_min: 5000\n  port_max: 4000": "media.port_min",
	}
	for yaml, key := range cases {
		_, err := Parse([]byte(yaml))
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%q: error %v does not name %q", yaml, err, key)
		}
	}
}
