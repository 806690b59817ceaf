package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
)

// clusterView is GET /api/v1/cluster as the tests read it.
type clusterView struct {
	Clustered bool   `json:"clustered"`
	Node      string `json:"node"`
	EtcdUp    bool   `json:"etcd_up"`
	Writes    uint64 `json:"writes"`
	Nodes     []struct {
		ID        string `json:"id"`
		Advertise string `json:"advertise"`
		Devices   int    `json:"devices"`
	} `json:"nodes"`
}

type clusterDevice struct {
	ID     string `json:"id"`
	Node   string `json:"node"`
	Online bool   `json:"online"`
}

type clusterChannel struct {
	ID       string `json:"id"`
	DeviceID string `json:"device_id"`
	Node     string `json:"node"`
}

// tryJSON reads an API answer of a node run as a process; false when it
// does not answer 200 (a killed node).
func tryJSON(httpAddr, path string, v any) bool {
	res, err := http.Get("http://" + httpAddr + path)
	if err != nil {
		return false
	}
	defer res.Body.Close()
	return res.StatusCode == http.StatusOK && json.NewDecoder(res.Body).Decode(v) == nil
}

// TestClusterRedirectSpreadsAndSurvives: three nodes, 30 devices configured
// with one node's address (the redirector) are spread over all three by
// 302s; every node lists all 30 devices and their channels with the node
// holding each. A SIGKILLed node's devices go back to the redirector and
// land on the live nodes; an etcd restart loses no ownership record while
// the nodes keep serving.
func TestClusterRedirectSpreadsAndSurvives(t *testing.T) {
	oneAddressForAll(t) // 30 devices from 127.0.0.1 register at once
	rig := newClusterRig(t, "")
	nodes := map[string]proxyProcess{}
	byLower := map[string]string{}
	for _, id := range []string{"a", "b", "c"} {
		nodes[id] = rig.startNode(id)
		byLower[nodes[id].lower] = id
	}
	redirector := nodes["a"]
	eventually(t, 10*time.Second, "every node sees three members", func() bool {
		for _, p := range nodes {
			var v clusterView
			if !tryJSON(p.http, "/api/v1/cluster", &v) || len(v.Nodes) != 3 || !v.EtcdUp {
				return false
			}
		}
		return true
	})

	const count = 30
	devs, ids := make([]*sim.Device, count), make([]string, count)
	ctx := ctxTimeout(t, 60*time.Second)
	for i := range devs {
		id := fmt.Sprintf("340200000013200%05d", i+1)
		ids[i] = id
		devs[i] = newDevice(t, nil, id, "udp", 1, func(c *sim.DeviceConfig) {
			c.Server = redirector.lower
			c.KeepaliveInterval = 500 * time.Millisecond
		})
		if err := devs[i].Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// perNode counts the devices registered at each node, as the
	// simulators see it.
	perNode := func() map[string]int {
		n := map[string]int{}
		for _, d := range devs {
			if d.Registered() {
				n[byLower[d.Server()]]++
			}
		}
		return n
	}
	spread := perNode()
	t.Logf("devices per node after registering through a: %v", spread)
	if len(spread) != 3 || spread["a"]+spread["b"]+spread["c"] != count {
		t.Fatalf("30 devices registered through the redirector spread as %v; want some on each of a, b, c", spread)
	}

	redirected := scrapeSeries(t, "http://"+redirector.http+"/metrics")[`gbproxy_registrations_total{result="redirected"}`]
	if int(redirected) != spread["b"]+spread["c"] {
		t.Errorf("a counted %v redirected registrations, want %d (the devices it sent to b and c)", redirected, spread["b"]+spread["c"])
	}

	// Every node lists every device, and the channels, with the node
	// holding each, as the simulators see it.
	simNode := func() map[string]string {
		out := map[string]string{}
		for i, d := range devs {
			out[ids[i]] = byLower[d.Server()]
		}
		return out
	}
	listsAgree := func(p proxyProcess, want map[string]string) bool {
		var ds []clusterDevice
		var chs []clusterChannel
		if !tryJSON(p.http, "/api/v1/devices", &ds) || !tryJSON(p.http, "/api/v1/channels", &chs) || len(ds) != count || len(chs) != count {
			return false
		}
		for _, d := range ds {
			if !d.Online || want[d.ID] != d.Node {
				return false
			}
		}
		for _, c := range chs {
			if want[c.DeviceID] != c.Node {
				return false
			}
		}
		return true
	}
	want := simNode()
	for id, p := range nodes {
		eventually(t, 10*time.Second, "node "+id+" lists the 30 devices and channels where they are", func() bool { return listsAgree(p, want) })
	}
	// The load each node publishes (at most every 2 s) reaches the others.
	eventually(t, 10*time.Second, fmt.Sprintf("/api/v1/cluster at a shows each node's devices %v", spread), func() bool {
		var v clusterView
		if !tryJSON(redirector.http, "/api/v1/cluster", &v) || v.Node != "a" || !v.Clustered || v.Writes == 0 {
			return false
		}
		for _, n := range v.Nodes {
			if n.Devices != spread[n.ID] || n.Advertise != nodes[n.ID].lower {
				return false
			}
		}
		return len(v.Nodes) == 3
	})

	// SIGKILL c: its devices find their server gone (keepalives fail), go
	// back to the redirector and land on a or b.
	killedAt := time.Now()
	nodes["c"].kill()
	delete(nodes, "c")
	eventually(t, 30*time.Second, "c's devices registered at a or b", func() bool {
		n := perNode()
		return n["c"] == 0 && n["a"]+n["b"] == count
	})
	t.Logf("c's %d devices re-registered through the redirector within %v (node_ttl 2s); now %v", spread["c"], time.Since(killedAt).Round(100*time.Millisecond), perNode())
	want = simNode()
	for id, p := range nodes {
		eventually(t, 10*time.Second, "node "+id+" lists the moved devices on their new nodes", func() bool { return listsAgree(p, want) })
	}

	// etcd restarts: the nodes keep serving meanwhile (keepalives answered,
	// the lists from their caches), and the ownership records are back.
	rig.etcd.Stop()
	eventually(t, 10*time.Second, "nodes notice etcd gone", func() bool {
		for _, p := range nodes {
			var v clusterView
			if !tryJSON(p.http, "/api/v1/cluster", &v) || v.EtcdUp {
				return false
			}
		}
		return true
	})
	outage := time.Now().Add(3 * time.Second) // past node_ttl
	for time.Now().Before(outage) {
		for id, p := range nodes {
			if !listsAgree(p, want) {
				t.Fatalf("node %s stopped serving its lists while etcd is down", id)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	for i, d := range devs {
		if !d.Registered() {
			t.Errorf("device %s lost its registration while etcd was down", ids[i])
		}
	}
	rig.etcd.Start()
	for id, p := range nodes {
		eventually(t, 15*time.Second, "node "+id+" back on etcd with the two members and all devices", func() bool {
			var v clusterView
			return tryJSON(p.http, "/api/v1/cluster", &v) && v.EtcdUp && len(v.Nodes) == 2 && listsAgree(p, want)
		})
	}
	if got := simNode(); !maps.Equal(got, want) {
		t.Errorf("devices moved during the etcd outage: %v, want %v", got, want)
	}
	if ids := slices.Sorted(maps.Values(want)); ids[0] != "a" || ids[len(ids)-1] != "b" {
		t.Errorf("devices after the kill on %v, want a and b", ids)
	}
}

// TestClusterMovedDevicesPlay: devices placed by the redirector, an upper
// registered to one node; a node holding devices is SIGKILLed; its devices
// re-register through the redirector, the upward registration survives (or
// moves, when the killed node held it), and the upper plays a moved
// device's channel with the media from the node that holds it now.
func TestClusterMovedDevicesPlay(t *testing.T) {
	oneAddressForAll(t)
	up := newUpper(t, freeAddr(t), nil)
	rig := newClusterRig(t, clusterPlatformYAML(up.Addr()))
	byLower := map[string]string{}
	for _, id := range []string{"a", "b", "c"} {
		byLower[rig.startNode(id).lower] = id
	}
	eventually(t, 10*time.Second, "every node sees three members", func() bool {
		for _, p := range rig.nodes {
			var v clusterView
			if !tryJSON(p.http, "/api/v1/cluster", &v) || len(v.Nodes) != 3 {
				return false
			}
		}
		return true
	})
	ctx := ctxTimeout(t, 90*time.Second)
	const count = 6
	devs, ids := make([]*sim.Device, count), map[*sim.Device]string{}
	for i := range devs {
		id := fmt.Sprintf("340200000013200%05d", 101+i)
		devs[i] = newDevice(t, nil, id, "udp", 1, func(c *sim.DeviceConfig) {
			c.Server = rig.nodes["a"].lower // the redirector: the address devices are configured with
			c.KeepaliveInterval = 500 * time.Millisecond
		})
		ids[devs[i]] = id
		if err := devs[i].Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// The victim: b or c, whichever holds devices (a is the address the
	// devices come back to).
	victim := ""
	eventually(t, 10*time.Second, "a device placed on b or c", func() bool {
		for _, d := range devs {
			if n := byLower[d.Server()]; d.Registered() && n != "a" {
				victim = n
				return true
			}
		}
		return false
	})
	var moved []*sim.Device
	for _, d := range devs {
		if byLower[d.Server()] == victim {
			moved = append(moved, d)
		}
	}
	eventually(t, 15*time.Second, "one node registered to the upper", func() bool { return leaderOf(t, rig.nodes) != "" })
	t.Logf("%d of %d devices on %s, the upper registered by %s", len(moved), count, victim, leaderOf(t, rig.nodes))

	rig.nodes[victim].kill()
	delete(rig.nodes, victim)
	eventually(t, 30*time.Second, "the killed node's devices registered at a live node", func() bool {
		for _, d := range moved {
			if n := byLower[d.Server()]; !d.Registered() || n == victim {
				return false
			}
		}
		return true
	})
	if _, err := up.WaitLower(ctx, proxyID, func(l sim.LowerState) bool { return l.Registered }); err != nil {
		t.Fatalf("the upward registration did not survive or move: %v", err)
	}
	d := moved[0]
	owner := byLower[d.Server()]
	ch := sim.MakeChannels(ids[d], 1)[0].ID
	// The catalog the registering node answers with has it on its new node.
	eventually(t, 15*time.Second, "the moved channel back in the upper's catalog", func() bool {
		items, _, err := up.QueryCatalog(ctx, proxyID)
		if err != nil {
			return false
		}
		for _, it := range items {
			if it.DeviceID == ch {
				return true
			}
		}
		return false
	})
	playFromOwner(t, ctx, up, rig, owner, ch)
}
