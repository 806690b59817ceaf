package cascade

import (
	"maps"

	"github.com/gbproxy/gbproxy/configs"
	"github.com/gbproxy/gbproxy/endpoint"
	"github.com/gbproxy/gbproxy/security"
)

// allowedDevice is one lower.devices[] entry as the registrar and the
// signalling checks use it.
type allowedDevice struct {
	cfg    configs.DeviceConfig
	secret security.Secret
	sig    configs.SignallingConfig // effective: its own over lower's
}

// allowedTable is the allowed-device list, immutable: a change swaps in a
// new one.
type allowedTable map[string]allowedDevice

func (l *lowerSide) allowedEntry(id string) (allowedDevice, bool) {
	d, ok := (*l.allowed.Load())[id]
	return d, ok
}

// setAllowedList replaces the whole list (at start).
func (l *lowerSide) setAllowedList(devices []configs.DeviceConfig) {
	table := make(allowedTable, len(devices))
	for _, d := range devices {
		table[d.ID] = l.newAllowed(d)
	}
	l.allowed.Store(&table)
}

func (l *lowerSide) newAllowed(d configs.DeviceConfig) allowedDevice {
	return allowedDevice{cfg: d, secret: security.Secret{Password: d.Password, HA1: d.PasswordHA1}, sig: l.cfg.DeviceSignalling(d)}
}

// setAllowed swaps in the table with d put (or, d nil, id removed).
func (l *lowerSide) setAllowed(id string, d *configs.DeviceConfig) {
	next := maps.Clone(*l.allowed.Load())
	if d != nil {
		next[id] = l.newAllowed(*d)
	} else {
		delete(next, id)
	}
	l.allowed.Store(&next)
}

// deviceSignalling is the signalling digest toward device id.
func (l *lowerSide) deviceSignalling(id string) configs.SignallingConfig {
	if d, ok := l.allowedEntry(id); ok {
		return d.sig
	}
	return l.cfg.Lower.SignallingConfig
}

// streamMode is how media is received from device id (lower.stream_mode
// or its own).
func (l *lowerSide) streamMode(id string) string {
	if d, ok := l.allowedEntry(id); ok {
		return l.cfg.DeviceStreamMode(d.cfg)
	}
	return l.cfg.Lower.StreamMode
}

// forget takes a device off the allowed list: it goes offline (its sessions
// end), its connection closes, and it and its channels leave the registry.
func (l *lowerSide) forget(id string) {
	l.setAllowed(id, nil)
	dev, known := l.registry.Device(id)
	l.deviceOffline(id, "removed from the allowed devices")
	if known && dev.Online && endpoint.ConnOriented(dev.Transport) {
		l.ep.CloseConn(dev.Remote)
	}
	l.registry.remove(id)
	l.subs.deviceReset(id)
}
