package cascade

import (
	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
	"github.com/gbproxy/gbproxy/directory"
	"github.com/gbproxy/gbproxy/endpoint"
)

// What the B2BUA needs from the cascade: the SIP zones (to serve INVITE and
// its dialogs), who an upper's INVITE is for, and when devices go away.

// Callee resolves the ID upper platform upperID asked for, as it sees it.
func (c *Cascade) Callee(upperID, id string) (directory.Callee, error) {
	u := c.upper.upperByID(upperID)
	if u == nil {
		return directory.Callee{}, directory.ErrUnknownPlatform
	}
	local, dev, ok := c.upper.registry.resolve(u.view(), id)
	if !ok || !dev.Online {
		if rem, elsewhere := c.upper.remoteCallee(u.view(), id); elsewhere {
			return directory.Callee{}, rem // on another cluster node
		}
	}
	switch {
	case !ok:
		return directory.Callee{}, directory.ErrNotShared
	case !dev.Online:
		return directory.Callee{}, directory.ErrDeviceOffline
	}
	return directory.Callee{ChannelID: local, DeviceID: dev.ID,
		Peer: endpoint.Peer{Transport: dev.Transport, Addr: dev.Remote}}, nil
}

// UpperID maps a local channel ID to the one upper platform upperID sees.
func (c *Cascade) UpperID(upperID, local string) string {
	if u := c.upper.upperByID(upperID); u != nil {
		return u.view().up(local)
	}
	return local
}

// LowerEndpoint and UpperEndpoint are the SIP zones; handlers added to them
// must be added before Start.
func (c *Cascade) LowerEndpoint() *endpoint.Endpoint { return c.lower.ep }
func (c *Cascade) UpperEndpoint() *endpoint.Endpoint { return c.upper.ep }

// OnDeviceOffline adds f to what runs when a device goes offline (keepalive
// or registration timeout, unregistration, its TCP connection closing).
// Call it before Start.
func (c *Cascade) OnDeviceOffline(f func(deviceID, reason string)) {
	c.lower.offlineHooks = append(c.lower.offlineHooks, f)
}

// OnDeviceDialogMessage sets what takes a device's MESSAGE sent inside a
// dialog (its To has a tag), after the cascade has answered it 200: f
// reports whether it was for one of its calls. Call it before Start.
func (c *Cascade) OnDeviceDialogMessage(f func(deviceID string, req *sip.Request) bool) {
	c.lower.dialogHook = f
}

// ForUpper rewrites a MANSCDP body from a device for upper platform
// upperID: IDs as the platform sees them, in its charset, SN kept.
func (c *Cascade) ForUpper(upperID string, body []byte) ([]byte, error) {
	u := c.upper.upperByID(upperID)
	if u == nil {
		return nil, directory.ErrUnknownPlatform
	}
	v := u.view()
	return manscdp.Rewrite(body, -1, func(id string) (string, bool) { return v.up(id), true }, u.charset())
}

// OnUpperLost adds f to what runs when a registered upper platform's
// signalling is lost: its TCP or TLS connection closed, keepalives
// unanswered or rejected, or a refresh failed. Its dialogs with us are gone
// with it. f must not block. Call it before Start.
func (c *Cascade) OnUpperLost(f func(platformID, reason string)) {
	c.upper.upperLostHooks = append(c.upper.upperLostHooks, f)
}
