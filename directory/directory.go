// Package directory is what the call side (b2bua) asks the signalling side
// (cascade) and what it gets back: who an upper platform's INVITE is for,
// which voice broadcast a device's INVITE takes up, and the errors that map
// to SIP answers. Both sides import it as a peer, so neither imports the other.
package directory

import (
	"context"
	"errors"
	"net/netip"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/endpoint"
)

// Errors a Directory returns; the B2BUA maps them to SIP answers.
var (
	// ErrUnknownPlatform: no such upper platform is configured.
	ErrUnknownPlatform = errors.New("no such upper platform")
	// ErrNotShared: the upper platform does not see the ID it asked for.
	ErrNotShared = errors.New("not shared with this upper platform")
	// ErrDeviceOffline: the channel's device is not registered now.
	ErrDeviceOffline = errors.New("device offline")
	// ErrNoBroadcast: no broadcast from that source to any target of the
	// device is pending.
	ErrNoBroadcast = errors.New("no voice broadcast pending from this source to this device")
)

// RemoteError is Callee's answer for a channel that lives on another node
// of the cluster: the B2BUA forwards the call to that node's upper side.
type RemoteError struct {
	Node      string          // the node's ID
	Addr      string          // its upper-side SIP address, ip:port
	Gone      <-chan struct{} // closed when the node leaves the cluster
	ChannelID string          // local channel ID (after the platform's mapping)
	DeviceID  string          // device or lower platform that owns it
}

// ForwardedHeader marks a request one cluster node passed on to another:
// it is the cluster's signature header (cluster.SignatureHeader; a test
// keeps the two equal). A request carrying it is never forwarded again.
const ForwardedHeader = "X-GBProxy-Cluster"

// ToUpperHeader names, on a cluster node's INVITE to another node's upper
// side, the upper platform the call is for: the node registered to it
// passes the call on (a platform takes calls only from there). The
// cluster's signature covers it.
const ToUpperHeader = "X-GBProxy-To-Upper"

func (e *RemoteError) Error() string {
	return "channel on cluster node " + e.Node + " (" + e.Addr + ")"
}

// Callee is the device side of an upper platform's call.
type Callee struct {
	ChannelID string        // local channel ID (after the platform's mapping)
	DeviceID  string        // device or lower platform that owns it
	Peer      endpoint.Peer // where its requests go (its own TCP connection when it has one)
}

// Broadcast is a routed Notify Broadcast a device may now take up with its
// INVITE to SourceID.
type Broadcast struct {
	UpperID   string
	SourceID  string        // the upper's voice source, as it named it
	TargetID  string        // the target as the upper named it
	ChannelID string        // the target, local
	Peer      endpoint.Peer // where requests to the upper go
	URI       sip.Uri       // Request-URI of our INVITE to SourceID
	To        sip.Uri
	// Through is the cluster node registered to the upper when it is not
	// this one: Peer and URI are its upper side, which passes the INVITE on.
	Through string
}

// UpperRoute is where an INVITE another cluster node passes through us
// goes on: the upper platform's user, and whence it came.
type UpperRoute struct {
	UpperID  string
	Peer     endpoint.Peer   // our connection to the upper platform
	URI      sip.Uri         // Request-URI toward it
	Node     string          // the node that sent the INVITE
	NodeAddr string          // its upper-side SIP address
	Gone     <-chan struct{} // closed when that node leaves the cluster
}

// Directory answers the B2BUA's questions.
type Directory interface {
	// Callee resolves id, as upper platform upperID sees it, to the channel
	// and the device that must be called.
	Callee(upperID, id string) (Callee, error)
	// ForUpper rewrites a MANSCDP body from a device for upper platform
	// upperID: IDs as it sees them, in its charset.
	ForUpper(upperID string, body []byte) ([]byte, error)
	// TakeBroadcast returns, once, the broadcast from sourceID pending for
	// device deviceID, or ErrNoBroadcast.
	TakeBroadcast(ctx context.Context, deviceID, sourceID string) (Broadcast, error)
	// ToUpper returns, for a verified cluster-internal INVITE marked with
	// ToUpperHeader, where it goes on; an error when this node is not
	// registered to that upper platform (ErrUnknownPlatform: none such).
	ToUpper(ctx context.Context, req *sip.Request) (UpperRoute, error)
	// StreamMode is how media is received from device deviceID: udp,
	// tcp-passive or tcp-active (platforms and devices change at run time,
	// so the B2BUA asks at each call).
	StreamMode(deviceID string) string
	// MediaAllow is upper platform upperID's media_allow (empty: anywhere);
	// ok is false when no such platform is configured.
	MediaAllow(upperID string) (allow []netip.Prefix, ok bool)
}
