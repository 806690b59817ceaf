package cascade

import (
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
	"github.com/gbproxy/gbproxy/configs"
)

// A single-channel camera whose channel ID is its own device ID: the channel
// is real, shared upward (under the proxy, not under itself) and resolves to
// the camera. The loop guard still refuses the proxy's own ID, channels
// another online device owns, and the IDs of other online devices.
func TestOwnIDChannel(t *testing.T) {
	r := testRegistry(t)
	const single = "34020000001320000055"
	r.register(Device{ID: single, Transport: "UDP", Remote: "127.0.0.1:2", CallID: single, ExpiresAt: time.Now().Add(time.Hour)})
	added, _, refused := r.setChannels(single, []manscdp.CatalogItem{
		{DeviceID: single, Name: "one", ParentID: single, Status: "ON"},
		{DeviceID: selfID},
		{DeviceID: "34020000001320000007"}, // the camera's
		{DeviceID: platform},               // another online device
	}, true, time.Now())
	if added != 1 || len(refused) != 3 {
		t.Fatalf("added %d, refused %v: want the own-ID channel only", added, refused)
	}
	v := newShareView(configs.ShareConfig{}, upperA)
	it, ok := ids(r.catalogFor(v))[single]
	if !ok || it.ParentID != selfID {
		t.Fatalf("own-ID channel shared upward: %v, ParentID %q (want %q)", ok, it.ParentID, selfID)
	}
	local, dev, ok := r.resolve(v, single)
	if !ok || local != single || dev.ID != single {
		t.Fatalf("resolve: %q %q %v", local, dev.ID, ok)
	}
	if refused := r.applyNotify(single, []manscdp.CatalogItem{{DeviceID: single, Event: "OFF"}}, time.Now()); len(refused) != 0 {
		t.Fatalf("status notify for the own-ID channel refused")
	}
}
