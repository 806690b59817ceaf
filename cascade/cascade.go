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
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/configs"
	"github.com/gbproxy/gbproxy/endpoint"
	"github.com/gbproxy/gbproxy/metrics"
	"github.com/gbproxy/gbproxy/security"
	"github.com/gbproxy/gbproxy/store"
)

// Cascade ties both SIP zones, the registry and the upward clients together.
type Cascade struct {
	cfg     *configs.Config
	log     zerolog.Logger
	metrics *metrics.Registry
	store   *store.Store

	lower *endpoint.Endpoint
	upper *endpoint.Endpoint

	registry *Registry
	digest   *security.DigestServer
	sig      *signalling
	catalogs *catalogCollector
	routes   *routeTable
	follow   *followUps // broadcast and snapshot follow-ups of routed requests
	subs     *subscriptions
	// uppers and allowed change at run time (manage.go): readers load them
	// without a lock, writers hold manageMu and swap in new values.
	uppers  atomic.Pointer[upperSet]
	allowed atomic.Pointer[allowedTable]

	manageMu sync.Mutex
	started  bool
	closed   bool
	file     fileEntries // the config file's entries as last applied
	// offlineHooks run when a device goes offline (the B2BUA ends its calls).
	offlineHooks []func(deviceID, reason string)
	// dialogHook takes a device's MESSAGE inside a call's dialog (the
	// B2BUA forwards MediaStatus); nil when nothing does.
	dialogHook func(deviceID string, req *sip.Request) bool
	// upperLostHooks run when an upper's registration is lost (the B2BUA
	// ends its calls).
	upperLostHooks []func(platformID, reason string)

	now    func() time.Time
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New opens both SIP zones and restores the registry from st.
func New(cfg *configs.Config, st *store.Store, log zerolog.Logger, m *metrics.Registry) (*Cascade, error) {
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cascade{
		cfg: cfg, log: log, metrics: m, store: st,
		registry: newRegistry(st, log, cfg.ID),
		digest:   security.NewDigestServer(security.DigestConfig{Realm: cfg.Domain, Lockout: lockoutConfig(cfg.Security.Lockout)}),
		now:      time.Now,
		ctx:      ctx,
		cancel:   cancel,
	}
	running := c.initialEntries()
	allowed := allowedTable{}
	for _, d := range running.Devices {
		allowed[d.ID] = c.newAllowed(d)
	}
	c.allowed.Store(&allowed)
	c.uppers.Store(newUpperSet(nil))
	c.sig = newSignalling(cfg)
	c.catalogs = newCatalogCollector(c)
	c.routes = newRouteTable(c)
	c.follow = newFollowUps()
	c.subs = newSubscriptions(c)
	c.registry.publish = c.subs.channelEvents
	if err := c.registry.load(c.now()); err != nil {
		cancel()
		return nil, fmt.Errorf("restore registry from store: %w", err)
	}
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
	opts.OnConnClosed, opts.Guard, opts.Outgoing = c.lowerConnClosed, &lowerGuard{c: c, mode: cfg.Lower.BindSource}, c.toDevice
	if c.lower, err = endpoint.Listen(opts); err != nil {
		cancel()
		return nil, err
	}
	opts.Name, opts.Listen, opts.TLSListen, opts.TLSConfig = "upper", cfg.Upper.Listen, "", nil
	opts.OnConnClosed, opts.Guard, opts.Outgoing = c.upperConnClosed, &upperGuard{c: c}, c.toUpper
	if c.upper, err = endpoint.Listen(opts); err != nil {
		c.lower.Close()
		cancel()
		return nil, err
	}
	c.describeMetrics()
	c.lower.Handle(sip.REGISTER, c.handleRegister)
	c.lower.Handle(sip.MESSAGE, c.handleLowerMessage)
	c.lower.Handle(sip.NOTIFY, c.handleLowerNotify)
	c.lower.Handle(sip.OPTIONS, optionsHandler(c.lower, "REGISTER, MESSAGE, NOTIFY, BYE, OPTIONS"))
	c.upper.Handle(sip.MESSAGE, c.handleUpperMessage)
	c.upper.Handle(sip.SUBSCRIBE, c.handleUpperSubscribe)
	c.upper.Handle(sip.OPTIONS, optionsHandler(c.upper, "INVITE, ACK, BYE, CANCEL, MESSAGE, SUBSCRIBE, OPTIONS"))
	uppers := make([]*upperClient, 0, len(running.Platforms))
	for _, p := range running.Platforms {
		share := p.Share
		if saved, ok := c.savedShare(p.ID); ok {
			share = saved
		}
		u, err := newUpperClient(c, p, share)
		if err != nil {
			c.lower.Close()
			c.upper.Close()
			cancel()
			return nil, fmt.Errorf("upper platform %s: %w", p.ID, err)
		}
		uppers = append(uppers, u)
	}
	c.uppers.Store(newUpperSet(uppers))
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
	c.lower.Serve()
	c.upper.Serve()
	c.wg.Add(2)
	go c.monitorDevices()
	go c.subs.run(c.ctx)
	c.manageMu.Lock()
	defer c.manageMu.Unlock()
	c.started = true
	for _, u := range c.upperList() {
		u.start()
	}
}

// Close unregisters from every upper platform (bounded by ctx), stops all
// loops and closes both zones. The store is the caller's to close.
func (c *Cascade) Close(ctx context.Context) {
	c.manageMu.Lock()
	c.closed = true
	c.manageMu.Unlock()
	var wg sync.WaitGroup
	for _, u := range c.upperList() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u.unregister(ctx)
		}()
	}
	wg.Wait()
	c.cancel()
	c.wg.Wait()
	c.catalogs.stop()
	c.lower.Close()
	c.upper.Close()
}

// Registry exposes devices and channels (API, later the B2BUA).
func (c *Cascade) Registry() *Registry { return c.registry }

// LowerAddr and UpperAddr are the listen addresses actually bound.
func (c *Cascade) LowerAddr() string { return c.lower.Addr() }
func (c *Cascade) UpperAddr() string { return c.upper.Addr() }

// LowerTLSAddr is the bound lower.tls_listen address, "" without one.
func (c *Cascade) LowerTLSAddr() string { return c.lower.TLSAddr() }

// PlatformState is one upper platform as the API shows it.
type PlatformState struct {
	ID         string    `json:"id"`
	Address    string    `json:"address"`
	Transport  string    `json:"transport"`
	Charset    string    `json:"charset"`
	Registered bool      `json:"registered"`
	LastError  string    `json:"last_error"`
	Server     string    `json:"server,omitempty"` // where we are registered, after a 302
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
	Keepalive  time.Time `json:"last_keepalive,omitzero"`
	// GBVersion is the platform's X-GB-Ver; Negotiated the edition both
	// sides speak (2.0 = GB/T 28181-2016 when the platform sends none).
	GBVersion  string `json:"gb_version,omitempty"`
	Negotiated string `json:"negotiated_version"`

	Share          configs.ShareConfig `json:"share"`
	SharedChannels int                 `json:"shared_channels"`
	Subscriptions  []SubscriptionState `json:"subscriptions"`
	LastCatalog    *CatalogTransfer    `json:"last_catalog,omitempty"`
}

// CatalogTransfer is the outcome of our last catalog answer to a platform.
type CatalogTransfer struct {
	SN       int64     `json:"sn"`
	SumNum   int       `json:"sum_num"`
	Sent     int       `json:"sent"`
	Messages int       `json:"messages"`
	Failed   int       `json:"failed_messages"`
	Started  time.Time `json:"started_at"`
	Finished time.Time `json:"finished_at,omitzero"`
}

// negotiatedVersion: the older of the two editions; a peer that sends no
// X-GB-Ver is taken for GB/T 28181-2016.
func negotiatedVersion(peer string) string {
	if peer == "" {
		return "2.0"
	}
	if peer < endpoint.GBVersion {
		return peer
	}
	return endpoint.GBVersion
}

// Channels lists every channel with its effective status and the IDs the
// upper platforms that see it know it by.
func (c *Cascade) Channels() []ChannelView {
	uppers := c.upperList()
	views := make(map[string]*shareView, len(uppers))
	for _, u := range uppers {
		views[u.id] = u.view()
	}
	return c.registry.channelViews(views)
}

// Platforms reports every configured upper platform.
func (c *Cascade) Platforms() []PlatformState {
	uppers := c.upperList()
	out := make([]PlatformState, len(uppers))
	for i, u := range uppers {
		st := u.state()
		v := u.view()
		st.Negotiated = negotiatedVersion(st.GBVersion)
		st.Share = v.cfg
		st.SharedChannels = len(c.registry.catalogFor(v))
		st.Subscriptions = c.subs.statesOf(u.id)
		out[i] = st
	}
	return out
}

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
	m.Gauge("gbproxy_routes_pending", "Routed requests waiting for their device's answer.", func() float64 { return float64(c.routes.size()) })
	m.Gauge("gbproxy_devices_online", "Devices currently online.", func() float64 {
		_, online := c.registry.Counts()
		return float64(online)
	})
	m.Gauge("gbproxy_devices_known", "Devices known (online or not).", func() float64 {
		known, _ := c.registry.Counts()
		return float64(known)
	})
}

// optionsHandler answers OPTIONS with 200: some platforms use it as a heartbeat.
func optionsHandler(ep *endpoint.Endpoint, allow string) endpoint.Handler {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		ep.Respond(tx, req, sip.StatusOK, "OK", nil, sip.NewHeader("Allow", allow))
	}
}

// monitorDevices turns devices offline when their keepalives or their
// registration run out.
func (c *Cascade) monitorDevices() {
	defer c.wg.Done()
	timeout := c.cfg.Lower.KeepaliveInterval * time.Duration(c.cfg.Lower.KeepaliveTimeoutCount)
	tick := time.NewTicker(min(time.Second, c.cfg.Lower.KeepaliveInterval/2))
	defer tick.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-tick.C:
			ids, reasons := c.registry.expired(c.now(), timeout)
			for i, id := range ids {
				c.deviceOffline(id, reasons[i])
			}
			if every := c.cfg.Lower.CatalogRefreshInterval; every > 0 {
				for _, dev := range c.registry.catalogRefreshDue(c.now(), every) {
					c.catalogs.query(dev)
				}
			}
		}
	}
}

func (c *Cascade) deviceOffline(id, reason string) {
	if !c.registry.offline(id) {
		return
	}
	c.metrics.Inc("gbproxy_device_offline_total", "reason", reason)
	c.subs.poke()
	c.log.Info().Str("device_id", id).Str("reason", reason).Msg("device offline; its channels are now OFF")
	for _, f := range c.offlineHooks {
		f(id, reason)
	}
}

// lowerConnClosed: a device's TCP or TLS connection ending takes it offline.
func (c *Cascade) lowerConnClosed(remote string) {
	if id, ok := c.registry.deviceOnConn(remote); ok {
		c.deviceOffline(id, "connection closed")
	}
}

func (c *Cascade) upperConnClosed(remote string) {
	for _, u := range c.upperList() {
		u.connClosed(remote)
	}
}

func lockoutConfig(l configs.LockoutConfig) security.LockoutConfig {
	return security.LockoutConfig{MaxFailures: l.MaxFailures, Window: l.Window, LockFor: l.LockFor,
		MaxFailuresPerIP: l.MaxFailuresPerIP, MaxFailuresPerID: l.MaxFailuresPerID}
}

// Date header value for time sync: yyyy-MM-ddTHH:mm:ss.SSS, local time.
func gbDate(t time.Time) string { return t.Format("2006-01-02T15:04:05.000") }
