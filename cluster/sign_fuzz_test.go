package cluster

import (
	"strings"
	"testing"
)

// The signature header comes from the wire: any value parses without
// panicking, and a parsed one names a node, a time and a signature.
func FuzzParseSignature(f *testing.F) {
	f.Add("node=a;ts=1700000000000;sig=AAAA")
	f.Add("node=;ts=1;sig=x")
	f.Add(";;=;")
	f.Add("node=a=b;ts=1;sig=x;extra=y")
	f.Fuzz(func(t *testing.T, v string) {
		node, ts, sig, err := parseSignature(v)
		if err != nil {
			return
		}
		if node == "" || ts == "" || sig == "" || strings.Contains(node, ";") {
			t.Fatalf("parsed %q into node %q ts %q sig %q", v, node, ts, sig)
		}
	})
}
