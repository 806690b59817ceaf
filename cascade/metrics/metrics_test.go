package metrics

import (
	"strings"
	"testing"
)

func TestPrometheusText(t *testing.T) {
	r := New()
	r.Describe("gbproxy_sip_messages_total", "SIP messages by side, direction, method and status.")
	r.Inc("gbproxy_sip_messages_total", "side", "lower", "method", "REGISTER")
	r.Add("gbproxy_sip_messages_total", 2, "side", "lower", "method", "REGISTER")
	r.Inc("gbproxy_sip_messages_total", "side", "upper", "method", `ME"SSAGE`)
	r.Gauge("gbproxy_devices_online", "Devices online.", func() float64 { return 7 })
	var b strings.Builder
	if err := r.WritePrometheus(&b); err != nil {
		t.Fatal(err)
	}
	want := `# TYPE gbproxy_devices_online gauge
gbproxy_devices_online 7
# HELP gbproxy_sip_messages_total SIP messages by side, direction, method and status.
# TYPE gbproxy_sip_messages_total counter
gbproxy_sip_messages_total{side="lower",method="REGISTER"} 3
gbproxy_sip_messages_total{side="upper",method="ME\"SSAGE"} 1
`
	if !strings.Contains(b.String(), want) {
		t.Fatalf("got:\n%s", b.String())
	}
	if r.Value("gbproxy_sip_messages_total", "side", "lower", "method", "REGISTER") != 3 {
		t.Fatal("Value")
	}
}
