package cluster

// Channel lookups for the hot paths (an upper's request for a channel on
// another node) and catalog changes for the notifier of upper
// subscriptions.

// Channel is channel channelID of device deviceID in the cluster-wide
// index: this node's own as it published it, the others' from the cache.
// O(1): no scan of the catalog.
func (c *Cluster) Channel(deviceID, channelID string) (ChannelRecord, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if chs, mine := c.myChans[deviceID]; mine {
		e, ok := chs[channelID]
		return e.rec, ok
	}
	e, ok := c.cache.channels[deviceID][channelID]
	return e.rec, ok
}

// ChannelChange is one record of the cluster-wide channel index that
// appeared (Old nil), changed, or went away (New nil), as the cache saw it:
// every node's records, this node's own included (they come back through
// the watch).
type ChannelChange struct {
	Old, New *ChannelRecord
}

// OnChannelsChanged registers fn, called (from the watch goroutine, so it
// must not block) with the channel records each batch of etcd changes
// added, changed or removed. After a reload (the watch broke, or etcd came
// back) fn gets the difference between the old and the new view.
func (c *Cluster) OnChannelsChanged(fn func([]ChannelChange)) {
	c.mu.Lock()
	c.onChannels = append(c.onChannels, fn)
	c.mu.Unlock()
}

// channelDiff is what changed from the channels of old to those of now.
func channelDiff(old, now map[string]map[string]chanEntry) []ChannelChange {
	var out []ChannelChange
	for dev, chs := range now {
		for ch, e := range chs {
			if was, ok := old[dev][ch]; !ok {
				out = append(out, ChannelChange{New: &e.rec})
			} else if was.raw != e.raw {
				out = append(out, ChannelChange{Old: &was.rec, New: &e.rec})
			}
		}
	}
	for dev, chs := range old {
		for ch, e := range chs {
			if _, ok := now[dev][ch]; !ok {
				out = append(out, ChannelChange{Old: &e.rec})
			}
		}
	}
	return out
}
