package cascade

import (
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cluster/etcdtest"
)

// The redirect registrar's rules: a REGISTER is sent on (302) to the node
// Place picks; it is served here when it names this node's own address (a
// 302 sent it here, and the nodes' views of each other's load lag), and when
// the device comes back within redirectGrace without having registered
// where it was sent (it does not follow 302).
func TestRedirectRules(t *testing.T) {
	etcd := etcdtest.Start(t)
	c := guardCascade(t, "ip")
	c.cfg.Cluster.Redirect = true
	c.cluster = joinTestCluster(t, etcd.Endpoint(), "a", "127.0.0.1:5070")
	b := joinTestCluster(t, etcd.Endpoint(), "b", "127.0.0.3:5070")
	c.cluster.SetLoad(10, 0) // b, with no devices, is where Place sends new ones
	eventually := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) { // poll interval
			if time.Now().After(deadline) {
				t.Fatal("not within 10s: " + what)
			}
		}
	}
	eventually("a places a new device on b", func() bool { return c.cluster.Place("34020000001320000077").ID == "b" })

	register := func(recipient sip.Uri) *sip.Request {
		return sip.NewRequest(sip.REGISTER, recipient)
	}
	shared := sip.Uri{Scheme: "sip", User: selfID, Host: "3402000000"}
	now := time.Now()
	const dev = "34020000001320000077"

	n, away := c.lower.redirectTo(register(shared), dev, now)
	if !away || n.ID != "b" {
		t.Fatalf("first REGISTER at the shared address: node %+v, redirected %v; want b, redirected", n, away)
	}
	v := c.lower.redirectVerdict(register(shared), dev, n)
	if v.Code != sip.StatusMovedTemporarily {
		t.Fatalf("redirect verdict %d, want 302", v.Code)
	}
	var contact string
	for _, h := range v.Headers {
		if h.Name() == "Contact" {
			contact = h.Value()
		}
	}
	if contact != "<sip:"+selfID+"@127.0.0.3:5070>" {
		t.Errorf("302 Contact %q, want our ID at b's advertised address", contact)
	}

	// Named by its own address: served here, whatever Place says.
	if _, away := c.lower.redirectTo(register(sip.Uri{Scheme: "sip", User: selfID, Host: "127.0.0.1", Port: 5070}), "34020000001320000078", now); away {
		t.Error("a REGISTER to this node's advertised address was redirected again")
	}

	// Back within the grace without registering at b: it ignores 302.
	if _, away := c.lower.redirectTo(register(shared), dev, now.Add(time.Minute)); away {
		t.Error("a device that came back instead of following our 302 was redirected again")
	}
	// Once that is settled, a device b does own is still sent to it.
	b.ClaimDevice(dev)
	eventually("a sees b own the device", func() bool { owner, ok := c.cluster.DeviceOwner(dev); return ok && owner == "b" })
	if n, away := c.lower.redirectTo(register(shared), dev, now.Add(2*time.Minute)); !away || n.ID != "b" {
		t.Errorf("a device b owns, registering here: node %s, redirected %v; want b", n.ID, away)
	}
}
