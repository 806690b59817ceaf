package cascade

import (
	"cmp"
	"slices"
	"strings"

	"github.com/gbproxy/gbproxy/directory"
)

// Paged listings for the admin API. The registry keeps its devices and
// channels in sorted key indexes, rebuilt only after one was added or
// removed, so a page costs a binary search and the items it holds; a filter
// adds one pass over the keys to count what matches, without copying.

// ChannelKey is a channel's place in the listing order: by device, then ID.
type ChannelKey struct{ DeviceID, ID string }

func compareChannelKeys(a, b ChannelKey) int {
	return cmp.Or(strings.Compare(a.DeviceID, b.DeviceID), strings.Compare(a.ID, b.ID))
}

// ChannelFilter selects channels; empty fields select everything.
type ChannelFilter struct {
	DeviceID string // one device's channels
	Status   string // effective status (ON, OFF, VLOST, DEFECT), any case
	Q        string // substring of the ID or name, any case
	// Platform lists what that upper platform sees, under the IDs and names
	// it sees; DeviceID and Q then use its IDs too.
	Platform string
}

// DeviceFilter selects devices; empty fields select everything.
type DeviceFilter struct {
	Online   *bool
	Q        string // substring of the ID, any case
	Platform string // devices with something that upper sees, under its IDs
}

// Page is at most Limit items (0: all) after the key of a previous page's
// last item (nil: from the start).
type Page[K any] struct {
	After *K
	Limit int
}

// ChannelPage lists one page of channels. total counts every match; next is
// the key to continue after, nil on the last page.
func (c *Cascade) ChannelPage(f ChannelFilter, p Page[ChannelKey]) (items []ChannelView, total int, next *ChannelKey, err error) {
	views, v, err := c.viewsFor(f.Platform)
	if err != nil {
		return nil, 0, nil, err
	}
	r := c.registry
	r.mu.RLock()
	defer r.mu.RUnlock()
	keys := r.channelIndexLocked()
	lo, hi := 0, len(keys)
	if f.DeviceID != "" {
		dev := f.DeviceID
		if v != nil {
			dev, _ = v.down(dev)
		}
		lo, _ = slices.BinarySearchFunc(keys, ChannelKey{DeviceID: dev}, compareChannelKeys)
		hi = lo + len(r.channels[dev])
	}
	start := lo
	if p.After != nil {
		start, _ = slices.BinarySearchFunc(keys[lo:hi], *p.After, compareChannelKeys)
		start += lo
		if start < hi && compareChannelKeys(keys[start], *p.After) == 0 {
			start++
		}
	}
	status, q := strings.ToUpper(f.Status), strings.ToLower(f.Q)
	match := func(k ChannelKey) bool {
		ch := r.channels[k.DeviceID][k.ID]
		if v != nil && !v.sharesChannelLocked(r, ch) {
			return false
		}
		if status != "" && r.channelStatus(ch) != status {
			return false
		}
		if q == "" {
			return true
		}
		id, name := ch.ID, ch.Item.Name
		if v != nil {
			id = v.up(id)
			if n, ok := v.names[ch.ID]; ok {
				name = n
			}
		}
		return containsFold(id, q) || containsFold(name, q)
	}
	filtered := v != nil || status != "" || q != ""
	picked, total, more := walk(keys, lo, start, hi, p.Limit, filtered, match)
	items = make([]ChannelView, len(picked))
	for i, k := range picked {
		items[i] = r.channelViewLocked(r.channels[k.DeviceID][k.ID], views, v)
	}
	if more {
		next = &picked[len(picked)-1]
	}
	return items, total, next, nil
}

// Channel is one channel by its ID, or by the ID platform sees it under
// when platform is set.
func (c *Cascade) Channel(id, platform string) (ChannelView, bool, error) {
	views, v, err := c.viewsFor(platform)
	if err != nil {
		return ChannelView{}, false, err
	}
	r := c.registry
	r.mu.RLock()
	defer r.mu.RUnlock()
	if v != nil {
		local, ok := v.down(id)
		if !ok {
			return ChannelView{}, false, nil
		}
		id = local
	}
	ch := r.channels[r.owner[id]][id]
	if ch == nil || (v != nil && !v.sharesChannelLocked(r, ch)) {
		return ChannelView{}, false, nil
	}
	return r.channelViewLocked(ch, views, v), true, nil
}

// DevicePage lists one page of devices, sorted by ID; as ChannelPage.
func (c *Cascade) DevicePage(f DeviceFilter, p Page[string]) (items []Device, total int, next *string, err error) {
	_, v, err := c.viewsFor(f.Platform)
	if err != nil {
		return nil, 0, nil, err
	}
	r := c.registry
	r.mu.RLock()
	defer r.mu.RUnlock()
	keys := r.deviceIndexLocked()
	start := 0
	if p.After != nil {
		var found bool
		if start, found = slices.BinarySearch(keys, *p.After); found {
			start++
		}
	}
	q := strings.ToLower(f.Q)
	match := func(id string) bool {
		d := r.devices[id]
		if f.Online != nil && d.Online != *f.Online {
			return false
		}
		if v != nil && !r.seesDeviceLocked(v, id) {
			return false
		}
		if v != nil {
			id = v.up(id)
		}
		return q == "" || containsFold(id, q)
	}
	filtered := v != nil || f.Online != nil || q != ""
	picked, total, more := walk(keys, 0, start, len(keys), p.Limit, filtered, match)
	items = make([]Device, len(picked))
	for i, id := range picked {
		items[i] = *r.devices[id]
		if v != nil {
			items[i].ID = v.up(id)
		}
	}
	if more {
		next = &picked[len(picked)-1]
	}
	return items, total, next, nil
}

// walk picks up to limit (0: all) keys from keys[start:hi] that match and
// counts the matches in keys[lo:hi]. Unfiltered, every key matches: the
// count is the range's length and the walk stops after the page.
func walk[K any](keys []K, lo, start, hi, limit int, filtered bool, match func(K) bool) (picked []K, total int, more bool) {
	for i := lo; i < hi; i++ {
		if filtered && !match(keys[i]) {
			continue
		}
		total++
		if i < start {
			continue
		}
		if limit > 0 && len(picked) == limit {
			more = true
			if !filtered {
				return picked, hi - lo, true
			}
			continue
		}
		picked = append(picked, keys[i])
	}
	return picked, total, more
}

// viewsFor returns every upper's share view and the one of platform ("" for
// none, directory.ErrUnknownPlatform when there is no such upper).
func (c *Cascade) viewsFor(platform string) (map[string]*shareView, *shareView, error) {
	uppers := c.upperList()
	views := make(map[string]*shareView, len(uppers))
	for _, u := range uppers {
		views[u.id] = u.view()
	}
	if platform == "" {
		return views, nil, nil
	}
	v := views[platform]
	if v == nil {
		return nil, nil, directory.ErrUnknownPlatform
	}
	return views, v, nil
}

// channelViewLocked is ch for the API; seen through v (nil: as stored) its
// IDs, name and parents are those of v's catalog.
func (r *Registry) channelViewLocked(ch *Channel, views map[string]*shareView, v *shareView) ChannelView {
	cv := ChannelView{Channel: *ch, Status: r.channelStatus(ch), SharedTo: r.sharedToLocked(views, ch)}
	if v != nil {
		cv.Item = r.upperItemLocked(v, ch, nil)
		cv.ID, cv.DeviceID = cv.Item.DeviceID, v.up(ch.DeviceID)
		if cv.ID != ch.ID {
			cv.LocalID = ch.ID
		}
	}
	return cv
}

// seesDeviceLocked: upper v may address the device or sees one of its channels.
func (r *Registry) seesDeviceLocked(v *shareView, id string) bool {
	if v.sharesDevice(id) {
		return true
	}
	for _, ch := range r.channels[id] {
		if v.sharesChannelLocked(r, ch) {
			return true
		}
	}
	return false
}

// channelIndexLocked returns every channel key, sorted; the read lock is
// held. The index is rebuilt after channels were added or removed.
func (r *Registry) channelIndexLocked() []ChannelKey {
	r.idxMu.Lock()
	defer r.idxMu.Unlock()
	if !r.chanIdxOK {
		keys := r.chanIdx[:0]
		for dev, chans := range r.channels {
			for id := range chans {
				keys = append(keys, ChannelKey{DeviceID: dev, ID: id})
			}
		}
		slices.SortFunc(keys, compareChannelKeys)
		r.chanIdx, r.chanIdxOK = slices.Clip(keys), true
	}
	return r.chanIdx
}

// deviceIndexLocked is channelIndexLocked for devices.
func (r *Registry) deviceIndexLocked() []string {
	r.idxMu.Lock()
	defer r.idxMu.Unlock()
	if !r.devIdxOK {
		ids := r.devIdx[:0]
		for id := range r.devices {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		r.devIdx, r.devIdxOK = slices.Clip(ids), true
	}
	return r.devIdx
}

// containsFold reports whether s contains lowerSub, ignoring ASCII and
// Unicode case.
func containsFold(s, lowerSub string) bool {
	return strings.Contains(strings.ToLower(s), lowerSub)
}

// HasPlatform reports whether id is a configured upper platform.
func (c *Cascade) HasPlatform(id string) bool { return c.upperByID(id) != nil }
