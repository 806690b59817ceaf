package cascade

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
	"github.com/gbproxy/gbproxy/endpoint"
	"github.com/gbproxy/gbproxy/store"
)

// Store buckets.
const (
	bucketDevices   = "devices"
	bucketChannels  = "channels"
	bucketPlatforms = "platforms"
)

// Device is a camera, NVR or lower platform registered to us. The persisted
// fields survive a restart; keepalive times change too often to persist.
type Device struct {
	ID           string    `json:"id"`
	Transport    string    `json:"transport"` // UDP | TCP | TLS
	Remote       string    `json:"remote"`    // where requests go: received/rport, or the TCP/TLS peer
	Contact      string    `json:"contact"`
	UserAgent    string    `json:"user_agent,omitempty"`
	GBVersion    string    `json:"gb_version,omitempty"` // X-GB-Ver of its REGISTER
	CallID       string    `json:"call_id"`
	Expires      int       `json:"expires"`
	RegisteredAt time.Time `json:"registered_at"`
	ExpiresAt    time.Time `json:"expires_at"`

	Online        bool      `json:"-"`
	LastKeepalive time.Time `json:"-"`
	LastCatalog   time.Time `json:"-"` // when we last asked for its catalog
}

// Channel is one catalog item of a device, kept as the device reported it.
type Channel struct {
	ID        string              `json:"id"`
	DeviceID  string              `json:"device_id"`
	Item      manscdp.CatalogItem `json:"item"`
	UpdatedAt time.Time           `json:"updated_at"`
}

// Status is the channel's status as others should see it: OFF whenever its
// device is offline, whatever the device last said.
func (r *Registry) channelStatus(c *Channel) string {
	if d := r.devices[c.DeviceID]; d == nil || !d.Online {
		return "OFF"
	}
	if c.Item.Status == "" {
		return "ON"
	}
	return strings.ToUpper(c.Item.Status)
}

// ChannelEvent is a catalog change as GB/T 28181 notifies it: Item carries
// the channel's effective status, Event is ON, OFF, VLOST, DEFECT, ADD, DEL
// or UPDATE.
type ChannelEvent struct {
	DeviceID string
	Item     manscdp.CatalogItem
	Event    string
}

// Registry holds devices and channels in memory and writes them behind to the
// store. One mutex: the maps are small and every operation is short.
type Registry struct {
	mu       sync.RWMutex
	devices  map[string]*Device
	channels map[string]map[string]*Channel // device ID -> channel ID -> channel
	owner    map[string]string              // channel ID -> device ID
	byConn   map[string]string              // TCP/TLS remote -> device ID
	byIP     map[netip.Addr]int             // device records per IP of their remote
	self     string                         // the proxy's own ID, never a channel
	online   int                            // devices with Online set
	store    *store.Store
	log      zerolog.Logger
	// publish receives every change, outside the lock (subscriptions).
	publish func([]ChannelEvent)

	// Sorted keys for paged listings (page.go), rebuilt by readers after a
	// writer added or removed an entry; idxMu orders readers rebuilding.
	idxMu     sync.Mutex
	chanIdx   []ChannelKey
	chanIdxOK bool
	devIdx    []string
	devIdxOK  bool
}

func newRegistry(st *store.Store, log zerolog.Logger, self string) *Registry {
	return &Registry{
		devices:  map[string]*Device{},
		channels: map[string]map[string]*Channel{},
		owner:    map[string]string{},
		byConn:   map[string]string{},
		byIP:     map[netip.Addr]int{},
		self:     self,
		store:    st,
		log:      log,
		publish:  func([]ChannelEvent) {},
	}
}

// load restores devices and channels. A UDP device whose registration has not
// expired is online again (we can still reach it, and it gets a full keepalive
// period to prove it); a TCP device lost its connection with our restart.
func (r *Registry) load(now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	err := r.store.ForEach(bucketDevices, func(key string, raw []byte) error {
		var d Device
		if err := json.Unmarshal(raw, &d); err != nil {
			r.log.Warn().Err(err).Str("device_id", key).Msg("skipping unreadable device record in store")
			return nil
		}
		d.Online = d.Transport == "UDP" && now.Before(d.ExpiresAt)
		if d.Online {
			r.online++
		}
		r.countIPLocked(d.Remote, 1)
		d.LastKeepalive = now
		r.devices[d.ID] = &d
		return nil
	})
	if err != nil {
		return err
	}
	return r.store.ForEach(bucketChannels, func(key string, raw []byte) error {
		var c Channel
		if err := json.Unmarshal(raw, &c); err != nil {
			r.log.Warn().Err(err).Str("key", key).Msg("skipping unreadable channel record in store")
			return nil
		}
		r.channelsOf(c.DeviceID)[c.ID] = &c
		r.owner[c.ID] = c.DeviceID
		return nil
	})
}

func (r *Registry) channelsOf(deviceID string) map[string]*Channel {
	m := r.channels[deviceID]
	if m == nil {
		m = map[string]*Channel{}
		r.channels[deviceID] = m
	}
	return m
}

// Device returns a copy of the device record.
func (r *Registry) Device(id string) (Device, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if d := r.devices[id]; d != nil {
		return *d, true
	}
	return Device{}, false
}

// Devices returns copies of all devices, sorted by ID.
func (r *Registry) Devices() []Device {
	r.mu.RLock()
	out := make([]Device, 0, len(r.devices))
	for _, d := range r.devices {
		out = append(out, *d)
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// ChannelView is a channel with its effective status and, per upper
// platform that sees it, the ID it sees.
type ChannelView struct {
	Channel
	Status   string
	SharedTo map[string]string
	// LocalID is the stored ID when the view shows an upper's mapped one.
	LocalID string
}

// Channels returns all channels with effective status, sorted by device then ID.
func (r *Registry) Channels() []ChannelView { return r.channelViews(nil) }

func (r *Registry) channelViews(views map[string]*shareView) []ChannelView {
	r.mu.RLock()
	var out []ChannelView
	for _, chans := range r.channels {
		for _, c := range chans {
			out = append(out, ChannelView{Channel: *c, Status: r.channelStatus(c), SharedTo: r.sharedToLocked(views, c)})
		}
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].DeviceID != out[j].DeviceID {
			return out[i].DeviceID < out[j].DeviceID
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Counts returns how many devices are known and how many are online, in
// constant time (every /metrics scrape and, in a cluster, every
// registration asks).
func (r *Registry) Counts() (known, online int) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.devices), r.online
}

// register records a successful registration and reports whether it is a
// new one (the device was offline or started a new registration Call-ID),
// after which its catalog is worth asking for.
func (r *Registry) register(d Device) (fresh bool) {
	r.mu.Lock()
	old := r.devices[d.ID]
	fresh = old == nil || !old.Online || old.CallID != d.CallID
	wasOnline := old != nil && old.Online
	if old != nil && endpoint.ConnOriented(old.Transport) && old.Remote != d.Remote {
		delete(r.byConn, old.Remote)
	}
	if old != nil {
		d.LastCatalog = old.LastCatalog
		r.countIPLocked(old.Remote, -1)
	}
	r.countIPLocked(d.Remote, 1)
	d.Online = true
	if !wasOnline {
		r.online++
	}
	r.devIdxOK = r.devIdxOK && old != nil
	r.devices[d.ID] = &d
	if endpoint.ConnOriented(d.Transport) {
		r.byConn[d.Remote] = d.ID
	}
	r.store.Put(bucketDevices, d.ID, &d)
	var evs []ChannelEvent
	if !wasOnline {
		evs = r.statusEventsLocked(d.ID)
	}
	r.mu.Unlock()
	r.publish(evs)
	return fresh
}

// countIPLocked counts a device record at remote's IP.
func (r *Registry) countIPLocked(remote string, delta int) {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return
	}
	ip := ap.Addr().Unmap()
	if r.byIP[ip] += delta; r.byIP[ip] <= 0 {
		delete(r.byIP, ip)
	}
}

// hasDeviceAt reports whether any device record has ip as its address: the
// UDP read path limits other sources before even parsing their datagrams.
func (r *Registry) hasDeviceAt(ip netip.Addr) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.byIP[ip] > 0
}

// statusEventsLocked reports every channel of a device with its effective
// status, as after the device came or went.
func (r *Registry) statusEventsLocked(deviceID string) []ChannelEvent {
	chans := r.channels[deviceID]
	evs := make([]ChannelEvent, 0, len(chans))
	for _, c := range chans {
		it := c.Item
		it.Status = r.channelStatus(c)
		evs = append(evs, ChannelEvent{DeviceID: deviceID, Item: it, Event: it.Status})
	}
	return evs
}

// offline marks a device offline; it reports whether it was online.
func (r *Registry) offline(id string) bool {
	r.mu.Lock()
	d := r.devices[id]
	if d == nil || !d.Online {
		r.mu.Unlock()
		return false
	}
	d.Online = false
	r.online--
	if endpoint.ConnOriented(d.Transport) {
		delete(r.byConn, d.Remote)
	}
	evs := r.statusEventsLocked(id)
	r.mu.Unlock()
	r.publish(evs)
	return true
}

// unregister ends a registration (Expires: 0); the caller takes the device
// offline.
func (r *Registry) unregister(id string, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if d := r.devices[id]; d != nil {
		d.ExpiresAt = now
		r.store.Put(bucketDevices, d.ID, d)
	}
}

// remove forgets a device and its channels (its allowed-list entry went);
// the channels leave as DEL events. The caller took it offline first.
func (r *Registry) remove(id string) {
	r.mu.Lock()
	d := r.devices[id]
	if d == nil {
		r.mu.Unlock()
		return
	}
	var evs []ChannelEvent
	for chID, ch := range r.channels[id] {
		evs = append(evs, r.eventLocked(id, ch.Item, "DEL"))
		r.deleteChannelLocked(id, chID)
	}
	delete(r.channels, id)
	if endpoint.ConnOriented(d.Transport) && r.byConn[d.Remote] == id {
		delete(r.byConn, d.Remote)
	}
	r.countIPLocked(d.Remote, -1)
	if d.Online {
		r.online--
	}
	delete(r.devices, id)
	r.devIdxOK = false
	r.store.Delete(bucketDevices, id)
	r.mu.Unlock()
	r.publish(evs)
}

// keepalive records a sign of life from a registered device. It reports
// whether the device is known with an unexpired registration, and whether it
// came back online. It never moves a device to another address: only a
// REGISTER does. A UDP port change from the same IP (NAT rebinding; the
// lower guard lets it through with bind_source ip) is followed.
func (r *Registry) keepalive(id, transport, remote string, now time.Time) (known, revived bool) {
	r.mu.Lock()
	var evs []ChannelEvent
	defer func() {
		r.mu.Unlock()
		r.publish(evs)
	}()
	d := r.devices[id]
	if d == nil || !now.Before(d.ExpiresAt) {
		return false, false
	}
	d.LastKeepalive = now
	if d.Remote != remote && d.Transport == "UDP" && strings.EqualFold(transport, "UDP") && hostOf(d.Remote) == hostOf(remote) {
		r.log.Info().Str("device_id", id).Str("from", d.Remote).Str("to", remote).Msg("device's UDP port changed (NAT rebinding?); requests to it now go to the new port")
		d.Remote = remote
		r.store.Put(bucketDevices, d.ID, d)
	}
	revived = !d.Online
	d.Online = true
	if revived {
		r.online++
		evs = r.statusEventsLocked(id)
	}
	return true, revived
}

// admit tells the lower guard which device id names (the device itself, or
// the owner of a channel: a device's in-dialog requests carry the channel
// ID), whether it has an unexpired registration, whether transport and
// source are where it registered from (see boundSource), and where that is.
func (r *Registry) admit(id, transport, source, mode string, now time.Time) (deviceID string, registered, bound bool, remote string) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	d := r.devices[id]
	if d == nil {
		if owner, ok := r.owner[id]; ok {
			d = r.devices[owner]
		}
	}
	if d == nil || !now.Before(d.ExpiresAt) {
		return "", false, false, ""
	}
	return d.ID, true, boundSource(mode, d.Transport, d.Remote, transport, source), d.Remote
}

// deviceOnConn names the device registered over the TCP/TLS connection remote.
func (r *Registry) deviceOnConn(remote string) (string, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	id, ok := r.byConn[remote]
	return id, ok
}

// expired lists online devices whose keepalives or registration ran out.
func (r *Registry) expired(now time.Time, keepaliveTimeout time.Duration) (ids, reasons []string) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, d := range r.devices {
		if !d.Online {
			continue
		}
		switch {
		case !now.Before(d.ExpiresAt):
			ids, reasons = append(ids, d.ID), append(reasons, "registration expired")
		case now.Sub(d.LastKeepalive) > keepaliveTimeout:
			ids, reasons = append(ids, d.ID), append(reasons, "keepalive timeout")
		}
	}
	return ids, reasons
}

// setChannels stores a device's catalog. complete means the answer carried
// every item (SumNum reached): channels the device no longer lists are
// removed. A partial answer only adds and updates. Items another online
// device already owns, or carrying the proxy's own ID, are refused: in a
// cascade loop our own channels come back to us through a lower platform.
func (r *Registry) setChannels(deviceID string, items []manscdp.CatalogItem, complete bool, now time.Time) (added, removed int, refused []string) {
	r.mu.Lock()
	chans := r.channelsOf(deviceID)
	seen := make(map[string]bool, len(items))
	var evs []ChannelEvent
	for _, it := range items {
		if it.DeviceID == "" {
			continue
		}
		if !r.mayOwnLocked(deviceID, it.DeviceID) {
			refused = append(refused, it.DeviceID)
			continue
		}
		seen[it.DeviceID] = true
		old, ok := chans[it.DeviceID]
		it.Event = ""
		switch {
		case !ok:
			added++
			evs = append(evs, r.eventLocked(deviceID, it, "ADD"))
		case !reflect.DeepEqual(old.Item, it):
			evs = append(evs, r.eventLocked(deviceID, it, "UPDATE"))
		}
		r.putChannelLocked(&Channel{ID: it.DeviceID, DeviceID: deviceID, Item: it, UpdatedAt: now})
	}
	if complete {
		for id, c := range chans {
			if !seen[id] {
				evs = append(evs, r.eventLocked(deviceID, c.Item, "DEL"))
				r.deleteChannelLocked(deviceID, id)
				removed++
			}
		}
	}
	r.mu.Unlock()
	r.publish(evs)
	return added, removed, refused
}

// applyNotify applies a device's catalog change notification (GB/T 28181
// §9.11: Event ON, OFF, VLOST, DEFECT, ADD, DEL, UPDATE).
func (r *Registry) applyNotify(deviceID string, items []manscdp.CatalogItem, now time.Time) (refused []string) {
	r.mu.Lock()
	chans := r.channelsOf(deviceID)
	var evs []ChannelEvent
	for _, it := range items {
		id := it.DeviceID
		if id == "" {
			continue
		}
		if !r.mayOwnLocked(deviceID, id) {
			refused = append(refused, id)
			continue
		}
		event := strings.ToUpper(strings.TrimSpace(it.Event))
		it.Event = ""
		old := chans[id]
		switch event {
		case "DEL":
			if old != nil {
				evs = append(evs, r.eventLocked(deviceID, old.Item, "DEL"))
				r.deleteChannelLocked(deviceID, id)
			}
			continue
		case "ON", "OFF", "VLOST", "DEFECT":
			if old != nil {
				// A status notify may carry only the ID: keep what we know.
				merged := old.Item
				merged.Status = event
				it = merged
			} else {
				it.Status = event
			}
		default: // ADD, UPDATE, or none
			if event != "ADD" && event != "UPDATE" {
				event = "UPDATE"
			}
			if old == nil {
				event = "ADD"
			}
		}
		r.putChannelLocked(&Channel{ID: id, DeviceID: deviceID, Item: it, UpdatedAt: now})
		evs = append(evs, r.eventLocked(deviceID, it, event))
	}
	r.mu.Unlock()
	r.publish(evs)
	return refused
}

// mayOwnLocked: a channel belongs to the first online device that reports
// it. A device may list its own ID: single-channel cameras are often set up
// that way, and the channel is real. The proxy's own ID, and the ID of
// another online device registered here, come back only through a loop.
func (r *Registry) mayOwnLocked(deviceID, channelID string) bool {
	if channelID == r.self {
		return false
	}
	if d := r.devices[channelID]; d != nil && channelID != deviceID && d.Online {
		return false
	}
	cur, ok := r.owner[channelID]
	if !ok || cur == deviceID {
		return true
	}
	if d := r.devices[cur]; d != nil && d.Online {
		return false
	}
	r.deleteChannelLocked(cur, channelID) // the old owner is gone: hand it over
	return true
}

func (r *Registry) putChannelLocked(c *Channel) {
	chans := r.channelsOf(c.DeviceID)
	if _, ok := chans[c.ID]; !ok {
		r.chanIdxOK = false
	}
	chans[c.ID] = c
	r.owner[c.ID] = c.DeviceID
	r.store.Put(bucketChannels, channelKey(c.DeviceID, c.ID), c)
}

func (r *Registry) deleteChannelLocked(deviceID, id string) {
	delete(r.channels[deviceID], id)
	r.chanIdxOK = false
	if r.owner[id] == deviceID {
		delete(r.owner, id)
	}
	r.store.Delete(bucketChannels, channelKey(deviceID, id))
}

func (r *Registry) eventLocked(deviceID string, it manscdp.CatalogItem, event string) ChannelEvent {
	c := Channel{ID: it.DeviceID, DeviceID: deviceID, Item: it}
	it.Status = r.channelStatus(&c)
	return ChannelEvent{DeviceID: deviceID, Item: it, Event: event}
}

// deviceItems is device id's catalog with each item's effective status,
// sorted by channel ID, and whether the device is online.
func (r *Registry) deviceItems(id string) ([]manscdp.CatalogItem, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	d := r.devices[id]
	if d == nil || !d.Online {
		return nil, false
	}
	items := make([]manscdp.CatalogItem, 0, len(r.channels[id]))
	for _, c := range r.channels[id] {
		it := c.Item
		it.Status = r.channelStatus(c)
		items = append(items, it)
	}
	sort.Slice(items, func(i, j int) bool { return items[i].DeviceID < items[j].DeviceID })
	return items, true
}

// ChannelOwner names the device that reported channel id.
func (r *Registry) ChannelOwner(id string) (string, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	d, ok := r.owner[id]
	return d, ok
}

// catalogRefreshDue lists online devices whose catalog is older than every;
// asking one (catalogCollector.query) records the time.
func (r *Registry) catalogRefreshDue(now time.Time, every time.Duration) []Device {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var due []Device
	for _, d := range r.devices {
		if d.Online && now.Sub(d.LastCatalog) >= every {
			due = append(due, *d)
		}
	}
	return due
}

// catalogAsked records that a device was just asked for its catalog.
func (r *Registry) catalogAsked(id string, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if d := r.devices[id]; d != nil {
		d.LastCatalog = now
	}
}

func channelKey(deviceID, channelID string) string { return deviceID + "/" + channelID }
