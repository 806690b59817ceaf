package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
)

// contract checks real answers against openapi.json and records which
// operation answered which status, so the test can demand every documented
// one was seen.
type contract struct {
	t      *testing.T
	doc    *openapi3.T
	router routers.Router
	seen   map[string]bool // "GET /api/v1/devices 400"
}

func newContract(t *testing.T) *contract {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(openAPI)
	if err != nil {
		t.Fatalf("openapi.json does not load: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.json is not valid OpenAPI 3: %v", err)
	}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return &contract{t: t, doc: doc, router: router, seen: map[string]bool{}}
}

// call sends a request, wants status, and validates the answer (and, for
// a success, the request too) against the document.
func (c *contract) call(base, method, path, body, token string, want int) (http.Header, []byte) {
	c.t.Helper()
	newReq := func() *http.Request {
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		if err != nil {
			c.t.Fatal(err)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		return req
	}
	res, err := http.DefaultClient.Do(newReq())
	if err != nil {
		c.t.Fatal(err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		c.t.Fatal(err)
	}
	if res.StatusCode != want {
		c.t.Errorf("%s %s: %d %q, want %d", method, path, res.StatusCode, b, want)
		return res.Header, b
	}
	req := newReq()
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		c.t.Errorf("%s %s: not in openapi.json: %v", method, path, err)
		return res.Header, b
	}
	c.seen[fmt.Sprintf("%s %s %d", method, route.Path, want)] = true
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	if want < 300 {
		if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
			c.t.Errorf("%s %s: the request we sent does not fit openapi.json: %v", method, path, err)
		}
	}
	err = openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: res.StatusCode, Header: res.Header, Body: io.NopCloser(bytes.NewReader(b)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	})
	if err != nil {
		c.t.Errorf("%s %s: %d answer does not fit openapi.json: %v\n%s", method, path, res.StatusCode, err, b)
	}
	return res.Header, b
}

// documented lists every "METHOD path status" in the document but the 500s,
// which a healthy proxy cannot be made to answer.
func (c *contract) documented() []string {
	var out []string
	for path, item := range c.doc.Paths.Map() {
		for method, op := range item.Operations() {
			for status := range op.Responses.Map() {
				if status != "500" {
					out = append(out, method+" "+path+" "+status)
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

// TestOpenAPIContract calls every endpoint of the admin API, with its
// success and error answers, and validates each answer against the
// served openapi.json with kin-openapi; every documented status must be
// seen. 401s come from a second proxy with http.token set.
func TestOpenAPIContract(t *testing.T) {
	c := newContract(t)
	const mapped = "44010000001310000777"
	ch := sim.MakeChannels(liveDevice, 1)[0].ID
	rig := newLiveRig(t, rigOptions{platform: fmt.Sprintf("      share:\n        map: {%q: %q}", ch, mapped)})
	base := "http://" + rig.p.httpLn.Addr().String()
	ctx := ctxTimeout(t, 30*time.Second)
	play, err := rig.upper.Play(ctx, proxyID, mapped, sim.PlayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "session listed", func() bool {
		var s []apiSession
		rig.p.api("/api/v1/sessions", &s)
		return len(s) == 1
	})

	type call struct {
		method, path, body string
		want               int
	}
	esc := url.PathEscape
	for _, k := range []call{
		{"GET", "/healthz", "", 200},
		{"GET", "/metrics", "", 200},
		{"GET", "/api/v1/openapi.json", "", 200},
		{"GET", "/api/v1/store/backup", "", 200},

		{"GET", "/api/v1/devices", "", 200},
		{"GET", "/api/v1/devices?limit=1&status=online&q=1320&platform=" + upperID, "", 200},
		{"GET", "/api/v1/devices?limit=0", "", 400},
		{"GET", "/api/v1/devices?status=maybe", "", 400},
		{"GET", "/api/v1/devices?cursor=%25%25", "", 400},
		{"GET", "/api/v1/devices?platform=44010000002000000999", "", 400},
		{"GET", "/api/v1/devices?colour=red", "", 400},
		{"GET", "/api/v1/devices/" + liveDevice, "", 200},
		{"GET", "/api/v1/devices/" + liveDevice + "?limit=1", "", 400},
		{"GET", "/api/v1/devices/34020000001329999999", "", 404},

		{"GET", "/api/v1/channels", "", 200},
		{"GET", "/api/v1/channels?limit=1&device_id=" + liveDevice + "&status=on&q=" + ch[10:], "", 200},
		{"GET", "/api/v1/channels?platform=" + upperID + "&q=" + mapped, "", 200},
		{"GET", "/api/v1/channels?limit=1001", "", 400},
		{"GET", "/api/v1/channels?status=sleeping", "", 400},
		{"GET", "/api/v1/channels/" + ch, "", 200},
		{"GET", "/api/v1/channels/" + mapped + "?platform=" + upperID, "", 200},
		{"GET", "/api/v1/channels/" + ch + "?platform=" + upperID, "", 404}, // hidden behind the map
		{"GET", "/api/v1/channels/" + ch + "?platform=nope", "", 400},
		{"GET", "/api/v1/channels/34020000001329999999", "", 404},

		{"GET", "/api/v1/platforms", "", 200},
		{"GET", "/api/v1/subscriptions", "", 200},
		{"GET", "/api/v1/cluster", "", 200}, // a single node: clustered false
		{"GET", "/api/v1/cluster?node=a", "", 400},

		{"GET", "/api/v1/sessions", "", 200},
		{"GET", "/api/v1/sessions?limit=1&device_id=" + liveDevice + "&platform=" + upperID + "&q=" + esc(play.CallID()), "", 200},
		{"GET", "/api/v1/sessions?status=live", "", 400},
		{"GET", "/api/v1/sessions?local=true", "", 200},
		{"GET", "/api/v1/sessions?local=maybe", "", 400},
		{"DELETE", "/api/v1/sessions/" + esc(play.CallID()), "", 204},
		{"DELETE", "/api/v1/sessions/no-such-call", "", 404},

		{"PUT", "/api/v1/platforms/" + upperID + "/share", `{"devices": ["` + liveDevice + `"], "names": {"` + ch + `": "gate"}}`, 200},
		{"PUT", "/api/v1/platforms/" + upperID + "/share", `{"devices": "all of them"}`, 400},
		{"PUT", "/api/v1/platforms/44010000002000000999/share", `{}`, 404},
		{"DELETE", "/api/v1/platforms/" + upperID + "/share", "", 200},
		{"DELETE", "/api/v1/platforms/44010000002000000999/share", "", 404},

		// Management: an upper platform where nothing answers, then the
		// rig's device as an allowed entry (its GET then shows config).
		{"POST", "/api/v1/platforms", platformBody(upper2ID, "127.0.0.1:9", "pw"), 201},
		{"POST", "/api/v1/platforms", platformBody(upper2ID, "127.0.0.1:9", "pw"), 409},
		{"POST", "/api/v1/platforms", platformBody(upper2ID, "127.0.0.1", "pw"), 400},
		{"GET", "/api/v1/platforms/" + upper2ID, "", 200},
		{"GET", "/api/v1/platforms/44010000002000000999", "", 404},
		{"PUT", "/api/v1/platforms/" + upper2ID, `{"address": "127.0.0.1:10", "retry_interval": "300ms", "share": {"devices": ["` + liveDevice + `"]}}`, 200},
		{"PUT", "/api/v1/platforms/" + upper2ID, `{"charset": "big5"}`, 400},
		{"PUT", "/api/v1/platforms/44010000002000000999", `{"address": "127.0.0.1:10"}`, 404},
		{"DELETE", "/api/v1/platforms/" + upper2ID, "", 204},
		{"DELETE", "/api/v1/platforms/" + upper2ID, "", 404},
		{"POST", "/api/v1/devices", `{"id": "` + liveDevice + `", "password": "` + devicePass + `", "stream_mode": "udp"}`, 201},
		{"POST", "/api/v1/devices", `{"id": "` + liveDevice + `"}`, 409},
		{"POST", "/api/v1/devices", `{"id": "123"}`, 400},
		{"GET", "/api/v1/devices/allowed", "", 200},
		{"GET", "/api/v1/devices/" + liveDevice, "", 200},
		{"PUT", "/api/v1/devices/" + liveDevice, `{"stream_mode": "tcp-passive"}`, 200},
		{"PUT", "/api/v1/devices/" + liveDevice, `{"note_algorithm": "crc32"}`, 400},
		{"PUT", "/api/v1/devices/34020000001329999999", `{}`, 404},
		{"DELETE", "/api/v1/devices/" + liveDevice, "", 204},
		{"DELETE", "/api/v1/devices/" + liveDevice, "", 404},
	} {
		c.call(base, k.method, k.path, k.body, "", k.want)
	}

	// With http.token set, every endpoint but /healthz answers 401 without it.
	const token = "contract-test-token"
	locked := startProxy(t, "", "http: {listen: \"127.0.0.1:0\", token: \""+token+"\"}\n")
	lbase := "http://" + locked.httpLn.Addr().String()
	for _, op := range c.documented() {
		method, path, _ := strings.Cut(op, " ")
		path, _, _ = strings.Cut(path, " ")
		if path == "/healthz" {
			continue
		}
		path = strings.NewReplacer("{id}", upperID, "{call_id}", "x").Replace(path)
		c.call(lbase, method, path, `{}`, "", 401)
	}
	c.call(lbase, "GET", "/api/v1/devices?limit=1", "", token, 200)

	for _, op := range c.documented() {
		if !c.seen[op] {
			t.Errorf("no answer checked for %s", op)
		}
	}
}

// TestAPIPaging follows Link headers through every list and checks that the
// pages add up to the unpaged list, with X-Total-Count on each page.
func TestAPIPaging(t *testing.T) {
	p := startProxy(t, "", "")
	ctx := ctxTimeout(t, 20*time.Second)
	devs := []string{"34020000001320000001", "34020000001320000002"}
	for i, id := range devs {
		d := newDevice(t, p, id, "udp", 7+i*4, nil)
		if err := d.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "18 channels stored", func() bool {
		return len(p.channels(devs[0])) == 7 && len(p.channels(devs[1])) == 11
	})
	base := "http://" + p.httpLn.Addr().String()
	get := func(path string) (http.Header, []string) {
		t.Helper()
		res, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var items []struct {
			ID string `json:"id"`
		}
		if res.StatusCode != 200 {
			b, _ := io.ReadAll(res.Body)
			t.Fatalf("GET %s: %s %s", path, res.Status, b)
		}
		if err := json.NewDecoder(res.Body).Decode(&items); err != nil {
			t.Fatal(err)
		}
		ids := make([]string, len(items))
		for i, it := range items {
			ids[i] = it.ID
		}
		return res.Header, ids
	}
	for _, list := range []string{"/api/v1/channels", "/api/v1/devices", "/api/v1/channels?device_id=" + devs[1], "/api/v1/channels?q=1310200"} {
		hdr, want := get(list)
		if hdr.Get("X-Total-Count") != fmt.Sprint(len(want)) || hdr.Get("Link") != "" {
			t.Errorf("%s unpaged: X-Total-Count %q Link %q for %d items", list, hdr.Get("X-Total-Count"), hdr.Get("Link"), len(want))
		}
		sep := "?"
		if strings.Contains(list, "?") {
			sep = "&"
		}
		var got []string
		next, pages := list+sep+"limit=5", 0
		for next != "" {
			hdr, ids := get(next)
			got, pages = append(got, ids...), pages+1
			if hdr.Get("X-Total-Count") != fmt.Sprint(len(want)) {
				t.Errorf("%s: X-Total-Count %q, want %d", next, hdr.Get("X-Total-Count"), len(want))
			}
			next = ""
			if link := hdr.Get("Link"); link != "" {
				target, ok := strings.CutSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`)
				if !ok || !strings.HasPrefix(target, "/api/v1/") {
					t.Fatalf("Link %q", link)
				}
				next = target
			}
			if pages > len(want) {
				t.Fatalf("%s: more pages than items", list)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) || pages != (len(want)+4)/5 {
			t.Errorf("%s in %d pages of 5: %v, want %v", list, pages, got, want)
		}
	}
	if _, ids := get("/api/v1/channels?q=1310200"); len(ids) != 11 {
		t.Errorf("q=1310200 (in the IDs of the second device's 11 channels): %d channels %v", len(ids), ids)
	}
}
