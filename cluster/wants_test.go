package cluster

import (
	"slices"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cluster/etcdtest"
)

func wantsOf(c *Cluster, node string) []Want {
	for _, n := range c.Nodes() {
		if n.ID == node {
			return n.Wants
		}
	}
	return nil
}

func TestWantsReachTheOtherNodes(t *testing.T) {
	etcd := etcdtest.Start(t)
	a := openNode(t, etcd.Endpoint(), "a", testTTL)
	b := openNode(t, etcd.Endpoint(), "b", testTTL)
	alarm := Want{Platform: "p1", Kind: "Alarm"}
	pos := Want{Platform: "p1", Kind: "MobilePosition", Device: "dev"}
	a.SetWants([]Want{pos, alarm, alarm})
	want := []Want{alarm, pos} // sorted, without the duplicate
	if got := a.Self().Wants; !slices.Equal(got, want) {
		t.Fatalf("a.Self().Wants = %+v, want %+v", got, want)
	}
	eventually(t, 5*time.Second, "b sees a's wants", func() bool { return slices.Equal(wantsOf(b, "a"), want) })
	syncNode(t, a)
	writes := a.Writes()
	a.SetWants([]Want{alarm, pos})
	syncNode(t, a)
	if a.Writes() != writes {
		t.Fatalf("the same wants again wrote to etcd (%d writes)", a.Writes()-writes)
	}
	a.SetWants(nil)
	eventually(t, 5*time.Second, "b sees a's wants go", func() bool { return len(wantsOf(b, "a")) == 0 })
}
