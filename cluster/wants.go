package cluster

import (
	"slices"
	"strings"
)

// Want is one upper platform's subscription held by a node (GB/T 28181
// §9.11: Alarm, MobilePosition, PTZPosition), as the nodes owning the
// devices need to know it: they subscribe to the device and send what it
// reports to the node holding the subscription. Device "" is every device
// the platform sees.
type Want struct {
	Platform string `json:"platform"`
	Kind     string `json:"kind"`
	Device   string `json:"device,omitempty"`
}

// SetWants publishes the subscriptions this node's upper platforms hold.
// They travel in this node's record: written only when the set changed (a
// subscription made or ended, not refreshed), at most once per
// LoadInterval, and gone with the node's lease.
func (c *Cluster) SetWants(wants []Want) {
	wants = slices.Clone(wants)
	slices.SortFunc(wants, func(a, b Want) int {
		return strings.Compare(a.Platform+"\x00"+a.Kind+"\x00"+a.Device, b.Platform+"\x00"+b.Kind+"\x00"+b.Device)
	})
	wants = slices.Compact(wants)
	c.mu.Lock()
	changed := !slices.Equal(c.self.Wants, wants)
	if changed {
		c.self.Wants = wants
		c.nodeDirty = true
	}
	c.mu.Unlock()
	if changed {
		c.wake()
	}
}
