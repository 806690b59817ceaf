package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/configs"
)

// Operators read `5000` as seconds: durations must be written as durations.
func TestLoggerWritesDurationsAsDurations(t *testing.T) {
	for _, format := range []string{"json", "console"} {
		var buf bytes.Buffer
		log := newLogger(configs.LogConfig{Level: "info", Format: format}, &buf)
		log.Info().Dur("retry_in", 5*time.Second).Msg("x")
		if !strings.Contains(buf.String(), "5s") || strings.Contains(buf.String(), "5000") {
			t.Errorf("%s log line %q: want the duration written as 5s", format, buf.String())
		}
	}
}
