// Package metrics keeps the counters and gauges behind /metrics and renders
// them in the Prometheus text exposition format. It is deliberately small:
// gbproxy exposes a few dozen series, so a mutex-guarded map of atomics is
// plenty and avoids a client library.
package metrics

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

type series struct {
	name   string
	labels string // rendered `{k="v",...}` or ""
	value  atomic.Int64
}

// Registry is safe for concurrent use.
type Registry struct {
	mu     sync.RWMutex
	series map[string]*series
	help   map[string]string
	gauges map[string]func() float64
}

func New() *Registry {
	return &Registry{series: map[string]*series{}, help: map[string]string{}, gauges: map[string]func() float64{}}
}

// Describe sets the HELP text of a metric family.
func (r *Registry) Describe(name, help string) {
	r.mu.Lock()
	r.help[name] = help
	r.mu.Unlock()
}

// Add adds delta to the counter name with label pairs (k1, v1, k2, v2, ...).
func (r *Registry) Add(name string, delta int64, labelPairs ...string) {
	if r == nil {
		return
	}
	key := renderLabels(labelPairs)
	full := name + key
	r.mu.RLock()
	s := r.series[full]
	r.mu.RUnlock()
	if s == nil {
		r.mu.Lock()
		if s = r.series[full]; s == nil {
			s = &series{name: name, labels: key}
			r.series[full] = s
		}
		r.mu.Unlock()
	}
	s.value.Add(delta)
}

// Inc adds one.
func (r *Registry) Inc(name string, labelPairs ...string) { r.Add(name, 1, labelPairs...) }

// Value returns the current value of a counter (0 when absent); for tests and the API.
func (r *Registry) Value(name string, labelPairs ...string) int64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if s := r.series[name+renderLabels(labelPairs)]; s != nil {
		return s.value.Load()
	}
	return 0
}

// Gauge registers a function read at scrape time.
func (r *Registry) Gauge(name, help string, f func() float64) {
	r.mu.Lock()
	r.gauges[name] = f
	r.help[name] = help
	r.mu.Unlock()
}

// WritePrometheus renders every series, families sorted by name.
func (r *Registry) WritePrometheus(w io.Writer) error {
	r.mu.RLock()
	byName := map[string][]*series{}
	for _, s := range r.series {
		byName[s.name] = append(byName[s.name], s)
	}
	gauges := make(map[string]func() float64, len(r.gauges))
	for k, v := range r.gauges {
		gauges[k] = v
	}
	help := make(map[string]string, len(r.help))
	for k, v := range r.help {
		help[k] = v
	}
	r.mu.RUnlock()

	var names []string
	for n := range byName {
		names = append(names, n)
	}
	for n := range gauges {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		if h := help[n]; h != "" {
			fmt.Fprintf(&b, "# HELP %s %s\n", n, h)
		}
		if f, ok := gauges[n]; ok {
			fmt.Fprintf(&b, "# TYPE %s gauge\n%s %g\n", n, n, f())
			continue
		}
		fmt.Fprintf(&b, "# TYPE %s counter\n", n)
		ss := byName[n]
		sort.Slice(ss, func(i, j int) bool { return ss[i].labels < ss[j].labels })
		for _, s := range ss {
			fmt.Fprintf(&b, "%s%s %d\n", n, s.labels, s.value.Load())
		}
	}
	_, err := io.WriteString(w, b.String())
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
		b.WriteString(escape(pairs[i+1]))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func escape(v string) string { return labelEscaper.Replace(v) }
