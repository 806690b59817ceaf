package main

import (
	"errors"
	"net/http/httptest"
	"testing"
)

// FuzzParseList: any query string gets either a page request within bounds
// or a 400 that names a parameter, never a panic.
func FuzzParseList(f *testing.F) {
	for _, q := range []string{"", "limit=100", "limit=0", "limit=1001&cursor=", "cursor=MzQwMg", "cursor=%25%25", "q=x&q=y", "status=ON&platform=1", "limit=1e3", ";;&&=="} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		r := httptest.NewRequest("GET", "/api/v1/channels", nil)
		r.URL.RawQuery = raw
		p, err := parseList(r, true, "device_id", "status", "q", "platform")
		var pe *paramError
		switch {
		case err != nil && (!errors.As(err, &pe) || pe.name == ""):
			t.Fatalf("%q: error %v names no parameter", raw, err)
		case err == nil && (p.limit < 0 || p.limit > maxLimit || p.has && p.cursor == ""):
			t.Fatalf("%q: limit %d, cursor %q (given %v)", raw, p.limit, p.cursor, p.has)
		}
	})
}
