package metrics

import (
	"strings"
	"testing"
	"time"
)

func scrape(t *testing.T, r *Registry) string {
	t.Helper()
	var b strings.Builder
	if err := r.WritePrometheus(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestPrometheusText(t *testing.T) {
	r := New()
	r.Describe("gbproxy_sip_messages_total", "SIP messages by side, direction, method and status.")
	r.Inc("gbproxy_sip_messages_total", "side", "lower", "method", "REGISTER")
	r.Add("gbproxy_sip_messages_total", 2, "side", "lower", "method", "REGISTER")
	r.Inc("gbproxy_sip_messages_total", "side", "upper", "method", `ME"SSAGE`)
	r.Gauge("gbproxy_devices_online", "Devices online.", func() float64 { return 7 })
	r.Describe("gbproxy_never_counted_total", "A family without samples is not rendered.")
	got := scrape(t, r)
	want := `# HELP gbproxy_devices_online Devices online.
# TYPE gbproxy_devices_online gauge
gbproxy_devices_online 7
# HELP gbproxy_sip_messages_total SIP messages by side, direction, method and status.
# TYPE gbproxy_sip_messages_total counter
gbproxy_sip_messages_total{side="lower",method="REGISTER"} 3
gbproxy_sip_messages_total{side="upper",method="ME\"SSAGE"} 1
`
	if !strings.HasPrefix(got, want) {
		t.Fatalf("got:\n%s", got)
	}
	if strings.Contains(got, "gbproxy_never_counted_total") {
		t.Fatalf("empty family rendered:\n%s", got)
	}
	if r.Value("gbproxy_sip_messages_total", "side", "lower", "method", "REGISTER") != 3 {
		t.Fatal("Value")
	}
}

func TestHistogram(t *testing.T) {
	r := New()
	r.Histogram("gbproxy_invite_setup_seconds", "INVITE set-up time.", []float64{0.1, 1})
	r.Observe("gbproxy_invite_setup_seconds", 50*time.Millisecond, "platform", "p1")
	r.Observe("gbproxy_invite_setup_seconds", 500*time.Millisecond, "platform", "p1")
	r.Observe("gbproxy_invite_setup_seconds", 5*time.Second, "platform", "p1")
	r.Observe("gbproxy_undeclared_seconds", time.Second) // dropped: no buckets
	got := scrape(t, r)
	want := `# HELP gbproxy_invite_setup_seconds INVITE set-up time.
# TYPE gbproxy_invite_setup_seconds histogram
gbproxy_invite_setup_seconds_bucket{platform="p1",le="0.1"} 1
gbproxy_invite_setup_seconds_bucket{platform="p1",le="1"} 2
gbproxy_invite_setup_seconds_bucket{platform="p1",le="+Inf"} 3
gbproxy_invite_setup_seconds_sum{platform="p1"} 5.55
gbproxy_invite_setup_seconds_count{platform="p1"} 3
`
	if !strings.HasPrefix(got, want) {
		t.Fatalf("got:\n%s", got)
	}
	if strings.Contains(got, "gbproxy_undeclared_seconds") {
		t.Fatal("an undeclared histogram was rendered")
	}
}

// Registries are independent (tests run several proxies in one process),
// Value creates nothing, and the process and Go runtime series are present.
func TestRegistriesApartAndProcessSeries(t *testing.T) {
	a, b := New(), New()
	a.Inc("gbproxy_alarms_total", "direction", "in")
	if b.Value("gbproxy_alarms_total", "direction", "in") != 0 || a.Value("gbproxy_alarms_total", "direction", "out") != 0 {
		t.Fatal("a counter leaked between registries or Value saw a series never counted")
	}
	got := scrape(t, b)
	if strings.Contains(got, "gbproxy_alarms_total") {
		t.Fatalf("b renders a's counter:\n%s", got)
	}
	if strings.Contains(scrape(t, a), `direction="out"`) {
		t.Fatal("Value created a series")
	}
	for _, s := range []string{"\nprocess_resident_memory_bytes ", "\nprocess_open_fds ", "\ngo_goroutines ", "\ngo_memstats_alloc_bytes "} {
		if !strings.Contains(got, s) {
			t.Errorf("%q missing from:\n%s", s[1:], got)
		}
	}
	var nilReg *Registry
	nilReg.Inc("gbproxy_alarms_total")
	nilReg.Observe("gbproxy_invite_setup_seconds", time.Second)
}

// A name used as one type and then another is dropped, not a panic.
func TestTypeMismatchDropped(t *testing.T) {
	r := New()
	r.Gauge("gbproxy_sessions", "Sessions.", func() float64 { return 1 })
	r.Inc("gbproxy_sessions")
	r.Observe("gbproxy_sessions", time.Second)
	if got := scrape(t, r); !strings.Contains(got, "\ngbproxy_sessions 1\n") {
		t.Fatalf("got:\n%s", got)
	}
}
