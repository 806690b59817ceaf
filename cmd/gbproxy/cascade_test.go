package main

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
)

// The cascade under test: two devices below, two upper platforms above with
// different sharing, mappings and charsets.
const (
	upperA    = "44010000002000000001" // UDP, GB2312: devUDP whole + one tree camera, mapped
	upperB    = "44020000002000000001" // TCP, UTF-8: everything, one camera mapped
	devUDP    = "34020000001320000001" // an IPC over UDP, GB2312 bodies
	platTCP   = "34020000002000000002" // a lower platform over TCP with a tree, UTF-8 bodies
	mappedA   = "44010000001310000001" // what upperA calls devUDP's first channel
	mappedB   = "44020000001310000009" // what upperB calls the platform's first camera
	udpChans  = 3
	treeGroup = 2
	treeCams  = 2
)

type cascadeRig struct {
	proxy      *testProxy
	a, b       *sim.Upper
	dev, plat  *sim.Device
	devChans   []sim.Channel
	tree       []sim.Channel
	treeCamera []string // camera IDs of the platform, in tree order
}

func twoUpperYAML(addrA, addrB, devChan, treeCam string) string {
	return fmt.Sprintf(`
lower:
  listen: "127.0.0.1:0"
  keepalive_interval: 300ms
  keepalive_timeout_count: 2
  catalog_timeout: 2s
  query_timeout: 1s
upper:
  listen: "127.0.0.1:0"
  platforms:
    - id: %[1]q
      address: %[2]q
      transport: udp
      password: %[5]q
      keepalive_interval: 300ms
      retry_interval: 300ms
      charset: gb2312
      share:
        devices: [%[6]q]
        channels: [%[8]q]
        map: {%[7]q: %[9]q}
    - id: %[3]q
      address: %[4]q
      transport: tcp
      password: %[5]q
      keepalive_interval: 300ms
      retry_interval: 300ms
      charset: utf-8
      share:
        map: {%[8]q: %[10]q}
`, upperA, addrA, upperB, addrB, upperPass, devUDP, devChan, treeCam, mappedA, mappedB)
}

func newCascadeRig(t *testing.T) *cascadeRig {
	t.Helper()
	r := &cascadeRig{}
	// QuietPeriod above query_timeout: a silent device must earn an ERROR, not silence.
	r.a = newUpper(t, "127.0.0.1:0", func(c *sim.UpperConfig) { c.ID, c.Domain, c.QuietPeriod = upperA, upperA[:10], 2*time.Second })
	r.b = newUpper(t, "127.0.0.1:0", func(c *sim.UpperConfig) { c.ID, c.Domain, c.QuietPeriod = upperB, upperB[:10], 2*time.Second })
	r.devChans = sim.MakeChannels(devUDP, udpChans)
	r.tree = sim.MakeTree(platTCP, "340201", treeGroup, treeCams)
	for _, ch := range r.tree {
		if ch.Status != "" {
			r.treeCamera = append(r.treeCamera, ch.ID)
		}
	}
	r.proxy = startProxy(t, "", twoUpperYAML(r.a.Addr(), r.b.Addr(), r.devChans[0].ID, r.treeCamera[0]))
	r.dev = newDevice(t, r.proxy, devUDP, "udp", 0, func(c *sim.DeviceConfig) {
		c.Channels = r.devChans
		c.Charset = sim.CharsetGB2312
		c.NoAnswer = map[string]bool{"ConfigDownload": true}
	})
	r.plat = newDevice(t, r.proxy, platTCP, "tcp", 0, func(c *sim.DeviceConfig) {
		c.Channels = r.tree
		c.Charset = sim.CharsetUTF8
		c.CatalogPerMessage = 4
		c.GBVersion = "2.0"
	})
	ctx := ctxTimeout(t, 10*time.Second)
	for _, d := range []*sim.Device{r.dev, r.plat} {
		if err := d.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "both catalogs stored", func() bool {
		return len(r.proxy.channels(devUDP)) == udpChans && len(r.proxy.channels(platTCP)) == len(r.tree)
	})
	for _, u := range []*sim.Upper{r.a, r.b} {
		if _, err := u.WaitRegistered(ctx, proxyID); err != nil {
			t.Fatal(err)
		}
	}
	// The upper knows before the proxy has read its 200 OK.
	eventually(t, 5*time.Second, "proxy registered to both uppers", func() bool {
		return r.proxy.platform(upperA).Registered && r.proxy.platform(upperB).Registered
	})
	return r
}

func catalogIDs(items []sim.CatalogItem) []string {
	var ids []string
	for _, it := range items {
		ids = append(ids, it.DeviceID)
	}
	slices.Sort(ids)
	return ids
}

func TestCascadeCatalogPerUpper(t *testing.T) {
	r := newCascadeRig(t)
	ctx := ctxTimeout(t, 10*time.Second)

	items, sum, err := r.a.QueryCatalog(ctx, proxyID)
	if err != nil {
		t.Fatal(err)
	}
	wantA := []string{mappedA, r.devChans[1].ID, r.devChans[2].ID, r.treeCamera[0]}
	slices.Sort(wantA)
	if got := catalogIDs(items); !slices.Equal(got, wantA) || sum != len(wantA) {
		t.Fatalf("upper A sees %v (SumNum %d), want exactly %v", got, sum, wantA)
	}
	for _, it := range items {
		if it.DeviceID == mappedA && it.Name != r.devChans[0].Name {
			t.Fatalf("Chinese name garbled on the way to a GB2312 upper: %q, want %q", it.Name, r.devChans[0].Name)
		}
		if it.ParentID != proxyID {
			t.Fatalf("upper A cannot see %s's parent, so it must hang under the proxy: %+v", it.DeviceID, it)
		}
	}

	items, sum, err = r.b.QueryCatalog(ctx, proxyID)
	if err != nil {
		t.Fatal(err)
	}
	if want := udpChans + len(r.tree); len(items) != want || sum != want {
		t.Fatalf("upper B shares all: got %d items (SumNum %d), want %d", len(items), sum, want)
	}
	byID := map[string]sim.CatalogItem{}
	for _, it := range items {
		byID[it.DeviceID] = it
	}
	if _, leaked := byID[r.treeCamera[0]]; leaked {
		t.Fatal("upper B saw a mapped camera under its local ID")
	}
	cam := byID[mappedB]
	for _, ch := range r.tree {
		if ch.ID == r.treeCamera[0] && cam.Name != ch.Name {
			t.Fatalf("mapped camera's name from a UTF-8 platform to a UTF-8 upper: %q, want %q", cam.Name, ch.Name)
		}
	}
	if vo, ok := byID[cam.ParentID]; !ok || !strings.HasPrefix(vo.Name, "虚拟组织") {
		t.Fatalf("camera's parent must be its virtual organisation, seen by B: %+v (parent %+v)", cam, vo)
	}
	if _, ok := byID[cam.BusinessGroupID]; !ok {
		t.Fatalf("camera's business group must be in B's catalog: %+v", cam)
	}

	// The API shows who sees what under which ID.
	var chans []struct {
		ID       string            `json:"id"`
		SharedTo map[string]string `json:"shared_to"`
	}
	r.proxy.api("/api/v1/channels", &chans)
	for _, c := range chans {
		if c.ID == r.devChans[0].ID && (c.SharedTo[upperA] != mappedA || c.SharedTo[upperB] != c.ID) {
			t.Fatalf("shared_to of %s: %v", c.ID, c.SharedTo)
		}
		if c.ID == r.treeCamera[1] && len(c.SharedTo) != 1 {
			t.Fatalf("%s is shared with B only: %v", c.ID, c.SharedTo)
		}
	}
	var plats []struct {
		ID             string `json:"id"`
		SharedChannels int    `json:"shared_channels"`
		Negotiated     string `json:"negotiated_version"`
		GBVersion      string `json:"gb_version"`
	}
	var devs []struct {
		ID        string `json:"id"`
		GBVersion string `json:"gb_version"`
	}
	r.proxy.api("/api/v1/devices", &devs)
	for _, d := range devs {
		if want := map[string]string{devUDP: "", platTCP: "2.0"}[d.ID]; d.GBVersion != want {
			t.Fatalf("X-GB-Ver of %s recorded as %q, want %q", d.ID, d.GBVersion, want)
		}
	}
	r.proxy.api("/api/v1/platforms", &plats)
	if plats[0].SharedChannels != len(wantA) || plats[0].GBVersion != "3.0" || plats[0].Negotiated != "3.0" {
		t.Fatalf("platform A state: %+v", plats[0])
	}
}

func TestCascadeRoutedQueriesKeepSNAndIDs(t *testing.T) {
	r := newCascadeRig(t)
	ctx := ctxTimeout(t, 20*time.Second)

	check := func(who string, ans sim.Answer, err error, wantID string, wantBodies int) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", who, err)
		}
		if ans.Status != 200 || !ans.Complete || len(ans.Bodies) < wantBodies {
			t.Fatalf("%s: status %d complete %v bodies %d: %+v", who, ans.Status, ans.Complete, len(ans.Bodies), ans)
		}
		for _, b := range ans.Bodies {
			if b.SN != ans.SN || b.DeviceID != wantID || b.Err != nil {
				t.Fatalf("%s: answer carries SN %d DeviceID %s (want %d %s), err %v", who, b.SN, b.DeviceID, ans.SN, wantID, b.Err)
			}
		}
	}

	ans, err := r.a.Request(ctx, proxyID, "Query", "DeviceInfo", devUDP)
	check("DeviceInfo via A", ans, err, devUDP, 1)
	ans, err = r.b.Request(ctx, proxyID, "Query", "DeviceStatus", platTCP)
	check("DeviceStatus via B over TCP", ans, err, platTCP, 1)

	ans, err = r.a.Request(ctx, proxyID, "Query", "RecordInfo", mappedA,
		sim.Field{Name: "StartTime", Value: "2026-11-24T00:00:00"}, sim.Field{Name: "EndTime", Value: "2026-11-24T12:00:00"},
		sim.Field{Name: "Type", Value: "all"})
	check("RecordInfo via A to a mapped channel", ans, err, mappedA, 2)
	if ans.Items() != 5 || ans.Bodies[0].SumNum != 5 {
		t.Fatalf("RecordInfo: %d items, SumNum %d, want 5", ans.Items(), ans.Bodies[0].SumNum)
	}
	if rec, err := r.dev.WaitRequest(ctx, "MESSAGE", "RecordInfo"); err != nil || rec.DeviceID != r.devChans[0].ID || rec.SN == ans.SN {
		t.Fatalf("the device must see its own channel ID and the proxy's SN: %+v %v", rec, err)
	}
	ans, err = r.b.Request(ctx, proxyID, "Query", "PresetQuery", mappedB)
	check("PresetQuery via B to a mapped camera of a lower platform", ans, err, mappedB, 1)

	// Concurrent identical SNs from both uppers must not cross.
	type result struct {
		ans sim.Answer
		err error
	}
	ra, rb := make(chan result), make(chan result)
	go func() {
		a, err := r.a.Request(ctx, proxyID, "Query", "DeviceStatus", devUDP)
		ra <- result{a, err}
	}()
	go func() {
		b, err := r.b.Request(ctx, proxyID, "Query", "DeviceStatus", devUDP)
		rb <- result{b, err}
	}()
	x, y := <-ra, <-rb
	check("concurrent DeviceStatus via A", x.ans, x.err, devUDP, 1)
	check("concurrent DeviceStatus via B", y.ans, y.err, devUDP, 1)

	// Controls: PTZ reaches the device under its local ID; a bad checksum is refused at the proxy.
	ptz := sim.PTZCmd(0, 0x08, 0x00, 0x80, 0x0) // up
	ans, err = r.a.Request(ctx, proxyID, "Control", "DeviceControl", mappedA, sim.Field{Name: "PTZCmd", Value: ptz})
	if err != nil || ans.Status != 200 {
		t.Fatalf("PTZ via A: %+v %v", ans, err)
	}
	ctl, err := r.dev.WaitControl(ctx, "PTZCmd")
	if err != nil || ctl.Value != ptz || ctl.DeviceID != r.devChans[0].ID || ctl.Err != nil {
		t.Fatalf("PTZ at the device: %+v %v", ctl, err)
	}
	bad := ptz[:14] + "00"
	if ans, _ = r.a.Request(ctx, proxyID, "Control", "DeviceControl", mappedA, sim.Field{Name: "PTZCmd", Value: bad}); ans.Status != 400 {
		t.Fatalf("a PTZCmd with a bad checksum must be refused with 400, got %d", ans.Status)
	}
	ans, err = r.a.Request(ctx, proxyID, "Control", "DeviceControl", mappedA, sim.Field{Name: "RecordCmd", Value: "Record"})
	check("RecordCmd via A", ans, err, mappedA, 1)
	if ans.Bodies[0].Result != "OK" {
		t.Fatalf("RecordCmd result relayed: %+v", ans.Bodies[0])
	}
	ans, err = r.b.Request(ctx, proxyID, "Control", "DeviceControl", platTCP, sim.Field{Name: "GuardCmd", Value: "SetGuard"})
	check("GuardCmd via B", ans, err, platTCP, 1)

	// Refusals: unshared, unknown, silent device.
	if ans, _ = r.a.Request(ctx, proxyID, "Query", "DeviceInfo", platTCP); ans.Status != 404 {
		t.Fatalf("a device not shared with A must be 404 to A, got %d", ans.Status)
	}
	if ans, _ = r.a.Request(ctx, proxyID, "Query", "DeviceInfo", r.devChans[0].ID); ans.Status != 404 {
		t.Fatalf("a mapped channel must not answer under its local ID, got %d", ans.Status)
	}
	ans, err = r.a.Request(ctx, proxyID, "Query", "ConfigDownload", devUDP, sim.Field{Name: "ConfigType", Value: "BasicParam"})
	if err != nil || ans.Status != 200 || len(ans.Bodies) != 1 || ans.Bodies[0].Result != "ERROR" || ans.Bodies[0].SN != ans.SN {
		t.Fatalf("a device that never answers must earn the upper a Result ERROR: %+v %v", ans, err)
	}

	// The proxy itself answers for its own ID.
	ans, err = r.b.Request(ctx, proxyID, "Query", "DeviceInfo", proxyID)
	check("DeviceInfo of the proxy", ans, err, proxyID, 1)

	// Latency histograms: A's answered routed requests (DeviceInfo,
	// RecordInfo, DeviceStatus, RecordCmd; not the PTZ, which has no answer,
	// nor the timed-out ConfigDownload) and both uppers' registrations;
	// beside them the process and Go runtime series.
	s := scrapeSeries(t, "http://"+r.proxy.httpLn.Addr().String()+"/metrics")
	if n := s[`gbproxy_routed_query_seconds_count{platform="`+upperA+`"}`]; n != 4 {
		t.Errorf("gbproxy_routed_query_seconds_count for A = %v, want 4", n)
	}
	for _, id := range []string{upperA, upperB} {
		if n := s[`gbproxy_upper_registration_seconds_count{platform="`+id+`"}`]; n < 1 {
			t.Errorf("gbproxy_upper_registration_seconds_count for %s = %v, want at least 1", id, n)
		}
	}
	for _, name := range []string{"process_resident_memory_bytes", "process_open_fds", "go_goroutines"} {
		if s[name] <= 0 {
			t.Errorf("%s = %v in /metrics, want > 0", name, s[name])
		}
	}
}

func TestCascadeAlarmReachesSharingUppers(t *testing.T) {
	r := newCascadeRig(t)
	ctx := ctxTimeout(t, 10*time.Second)
	sn, err := r.dev.SendAlarm(ctx, sim.AlarmConfig{ChannelID: r.devChans[0].ID, Priority: 1, Method: 5, Type: 2, Description: "越界"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.dev.WaitAlarmAck(ctx, sn); err != nil {
		t.Fatalf("the device must get Response Result OK for its alarm: %v", err)
	}
	if got, err := r.a.WaitAlarm(ctx, mappedA); err != nil || got.DeviceID != mappedA {
		t.Fatalf("upper A must get the alarm under its ID: %+v %v", got, err)
	}
	if got, err := r.b.WaitAlarm(ctx, r.devChans[0].ID); err != nil {
		t.Fatalf("upper B (shares all) must get the alarm: %+v %v", got, err)
	}
	// A camera of the platform that A does not see: only B hears of it.
	if _, err := r.plat.SendAlarm(ctx, sim.AlarmConfig{ChannelID: r.treeCamera[1]}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.b.WaitAlarm(ctx, r.treeCamera[1]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	for _, al := range r.a.Alarms() {
		if al.DeviceID == r.treeCamera[1] {
			t.Fatal("an alarm of a channel not shared with A reached A")
		}
	}
	// Alarm reset travels down as a control with an answer.
	ans, err := r.a.Request(ctx, proxyID, "Control", "DeviceControl", mappedA, sim.Field{Name: "AlarmCmd", Value: "ResetAlarm"})
	if err != nil || ans.Status != 200 || len(ans.Bodies) != 1 || ans.Bodies[0].Result != "OK" {
		t.Fatalf("alarm reset: %+v %v", ans, err)
	}
}

func TestCascadeSubscriptions(t *testing.T) {
	r := newCascadeRig(t)
	ctx := ctxTimeout(t, 15*time.Second)
	subA, err := r.a.Subscribe(ctx, proxyID, "Catalog", proxyID, 600)
	if err != nil {
		t.Fatal(err)
	}
	subB, err := r.b.Subscribe(ctx, proxyID, "Catalog", proxyID, 600)
	if err != nil {
		t.Fatal(err)
	}
	if subA.Expires() != 600 {
		t.Fatalf("granted Expires %d", subA.Expires())
	}
	// Two uppers, one subscription per device.
	for _, d := range []*sim.Device{r.dev, r.plat} {
		if _, err := d.WaitSubscriptions(ctx, func(s []sim.SubscriptionInfo) bool { return len(s) >= 1 }); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if subs := d.Subscriptions(); len(subs) != 1 || subs[0].CmdType != "Catalog" {
			t.Fatalf("device must be subscribed once, whatever the number of uppers: %+v", subs)
		}
	}

	// A status change at the device reaches both uppers, each under its IDs.
	if err := r.dev.SetChannelStatus(ctx, r.devChans[0].ID, "OFF"); err != nil {
		t.Fatal(err)
	}
	waitEvent := func(s *sim.Subscription, id, event string) {
		t.Helper()
		_, err := s.WaitNotify(ctx, func(body []byte) bool {
			return strings.Contains(string(body), id) && strings.Contains(string(body), "<Event>"+event+"</Event>")
		})
		if err != nil {
			t.Fatalf("NOTIFY %s %s: %v (got %d NOTIFYs)", id, event, err, len(s.Notifies()))
		}
	}
	waitEvent(subA, mappedA, "OFF")
	waitEvent(subB, r.devChans[0].ID, "OFF")

	// The platform's camera that only B sees.
	if err := r.plat.SetChannelStatus(ctx, r.treeCamera[1], "VLOST"); err != nil {
		t.Fatal(err)
	}
	waitEvent(subB, r.treeCamera[1], "VLOST")
	for _, n := range subA.Notifies() {
		if strings.Contains(string(n.Body), r.treeCamera[1]) {
			t.Fatal("A was notified about a channel it does not see")
		}
	}

	// The device going away turns its channels OFF at the uppers within seconds.
	r.plat.Close()
	waitEvent(subB, mappedB, "OFF")

	// Both unsubscribe: the device subscription ends too.
	if err := subA.Unsubscribe(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if subs := r.dev.Subscriptions(); len(subs) != 1 {
		t.Fatalf("B still needs the device subscription: %+v", subs)
	}
	if err := subB.Unsubscribe(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.dev.WaitSubscriptions(ctx, func(s []sim.SubscriptionInfo) bool { return len(s) == 0 }); err != nil {
		t.Fatalf("the device subscription must end with its last upper: %v", err)
	}
}

// The share API changes what an upper sees and tells its subscribers.
func TestCascadeShareAPI(t *testing.T) {
	r := newCascadeRig(t)
	ctx := ctxTimeout(t, 10*time.Second)
	sub, err := r.a.Subscribe(ctx, proxyID, "Catalog", proxyID, 600)
	if err != nil {
		t.Fatal(err)
	}
	status, body := r.proxy.do("PUT", "/api/v1/platforms/"+upperA+"/share", `{"channels":["`+r.treeCamera[1]+`"],"map":{"`+r.treeCamera[1]+`":"44010000001310000002"}}`)
	if status != 200 {
		t.Fatalf("PUT share: %d %s", status, body)
	}
	if _, err := sub.WaitNotify(ctx, func(b []byte) bool {
		return strings.Contains(string(b), "44010000001310000002") && strings.Contains(string(b), "<Event>ADD</Event>")
	}); err != nil {
		t.Fatal(err)
	}
	items, _, err := r.a.QueryCatalog(ctx, proxyID)
	if err != nil || len(items) != 1 || items[0].DeviceID != "44010000001310000002" {
		t.Fatalf("after PUT, A sees %v (%v)", catalogIDs(items), err)
	}
	if status, body = r.proxy.do("PUT", "/api/v1/platforms/"+upperA+"/share", `{"map":{"1":"2"}}`); status != 400 {
		t.Fatalf("invalid share must be 400: %d %s", status, body)
	}
	if status, _ = r.proxy.do("DELETE", "/api/v1/platforms/"+upperA+"/share", ""); status != 200 {
		t.Fatalf("DELETE share: %d", status)
	}
	items, _, _ = r.a.QueryCatalog(ctx, proxyID)
	if len(items) != 4 {
		t.Fatalf("after DELETE, A is back to its configured share: %v", catalogIDs(items))
	}
}

// 20,000 channels reach an upper platform over UDP, every one, with SumNum
// right in every MESSAGE and every datagram within 1300 bytes.
func TestCatalog20kOverUDP(t *testing.T) {
	if testing.Short() {
		t.Skip("20,000-channel transfer")
	}
	const n = 20000
	up := newUpper(t, "127.0.0.1:0", nil)
	p := startProxy(t, "", upperPlatformYAML(up.Addr(), "udp"))
	const devID = "34020000001320000001"
	// 200 items a MESSAGE: about 73 KB each, as some NVRs send over TCP.
	dev := newDevice(t, p, devID, "tcp", n, func(c *sim.DeviceConfig) { c.CatalogPerMessage = 200 })
	ctx := ctxTimeout(t, 90*time.Second)
	if err := dev.Start(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "20,000 channels stored", func() bool { return len(p.channels(devID)) == n })
	if _, err := up.WaitRegistered(ctx, proxyID); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	items, sum, err := up.QueryCatalog(ctx, proxyID)
	if err != nil {
		t.Fatalf("after %v: %d items: %v", time.Since(start), len(items), err)
	}
	t.Logf("20,000 channels over UDP in %v", time.Since(start))
	if sum != n || len(items) != n {
		t.Fatalf("SumNum %d, %d items, want %d", sum, len(items), n)
	}
	seen := map[string]bool{}
	for _, it := range items {
		seen[it.DeviceID] = true
	}
	if len(seen) != n {
		t.Fatalf("%d distinct channels of %d", len(seen), n)
	}
	messages := 0
	for _, r := range up.Requests() {
		if r.CmdType != "Catalog" || r.Root != "Response" {
			continue
		}
		messages++
		if size := len(r.Request.String()); size > 1300 {
			t.Fatalf("a catalog datagram of %d bytes", size)
		}
		if !strings.Contains(string(r.Body), "<SumNum>20000</SumNum>") {
			t.Fatalf("a catalog MESSAGE without SumNum 20000: %.300s", r.Body)
		}
	}
	t.Logf("%d MESSAGEs", messages)
}

// refreshYAML is the test lower side with a catalog refresh every 500 ms.
const refreshYAML = `
lower:
  listen: "127.0.0.1:0"
  keepalive_interval: 300ms
  keepalive_timeout_count: 2
  catalog_timeout: 2s
  catalog_refresh_interval: 500ms
`

// proxyAsUpperYAML makes a proxy with its own ID whose one upper platform is
// another proxy's lower side.
func proxyAsUpperYAML(id, upperID, upperAddr string) string {
	return fmt.Sprintf(`
id: %q
domain: %q
upper:
  listen: "127.0.0.1:0"
  platforms:
    - id: %q
      address: %q
      transport: tcp
      password: %q
      keepalive_interval: 300ms
      retry_interval: 300ms
`, id, id[:10], upperID, upperAddr, devicePass)
}

// upper platform <- top proxy <- middle proxy <- device: catalog, queries
// and controls three levels deep.
func TestThreeLevelCascade(t *testing.T) {
	const midID, camID = "34020100002000000001", "34020100001320000001"
	up := newUpper(t, "127.0.0.1:0", func(c *sim.UpperConfig) { c.QuietPeriod = 2 * time.Second })
	// The middle proxy may register before its camera did: the top one
	// learns the camera's channels at its next catalog refresh.
	top := startProxy(t, "", upperPlatformYAML(up.Addr(), "udp")+refreshYAML)
	mid := startProxy(t, "", proxyAsUpperYAML(midID, proxyID, top.lowerAddr()))
	cam := newDevice(t, mid, camID, "udp", 2, func(c *sim.DeviceConfig) { c.ServerID, c.Domain = midID, midID[:10] })
	ctx := ctxTimeout(t, 20*time.Second)
	if err := cam.Start(ctx); err != nil {
		t.Fatal(err)
	}
	chans := sim.MakeChannels(camID, 2)
	eventually(t, 5*time.Second, "the camera's channels reach the top proxy through the middle one", func() bool {
		return len(top.channels(midID)) == 2
	})
	if _, err := up.WaitRegistered(ctx, proxyID); err != nil {
		t.Fatal(err)
	}
	items, _, err := up.QueryCatalog(ctx, proxyID)
	if err != nil || len(items) != 2 || catalogIDs(items)[0] != chans[0].ID {
		t.Fatalf("catalog three levels up: %v %v", catalogIDs(items), err)
	}
	ans, err := up.Request(ctx, proxyID, "Query", "RecordInfo", chans[1].ID,
		sim.Field{Name: "StartTime", Value: "2026-11-24T00:00:00"}, sim.Field{Name: "EndTime", Value: "2026-11-24T06:00:00"})
	if err != nil || ans.Status != 200 || !ans.Complete || ans.Items() != 5 {
		t.Fatalf("RecordInfo three levels deep: %+v %v", ans, err)
	}
	for _, b := range ans.Bodies {
		if b.SN != ans.SN || b.DeviceID != chans[1].ID {
			t.Fatalf("answer three levels up carries SN %d DeviceID %s", b.SN, b.DeviceID)
		}
	}
	ptz := sim.PTZCmd(1, 0x02, 0x80, 0, 0)
	if ans, err = up.Request(ctx, proxyID, "Control", "DeviceControl", chans[1].ID, sim.Field{Name: "PTZCmd", Value: ptz}); err != nil || ans.Status != 200 {
		t.Fatalf("PTZ three levels deep: %+v %v", ans, err)
	}
	if ctl, err := cam.WaitControl(ctx, "PTZCmd"); err != nil || ctl.Value != ptz || ctl.DeviceID != chans[1].ID {
		t.Fatalf("PTZ at the camera: %+v %v", ctl, err)
	}
	// Status three levels up: the camera goes away, the upper's subscription hears OFF.
	sub, err := up.Subscribe(ctx, proxyID, "Catalog", proxyID, 600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cam.WaitSubscriptions(ctx, func(s []sim.SubscriptionInfo) bool { return len(s) == 1 }); err != nil {
		t.Fatalf("the subscription must travel down to the camera: %v", err)
	}
	if err := cam.SetChannelStatus(ctx, chans[0].ID, "OFF"); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.WaitNotify(ctx, func(b []byte) bool { return strings.Contains(string(b), chans[0].ID) }); err != nil {
		t.Fatalf("a status change three levels down must reach the upper: %v", err)
	}
}

// Two proxies each the other's upper: neither sees its own channels come
// back, catalogs do not grow, and a routed query can't circle.
func TestCascadeLoopIsRefused(t *testing.T) {
	const bID = "34020100002000000001"
	aLower := freeAddr(t)
	b := startProxy(t, "", proxyAsUpperYAML(bID, proxyID, aLower)+refreshYAML)
	a := startProxy(t, "", proxyAsUpperYAML(proxyID, bID, b.lowerAddr())+strings.Replace(refreshYAML, "127.0.0.1:0", aLower, 1))
	cam := newDevice(t, a, "34020000001320000001", "udp", 3, nil)
	if err := cam.Start(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 8*time.Second, "B learns A's three channels", func() bool { return len(b.channels(proxyID)) == 3 })
	eventually(t, 5*time.Second, "A has B registered below it", func() bool { d, ok := a.device(bID); return ok && d.Online })
	time.Sleep(2 * time.Second) // several catalog refreshes in both directions
	var all []apiChannel
	a.api("/api/v1/channels", &all)
	if len(all) != 3 {
		t.Fatalf("A must hold exactly its camera's 3 channels, got %d: %+v", len(all), all)
	}
	if len(b.channels(proxyID)) != 3 {
		t.Fatalf("B's copy must not grow: %d", len(b.channels(proxyID)))
	}
}

// freeAddr finds a port free for both UDP and TCP on 127.0.0.1.

// Malformed requests from an upper platform get a clear SIP error, and the
// cascade keeps working.
func TestCascadeMalformedFromUpper(t *testing.T) {
	r := newCascadeRig(t)
	conn, err := net.Dial("udp", r.proxy.cascade.UpperAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	local := conn.LocalAddr().String()
	send := func(method, callID, body string) string {
		t.Helper()
		msg := method + " sip:" + proxyID + "@" + proxyDomain + " SIP/2.0\r\n" +
			"Via: SIP/2.0/UDP " + local + ";rport;branch=z9hG4bK-" + callID + "\r\n" +
			"From: <sip:" + upperA + "@" + upperA[:10] + ">;tag=1\r\n" +
			"To: <sip:" + proxyID + "@" + proxyDomain + ">\r\n" +
			"Call-ID: " + callID + "\r\nCSeq: 1 " + method + "\r\nMax-Forwards: 70\r\nEvent: Catalog\r\nExpires: 60\r\n" +
			"Content-Type: Application/MANSCDP+xml\r\n" +
			"Content-Length: " + itoa(len(body)) + "\r\n\r\n" + body
		conn.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := conn.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return ""
			}
			if res := string(buf[:n]); !strings.HasPrefix(res, "SIP/2.0 1") {
				return firstLine(res)
			}
		}
	}
	cases := []struct{ method, body, want string }{
		{"MESSAGE", "<?xml version=\"1.0\"?><Query><CmdType>DeviceInfo</CmdType><SN>1<", "SIP/2.0 400 "},
		{"MESSAGE", "<Query><CmdType>DeviceInfo</CmdType><SN>x</SN><DeviceID>" + mappedA + "</DeviceID></Query>", "SIP/2.0 400 "},
		{"MESSAGE", "<Control><CmdType>DeviceControl</CmdType><SN>2</SN><DeviceID>" + mappedA + "</DeviceID><PTZCmd>A50F01</PTZCmd></Control>", "SIP/2.0 400 "},
		{"MESSAGE", "<Query><CmdType>DeviceInfo</CmdType><SN>3</SN><DeviceID>99999999999999999999</DeviceID></Query>", "SIP/2.0 404 "},
		{"SUBSCRIBE", "<Query><CmdType>Keepalive</CmdType><SN>4</SN><DeviceID>" + proxyID + "</DeviceID></Query>", "SIP/2.0 489 "},
		{"SUBSCRIBE", "not xml", "SIP/2.0 400 "},
	}
	for i, c := range cases {
		if got := send(c.method, fmt.Sprintf("bad-upper-%d", i), c.body); !strings.HasPrefix(got, c.want) {
			t.Errorf("%s %q: answered %q, want %q", c.method, c.body, got, c.want)
		}
	}
	ctx := ctxTimeout(t, 5*time.Second)
	if ans, err := r.a.Request(ctx, proxyID, "Query", "DeviceInfo", devUDP); err != nil || !ans.Complete {
		t.Fatalf("routing after malformed input: %+v %v", ans, err)
	}
	if st := r.proxy.platform(upperA); !st.Registered {
		t.Fatal("registration lost after malformed input")
	}
}
