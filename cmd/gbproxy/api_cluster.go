package main

import (
	"net/http"
	"slices"
	"strings"

	"github.com/gbproxy/gbproxy/cascade"
	"github.com/gbproxy/gbproxy/cluster"
)

// clusterJSON is GET /api/v1/cluster: the members and their load. On a
// single node clustered is false and nodes is empty.
type clusterJSON struct {
	Clustered bool           `json:"clustered"`
	Node      string         `json:"node,omitempty"` // this node's ID
	EtcdUp    bool           `json:"etcd_up"`
	Writes    uint64         `json:"writes"` // etcd writes this node made
	Nodes     []cluster.Node `json:"nodes"`
}

func (a *app) getCluster(w http.ResponseWriter, r *http.Request) {
	if _, err := parseList(r, false); err != nil {
		badRequest(w, err, "")
		return
	}
	out := clusterJSON{Nodes: []cluster.Node{}}
	if cl := a.cluster; cl != nil {
		out = clusterJSON{Clustered: true, Node: cl.Self().ID, EtcdUp: cl.EtcdUp(), Writes: cl.Writes(), Nodes: cl.Nodes()}
	}
	writeJSON(w, out)
}

// In a cluster, the device and channel lists (without ?platform=, which
// shows what this node shares) are cluster-wide: this node's own entries,
// with node set, and the other nodes' from the shared state. A device
// another node holds is listed as {id, node, online: true}: the cluster
// knows where it is, not its registration details (ask that node's API).
// Channels of other nodes carry what the cluster's channel index holds.
// The whole list is merged per request, then filtered and paged.

// nodeDevices is the cluster-wide device list matching f, sorted by ID.
func (a *app) nodeDevices(f cascade.DeviceFilter) ([]deviceJSON, error) {
	local, _, _, err := a.cascade.DevicePage(cascade.DeviceFilter{Q: f.Q}, cascade.Page[string]{})
	if err != nil {
		return nil, err
	}
	self := a.cluster.Self().ID
	owners := a.cluster.DeviceOwners()
	q := strings.ToLower(f.Q)
	var out []deviceJSON
	for _, d := range local {
		if node, ok := owners[d.ID]; ok && node != self {
			continue // it moved: listed below as the other node's
		}
		j := a.toDeviceJSON(d)
		j.Node = self
		out = append(out, j)
	}
	for id, node := range owners {
		if node != self && (q == "" || strings.Contains(strings.ToLower(id), q)) {
			out = append(out, deviceJSON{ID: id, Node: node, Online: true})
		}
	}
	if f.Online != nil {
		out = slices.DeleteFunc(out, func(d deviceJSON) bool { return d.Online != *f.Online })
	}
	slices.SortFunc(out, func(x, y deviceJSON) int { return strings.Compare(x.ID, y.ID) })
	return out, nil
}

// nodeChannels is the cluster-wide channel list matching f, sorted by
// device then channel.
func (a *app) nodeChannels(f cascade.ChannelFilter) ([]channelJSON, error) {
	local, _, _, err := a.cascade.ChannelPage(f, cascade.Page[cascade.ChannelKey]{})
	if err != nil {
		return nil, err
	}
	self := a.cluster.Self().ID
	owners := a.cluster.DeviceOwners()
	out := make([]channelJSON, 0, len(local))
	for _, c := range local {
		if node, ok := owners[c.DeviceID]; ok && node != self {
			continue
		}
		j := toChannelJSON(c)
		j.Node = self
		out = append(out, j)
	}
	status, q := strings.ToUpper(f.Status), strings.ToLower(f.Q)
	for _, rec := range a.cluster.Channels() {
		if rec.Node == self || f.DeviceID != "" && rec.DeviceID != f.DeviceID || status != "" && strings.ToUpper(rec.Status) != status ||
			q != "" && !strings.Contains(strings.ToLower(rec.ID+"\x00"+rec.Name), q) {
			continue
		}
		out = append(out, channelJSON{ID: rec.ID, DeviceID: rec.DeviceID, Name: rec.Name, Status: strings.ToUpper(rec.Status),
			ParentID: rec.ParentID, CivilCode: rec.CivilCode, BusinessGroupID: rec.BusinessGroupID, Node: rec.Node})
	}
	slices.SortFunc(out, func(x, y channelJSON) int { return strings.Compare(channelJSONKey(x), channelJSONKey(y)) })
	return out, nil
}

// channelJSONKey orders channels as channelCursor does: NUL sorts first,
// so comparing keys compares device IDs, then channel IDs.
func channelJSONKey(c channelJSON) string {
	return channelCursor(cascade.ChannelKey{DeviceID: c.DeviceID, ID: c.ID})
}

// pageOf cuts the page after cursor (when has) of a sorted list; limit 0
// is everything. It returns the page and the key to continue after, "" on
// the last page.
func pageOf[T any](items []T, key func(T) string, cursor string, has bool, limit int) (page []T, next string, more bool) {
	start := 0
	if has {
		var found bool
		if start, found = slices.BinarySearchFunc(items, cursor, func(it T, k string) int { return strings.Compare(key(it), k) }); found {
			start++
		}
	}
	page = items[start:]
	if more = limit > 0 && len(page) > limit; more {
		page = page[:limit]
		next = key(page[len(page)-1])
	}
	return page, next, more
}
