package security

import (
	"errors"
	"strings"
	"testing"
)

// A request crossing three gateways from an upper platform to a device grows
// by one segment per hop; the device sees the three gateway IDs, then the
// upper's ID.
func TestIdentityChain(t *testing.T) {
	const upper = "34020000002000000001"
	gateways := []string{"11000000002000000001", "12000000002000000001", "13000000002000000001"}
	value := ""
	for _, gw := range gateways {
		if err := CheckIdentity(value, gw, 8); err != nil {
			t.Fatalf("gateway %s refused %q: %v", gw, value, err)
		}
		value = ForwardIdentity(gw, value, upper)
	}
	want := "13000000002000000001-12000000002000000001-11000000002000000001-" + upper
	if value != want {
		t.Fatalf("after three hops: %q, want %q", value, want)
	}
	segments, err := ParseIdentity(value)
	if err != nil || len(segments) != 4 || segments[3] != upper {
		t.Fatalf("ParseIdentity(%q) = %q, %v", value, segments, err)
	}
	if got := ForwardIdentity("g", " ", "o"); got != "g-o" {
		t.Fatalf("blank incoming value: %q, want g-o", got)
	}
	if got := ForwardIdentity("g", "", "g"); got != "g-g" {
		t.Fatalf("a request we originate: %q, want g-g", got)
	}
}

func TestCheckIdentity(t *testing.T) {
	const gw = "34020000002000000009"
	cases := []struct {
		incoming string
		maxHops  int
		want     error
	}{
		{"", 8, nil},
		{"a-b-c-d-e-f-g", 8, nil},
		{"a-b-c-d-e-f-g-h", 8, ErrTooManyHops},
		{"a-b-c-d-e-f-g-h-i", 8, ErrTooManyHops},
		{"a-b", 2, ErrTooManyHops},
		{"a", 2, nil},
		{"a-b-c-d-e-f-g-h", 0, ErrTooManyHops}, // 0 means the default of 8
		{"a-b-c-d-e-f-g", 0, nil},
		{"a-" + gw + "-b", 8, ErrIdentityLoop},
		{gw + "-" + gw, 8, ErrIdentityLoop},
		{"a-" + gw + "0", 8, nil}, // a longer ID is another ID
		{"a--b", 8, ErrIdentityMalformed},
		{"-a", 8, ErrIdentityMalformed},
		{"a-", 8, ErrIdentityMalformed},
		{strings.Repeat("a-", 64) + "a", 8, ErrIdentityMalformed},
	}
	for _, c := range cases {
		err := CheckIdentity(c.incoming, gw, c.maxHops)
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("CheckIdentity(%q, max %d) = %v, want %v", c.incoming, c.maxHops, err, c.want)
		}
	}
}

func TestParseIdentity(t *testing.T) {
	if s, err := ParseIdentity("  "); err != nil || s != nil {
		t.Fatalf("blank: %q, %v", s, err)
	}
	if s, err := ParseIdentity(" g1 - g2 -dev "); err != nil || strings.Join(s, "|") != "g1|g2|dev" {
		t.Fatalf("spaces around segments: %q, %v", s, err)
	}
	if s, err := ParseIdentity(strings.Repeat("a-", 63) + "a"); err != nil || len(s) != 64 {
		t.Fatalf("64 segments: %d, %v", len(s), err)
	}
	for _, v := range []string{"--", "a- -b", strings.Repeat("a-", 64) + "a", strings.Repeat("x", 2049)} {
		if _, err := ParseIdentity(v); err == nil {
			t.Errorf("ParseIdentity(%.40q…) accepted", v)
		}
	}
}

func FuzzParseIdentity(f *testing.F) {
	for _, s := range []string{"", "a", "g1-g2-34020000001320000001", "a--b", " - ", strings.Repeat("a-", 70), "\xff-\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		segments, err := ParseIdentity(v)
		if err != nil {
			return
		}
		if len(segments) > maxIdentitySegments {
			t.Fatalf("%d segments accepted", len(segments))
		}
		for _, s := range segments {
			if s == "" {
				t.Fatalf("empty segment accepted in %q", v)
			}
		}
		// Forwarding adds exactly one segment.
		if len(segments) > 0 {
			again, err := ParseIdentity(ForwardIdentity("gw", v, "x"))
			if err == nil && len(again) != len(segments)+1 {
				t.Fatalf("forwarding %q gave %d segments, want %d", v, len(again), len(segments)+1)
			}
		}
	})
}
