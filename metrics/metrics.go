// Package metrics is the facade behind /metrics: counters, gauges and
// histograms named as Prometheus series, kept in github.com/VictoriaMetrics/metrics.
// Each Registry is its own set (tests run several proxies in one process);
// the process_* and go_* series describe the whole process and are added to
// every scrape.
package metrics

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
)

// family is one metric family: its HELP text, its type, and a set holding
// only its series, so that it is rendered under its own HELP and TYPE lines.
// Only help changes after a family is published (under Registry.mu).
type family struct {
	typ     string // counter, gauge or histogram
	help    string
	buckets []float64 // histograms
	set     *vm.Set
}

// Registry is safe for concurrent use. The methods that record (Inc, Add,
// Observe) do nothing on a nil Registry.
type Registry struct {
	mu       sync.RWMutex
	families map[string]*family
}

func New() *Registry { return &Registry{families: map[string]*family{}} }

// Describe sets the HELP text of a counter family.
func (r *Registry) Describe(name, help string) {
	r.mu.Lock()
	r.familyLocked(name, "counter").help = help
	r.mu.Unlock()
}

// Histogram declares a histogram family with its HELP text and bucket upper
// bounds in seconds; Observe records into it.
func (r *Registry) Histogram(name, help string, buckets []float64) {
	r.mu.Lock()
	r.families[name] = &family{typ: "histogram", help: help, buckets: buckets, set: vm.NewSet()}
	r.mu.Unlock()
}

// LatencyBuckets are the upper bounds, in seconds, of the latency histograms:
// from a LAN round trip to a device that answers near a 30 s timeout.
var LatencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// Gauge registers a function read at scrape time, replacing any earlier one.
func (r *Registry) Gauge(name, help string, fn func() float64) {
	set := vm.NewSet()
	set.NewGauge(name, fn)
	r.mu.Lock()
	r.families[name] = &family{typ: "gauge", help: help, set: set}
	r.mu.Unlock()
}

func (r *Registry) familyLocked(name, typ string) *family {
	f := r.families[name]
	if f == nil {
		f = &family{typ: typ, set: vm.NewSet()}
		r.families[name] = f
	}
	return f
}

// family returns the family name of type typ, creating it when absent, or
// nil when name is already a family of another type.
func (r *Registry) family(name, typ string) *family {
	r.mu.RLock()
	f := r.families[name]
	r.mu.RUnlock()
	if f == nil {
		r.mu.Lock()
		f = r.familyLocked(name, typ)
		r.mu.Unlock()
	}
	if f.typ != typ {
		return nil // a programming error; dropped rather than a panic in the library
	}
	return f
}

// Add adds delta (>= 0) to the counter name with label pairs (k1, v1, k2, v2, ...).
func (r *Registry) Add(name string, delta int64, labelPairs ...string) {
	if r == nil || delta < 0 {
		return
	}
	if f := r.family(name, "counter"); f != nil {
		f.set.GetOrCreateCounter(name + renderLabels(labelPairs)).Add(int(delta))
	}
}

// Inc adds one.
func (r *Registry) Inc(name string, labelPairs ...string) { r.Add(name, 1, labelPairs...) }

// Observe records d in the histogram name; undeclared names (see
// Histogram) are dropped, having no buckets.
func (r *Registry) Observe(name string, d time.Duration, labelPairs ...string) {
	if r == nil {
		return
	}
	r.mu.RLock()
	f := r.families[name]
	r.mu.RUnlock()
	if f != nil && f.typ == "histogram" {
		f.set.GetOrCreatePrometheusHistogramExt(name+renderLabels(labelPairs), f.buckets).Update(d.Seconds())
	}
}

// Value returns the current value of a counter (0 when absent, which it does
// not create); for tests.
func (r *Registry) Value(name string, labelPairs ...string) int64 {
	r.mu.RLock()
	f := r.families[name]
	r.mu.RUnlock()
	full := name + renderLabels(labelPairs)
	if f == nil || f.typ != "counter" || !slices.Contains(f.set.ListMetricNames(), full) {
		return 0
	}
	return int64(f.set.GetOrCreateCounter(full).Get())
}

// WritePrometheus renders every family with samples, sorted by name, each
// under its HELP and TYPE lines, then the process_* and go_* series.
func (r *Registry) WritePrometheus(w io.Writer) error {
	r.mu.RLock()
	names := make([]string, 0, len(r.families))
	fams := make([]family, 0, len(r.families))
	for n := range r.families {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fams = append(fams, *r.families[n])
	}
	r.mu.RUnlock()

	var b, series bytes.Buffer
	for i, f := range fams {
		series.Reset()
		f.set.WritePrometheus(&series)
		if series.Len() == 0 {
			continue
		}
		if f.help != "" {
			fmt.Fprintf(&b, "# HELP %s %s\n", names[i], f.help)
		}
		fmt.Fprintf(&b, "# TYPE %s %s\n", names[i], f.typ)
		b.Write(series.Bytes())
	}
	vm.WriteProcessMetrics(&b)
	vm.WriteFDMetrics(&b)
	_, err := w.Write(b.Bytes())
	return err
}

func renderLabels(pairs []string) string {
	if len(pairs) < 2 {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i+1 < len(pairs); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(pairs[i])
		b.WriteString(`="`)
		b.WriteString(labelEscaper.Replace(pairs[i+1]))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
