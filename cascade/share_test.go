package cascade

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
	"github.com/gbproxy/gbproxy/configs"
	"github.com/gbproxy/gbproxy/store"
)

const (
	selfID   = "34020000002000000001"
	upperA   = "44010000002000000001"
	platform = "34020100002000000001" // a lower platform with a tree
	camera   = "34020000001320000001" // a device with two channels
)

func testRegistry(t *testing.T) *Registry {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r := newRegistry(st, zerolog.Nop(), selfID)
	now := time.Now()
	for _, id := range []string{platform, camera, upperA} {
		r.register(Device{ID: id, Transport: "UDP", Remote: "127.0.0.1:1", CallID: id, ExpiresAt: now.Add(time.Hour)})
	}
	// The lower platform's tree: business group -> virtual organisation -> cameras.
	r.setChannels(platform, []manscdp.CatalogItem{
		{DeviceID: "34020100002150000001", Name: "BG", ParentID: platform},
		{DeviceID: "34020100002160000001", Name: "VO", ParentID: "34020100002150000001", BusinessGroupID: "34020100002150000001"},
		{DeviceID: "34020100001310000001", Name: "cam-a", ParentID: "34020100002160000001", BusinessGroupID: "34020100002150000001", Status: "ON"},
		{DeviceID: "34020100001310000002", Name: "cam-b", ParentID: "34020100002150000001/34020100002160000001", Status: "OFF"},
	}, true, now)
	r.setChannels(camera, []manscdp.CatalogItem{
		{DeviceID: "34020000001320000007", Name: "gate", ParentID: camera, Status: "ON"},
		{DeviceID: "34020000001320000008", Name: "yard", ParentID: camera, Status: "ON"},
	}, true, now)
	r.setChannels(upperA, []manscdp.CatalogItem{{DeviceID: "44010000001310000099", Name: "theirs", ParentID: upperA}}, true, now)
	return r
}

func ids(items []manscdp.CatalogItem) map[string]manscdp.CatalogItem {
	m := map[string]manscdp.CatalogItem{}
	for _, it := range items {
		m[it.DeviceID] = it
	}
	return m
}

func TestShareAllKeepsTreeAndSplitHorizon(t *testing.T) {
	r := testRegistry(t)
	v := newShareView(configs.ShareConfig{}, upperA)
	got := ids(r.catalogFor(v))
	if len(got) != 6 {
		t.Fatalf("want 6 items (platform tree + camera, not the upper's own), got %d: %v", len(got), got)
	}
	if _, leaked := got["44010000001310000099"]; leaked {
		t.Fatal("channels of the upper platform itself were shared back to it")
	}
	if p := got["34020100001310000001"].ParentID; p != "34020100002160000001" {
		t.Fatalf("camera under a shared VO must keep it as parent, got %q", p)
	}
	if p := got["34020100001310000002"].ParentID; p != "34020100002160000001" {
		t.Fatalf("a ParentID path is reduced to its last element, got %q", p)
	}
	if p := got["34020000001320000007"].ParentID; p != selfID {
		t.Fatalf("a parent the upper can't see becomes the proxy, got %q", p)
	}
}

func TestShareListsGroupsAndMapping(t *testing.T) {
	r := testRegistry(t)
	v := newShareView(configs.ShareConfig{
		Channels: []string{"34020000001320000007"},
		Groups:   []string{"34020100002160000001"},
		Map:      map[string]string{"34020000001320000007": "44010000001310000001"},
		Names:    map[string]string{"34020000001320000007": "Gate (city)"},
	}, upperA)
	got := ids(r.catalogFor(v))
	want := []string{"44010000001310000001", "34020100002160000001", "34020100001310000001", "34020100001310000002"}
	if len(got) != len(want) {
		t.Fatalf("want %v, got %v", want, got)
	}
	for _, id := range want {
		if _, ok := got[id]; !ok {
			t.Fatalf("%s missing from %v", id, got)
		}
	}
	if it := got["44010000001310000001"]; it.Name != "Gate (city)" || it.ParentID != selfID {
		t.Fatalf("mapped channel: %+v", it)
	}
	if bg := got["34020100001310000001"].BusinessGroupID; bg != "" {
		t.Fatalf("a business group the upper can't see must not be referenced, got %q", bg)
	}
	if st := got["34020100001310000002"].Status; st != "OFF" {
		t.Fatalf("status must be the device's word while it is online, got %q", st)
	}

	local, dev, ok := r.resolve(v, "44010000001310000001")
	if !ok || local != "34020000001320000007" || dev.ID != camera {
		t.Fatalf("resolve mapped ID: %q %q %v", local, dev.ID, ok)
	}
	if _, _, ok := r.resolve(v, "34020000001320000007"); ok {
		t.Fatal("a mapped channel must not be reachable under its local ID")
	}
	if _, _, ok := r.resolve(v, "34020000001320000008"); ok {
		t.Fatal("an unshared channel must not resolve")
	}
	if _, _, ok := r.resolve(v, camera); ok {
		t.Fatal("a device not shared as a whole must not resolve")
	}
}

func TestRegistryEventsAndLoopGuard(t *testing.T) {
	r := testRegistry(t)
	var got []ChannelEvent
	r.publish = func(evs []ChannelEvent) { got = append(got, evs...) }

	r.offline(camera)
	if len(got) != 2 || got[0].Event != "OFF" || got[1].Item.Status != "OFF" {
		t.Fatalf("device offline must turn every channel OFF: %+v", got)
	}
	got = nil
	refused := r.applyNotify(platform, []manscdp.CatalogItem{
		{DeviceID: "34020100001310000001", Event: "VLOST"},
		{DeviceID: "34020100001310000003", Name: "new", Event: "ADD"},
		{DeviceID: "34020100001310000002", Event: "DEL"},
		{DeviceID: selfID, Event: "ADD"},
	}, time.Now())
	if len(refused) != 1 || refused[0] != selfID {
		t.Fatalf("our own ID coming back from below must be refused: %v", refused)
	}
	if len(got) != 3 || got[0].Event != "VLOST" || got[0].Item.Name != "cam-a" || got[1].Event != "ADD" || got[2].Event != "DEL" {
		t.Fatalf("events: %+v", got)
	}
	// Another online device reporting a channel the platform owns: a loop.
	_, _, refused = r.setChannels(camera, []manscdp.CatalogItem{{DeviceID: "34020100001310000001"}}, false, time.Now())
	if len(refused) != 1 {
		t.Fatalf("a channel owned by another online device must be refused, got %v", refused)
	}
	if owner, _ := r.ChannelOwner("34020100001310000001"); owner != platform {
		t.Fatalf("owner changed to %s", owner)
	}
}
