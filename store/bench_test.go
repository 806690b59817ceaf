package store

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// benchDevice is shaped like a registry device record: about 300 bytes of JSON.
type benchDevice struct {
	DeviceID     string    `json:"device_id"`
	Name         string    `json:"name"`
	Manufacturer string    `json:"manufacturer"`
	Model        string    `json:"model"`
	Firmware     string    `json:"firmware"`
	Transport    string    `json:"transport"`
	Contact      string    `json:"contact"`
	Expires      int       `json:"expires"`
	Channels     int       `json:"channels"`
	RegisteredAt time.Time `json:"registered_at"`
}

// BenchmarkPut10kThenFlush measures one op = 10,000 Puts plus the Flush that writes
// them; put-ns is the time a registering goroutine spends in one Put.
func BenchmarkPut10kThenFlush(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "gb.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	records := make([]benchDevice, 10000)
	for i := range records {
		records[i] = benchDevice{
			DeviceID: fmt.Sprintf("34020000001320%06d", i), Name: "Camera at gate " + fmt.Sprint(i),
			Manufacturer: "Hikvision", Model: "DS-2CD3T47G2", Firmware: "V5.7.3 build 220112",
			Transport: "TCP", Contact: fmt.Sprintf("<sip:34020000001320%06d@192.0.2.10:5060;transport=tcp>", i),
			Expires: 3600, Channels: 4, RegisteredAt: time.Now(),
		}
	}
	if raw, _ := json.Marshal(records[0]); len(raw) < 250 || len(raw) > 350 {
		b.Fatalf("record is %d bytes of JSON, want about 300", len(raw))
	}
	var putTime time.Duration
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		for i := range records {
			s.Put("devices", records[i].DeviceID, &records[i])
		}
		putTime += time.Since(start)
		if err := s.Flush(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(putTime.Nanoseconds())/float64(b.N*len(records)), "put-ns")
}
