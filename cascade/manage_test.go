package cascade

import (
	"fmt"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/configs"
)

func plat(id, addr string) configs.PlatformConfig {
	return configs.PlatformConfig{ID: id, Address: addr, KeepaliveInterval: time.Minute}
}

// The file's edits (old snapshot -> new file) apply to the running set:
// what the API added or changed outside the difference stays.
func TestDiffAndApplyEntries(t *testing.T) {
	last := []configs.PlatformConfig{plat("A", "a:1"), plat("B", "b:1"), plat("C", "c:1")}
	file := []configs.PlatformConfig{plat("A", "a:1"), plat("B", "b:2"), plat("D", "d:1")}
	changes := diffEntries(last, file, platformID)
	got := ""
	for _, ch := range changes {
		got += fmt.Sprintf("%s %s %v; ", ch.ID, ch.Kind, ch.Fields)
	}
	if want := "B changed [address]; D added []; C removed []; "; got != want {
		t.Fatalf("diff: %q, want %q", got, want)
	}
	// Running: A changed through the API, B untouched, C removed through
	// the API, E added through it.
	apiA := plat("A", "a:9")
	running := []configs.PlatformConfig{apiA, plat("B", "b:1"), plat("E", "e:1")}
	out := applyChanges(running, changes, platformID)
	var ids []string
	for _, p := range out {
		ids = append(ids, p.ID+"@"+p.Address)
	}
	if want := "[A@a:9 B@b:2 E@e:1 D@d:1]"; fmt.Sprint(ids) != want {
		t.Errorf("applied: %v, want %s", ids, want)
	}
	if len(diffEntries(file, file, platformID)) != 0 {
		t.Error("an unchanged file differs from itself")
	}
}
