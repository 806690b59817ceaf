package cascade

import (
	"errors"
	"sort"
	"strings"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
	"github.com/gbproxy/gbproxy/configs"
	"github.com/gbproxy/gbproxy/directory"
)

// shareView is what one upper platform sees: which channels, under which IDs
// and names. It is immutable; the API swaps in a new one.
type shareView struct {
	cfg      configs.ShareConfig
	all      bool
	devices  map[string]bool
	channels map[string]bool
	groups   map[string]bool
	toUpper  map[string]string // local ID -> ID the upper sees
	toLocal  map[string]string // the reverse
	names    map[string]string
	// upperID is the platform itself: a device with this ID is that platform
	// registered below us, and its channels are never shared back to it.
	upperID string
}

func newShareView(cfg configs.ShareConfig, upperID string) *shareView {
	v := &shareView{
		cfg: cfg, all: cfg.SharesAll(), upperID: upperID,
		devices: set(cfg.Devices), channels: set(cfg.Channels), groups: set(cfg.Groups),
		toUpper: map[string]string{}, toLocal: map[string]string{}, names: map[string]string{},
	}
	for local, mapped := range cfg.Map {
		v.toUpper[local] = mapped
		v.toLocal[mapped] = local
	}
	for local, name := range cfg.Names {
		v.names[local] = name
	}
	return v
}

func set(ids []string) map[string]bool {
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// up is the ID the upper sees for a local ID.
func (v *shareView) up(id string) string {
	if m, ok := v.toUpper[id]; ok {
		return m
	}
	return id
}

// down turns an ID from the upper into the local ID. A local ID that has a
// mapping is hidden behind it: the upper cannot address it directly.
func (v *shareView) down(id string) (string, bool) {
	if local, ok := v.toLocal[id]; ok {
		return local, true
	}
	if _, hidden := v.toUpper[id]; hidden {
		return "", false
	}
	return id, true
}

// sharesDevice: the device as a whole is addressable by this upper.
func (v *shareView) sharesDevice(id string) bool {
	return id != v.upperID && (v.all || v.devices[id])
}

// sharesChannelLocked reports whether channel c is visible. Groups share
// everything below them: the ParentID chain and business group are walked
// within the owning device's catalog. The registry's lock is held.
func (v *shareView) sharesChannelLocked(r *Registry, c *Channel) bool {
	return v.sharesChannel(c, r.channels[c.DeviceID])
}

// sharesChannel decides for channel c of a catalog chans (its device's
// channels by ID, where group membership is looked up).
func (v *shareView) sharesChannel(c *Channel, chans map[string]*Channel) bool {
	if c.DeviceID == v.upperID {
		return false
	}
	if v.all || v.devices[c.DeviceID] || v.channels[c.ID] {
		return true
	}
	if len(v.groups) == 0 {
		return false
	}
	cur := c
	for range 16 { // catalogs are a few levels deep; a cycle must not hang us
		if v.groups[cur.ID] || v.groups[cur.Item.BusinessGroupID] || v.groups[cur.DeviceID] {
			return true
		}
		parent := chans[lastPathElement(cur.Item.ParentID)]
		if parent == nil || parent == cur {
			return false
		}
		cur = parent
	}
	return false
}

// lastPathElement: some platforms write ParentID as a path "A/B/C".
func lastPathElement(id string) string {
	if i := strings.LastIndexByte(id, '/'); i >= 0 {
		return id[i+1:]
	}
	return id
}

// catalogFor is the catalog one upper sees: its shared channels with
// effective status, IDs and names mapped, ParentIDs pointing at a node the
// upper also sees or else at the proxy itself, sorted for stable paging.
func (r *Registry) catalogFor(v *shareView) []manscdp.CatalogItem {
	r.mu.RLock()
	defer r.mu.RUnlock()
	visible := map[string]*Channel{}
	for _, chans := range r.channels {
		for _, c := range chans {
			if v.sharesChannelLocked(r, c) {
				visible[c.ID] = c
			}
		}
	}
	items := make([]manscdp.CatalogItem, 0, len(visible))
	for _, c := range visible {
		items = append(items, r.upperItemLocked(v, c, visible))
	}
	sort.Slice(items, func(i, j int) bool { return items[i].DeviceID < items[j].DeviceID })
	return items
}

// upperItemLocked maps one channel for v. visible decides which parents the
// upper knows; nil means "look it up".
func (r *Registry) upperItemLocked(v *shareView, c *Channel, visible map[string]*Channel) manscdp.CatalogItem {
	it := c.Item
	it.Status = r.channelStatus(c)
	it.Event = ""
	it.DeviceID = v.up(c.ID)
	if name, ok := v.names[c.ID]; ok {
		it.Name = name
	}
	known := func(id string) bool {
		if id == "" || id == c.ID { // a single-channel camera may name itself as parent
			return false
		}
		if visible != nil {
			return visible[id] != nil
		}
		p := r.channels[c.DeviceID][id]
		return p != nil && v.sharesChannelLocked(r, p)
	}
	if parent := lastPathElement(it.ParentID); known(parent) {
		it.ParentID = v.up(parent)
	} else {
		it.ParentID = r.self
	}
	if it.BusinessGroupID != "" {
		if known(it.BusinessGroupID) {
			it.BusinessGroupID = v.up(it.BusinessGroupID)
		} else {
			it.BusinessGroupID = ""
		}
	}
	if it.Info != nil && it.Info.BusinessGroupID != "" {
		info := *it.Info
		if known(info.BusinessGroupID) {
			info.BusinessGroupID = v.up(info.BusinessGroupID)
		} else {
			info.BusinessGroupID = ""
		}
		it.Info = &info
	}
	return it
}

// eventsFor filters and maps registry events for one upper.
func (r *Registry) eventsFor(v *shareView, evs []ChannelEvent) []manscdp.CatalogItem {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []manscdp.CatalogItem
	for _, ev := range evs {
		c := &Channel{ID: ev.Item.DeviceID, DeviceID: ev.DeviceID, Item: ev.Item}
		if cur := r.channels[ev.DeviceID][c.ID]; cur != nil {
			c = cur
		}
		if !v.sharesChannelLocked(r, c) {
			continue
		}
		switch ev.Event {
		case "ADD", "UPDATE":
			it := r.upperItemLocked(v, &Channel{ID: c.ID, DeviceID: ev.DeviceID, Item: ev.Item}, nil)
			it.Event = ev.Event
			out = append(out, it)
		default:
			// A status change or removal names the channel only: small
			// enough that a whole device going offline fits few datagrams.
			out = append(out, manscdp.CatalogItem{DeviceID: v.up(c.ID), Event: ev.Event})
		}
	}
	return out
}

// resolve finds who answers an upper's request for id (an ID the upper sees):
// the local ID and the device that owns it.
func (r *Registry) resolve(v *shareView, id string) (local string, dev Device, ok bool) {
	local, ok = v.down(id)
	if !ok {
		return "", Device{}, false
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if d := r.sharedOwnerLocked(v, local); d != nil {
		return local, *d, true
	}
	return "", Device{}, false
}

// sharesID reports whether the upper behind v sees id, a local device or
// channel ID.
func (r *Registry) sharesID(v *shareView, id string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.sharedOwnerLocked(v, id) != nil
}

// sharedOwnerLocked returns the device that answers for local — the device
// itself, or the owner of the channel — when v sees it, else nil.
func (r *Registry) sharedOwnerLocked(v *shareView, local string) *Device {
	if d := r.devices[local]; d != nil && v.sharesDevice(local) {
		return d
	}
	owner, ok := r.owner[local]
	if !ok {
		return nil
	}
	if c := r.channels[owner][local]; c == nil || !v.sharesChannelLocked(r, c) {
		return nil
	}
	return r.devices[owner]
}

// sharedToLocked lists, for one channel, the uppers that see it and under
// which ID.
func (r *Registry) sharedToLocked(views map[string]*shareView, c *Channel) map[string]string {
	var out map[string]string
	for upperID, v := range views {
		if v.sharesChannelLocked(r, c) {
			if out == nil {
				out = map[string]string{}
			}
			out[upperID] = v.up(c.ID)
		}
	}
	return out
}

// bucketShares keeps sharing set through the API; it wins over the config
// file until removed.
const bucketShares = "shares"

func (up *upperSide) savedShare(platformID string) (configs.ShareConfig, bool) {
	var s configs.ShareConfig
	ok, err := up.store.Get(bucketShares, platformID, &s)
	if err != nil {
		up.log.Warn().Err(err).Str("platform_id", platformID).Msg("unreadable saved sharing ignored; using the config file's")
		return s, false
	}
	return s, ok
}

// SetShare replaces what one upper platform is shared, persisted across
// restarts; nil goes back to the config file's. Its Catalog subscribers are
// told what appeared (ADD) and what went (DEL).
// In a cluster the share is written to etcd first, for every node.
func (c *Cascade) SetShare(platformID string, share *configs.ShareConfig) error {
	if c.cluster == nil {
		return c.upper.setShare(platformID, share)
	}
	c.manageMu.Lock()
	defer c.manageMu.Unlock()
	if c.closed {
		return ErrClosed
	}
	if _, err := c.upper.checkShare(platformID, share); err != nil {
		return err
	}
	if err := c.writeShare(platformID, share); err != nil {
		return err
	}
	return c.upper.setShare(platformID, share)
}

// checkShare returns the running client of platformID when share (nil:
// the file's) is valid for it.
func (up *upperSide) checkShare(platformID string, share *configs.ShareConfig) (*upperClient, error) {
	u := up.upperByID(platformID)
	if u == nil {
		return nil, directory.ErrUnknownPlatform
	}
	if share != nil {
		if errs := share.Validate("share", up.cfg.ID); len(errs) > 0 {
			return nil, errors.New(strings.Join(errs, "; "))
		}
	}
	return u, nil
}

func (up *upperSide) setShare(platformID string, share *configs.ShareConfig) error {
	u, err := up.checkShare(platformID, share)
	if err != nil {
		return err
	}
	next := u.cfg().Share
	if share != nil {
		next = *share
		up.store.Put(bucketShares, platformID, share)
	} else {
		up.store.Delete(bucketShares, platformID)
	}
	up.applyShare(u, next)
	return nil
}

// applyShare makes next what u sees; its Catalog subscribers are told what
// appeared (ADD) and what went (DEL).
func (up *upperSide) applyShare(u *upperClient, next configs.ShareConfig) {
	nv := newShareView(next, u.id)
	before := up.catalogFor(u.view())
	u.share.Store(nv)
	after := up.catalogFor(nv)
	u.log.Info().Int("channels_before", len(before)).Int("channels_after", len(after)).Msg("sharing changed")
	up.subs.shareChanged(u, diffCatalog(before, after))
}

// diffCatalog turns two views of a catalog into ADD and DEL items.
func diffCatalog(before, after []manscdp.CatalogItem) []manscdp.CatalogItem {
	was := make(map[string]bool, len(before))
	for _, it := range before {
		was[it.DeviceID] = true
	}
	is := make(map[string]bool, len(after))
	var out []manscdp.CatalogItem
	for _, it := range after {
		is[it.DeviceID] = true
		if !was[it.DeviceID] {
			it.Event = "ADD"
			out = append(out, it)
		}
	}
	for _, it := range before {
		if !is[it.DeviceID] {
			it.Event = "DEL"
			out = append(out, it)
		}
	}
	return out
}
