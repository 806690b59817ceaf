// Package cascade is gbproxy's signalling core: it is the upper platform to
// the devices and lower platforms that register to it (registrar, keepalive,
// catalog), and a lower platform to every configured upper platform (upward
// registration, keepalive, answering their queries). The device and channel
// registry lives here too, persisted in the store.
package cascade

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/cluster"
	"github.com/gbproxy/gbproxy/configs"
	"github.com/gbproxy/gbproxy/endpoint"
	"github.com/gbproxy/gbproxy/metrics"
	"github.com/gbproxy/gbproxy/security"
	"github.com/gbproxy/gbproxy/store"
)

// env is what both sides share: configuration, logging, metrics, the store,
// the signalling checks (one Note replay cache), the clock and the lifetime.
type env struct {
	cfg     *configs.Config
	log     zerolog.Logger
	metrics *metrics.Registry
	store   *store.Store
	sig     *signalling
	now     func() time.Time
	ctx     context.Context
	tasks   *tasks
	// wg is the long-running loops (monitor, subscriptions, upper clients).
	wg sync.WaitGroup
	// cluster is the state shared with the other nodes; nil on a single
	// node.
	cluster *cluster.Cluster
}

// Cascade joins the lower side (devices below us) and the upper side (the
// platforms above) and runs them.
type Cascade struct {
	*env
	lower  *lowerSide
	upper  *upperSide
	cancel context.CancelFunc

	// manageMu serialises run-time changes of platforms and devices
	// (manage.go); closed refuses them once Close began.
	manageMu sync.Mutex
	closed   bool
	file     fileEntries // the config file's entries as last applied
	// In a cluster (manage_cluster.go): the watch's changes to apply, and
	// the file's edits made while stopped, written to etcd at start.
	managed      *managedQueue
	startChanges fileChanges
}

// New opens both SIP zones and restores the registry from st.
func New(cfg *configs.Config, st *store.Store, log zerolog.Logger, m *metrics.Registry) (*Cascade, error) {
	ctx, cancel := context.WithCancel(context.Background())
	e := &env{cfg: cfg, log: log, metrics: m, store: st, sig: newSignalling(cfg), now: time.Now, ctx: ctx, tasks: &tasks{}}
	c := &Cascade{env: e, cancel: cancel}
	c.lower = newLowerSide(e)
	c.upper = newUpperSide(e, c.lower.registry, c.lower)
	c.lower.feed = c.upper
	c.lower.registry.publish = c.upper.subs.channelEvents
	if err := c.lower.registry.load(c.now()); err != nil {
		cancel()
		return nil, fmt.Errorf("restore registry from store: %w", err)
	}
	running := c.initialEntries()
	c.lower.setAllowedList(running.Devices)
	lowerTLS := ""
	var lowerTLSConfig *tls.Config
	if cfg.Lower.TLSListen != "" {
		tlsCfg, err := security.LoadServerTLS(cfg.Lower.TLS)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("lower.tls: %w", err)
		}
		lowerTLS, lowerTLSConfig = cfg.Lower.TLSListen, tlsCfg
	}
	var err error
	opts := zoneOptions(cfg, log, m)
	opts.Name, opts.Listen, opts.TLSListen, opts.TLSConfig = "lower", cfg.Lower.Listen, lowerTLS, lowerTLSConfig
	opts.OnConnClosed, opts.Guard, opts.Outgoing = c.lower.lowerConnClosed, &lowerGuard{l: c.lower, mode: cfg.Lower.BindSource}, c.lower.toDevice
	if c.lower.ep, err = endpoint.Listen(opts); err != nil {
		cancel()
		return nil, err
	}
	opts.Name, opts.Listen, opts.TLSListen, opts.TLSConfig = "upper", cfg.Upper.Listen, "", nil
	opts.OnConnClosed, opts.Guard, opts.Outgoing = c.upper.upperConnClosed, &upperGuard{up: c.upper}, c.upper.toUpper
	if c.upper.ep, err = endpoint.Listen(opts); err != nil {
		c.lower.ep.Close()
		cancel()
		return nil, err
	}
	c.describeMetrics()
	c.lower.handle()
	c.upper.handle()
	for _, p := range running.Platforms {
		if err := c.upper.put(p); err != nil {
			c.lower.ep.Close()
			c.upper.ep.Close()
			cancel()
			return nil, fmt.Errorf("upper platform %s: %w", p.ID, err)
		}
	}
	return c, nil
}

// zoneOptions are what both SIP zones share: logging and the limits on
// sources that are neither a bound device nor a configured upper (one
// request budget per source IP across both zones).
func zoneOptions(cfg *configs.Config, log zerolog.Logger, m *metrics.Registry) endpoint.Options {
	unknown := security.NewRateLimiter(cfg.Security.UnauthenticatedRate, cfg.Security.UnauthenticatedBurst, 0)
	return endpoint.Options{
		Logger: log, Metrics: m,
		Limit:         func(ip string) bool { return unknown.Allow(ip, time.Now()) },
		MaxConnsPerIP: cfg.Security.MaxConnsPerIP,
		MaxConns:      cfg.Security.MaxConns,
		IdleTimeout:   cfg.Security.TCPIdleTimeout,
	}
}

// Start serves both SIP zones (register other handlers on them before) and
// runs the keepalive monitor and the upward registrations.
func (c *Cascade) Start() {
	c.lower.ep.Serve()
	c.upper.ep.Serve()
	c.wg.Add(3)
	go c.lower.monitorDevices(&c.wg)
	go c.lower.subs.run(c.ctx, &c.wg)
	go c.upper.subs.run(c.ctx, &c.wg)
	c.manageMu.Lock()
	defer c.manageMu.Unlock()
	c.upper.start()
}

// Close unregisters from every upper platform (bounded by ctx), stops all
// loops and closes both zones. The store is the caller's to close.
func (c *Cascade) Close(ctx context.Context) {
	c.manageMu.Lock()
	c.closed = true
	c.manageMu.Unlock()
	var wg sync.WaitGroup
	for _, u := range c.upper.upperList() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u.unregister(ctx)
		}()
	}
	wg.Wait()
	c.cancel()
	c.tasks.closeAndWait()
	c.wg.Wait()
	c.lower.catalogs.stop()
	c.lower.ep.Close()
	c.upper.ep.Close()
}

// Registry exposes devices and channels (API, later the B2BUA).
func (c *Cascade) Registry() *Registry { return c.lower.registry }

// LowerAddr and UpperAddr are the listen addresses actually bound.
func (c *Cascade) LowerAddr() string { return c.lower.ep.Addr() }
func (c *Cascade) UpperAddr() string { return c.upper.ep.Addr() }

// LowerTLSAddr is the bound lower.tls_listen address, "" without one.
func (c *Cascade) LowerTLSAddr() string { return c.lower.ep.TLSAddr() }

// Channels lists every channel with its effective status and the IDs the
// upper platforms that see it know it by.
func (c *Cascade) Channels() []ChannelView {
	return c.lower.registry.channelViews(c.upper.views())
}

// Platforms reports every configured upper platform.
func (c *Cascade) Platforms() []PlatformState { return c.upper.platforms() }

func (c *Cascade) describeMetrics() {
	m := c.metrics
	m.Describe("gbproxy_sip_messages_total", "SIP messages by side (lower|upper), direction (in|out), method and response status (empty for requests).")
	m.Describe("gbproxy_registrations_total", "Downward REGISTER outcomes by result.")
	m.Describe("gbproxy_keepalives_total", "Keepalives by side (lower: received from devices; upper: sent to platforms) and result.")
	m.Describe("gbproxy_device_offline_total", "Devices going offline by reason.")
	m.Describe("gbproxy_upper_registrations_total", "Upward REGISTER outcomes by platform and result.")
	m.Histogram("gbproxy_routed_query_seconds", "Queries from upper platforms answered by a device: time from the upper's request to the device's (last) answer delivered to the upper, by platform.", metrics.LatencyBuckets)
	m.Histogram("gbproxy_upper_registration_seconds", "Upward REGISTER round trips answered by the upper platform (the digest challenge included), by platform.", metrics.LatencyBuckets)
	m.Describe("gbproxy_routed_total", "Queries and controls from upper platforms routed to devices, by platform and result.")
	m.Describe("gbproxy_alarms_total", "Alarms received from devices (in) and delivered to upper platforms (out).")
	m.Describe("gbproxy_notify_total", "NOTIFYs to subscribed upper platforms by platform, kind and result.")
	m.Describe("gbproxy_device_subscriptions_total", "Our SUBSCRIBEs to devices by kind and result.")
	m.Describe("gbproxy_channels_refused_total", "Catalog items refused because another device owns the ID or it is our own (loop guard).")
	m.Gauge("gbproxy_routes_pending", "Routed requests waiting for their device's answer.", func() float64 { return float64(c.upper.routes.size()) })
	m.Gauge("gbproxy_devices_online", "Devices currently online.", func() float64 {
		_, online := c.lower.registry.Counts()
		return float64(online)
	})
	m.Gauge("gbproxy_devices_known", "Devices known (online or not).", func() float64 {
		known, _ := c.lower.registry.Counts()
		return float64(known)
	})
}

// optionsHandler answers OPTIONS with 200: some platforms use it as a heartbeat.
func optionsHandler(ep *endpoint.Endpoint, allow string) endpoint.Handler {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		ep.Respond(tx, req, sip.StatusOK, "OK", nil, sip.NewHeader("Allow", allow))
	}
}

func lockoutConfig(l configs.LockoutConfig) security.LockoutConfig {
	return security.LockoutConfig{MaxFailures: l.MaxFailures, Window: l.Window, LockFor: l.LockFor,
		MaxFailuresPerIP: l.MaxFailuresPerIP, MaxFailuresPerID: l.MaxFailuresPerID}
}

// Date header value for time sync: yyyy-MM-ddTHH:mm:ss.SSS, local time.
func gbDate(t time.Time) string { return t.Format("2006-01-02T15:04:05.000") }
