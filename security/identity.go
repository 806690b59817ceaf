package security

import (
	"errors"
	"fmt"
	"strings"
)

// MonitorUserIdentityHeader carries the chain of signalling security gateways
// a request crossed (GB/T 28181 SIP信令认证): each gateway prefixes its ID and
// "-" to the value it received, the originator's ID being the last segment.
const MonitorUserIdentityHeader = "Monitor-User-Identity"

// Errors returned by CheckIdentity, with the SIP answer for each.
var (
	// ErrIdentityMalformed: answer 400.
	ErrIdentityMalformed = errors.New("malformed Monitor-User-Identity")
	// ErrTooManyHops: answer 483 Too Many Hops.
	ErrTooManyHops = errors.New("Monitor-User-Identity has too many hops")
	// ErrIdentityLoop: answer 482 Loop Detected.
	ErrIdentityLoop = errors.New("Monitor-User-Identity already holds our gateway ID")
)

// Bounds of a Monitor-User-Identity value, far above any real cascade.
const (
	maxIdentitySegments = 64
	maxIdentityLen      = 2048
)

// maxQuotedIdentity keeps a whole real chain (8 IDs of 20 digits) in messages.
const maxQuotedIdentity = 200

// defaultMaxHops is the hop limit when the caller gives none.
const defaultMaxHops = 8

// ForwardIdentity returns the value for a request we forward: gatewayID + "-"
// + incoming, or gatewayID + "-" + originator when incoming is "".
func ForwardIdentity(gatewayID, incoming, originator string) string {
	if incoming = strings.TrimSpace(incoming); incoming == "" {
		incoming = originator
	}
	return gatewayID + "-" + incoming
}

// CheckIdentity vets the value of a request we are to forward: "" is fine;
// ErrIdentityLoop when a segment equals gatewayID; ErrTooManyHops when it
// already holds maxHops (8 when < 1) or more segments; ErrIdentityMalformed
// when it does not parse.
func CheckIdentity(incoming, gatewayID string, maxHops int) error {
	segments, err := ParseIdentity(incoming)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrIdentityMalformed, err)
	}
	for _, s := range segments {
		if s == gatewayID {
			return fmt.Errorf("%w: %q came back to %s", ErrIdentityLoop, clipN(maxQuotedIdentity, incoming), gatewayID)
		}
	}
	if maxHops < 1 {
		maxHops = defaultMaxHops
	}
	if len(segments) >= maxHops {
		return fmt.Errorf("%w: %q has %d segments, the limit is %d (security.max_hops)",
			ErrTooManyHops, clipN(maxQuotedIdentity, incoming), len(segments), maxHops)
	}
	return nil
}

// ParseIdentity splits a value into its segments (spaces around each
// trimmed). "" has none. An empty segment, more than 64 segments or more
// than 2 KB is an error.
func ParseIdentity(v string) ([]string, error) {
	if len(v) > maxIdentityLen {
		return nil, fmt.Errorf("value of %d bytes is longer than %d", len(v), maxIdentityLen)
	}
	if v = strings.TrimSpace(v); v == "" {
		return nil, nil
	}
	if n := strings.Count(v, "-") + 1; n > maxIdentitySegments {
		return nil, fmt.Errorf("%d segments, more than %d", n, maxIdentitySegments)
	}
	segments := strings.Split(v, "-")
	for i, s := range segments {
		if segments[i] = strings.TrimSpace(s); segments[i] == "" {
			return nil, fmt.Errorf("%q has an empty segment", clipN(maxQuotedIdentity, v))
		}
	}
	return segments, nil
}
