package cascade

import (
	"errors"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cascade/endpoint"
	"github.com/gbproxy/gbproxy/cascade/manscdp"
)

// What the B2BUA needs from the cascade: the SIP zones (to serve INVITE and
// its dialogs), who an upper's INVITE is for, and when devices go away.

var (
	// ErrNotShared: the upper platform does not see the ID it asked for.
	ErrNotShared = errors.New("not shared with this upper platform")
	// ErrDeviceOffline: the channel's device is not registered now.
	ErrDeviceOffline = errors.New("device offline")
)

// Callee is the device leg of an upper platform's call.
type Callee struct {
	ChannelID string // local ID (after the platform's mapping)
	Device    Device // the device or lower platform that owns it
}

// Callee resolves the ID upper platform upperID asked for, as it sees it.
func (c *Cascade) Callee(upperID, id string) (Callee, error) {
	u := c.upperByID(upperID)
	if u == nil {
		return Callee{}, ErrUnknownPlatform
	}
	local, dev, ok := c.registry.resolve(u.view(), id)
	switch {
	case !ok:
		return Callee{}, ErrNotShared
	case !dev.Online:
		return Callee{}, ErrDeviceOffline
	}
	return Callee{ChannelID: local, Device: dev}, nil
}

// UpperID maps a local channel ID to the one upper platform upperID sees.
func (c *Cascade) UpperID(upperID, local string) string {
	if u := c.upperByID(upperID); u != nil {
		return u.view().up(local)
	}
	return local
}

// LowerEndpoint and UpperEndpoint are the SIP zones; handlers added to them
// must be added before Start.
func (c *Cascade) LowerEndpoint() *endpoint.Endpoint { return c.lower }
func (c *Cascade) UpperEndpoint() *endpoint.Endpoint { return c.upper }

// OnDeviceOffline adds f to what runs when a device goes offline (keepalive
// or registration timeout, unregistration, its TCP connection closing).
// Call it before Start.
func (c *Cascade) OnDeviceOffline(f func(deviceID, reason string)) {
	c.offlineHooks = append(c.offlineHooks, f)
}

// OnDeviceDialogMessage sets what takes a device's MESSAGE sent inside a
// dialog (its To has a tag), after the cascade has answered it 200: f
// reports whether it was for one of its calls. Call it before Start.
func (c *Cascade) OnDeviceDialogMessage(f func(deviceID string, req *sip.Request) bool) {
	c.dialogHook = f
}

// ForUpper rewrites a MANSCDP body from a device for upper platform
// upperID: IDs as the platform sees them, in its charset, SN kept.
func (c *Cascade) ForUpper(upperID string, body []byte) ([]byte, error) {
	u := c.upperByID(upperID)
	if u == nil {
		return nil, ErrUnknownPlatform
	}
	v := u.view()
	return manscdp.Rewrite(body, -1, func(id string) (string, bool) { return v.up(id), true }, u.charset())
}

// OnUpperLost adds f to what runs when a registered upper platform's
// signalling is lost: its TCP or TLS connection closed, keepalives
// unanswered or rejected, or a refresh failed. Its dialogs with us are gone
// with it. f must not block. Call it before Start.
func (c *Cascade) OnUpperLost(f func(platformID, reason string)) {
	c.upperLostHooks = append(c.upperLostHooks, f)
}
