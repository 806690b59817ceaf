package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/cluster"
	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
	"github.com/gbproxy/gbproxy/endpoint"
)

// clusterSession is what the cluster tests read of GET /api/v1/sessions.
type clusterSession struct {
	CallID    string `json:"call_id"`
	ChannelID string `json:"channel_id"`
	UpperID   string `json:"upper_id"`
	Kind      string `json:"kind"`
	Packets   uint64 `json:"packets"`
	Node      string `json:"node"`
}

// sessionsAt lists a node's sessions at path and says which nodes the
// list lacks (X-Cluster-Skipped).
func sessionsAt(t testing.TB, httpAddr, path string) ([]clusterSession, string) {
	t.Helper()
	res, err := http.Get("http://" + httpAddr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	var out []clusterSession
	if res.StatusCode != 200 || json.NewDecoder(res.Body).Decode(&out) != nil {
		t.Fatalf("GET %s: %s", path, res.Status)
	}
	return out, res.Header.Get("X-Cluster-Skipped")
}

func withCallID(ss []clusterSession, callID string) []clusterSession {
	var out []clusterSession
	for _, s := range ss {
		if s.CallID == callID {
			out = append(out, s)
		}
	}
	return out
}

// What the node registered to the upper relays for the other nodes: a
// forwarded call is a session in its list and the owner's (one in the
// cluster-wide list, with the owner's counters), the upper's BYE and the
// owner's hang-up end both legs, the owner's MediaStatus at the end of a
// download reaches the upper, a Catalog subscription hears of channels
// appearing and going offline on other nodes, and a forwarded INVITE is
// never forwarded again (482) nor taken unsigned or forged (403).
func TestClusterLeaderRelays(t *testing.T) {
	c := startUpperCluster(t, map[string]string{"node-a": "34020000001110000021", "node-b": "34020000001110000022", "node-c": "34020000001110000023"})
	up, rig, devs, devices, leader, ctx := c.up, c.rig, c.devs, c.devices, c.leader, c.ctx
	owner, third := c.after(1), c.after(2)
	sub, err := up.Subscribe(ctx, proxyID, "Catalog", "", 600)
	if err != nil {
		t.Fatalf("Catalog subscription to the cluster: %v", err)
	}
	L, O := rig.nodes[leader], rig.nodes[owner]
	ch := sim.MakeChannels(devs[owner], 2)[0].ID

	// A forwarded call is listed by the leader (node: the owner) and the
	// owner; the cluster-wide list has it once, with the owner's counters.
	play, err := up.Play(ctx, proxyID, ch, sim.PlayOptions{})
	if err != nil {
		t.Fatalf("play %s on %s: %v", ch, owner, err)
	}
	defer play.Close()
	if _, err := play.WaitPackets(ctx, 5); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the forwarded session in the leader's, the owner's and the cluster-wide lists", func() bool {
		mine, _ := sessionsAt(t, L.http, "/api/v1/sessions?local=true")
		theirs, _ := sessionsAt(t, O.http, "/api/v1/sessions?local=true")
		all, skipped := sessionsAt(t, L.http, "/api/v1/sessions")
		fromThird, _ := sessionsAt(t, rig.nodes[third].http, "/api/v1/sessions?q="+play.CallID())
		m, o, a := withCallID(mine, play.CallID()), withCallID(theirs, play.CallID()), withCallID(all, play.CallID())
		return len(m) == 1 && m[0].Node == owner && m[0].Kind == "live" && m[0].ChannelID == ch && m[0].UpperID == upperID &&
			len(o) == 1 && o[0].Node == owner && o[0].Packets > 0 &&
			len(a) == 1 && a[0].Node == owner && a[0].Packets > 0 && skipped == "" && len(all) == 1 &&
			len(withCallID(fromThird, play.CallID())) == 1
	})
	if err := play.Bye(ctx); err != nil {
		t.Fatalf("BYE: %v", err)
	}
	eventually(t, 10*time.Second, "the upper's BYE ended the call on the leader and the owner", func() bool {
		all, _ := sessionsAt(t, L.http, "/api/v1/sessions")
		mine, _ := sessionsAt(t, L.http, "/api/v1/sessions?local=true")
		theirs, _ := sessionsAt(t, O.http, "/api/v1/sessions?local=true")
		return len(all) == 0 && len(mine) == 0 && len(theirs) == 0
	})

	// The owner hangs up (its API): the upper gets the BYE through the leader.
	play2, err := up.Play(ctx, proxyID, ch, sim.PlayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer play2.Close()
	eventually(t, 10*time.Second, "the owner lists the second call", func() bool {
		theirs, _ := sessionsAt(t, O.http, "/api/v1/sessions?local=true")
		return len(withCallID(theirs, play2.CallID())) == 1
	})
	req, _ := http.NewRequest(http.MethodDelete, "http://"+O.http+"/api/v1/sessions/"+play2.CallID(), nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("DELETE the session on its owner: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE the session on its owner: %s", res.Status)
	}
	waitEnded(t, ctx, play2, "the owner's hang-up, through the leader")
	eventually(t, 10*time.Second, "the leader forgot the call the owner ended", func() bool {
		mine, _ := sessionsAt(t, L.http, "/api/v1/sessions?local=true")
		return len(mine) == 0
	})

	// The owner's MediaStatus at the end of a download reaches the upper in
	// the call's dialog, through the leader.
	start := time.Now().Add(-time.Hour).Truncate(time.Second)
	dl, err := up.Download(ctx, proxyID, ch, start, start.Add(2*time.Second), 4, sim.PlayOptions{})
	if err != nil {
		t.Fatalf("download %s on %s: %v", ch, owner, err)
	}
	defer dl.Close()
	ms, err := dl.WaitMediaStatus(ctx)
	if err != nil {
		t.Fatalf("MediaStatus of the download on %s: %v", owner, err)
	}
	if !bytes.Contains(ms.Body, []byte("<NotifyType>121</NotifyType>")) || ms.Source != L.upper {
		t.Fatalf("MediaStatus from %s (want the leader %s): %s", ms.Source, L.upper, ms.Body)
	}
	if err := dl.Bye(ctx); err != nil {
		t.Fatal(err)
	}

	// Catalog NOTIFYs for other nodes: a device registering on the owner
	// (ADD), a device on the third node unregistering (OFF).
	fresh := "34020000001110000024"
	d4 := newDevice(t, nil, fresh, "udp", 2, func(c *sim.DeviceConfig) { c.Server = O.lower })
	if err := d4.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitEvent := func(what, channel, event string) {
		t.Helper()
		eventually(t, 10*time.Second, what+": a NOTIFY with "+channel+" "+event, func() bool {
			for _, it := range sub.CatalogItems() {
				if it.DeviceID == channel && it.Event == event {
					return true
				}
			}
			return false
		})
	}
	for _, c := range sim.MakeChannels(fresh, 2) {
		waitEvent("device registered on "+owner, c.ID, "ADD")
	}
	if _, err := devices[third].Register(ctx, 0); err != nil {
		t.Fatalf("unregister %s: %v", devs[third], err)
	}
	devices[third].Close()
	for _, c := range sim.MakeChannels(devs[third], 2) {
		waitEvent("device unregistered on "+third, c.ID, "OFF")
	}
	// The leader's own device: the registry tells, the cluster index not again.
	if _, err := devices[leader].Register(ctx, 0); err != nil {
		t.Fatalf("unregister %s: %v", devs[leader], err)
	}
	devices[leader].Close()
	for _, c := range sim.MakeChannels(devs[leader], 2) {
		waitEvent("device unregistered on the leader "+leader, c.ID, "OFF")
	}
	eventually(t, 10*time.Second, "the cluster's index dropped the offline devices' channels", func() bool {
		var chs []struct {
			DeviceID string `json:"device_id"`
		}
		getJSON(t, O.http, "/api/v1/channels", &chs) // the owner lists others' channels from the index
		for _, c := range chs {
			if c.DeviceID == devs[leader] || c.DeviceID == devs[third] {
				return false
			}
		}
		return true
	})
	events := map[string]int{} // channel + event -> NOTIFYs
	for _, it := range sub.CatalogItems() {
		events[it.DeviceID+" "+it.Event]++
	}
	for _, dev := range []string{fresh, devs[third], devs[leader]} {
		for _, c := range sim.MakeChannels(dev, 2) {
			if events[c.ID+" DEL"] != 0 || events[c.ID+" ADD"]+events[c.ID+" OFF"] != 1 {
				t.Errorf("channel %s notified %v; want one ADD (registered) or one OFF (offline), no DEL", c.ID, events)
			}
		}
	}

	// A node that takes a signed INVITE for a channel it places elsewhere
	// refuses it 482; a forged signature gets 403.
	probeINVITE(t, ctx, rig, rig.nodes[third].upper, ch)
}

// probeINVITE joins the cluster as a member "probe" and sends node at
// addr (not the channel's owner) INVITEs for ch as another node would
// forward them: validly signed (482), then with the signature tampered
// (403).
func probeINVITE(t *testing.T, ctx context.Context, rig *clusterRig, addr, ch string) {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgentHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer ua.Close()
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := cluster.Open(ctx, cluster.Config{Endpoints: []string{rig.etcd.Endpoint()}, NodeID: "probe",
		Advertise: "127.0.0.1:9", Upper: "127.0.0.1:9", TTL: 2 * time.Second}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	eventually(t, 10*time.Second, "the node sees the probe join", func() bool {
		var c struct {
			Nodes []struct{ ID string } `json:"nodes"`
		}
		for id, p := range rig.nodes {
			if p.upper == addr {
				getJSON(t, rig.nodes[id].http, "/api/v1/cluster", &c)
			}
		}
		for _, n := range c.Nodes {
			if n.ID == "probe" {
				return true
			}
		}
		return false
	})
	send := func(tamper bool) *sip.Response {
		host, port := endpoint.SplitHostPort(addr)
		req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: ch, Host: host, Port: port})
		from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: upperID, Host: upperID[:10]}, Params: sip.NewParams()}
		from.Params.Add("tag", sip.GenerateTagN(8))
		req.AppendHeader(from)
		req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: ch, Host: proxyDomain}, Params: sip.NewParams()})
		req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		req.SetBody([]byte("v=0\r\no=" + upperID + " 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
			"m=video 30000 RTP/AVP 96\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\ny=0100000001\r\n"))
		cseq := &sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE}
		req.AppendHeader(cseq)
		cid := sip.CallIDHeader(sip.GenerateTagN(16))
		req.AppendHeader(&cid)
		if err := cl.Sign(req); err != nil {
			t.Fatal(err)
		}
		if tamper {
			h := req.GetHeader(cluster.SignatureHeader)
			v := h.Value()
			req.ReplaceHeader(sip.NewHeader(cluster.SignatureHeader, v[:len(v)-4]+"AAAA"))
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		res, err := cli.Do(rctx, req)
		if err != nil {
			t.Fatalf("INVITE to %s: %v", addr, err)
		}
		return res
	}
	if res := send(false); res.StatusCode != sip.StatusLoopDetected {
		t.Errorf("signed INVITE for a channel on another node answered %d %q, want 482", res.StatusCode, res.Reason)
	}
	if res := send(true); res.StatusCode != sip.StatusForbidden {
		t.Errorf("INVITE with a forged signature answered %d %q, want 403", res.StatusCode, res.Reason)
	}
}
