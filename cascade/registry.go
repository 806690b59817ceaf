package cascade

import (
	"encoding/json"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
	"github.com/gbproxy/gbproxy/cascade/store"
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
	Transport    string    `json:"transport"` // UDP | TCP
	Remote       string    `json:"remote"`    // where requests go: received/rport, or the TCP peer
	Contact      string    `json:"contact"`
	UserAgent    string    `json:"user_agent,omitempty"`
	CallID       string    `json:"call_id"`
	Expires      int       `json:"expires"`
	RegisteredAt time.Time `json:"registered_at"`
	ExpiresAt    time.Time `json:"expires_at"`

	Online        bool      `json:"-"`
	LastKeepalive time.Time `json:"-"`
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

// Registry holds devices and channels in memory and writes them behind to the
// store. One mutex: the maps are small and every operation is short.
type Registry struct {
	mu       sync.RWMutex
	devices  map[string]*Device
	channels map[string]map[string]*Channel // device ID -> channel ID -> channel
	byConn   map[string]string              // TCP remote -> device ID
	store    *store.Store
	log      zerolog.Logger
}

func newRegistry(st *store.Store, log zerolog.Logger) *Registry {
	return &Registry{
		devices:  map[string]*Device{},
		channels: map[string]map[string]*Channel{},
		byConn:   map[string]string{},
		store:    st,
		log:      log,
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

// ChannelView is a channel with its effective status.
type ChannelView struct {
	Channel
	Status string
}

// Channels returns all channels with effective status, sorted by device then ID.
func (r *Registry) Channels() []ChannelView {
	r.mu.RLock()
	var out []ChannelView
	for _, chans := range r.channels {
		for _, c := range chans {
			out = append(out, ChannelView{Channel: *c, Status: r.channelStatus(c)})
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

// Counts returns how many devices are known and how many are online,
// without copying records (it runs on every /metrics scrape).
func (r *Registry) Counts() (known, online int) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, d := range r.devices {
		if d.Online {
			online++
		}
	}
	return len(r.devices), online
}

// register records a successful registration and reports whether it is a
// new one (the device was offline or started a new registration Call-ID),
// after which its catalog is worth asking for.
func (r *Registry) register(d Device) (fresh bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.devices[d.ID]
	fresh = old == nil || !old.Online || old.CallID != d.CallID
	if old != nil && old.Transport == "TCP" && old.Remote != d.Remote {
		delete(r.byConn, old.Remote)
	}
	d.Online = true
	r.devices[d.ID] = &d
	if d.Transport == "TCP" {
		r.byConn[d.Remote] = d.ID
	}
	r.store.Put(bucketDevices, d.ID, &d)
	return fresh
}

// offline marks a device offline; it reports whether it was online.
func (r *Registry) offline(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.devices[id]
	if d == nil || !d.Online {
		return false
	}
	d.Online = false
	if d.Transport == "TCP" {
		delete(r.byConn, d.Remote)
	}
	return true
}

// unregister ends a registration (Expires: 0).
func (r *Registry) unregister(id string, now time.Time) bool {
	r.mu.Lock()
	d := r.devices[id]
	if d != nil {
		d.ExpiresAt = now
		r.store.Put(bucketDevices, d.ID, d)
	}
	r.mu.Unlock()
	return r.offline(id)
}

// keepalive records a sign of life from a registered device, following it to
// a new source address (NAT rebinding, new TCP connection). It reports
// whether the device is known with an unexpired registration, and whether it
// came back online.
func (r *Registry) keepalive(id, transport, remote string, now time.Time) (known, revived bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.devices[id]
	if d == nil || !now.Before(d.ExpiresAt) {
		return false, false
	}
	d.LastKeepalive = now
	if d.Remote != remote || d.Transport != transport {
		if d.Transport == "TCP" {
			delete(r.byConn, d.Remote)
		}
		d.Remote, d.Transport = remote, transport
		if transport == "TCP" {
			r.byConn[remote] = id
		}
		r.store.Put(bucketDevices, d.ID, d)
	}
	revived = !d.Online
	d.Online = true
	return true, revived
}

// deviceOnConn names the device registered over the TCP connection remote.
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
// removed. A partial answer only adds and updates.
func (r *Registry) setChannels(deviceID string, items []manscdp.CatalogItem, complete bool, now time.Time) (added, removed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	chans := r.channelsOf(deviceID)
	seen := make(map[string]bool, len(items))
	for _, it := range items {
		if it.DeviceID == "" {
			continue
		}
		seen[it.DeviceID] = true
		if _, ok := chans[it.DeviceID]; !ok {
			added++
		}
		c := &Channel{ID: it.DeviceID, DeviceID: deviceID, Item: it, UpdatedAt: now}
		chans[it.DeviceID] = c
		r.store.Put(bucketChannels, channelKey(deviceID, it.DeviceID), c)
	}
	if complete {
		for id := range chans {
			if !seen[id] {
				delete(chans, id)
				r.store.Delete(bucketChannels, channelKey(deviceID, id))
				removed++
			}
		}
	}
	return added, removed
}

func channelKey(deviceID, channelID string) string { return deviceID + "/" + channelID }

// catalogItems returns every channel as a catalog item carrying its
// effective status, sorted for stable paging.
func (r *Registry) catalogItems() []manscdp.CatalogItem {
	views := r.Channels()
	items := make([]manscdp.CatalogItem, len(views))
	for i, v := range views {
		items[i] = v.Item
		items[i].Status = v.Status
	}
	return items
}
