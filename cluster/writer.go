package cluster

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// desired is what this node holds and wants etcd to say; guarded by
// Cluster.mu. The writer makes etcd match it.
type desired struct {
	mine      map[string]int64                // device -> revision our claim was written at (0: not yet)
	myChans   map[string]map[string]chanEntry // device -> channel -> record and value to store
	myChanDev map[string]string               // channel -> device, of myChans
	dirtyDev  map[string]bool                 // claims or releases to write
	dirtyChan map[string]bool                 // devices whose channels to reconcile
	// dropped are channels we published and no longer want, until a flush
	// deleted them: our own watch may not have shown them in the cache yet
	// when the catalog changes again.
	dropped   map[string]map[string]bool // device -> channel
	nodeDirty bool
	// resync: we joined with a new lease; everything is written again, our
	// claims only where no other node took the device meanwhile.
	resync        bool
	oldLease      clientv3.LeaseID // revoked once resynced
	lastNodeWrite time.Time
	flushing      bool          // a plan is being written
	flushed       chan struct{} // closed and replaced after each flush: wakes Sync
}

func newDesired() desired {
	return desired{
		mine: map[string]int64{}, myChans: map[string]map[string]chanEntry{}, myChanDev: map[string]string{},
		dirtyDev: map[string]bool{}, dirtyChan: map[string]bool{}, dropped: map[string]map[string]bool{},
		flushed: make(chan struct{}),
	}
}

// ClaimDevice records that device id registered here. It returns at once:
// the claim is written (under this node's lease) by the writer, and only
// when this node did not already hold the device, so re-registrations and
// keepalives write nothing.
func (c *Cluster) ClaimDevice(id string) {
	c.mu.Lock()
	_, held := c.mine[id]
	if !held {
		c.mine[id] = 0
		c.dirtyDev[id] = true
	}
	c.mu.Unlock()
	if !held {
		c.wake()
	}
}

// ReleaseDevice records that device id unregistered or expired here. The
// owner key is deleted only if it still names this node (a transaction
// compare), so a device that moved to another node keeps its new owner.
// Its channels stay until SetChannels(id, nil).
func (c *Cluster) ReleaseDevice(id string) {
	c.mu.Lock()
	_, held := c.mine[id]
	if held {
		delete(c.mine, id)
		c.dirtyDev[id] = true
	}
	c.mu.Unlock()
	if held {
		c.wake()
	}
}

// SetChannels publishes device deviceID's channels (on catalog change);
// nil removes them. Only the records that differ from etcd are written.
func (c *Cluster) SetChannels(deviceID string, channels []ChannelRecord) {
	want := make(map[string]chanEntry, len(channels))
	for _, r := range channels {
		id := r.ID
		if id == "" || strings.Contains(id, "/") {
			c.log.Warn().Str("device", deviceID).Str("channel", id).Msg("cluster: channel without a usable ID not published")
			continue
		}
		r.ID, r.DeviceID, r.Node = "", "", c.cfg.NodeID // the key says the first two
		b, _ := json.Marshal(r)                         // strings and bytes: cannot fail
		r.ID, r.DeviceID = id, deviceID
		want[id] = chanEntry{rec: r, raw: string(b)}
	}
	c.mu.Lock()
	same := maps.EqualFunc(c.myChans[deviceID], want, func(a, b chanEntry) bool { return a.raw == b.raw })
	if !same {
		c.setMyChansLocked(deviceID, want)
		c.dirtyChan[deviceID] = true
	}
	c.mu.Unlock()
	if !same {
		c.wake()
	}
}

func (c *Cluster) setMyChansLocked(dev string, want map[string]chanEntry) {
	for ch := range c.myChans[dev] {
		if c.myChanDev[ch] == dev {
			delete(c.myChanDev, ch)
		}
		if _, kept := want[ch]; !kept {
			if c.dropped[dev] == nil {
				c.dropped[dev] = map[string]bool{}
			}
			c.dropped[dev][ch] = true
		}
	}
	if len(want) == 0 {
		delete(c.myChans, dev)
		return
	}
	c.myChans[dev] = want
	for ch := range want {
		c.myChanDev[ch] = dev
	}
}

// dropLocked forgets a device another node took: nothing is written, the
// new owner overwrites its keys.
func (c *Cluster) dropLocked(dev string) {
	delete(c.mine, dev)
	c.setMyChansLocked(dev, nil)
	delete(c.dirtyDev, dev)
	delete(c.dirtyChan, dev)
	delete(c.dropped, dev)
}

// plan is one flush: what to write, taken from desired under the lock.
type plan struct {
	ops      []clientv3.Op // unconditional puts and deletes
	node     bool
	claims   []string
	reclaims []string
	releases []string
	chanDevs []string
	dropped  map[string][]string // device -> channels this plan deletes from dropped
	resync   bool
	revoke   clientv3.LeaseID
	later    time.Duration // a rate-limited node record is due then
}

func (p *plan) empty() bool {
	return len(p.ops) == 0 && len(p.reclaims) == 0 && len(p.releases) == 0 && p.revoke == 0
}

func (c *Cluster) planLocked(lease clientv3.LeaseID) *plan {
	p := &plan{resync: c.resync}
	c.resync = false
	withLease := clientv3.WithLease(lease)
	if c.nodeDirty {
		if wait := c.cfg.LoadInterval - time.Since(c.lastNodeWrite); wait > 0 && !p.resync {
			p.later = wait
		} else {
			n := cloneNode(c.self)
			b, _ := json.Marshal(n)
			p.ops = append(p.ops, clientv3.OpPut(nodesPrefix+n.ID, string(b), withLease))
			p.node, c.nodeDirty = true, false
		}
	}
	if p.resync {
		p.reclaims = slices.Collect(maps.Keys(c.mine))
		p.revoke = c.oldLease
		for _, dev := range p.reclaims {
			delete(c.dirtyDev, dev)
		}
	}
	for dev := range c.dirtyDev {
		delete(c.dirtyDev, dev)
		if _, held := c.mine[dev]; !held {
			p.releases = append(p.releases, dev)
			continue
		}
		if o := c.cache.owners[dev]; o.node == c.self.ID && c.mine[dev] > 0 {
			continue // already there
		}
		p.claims = append(p.claims, dev)
		p.ops = append(p.ops, clientv3.OpPut(devicesPrefix+dev, c.self.ID, withLease))
	}
	if p.resync { // every channel again, under the new lease
		for dev := range c.myChans {
			c.dirtyChan[dev] = true
		}
	}
	for dev := range c.dirtyChan {
		delete(c.dirtyChan, dev)
		p.chanDevs = append(p.chanDevs, dev)
		want := c.myChans[dev]
		_, held := c.mine[dev]
		cached := c.cache.channels[dev]
		for ch, e := range want {
			if old, ok := cached[ch]; !ok || old.raw != e.raw || p.resync {
				p.ops = append(p.ops, clientv3.OpPut(channelsPrefix+dev+"/"+ch, e.raw, withLease))
			}
		}
		deleted := map[string]bool{}
		for ch, e := range cached {
			if _, ok := want[ch]; !ok && (held || e.rec.Node == c.self.ID) {
				deleted[ch] = true
				p.ops = append(p.ops, clientv3.OpDelete(channelsPrefix+dev+"/"+ch))
			}
		}
		for ch := range c.dropped[dev] {
			if _, ok := want[ch]; !ok && !deleted[ch] {
				p.ops = append(p.ops, clientv3.OpDelete(channelsPrefix+dev+"/"+ch))
			}
			if p.dropped == nil {
				p.dropped = map[string][]string{}
			}
			p.dropped[dev] = append(p.dropped[dev], ch)
		}
	}
	return p
}

// requeueLocked marks a failed plan's work to do again.
func (c *Cluster) requeueLocked(p *plan) {
	c.nodeDirty = c.nodeDirty || p.node
	c.resync = c.resync || p.resync
	for _, list := range [][]string{p.claims, p.reclaims, p.releases} {
		for _, dev := range list {
			c.dirtyDev[dev] = true
		}
	}
	for _, dev := range p.chanDevs {
		c.dirtyChan[dev] = true
	}
}

// writeLoop runs flushes when woken, when a rate-limited record is due, and
// after failures with a backoff.
func (c *Cluster) writeLoop() {
	defer c.wg.Done()
	var bo backoff
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		select {
		case <-c.closing:
			return
		case <-c.kick:
		case <-t.C:
		}
		later, err := c.flush()
		c.mu.Lock()
		close(c.flushed)
		c.flushed = make(chan struct{})
		c.mu.Unlock()
		switch {
		case err != nil:
			c.fail("write", err)
			t.Reset(bo.next())
		case later > 0:
			bo = backoff{}
			t.Reset(later)
		default:
			bo = backoff{}
		}
	}
}

// flush writes what desired asks; nothing without a session (joining kicks
// the writer again).
func (c *Cluster) flush() (later time.Duration, err error) {
	s := c.session()
	if s == nil {
		return 0, nil
	}
	lease := s.Lease()
	c.mu.Lock()
	p := c.planLocked(lease)
	c.flushing = !p.empty()
	c.mu.Unlock()
	if p.empty() {
		return p.later, nil
	}
	revs, lost, err := c.execute(p, lease)
	c.mu.Lock()
	c.flushing = false
	if err != nil {
		c.requeueLocked(p)
		c.mu.Unlock()
		return 0, err
	}
	for dev, rev := range revs {
		if r, held := c.mine[dev]; held && r == 0 {
			c.mine[dev] = rev
		}
	}
	for dev, chs := range p.dropped {
		for _, ch := range chs {
			delete(c.dropped[dev], ch)
		}
		if len(c.dropped[dev]) == 0 {
			delete(c.dropped, dev)
		}
	}
	for _, dev := range lost {
		c.dropLocked(dev)
	}
	if p.node {
		c.lastNodeWrite = time.Now()
	}
	if p.revoke != 0 && c.oldLease == p.revoke {
		c.oldLease = 0
	}
	c.mu.Unlock()
	if len(lost) > 0 {
		c.notify(effects{lost: lost})
	}
	return p.later, nil
}

// execute runs a plan: unconditional operations in transactions of at most
// maxTxnOps, then releases and reclaims, each a nested transaction with its
// own compare. It returns the revision each claim was written at and the
// reclaims another node had taken.
func (c *Cluster) execute(p *plan, lease clientv3.LeaseID) (revs map[string]int64, lost []string, err error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.opTimeout())
	defer cancel()
	revs = map[string]int64{}
	// Releases first: a watcher seeing a device's channels go already sees
	// it unowned (offline, not a catalog change).
	for chunk := range slices.Chunk(p.releases, maxTxnOps) {
		ops := make([]clientv3.Op, len(chunk))
		for i, dev := range chunk {
			key := devicesPrefix + dev
			ops[i] = clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(key), "=", c.self.ID)},
				[]clientv3.Op{clientv3.OpDelete(key)}, nil)
		}
		if _, err := c.client().Txn(ctx).Then(ops...).Commit(); err != nil {
			return nil, nil, err
		}
		c.wrote(1)
	}
	for chunk := range slices.Chunk(p.ops, maxTxnOps) {
		resp, err := c.client().Txn(ctx).Then(chunk...).Commit()
		if err != nil {
			return nil, nil, err
		}
		c.wrote(1)
		for _, op := range chunk {
			if dev, ok := strings.CutPrefix(string(op.KeyBytes()), devicesPrefix); ok {
				revs[dev] = resp.Header.Revision
			}
		}
	}
	withLease := clientv3.WithLease(lease)
	for chunk := range slices.Chunk(p.reclaims, maxTxnOps) {
		ops := make([]clientv3.Op, len(chunk))
		for i, dev := range chunk {
			key := devicesPrefix + dev
			put := []clientv3.Op{clientv3.OpPut(key, c.self.ID, withLease)}
			// Ours already, or nobody's: write it under the new lease.
			ops[i] = clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(key), "=", c.self.ID)}, put,
				[]clientv3.Op{clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}, put, nil)})
		}
		resp, err := c.client().Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, nil, err
		}
		c.wrote(1)
		for i, r := range resp.Responses {
			t := r.GetResponseTxn()
			if t.Succeeded || t.Responses[0].GetResponseTxn().Succeeded {
				revs[chunk[i]] = resp.Header.Revision
			} else {
				lost = append(lost, chunk[i])
			}
		}
	}
	if p.revoke != 0 {
		// The old lease may still live (etcd restarted, which renews leases):
		// its keys are ours under the new one now; drop its candidacies.
		if _, err := c.client().Revoke(ctx, p.revoke); err == nil {
			c.wrote(1)
		}
	}
	return revs, lost, nil
}

func (c *Cluster) opTimeout() time.Duration { return min(max(c.cfg.TTL/2, time.Second), 5*time.Second) }

// Sync waits until etcd holds everything this node claimed and published,
// load included (so up to LoadInterval); for tests, benches and a graceful
// shutdown. The error is ctx's.
func (c *Cluster) Sync(ctx context.Context) error {
	c.wake()
	for {
		joined := c.session() != nil
		c.mu.RLock()
		idle := joined && !c.flushing && !c.resync && !c.nodeDirty && len(c.dirtyDev) == 0 && len(c.dirtyChan) == 0
		flushed := c.flushed
		c.mu.RUnlock()
		if idle {
			return nil
		}
		select {
		case <-flushed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
