package configs

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T) *Config {
	t.Helper()
	cfg, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func jsonMap(t *testing.T, doc string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(doc))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

// An API body decodes as the file's entry does: defaults filled, durations
// from strings; errors name the field without the file's prefix.
func TestParsePlatform(t *testing.T) {
	cfg := mustParse(t)
	p, err := cfg.ParsePlatform(jsonMap(t, `{"id": "44010000002000000001", "address": "10.0.0.1:5060", "keepalive_interval": "20s", "expires": 600, "tls": {"ca": "ca.pem"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if p.Transport != "udp" || p.Domain != "4401000000" || p.Username != cfg.ID || p.KeepaliveInterval != 20*time.Second ||
		p.RetryInterval != time.Minute || p.Expires != 600 || p.Charset != "gb2312" || p.TLS.CA != "ca.pem" || p.NoteAlgorithm != "MD5" {
		t.Errorf("defaults or values: %+v", p)
	}
	for body, want := range map[string]string{
		`{"id": "44010000002000000001", "address": "nowhere"}`:                              "address: ",
		`{"id": "44010000002000000001", "address": "10.0.0.1:5060", "colour": "red"}`:       "colour: unknown key",
		`{"id": "44010000002000000001", "address": "10.0.0.1:5060", "tls": {"pem": "x"}}`:   "tls.pem: unknown key",
		`{"id": "44010000002000000001", "address": "10.0.0.1:5060", "retry_interval": "x"}`: "retry_interval: ",
		`{"id": "44010000002000000001", "address": "10.0.0.1:5060", "expires": "many"}`:     "expires: ",
		`{"id": 44010000002000000001, "address": "10.0.0.1:5060", "expires": 10}`:           "expires: 10 is below 60 seconds",
		`{"id": "` + cfg.ID + `", "address": "10.0.0.1:5060"}`:                              "id: is this proxy's own id",
		`{"id": "1", "address": "10.0.0.1:5060", "share": {"channels": ["x"]}}`:             "share.channels[0]: ",
	} {
		_, err := cfg.ParsePlatform(jsonMap(t, body))
		if err == nil || !strings.HasPrefix(err.Error(), want) && !strings.Contains(err.Error(), "; "+want) {
			t.Errorf("%s: error %v, want one starting %q", body, err, want)
		}
	}
}

func TestParseDevice(t *testing.T) {
	cfg := mustParse(t)
	d, err := cfg.ParseDevice(jsonMap(t, `{"id": "34020000001320000001", "stream_mode": "TCP-Active", "note_algorithm": "sm3"}`))
	if err != nil || d.StreamMode != "tcp-active" || d.NoteAlgorithm != "SM3" {
		t.Fatalf("%+v %v", d, err)
	}
	// Older devices carry 18-digit codes: the registrar takes them, so the
	// allowed list does too.
	if _, err := cfg.ParseDevice(jsonMap(t, `{"id": "340200000013200001"}`)); err != nil {
		t.Errorf("18-digit device ID refused: %v", err)
	}
	for body, want := range map[string]string{
		`{"id": "3402"}`:                   "id: ",
		`{"id": "3402000000132000000123"}`: "id: ",
		`{"id": "34020000001320000001", "stream_mode": "sideways"}`:   "stream_mode: ",
		`{"id": "34020000001320000001", "password_ha1": "abc"}`:       "password_ha1: ",
		`{"id": "34020000001320000001", "signalling_digest": "send"}`: "note_seed: ",
		`{"id": "34020000001320000001", "passwd": "x"}`:               "passwd: unknown key",
	} {
		if _, err := cfg.ParseDevice(jsonMap(t, body)); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: error %v, want one starting %q", body, err, want)
		}
	}
}

// EntryMap is what ParsePlatform reads back, secrets included (the store
// keeps them), durations as strings.
func TestEntryMapRoundTrip(t *testing.T) {
	cfg := mustParse(t)
	all := true
	p, err := cfg.ParsePlatform(map[string]any{"id": "44010000002000000001", "address": "10.0.0.1:5060", "password": "pw",
		"note_seed": "seed", "signalling_digest": "send", "keepalive_interval": "90s", "share": map[string]any{"all": all, "map": map[string]any{"34020000001320000001": "44010000001310000001"}}})
	if err != nil {
		t.Fatal(err)
	}
	m := EntryMap(p)
	if m["keepalive_interval"] != "1m30s" || m["password"] != "pw" {
		t.Fatalf("EntryMap: %v", m)
	}
	b, _ := json.Marshal(m)
	back, err := cfg.ParsePlatform(jsonMap(t, string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if keys := ChangedKeys(p, back); len(keys) != 0 {
		t.Errorf("changed by the round trip: %v", keys)
	}
}

func TestChangedKeys(t *testing.T) {
	a := PlatformConfig{ID: "1", Address: "a:1", Password: "old", TLS: TLSClientConfig{CA: "x"}, KeepaliveInterval: time.Second}
	b := a
	b.Password, b.TLS.CA, b.MediaAllow = "new", "y", []string{}
	if got := strings.Join(ChangedKeys(a, b), ","); got != "password,tls.ca" {
		t.Errorf("ChangedKeys = %q (an empty list equals a missing one; values never appear)", got)
	}
	old, next := mustParse(t), mustParse(t)
	next.Log.Level = "warn"
	next.Upper.Platforms = []PlatformConfig{a}
	if got := strings.Join(RestartKeys(old, next), ","); got != "log.level" {
		t.Errorf("RestartKeys = %q", got)
	}
}
