package main

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm3"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
)

// GB/T 28181 signalling security on the wire: the Note digest gbproxy sends
// checked by the simulators' own verifier and recomputed here by hand, the
// 403s a require peer's bad requests get, Monitor-User-Identity through a
// three-proxy chain where every hop requires Note, and the hop and loop
// limits.

const (
	noteDevice  = "34020000001320000001"
	noteGateway = "34020000002160000001" // security.gateway_id, not our id
)

// noteRig is a proxy with one upper simulator (behind a tap that keeps the
// proxy's datagrams) and one device, both requiring Note.
type noteRig struct {
	p       *testProxy
	up      *sim.Upper
	tap     *udpTap
	dev     *sim.Device
	alg     string
	hex     bool
	upSeed  string
	devSeed string
}

func newNoteRig(t *testing.T, alg string, hexEnc bool) *noteRig {
	t.Helper()
	r := &noteRig{alg: alg, hex: hexEnc, upSeed: "upper-seed-" + alg, devSeed: "device-seed-" + alg}
	r.up = newUpper(t, "127.0.0.1:0", func(c *sim.UpperConfig) {
		c.Note = sim.NoteConfig{Seed: r.upSeed, Algorithm: alg, Hex: hexEnc, Require: true}
	})
	r.tap = newUDPTap(t, r.up.Addr())
	enc := map[bool]string{false: "base64", true: "hex"}[hexEnc]
	r.p = startProxy(t, "", fmt.Sprintf(`
lower:
  listen: "127.0.0.1:0"
  keepalive_interval: 300ms
  keepalive_timeout_count: 3
  catalog_timeout: 2s
  devices:
    - {id: %[1]q, signalling_digest: require, note_seed: %[2]q, note_algorithm: %[3]s, note_encoding: %[4]s}
upper:
  listen: "127.0.0.1:0"
  platforms:
    - id: %[5]q
      address: %[6]q
      transport: udp
      password: %[7]q
      keepalive_interval: 300ms
      retry_interval: 300ms
      signalling_digest: require
      note_seed: %[8]q
      note_algorithm: %[3]s
      note_encoding: %[4]s
security:
  gateway_id: %[9]q
`, noteDevice, r.devSeed, alg, enc, upperID, r.tap.Addr(), upperPass, r.upSeed, noteGateway))
	r.dev = newDevice(t, r.p, noteDevice, "udp", 2, func(c *sim.DeviceConfig) {
		c.Note = sim.NoteConfig{Seed: r.devSeed, Algorithm: alg, Hex: hexEnc, Require: true}
	})
	ctx := ctxTimeout(t, 10*time.Second)
	if err := r.dev.Start(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the signed catalog stored and the proxy registered upward", func() bool {
		return len(r.p.channels(noteDevice)) == 2 && r.p.platform(upperID).Registered
	})
	if _, err := r.up.WaitRegistered(ctx, proxyID); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestNoteOnTheWire: what gbproxy sends to a require upper and a require
// device is accepted by the simulators' independent verifier, and its Note
// equals the digest computed here, step by step, over the wire text.
func TestNoteOnTheWire(t *testing.T) {
	for _, c := range []struct {
		alg string
		hex bool
	}{{"MD5", false}, {"SHA-256", false}, {"SM3", false}, {"MD5", true}, {"SM3", true}} {
		name := c.alg
		if c.hex {
			name += "/hex"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newNoteRig(t, c.alg, c.hex)
			ctx := ctxTimeout(t, 10*time.Second)
			chans := sim.MakeChannels(noteDevice, 2)
			// The upper's signed requests reach the proxy and its signed answers come back.
			items, sum, err := r.up.QueryCatalog(ctx, proxyID)
			if err != nil || sum != 2 || len(items) != 2 {
				t.Fatalf("catalog to a require upper: %d items, SumNum %d: %v", len(items), sum, err)
			}
			sub, err := r.up.Subscribe(ctx, proxyID, "Catalog", proxyID, 600)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.dev.WaitSubscriptions(ctx, func(s []sim.SubscriptionInfo) bool { return len(s) == 1 }); err != nil {
				t.Fatalf("the signed SUBSCRIBE did not reach the device: %v", err)
			}
			if err := r.dev.SetChannelStatus(ctx, chans[0].ID, "OFF"); err != nil {
				t.Fatal(err)
			}
			if _, err := sub.WaitNotify(ctx, func(b []byte) bool { return strings.Contains(string(b), chans[0].ID) }); err != nil {
				t.Fatalf("signed catalog NOTIFY: %v", err)
			}
			eventually(t, 3*time.Second, "a keepalive through the tap", func() bool {
				return len(r.tap.requests("MESSAGE", "<CmdType>Keepalive</CmdType>")) > 0
			})

			regs := r.tap.requests("REGISTER", "")
			if len(regs) == 0 {
				t.Fatal("no REGISTER went through the tap")
			}
			for _, reg := range regs {
				if h, _ := wireHeaders(reg); h["note"] != "" {
					t.Errorf("REGISTER carries Note %q; REGISTER is never signed", h["note"])
				}
			}
			checked := map[string]int{}
			for _, method := range []string{"MESSAGE", "NOTIFY"} {
				for _, dgram := range r.tap.requests(method, "") {
					h, body := wireHeaders(dgram)
					checkWireNote(t, h, body, c.alg, c.hex, r.upSeed)
					// Keepalives, catalog answers and catalog NOTIFYs (our
					// catalog's changes) are all our own requests.
					if h["monitor-user-identity"] != noteGateway+"-"+noteGateway {
						t.Errorf("our own %s carries Monitor-User-Identity %q, want %s-%s", method, h["monitor-user-identity"], noteGateway, noteGateway)
					}
					checked[method]++
				}
			}
			if checked["MESSAGE"] < 2 || checked["NOTIFY"] < 1 {
				t.Fatalf("digests recomputed from the wire: %v; want keepalive and catalog MESSAGEs and a NOTIFY", checked)
			}

			q, err := r.dev.WaitRequest(ctx, "MESSAGE", "Catalog")
			if err != nil {
				t.Fatal(err)
			}
			if q.Request.GetHeader("Note") == nil || q.MonitorUserIdentity() != noteGateway+"-"+noteGateway {
				t.Errorf("catalog query to the device: Note %v, Monitor-User-Identity %q", q.Request.GetHeader("Note"), q.MonitorUserIdentity())
			}
			for name, s := range map[string]sim.NoteStats{"upper": r.up.NoteStats(), "device": r.dev.NoteStats()} {
				if s.Invalid != 0 || s.Valid == 0 {
					t.Errorf("%s simulator's own verifier: %+v, want all valid", name, s)
				}
			}
			if n := len(r.up.Refused()) + len(r.dev.Refused()); n != 0 {
				t.Errorf("simulators refused %d of our requests: %v %v", n, r.up.Refused(), r.dev.Refused())
			}
			requireNoNoteRefusals(t, r.p)
		})
	}
}

// TestNoteRefusals: from a require device and a require upper, a tampered
// body, a stale Date, a missing Note and a replayed nonce each get 403
// naming the check; the valid request gets 200.
func TestNoteRefusals(t *testing.T) {
	r := newNoteRig(t, "SHA-256", false)
	peers := []struct {
		side, addr, from, seed string
		body                   func(sn int) string
	}{
		{"lower", r.p.lowerAddr(), noteDevice, r.devSeed, func(sn int) string {
			return strings.Replace(keepaliveBody(noteDevice), "<SN>7</SN>", fmt.Sprintf("<SN>%d</SN>", sn), 1)
		}},
		{"upper", r.p.cascade.UpperAddr(), upperID, r.upSeed, func(sn int) string {
			return strings.Replace(queryBody("Catalog", proxyID), "<SN>9</SN>", fmt.Sprintf("<SN>%d</SN>", sn), 1)
		}},
	}
	for _, peer := range peers {
		t.Run(peer.side, func(t *testing.T) {
			// From the peer's own IP (binding passes: device bind_source ip,
			// upper any port of its address host).
			conn, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			m := signedMessage{local: conn.LocalAddr().String(), from: peer.from, alg: r.alg, seed: peer.seed}
			now := time.Now()
			send := func(what string, req string) (int, string) {
				t.Helper()
				code, phrase := exchangeUDP(t, conn, peer.addr, req)
				t.Logf("%s: %d %s", what, code, phrase)
				return code, phrase
			}
			valid := m.build("valid", "z9hG4bK-n1", now, peer.body(101), peer.body(101), true)
			if code, phrase := send("valid", valid); code != 200 {
				t.Fatalf("valid signed request answered %d %s, want 200", code, phrase)
			}
			cases := []struct {
				name, req, want string
			}{
				{"tampered body", m.build("tampered", "z9hG4bK-n2", now, peer.body(102), peer.body(103), true), "Note invalid"},
				{"stale Date", m.build("stale", "z9hG4bK-n3", now.Add(-time.Hour), peer.body(104), peer.body(104), true), "outside the window"},
				{"missing Note", m.build("missing", "z9hG4bK-n4", now, peer.body(105), peer.body(105), false), "Note missing"},
				// The same request, Note and all, under another Via branch.
				{"replayed nonce", strings.Replace(valid, "z9hG4bK-n1", "z9hG4bK-n5", 1), "Note replayed"},
			}
			for _, c := range cases {
				if code, phrase := send(c.name, c.req); code != 403 || !strings.Contains(phrase, c.want) {
					t.Errorf("%s: answered %d %q, want 403 saying %q", c.name, code, phrase, c.want)
				}
			}
			for _, reason := range []string{"note_invalid", "note_date", "note_missing", "note_replay"} {
				if n := r.p.metrics.Value("gbproxy_sip_refused_total", "side", peer.side, "reason", reason); n != 1 {
					t.Errorf("gbproxy_sip_refused_total{side=%s,reason=%s} = %d, want 1", peer.side, reason, n)
				}
			}
		})
	}
	if d, _ := r.p.device(noteDevice); !d.Online {
		t.Error("the device went offline after refused requests in its name")
	}
}

// TestNoteThreeProxyChain: upper ← P1 ← P2 ← P3 ← camera, every hop with
// signalling_digest require (own seed and algorithm per hop) and its own
// gateway ID: catalog, a routed query and a live play work, and
// Monitor-User-Identity grows by one segment per proxy.
func TestNoteThreeProxyChain(t *testing.T) {
	const (
		p2ID, p3ID, camID = "34020100002000000001", "34020200002000000001", "34020200001320000001"
		gw1, gw2, gw3     = "34020000002160000001", "34020100002160000002", "34020200002160000003"
	)
	up := newUpper(t, "127.0.0.1:0", func(c *sim.UpperConfig) {
		c.QuietPeriod = 2 * time.Second
		c.Note = sim.NoteConfig{Seed: "seed-upper-p1", Algorithm: "SM3", Require: true}
	})
	// hop is one link's signalling settings, as YAML keys at indent.
	hop := func(indent, seed, alg, enc string) string {
		return fmt.Sprintf("%[1]ssignalling_digest: require\n%[1]snote_seed: %[2]s\n%[1]snote_algorithm: %[3]s\n%[1]snote_encoding: %[4]s\n", indent, seed, alg, enc)
	}
	lower := func(digest string) string {
		return `
lower:
  listen: "127.0.0.1:0"
  keepalive_interval: 300ms
  keepalive_timeout_count: 3
  catalog_timeout: 2s
  catalog_refresh_interval: 500ms
  invite_timeout: 3s
` + digest
	}
	platform := func(id, addr, transport, password, digest string) string {
		return fmt.Sprintf(`
upper:
  listen: "127.0.0.1:0"
  platforms:
    - id: %q
      address: %q
      transport: %s
      password: %q
      keepalive_interval: 300ms
      retry_interval: 300ms
%s`, id, addr, transport, password, digest)
	}
	identity := func(id, gw string) string {
		return fmt.Sprintf("id: %q\ndomain: %q\nsecurity: {gateway_id: %q}\n", id, id[:10], gw)
	}
	const platformKeys = "      " // indent of a platform's keys
	p1 := startProxy(t, "", identity(proxyID, gw1)+lower(hop("  ", "seed-p1-p2", "SHA-256", "base64"))+
		platform(upperID, up.Addr(), "udp", upperPass, hop(platformKeys, "seed-upper-p1", "SM3", "base64")))
	p2 := startProxy(t, "", identity(p2ID, gw2)+lower(hop("  ", "seed-p2-p3", "MD5", "hex"))+
		platform(proxyID, p1.lowerAddr(), "udp", devicePass, hop(platformKeys, "seed-p1-p2", "SHA-256", "base64")))
	p3 := startProxy(t, "", identity(p3ID, gw3)+
		lower(fmt.Sprintf("  devices:\n    - {id: %q, signalling_digest: require, note_seed: seed-p3-camera, note_algorithm: SM3}\n", camID))+
		platform(p2ID, p2.lowerAddr(), "tcp", devicePass, hop(platformKeys, "seed-p2-p3", "MD5", "hex")))
	cam := newDevice(t, p3, camID, "udp", 2, func(c *sim.DeviceConfig) {
		c.ServerID, c.Domain = p3ID, p3ID[:10]
		c.Note = sim.NoteConfig{Seed: "seed-p3-camera", Algorithm: "SM3", Require: true}
	})
	ctx := ctxTimeout(t, 40*time.Second)
	if err := cam.Start(ctx); err != nil {
		t.Fatal(err)
	}
	chans := sim.MakeChannels(camID, 2)
	eventually(t, 10*time.Second, "the camera's channels reach P1 through P3 and P2", func() bool { return len(p1.channels(p2ID)) == 2 })
	if _, err := up.WaitRegistered(ctx, proxyID); err != nil {
		t.Fatal(err)
	}

	items, _, err := up.QueryCatalog(ctx, proxyID)
	if ids := catalogIDs(items); err != nil || len(ids) != 2 || ids[0] != chans[0].ID || ids[1] != chans[1].ID {
		t.Fatalf("catalog four hops up: %v %v", ids, err)
	}

	ans, err := up.Request(ctx, proxyID, "Query", "DeviceStatus", chans[1].ID)
	if err != nil || ans.Status != 200 || !ans.Complete || len(ans.Bodies) != 1 || ans.Bodies[0].SN != ans.SN || ans.Bodies[0].DeviceID != chans[1].ID {
		t.Fatalf("DeviceStatus through three proxies: %+v %v", ans, err)
	}
	down := strings.Join([]string{gw3, gw2, gw1, upperID}, "-")
	q, err := cam.WaitRequest(ctx, "MESSAGE", "DeviceStatus")
	if err != nil {
		t.Fatal(err)
	}
	if got := q.MonitorUserIdentity(); got != down {
		t.Errorf("routed MESSAGE at the camera: Monitor-User-Identity %q, want %q", got, down)
	}
	upward := strings.Join([]string{gw1, gw2, gw3, camID}, "-")
	var answered bool
	for _, rec := range up.Requests() {
		if rec.Method == "MESSAGE" && rec.Root == "Response" && rec.CmdType == "DeviceStatus" && rec.SN == ans.SN {
			answered = true
			if got := rec.MonitorUserIdentity(); got != upward {
				t.Errorf("the camera's answer at the upper: Monitor-User-Identity %q, want %q", got, upward)
			}
		}
	}
	if !answered {
		t.Fatal("the upper's journal has no DeviceStatus Response")
	}

	play, err := up.Play(ctx, proxyID, chans[0].ID, sim.PlayOptions{Transport: "udp"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := play.WaitBytes(ctx, clipBytes(t)); err != nil {
		t.Fatal(err)
	}
	st := cam.Streams()[0]
	got := play.Payload()
	var sent []byte
	eventually(t, time.Second, "camera's record to catch up", func() bool { sent = cam.SentPayload(st.CallID); return len(sent) >= len(got) })
	if !bytes.Equal(got, sent[:len(got)]) {
		t.Fatal("PS payload changed on its way through three proxies")
	}
	inv, err := cam.WaitRequest(ctx, "INVITE", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := inv.MonitorUserIdentity(); got != down {
		t.Errorf("INVITE at the camera: Monitor-User-Identity %q, want %q", got, down)
	}
	if err := play.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cam.WaitStream(ctx, func(s sim.StreamInfo) bool { return s.CallID == st.CallID && s.Ended }); err != nil {
		t.Fatal("camera call not ended four hops down: ", err)
	}
	for name, s := range map[string]sim.NoteStats{"upper": up.NoteStats(), "camera": cam.NoteStats()} {
		if s.Invalid != 0 || s.Valid == 0 {
			t.Errorf("%s simulator's own verifier: %+v, want all valid", name, s)
		}
	}
	for _, p := range []*testProxy{p1, p2, p3} {
		requireNoNoteRefusals(t, p)
		requireClean(t, p)
	}
}

// TestIdentityHopLimitAndLoop: a Monitor-User-Identity already holding
// max_hops segments gets 483, one holding our gateway ID 482; each is
// counted under its reason.
func TestIdentityHopLimitAndLoop(t *testing.T) {
	up := newUpper(t, "127.0.0.1:0", func(c *sim.UpperConfig) { c.QuietPeriod = time.Second })
	p := startProxy(t, "", upperPlatformYAML(up.Addr(), "udp")+fmt.Sprintf("security: {gateway_id: %q}\n", noteGateway))
	ctx := ctxTimeout(t, 20*time.Second)
	if _, err := up.WaitRegistered(ctx, proxyID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "proxy registered upward", func() bool { return p.platform(upperID).Registered })
	chain := func(n int) string {
		segs := make([]string, n)
		for i := range segs {
			segs[i] = fmt.Sprintf("440100000021600000%02d", i)
		}
		return strings.Join(segs, "-")
	}
	cases := []struct {
		name, identity string
		want           int
	}{
		{"7 segments, under the default max_hops 8", chain(7), 200},
		{"8 segments", chain(8), 483},
		{"our gateway ID inside", chain(2) + "-" + noteGateway + "-" + upperID, 482},
		{"none", "", 200},
	}
	for _, c := range cases {
		up.SetMonitorUserIdentity(c.identity)
		ans, err := up.Request(ctx, proxyID, "Query", "Catalog", proxyID)
		if err != nil || ans.Status != c.want {
			t.Errorf("%s: MESSAGE answered %d %q (%v), want %d", c.name, ans.Status, ans.Reason, err, c.want)
		}
	}
	for reason, want := range map[string]int64{"identity_hops": 1, "identity_loop": 1} {
		if n := p.metrics.Value("gbproxy_sip_refused_total", "side", "upper", "reason", reason); n != want {
			t.Errorf("gbproxy_sip_refused_total{side=upper,reason=%s} = %d, want %d", reason, n, want)
		}
	}
}

// requireNoNoteRefusals: the proxy refused nothing for Note or identity.
func requireNoNoteRefusals(t *testing.T, p *testProxy) {
	t.Helper()
	for _, side := range []string{"lower", "upper"} {
		for _, reason := range []string{"note_missing", "note_invalid", "note_date", "note_replay", "identity_hops", "identity_loop", "identity_malformed"} {
			if n := p.metrics.Value("gbproxy_sip_refused_total", "side", side, "reason", reason); n != 0 {
				t.Errorf("proxy %s refused %d requests on the %s side for %s", p.cfg.ID, n, side, reason)
			}
		}
	}
}

// wireNonce is the standard's digest, written here apart from gbproxy's
// and the simulators' code: the hash of From, To, Call-ID and Date (as on
// the wire, trimmed), the seed and the body, fed one after the other.
func wireNonce(alg string, hexEnc bool, from, to, callID, date, seed string, body []byte) string {
	var h hash.Hash
	switch alg {
	case "SHA-256":
		h = sha256.New()
	case "SM3":
		h = sm3.New()
	default:
		h = md5.New()
	}
	for _, part := range []string{from, to, callID, date, seed} {
		h.Write([]byte(strings.TrimSpace(part)))
	}
	h.Write(body)
	if hexEnc {
		return hex.EncodeToString(h.Sum(nil))
	}
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

var (
	noteNonce    = regexp.MustCompile(`^Digest nonce="([^"]+)", algorithm=(\S+)$`)
	gbDateOnWire = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$`)
)

// wireDateLocal is the Date layout: local time, no zone.
const wireDateLocal = "2006-01-02T15:04:05"

// checkWireNote recomputes a received request's Note from its wire text.
func checkWireNote(t *testing.T, h map[string]string, body []byte, alg string, hexEnc bool, seed string) {
	t.Helper()
	m := noteNonce.FindStringSubmatch(h["note"])
	if m == nil || m[2] != alg {
		t.Errorf("%s: Note %q, want Digest nonce=\"…\", algorithm=%s", h["call-id"], h["note"], alg)
		return
	}
	date := h["date"]
	if !gbDateOnWire.MatchString(date) {
		t.Errorf("%s: Date %q, want yyyy-MM-ddTHH:mm:ss", h["call-id"], date)
	} else if d, _ := time.ParseInLocation(wireDateLocal, date, time.Local); time.Since(d).Abs() > time.Minute {
		t.Errorf("%s: Date %s is not local time now (%s)", h["call-id"], date, time.Now().Format(wireDateLocal))
	}
	if want := wireNonce(alg, hexEnc, h["from"], h["to"], h["call-id"], date, seed, body); m[1] != want {
		t.Errorf("%s: nonce %s, computed from the wire text %s", h["call-id"], m[1], want)
	}
}

// wireHeaders splits a datagram into its header values (first of each,
// by lower-case name, surrounding whitespace trimmed) and its body.
func wireHeaders(dgram []byte) (map[string]string, []byte) {
	head, body, _ := bytes.Cut(dgram, []byte("\r\n\r\n"))
	h := map[string]string{}
	for _, line := range strings.Split(string(head), "\r\n")[1:] {
		name, value, ok := strings.Cut(line, ":")
		if name = strings.ToLower(strings.TrimSpace(name)); ok {
			if _, seen := h[name]; !seen {
				h[name] = strings.TrimSpace(value)
			}
		}
	}
	return h, body
}

// signedMessage builds a MESSAGE to the proxy as a require peer writes it.
type signedMessage struct {
	local, from, alg, seed string
}

// build signs signedBody under date and sends body (a different body is a
// tampered message); withNote false leaves Note out, Date in.
func (m signedMessage) build(callID, branch string, date time.Time, signedBody, body string, withNote bool) string {
	from := fmt.Sprintf("<sip:%s@%s>;tag=%s", m.from, m.from[:10], callID)
	to := fmt.Sprintf("<sip:%s@%s>", proxyID, proxyDomain)
	callID += "@" + m.local
	d := date.Format(wireDateLocal)
	var b strings.Builder
	fmt.Fprintf(&b, "MESSAGE sip:%s@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;rport;branch=%s\r\n", proxyID, proxyDomain, m.local, branch)
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nDate: %s\r\n", from, to, callID, d)
	if withNote {
		fmt.Fprintf(&b, "Note: Digest nonce=\"%s\", algorithm=%s\r\n", wireNonce(m.alg, false, from, to, callID, d, m.seed, []byte(signedBody)), m.alg)
	}
	fmt.Fprintf(&b, "Content-Type: Application/MANSCDP+xml\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	return b.String()
}

// exchangeUDP sends req from conn to addr and returns the first final
// response's status code and reason phrase (0 when none within 3 s).
func exchangeUDP(t *testing.T, conn net.PacketConn, addr, req string) (int, string) {
	t.Helper()
	to, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WriteTo([]byte(req), to); err != nil {
		t.Fatal(err)
	}
	h, _ := wireHeaders([]byte(req))
	buf := make([]byte, 65535)
	for {
		conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			return 0, ""
		}
		res := string(buf[:n])
		got, _ := wireHeaders(buf[:n])
		if code := statusCode(res); code >= 200 && got["call-id"] == h["call-id"] {
			_, phrase, _ := strings.Cut(strings.SplitN(firstLine(res), " ", 2)[1], " ")
			return code, phrase
		}
	}
}

// udpTap relays datagrams between a proxy and an upper simulator and keeps
// those the proxy sent, byte for byte.
type udpTap struct {
	front, back net.PacketConn // front faces the proxy, back the upper
	upper       net.Addr
	mu          sync.Mutex
	proxy       net.Addr
	sent        [][]byte
	wg          sync.WaitGroup
}

func newUDPTap(t *testing.T, upperAddr string) *udpTap {
	t.Helper()
	upper, err := net.ResolveUDPAddr("udp", upperAddr)
	if err != nil {
		t.Fatal(err)
	}
	tp := &udpTap{upper: upper}
	if tp.front, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if tp.back, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	tp.wg.Add(2)
	go tp.relay(tp.front, func(b []byte, from net.Addr) {
		tp.mu.Lock()
		tp.proxy = from
		tp.sent = append(tp.sent, bytes.Clone(b))
		tp.mu.Unlock()
		tp.back.WriteTo(b, tp.upper)
	})
	go tp.relay(tp.back, func(b []byte, _ net.Addr) {
		tp.mu.Lock()
		proxy := tp.proxy
		tp.mu.Unlock()
		if proxy != nil {
			tp.front.WriteTo(b, proxy)
		}
	})
	t.Cleanup(func() {
		tp.front.Close()
		tp.back.Close()
		tp.wg.Wait()
	})
	return tp
}

func (tp *udpTap) relay(conn net.PacketConn, forward func([]byte, net.Addr)) {
	defer tp.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			return
		}
		forward(buf[:n], from)
	}
}

// Addr is where the proxy is told the upper is.
func (tp *udpTap) Addr() string { return tp.front.LocalAddr().String() }

// requests returns the proxy's requests of method whose text contains
// substr, as sent (retransmissions once).
func (tp *udpTap) requests(method, substr string) [][]byte {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	var out [][]byte
	seen := map[string]bool{}
	for _, b := range tp.sent {
		if bytes.HasPrefix(b, []byte(method+" ")) && bytes.Contains(b, []byte(substr)) && !seen[string(b)] {
			seen[string(b)] = true
			out = append(out, b)
		}
	}
	return out
}
