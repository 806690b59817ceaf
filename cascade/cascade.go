// Package cascade is gbproxy's signalling core: it is the upper platform to
// the devices and lower platforms that register to it (registrar, keepalive,
// catalog), and a lower platform to every configured upper platform (upward
// registration, keepalive, answering their queries). The device and channel
// registry lives here too, persisted in the store.
package cascade

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/cascade/endpoint"
	"github.com/gbproxy/gbproxy/cascade/metrics"
	"github.com/gbproxy/gbproxy/cascade/store"
	"github.com/gbproxy/gbproxy/configs"
	"github.com/gbproxy/gbproxy/security"
)

// Cascade ties both SIP zones, the registry and the upward clients together.
type Cascade struct {
	cfg     *configs.Config
	log     zerolog.Logger
	metrics *metrics.Registry
	store   *store.Store

	lower *endpoint.Endpoint
	upper *endpoint.Endpoint

	registry  *Registry
	digest    *security.DigestServer
	passwords map[string]string // configured devices -> password ("" = lower.password)
	catalogs  *catalogCollector
	uppers    []*upperClient

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
		registry:  newRegistry(st, log),
		digest:    security.NewDigestServer(security.DigestConfig{Realm: cfg.Domain}),
		passwords: map[string]string{},
		now:       time.Now,
		ctx:       ctx,
		cancel:    cancel,
	}
	for _, d := range cfg.Lower.Devices {
		c.passwords[d.ID] = d.Password
	}
	c.catalogs = newCatalogCollector(c)
	if err := c.registry.load(c.now()); err != nil {
		cancel()
		return nil, fmt.Errorf("restore registry from store: %w", err)
	}
	var err error
	c.lower, err = endpoint.Listen(endpoint.Options{
		Name: "lower", Listen: cfg.Lower.Listen, Logger: log, Metrics: m,
		OnConnClosed: c.lowerConnClosed,
	})
	if err != nil {
		cancel()
		return nil, err
	}
	c.upper, err = endpoint.Listen(endpoint.Options{
		Name: "upper", Listen: cfg.Upper.Listen, Logger: log, Metrics: m,
		OnConnClosed: c.upperConnClosed,
	})
	if err != nil {
		c.lower.Close()
		cancel()
		return nil, err
	}
	c.describeMetrics()
	c.lower.Handle(sip.REGISTER, c.handleRegister)
	c.lower.Handle(sip.MESSAGE, c.handleLowerMessage)
	c.lower.Handle(sip.OPTIONS, optionsHandler(c.lower))
	c.upper.Handle(sip.MESSAGE, c.handleUpperMessage)
	c.upper.Handle(sip.OPTIONS, optionsHandler(c.upper))
	c.lower.Serve()
	c.upper.Serve()
	for _, p := range cfg.Upper.Platforms {
		c.uppers = append(c.uppers, newUpperClient(c, p))
	}
	return c, nil
}

// Start runs the keepalive monitor and the upward registrations.
func (c *Cascade) Start() {
	c.wg.Add(1)
	go c.monitorDevices()
	for _, u := range c.uppers {
		c.wg.Add(1)
		go u.run(c.ctx, &c.wg)
	}
}

// Close unregisters from every upper platform (bounded by ctx), stops all
// loops and closes both zones. The store is the caller's to close.
func (c *Cascade) Close(ctx context.Context) {
	var wg sync.WaitGroup
	for _, u := range c.uppers {
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

// PlatformState is one upper platform as the API shows it.
type PlatformState struct {
	ID         string    `json:"id"`
	Address    string    `json:"address"`
	Transport  string    `json:"transport"`
	Registered bool      `json:"registered"`
	LastError  string    `json:"last_error"`
	Server     string    `json:"server,omitempty"` // where we are registered, after a 302
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
	Keepalive  time.Time `json:"last_keepalive,omitzero"`
}

// Platforms reports every configured upper platform.
func (c *Cascade) Platforms() []PlatformState {
	out := make([]PlatformState, len(c.uppers))
	for i, u := range c.uppers {
		out[i] = u.state()
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
func optionsHandler(ep *endpoint.Endpoint) endpoint.Handler {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		ep.Respond(tx, req, sip.StatusOK, "OK", nil, sip.NewHeader("Allow", "REGISTER, MESSAGE, OPTIONS"))
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
		}
	}
}

func (c *Cascade) deviceOffline(id, reason string) {
	if !c.registry.offline(id) {
		return
	}
	c.metrics.Inc("gbproxy_device_offline_total", "reason", reason)
	c.log.Info().Str("device_id", id).Str("reason", reason).Msg("device offline; its channels are now OFF")
}

// lowerConnClosed: a device's TCP connection ending takes it offline.
func (c *Cascade) lowerConnClosed(remote string) {
	if id, ok := c.registry.deviceOnConn(remote); ok {
		c.deviceOffline(id, "TCP connection closed")
	}
}

func (c *Cascade) upperConnClosed(remote string) {
	for _, u := range c.uppers {
		u.connClosed(remote)
	}
}

// Date header value for time sync: yyyy-MM-ddTHH:mm:ss.SSS, local time.
func gbDate(t time.Time) string { return t.Format("2006-01-02T15:04:05.000") }
