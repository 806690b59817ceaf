package cascade

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/gbproxy/gbproxy/configs"
)

// The running platforms and devices live in the store, the config file's
// entries being the initial set. Beside them the store keeps the file's
// entries as last applied, so that edits made to the file while gbproxy
// was stopped are applied at the next start as a reload would.
const (
	bucketManagedPlatforms = "managed_platforms"
	bucketManagedDevices   = "managed_devices"
	bucketManagedFile      = "managed_file"
	fileSnapshotKey        = "snapshot"
)

// fileEntries is the config file's upper.platforms and lower.devices.
type fileEntries struct {
	Platforms []configs.PlatformConfig
	Devices   []configs.DeviceConfig
}

// storedFile is fileEntries as the store keeps them: the config file's keys.
type storedFile struct {
	Platforms []map[string]any `json:"platforms"`
	Devices   []map[string]any `json:"devices"`
}

func entriesOf(cfg *configs.Config) fileEntries {
	return fileEntries{Platforms: cfg.Upper.Platforms, Devices: cfg.Lower.Devices}
}

// Change is one difference between two lists of entries.
type Change[T any] struct {
	ID     string
	Kind   string // added, changed, removed
	Entry  T      // the new entry (the old one when removed)
	Fields []string
}

// diffEntries lists what turns old into next, entries matched by ID.
func diffEntries[T any](old, next []T, id func(T) string) []Change[T] {
	was := make(map[string]T, len(old))
	for _, e := range old {
		was[id(e)] = e
	}
	var out []Change[T]
	for _, e := range next {
		prev, ok := was[id(e)]
		delete(was, id(e))
		switch {
		case !ok:
			out = append(out, Change[T]{ID: id(e), Kind: "added", Entry: e})
		default:
			if fields := configs.ChangedKeys(prev, e); len(fields) > 0 {
				out = append(out, Change[T]{ID: id(e), Kind: "changed", Entry: e, Fields: fields})
			}
		}
	}
	for _, e := range old {
		if _, gone := was[id(e)]; gone {
			out = append(out, Change[T]{ID: id(e), Kind: "removed", Entry: e})
		}
	}
	return out
}

func platformID(p configs.PlatformConfig) string { return p.ID }
func deviceID(d configs.DeviceConfig) string     { return d.ID }

// applyChanges applies changes to a list: added and changed entries are
// put (the file wins over the running entry), removed ones go.
func applyChanges[T any](list []T, changes []Change[T], id func(T) string) []T {
	for _, ch := range changes {
		i := slices.IndexFunc(list, func(e T) bool { return id(e) == ch.ID })
		switch {
		case ch.Kind == "removed" && i >= 0:
			list = slices.Delete(list, i, i+1)
		case ch.Kind == "removed":
		case i >= 0:
			list[i] = ch.Entry
		default:
			list = append(list, ch.Entry)
		}
	}
	return list
}

// initialEntries works out the running set at start and persists it with
// the file's entries as now applied.
func (c *Cascade) initialEntries() fileEntries {
	file := entriesOf(c.cfg)
	running := file
	var snap storedFile
	ok, err := c.store.Get(bucketManagedFile, fileSnapshotKey, &snap)
	if err != nil {
		c.log.Warn().Err(err).Msg("unreadable record of the config file's last applied platforms and devices; starting from the config file's")
	}
	if ok && err == nil {
		last := fileEntries{
			Platforms: parseEntries(c, "platform", snap.Platforms, c.cfg.ParsePlatform),
			Devices:   parseEntries(c, "device", snap.Devices, c.cfg.ParseDevice),
		}
		running = fileEntries{
			Platforms: parseEntries(c, "platform", c.storedEntries(bucketManagedPlatforms), c.cfg.ParsePlatform),
			Devices:   parseEntries(c, "device", c.storedEntries(bucketManagedDevices), c.cfg.ParseDevice),
		}
		pc := diffEntries(last.Platforms, file.Platforms, platformID)
		dc := diffEntries(last.Devices, file.Devices, deviceID)
		running.Platforms = applyChanges(running.Platforms, pc, platformID)
		running.Devices = applyChanges(running.Devices, dc, deviceID)
		logChanges(c, "upper platform", "platform_id", pc, "config file edited while stopped")
		logChanges(c, "device", "device_id", dc, "config file edited while stopped")
		c.startChanges = fileChanges{Platforms: pc, Devices: dc}
	}
	c.saveAll(running, file)
	return running
}

// storedEntries reads one managed bucket.
func (c *Cascade) storedEntries(bucket string) []map[string]any {
	var out []map[string]any
	err := c.store.ForEach(bucket, func(key string, raw []byte) error {
		var m map[string]any
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil {
			c.log.Warn().Err(err).Str("bucket", bucket).Str("id", key).Msg("unreadable stored entry skipped")
			return nil
		}
		out = append(out, m)
		return nil
	})
	if err != nil {
		c.log.Warn().Err(err).Str("bucket", bucket).Msg("stored entries unreadable")
	}
	return out
}

// parseEntries reads stored entries back; one that no longer validates
// (the proxy's own settings changed) is skipped with a log line.
func parseEntries[T any](c *Cascade, what string, raws []map[string]any, parse func(map[string]any) (T, error)) []T {
	var out []T
	for _, raw := range raws {
		e, err := parse(raw)
		if err != nil {
			c.log.Error().Err(err).Str("kind", what).Any("id", raw["id"]).Msg("stored entry no longer valid; skipped")
			continue
		}
		out = append(out, e)
	}
	return out
}

// saveAll replaces the stored running set and the file snapshot.
func (c *Cascade) saveAll(running, file fileEntries) {
	c.store.DeletePrefix(bucketManagedPlatforms, "")
	c.store.DeletePrefix(bucketManagedDevices, "")
	for _, p := range running.Platforms {
		c.savePlatform(p)
	}
	for _, d := range running.Devices {
		c.saveDevice(d)
	}
	c.saveFileSnapshot(file)
}

func (c *Cascade) saveFileSnapshot(file fileEntries) {
	snap := storedFile{Platforms: []map[string]any{}, Devices: []map[string]any{}}
	for _, p := range file.Platforms {
		snap.Platforms = append(snap.Platforms, configs.EntryMap(p))
	}
	for _, d := range file.Devices {
		snap.Devices = append(snap.Devices, configs.EntryMap(d))
	}
	c.store.Put(bucketManagedFile, fileSnapshotKey, snap)
	c.file = file
}

func (c *Cascade) savePlatform(p configs.PlatformConfig) {
	c.store.Put(bucketManagedPlatforms, p.ID, configs.EntryMap(p))
}

func (c *Cascade) saveDevice(d configs.DeviceConfig) {
	c.store.Put(bucketManagedDevices, d.ID, configs.EntryMap(d))
}

// logChanges logs one line per change, naming changed keys, never values.
func logChanges[T any](c *Cascade, what, idKey string, changes []Change[T], source string) {
	for _, ch := range changes {
		ev := c.log.Info().Str(idKey, ch.ID).Str("source", source)
		if len(ch.Fields) > 0 {
			ev = ev.Strs("fields", ch.Fields)
		}
		ev.Msg(what + " " + ch.Kind)
	}
}

// ApplyFile applies a reloaded configuration's upper.platforms and
// lower.devices: the difference from the entries last applied from the
// file goes to the running set as the management functions would apply it
// (an entry added or changed through the API and not in the difference
// stays as it is). It returns the number of changes.
func (c *Cascade) ApplyFile(ctx context.Context, next *configs.Config) (int, error) {
	c.manageMu.Lock()
	defer c.manageMu.Unlock()
	if c.closed {
		return 0, ErrClosed
	}
	file := entriesOf(next)
	pc := diffEntries(c.file.Platforms, file.Platforms, platformID)
	dc := diffEntries(c.file.Devices, file.Devices, deviceID)
	var errs []error
	if c.cluster != nil {
		// Written to etcd first; what it did not take stays out of the
		// running set and of the file as applied (a later reload tries it
		// again).
		done, err := c.writeFileChanges(pc, dc)
		if err != nil {
			errs = append(errs, err)
		}
		pc, dc = done.Platforms, done.Devices
		file = fileEntries{
			Platforms: applyChanges(slices.Clone(c.file.Platforms), pc, platformID),
			Devices:   applyChanges(slices.Clone(c.file.Devices), dc, deviceID),
		}
	}
	for _, ch := range pc {
		u := c.upper.upperByID(ch.ID)
		var err error
		switch {
		case ch.Kind == "removed" && u != nil:
			c.removePlatformLocked(ctx, u)
			c.store.Delete(bucketManagedPlatforms, ch.ID)
		case ch.Kind == "removed":
		case u != nil:
			err = c.updatePlatformLocked(ctx, u, ch.Entry)
		default:
			err = c.addPlatformLocked(ch.Entry)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("upper platform %s: %w", ch.ID, err))
			continue
		}
		if ch.Kind != "removed" {
			c.savePlatform(ch.Entry)
		}
	}
	for _, ch := range dc {
		_, listed := c.lower.allowedEntry(ch.ID)
		switch {
		case ch.Kind == "removed" && listed:
			c.removeDeviceLocked(ch.ID)
			c.store.Delete(bucketManagedDevices, ch.ID)
		case ch.Kind == "removed":
		default:
			c.putDeviceLocked(ch.Entry)
			c.saveDevice(ch.Entry)
		}
	}
	c.saveFileSnapshot(file)
	return len(pc) + len(dc), errors.Join(errs...)
}
