package cascade

import (
	"context"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
	"github.com/gbproxy/gbproxy/cluster"
	"github.com/gbproxy/gbproxy/cluster/etcdtest"
	"github.com/gbproxy/gbproxy/configs"
	"github.com/gbproxy/gbproxy/directory"
)

func joinTestCluster(t *testing.T, endpoint, id, upper string) *cluster.Cluster {
	t.Helper()
	cl, err := cluster.Open(context.Background(), cluster.Config{
		Endpoints: []string{endpoint}, NodeID: id, Advertise: upper, Upper: upper, TTL: 2 * time.Second,
	}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// The upper guard admits a request claiming to come from another node only
// from that live member's host, signed with the cluster's secret, once: the
// platform's ID in From, a node ID or a signature header alone get 403.
func TestUpperGuardClusterSignature(t *testing.T) {
	etcd := etcdtest.Start(t)
	c := guardCascade(t, "ip")
	c.cluster = joinTestCluster(t, etcd.Endpoint(), "self", "127.0.0.1:5070")
	peer := joinTestCluster(t, etcd.Endpoint(), "peer", "127.0.0.2:5070")
	g := &upperGuard{up: c.upper}
	deadline := time.Now().Add(10 * time.Second)
	for !c.cluster.IsMemberUpper("127.0.0.2:5070") {
		if time.Now().After(deadline) {
			t.Fatal("self never saw peer join")
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	request := func(branch string) *sip.Request {
		req := guardRequest(sip.MESSAGE, upperA, "UDP", "127.0.0.2:5070")
		via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "127.0.0.2", Port: 5070, Params: sip.NewParams()}
		via.Params.Add("branch", branch)
		req.PrependHeader(via)
		req.SetBody([]byte("<Query/>"))
		return req
	}
	check := func(name string, req *sip.Request, code int) {
		t.Helper()
		v := g.Admit(req)
		if v.Code != code {
			t.Errorf("%s: verdict %+v, want %d", name, v, code)
		}
		if code == sip.StatusForbidden && v.Label != refusedWrongSource && v.Label != refusedClusterSignature {
			t.Errorf("%s: label %q", name, v.Label)
		}
	}
	check("unsigned, the platform's ID from a member's host", request("z9hG4bK-1"), sip.StatusForbidden)

	signed := request("z9hG4bK-2")
	if err := peer.Sign(signed); err != nil {
		t.Fatal(err)
	}
	check("signed by the member", signed, 0)
	if v := g.Admit(signed); !v.Known || v.Code != 0 {
		t.Errorf("retransmission (same branch): %+v", v)
	}
	replayed := request("z9hG4bK-3")
	replayed.AppendHeader(signed.GetHeader(cluster.SignatureHeader))
	check("replayed under another branch", replayed, sip.StatusForbidden)

	forged := request("z9hG4bK-4")
	forged.AppendHeader(sip.NewHeader(cluster.SignatureHeader, "node=peer;ts="+time.Now().Format("20060102")+";sig=Zm9yZ2Vk"))
	check("forged signature", forged, sip.StatusForbidden)

	tampered := request("z9hG4bK-5")
	if err := peer.Sign(tampered); err != nil {
		t.Fatal(err)
	}
	tampered.SetBody([]byte("<Control/>"))
	check("body changed after signing", tampered, sip.StatusForbidden)

	elsewhere := guardRequest(sip.MESSAGE, upperA, "UDP", "127.0.0.9:5070")
	if err := peer.Sign(elsewhere); err != nil {
		t.Fatal(err)
	}
	check("the member's signature from another host", elsewhere, sip.StatusForbidden)
}

// The B2BUA knows a forwarded request by the header the cluster signs it
// with, and marks a call for the upper with the header the signature covers.
func TestForwardedHeaderIsTheSignature(t *testing.T) {
	if directory.ForwardedHeader != cluster.SignatureHeader {
		t.Fatalf("directory.ForwardedHeader %q, cluster.SignatureHeader %q", directory.ForwardedHeader, cluster.SignatureHeader)
	}
	if directory.ToUpperHeader != cluster.ToUpperHeader {
		t.Fatalf("directory.ToUpperHeader %q, cluster.ToUpperHeader %q", directory.ToUpperHeader, cluster.ToUpperHeader)
	}
}

// A channel of another node is shared through a group above it exactly as
// a local one: the lookups walk its ParentID chain (paths too), and a
// cycle ends the walk.
func TestSharesRemoteWalksGroups(t *testing.T) {
	up := &upperSide{}
	v := newShareView(configs.ShareConfig{Groups: []string{"grp"}}, upperA)
	index := map[string]*Channel{}
	add := func(id, parent, bg string) *Channel {
		c := &Channel{ID: id, DeviceID: "dev", Item: manscdp.CatalogItem{DeviceID: id, ParentID: parent, BusinessGroupID: bg}}
		index[id] = c
		return c
	}
	lookups := 0
	lookup := func(dev, id string) *Channel {
		lookups++
		if dev != "dev" {
			return nil
		}
		return index[id]
	}
	add("grp", "", "")
	add("mid", "civil/grp", "")
	cam := add("cam", "mid", "")
	loose := add("loose", "", "")
	inBG := add("bgcam", "", "grp")
	a := add("a", "b", "")
	add("b", "a", "")
	for _, c := range []struct {
		ch   *Channel
		want bool
	}{{cam, true}, {loose, false}, {inBG, true}, {a, false}} {
		if got := up.sharesRemote(v, c.ch, lookup); got != c.want {
			t.Errorf("%s shared %v, want %v", c.ch.ID, got, c.want)
		}
	}
	if lookups > 8 {
		t.Errorf("%d lookups: only the chains above the channels are looked up", lookups)
	}
}
