package cluster

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cluster/etcdtest"
)

// changes collects what OnManaged reports.
type changes struct {
	mu   sync.Mutex
	list []ManagedChange
}

func (c *changes) add(ch ManagedChange) {
	c.mu.Lock()
	c.list = append(c.list, ch)
	c.mu.Unlock()
}

func (c *changes) get() []ManagedChange {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.list)
}

func (c *changes) has(f func(ManagedChange) bool) bool { return slices.ContainsFunc(c.get(), f) }

// The first node seeds the managed set, the second gets it; a write on one
// is seen by the other with its writer, conditional writes refuse what
// exists or is missing, the entries carry no lease (they outlive a crashed
// writer), and the writer is not told of its own writes.
func TestManagedSetAcrossNodes(t *testing.T) {
	etcd := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := openNode(t, etcd.Endpoint(), "a", testTTL)
	b := openNode(t, etcd.Endpoint(), "b", testTTL)
	var seenA, seenB changes
	a.OnManaged(seenA.add)
	b.OnManaged(seenB.add)

	seeded, err := a.SeedManaged(ctx, []ManagedChange{{Kind: ManagedPlatform, ID: "p1", Value: []byte(`{"id":"p1"}`)}})
	if err != nil || !seeded {
		t.Fatalf("a seeds: %v %v", seeded, err)
	}
	seeded, err = b.SeedManaged(ctx, []ManagedChange{{Kind: ManagedDevice, ID: "d9", Value: []byte(`{"id":"d9"}`)}})
	if err != nil || seeded {
		t.Fatalf("b must not seed over a's set: %v %v", seeded, err)
	}
	if got := b.Managed(); len(got) != 1 || got[0].ID != "p1" || got[0].Node != "a" {
		t.Fatalf("b's set after seeding: %+v", got)
	}

	if err := b.PutManaged(ctx, ManagedDevice, "d1", []byte(`{"id":"d1","password":"x"}`), CreateOnly); err != nil {
		t.Fatal(err)
	}
	if v, ok := b.ManagedEntry(ManagedDevice, "d1"); !ok || string(v) != `{"id":"d1","password":"x"}` {
		t.Fatalf("b's own write not cached at once: %s %v", v, ok)
	}
	eventually(t, 5*time.Second, "a told of d1, written by b", func() bool {
		return seenA.has(func(c ManagedChange) bool {
			return c.Kind == ManagedDevice && c.ID == "d1" && c.Node == "b" && c.Value != nil
		})
	})
	if err := a.PutManaged(ctx, ManagedDevice, "d1", []byte(`{}`), CreateOnly); !errors.Is(err, ErrManagedExists) {
		t.Fatalf("create over an existing entry: %v", err)
	}
	if err := a.PutManaged(ctx, ManagedShare, "p2", []byte(`{}`), UpdateOnly); !errors.Is(err, ErrManagedMissing) {
		t.Fatalf("update of a missing entry: %v", err)
	}
	if existed, err := a.DeleteManaged(ctx, ManagedDevice, "nope"); existed || err != nil {
		t.Fatalf("delete of a missing entry: %v %v", existed, err)
	}
	if existed, err := a.DeleteManaged(ctx, ManagedPlatform, "p1"); !existed || err != nil {
		t.Fatalf("delete: %v %v", existed, err)
	}
	eventually(t, 5*time.Second, "b told p1 is gone", func() bool {
		return seenB.has(func(c ManagedChange) bool { return c.ID == "p1" && c.Value == nil })
	})
	if err := a.PutManaged(ctx, ManagedShare, "p1", []byte(`not json`), Upsert); err == nil {
		t.Fatal("a value that is not JSON was written")
	}
	syncNode(t, a)
	syncNode(t, b)
	for _, c := range seenB.get() {
		if c.Node == "b" {
			t.Errorf("b was told of its own write %+v", c)
		}
	}

	// No lease: b crashes, d1 stays.
	b.crash()
	eventually(t, testTTL+3*time.Second, "b gone", func() bool { return slices.Equal(nodeIDs(a), []string{"a"}) })
	cli := rawClient(t, etcd)
	if rawGet(t, cli, managedKey(ManagedDevice, "d1")) == "" {
		t.Fatal("d1 went with its writer's lease")
	}

	// A full read of an etcd without the set (replaced by an empty one): a
	// is asked to seed again and removes nothing.
	a.reload(nil)
	if !seenA.has(func(c ManagedChange) bool { return c.Reseed }) {
		t.Fatal("a not asked to seed again")
	}
	if v, ok := a.ManagedEntry(ManagedDevice, "d1"); !ok || v == nil {
		t.Fatal("a dropped d1 when etcd lost the set")
	}
}

// A platform replaced on a node campaigns again only once the old loop
// resigned (both share the node's key): never two terms at once, on one
// node or across nodes.
func TestLeadReplacedOnSameNode(t *testing.T) {
	etcd := etcdtest.Start(t)
	a := openNode(t, etcd.Endpoint(), "a", testTTL)
	b := openNode(t, etcd.Endpoint(), "b", testTTL)
	l := &leader{running: map[string]bool{}, ended: map[string]int{}}
	ctxOld, cancelOld := context.WithCancel(context.Background())
	defer cancelOld()
	a.Lead(ctxOld, "p", l.run("a-old"))
	eventually(t, 5*time.Second, "a's first client leads", func() bool { return slices.Equal(l.current(), []string{"a-old"}) })
	b.Lead(t.Context(), "p", l.run("b"))
	a.Lead(t.Context(), "p", l.run("a-new"))
	if err := a.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := l.current(); !slices.Equal(got, []string{"a-old"}) {
		t.Fatalf("terms running while the first leads: %v", got)
	}
	cancelOld()
	eventually(t, 5*time.Second, "one new term", func() bool { return len(l.current()) == 1 && l.endedCount("a-old") == 1 })
	time.Sleep(300 * time.Millisecond) // a second, wrong term would start within this
	if got := l.current(); len(got) != 1 {
		t.Fatalf("terms running at once: %v", got)
	}
}
