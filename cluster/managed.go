package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The managed set: upper platforms, allowed devices and shares set at run
// time, the same on every node. Unlike the rest of the cluster's keys they
// carry no lease (they outlive the node that wrote them) and they are
// written only by management (API, reload), never by traffic. Each value
// is an envelope naming the node that wrote it around the entry as the
// config file writes it (JSON; secrets included: etcd must be protected).
const (
	managedPrefix = prefix + "managed/"      // managed/<kind>/<id> -> managedRecord JSON
	seededKey     = managedPrefix + "seeded" // -> ID of the node whose entries seeded the set
)

// Kinds of managed entries.
const (
	ManagedPlatform = "platforms" // upper platform, by platform ID
	ManagedDevice   = "devices"   // allowed device, by device ID
	ManagedShare    = "shares"    // sharing set through the API, by platform ID
)

// Errors of the conditional managed writes.
var (
	ErrManagedExists  = errors.New("cluster: entry already exists")
	ErrManagedMissing = errors.New("cluster: no such entry")
)

// WriteMode says what PutManaged requires of the entry in etcd.
type WriteMode int

const (
	Upsert     WriteMode = iota // create or replace
	CreateOnly                  // fail with ErrManagedExists when present
	UpdateOnly                  // fail with ErrManagedMissing when absent
)

// ManagedChange is one managed entry as it is now: Value nil means removed.
type ManagedChange struct {
	Kind, ID string
	Value    json.RawMessage
	Node     string // the node that wrote it; "" for a removal (etcd keeps no deleter)
	// Reseed (Kind and ID empty): etcd holds no managed set any more (it
	// was replaced by an empty one); the node should seed it again with
	// its running set.
	Reseed bool
}

type managedRecord struct {
	Node  string          `json:"node"`
	Value json.RawMessage `json:"value"`
}

// managedEntry is one cached managed key; a removal stays as a tombstone
// (value nil) so that a watch event older than our own write is ignored.
type managedEntry struct {
	value json.RawMessage
	node  string
	rev   int64 // ModRevision of the put or delete
}

func managedKey(kind, id string) string { return managedPrefix + kind + "/" + id }

func checkManaged(kind, id string) error {
	switch kind {
	case ManagedPlatform, ManagedDevice, ManagedShare:
	default:
		return fmt.Errorf("cluster: unknown managed kind %q", kind)
	}
	if id == "" || strings.Contains(id, "/") {
		return fmt.Errorf("cluster: managed ID %q unusable as a key", id)
	}
	return nil
}

// applyManagedLocked caches one managed key change from etcd; a change of
// value is appended to fx.managed.
func (c *Cluster) applyManagedLocked(kv *mvccpb.KeyValue, del bool, fx *effects) {
	key := string(kv.Key)
	if key == seededKey {
		c.cache.seeded = !del
		return
	}
	kind, id, ok := strings.Cut(key[len(managedPrefix):], "/")
	if !ok {
		return
	}
	old, had := c.cache.managed[key]
	if had && old.rev >= kv.ModRevision {
		return // our own write, already cached
	}
	e := managedEntry{rev: kv.ModRevision}
	if !del {
		var rec managedRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil || rec.Value == nil {
			c.log.Warn().Err(err).Str("key", key).Msg("cluster: unreadable managed entry ignored")
			return
		}
		e.value, e.node = rec.Value, rec.Node
	}
	c.cache.managed[key] = e
	// Our own write's event can come before PutManaged caches it: it is
	// ours by the node it names, and we applied it already.
	if !bytes.Equal(old.value, e.value) && (del || e.node != c.cfg.NodeID) {
		fx.managed = append(fx.managed, ManagedChange{Kind: kind, ID: id, Value: e.value, Node: e.node})
	}
}

// managedDiff lists the managed entries whose value differs between two
// caches (a full reload).
func managedDiff(old, next map[string]managedEntry) []ManagedChange {
	var out []ManagedChange
	add := func(key string, e managedEntry) {
		kind, id, _ := strings.Cut(key[len(managedPrefix):], "/")
		out = append(out, ManagedChange{Kind: kind, ID: id, Value: e.value, Node: e.node})
	}
	for key, e := range next {
		if !bytes.Equal(old[key].value, e.value) {
			add(key, e)
		}
	}
	for key, e := range old {
		if _, ok := next[key]; !ok && e.value != nil {
			add(key, managedEntry{rev: e.rev})
		}
	}
	sortChanges(out)
	return out
}

// sortChanges orders platforms before shares before devices: a share
// applies to a platform already there.
func sortChanges(list []ManagedChange) {
	rank := map[string]int{ManagedPlatform: 0, ManagedShare: 1, ManagedDevice: 2}
	slices.SortFunc(list, func(a, b ManagedChange) int {
		if r := rank[a.Kind] - rank[b.Kind]; r != 0 {
			return r
		}
		return strings.Compare(a.ID, b.ID)
	})
}

// OnManaged registers fn, called (from the watch goroutine, so it must not
// block) for every managed entry another write changed in etcd, and with
// Reseed when etcd lost the managed set. This node's own PutManaged and
// DeleteManaged are not reported: their caller applies them.
func (c *Cluster) OnManaged(fn func(ManagedChange)) {
	c.mu.Lock()
	c.onManaged = append(c.onManaged, fn)
	c.mu.Unlock()
}

// Managed is the managed set as this node's cache has it, platforms first,
// then shares, then devices.
func (c *Cluster) Managed() []ManagedChange {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []ManagedChange
	for key, e := range c.cache.managed {
		if e.value != nil {
			kind, id, _ := strings.Cut(key[len(managedPrefix):], "/")
			out = append(out, ManagedChange{Kind: kind, ID: id, Value: e.value, Node: e.node})
		}
	}
	sortChanges(out)
	return out
}

// ManagedEntry is one managed entry from the cache.
func (c *Cluster) ManagedEntry(kind, id string) (json.RawMessage, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e := c.cache.managed[managedKey(kind, id)]
	return e.value, e.value != nil
}

// PutManaged writes one managed entry (mode says on which condition) and
// caches it at once; it waits for etcd (bounded by ctx and the cluster's
// operation timeout): a change etcd did not take is refused, never kept
// on one node only.
func (c *Cluster) PutManaged(ctx context.Context, kind, id string, value []byte, mode WriteMode) error {
	if err := checkManaged(kind, id); err != nil {
		return err
	}
	if !json.Valid(value) {
		return fmt.Errorf("cluster: managed %s %s: value is not JSON", kind, id)
	}
	b, _ := json.Marshal(managedRecord{Node: c.cfg.NodeID, Value: value}) // valid JSON: cannot fail
	key := managedKey(kind, id)
	put := clientv3.OpPut(key, string(b))
	var cmp []clientv3.Cmp
	switch mode {
	case CreateOnly:
		cmp = append(cmp, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
	case UpdateOnly:
		cmp = append(cmp, clientv3.Compare(clientv3.CreateRevision(key), ">", 0))
	}
	rev, err := c.managedTxn(ctx, cmp, put)
	if err != nil {
		return err
	}
	if rev == 0 {
		if mode == CreateOnly {
			return ErrManagedExists
		}
		return ErrManagedMissing
	}
	c.cacheOwnWrite(key, managedEntry{value: slices.Clone(json.RawMessage(value)), node: c.cfg.NodeID, rev: rev})
	c.log.Info().Str("kind", kind).Str("id", id).Int64("rev", rev).Msg("cluster: managed entry written")
	return nil
}

// DeleteManaged removes one managed entry; existed is false when etcd had
// none.
func (c *Cluster) DeleteManaged(ctx context.Context, kind, id string) (existed bool, err error) {
	if err := checkManaged(kind, id); err != nil {
		return false, err
	}
	key := managedKey(kind, id)
	rev, err := c.managedTxn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), ">", 0)}, clientv3.OpDelete(key))
	if err != nil || rev == 0 {
		return false, err
	}
	c.cacheOwnWrite(key, managedEntry{rev: rev})
	c.log.Info().Str("kind", kind).Str("id", id).Int64("rev", rev).Msg("cluster: managed entry removed")
	return true, nil
}

// managedTxn runs op when cmp holds; rev is the revision it was written at,
// 0 when cmp failed.
func (c *Cluster) managedTxn(ctx context.Context, cmp []clientv3.Cmp, op clientv3.Op) (rev int64, err error) {
	cli, err := c.kv()
	if err != nil {
		return 0, fmt.Errorf("cluster: etcd did not take the change: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.opTimeout())
	defer cancel()
	resp, err := cli.Txn(ctx).If(cmp...).Then(op).Commit()
	if err != nil {
		c.fail("managed write", err)
		return 0, fmt.Errorf("cluster: etcd did not take the change: %w", err)
	}
	c.wrote(1)
	if !resp.Succeeded {
		return 0, nil
	}
	return resp.Header.Revision, nil
}

func (c *Cluster) cacheOwnWrite(key string, e managedEntry) {
	c.mu.Lock()
	if old, ok := c.cache.managed[key]; !ok || old.rev < e.rev {
		c.cache.managed[key] = e
	}
	c.mu.Unlock()
}

// SeedManaged makes entries (Kind, ID, Value) the cluster's managed set
// when etcd holds none: the first node to call it wins, the others (and
// this one on a later start) get etcd's set. seeded reports whether this
// call wrote it. The set etcd holds afterwards is in the cache (Managed).
func (c *Cluster) SeedManaged(ctx context.Context, entries []ManagedChange) (seeded bool, err error) {
	ops := []clientv3.Op{clientv3.OpPut(seededKey, c.cfg.NodeID)}
	for _, e := range entries {
		if err := checkManaged(e.Kind, e.ID); err != nil {
			return false, err
		}
		b, _ := json.Marshal(managedRecord{Node: c.cfg.NodeID, Value: e.Value})
		ops = append(ops, clientv3.OpPut(managedKey(e.Kind, e.ID), string(b)))
	}
	cli, err := c.kv()
	if err != nil {
		return false, fmt.Errorf("cluster: seed the managed set: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.opTimeout())
	defer cancel()
	// The first transaction decides; a set larger than one transaction
	// follows in more (the others see it complete through the watch).
	first := min(len(ops), maxTxnOps)
	resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(seededKey), "=", 0)).
		Then(ops[:first]...).Else(clientv3.OpGet(managedPrefix, clientv3.WithPrefix())).Commit()
	if err != nil {
		c.fail("managed seed", err)
		return false, fmt.Errorf("cluster: seed the managed set: %w", err)
	}
	c.wrote(1)
	if !resp.Succeeded {
		var fx effects
		c.mu.Lock()
		for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
			c.applyManagedLocked(kv, false, &fx)
		}
		c.mu.Unlock()
		return false, nil
	}
	revs := []int64{resp.Header.Revision}
	for chunk := range slices.Chunk(ops[first:], maxTxnOps) {
		r, err := cli.Txn(ctx).Then(chunk...).Commit()
		if err != nil {
			c.fail("managed seed", err)
			return true, fmt.Errorf("cluster: seed the managed set (part written): %w", err)
		}
		c.wrote(1)
		revs = append(revs, r.Header.Revision)
	}
	c.mu.Lock()
	c.cache.seeded = true
	for i, e := range entries {
		key := managedKey(e.Kind, e.ID)
		rev := revs[(i+1)/maxTxnOps] // ops[0] is the marker
		if old, ok := c.cache.managed[key]; !ok || old.rev < rev {
			c.cache.managed[key] = managedEntry{value: e.Value, node: c.cfg.NodeID, rev: rev}
		}
	}
	c.mu.Unlock()
	c.log.Info().Int("entries", len(entries)).Msg("cluster: etcd held no managed platforms, devices or shares; seeded them with this node's")
	return true, nil
}
