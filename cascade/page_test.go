package cascade

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
	"github.com/gbproxy/gbproxy/configs"
	"github.com/gbproxy/gbproxy/directory"
)

// pagingCascade is testRegistry with upperA seeing the camera only, one of
// its channels under a mapped ID and name.
func pagingCascade(t *testing.T) *Cascade {
	r := testRegistry(t)
	u := &upperClient{id: upperA}
	u.conf.Store(newPlatformConf(configs.PlatformConfig{ID: upperA}))
	u.share.Store(newShareView(configs.ShareConfig{Devices: []string{camera},
		Map:   map[string]string{"34020000001320000007": "44010000001310000007"},
		Names: map[string]string{"34020000001320000007": "Gate (A)"}}, upperA))
	up := &upperSide{registry: r}
	up.uppers.Store(newUpperSet([]*upperClient{u}))
	return &Cascade{lower: &lowerSide{registry: r}, upper: up}
}

// allPages follows next until the last page and checks every page's total.
func allPages(t *testing.T, c *Cascade, f ChannelFilter, limit int) (ids []string, total int) {
	t.Helper()
	var after *ChannelKey
	for pages := 0; ; pages++ {
		items, n, next, err := c.ChannelPage(f, Page[ChannelKey]{After: after, Limit: limit})
		if err != nil {
			t.Fatal(err)
		}
		if pages > 0 && n != total {
			t.Fatalf("total changed between pages: %d then %d", total, n)
		}
		total = n
		if len(items) > limit || (next != nil && len(items) != limit) {
			t.Fatalf("page %d of %+v: %d items with limit %d, next %v", pages, f, len(items), limit, next)
		}
		for _, it := range items {
			ids = append(ids, it.ID)
		}
		if next == nil {
			return ids, total
		}
		after = next
	}
}

func TestChannelPagesCoverTheListOnce(t *testing.T) {
	c := pagingCascade(t)
	var want []string
	for _, cv := range c.lower.registry.Channels() {
		want = append(want, cv.ID)
	}
	for _, limit := range []int{1, 2, 3, 7, 1000} {
		got, total := allPages(t, c, ChannelFilter{}, limit)
		if !slices.Equal(got, want) || total != len(want) {
			t.Errorf("limit %d: pages give %v (total %d), want %v", limit, got, total, want)
		}
	}
	all, total, next, _ := c.ChannelPage(ChannelFilter{}, Page[ChannelKey]{})
	if len(all) != len(want) || total != len(want) || next != nil {
		t.Errorf("no limit: %d items, total %d, next %v; want all %d", len(all), total, next, len(want))
	}
}

func TestChannelPageFilters(t *testing.T) {
	c := pagingCascade(t)
	c.lower.registry.offline(platform)
	for _, tc := range []struct {
		f    ChannelFilter
		want []string
	}{
		{ChannelFilter{DeviceID: camera}, []string{"34020000001320000007", "34020000001320000008"}},
		{ChannelFilter{DeviceID: "34020000001329999999"}, nil},
		{ChannelFilter{Status: "off"}, []string{"34020100001310000001", "34020100001310000002", "34020100002150000001", "34020100002160000001"}},
		{ChannelFilter{Q: "CAM-"}, []string{"34020100001310000001", "34020100001310000002"}},
		{ChannelFilter{Q: "0099"}, []string{"44010000001310000099"}},
		{ChannelFilter{Status: "ON", Q: "yard"}, []string{"34020000001320000008"}},
		// Through upperA: its IDs and names, also in the filters.
		{ChannelFilter{Platform: upperA}, []string{"44010000001310000007", "34020000001320000008"}},
		{ChannelFilter{Platform: upperA, Q: "gate (a)"}, []string{"44010000001310000007"}},
		{ChannelFilter{Platform: upperA, Q: "34020000001320000007"}, nil},
	} {
		for _, limit := range []int{1, 100} {
			got, total := allPages(t, c, tc.f, limit)
			if !slices.Equal(got, tc.want) || total != len(tc.want) {
				t.Errorf("%+v limit %d: %v (total %d), want %v", tc.f, limit, got, total, tc.want)
			}
		}
	}
	if _, _, _, err := c.ChannelPage(ChannelFilter{Platform: "nope"}, Page[ChannelKey]{}); !errors.Is(err, directory.ErrUnknownPlatform) {
		t.Errorf("unknown platform: err %v, want directory.ErrUnknownPlatform", err)
	}
}

func TestChannelLookup(t *testing.T) {
	c := pagingCascade(t)
	cv, ok, _ := c.Channel("34020000001320000007", "")
	if !ok || cv.DeviceID != camera || cv.Item.Name != "gate" || cv.SharedTo[upperA] != "44010000001310000007" || cv.LocalID != "" {
		t.Errorf("local lookup: %+v %v", cv, ok)
	}
	cv, ok, _ = c.Channel("44010000001310000007", upperA)
	if !ok || cv.ID != "44010000001310000007" || cv.LocalID != "34020000001320000007" || cv.Item.Name != "Gate (A)" || cv.Item.ParentID != selfID {
		t.Errorf("lookup through upperA: %+v %v", cv, ok)
	}
	for _, id := range []string{"34020000001320000007", "34020100001310000001", "34020000001329999999"} {
		if _, ok, _ := c.Channel(id, upperA); ok {
			t.Errorf("upperA finds %s: hidden by the map, not shared, or unknown", id)
		}
	}
	if _, ok, _ := c.Channel("34020000001329999999", ""); ok {
		t.Error("unknown channel found")
	}
}

func TestDevicePages(t *testing.T) {
	c := pagingCascade(t)
	c.lower.registry.offline(camera)
	online := true
	for _, tc := range []struct {
		f    DeviceFilter
		want []string
	}{
		{DeviceFilter{}, []string{camera, platform, upperA}},
		{DeviceFilter{Online: &online}, []string{platform, upperA}},
		{DeviceFilter{Q: "2010000"}, []string{platform}},
		{DeviceFilter{Platform: upperA}, []string{camera}},
	} {
		var got []string
		var after *string
		for {
			items, total, next, err := c.DevicePage(tc.f, Page[string]{After: after, Limit: 1})
			if err != nil || total != len(tc.want) {
				t.Fatalf("%+v: total %d, err %v; want %d", tc.f, total, err, len(tc.want))
			}
			for _, d := range items {
				got = append(got, d.ID)
			}
			if after = next; next == nil {
				break
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%+v: %v, want %v", tc.f, got, tc.want)
		}
	}
}

// A page follows changes: channels added after the index was built show up,
// removed ones go, and a cursor whose item is gone still continues after it.
func TestChannelPageAfterChanges(t *testing.T) {
	c := pagingCascade(t)
	first, _, next, _ := c.ChannelPage(ChannelFilter{DeviceID: camera}, Page[ChannelKey]{Limit: 1})
	if len(first) != 1 || next == nil {
		t.Fatalf("first page %v next %v", first, next)
	}
	now := time.Now()
	c.lower.registry.setChannels(camera, []manscdp.CatalogItem{
		{DeviceID: "34020000001320000008", Name: "yard"},
		{DeviceID: "34020000001320000009", Name: "dock"},
	}, true, now) // drops ...07, the cursor's channel
	rest, total, _, _ := c.ChannelPage(ChannelFilter{DeviceID: camera}, Page[ChannelKey]{After: next})
	if got := fmt.Sprint(ids2(rest)); got != "[34020000001320000008 34020000001320000009]" || total != 2 {
		t.Errorf("after changes: %s total %d", got, total)
	}
}

func ids2(cvs []ChannelView) []string {
	out := make([]string, len(cvs))
	for i, cv := range cvs {
		out[i] = cv.ID
	}
	return out
}
