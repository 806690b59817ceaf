package main

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
)

// apiCall sends one request to a node's admin API.
func apiCall(t testing.TB, httpAddr, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+httpAddr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// platformIDs lists the upper platforms a node runs.
func platformIDs(t testing.TB, p proxyProcess) []string {
	var ps []clusterPlatform
	getJSON(t, p.http, "/api/v1/platforms", &ps)
	var ids []string
	for _, pl := range ps {
		ids = append(ids, pl.ID)
	}
	slices.Sort(ids)
	return ids
}

func allowedIDs(t testing.TB, p proxyProcess) []string {
	var ds []struct {
		ID string `json:"id"`
	}
	getJSON(t, p.http, "/api/v1/devices/allowed", &ds)
	var ids []string
	for _, d := range ds {
		ids = append(ids, d.ID)
	}
	return ids
}

// Platforms, shares and allowed devices managed through any node's API are
// the whole cluster's: a platform added on one node is registered by the
// elected node and listed by all; its share set on another node is what the
// upper's catalog query gets; removing it on a third unregisters it
// (Expires: 0 from the node registered to it); a device allowed on one
// node registers at another; a restarted node comes back with the
// cluster's set, not its config file's.
func TestClusterManagedSet(t *testing.T) {
	up1 := newUpper(t, freeAddr(t), nil)
	up2 := newUpper2(t)
	rig := newClusterRig(t, clusterPlatformYAML(up1.Addr()))
	ctx := ctxTimeout(t, 120*time.Second)
	for _, id := range []string{"node-a", "node-b", "node-c"} {
		rig.startNode(id)
	}
	a, b, c := rig.nodes["node-a"], rig.nodes["node-b"], rig.nodes["node-c"]
	const camera = "34020000001110000031"
	d := newDevice(t, nil, camera, "udp", 2, func(cfg *sim.DeviceConfig) { cfg.Server = a.lower })
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			for id, p := range rig.nodes {
				var ps any
				getJSON(t, p.http, "/api/v1/platforms", &ps)
				t.Logf("%s: platforms %v allowed %v", id, ps, allowedIDs(t, p))
			}
		}
	}()

	// Added on b: every node runs it, one registers.
	if code, body := apiCall(t, b.http, "POST", "/api/v1/platforms", platformBody(upper2ID, up2.Addr(), upperPass)); code != 201 || strings.Contains(body, upperPass) {
		t.Fatalf("POST platform on node-b: %d %s", code, body)
	}
	if code, body := apiCall(t, c.http, "POST", "/api/v1/platforms", platformBody(upper2ID, up2.Addr(), upperPass)); code != 409 {
		t.Fatalf("the same platform added again on node-c: %d %s; want 409", code, body)
	}
	want := []string{upperID, upper2ID}
	slices.Sort(want)
	eventually(t, 10*time.Second, "every node runs the added platform", func() bool {
		for _, p := range rig.nodes {
			if !slices.Equal(platformIDs(t, p), want) {
				return false
			}
		}
		return true
	})
	if _, err := up2.WaitRegistered(ctx, proxyID); err != nil {
		t.Fatal(err)
	}
	if lows := up2.Lowers(); len(lows) != 1 {
		t.Fatalf("the added platform sees %+v; want one binding", lows)
	}
	eventually(t, 15*time.Second, "the added platform's catalog has the camera's two channels", func() bool {
		items, _, err := up2.QueryCatalog(ctx, proxyID)
		return err == nil && len(items) == 2
	})

	// Its share set on c: the upper's catalog follows.
	shared := sim.MakeChannels(camera, 2)[1].ID
	if code, body := apiCall(t, c.http, "PUT", "/api/v1/platforms/"+upper2ID+"/share", `{"all": false, "channels": ["`+shared+`"]}`); code != 200 {
		t.Fatalf("PUT share on node-c: %d %s", code, body)
	}
	eventually(t, 15*time.Second, "the catalog query answers the shared channel only", func() bool {
		items, _, err := up2.QueryCatalog(ctx, proxyID)
		return err == nil && len(items) == 1 && items[0].DeviceID == shared
	})

	// Removed on a: the registered node sends Expires: 0; no node lists it.
	if code, body := apiCall(t, a.http, "DELETE", "/api/v1/platforms/"+upper2ID, ""); code != 204 {
		t.Fatalf("DELETE on node-a: %d %s", code, body)
	}
	if _, err := up2.WaitLower(ctx, proxyID, func(l sim.LowerState) bool { return !l.Registered }); err != nil {
		t.Fatalf("no Expires: 0 after the platform was removed: %v", err)
	}
	eventually(t, 10*time.Second, "no node runs the removed platform", func() bool {
		for _, p := range rig.nodes {
			if !slices.Equal(platformIDs(t, p), []string{upperID}) {
				return false
			}
		}
		return true
	})

	// A device allowed on a, with a password of its own, registers at c
	// (or where c's redirector sends it).
	const allowed = "34020000001110000032"
	if code, body := apiCall(t, a.http, "POST", "/api/v1/devices", `{"id": "`+allowed+`", "password": "its-own-password"}`); code != 201 {
		t.Fatalf("POST device on node-a: %d %s", code, body)
	}
	eventually(t, 10*time.Second, "every node allows the device", func() bool {
		for _, p := range rig.nodes {
			if !slices.Contains(allowedIDs(t, p), allowed) {
				return false
			}
		}
		return true
	})
	d2 := newDevice(t, nil, allowed, "udp", 1, func(cfg *sim.DeviceConfig) { cfg.Server, cfg.Password = c.lower, "its-own-password" })
	if err := d2.Start(ctx); err != nil {
		t.Fatalf("device allowed on node-a registering at node-c: %v", err)
	}

	// c restarted (a new process and store, its file lists only up1): it
	// runs the cluster's set.
	c.kill()
	c = rig.startNode("node-c")
	if got := platformIDs(t, c); !slices.Equal(got, []string{upperID}) {
		t.Errorf("restarted node-c runs platforms %v; want the cluster's %v", got, []string{upperID})
	}
	if !slices.Contains(allowedIDs(t, c), allowed) {
		t.Errorf("restarted node-c does not allow %s, allowed through node-a's API", allowed)
	}
}
