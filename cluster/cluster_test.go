package cluster

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gbproxy/gbproxy/cluster/etcdtest"
	"github.com/gbproxy/gbproxy/metrics"
)

const testTTL = 2 * time.Second

func openNode(t testing.TB, endpoint, id string, ttl time.Duration) *Cluster {
	t.Helper()
	c, err := Open(context.Background(), Config{
		Endpoints: []string{endpoint}, NodeID: id, Advertise: "127.0.0.1:5060", TTL: ttl,
		LoadInterval: 200 * time.Millisecond, Metrics: metrics.New(),
	}, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	syncNode(t, c)
	return c
}

func syncNode(t testing.TB, c *Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Sync(ctx); err != nil {
		t.Fatalf("%s: sync: %v", c.cfg.NodeID, err)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
}

// crash stops a node as SIGKILL would: no revoke, its lease just stops
// being renewed.
func (c *Cluster) crash() {
	c.once.Do(func() {
		close(c.closing)
		c.stop()
		c.cancel()
		c.closeClient()
		c.leads.Wait()
		c.wg.Wait()
	})
}

func nodeIDs(c *Cluster) []string {
	var ids []string
	for _, n := range c.Nodes() {
		ids = append(ids, n.ID)
	}
	return ids
}

func owner(c *Cluster, dev string) string {
	n, _ := c.DeviceOwner(dev)
	return n
}

func TestMembershipCloseAndCrash(t *testing.T) {
	etcd := etcdtest.Start(t)
	a := openNode(t, etcd.Endpoint(), "a", 5*time.Second)
	b := openNode(t, etcd.Endpoint(), "b", 5*time.Second)
	c := openNode(t, etcd.Endpoint(), "c", testTTL)
	eventually(t, 5*time.Second, "a sees a, b, c", func() bool { return slices.Equal(nodeIDs(a), []string{"a", "b", "c"}) })

	b.SetLoad(7, 2)
	eventually(t, 5*time.Second, "a sees b's load", func() bool {
		n := a.Nodes()[1]
		return n.Devices == 7 && n.Streams == 2 && n.Advertise == "127.0.0.1:5060" && !n.StartedAt.IsZero()
	})

	// Close revokes: gone well before b's 5 s TTL.
	closed := time.Now()
	b.Close()
	eventually(t, 2*time.Second, "b gone at once after Close", func() bool { return slices.Equal(nodeIDs(a), []string{"a", "c"}) })
	t.Logf("b gone %s after Close", time.Since(closed))

	// A crashed node and its devices vanish within its TTL.
	c.ClaimDevice("dev-c")
	syncNode(t, c)
	eventually(t, 5*time.Second, "a sees dev-c at c", func() bool { return owner(a, "dev-c") == "c" })
	crashed := time.Now()
	c.crash()
	eventually(t, testTTL+3*time.Second, "c and dev-c gone within the TTL", func() bool {
		_, owned := a.DeviceOwner("dev-c")
		return slices.Equal(nodeIDs(a), []string{"a"}) && !owned
	})
	t.Logf("crashed c gone %s after its last renewal window (ttl %s)", time.Since(crashed), testTTL)
}

func TestDeviceClaimReleaseAcrossNodes(t *testing.T) {
	etcd := etcdtest.Start(t)
	a := openNode(t, etcd.Endpoint(), "a", testTTL)
	b := openNode(t, etcd.Endpoint(), "b", testTTL)
	var lost sync.Map
	a.OnDeviceLost(func(dev string) { lost.Store(dev, true) })

	a.ClaimDevice("d1")
	if n, ok := a.DeviceOwner("d1"); !ok || n != "a" {
		t.Fatalf("own claim not answered at once: %q %v", n, ok)
	}
	eventually(t, 5*time.Second, "b sees d1 at a", func() bool { return owner(b, "d1") == "a" })

	// Re-claiming a held device writes nothing.
	syncNode(t, a)
	w := a.Writes()
	for range 10 {
		a.ClaimDevice("d1")
	}
	syncNode(t, a)
	if got := a.Writes() - w; got != 0 {
		t.Fatalf("re-registration wrote %d times", got)
	}

	// The device registers at b: a is told, and a's late release of it
	// (its registration expiring there) leaves b the owner.
	b.ClaimDevice("d1")
	eventually(t, 5*time.Second, "a sees d1 at b and is told it lost it", func() bool {
		_, told := lost.Load("d1")
		return owner(a, "d1") == "b" && told
	})
	a.ReleaseDevice("d1")
	syncNode(t, a)
	if got := owner(b, "d1"); got != "b" {
		t.Fatalf("d1 owner after a's late release: %q", got)
	}

	// Release compares: a claim overwritten behind a's back survives a's release.
	a.ClaimDevice("d2")
	syncNode(t, a)
	raw := rawClient(t, etcd)
	if _, err := raw.Put(context.Background(), devicesPrefix+"d2", "b"); err != nil {
		t.Fatal(err)
	}
	a.ReleaseDevice("d2")
	syncNode(t, a)
	if v := rawGet(t, raw, devicesPrefix+"d2"); v != "b" {
		t.Fatalf("release deleted another node's claim: %q", v)
	}

	// A plain release removes the key.
	b.ReleaseDevice("d1")
	syncNode(t, b)
	eventually(t, 5*time.Second, "d1 released everywhere", func() bool {
		_, okA := a.DeviceOwner("d1")
		_, okB := b.DeviceOwner("d1")
		return !okA && !okB
	})
}

func rawClient(t testing.TB, etcd *etcdtest.Server) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.Endpoint()}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func rawGet(t testing.TB, cli *clientv3.Client, key string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}

func TestPlaceStickyAndLeastLoaded(t *testing.T) {
	etcd := etcdtest.Start(t)
	a := openNode(t, etcd.Endpoint(), "a", testTTL)
	b := openNode(t, etcd.Endpoint(), "b", testTTL)
	a.SetLoad(10, 0)
	b.SetLoad(3, 0)
	eventually(t, 5*time.Second, "a sees both loads", func() bool {
		n := a.Nodes()
		return len(n) == 2 && n[1].Devices == 3
	})
	// b is lighter by 7: the next 7 placements go there, counted before
	// b's record says so; then a (tie goes to the lower ID).
	for i := range 7 {
		if got := a.Place(fmt.Sprintf("new%d", i)).ID; got != "b" {
			t.Fatalf("placement %d went to %s", i, got)
		}
	}
	if got := a.Place("new7").ID; got != "a" {
		t.Fatalf("tie went to %s", got)
	}
	// Sticky: a device held by a live node stays there, however loaded.
	a.ClaimDevice("held")
	eventually(t, 5*time.Second, "b sees held at a", func() bool { return owner(b, "held") == "a" })
	if got := b.Place("held"); got.ID != "a" || got.Advertise != "127.0.0.1:5060" {
		t.Fatalf("held device placed at %+v", got)
	}
	// Streams weigh StreamWeight devices each.
	b.SetLoad(3, 1)
	eventually(t, 5*time.Second, "a sees b's stream", func() bool { return a.Nodes()[1].Streams == 1 })
	if got := a.Place("new8").ID; got != "a" {
		t.Fatalf("3 devices + 1 stream should outweigh 10 devices, placed at %s", got)
	}
}

func TestLeastLoaded(t *testing.T) {
	nodes := []Node{{ID: "a", Devices: 5}, {ID: "b", Devices: 5}, {ID: "c", Devices: 1, Streams: 1}}
	if got := leastLoaded(nodes, nil).ID; got != "a" {
		t.Fatalf("tie-break: %s", got)
	}
	if got := leastLoaded(nodes, map[string]int{"a": 1}).ID; got != "b" {
		t.Fatalf("pending placements not counted: %s", got)
	}
	nodes[2].Streams = 0
	if got := leastLoaded(nodes, nil).ID; got != "c" {
		t.Fatalf("least devices: %s", got)
	}
}

func TestChannelIndex(t *testing.T) {
	etcd := etcdtest.Start(t)
	a := openNode(t, etcd.Endpoint(), "a", testTTL)
	b := openNode(t, etcd.Endpoint(), "b", testTTL)
	a.ClaimDevice("dev")
	a.SetChannels("dev", []ChannelRecord{
		{ID: "ch1", Name: "gate", ParentID: "dev", CivilCode: "340200", Status: "ON", Info: []byte(`{"PTZType":"1"}`)},
		{ID: "ch2", Name: "yard", Status: "ON"},
	})
	eventually(t, 5*time.Second, "b sees both channels", func() bool { return len(b.Channels()) == 2 })
	if dev, node, ok := b.ChannelOwner("ch1"); !ok || dev != "dev" || node != "a" {
		t.Fatalf("ChannelOwner(ch1) = %q %q %v", dev, node, ok)
	}
	got := b.Channels()[0]
	if got.ID != "ch1" || got.DeviceID != "dev" || got.Node != "a" || got.Name != "gate" || got.CivilCode != "340200" || string(got.Info) != `{"PTZType":"1"}` {
		t.Fatalf("record: %+v", got)
	}

	// Catalog change: only the differences are written; the same catalog again writes nothing.
	syncNode(t, a)
	w := a.Writes()
	a.SetChannels("dev", []ChannelRecord{{ID: "ch2", Name: "yard", Status: "OFF"}, {ID: "ch3", Name: "door"}})
	eventually(t, 5*time.Second, "b sees ch1 gone, ch2 off, ch3", func() bool {
		chs := b.Channels()
		return len(chs) == 2 && chs[0].ID == "ch2" && chs[0].Status == "OFF" && chs[1].ID == "ch3"
	})
	syncNode(t, a)
	if got := a.Writes() - w; got != 1 {
		t.Fatalf("catalog change took %d writes, want 1 transaction", got)
	}
	w = a.Writes()
	a.SetChannels("dev", []ChannelRecord{{ID: "ch3", Name: "door"}, {ID: "ch2", Name: "yard", Status: "OFF"}})
	syncNode(t, a)
	if got := a.Writes() - w; got != 0 {
		t.Fatalf("unchanged catalog wrote %d times", got)
	}
	if _, _, ok := b.ChannelOwner("ch1"); ok {
		t.Fatal("removed channel still indexed")
	}
	a.SetChannels("dev", nil)
	eventually(t, 5*time.Second, "channels removed", func() bool { return len(b.Channels()) == 0 })
}

// leader records which nodes run a platform's leadership.
type leader struct {
	mu      sync.Mutex
	running map[string]bool
	ended   map[string]int
}

func (l *leader) run(node string) func(ctx context.Context) {
	return func(ctx context.Context) {
		l.mu.Lock()
		l.running[node] = true
		l.mu.Unlock()
		<-ctx.Done()
		l.mu.Lock()
		delete(l.running, node)
		l.ended[node]++
		l.mu.Unlock()
	}
}

func (l *leader) current() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ids []string
	for id := range l.running {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (l *leader) endedCount(node string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ended[node]
}

func TestElectionOneLeaderAndTakeover(t *testing.T) {
	etcd := etcdtest.Start(t)
	nodes := map[string]*Cluster{}
	l := &leader{running: map[string]bool{}, ended: map[string]int{}}
	for _, id := range []string{"a", "b", "c"} {
		nodes[id] = openNode(t, etcd.Endpoint(), id, testTTL)
		nodes[id].Lead(context.Background(), "P", l.run(id))
	}
	var first string
	eventually(t, 5*time.Second, "one leader", func() bool {
		cur := l.current()
		if len(cur) != 1 {
			return false
		}
		first = cur[0]
		for _, n := range nodes {
			if id, ok := n.Leader("P"); !ok || id != first {
				return false
			}
		}
		return slices.Equal(nodes[first].Self().Platforms, []string{"P"})
	})
	// Exactly one, for a while: the others stay candidates.
	for range 20 {
		if cur := l.current(); len(cur) != 1 {
			t.Fatalf("leaders: %v", cur)
		}
		time.Sleep(10 * time.Millisecond) // sampling, not synchronisation
	}
	eventually(t, 5*time.Second, "others see the leader's platforms", func() bool {
		for _, n := range nodes[first].Nodes() {
			if n.ID == first && slices.Equal(n.Platforms, []string{"P"}) {
				return true
			}
		}
		return false
	})

	// The leader leaves: its run ends, another takes over within the TTL.
	nodes[first].Close()
	if l.endedCount(first) != 1 {
		t.Fatalf("leader's run not ended by Close")
	}
	var second string
	eventually(t, testTTL+time.Second, "another leader", func() bool {
		cur := l.current()
		if len(cur) != 1 || cur[0] == first {
			return false
		}
		second = cur[0]
		return true
	})
	for id, n := range nodes {
		if id == first {
			continue
		}
		eventually(t, 5*time.Second, id+" sees the new leader", func() bool {
			got, ok := n.Leader("P")
			return ok && got == second
		})
	}

	// The new leader crashes: the third takes over when its lease expires.
	nodes[second].crash()
	eventually(t, testTTL+3*time.Second, "third leader", func() bool {
		cur := l.current()
		return len(cur) == 1 && cur[0] != first && cur[0] != second
	})
}

func TestEtcdRestartResyncs(t *testing.T) {
	etcd := etcdtest.Start(t)
	a := openNode(t, etcd.Endpoint(), "a", testTTL)
	b := openNode(t, etcd.Endpoint(), "b", testTTL)
	l := &leader{running: map[string]bool{}, ended: map[string]int{}}
	a.Lead(context.Background(), "P", l.run("a"))
	a.ClaimDevice("d1")
	a.SetChannels("d1", []ChannelRecord{{ID: "c1", Name: "one"}})
	b.ClaimDevice("d2")
	eventually(t, 5*time.Second, "b sees a's device, channel and leadership, a sees b and its device", func() bool {
		_, node, ok := b.ChannelOwner("c1")
		leader, _ := b.Leader("P")
		return owner(b, "d1") == "a" && ok && node == "a" && leader == "a" && owner(a, "d2") == "b" && len(a.Nodes()) == 2
	})

	etcd.Stop()
	// Reads are served from the cache while etcd is away.
	eventually(t, 5*time.Second, "etcd seen down", func() bool { return !a.EtcdUp() && !b.EtcdUp() })
	if owner(b, "d1") != "a" || owner(a, "d2") != "b" || len(b.Channels()) != 1 || len(a.Nodes()) != 2 {
		t.Fatalf("cache not served while etcd is down: d1 %q d2 %q channels %d nodes %v", owner(b, "d1"), owner(a, "d2"), len(b.Channels()), nodeIDs(a))
	}
	if a.Errors() == 0 {
		t.Fatal("no etcd error counted")
	}
	// A registration while etcd is away is answered locally and written later.
	a.ClaimDevice("d3")
	if owner(a, "d3") != "a" {
		t.Fatal("claim while etcd is down not answered locally")
	}
	// Past the TTL the leases are lost: the leader's run is cancelled.
	eventually(t, testTTL+3*time.Second, "leadership lost with the lease", func() bool {
		return len(l.current()) == 0 && l.endedCount("a") == 1 && a.session() == nil && b.session() == nil
	})

	etcd.Start()
	eventually(t, 15*time.Second, "everything back after the restart", func() bool {
		_, node, ok := b.ChannelOwner("c1")
		leader, _ := b.Leader("P")
		return a.EtcdUp() && b.EtcdUp() && owner(b, "d1") == "a" && owner(b, "d3") == "a" && owner(a, "d2") == "b" &&
			ok && node == "a" && leader == "a" && len(l.current()) == 1 && slices.Equal(nodeIDs(b), []string{"a", "b"})
	})
	syncNode(t, a)
	syncNode(t, b)
	// The old leases are revoked once resynced: etcd holds one per node and
	// every record survives their end.
	raw := rawClient(t, etcd)
	eventually(t, 10*time.Second, "old leases gone", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := raw.Leases(ctx)
		return err == nil && len(resp.Leases) == 2
	})
	for key, want := range map[string]string{devicesPrefix + "d1": "a", devicesPrefix + "d2": "b", devicesPrefix + "d3": "a"} {
		if got := rawGet(t, raw, key); got != want {
			t.Fatalf("%s = %q after resync, want %q", key, got, want)
		}
	}
	if rawGet(t, raw, channelsPrefix+"d1/c1") == "" || rawGet(t, raw, nodesPrefix+"a") == "" {
		t.Fatal("channel or node record lost")
	}
}

func TestOpenWithEtcdDownJoinsLater(t *testing.T) {
	etcd := etcdtest.Start(t)
	etcd.Stop()
	reg := metrics.New()
	start := time.Now()
	c, err := Open(context.Background(), Config{
		Endpoints: []string{etcd.Endpoint()}, NodeID: "a", Advertise: "127.0.0.1:5060", TTL: testTTL,
		StartTimeout: 300 * time.Millisecond, Metrics: reg,
	}, zerolog.New(zerolog.NewTestWriter(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if waited := time.Since(start); waited > 3*time.Second {
		t.Fatalf("Open blocked %s with etcd down", waited)
	}
	if c.EtcdUp() || !slices.Equal(nodeIDs(c), []string{"a"}) {
		t.Fatalf("up %v nodes %v", c.EtcdUp(), nodeIDs(c))
	}
	c.ClaimDevice("d1")
	c.SetChannels("d1", []ChannelRecord{{ID: "c1", Name: "one"}})
	if got := c.Place("d1").ID; got != "a" {
		t.Fatalf("placed at %s", got)
	}
	if dev, node, ok := c.ChannelOwner("c1"); !ok || dev != "d1" || node != "a" || len(c.Channels()) != 1 {
		t.Fatalf("own channel not served before etcd has it: %q %q %v %v", dev, node, ok, c.Channels())
	}

	etcd.Start()
	raw := rawClient(t, etcd)
	eventually(t, 15*time.Second, "joined and claim written", func() bool {
		return c.EtcdUp() && rawGet(t, raw, devicesPrefix+"d1") == "a" && rawGet(t, raw, nodesPrefix+"a") != "" &&
			rawGet(t, raw, channelsPrefix+"d1/c1") != ""
	})
	if reg.Value("gbproxy_cluster_etcd_errors_total") == 0 || reg.Value("gbproxy_cluster_etcd_writes_total") == 0 {
		t.Fatal("etcd errors or writes not counted in metrics")
	}
}

func TestConfigErrors(t *testing.T) {
	log := zerolog.Nop()
	for _, cfg := range []Config{
		{NodeID: "a", Advertise: "127.0.0.1:5060"},
		{Endpoints: []string{"127.0.0.1:2379"}, Advertise: "127.0.0.1:5060"},
		{Endpoints: []string{"127.0.0.1:2379"}, NodeID: "a", Advertise: "127.0.0.1"},
		{Endpoints: []string{"127.0.0.1:2379"}, NodeID: "a", Advertise: "127.0.0.1:5060", TTL: time.Second},
	} {
		if c, err := Open(context.Background(), cfg, log); err == nil {
			c.Close()
			t.Errorf("%+v accepted", cfg)
		}
	}
}

// BenchmarkClaimDevice measures etcd writes per new registration: one at a
// time (each claim written before the next), and a burst the writer batches.
func BenchmarkClaimDevice(b *testing.B) {
	etcd := etcdtest.Start(b)
	c := openNode(b, etcd.Endpoint(), "a", testTTL)
	for _, burst := range []bool{false, true} {
		b.Run(map[bool]string{false: "each", true: "burst"}[burst], func(b *testing.B) {
			w := c.Writes()
			for i := range b.N {
				c.ClaimDevice(fmt.Sprintf("%v-%d", burst, i))
				if !burst {
					syncNode(b, c)
				}
			}
			syncNode(b, c)
			b.ReportMetric(float64(c.Writes()-w)/float64(b.N), "writes/claim")
		})
	}
}

func TestCloseWithEtcdDown(t *testing.T) {
	etcd := etcdtest.Start(t)
	a := openNode(t, etcd.Endpoint(), "a", testTTL)
	b := openNode(t, etcd.Endpoint(), "b", testTTL)
	l := &leader{running: map[string]bool{}, ended: map[string]int{}}
	a.Lead(context.Background(), "P", l.run("a"))
	b.Lead(context.Background(), "P", l.run("b")) // one leads, the other waits in its campaign
	eventually(t, 5*time.Second, "one leads", func() bool { return len(l.current()) == 1 })
	etcd.Stop()
	for _, n := range []*Cluster{a, b} {
		done := make(chan struct{})
		go func() { n.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Fatalf("%s: Close hangs with etcd down", n.cfg.NodeID)
		}
	}
	if len(l.current()) != 0 {
		t.Fatalf("run still going after Close: %v", l.current())
	}
}

// changeLog collects what OnChannelsChanged reports, as "+id", "~id:old>new"
// (status) and "-id".
type changeLog struct {
	mu  sync.Mutex
	got []string
}

func (l *changeLog) record(chs []ChannelChange) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ch := range chs {
		switch {
		case ch.Old == nil:
			l.got = append(l.got, "+"+ch.New.ID)
		case ch.New == nil:
			l.got = append(l.got, "-"+ch.Old.ID)
		default:
			l.got = append(l.got, "~"+ch.New.ID+":"+ch.Old.Status+">"+ch.New.Status)
		}
	}
}

func (l *changeLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.got
	l.got = nil
	slices.Sort(out)
	return out
}

func TestChannelLookupAndChanges(t *testing.T) {
	etcd := etcdtest.Start(t)
	a := openNode(t, etcd.Endpoint(), "a", testTTL)
	b := openNode(t, etcd.Endpoint(), "b", testTTL)
	var log changeLog
	b.OnChannelsChanged(log.record)
	a.ClaimDevice("dev")
	a.SetChannels("dev", []ChannelRecord{{ID: "ch1", Name: "gate", Status: "ON"}, {ID: "grp", Name: "group"}})
	if r, ok := a.Channel("dev", "ch1"); !ok || r.Name != "gate" || r.Node != "a" {
		t.Fatalf("a.Channel(dev, ch1) = %+v %v: own channels answer before etcd has them", r, ok)
	}
	eventually(t, 5*time.Second, "b sees both channels appear", func() bool {
		return slices.Equal(log.take(), []string{"+ch1", "+grp"})
	})
	if r, ok := b.Channel("dev", "ch1"); !ok || r.Name != "gate" || r.Node != "a" || r.DeviceID != "dev" {
		t.Fatalf("b.Channel(dev, ch1) = %+v %v", r, ok)
	}
	if _, ok := b.Channel("other", "ch1"); ok {
		t.Fatal("a channel is found under a device it is not of")
	}

	a.SetChannels("dev", []ChannelRecord{{ID: "ch1", Name: "gate", Status: "OFF"}, {ID: "grp", Name: "group"}})
	var got []string
	eventually(t, 5*time.Second, "b sees ch1's status change, nothing else", func() bool {
		got = append(got, log.take()...)
		return len(got) > 0
	})
	if !slices.Equal(got, []string{"~ch1:ON>OFF"}) {
		t.Fatalf("changes %v, want only ch1 ON>OFF", got)
	}
	a.SetChannels("dev", nil)
	eventually(t, 5*time.Second, "b sees both channels go", func() bool {
		return slices.Equal(log.take(), []string{"-ch1", "-grp"})
	})
	if _, ok := b.Channel("dev", "ch1"); ok {
		t.Fatal("removed channel still found")
	}
}
