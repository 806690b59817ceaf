package b2bua

import (
	"testing"
)

func TestSSRCPoolFormatAndReuse(t *testing.T) {
	p := newSSRCPool("3402000000")
	v, err := p.take(false)
	if err != nil {
		t.Fatal(err)
	}
	if got := formatSSRC(v); got != "0200000001" {
		t.Errorf("first live SSRC %s, want 0 + domain digits 4-8 (20000) + serial 0001", got)
	}
	h, _ := p.take(true)
	if got := formatSSRC(h); got != "1200000002" {
		t.Errorf("playback SSRC %s, want 1200000002", got)
	}
	if p.hold(v) {
		t.Error("hold of an SSRC in use succeeded")
	}
	// Every serial once, none twice while in use.
	seen := map[uint32]bool{v: true}
	for {
		s, err := p.take(false)
		if err != nil {
			break
		}
		if seen[s] {
			t.Fatalf("SSRC %s handed out twice while in use", formatSSRC(s))
		}
		seen[s] = true
	}
	if len(seen) != ssrcSerials-1 {
		t.Fatalf("%d live SSRCs before the pool ran out, want %d (serials 0001-9999)", len(seen), ssrcSerials-1)
	}
	p.release(v)
	if s, err := p.take(false); err != nil || s != v {
		t.Errorf("after release got %v %v, want the freed %s", formatSSRC(s), err, formatSSRC(v))
	}
	if p.size() != ssrcSerials {
		t.Errorf("size %d", p.size())
	}
}

func TestParseSSRC(t *testing.T) {
	for in, want := range map[string]bool{"0100000001": true, "4294967295": true, "4294967296": false, "": false, "12a": false} {
		if _, ok := parseSSRC(in); ok != want {
			t.Errorf("parseSSRC(%q) ok=%v", in, ok)
		}
	}
}

// An upper's y= that one of our device streams already uses is not ours to
// release when that upper's call ends.
func TestUpperSSRCHeldOnlyWhenFree(t *testing.T) {
	b := &B2BUA{ssrc: newSSRCPool("3402000000")}
	ours, _ := b.ssrc.take(false)
	if v, held, err := b.upperSSRC(formatSSRC(ours), false); err != nil || v != ours || held {
		t.Fatalf("upper asking for our stream's SSRC: %v held=%v %v; want it used but not held", v, held, err)
	}
	if v, held, err := b.upperSSRC("0100000001", false); err != nil || v != 100000001 || !held {
		t.Fatalf("free upper SSRC: %v held=%v %v", v, held, err)
	}
	if v, held, err := b.upperSSRC("", false); err != nil || !held || v == ours {
		t.Fatalf("no y=: %v held=%v %v, want a fresh one of ours", v, held, err)
	}
	// A playback without y= gets a history SSRC: first digit 1.
	if v, held, err := b.upperSSRC("", true); err != nil || !held || formatSSRC(v)[0] != '1' {
		t.Fatalf("playback without y=: %s held=%v %v, want 1xxxxxxxxx", formatSSRC(v), held, err)
	}
	if n := b.ssrc.size(); n != 4 {
		t.Errorf("pool holds %d SSRCs, want 4", n)
	}
}
