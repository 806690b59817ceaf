package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/configs"
)

// Operators read `5000` as seconds: durations must be written as durations.
func TestLoggerWritesDurationsAsDurations(t *testing.T) {
	for _, format := range []string{"json", "console", "journald"} {
		var buf bytes.Buffer
		log := newLogger(configs.LogConfig{Level: "info", Format: format}, &buf)
		log.Info().Dur("retry_in", 5*time.Second).Msg("x")
		if !strings.Contains(buf.String(), "5s") || strings.Contains(buf.String(), "5000") {
			t.Errorf("%s log line %q: want the duration written as 5s", format, buf.String())
		}
	}
}

// log.format journald: one JSON object per line behind the sd-daemon
// priority prefix journald files it under, and no timestamp (journald has
// its own).
func TestLoggerJournaldFormat(t *testing.T) {
	cfg, err := configs.Parse([]byte("log:\n  level: debug\n  format: journald\n"))
	if err != nil {
		t.Fatalf("log.format journald: %v", err)
	}
	var buf bytes.Buffer
	log := newLogger(cfg.Log, &buf)
	log.Debug().Msg("d")
	log.Info().Str("device_id", "34020000001320000001").Msg("i")
	log.Warn().Msg("w")
	log.Error().Msg("e")
	log.Log().Msg("n")
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	want := []struct{ prefix, msg string }{{"<7>", "d"}, {"<6>", "i"}, {"<4>", "w"}, {"<3>", "e"}, {"<5>", "n"}}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i, w := range want {
		rest, ok := strings.CutPrefix(lines[i], w.prefix)
		if !ok {
			t.Errorf("line %q: want priority prefix %s", lines[i], w.prefix)
			continue
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(rest), &ev); err != nil {
			t.Errorf("line %q after the prefix is not JSON: %v", lines[i], err)
			continue
		}
		if ev["message"] != w.msg {
			t.Errorf("line %q: message %v, want %q", lines[i], ev["message"], w.msg)
		}
		if _, ok := ev["time"]; ok {
			t.Errorf("line %q has a timestamp; journald stamps lines itself", lines[i])
		}
	}
	if !strings.Contains(lines[1], `"device_id":"34020000001320000001"`) {
		t.Errorf("structured field lost: %q", lines[1])
	}
}
