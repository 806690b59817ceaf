package main

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
)

// clusterPlatformYAML is the upper.platforms list every node of a cluster
// test gets: the upper simulator at addr.
func clusterPlatformYAML(addr string) string {
	return fmt.Sprintf(`[{id: %q, address: %q, transport: udp, password: %q, expires: 3600, keepalive_interval: 500ms, keepalive_timeout_count: 2, retry_interval: 300ms}]`,
		upperID, addr, upperPass)
}

type clusterPlatform struct {
	ID           string `json:"id"`
	Registered   bool   `json:"registered"`
	RegisteredBy string `json:"registered_by"`
	// SharedChannels counts the cluster's channels the platform sees.
	SharedChannels int `json:"shared_channels"`
}

// leaderOf is the node whose API says it is registered to the upper, "" when
// none is.
func leaderOf(t testing.TB, nodes map[string]proxyProcess) string {
	for id, p := range nodes {
		var ps []clusterPlatform
		getJSON(t, p.http, "/api/v1/platforms", &ps)
		if len(ps) == 1 && ps[0].Registered {
			return id
		}
	}
	return ""
}

// udpPortOf reports whether process pid holds a UDP socket bound to port:
// the socket inodes of its descriptors against /proc/net/udp.
func udpPortOf(t testing.TB, pid, port int) bool {
	t.Helper()
	inodes := map[string]bool{}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("list descriptors of %d (this test needs Linux /proc): %v", pid, err)
	}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join(fmt.Sprintf("/proc/%d/fd", pid), fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	for _, table := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || !strings.Contains(fields[1], ":") {
				continue
			}
			hexPort := fields[1][strings.LastIndexByte(fields[1], ':')+1:]
			p, err := strconv.ParseInt(hexPort, 16, 32)
			if err == nil && int(p) == port && inodes[fields[9]] {
				f.Close()
				return true
			}
		}
		f.Close()
	}
	return false
}

// Three nodes are one platform toward the upper: one registers, the catalog
// has every node's channels, calls and queries for channels on other nodes
// are forwarded and the media comes from the owning node's relay; when the
// registering node dies another registers within node_ttl and a round trip.
func TestClusterUpperOnePlatform(t *testing.T) {
	c := startUpperCluster(t, map[string]string{ // node -> device registered to it
		"node-a": "34020000001110000011", "node-b": "34020000001110000012", "node-c": "34020000001110000013",
	})
	up, rig, ids, devs, leader, ctx := c.up, c.rig, c.ids, c.devs, c.leader, c.ctx
	lows := up.Lowers()
	if len(lows) != 1 || lows[0].Source != rig.nodes[leader].upper {
		t.Fatalf("upper sees %+v; want one binding, from %s's upper side %s", lows, leader, rig.nodes[leader].upper)
	}
	for _, id := range ids {
		var ps []clusterPlatform
		getJSON(t, rig.nodes[id].http, "/api/v1/platforms", &ps)
		if len(ps) != 1 || ps[0].RegisteredBy != leader || ps[0].Registered != (id == leader) {
			t.Errorf("%s reports %+v; want registered_by %s, registered only on it", id, ps, leader)
		}
	}

	want := map[string]string{} // channel -> node
	for node, dev := range devs {
		for _, ch := range sim.MakeChannels(dev, 2) {
			want[ch.ID] = node
		}
	}
	defer func() {
		if t.Failed() {
			for id, p := range rig.nodes {
				var devices, channels any
				getJSON(t, p.http, "/api/v1/devices", &devices)
				getJSON(t, p.http, "/api/v1/channels", &channels)
				t.Logf("%s: devices %v\nchannels %v", id, devices, channels)
			}
		}
	}()
	eventually(t, 20*time.Second, "the upper's catalog lists the channels of all three nodes", func() bool {
		items, _, err := up.QueryCatalog(ctx, proxyID)
		if err != nil {
			return false
		}
		got := map[string]bool{}
		for _, it := range items {
			got[it.DeviceID] = true
		}
		for ch := range want {
			if !got[ch] {
				return false
			}
		}
		return len(items) == len(want)
	})

	// A query for a device on another node is answered through the leader.
	other := ids[(indexOf(ids, leader)+1)%len(ids)]
	body, err := up.Query(ctx, proxyID, "DeviceInfo", devs[other])
	if err != nil || !strings.Contains(string(body), devs[other]) {
		t.Fatalf("DeviceInfo of %s (on %s) through %s: %v\n%s", devs[other], other, leader, err, body)
	}

	playOn := func(node string) { playFromOwner(t, ctx, up, rig, node, sim.MakeChannels(devs[node], 2)[0].ID) }
	for _, id := range ids {
		playOn(id)
	}

	// The registering node dies; another registers within node_ttl and a
	// round trip, and calls to the survivors work.
	rig.nodes[leader].kill()
	dead := rig.nodes[leader]
	delete(rig.nodes, leader)
	killed := time.Now()
	st, err := up.WaitLower(ctx, proxyID, func(l sim.LowerState) bool { return l.Registered && l.Source != dead.upper })
	if err != nil {
		t.Fatalf("no node took the registration over: %v", err)
	}
	took := time.Since(killed)
	t.Logf("%s killed; the upper registered from %s after %s", leader, st.Source, took.Round(time.Millisecond))
	if took > 2*time.Second+3*time.Second {
		t.Errorf("takeover took %s; want within node_ttl (2 s) and a registration round trip", took)
	}
	newLeader := ""
	for id, p := range rig.nodes {
		if p.upper == st.Source {
			newLeader = id
		}
	}
	if newLeader == "" {
		t.Fatalf("upper registered from %s, no surviving node's upper side", st.Source)
	}
	for id := range rig.nodes {
		if id != newLeader {
			playOn(id) // forwarded by the new leader
		}
	}
	playOn(newLeader)
}

// playFromOwner plays channel ch, held by node, at the upper simulator:
// packets arrive, the answer's media port is node's relay and no other
// node's (one relay hop, whichever node took the INVITE), and the BYE works.
func playFromOwner(t *testing.T, ctx context.Context, up *sim.Upper, rig *clusterRig, node, ch string) {
	t.Helper()
	p, err := up.Play(ctx, proxyID, ch, sim.PlayOptions{})
	if err != nil {
		t.Fatalf("play %s (on %s): %v", ch, node, err)
	}
	defer p.Close()
	if _, err := p.WaitPackets(ctx, 5); err != nil {
		t.Fatalf("play %s (on %s): %v", ch, node, err)
	}
	if !udpPortOf(t, rig.nodes[node].pid, p.Answer.Port) {
		t.Errorf("play %s: answer media port %d is not %s's relay (the owner)", ch, p.Answer.Port, node)
	}
	for id, n := range rig.nodes {
		if id != node && n.pid != 0 && udpPortOf(t, n.pid, p.Answer.Port) {
			t.Errorf("play %s: media port %d held by %s, not only by the owner %s", ch, p.Answer.Port, id, node)
		}
	}
	t.Logf("played %s on %s: media %s, %d packets", ch, node, p.Answer.Addr(), len(p.Packets()))
	if err := p.Bye(ctx); err != nil {
		t.Errorf("BYE of %s: %v", ch, err)
	}
}

// upperCluster is a cluster test's nodes (redirect off), each with one
// device of two channels registered to it, and the upper simulator one of
// them registered to once every node's channels are in its catalog.
type upperCluster struct {
	up      *sim.Upper
	rig     *clusterRig
	ids     []string               // node IDs, sorted
	devs    map[string]string      // node -> its device's ID
	devices map[string]*sim.Device // node -> its device
	leader  string                 // the node registered to the upper
	ctx     context.Context
}

// startUpperCluster starts a node for each key of devs with that device
// registered to it, and waits for the upper's registration and catalog.
func startUpperCluster(t *testing.T, devs map[string]string) *upperCluster {
	t.Helper()
	up := newUpper(t, freeAddr(t), nil)
	c := &upperCluster{up: up, rig: newClusterRig(t, clusterPlatformYAML(up.Addr())), ids: slices.Sorted(maps.Keys(devs)),
		devs: devs, devices: map[string]*sim.Device{}, ctx: ctxTimeout(t, 120*time.Second)}
	c.rig.stay = true // each node's device is registered to it
	for _, id := range c.ids {
		p := c.rig.startNode(id)
		d := newDevice(t, nil, devs[id], "udp", 2, func(dc *sim.DeviceConfig) { dc.Server = p.lower })
		if err := d.Start(c.ctx); err != nil {
			t.Fatalf("device %s to %s: %v", devs[id], id, err)
		}
		c.devices[id] = d
	}
	eventually(t, 15*time.Second, "one node registered to the upper", func() bool {
		c.leader = leaderOf(t, c.rig.nodes)
		return c.leader != ""
	})
	eventually(t, 20*time.Second, "the upper's catalog lists the channels of every node", func() bool {
		items, _, err := up.QueryCatalog(c.ctx, proxyID)
		return err == nil && len(items) == 2*len(c.ids)
	})
	return c
}

// after is the node k places after the leader, in ID order.
func (c *upperCluster) after(k int) string {
	return c.ids[(indexOf(c.ids, c.leader)+k)%len(c.ids)]
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}
