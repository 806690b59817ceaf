package cascade

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sort"

	"github.com/gbproxy/gbproxy/configs"
	"github.com/gbproxy/gbproxy/directory"
	"github.com/gbproxy/gbproxy/endpoint"
	"github.com/gbproxy/gbproxy/security"
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

// upperSet is the running upper clients, immutable: a change swaps in a
// new one, so the per-request readers take no lock.
type upperSet struct {
	list []*upperClient // in the order they were added
	byID map[string]*upperClient
}

func newUpperSet(list []*upperClient) *upperSet {
	s := &upperSet{list: list, byID: make(map[string]*upperClient, len(list))}
	for _, u := range list {
		s.byID[u.id] = u
	}
	return s
}

// replaced is s with u in place of the client of the same ID, or added.
func (s *upperSet) replaced(u *upperClient) *upperSet {
	list := slices.Clone(s.list)
	if i := slices.IndexFunc(list, func(o *upperClient) bool { return o.id == u.id }); i >= 0 {
		list[i] = u
	} else {
		list = append(list, u)
	}
	return newUpperSet(list)
}

func (s *upperSet) without(id string) *upperSet {
	return newUpperSet(slices.DeleteFunc(slices.Clone(s.list), func(u *upperClient) bool { return u.id == id }))
}

func (c *Cascade) upperList() []*upperClient { return c.uppers.Load().list }

func (c *Cascade) upperByID(id string) *upperClient { return c.uppers.Load().byID[id] }

// allowedDevice is one lower.devices[] entry as the registrar and the
// signalling checks use it.
type allowedDevice struct {
	cfg    configs.DeviceConfig
	secret security.Secret
	sig    configs.SignallingConfig // effective: its own over lower's
}

// allowedTable is the allowed-device list, immutable like upperSet.
type allowedTable map[string]allowedDevice

func (c *Cascade) allowedEntry(id string) (allowedDevice, bool) {
	d, ok := (*c.allowed.Load())[id]
	return d, ok
}

func (c *Cascade) newAllowed(d configs.DeviceConfig) allowedDevice {
	return allowedDevice{cfg: d, secret: security.Secret{Password: d.Password, HA1: d.PasswordHA1}, sig: c.cfg.DeviceSignalling(d)}
}

// setAllowed swaps in the table with d put (or, d nil, id removed).
func (c *Cascade) setAllowed(id string, d *configs.DeviceConfig) {
	next := allowedTable{}
	for k, v := range *c.allowed.Load() {
		next[k] = v
	}
	if d != nil {
		next[id] = c.newAllowed(*d)
	} else {
		delete(next, id)
	}
	c.allowed.Store(&next)
}

// deviceSignalling is the signalling digest toward device id.
func (c *Cascade) deviceSignalling(id string) configs.SignallingConfig {
	if d, ok := c.allowedEntry(id); ok {
		return d.sig
	}
	return c.cfg.Lower.SignallingConfig
}

// StreamMode is how media is received from device id (lower.stream_mode
// or its own).
func (c *Cascade) StreamMode(deviceID string) string {
	if d, ok := c.allowedEntry(deviceID); ok {
		return c.cfg.DeviceStreamMode(d.cfg)
	}
	return c.cfg.Lower.StreamMode
}

// MediaAllow is upper platform upperID's media_allow; ok is false when no
// such platform is configured.
func (c *Cascade) MediaAllow(upperID string) (allow []netip.Prefix, ok bool) {
	u := c.upperByID(upperID)
	if u == nil {
		return nil, false
	}
	return u.cfg().mediaAllow, true
}

// PlatformConfigs lists the running upper platforms' settings.
func (c *Cascade) PlatformConfigs() []configs.PlatformConfig {
	list := c.upperList()
	out := make([]configs.PlatformConfig, len(list))
	for i, u := range list {
		out[i] = u.cfg().PlatformConfig
	}
	return out
}

// PlatformConfig is one running upper platform's settings.
func (c *Cascade) PlatformConfig(id string) (configs.PlatformConfig, bool) {
	if u := c.upperByID(id); u != nil {
		return u.cfg().PlatformConfig, true
	}
	return configs.PlatformConfig{}, false
}

// AllowedDevices lists the allowed-device entries, by ID.
func (c *Cascade) AllowedDevices() []configs.DeviceConfig {
	table := *c.allowed.Load()
	out := make([]configs.DeviceConfig, 0, len(table))
	for _, d := range table {
		out = append(out, d.cfg)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// AllowedDevice is one allowed-device entry.
func (c *Cascade) AllowedDevice(id string) (configs.DeviceConfig, bool) {
	d, ok := c.allowedEntry(id)
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
	if c.upperByID(p.ID) != nil {
		return fmt.Errorf("upper platform %s %w", p.ID, ErrExists)
	}
	if err := c.addPlatformLocked(p); err != nil {
		return err
	}
	c.savePlatform(p)
	return nil
}

func (c *Cascade) addPlatformLocked(p configs.PlatformConfig) error {
	u, err := newUpperClient(c, p, p.Share)
	if err != nil {
		return err
	}
	c.uppers.Store(c.uppers.Load().replaced(u))
	if c.started {
		u.start()
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
	old := c.upperByID(p.ID)
	if old == nil {
		return directory.ErrUnknownPlatform
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
		share := p.Share
		if saved, ok := c.savedShare(p.ID); ok {
			share = saved
		}
		u, err := newUpperClient(c, p, share)
		if err != nil {
			return err
		}
		c.uppers.Store(c.uppers.Load().replaced(u))
		c.retire(ctx, old, "upper platform moved to "+p.Address)
		if c.started {
			u.start()
		}
	} else {
		old.renew(p)
		if _, saved := c.savedShare(p.ID); !saved && !reflect.DeepEqual(was.Share, p.Share) {
			c.applyShare(old, p.Share)
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
	u := c.upperByID(id)
	if u == nil {
		return directory.ErrUnknownPlatform
	}
	c.removePlatformLocked(ctx, u)
	c.store.Delete(bucketManagedPlatforms, id)
	return nil
}

func (c *Cascade) removePlatformLocked(ctx context.Context, u *upperClient) {
	c.uppers.Store(c.uppers.Load().without(u.id))
	c.retire(ctx, u, "upper platform removed")
	c.store.Delete(bucketPlatforms, u.id)
	c.store.Delete(bucketShares, u.id)
	c.log.Info().Str("platform_id", u.id).Str("platform", u.cfg().Address).Msg("upper platform removed")
}

// retire ends an upper client no longer in the set: its loop stops, it
// unregisters, and what hung on its registration ends with it.
func (c *Cascade) retire(ctx context.Context, u *upperClient, reason string) {
	u.stop()
	u.unregister(ctx)
	u.closeConn()
	c.subs.dropPlatform(u)
	c.routes.dropPlatform(u)
	for _, f := range c.upperLostHooks {
		f(u.id, reason)
	}
}

// AddDevice allows a new device to register, persisted in the store.
func (c *Cascade) AddDevice(d configs.DeviceConfig) error {
	c.manageMu.Lock()
	defer c.manageMu.Unlock()
	if _, ok := c.allowedEntry(d.ID); ok {
		return fmt.Errorf("device %s %w", d.ID, ErrExists)
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
	if _, ok := c.allowedEntry(d.ID); !ok {
		return ErrUnknownDevice
	}
	c.putDeviceLocked(d)
	c.saveDevice(d)
	return nil
}

func (c *Cascade) putDeviceLocked(d configs.DeviceConfig) {
	old, existed := c.allowedEntry(d.ID)
	c.setAllowed(d.ID, &d)
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
	if _, ok := c.allowedEntry(id); !ok {
		return ErrUnknownDevice
	}
	c.removeDeviceLocked(id)
	c.store.Delete(bucketManagedDevices, id)
	return nil
}

func (c *Cascade) removeDeviceLocked(id string) {
	c.setAllowed(id, nil)
	dev, known := c.registry.Device(id)
	c.deviceOffline(id, "removed from the allowed devices")
	if known && dev.Online && endpoint.ConnOriented(dev.Transport) {
		c.lower.CloseConn(dev.Remote)
	}
	c.registry.remove(id)
	c.subs.deviceReset(id)
	c.log.Info().Str("device_id", id).Msg("device removed")
}
