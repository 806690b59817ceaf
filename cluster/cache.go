package cluster

import (
	"context"
	"encoding/json"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// cache mirrors the cluster's keys; guarded by Cluster.mu.
type cache struct {
	nodes         map[string]Node
	owners        map[string]ownerEntry
	channels      map[string]map[string]chanEntry // device -> channel
	channelDevice map[string]string               // channel -> device
	elections     map[string]map[string]candidate // platform -> key -> candidate
	managed       map[string]managedEntry         // managed key -> entry (managed.go)
	seeded        bool                            // the managed set's marker is there
}

type ownerEntry struct {
	node string
	rev  int64 // ModRevision
}

type chanEntry struct {
	rec ChannelRecord
	raw string // the stored value, compared with what we would write
}

type candidate struct {
	node      string
	createRev int64
}

func newCache() cache {
	return cache{
		nodes:         map[string]Node{},
		owners:        map[string]ownerEntry{},
		channels:      map[string]map[string]chanEntry{},
		channelDevice: map[string]string{},
		elections:     map[string]map[string]candidate{},
		managed:       map[string]managedEntry{},
	}
}

// effects collects what applying events must trigger once the lock is released.
type effects struct {
	lost         []string
	nodesChanged bool
	rewrite      bool
	managed      []ManagedChange
	reseed       bool
	channels     []ChannelChange
}

// apply applies one key change. del: kv was deleted (only kv.Key and
// kv.ModRevision are meaningful).
func (c *Cluster) applyLocked(kv *mvccpb.KeyValue, del bool, fx *effects) {
	key := string(kv.Key)
	switch {
	case strings.HasPrefix(key, managedPrefix):
		c.applyManagedLocked(kv, del, fx)
	case strings.HasPrefix(key, nodesPrefix):
		id := key[len(nodesPrefix):]
		fx.nodesChanged = true
		delete(c.pending, id) // its record now counts what Place sent it
		if del {
			delete(c.cache.nodes, id)
			if id == c.self.ID && c.session() != nil {
				c.nodeDirty, fx.rewrite = true, true // not by our Close: write it again
			}
			return
		}
		var n Node
		if err := json.Unmarshal(kv.Value, &n); err != nil {
			c.log.Warn().Err(err).Str("key", key).Msg("cluster: unreadable node record ignored")
			return
		}
		c.cache.nodes[id] = n
	case strings.HasPrefix(key, devicesPrefix):
		dev := key[len(devicesPrefix):]
		rev, mine := c.mine[dev]
		if del {
			delete(c.cache.owners, dev)
			if mine && kv.ModRevision > rev {
				c.dirtyDev[dev], fx.rewrite = true, true // gone with an old lease: still ours
			}
			return
		}
		owner := string(kv.Value)
		c.cache.owners[dev] = ownerEntry{node: owner, rev: kv.ModRevision}
		if mine && rev > 0 && owner != c.self.ID && kv.ModRevision > rev {
			c.dropLocked(dev) // the device registered at another node since
			fx.lost = append(fx.lost, dev)
		}
	case strings.HasPrefix(key, channelsPrefix):
		dev, ch, ok := strings.Cut(key[len(channelsPrefix):], "/")
		if !ok {
			return
		}
		if del {
			if chs := c.cache.channels[dev]; chs != nil {
				if was, ok := chs[ch]; ok {
					fx.channels = append(fx.channels, ChannelChange{Old: &was.rec})
				}
				delete(chs, ch)
				if len(chs) == 0 {
					delete(c.cache.channels, dev)
				}
			}
			if c.cache.channelDevice[ch] == dev {
				delete(c.cache.channelDevice, ch)
			}
			if _, want := c.myChans[dev][ch]; want {
				c.dirtyChan[dev], fx.rewrite = true, true
			}
			return
		}
		var rec ChannelRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			c.log.Warn().Err(err).Str("key", key).Msg("cluster: unreadable channel record ignored")
			return
		}
		rec.ID, rec.DeviceID = ch, dev
		chs := c.cache.channels[dev]
		if chs == nil {
			chs = map[string]chanEntry{}
			c.cache.channels[dev] = chs
		}
		if was, ok := chs[ch]; !ok {
			fx.channels = append(fx.channels, ChannelChange{New: &rec})
		} else if was.raw != string(kv.Value) {
			fx.channels = append(fx.channels, ChannelChange{Old: &was.rec, New: &rec})
		}
		chs[ch] = chanEntry{rec: rec, raw: string(kv.Value)}
		c.cache.channelDevice[ch] = dev
	case strings.HasPrefix(key, electionPrefix):
		platform, lease, ok := strings.Cut(key[len(electionPrefix):], "/")
		if !ok {
			return
		}
		cands := c.cache.elections[platform]
		if del {
			delete(cands, lease)
			if len(cands) == 0 {
				delete(c.cache.elections, platform)
			}
			return
		}
		if cands == nil {
			cands = map[string]candidate{}
			c.cache.elections[platform] = cands
		}
		cands[lease] = candidate{node: string(kv.Value), createRev: kv.CreateRevision}
	}
}

// notify runs the callbacks the effects call for, outside c.mu.
func (c *Cluster) notify(fx effects) {
	c.mu.RLock()
	lost, changed, managed, chans := c.onLost, c.onChanged, c.onManaged, c.onChannels
	c.mu.RUnlock()
	for _, dev := range fx.lost {
		c.log.Info().Str("device", dev).Msg("cluster: device registered at another node; dropping our claim")
		for _, fn := range lost {
			fn(dev)
		}
	}
	if fx.nodesChanged {
		for _, fn := range changed {
			fn()
		}
	}
	if fx.reseed {
		c.log.Warn().Msg("cluster: etcd holds no managed set any more (replaced by an empty one?); nodes seed it again with theirs")
		fx.managed = append(fx.managed, ManagedChange{Reseed: true})
	}
	for _, ch := range fx.managed {
		for _, fn := range managed {
			fn(ch)
		}
	}
	if len(fx.channels) > 0 {
		for _, fn := range chans {
			fn(fx.channels)
		}
	}
	if fx.rewrite {
		c.wake()
	}
}

// watchLoop loads every key, then follows the changes; it reloads when the
// watch breaks (compaction) and when this node joins with a new lease (etcd
// may have been replaced, its revisions reset).
func (c *Cluster) watchLoop() {
	defer c.wg.Done()
	var bo backoff
	for !c.isClosing() {
		resp, err := c.client().Get(c.ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			c.fail("load", err)
			if !c.sleep(bo.next()) {
				return
			}
			continue
		}
		bo = backoff{}
		c.reload(resp.Kvs)
		if !c.follow(resp.Header.Revision + 1) {
			return
		}
	}
}

// follow applies watch events from rev on; false when closing.
func (c *Cluster) follow(rev int64) bool {
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	wch := c.client().Watch(clientv3.WithRequireLeader(ctx), prefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
	for {
		select {
		case <-c.closing:
			return false
		case <-c.rewatch:
			return true
		case wr, ok := <-wch:
			if !ok {
				return !c.isClosing()
			}
			if err := wr.Err(); err != nil { // compacted, or no leader: read everything again
				c.fail("watch", err)
				return true
			}
			var fx effects
			c.mu.Lock()
			for _, ev := range wr.Events {
				c.applyLocked(ev.Kv, ev.Type == clientv3.EventTypeDelete, &fx)
			}
			c.mu.Unlock()
			c.notify(fx)
		}
	}
}

// reload replaces the cache with a full read.
func (c *Cluster) reload(kvs []*mvccpb.KeyValue) {
	var fx effects
	c.mu.Lock()
	old := c.cache
	c.cache = newCache()
	for _, kv := range kvs {
		c.applyLocked(kv, false, &fx)
	}
	// Our claims and channels absent from etcd are written again.
	for dev := range c.mine {
		if _, ok := c.cache.owners[dev]; !ok {
			c.dirtyDev[dev], fx.rewrite = true, true
		}
	}
	for dev, chs := range c.myChans {
		for ch := range chs {
			if _, ok := c.cache.channels[dev][ch]; !ok {
				c.dirtyChan[dev], fx.rewrite = true, true
			}
		}
	}
	fx.nodesChanged = fx.nodesChanged || len(old.nodes) != len(c.cache.nodes)
	// Managed entries are reported by difference with what was cached; an
	// etcd without the set (replaced by an empty one) removes nothing.
	fx.managed = nil
	if c.cache.seeded {
		fx.managed = managedDiff(old.managed, c.cache.managed)
	} else {
		fx.reseed = old.seeded
		c.cache.managed = old.managed
	}
	fx.channels = channelDiff(old.channels, c.cache.channels) // not every record as new
	c.loaded = true
	joined := c.session() != nil
	c.mu.Unlock()
	if joined {
		c.markReady()
	}
	c.notify(fx)
}

func (c *Cluster) markReady() { c.readyMu.Do(func() { close(c.ready) }) }
