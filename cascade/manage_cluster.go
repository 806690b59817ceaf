package cascade

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/cluster"
	"github.com/gbproxy/gbproxy/configs"
	"github.com/gbproxy/gbproxy/directory"
)

// The managed set in a cluster. etcd holds the upper platforms, allowed
// devices and shares every node runs (cluster/managed.go). A management
// function writes its change to etcd first (a change etcd does not take is
// refused: ErrClusterDown), then applies it here; every other node applies
// it when its watch shows it, through applyManagedLocked, which does what
// the management functions do on a single node and nothing when the entry
// already is as etcd says. The store keeps mirroring the running set.
//
// At start the node adopts etcd's set; only when etcd holds none does its
// own running set (the config file's entries, with what its store kept)
// seed it: the first node wins. Edits of its config file (SIGHUP, or made
// while it was stopped) are written to etcd as the API would write them.

// ErrClusterDown: etcd did not take a change; nothing changed.
var ErrClusterDown = errors.New("the cluster's etcd did not take the change; nothing changed")

// applyTimeout bounds what applying one change from the cluster may wait
// on (Expires: 0 to a removed platform).
const applyTimeout = 10 * time.Second

// managedQueue hands the watch's changes to the goroutine applying them:
// the latest per entry, and a request to seed again.
type managedQueue struct {
	mu      sync.Mutex
	pending map[string]cluster.ManagedChange // kind/id -> change
	reseed  bool
	wake    chan struct{}
}

// useManagedCluster makes etcd the source of the managed set (UseCluster).
func (c *Cascade) useManagedCluster(cl *cluster.Cluster) {
	c.managed = &managedQueue{pending: map[string]cluster.ManagedChange{}, wake: make(chan struct{}, 1)}
	cl.OnManaged(c.managedChanged)
	if err := c.adoptManaged(); err != nil {
		c.log.Warn().Err(err).Msg("cluster: etcd unreachable at start: running this node's own platforms and devices until it answers")
		c.managedChanged(cluster.ManagedChange{Reseed: true}) // the loop retries
	}
	c.wg.Add(1)
	go c.managedLoop()
}

// managedChanged queues a change seen by the watch; it must not block.
func (c *Cascade) managedChanged(ch cluster.ManagedChange) {
	q := c.managed
	q.mu.Lock()
	if ch.Reseed {
		q.reseed = true
	} else {
		q.pending[ch.Kind+"/"+ch.ID] = ch
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// managedLoop applies the queued changes, each as etcd has it now (the
// cache), and adopts etcd's set again when asked to (retrying while etcd
// is away).
func (c *Cascade) managedLoop() {
	defer c.wg.Done()
	q := c.managed
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-q.wake:
		case <-retry.C:
		}
		q.mu.Lock()
		pending, reseed := q.pending, q.reseed
		q.pending, q.reseed = map[string]cluster.ManagedChange{}, false
		q.mu.Unlock()
		if reseed {
			if err := c.adoptManaged(); err != nil {
				c.log.Warn().Err(err).Msg("cluster: could not adopt the cluster's platforms and devices; retrying")
				q.mu.Lock()
				q.reseed = true
				q.mu.Unlock()
				retry.Reset(2 * time.Second)
			}
			continue // adopting applied everything
		}
		c.manageMu.Lock()
		for _, ch := range pending {
			value, _ := c.cluster.ManagedEntry(ch.Kind, ch.ID)
			by := ch.Node
			if value == nil {
				by = "" // etcd does not say who removed it
			}
			c.applyManagedLocked(ch.Kind, ch.ID, value, by)
		}
		c.manageMu.Unlock()
	}
}

// adoptManaged makes etcd's managed set the running one, seeding it with
// this node's when etcd holds none.
func (c *Cascade) adoptManaged() error {
	c.manageMu.Lock()
	defer c.manageMu.Unlock()
	if c.closed {
		return nil
	}
	ctx, cancel := context.WithTimeout(c.ctx, applyTimeout)
	defer cancel()
	seeded, err := c.cluster.SeedManaged(ctx, c.runningSetLocked())
	if err != nil {
		return err
	}
	if !seeded {
		// The file's edits made while this node was stopped go to the
		// cluster as a reload would send them.
		if _, err := c.writeFileChanges(c.startChanges.Platforms, c.startChanges.Devices); err != nil {
			c.log.Error().Err(err).Msg("cluster: config file edits made while stopped not written to the cluster")
		}
	}
	c.startChanges = fileChanges{}
	c.reconcileManagedLocked()
	c.log.Info().Bool("seeded_by_this_node", seeded).Int("platforms", len(c.upper.upperList())).
		Int("devices", len(*c.lower.allowed.Load())).Msg("cluster: running the cluster's managed platforms, devices and shares")
	return nil
}

// fileChanges are config file edits not yet written to the cluster.
type fileChanges struct {
	Platforms []Change[configs.PlatformConfig]
	Devices   []Change[configs.DeviceConfig]
}

// runningSetLocked is this node's managed set as etcd would hold it.
func (c *Cascade) runningSetLocked() []cluster.ManagedChange {
	var out []cluster.ManagedChange
	add := func(kind, id string, v any) {
		b, err := json.Marshal(v)
		if err == nil {
			out = append(out, cluster.ManagedChange{Kind: kind, ID: id, Value: b})
		}
	}
	for _, u := range c.upper.upperList() {
		add(cluster.ManagedPlatform, u.id, configs.EntryMap(u.cfg().PlatformConfig))
		if s, ok := c.upper.savedShare(u.id); ok {
			add(cluster.ManagedShare, u.id, s)
		}
	}
	for _, d := range c.AllowedDevices() {
		add(cluster.ManagedDevice, d.ID, configs.EntryMap(d))
	}
	return out
}

// reconcileManagedLocked applies etcd's whole set: what it holds is put,
// what runs here and it lacks goes.
func (c *Cascade) reconcileManagedLocked() {
	want := map[string]map[string]json.RawMessage{
		cluster.ManagedPlatform: {}, cluster.ManagedShare: {}, cluster.ManagedDevice: {},
	}
	for _, e := range c.cluster.Managed() { // platforms first: shares apply to them
		want[e.Kind][e.ID] = e.Value
		c.applyManagedLocked(e.Kind, e.ID, e.Value, "")
	}
	for _, u := range c.upper.upperList() {
		if _, ok := want[cluster.ManagedPlatform][u.id]; !ok {
			c.applyManagedLocked(cluster.ManagedPlatform, u.id, nil, "")
		}
	}
	_ = c.store.ForEach(bucketShares, func(id string, _ []byte) error {
		if _, ok := want[cluster.ManagedShare][id]; !ok {
			c.applyManagedLocked(cluster.ManagedShare, id, nil, "")
		}
		return nil
	})
	for _, d := range c.AllowedDevices() {
		if _, ok := want[cluster.ManagedDevice][d.ID]; !ok {
			c.applyManagedLocked(cluster.ManagedDevice, d.ID, nil, "")
		}
	}
}

// applyManagedLocked makes entry kind/id what value (nil: removed) says,
// as the management functions would; nothing when it already is. by is
// the node whose change it is, when known.
func (c *Cascade) applyManagedLocked(kind, id string, value json.RawMessage, by string) {
	if c.closed {
		return
	}
	log := c.log.With().Str("kind", kind).Str("id", id).Str("by_node", by).Logger()
	ctx, cancel := context.WithTimeout(context.Background(), applyTimeout)
	defer cancel()
	var raw map[string]any
	if value != nil && kind != cluster.ManagedShare {
		dec := json.NewDecoder(bytes.NewReader(value))
		dec.UseNumber() // long IDs stay exact
		if err := dec.Decode(&raw); err != nil {
			log.Error().Err(err).Msg("cluster: unreadable managed entry ignored")
			return
		}
	}
	switch kind {
	case cluster.ManagedPlatform:
		u := c.upper.upperByID(id)
		if raw == nil {
			if u != nil {
				log.Info().Msg("cluster: upper platform removed in the cluster")
				c.removePlatformLocked(ctx, u)
				c.store.Delete(bucketManagedPlatforms, id)
			}
			return
		}
		p, err := c.cfg.ParsePlatform(raw)
		if err != nil {
			log.Error().Err(err).Msg("cluster: upper platform from the cluster not valid here; not run on this node")
			return
		}
		if u != nil && len(configs.ChangedKeys(u.cfg().PlatformConfig, p)) == 0 {
			return
		}
		log.Info().Msg("cluster: applying an upper platform of the cluster")
		if u == nil {
			err = c.addPlatformLocked(p)
		} else {
			err = c.updatePlatformLocked(ctx, u, p)
		}
		if err != nil {
			log.Error().Err(err).Msg("cluster: upper platform from the cluster could not run on this node")
			return
		}
		c.savePlatform(p)
	case cluster.ManagedShare:
		var share *configs.ShareConfig
		if value != nil {
			share = &configs.ShareConfig{}
			if err := json.Unmarshal(value, share); err != nil {
				log.Error().Err(err).Msg("cluster: unreadable share ignored")
				return
			}
		}
		c.applyShareLocked(id, share, log)
	case cluster.ManagedDevice:
		old, listed := c.lower.allowedEntry(id)
		if raw == nil {
			if listed {
				log.Info().Msg("cluster: device removed in the cluster")
				c.removeDeviceLocked(id)
				c.store.Delete(bucketManagedDevices, id)
			}
			return
		}
		d, err := c.cfg.ParseDevice(raw)
		if err != nil {
			log.Error().Err(err).Msg("cluster: device from the cluster not valid here; not allowed on this node")
			return
		}
		if listed && len(configs.ChangedKeys(old.cfg, d)) == 0 {
			return
		}
		log.Info().Msg("cluster: applying an allowed device of the cluster")
		c.putDeviceLocked(d)
		c.saveDevice(d)
	}
}

// applyShareLocked applies a share from the cluster (nil: the platform's
// own); kept in the store for a platform not running here yet.
func (c *Cascade) applyShareLocked(platformID string, share *configs.ShareConfig, log zerolog.Logger) {
	u := c.upper.upperByID(platformID)
	if u == nil {
		if share != nil {
			c.store.Put(bucketShares, platformID, share)
		} else {
			c.store.Delete(bucketShares, platformID)
		}
		return
	}
	next := u.cfg().Share
	if share != nil {
		next = *share
	}
	if reflect.DeepEqual(u.view().cfg, next) {
		return
	}
	log.Info().Msg("cluster: applying a share of the cluster")
	if err := c.upper.setShare(platformID, share); err != nil {
		log.Error().Err(err).Msg("cluster: share from the cluster not valid here")
	}
}

// writeEntry writes one platform or device change to etcd before it is
// applied here (cluster only); the errors are the management functions'.
func (c *Cascade) writeEntry(kind, id string, entry any, mode cluster.WriteMode) error {
	b, err := json.Marshal(configs.EntryMap(entry))
	if err != nil {
		return err
	}
	return c.managedErr(kind, id, c.cluster.PutManaged(c.ctx, kind, id, b, mode))
}

// deleteEntry removes one entry from etcd (cluster only); an entry etcd
// lacks is no error: it goes here all the same.
func (c *Cascade) deleteEntry(kind, id string) error {
	_, err := c.cluster.DeleteManaged(c.ctx, kind, id)
	return c.managedErr(kind, id, err)
}

// writeShare writes a share (nil: back to the platform's own) to etcd.
func (c *Cascade) writeShare(platformID string, share *configs.ShareConfig) error {
	if share == nil {
		return c.deleteEntry(cluster.ManagedShare, platformID)
	}
	b, err := json.Marshal(share)
	if err != nil {
		return err
	}
	return c.managedErr(cluster.ManagedShare, platformID, c.cluster.PutManaged(c.ctx, cluster.ManagedShare, platformID, b, cluster.Upsert))
}

func (c *Cascade) managedErr(kind, id string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, cluster.ErrManagedExists) && kind == cluster.ManagedPlatform:
		return fmt.Errorf("upper platform %s %w", id, ErrExists)
	case errors.Is(err, cluster.ErrManagedExists):
		return fmt.Errorf("device %s %w", id, ErrExists)
	case errors.Is(err, cluster.ErrManagedMissing) && kind == cluster.ManagedPlatform:
		return directory.ErrUnknownPlatform
	case errors.Is(err, cluster.ErrManagedMissing):
		return ErrUnknownDevice
	}
	c.log.Warn().Err(err).Str("kind", kind).Str("id", id).Msg("cluster: change refused: etcd did not take it")
	return fmt.Errorf("%w: %w", ErrClusterDown, err)
}

// writeFileChanges writes config file edits to etcd (upserts and removals:
// the file wins, as on a single node) and returns those etcd took.
func (c *Cascade) writeFileChanges(pc []Change[configs.PlatformConfig], dc []Change[configs.DeviceConfig]) (fileChanges, error) {
	var done fileChanges
	var errs []error
	for _, ch := range pc {
		err := c.writeFileChange(cluster.ManagedPlatform, ch.ID, ch.Kind, ch.Entry)
		if err == nil && ch.Kind == "removed" {
			err = c.deleteEntry(cluster.ManagedShare, ch.ID)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("upper platform %s: %w", ch.ID, err))
			continue
		}
		done.Platforms = append(done.Platforms, ch)
	}
	for _, ch := range dc {
		if err := c.writeFileChange(cluster.ManagedDevice, ch.ID, ch.Kind, ch.Entry); err != nil {
			errs = append(errs, fmt.Errorf("device %s: %w", ch.ID, err))
			continue
		}
		done.Devices = append(done.Devices, ch)
	}
	return done, errors.Join(errs...)
}

func (c *Cascade) writeFileChange(kind, id, change string, entry any) error {
	if change == "removed" {
		return c.deleteEntry(kind, id)
	}
	return c.writeEntry(kind, id, entry, cluster.Upsert)
}
