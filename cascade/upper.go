package cascade

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
	"github.com/gbproxy/gbproxy/configs"
	"github.com/gbproxy/gbproxy/endpoint"
)

// upperSide is the lower platform to every configured upper platform: one
// client registered to each, serving their queries and subscriptions,
// routing what is for a device down and its answers back up.
type upperSide struct {
	*env
	ep       *endpoint.Endpoint
	registry *Registry // the lower side's, read here
	devices  deviceLink
	// uppers change at run time (upperset.go): readers load them without a
	// lock; the Cascade's management functions swap in new sets.
	uppers atomic.Pointer[upperSet]
	// started: Start ran, so a client added later starts at once.
	started atomic.Bool
	routes  *routeTable
	follow  *followUps // broadcast and snapshot follow-ups of routed requests
	subs    *upperSubs
	// upperLostHooks run when an upper's registration is lost (the B2BUA
	// ends its calls).
	upperLostHooks []func(platformID, reason string)
	// gone tells forwarded calls when a cluster node leaves.
	gone nodeWatch
	// remoteOff are other nodes' channels the Catalog subscribers were
	// told went OFF; only the cluster's watch goroutine touches it.
	remoteOff map[string]bool
	// forwardedMessage takes, in a cluster, an in-dialog MESSAGE of a call
	// forwarded to another node (cluster_upper.go).
	forwardedMessage func(*sip.Request, sip.ServerTransaction) bool
}

// deviceLink is what the upper side needs of the lower side besides reading
// the registry.
type deviceLink interface {
	sendToDevice(ctx context.Context, dev Device, method sip.RequestMethod, body []byte, headers ...sip.Header) (*sip.Response, error)
	// pokeSubscriptions: what the uppers subscribe to changed.
	pokeSubscriptions()
}

func newUpperSide(e *env, registry *Registry, devices deviceLink) *upperSide {
	up := &upperSide{env: e, registry: registry, devices: devices, follow: newFollowUps()}
	up.uppers.Store(newUpperSet(nil))
	up.routes = newRouteTable(up)
	up.subs = newUpperSubs(up)
	return up
}

// handle serves the upper side's requests on its zone (the B2BUA adds
// INVITE and its dialogs).
func (up *upperSide) handle() {
	up.ep.Handle(sip.MESSAGE, up.handleUpperMessage)
	up.ep.Handle(sip.SUBSCRIBE, up.handleUpperSubscribe)
	up.ep.Handle(sip.OPTIONS, optionsHandler(up.ep, "INVITE, ACK, BYE, CANCEL, MESSAGE, SUBSCRIBE, OPTIONS"))
}

// deliver, report, wanted and isPlatform implement upperFeed (alarm and
// snapshotFinished too).
func (up *upperSide) deliver(deviceID string, hdr manscdp.Header, body []byte, identity sip.Header) bool {
	return up.routes.deliver(deviceID, hdr, body, identity)
}

func (up *upperSide) report(kind, deviceID, id string, body []byte, identity sip.Header) {
	up.subs.forward(kind, deviceID, id, body, identity)
	up.reportToNodes(kind, deviceID, id, body, identity)
}

func (up *upperSide) wanted() map[downKey]int { return up.subs.wanted() }

func (up *upperSide) isPlatform(id string) bool { return up.upperByID(id) != nil }

// views is every upper's share view by platform ID.
func (up *upperSide) views() map[string]*shareView {
	uppers := up.upperList()
	views := make(map[string]*shareView, len(uppers))
	for _, u := range uppers {
		views[u.id] = u.view()
	}
	return views
}

// platforms reports every configured upper platform.
func (up *upperSide) platforms() []PlatformState {
	uppers := up.upperList()
	out := make([]PlatformState, len(uppers))
	for i, u := range uppers {
		st := u.state()
		v := u.view()
		st.Negotiated = negotiatedVersion(st.GBVersion)
		st.Share = v.cfg
		st.SharedChannels = len(up.catalogFor(v))
		st.RegisteredBy = up.registeredBy(u)
		st.Subscriptions = up.subs.statesOf(u.id)
		out[i] = st
	}
	return out
}

// PlatformState is one upper platform as the API shows it.
type PlatformState struct {
	ID         string `json:"id"`
	Address    string `json:"address"`
	Transport  string `json:"transport"`
	Charset    string `json:"charset"`
	Registered bool   `json:"registered"`
	// RegisteredBy is the cluster node registered to the platform on
	// behalf of all (absent on a single node).
	RegisteredBy string    `json:"registered_by,omitempty"`
	LastError    string    `json:"last_error"`
	Server       string    `json:"server,omitempty"` // where we are registered, after a 302
	ExpiresAt    time.Time `json:"expires_at,omitzero"`
	Keepalive    time.Time `json:"last_keepalive,omitzero"`
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

func (up *upperSide) upperConnClosed(remote string) {
	for _, u := range up.upperList() {
		u.connClosed(remote)
	}
}

func (up *upperSide) upperOf(req *sip.Request) *upperClient {
	if from := req.From(); from != nil {
		return up.upperByID(from.Address.User)
	}
	return nil
}

// upperAt is the configured upper platform that a request over transport
// from source comes from. In-dialog requests of a call we made to one of
// its IDs (its voice source) are From that ID, not the platform's.
func (up *upperSide) upperAt(transport, source string) *upperClient {
	for _, u := range up.upperList() {
		if u.sentFrom(transport, source) {
			return u
		}
	}
	return nil
}

// alarm forwards a device's alarm to every upper that sees the alarming
// channel, and to Alarm subscribers.
func (up *upperSide) alarm(deviceID string, hdr manscdp.Header, body []byte, identity sip.Header) {
	for _, u := range up.upperList() {
		v := u.view()
		if !up.registry.sharesID(v, hdr.DeviceID) {
			continue
		}
		if !u.reachable() {
			u.log.Warn().Str("device_id", deviceID).Str("channel_id", hdr.DeviceID).Msg("alarm not forwarded: not registered to this upper platform (see last_error in /api/v1/platforms)")
			continue
		}
		out, err := manscdp.Rewrite(body, nextSN(), func(id string) (string, bool) { return v.up(id), true }, u.charset())
		if err != nil {
			u.log.Warn().Err(err).Str("device_id", deviceID).Msg("alarm could not be rewritten for the upper platform; dropped")
			continue
		}
		up.tasks.spawn(func() {
			if err := u.message(out, identity); err != nil {
				u.log.Warn().Err(err).Str("device_id", deviceID).Str("channel_id", hdr.DeviceID).Msg("upper platform did not take the alarm")
				return
			}
			up.metrics.Inc("gbproxy_alarms_total", "direction", "out")
		})
	}
	up.subs.forward("Alarm", deviceID, hdr.DeviceID, body, identity)
	up.reportToNodes("Alarm", deviceID, hdr.DeviceID, body, identity)
}
