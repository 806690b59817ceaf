package configs

import (
	"path/filepath"
	"slices"
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
		"log:\n  format: syslog":                     "log.format",
	}
	for yaml, key := range cases {
		_, err := Parse([]byte(yaml))
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%q: error %v does not name %q", yaml, err, key)
		}
	}
}

func TestShareContract(t *testing.T) {
	cfg, err := Parse([]byte(`
upper:
  platforms:
    - id: "44010000002000000001"
      address: "127.0.0.1:5070"
      charset: UTF-8
      catalog_items_per_message: 8
      catalog_rate: 50
      share:
        all: false
        devices: ["34020000001320000001"]
        channels: ["34020000001320000007"]
        map: {"34020000001320000007": "44010000001310000001"}
    - id: "44010000002000000002"
      address: "127.0.0.1:5071"
`))
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Upper.Platforms[0]
	if p.Charset != "utf-8" || p.CatalogItemsPerMessage != 8 || p.CatalogRate != 50 {
		t.Fatalf("platform keys: %+v", p)
	}
	if p.Share.SharesAll() || p.Share.Devices[0] != "34020000001320000001" || p.Share.Map["34020000001320000007"] != "44010000001310000001" {
		t.Fatalf("share: %+v", p.Share)
	}
	if q := cfg.Upper.Platforms[1]; !q.Share.SharesAll() || q.Charset != "gb2312" {
		t.Fatalf("defaults when share is absent: %+v", q)
	}
}

func TestShareValidation(t *testing.T) {
	base := "upper:\n  platforms:\n    - id: \"44010000002000000001\"\n      address: \"127.0.0.1:5070\"\n"
	cases := map[string]string{
		"      share: {map: {\"34020000001320000007\": \"123\"}}":                                                                      "share.map.34020000001320000007",
		"      share: {map: {\"34020000001320000007\": \"44010000001310000001\", \"34020000001320000008\": \"44010000001310000001\"}}": "is also the mapping",
		"      share: {channels: [\"abc\"]}":                                                                                           "share.channels[0]",
		"      share: {map: {\"34020000001320000007\": \"34020000002000000001\"}}":                                                     "own id",
		"      charset: big5": ".charset",
		"      share: {map: {34020000001320000007: \"44010000001310000001\"}}": "must be quoted",
	}
	for extra, want := range cases {
		_, err := Parse([]byte(base + extra + "\n"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v does not mention %q", extra, err, want)
		}
	}
}

func TestSecurityKeys(t *testing.T) {
	cfg, err := Parse([]byte(`
lower:
  signalling_digest: require
  note_seed: "lower-seed"
  devices:
    - {id: "34020000001320000001", note_algorithm: sm3}
    - {id: "34020000001320000002", signalling_digest: "off"}
upper:
  platforms:
    - id: "44010000002000000001"
      address: "127.0.0.1:5070"
      transport: TLS
      tls: {ca: "ca.pem", server_name: "upper.example"}
      allow_from: ["10.0.0.0/8"]
      signalling_digest: send
      note_seed: "s"
      note_algorithm: sha-256
security:
  gateway_id: "34020000002000000099"
`))
	if err != nil {
		t.Fatal(err)
	}
	if d := cfg.DeviceSignalling(cfg.Lower.Devices[0]); !d.Requires() || d.NoteSeed != "lower-seed" || d.NoteAlgorithm != "SM3" || d.NoteEncoding != "base64" {
		t.Fatalf("device inherits lower's signalling: %+v", d)
	}
	if d := cfg.DeviceSignalling(cfg.Lower.Devices[1]); d.Sends() {
		t.Fatalf("device's own off wins: %+v", d)
	}
	p := cfg.Upper.Platforms[0]
	if p.Transport != "tls" || p.TLS.ServerName != "upper.example" || p.NoteAlgorithm != "SHA-256" || !p.Sends() || p.Requires() {
		t.Fatalf("platform: %+v", p)
	}
	if cfg.GatewayID() != "34020000002000000099" || cfg.Security.MaxHops != 8 || cfg.Security.DateWindow != 10*time.Minute ||
		cfg.Security.Lockout.MaxFailuresPerID != 20 || cfg.Upper.SubscribeExpiresMax != 3600 || cfg.Lower.BindSource != "ip" {
		t.Fatalf("security defaults: %+v", cfg.Security)
	}
}

func TestSecurityValidation(t *testing.T) {
	cases := map[string]string{
		"lower:\n  signalling_digest: require":     "lower.note_seed",
		"lower:\n  bind_source: mac":               "lower.bind_source",
		"lower:\n  password_ha1: \"abc\"":          "lower.password_ha1",
		"lower:\n  tls_listen: \"127.0.0.1:5062\"": "lower.tls",
		"http:\n  listen: \"0.0.0.0:8780\"":        "http.token",
		"security:\n  max_hops: 0":                 "security.max_hops",
		"lower:\n  note_algorithm: SHA-1":          "lower.note_algorithm",
		"upper:\n  platforms:\n    - id: \"44010000002000000001\"\n      address: \"1.2.3.4:5060\"\n      allow_from: [\"nope\"]": "upper.platforms[0].allow_from[0]",
	}
	for yaml, key := range cases {
		_, err := Parse([]byte(yaml))
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%q: error %v does not name %s", yaml, err, key)
		}
	}
	if _, err := Parse([]byte("http:\n  listen: \"0.0.0.0:8780\"\n  token: \"t0k3n\"")); err != nil {
		t.Errorf("a token makes a non-loopback API valid: %v", err)
	}
}

func TestWarningsForOpenDoors(t *testing.T) {
	cfg, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if w := cfg.Warnings(); len(w) != 1 || !strings.Contains(w[0], "allow_unknown") {
		t.Fatalf("default config warnings: %q", w)
	}
	cfg, err = Parse([]byte("lower:\n  allow_unknown: false\nhttp:\n  listen: \"0.0.0.0:8780\"\n  token: \"t\""))
	if err != nil {
		t.Fatal(err)
	}
	if w := cfg.Warnings(); len(w) != 1 || !strings.Contains(w[0], "admin API") {
		t.Fatalf("warnings: %q", w)
	}
}

// Every shipped example must pass `gbproxy --check-config`.
func TestExamplesAreValid(t *testing.T) {
	files, err := filepath.Glob("examples/*.yaml")
	if err != nil || len(files) < 3 {
		t.Fatalf("examples: %v %v", files, err)
	}
	for _, f := range files {
		if _, err := Load(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestClusterKeys(t *testing.T) {
	cfg, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster.Enabled() || cfg.Cluster.NodeTTL != 10*time.Second || cfg.Cluster.Redirect {
		t.Fatalf("single node by default: %+v", cfg.Cluster)
	}
	cfg, err = Parse([]byte("cluster:\n  etcd: [\"http://127.0.0.1:2379\"]\n  node_id: n1\n  advertise: \"10.0.0.1:5060\"\n  redirect: true"))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Cluster.Enabled() || cfg.Cluster.NodeID != "n1" || cfg.Cluster.Advertise != "10.0.0.1:5060" || !cfg.Cluster.Redirect {
		t.Fatalf("cluster keys: %+v", cfg.Cluster)
	}
	t.Setenv("GBPROXY_CLUSTER_ETCD", "http://a:2379,http://b:2379")
	t.Setenv("GBPROXY_CLUSTER_NODE_ID", "n2")
	t.Setenv("GBPROXY_CLUSTER_ADVERTISE", "10.0.0.2:5060")
	if cfg, err = Parse(nil); err != nil || len(cfg.Cluster.Etcd) != 2 || cfg.Cluster.NodeID != "n2" {
		t.Fatalf("cluster from the environment: %+v %v", cfg, err)
	}
}

func TestClusterValidation(t *testing.T) {
	const etcd = "cluster:\n  etcd: [\"http://127.0.0.1:2379\"]\n"
	cases := map[string]string{
		etcd + "  advertise: \"10.0.0.1:5060\"":                                "cluster.node_id",
		etcd + "  node_id: \"a/b\"\n  advertise: \"10.0.0.1:5060\"":            "cluster.node_id",
		etcd + "  node_id: n1":                                                 "cluster.advertise",
		etcd + "  node_id: n1\n  advertise: \"0.0.0.0:5060\"":                  "cluster.advertise",
		etcd + "  node_id: n1\n  advertise: \"10.0.0.1\"":                      "cluster.advertise",
		etcd + "  node_id: n1\n  advertise: \"10.0.0.1:5060\"\n  node_ttl: 1s": "cluster.node_ttl",
		"cluster:\n  redirect: true":                                           "cluster.redirect",
	}
	for yaml, key := range cases {
		_, err := Parse([]byte(yaml))
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%q: error %v does not name %s", yaml, err, key)
		}
	}
}

func TestClusterSecurityKeys(t *testing.T) {
	const base = "cluster:\n  node_id: n1\n  advertise: \"10.0.0.1:5060\"\n"
	cfg, err := Parse([]byte(base + "  etcd: [\"https://10.0.0.5:2379\"]\n  tls: {ca: ca.pem, cert: c.pem, key: c.key, server_name: etcd.local}\n  username: gbproxy\n  password: pw"))
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Cluster
	if c.TLS != (TLSClientConfig{CA: "ca.pem", Cert: "c.pem", Key: "c.key", ServerName: "etcd.local"}) || c.Username != "gbproxy" || c.Password != "pw" || !c.UsesTLS() {
		t.Fatalf("cluster security keys: %+v", c)
	}
	if w := cfg.Warnings(); slices.ContainsFunc(w, func(s string) bool { return strings.Contains(s, "cluster.etcd") }) {
		t.Fatalf("https endpoint warned about: %q", w)
	}
	// host:port with cluster.tls is TLS, as the etcd client dials it.
	if cfg, err = Parse([]byte(base + "  etcd: [\"10.0.0.5:2379\"]\n  tls: {ca: ca.pem}")); err != nil || !cfg.Cluster.UsesTLS() {
		t.Fatalf("schemeless endpoint with tls: %v", err)
	}
	t.Setenv("GBPROXY_CLUSTER_PASSWORD", "from-env")
	if cfg, err = Parse([]byte(base + "  etcd: [\"https://10.0.0.5:2379\"]\n  username: gbproxy")); err != nil || cfg.Cluster.Password != "from-env" {
		t.Fatalf("password from the environment: %v", err)
	}
}

func TestClusterSecurityValidation(t *testing.T) {
	const base = "cluster:\n  node_id: n1\n  advertise: \"10.0.0.1:5060\"\n"
	cases := map[string]string{
		base + "  etcd: [\"https://a:2379\"]\n  tls: {cert: c.pem}":            "cluster.tls: cert and key go together",
		base + "  etcd: [\"http://a:2379\"]\n  tls: {ca: ca.pem}":              "cluster.tls: is set but cluster.etcd has http://",
		base + "  etcd: [\"https://a:2379\", \"http://b:2379\"]":               "cluster.etcd: mixes http:// and https://",
		base + "  etcd: [\"unix://a\"]":                                        "cluster.etcd[0]",
		base + "  etcd: [\"https://a:2379\"]\n  username: gbproxy":             "cluster.password: is required with cluster.username",
		base + "  etcd: [\"https://a:2379\"]\n  password: pw":                  "cluster.username: is required with cluster.password",
		base + "  etcd: [\"https://a:2379\"]\n  tls: {ca: ca.pem, key: c.key}": "cluster.tls: cert and key",
	}
	for yaml, want := range cases {
		_, err := Parse([]byte(yaml))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v does not say %q", yaml, err, want)
		}
	}
}

func TestClusterPlainHTTPWarning(t *testing.T) {
	const base = "lower:\n  allow_unknown: false\ncluster:\n  node_id: n1\n  advertise: \"10.0.0.1:5060\"\n"
	for etcd, warned := range map[string]bool{
		`["http://10.0.0.5:2379"]`:                       true,
		`["10.0.0.5:2379"]`:                              true,
		`["http://etcd.example:2379"]`:                   true,
		`["http://127.0.0.1:2379", "http://[::1]:2379"]`: false,
		`["http://localhost:2379"]`:                      false,
		`["https://10.0.0.5:2379"]`:                      false,
	} {
		cfg, err := Parse([]byte(base + "  etcd: " + etcd))
		if err != nil {
			t.Fatal(err)
		}
		w := cfg.Warnings()
		got := len(w) == 1 && strings.Contains(w[0], "plain http") && strings.Contains(w[0], "in the clear")
		if got != warned || (!warned && len(w) != 0) {
			t.Errorf("%s: warnings %q", etcd, w)
		}
	}
}
