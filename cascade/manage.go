package cascade

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"sort"

	"github.com/gbproxy/gbproxy/cluster"
	"github.com/gbproxy/gbproxy/configs"
	"github.com/gbproxy/gbproxy/directory"
)

// Errors of the management functions.
var (
	// ErrExists: an entry with that ID is already there.
	ErrExists = errors.New("already exists")
	// ErrUnknownDevice: no allowed-list entry has that ID.
	ErrUnknownDevice = errors.New("no such device in the allowed list")
	// ErrClosed: the cascade is shutting down.
	ErrClosed = errors.New("shutting down")
)

// StreamMode is how media is received from device id (lower.stream_mode
// or its own).
func (c *Cascade) StreamMode(deviceID string) string { return c.lower.streamMode(deviceID) }

// MediaAllow is upper platform upperID's media_allow; ok is false when no
// such platform is configured.
func (c *Cascade) MediaAllow(upperID string) (allow []netip.Prefix, ok bool) {
	u := c.upper.upperByID(upperID)
	if u == nil {
		return nil, false
	}
	return u.cfg().mediaAllow, true
}

// PlatformConfigs lists the running upper platforms' settings.
func (c *Cascade) PlatformConfigs() []configs.PlatformConfig {
	list := c.upper.upperList()
	out := make([]configs.PlatformConfig, len(list))
	for i, u := range list {
		out[i] = u.cfg().PlatformConfig
	}
	return out
}

// PlatformConfig is one running upper platform's settings.
func (c *Cascade) PlatformConfig(id string) (configs.PlatformConfig, bool) {
	if u := c.upper.upperByID(id); u != nil {
		return u.cfg().PlatformConfig, true
	}
	return configs.PlatformConfig{}, false
}

// AllowedDevices lists the allowed-device entries, by ID.
func (c *Cascade) AllowedDevices() []configs.DeviceConfig {
	table := *c.lower.allowed.Load()
	out := make([]configs.DeviceConfig, 0, len(table))
	for _, d := range table {
		out = append(out, d.cfg)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// AllowedDevice is one allowed-device entry.
func (c *Cascade) AllowedDevice(id string) (configs.DeviceConfig, bool) {
	d, ok := c.lower.allowedEntry(id)
	return d.cfg, ok
}

// AddPlatform starts registering to a new upper platform (validated with
// configs.ParsePlatform), persisted in the store.
func (c *Cascade) AddPlatform(p configs.PlatformConfig) error {
	c.manageMu.Lock()
	defer c.manageMu.Unlock()
	if c.closed {
		return ErrClosed
	}
	if c.upper.upperByID(p.ID) != nil {
		return fmt.Errorf("upper platform %s %w", p.ID, ErrExists)
	}
	if err := c.writePlatform(p, cluster.CreateOnly); err != nil {
		return err
	}
	if err := c.addPlatformLocked(p); err != nil {
		return err
	}
	c.savePlatform(p)
	return nil
}

// writePlatform writes p to the cluster's etcd (nothing on a single node),
// once this node can run it (its TLS files load).
func (c *Cascade) writePlatform(p configs.PlatformConfig, mode cluster.WriteMode) error {
	if c.cluster == nil {
		return nil
	}
	if _, err := platformTLS(p); err != nil {
		return err
	}
	return c.writeEntry(cluster.ManagedPlatform, p.ID, p, mode)
}

func (c *Cascade) addPlatformLocked(p configs.PlatformConfig) error {
	if err := c.upper.put(p); err != nil {
		return err
	}
	c.log.Info().Str("platform_id", p.ID).Str("platform", p.Address).Str("transport", p.Transport).Msg("upper platform added")
	return nil
}

// UpdatePlatform applies new settings to a running upper platform. At the
// same address, transport and TLS settings it registers again at once with
// them and its sessions go on; otherwise it unregisters from the old
// address (Expires: 0), its sessions and subscriptions end, and it
// registers to the new one.
func (c *Cascade) UpdatePlatform(ctx context.Context, p configs.PlatformConfig) error {
	c.manageMu.Lock()
	defer c.manageMu.Unlock()
	if c.closed {
		return ErrClosed
	}
	old := c.upper.upperByID(p.ID)
	if old == nil {
		return directory.ErrUnknownPlatform
	}
	if err := c.writePlatform(p, cluster.UpdateOnly); err != nil {
		return err
	}
	if err := c.updatePlatformLocked(ctx, old, p); err != nil {
		return err
	}
	c.savePlatform(p)
	return nil
}

func (c *Cascade) updatePlatformLocked(ctx context.Context, old *upperClient, p configs.PlatformConfig) error {
	was := old.cfg().PlatformConfig
	fields := configs.ChangedKeys(was, p)
	if len(fields) == 0 {
		return nil
	}
	if was.Address != p.Address || was.Transport != p.Transport || was.TLS != p.TLS {
		if err := c.upper.put(p); err != nil {
			return err
		}
		c.upper.retire(ctx, old, "upper platform moved to "+p.Address)
	} else {
		old.renew(p)
		if _, saved := c.upper.savedShare(p.ID); !saved && !reflect.DeepEqual(was.Share, p.Share) {
			c.upper.applyShare(old, p.Share)
		}
	}
	c.log.Info().Str("platform_id", p.ID).Str("platform", p.Address).Strs("fields", fields).Msg("upper platform changed")
	return nil
}

// RemovePlatform unregisters from an upper platform (Expires: 0, bounded
// by ctx) and forgets it: its sessions, subscriptions and pending routed
// requests end.
func (c *Cascade) RemovePlatform(ctx context.Context, id string) error {
	c.manageMu.Lock()
	defer c.manageMu.Unlock()
	if c.closed {
		return ErrClosed
	}
	u := c.upper.upperByID(id)
	if u == nil {
		return directory.ErrUnknownPlatform
	}
	if c.cluster != nil {
		if err := c.deleteEntry(cluster.ManagedPlatform, id); err != nil {
			return err
		}
		if err := c.deleteEntry(cluster.ManagedShare, id); err != nil {
			return err
		}
	}
	c.removePlatformLocked(ctx, u)
	c.store.Delete(bucketManagedPlatforms, id)
	return nil
}

func (c *Cascade) removePlatformLocked(ctx context.Context, u *upperClient) {
	c.upper.remove(ctx, u, "upper platform removed")
	c.log.Info().Str("platform_id", u.id).Str("platform", u.cfg().Address).Msg("upper platform removed")
}

// AddDevice allows a new device to register, persisted in the store.
func (c *Cascade) AddDevice(d configs.DeviceConfig) error {
	c.manageMu.Lock()
	defer c.manageMu.Unlock()
	if _, ok := c.lower.allowedEntry(d.ID); ok {
		return fmt.Errorf("device %s %w", d.ID, ErrExists)
	}
	if c.cluster != nil {
		if err := c.writeEntry(cluster.ManagedDevice, d.ID, d, cluster.CreateOnly); err != nil {
			return err
		}
	}
	c.putDeviceLocked(d)
	c.saveDevice(d)
	return nil
}

// UpdateDevice changes an allowed device's entry. A registered device
// stays registered: a new password counts from its next REGISTER.
func (c *Cascade) UpdateDevice(d configs.DeviceConfig) error {
	c.manageMu.Lock()
	defer c.manageMu.Unlock()
	if _, ok := c.lower.allowedEntry(d.ID); !ok {
		return ErrUnknownDevice
	}
	if c.cluster != nil {
		if err := c.writeEntry(cluster.ManagedDevice, d.ID, d, cluster.UpdateOnly); err != nil {
			return err
		}
	}
	c.putDeviceLocked(d)
	c.saveDevice(d)
	return nil
}

func (c *Cascade) putDeviceLocked(d configs.DeviceConfig) {
	old, existed := c.lower.allowedEntry(d.ID)
	c.lower.setAllowed(d.ID, &d)
	if !existed {
		c.log.Info().Str("device_id", d.ID).Msg("device added")
		return
	}
	if fields := configs.ChangedKeys(old.cfg, d); len(fields) > 0 {
		c.log.Info().Str("device_id", d.ID).Strs("fields", fields).Msg("device changed")
	}
}

// RemoveDevice takes a device off the allowed list: it is unregistered
// (its sessions end) and it and its channels leave the registry.
func (c *Cascade) RemoveDevice(id string) error {
	c.manageMu.Lock()
	defer c.manageMu.Unlock()
	if _, ok := c.lower.allowedEntry(id); !ok {
		return ErrUnknownDevice
	}
	if c.cluster != nil {
		if err := c.deleteEntry(cluster.ManagedDevice, id); err != nil {
			return err
		}
	}
	c.removeDeviceLocked(id)
	c.store.Delete(bucketManagedDevices, id)
	return nil
}

func (c *Cascade) removeDeviceLocked(id string) {
	c.lower.forget(id)
	c.log.Info().Str("device_id", id).Msg("device removed")
}
