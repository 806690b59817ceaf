package cascade

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
	"github.com/gbproxy/gbproxy/endpoint"
	"github.com/gbproxy/gbproxy/security"
)

// lowerSide is the upper platform to the devices and lower platforms that
// register to us: the registrar, their MESSAGEs and NOTIFYs, catalog
// collection, our subscriptions to them and the keepalive monitor. It owns
// the registry, which the upper side reads.
type lowerSide struct {
	*env
	ep       *endpoint.Endpoint
	registry *Registry
	digest   *security.DigestServer
	// allowed is lower.devices, changed at run time (allowed.go): readers
	// load it without a lock.
	allowed  atomic.Pointer[allowedTable]
	catalogs *catalogCollector
	subs     *deviceSubs
	feed     upperFeed
	// offlineHooks run when a device goes offline (the B2BUA ends its calls).
	offlineHooks []func(deviceID, reason string)
	// dialogHook takes a device's MESSAGE inside a call's dialog (the
	// B2BUA forwards MediaStatus); nil when nothing does.
	dialogHook func(deviceID string, req *sip.Request) bool
	// streams counts the relayed streams for the cluster's load; nil: none.
	streams   func() int
	redirects redirects
	alarms    seenAlarms // alarms forwarded lately (one per MESSAGE and NOTIFY pair)
}

// upperFeed is what the lower side hands to the upper platforms.
type upperFeed interface {
	// deliver passes a device's answer to the routed request with its SN; it
	// reports false when no routed request waits for it.
	deliver(deviceID string, hdr manscdp.Header, body []byte, identity sip.Header) bool
	// alarm, snapshotFinished and report forward a device's notifications
	// (report: MobilePosition, PTZPosition and Catalog to subscribers).
	alarm(deviceID string, hdr manscdp.Header, body []byte, identity sip.Header)
	snapshotFinished(deviceID string, hdr manscdp.Header, body []byte, identity sip.Header)
	report(kind, deviceID, id string, body []byte, identity sip.Header)
	// wanted counts, per (device, kind), the uppers' subscriptions a device
	// subscription would serve.
	wanted() map[downKey]int
	// isPlatform: id is one of our upper platforms (a cascade loop below).
	isPlatform(id string) bool
}

func newLowerSide(e *env) *lowerSide {
	l := &lowerSide{
		env:      e,
		registry: newRegistry(e.store, e.log, e.cfg.ID),
		digest:   security.NewDigestServer(security.DigestConfig{Realm: e.cfg.Domain, Lockout: lockoutConfig(e.cfg.Security.Lockout)}),
	}
	l.allowed.Store(&allowedTable{})
	l.catalogs = newCatalogCollector(l)
	l.subs = newDeviceSubs(l)
	return l
}

// handle serves the lower side's requests on its zone.
func (l *lowerSide) handle() {
	l.ep.Handle(sip.REGISTER, l.handleRegister)
	l.ep.Handle(sip.MESSAGE, l.handleLowerMessage)
	l.ep.Handle(sip.NOTIFY, l.handleLowerNotify)
	l.ep.Handle(sip.OPTIONS, optionsHandler(l.ep, "REGISTER, MESSAGE, NOTIFY, BYE, OPTIONS"))
}

// pokeSubscriptions implements deviceLink: the uppers' subscriptions changed.
func (l *lowerSide) pokeSubscriptions() { l.subs.poke() }

// monitorDevices turns devices offline when their keepalives or their
// registration run out.
func (l *lowerSide) monitorDevices(wg *sync.WaitGroup) {
	defer wg.Done()
	timeout := l.cfg.Lower.KeepaliveInterval * time.Duration(l.cfg.Lower.KeepaliveTimeoutCount)
	tick := time.NewTicker(min(time.Second, l.cfg.Lower.KeepaliveInterval/2))
	defer tick.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-tick.C:
			ids, reasons := l.registry.expired(l.now(), timeout)
			for i, id := range ids {
				l.deviceOffline(id, reasons[i])
			}
			l.publishLoad() // streams change without a device event
			if every := l.cfg.Lower.CatalogRefreshInterval; every > 0 {
				for _, dev := range l.registry.catalogRefreshDue(l.now(), every) {
					l.catalogs.query(dev)
				}
			}
		}
	}
}

func (l *lowerSide) deviceOffline(id, reason string) {
	if !l.registry.offline(id) {
		return
	}
	l.metrics.Inc("gbproxy_device_offline_total", "reason", reason)
	l.subs.poke()
	l.log.Info().Str("device_id", id).Str("reason", reason).Msg("device offline; its channels are now OFF")
	l.clusterOffline(id)
	for _, f := range l.offlineHooks {
		f(id, reason)
	}
}

// lowerConnClosed: a device's TCP or TLS connection ending takes it offline.
func (l *lowerSide) lowerConnClosed(remote string) {
	if id, ok := l.registry.deviceOnConn(remote); ok {
		l.deviceOffline(id, "connection closed")
	}
}

// sendToDevice sends a MANSCDP MESSAGE (or another request) to a registered
// device, over its own TCP connection when it registered over TCP. headers
// replace the request's own of the same name.
func (l *lowerSide) sendToDevice(ctx context.Context, dev Device, method sip.RequestMethod, body []byte, headers ...sip.Header) (*sip.Response, error) {
	peer := endpoint.Peer{Transport: dev.Transport, Addr: dev.Remote}
	host, port := endpoint.SplitHostPort(dev.Remote)
	req := l.ep.NewRequest(method,
		sip.Uri{Scheme: "sip", User: dev.ID, Host: host, Port: port},
		peer,
		sip.Uri{Scheme: "sip", User: l.cfg.ID, Host: l.cfg.Domain},
		sip.Uri{Scheme: "sip", User: dev.ID, Host: l.cfg.Domain})
	if body != nil {
		req.AppendHeader(sip.NewHeader("Content-Type", contentTypeMANSCDP))
		req.SetBody(body)
	}
	setHeaders(req, headers)
	return l.ep.Do(ctx, req)
}
