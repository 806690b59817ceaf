package sim

import (
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cmd/gbsim/gbnote"
)

const noteSeed = "note-seed-9"

var gbDate = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$`)

// startNotePair starts an upper and a device that both sign with cfg and both require the Note.
func startNotePair(t *testing.T, transport string, cfg NoteConfig) (*Upper, *Device) {
	t.Helper()
	cfg.Require = true
	u := startUpper(t, UpperConfig{QuietPeriod: 150 * time.Millisecond, Note: cfg})
	d := newDevice(t, DeviceConfig{Server: u.Addr(), Transport: transport, Channels: MakeChannels(devID, 2),
		KeepaliveInterval: 50 * time.Millisecond, StreamOnce: true, Note: cfg})
	if err := d.Start(testContext(t)); err != nil {
		t.Fatal(err)
	}
	return u, d
}

// noteParts returns the Date value and the Note's nonce and algorithm of a received request.
func noteParts(t *testing.T, r Received) (date, nonce, alg string) {
	t.Helper()
	date = headerValue(r.Request, "Date")
	nonce, alg, err := gbnote.ParseNote(headerValue(r.Request, "Note"))
	if err != nil {
		t.Fatalf("%s: Note %q: %v", r.Method, headerValue(r.Request, "Note"), err)
	}
	return date, nonce, alg
}

// TestNoteRoundTrip: two simulators that both require the Note register, keep alive, query the
// catalog and play video with every request signed and checked, for each algorithm and encoding.
func TestNoteRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cfg       NoteConfig
		transport string
		play      bool
	}{
		{"MD5", NoteConfig{Seed: noteSeed}, "udp", true},
		{"SHA-256", NoteConfig{Seed: noteSeed, Algorithm: "SHA-256"}, "tcp", false},
		{"SM3", NoteConfig{Seed: noteSeed, Algorithm: "SM3"}, "udp", false},
		{"MD5 hex", NoteConfig{Seed: noteSeed, Hex: true}, "tcp", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			ctx := testContext(t)
			u, d := startNotePair(t, tc.transport, tc.cfg)
			if _, err := u.WaitLower(ctx, devID, func(l LowerState) bool { return l.Keepalives >= 2 }); err != nil {
				t.Fatal(err)
			}
			items, _, err := u.QueryCatalog(ctx, devID)
			if err != nil || len(items) != 2 {
				t.Fatalf("catalog: %d items, %v", len(items), err)
			}
			if tc.play {
				p, err := u.Play(ctx, devID, firstChannel(d), PlayOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := p.WaitPackets(ctx, 1); err != nil {
					t.Fatal(err)
				}
				if err := p.Bye(ctx); err != nil {
					t.Fatal(err)
				}
				if _, err := d.WaitRequest(ctx, "BYE", ""); err != nil {
					t.Fatal(err)
				}
				if _, err := d.WaitRequest(ctx, "ACK", ""); err != nil {
					t.Fatal(err)
				}
			}
			for name, g := range map[string]*guard{"upper": u.guard, "device": d.guard} {
				if s := g.NoteStats(); s.Invalid != 0 || s.Valid == 0 {
					t.Errorf("%s: Note checks %+v, want every request valid", name, s)
				}
				if r := g.Refused(); len(r) != 0 {
					t.Errorf("%s refused %d requests, first %s: %v", name, len(r), r[0].Method, r[0].Reason)
				}
			}
			ka, err := u.WaitRequest(ctx, "MESSAGE", "Keepalive")
			if err != nil {
				t.Fatal(err)
			}
			q, err := d.WaitRequest(ctx, "MESSAGE", "Catalog")
			if err != nil {
				t.Fatal(err)
			}
			wantAlg, size := tc.cfg.Algorithm, 32
			if wantAlg == "" {
				wantAlg, size = "MD5", 16
			}
			wantLen := base64.StdEncoding.EncodedLen(size)
			if tc.cfg.Hex {
				wantLen = 2 * size
			}
			for _, r := range []Received{ka, q} {
				date, nonce, alg := noteParts(t, r)
				if !gbDate.MatchString(date) || alg != wantAlg || len(nonce) != wantLen {
					t.Errorf("%s: Date %q, nonce %q (%d chars, want %d), algorithm %q (want %s)", r.Method, date, nonce, len(nonce), wantLen, alg, wantAlg)
				}
			}
			reg, err := u.WaitRequest(ctx, "REGISTER", "")
			if err != nil {
				t.Fatal(err)
			}
			if reg.Request.GetHeader("Note") != nil || reg.Request.GetHeader("Date") != nil {
				t.Errorf("REGISTER carries Date/Note, the standard signs every message but REGISTER")
			}
		})
	}
}

// TestNoteOnTheWire serialises a stamped request as sipgo sends it, takes the header values from
// the text, and computes the digest step by step with crypto/md5: the digest covers exactly what
// is on the wire.
func TestNoteOnTheWire(t *testing.T) {
	g, err := newGuard(NoteConfig{Seed: noteSeed}, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	body := []byte("<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Query>\r\n<CmdType>Catalog</CmdType>\r\n<SN>17</SN>\r\n<DeviceID>" + devID + "</DeviceID>\r\n</Query>\r\n")
	req := newMessage(sip.Uri{Scheme: "sip", User: upperID, Host: "3402000000"}, sip.Uri{Scheme: "sip", User: devID, Host: "3402000000"},
		"127.0.0.1:5060", "UDP", body)
	callID := sip.CallIDHeader("wire-test-1")
	req.AppendHeader(&callID)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.MESSAGE})
	g.SetMonitorUserIdentity("34020000002000000009-" + upperID)
	g.stamp(req)
	wire := req.String()

	line := func(name string) string {
		t.Helper()
		for _, l := range strings.Split(wire, "\r\n") {
			if v, ok := strings.CutPrefix(l, name+": "); ok {
				return strings.TrimSpace(v)
			}
		}
		t.Fatalf("no %s line in\n%s", name, wire)
		return ""
	}
	from, to, date := line("From"), line("To"), line("Date")
	if !strings.HasPrefix(from, "<sip:"+upperID+"@3402000000>;tag=") || to != "<sip:"+devID+"@3402000000>" {
		t.Fatalf("From %q To %q: not what newMessage builds", from, to)
	}
	if !gbDate.MatchString(date) {
		t.Errorf("Date %q, want yyyy-MM-ddTHH:mm:ss", date)
	}
	sum := md5.Sum([]byte(from + to + "wire-test-1" + date + noteSeed + string(body)))
	if want := `Digest nonce="` + base64.StdEncoding.EncodeToString(sum[:]) + `", algorithm=MD5`; line("Note") != want {
		t.Errorf("Note %q, want %q", line("Note"), want)
	}
	if got := line("Monitor-User-Identity"); got != "34020000002000000009-"+upperID {
		t.Errorf("Monitor-User-Identity %q", got)
	}

	// Parsed back, as the receiving simulator sees it, the request checks out; altered, it does not.
	msg, err := sip.ParseMessage([]byte(wire))
	if err != nil {
		t.Fatal(err)
	}
	parsed := msg.(*sip.Request)
	if err := g.check(parsed, time.Now()); err != nil {
		t.Errorf("parsed back: %v", err)
	}
	parsed.SetBody(append([]byte(nil), strings.Replace(string(body), "<SN>17", "<SN>18", 1)...))
	if err := g.check(parsed, time.Now()); !errors.Is(err, gbnote.ErrMismatch) {
		t.Errorf("altered body: %v, want a digest mismatch", err)
	}
	if rec := (Received{Request: parsed}); rec.MonitorUserIdentity() != "34020000002000000009-"+upperID {
		t.Errorf("Received.MonitorUserIdentity = %q", rec.MonitorUserIdentity())
	}
}

// TestUpperRefusesBadNotes sends hand-written keepalives to an upper that requires the Note: a
// correctly signed one passes the check (and is answered 404, the lower not being registered), a
// tampered body, a missing Note, a stale Date and another algorithm get 403 saying which.
func TestUpperRefusesBadNotes(t *testing.T) {
	checkGoroutines(t)
	u := startUpper(t, UpperConfig{Note: NoteConfig{Seed: noteSeed, Require: true}})
	pc := listenUDP(t)
	const from, to = "<sip:" + devID + "@3402000000>;tag=k1", "<sip:" + upperID + "@3402000000>"
	body := "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>1</SN>\r\n<DeviceID>" + devID + "</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
	now := time.Now().Format("2006-01-02T15:04:05")
	note := func(callID, date, alg string) string {
		sum := md5.Sum([]byte(from + to + callID + date + noteSeed + body))
		return `Digest nonce="` + base64.StdEncoding.EncodeToString(sum[:]) + `", algorithm=` + alg
	}
	send := func(callID, headers, sentBody string) *sip.Response {
		t.Helper()
		req := fmt.Sprintf("MESSAGE sip:%s@3402000000 SIP/2.0\r\nVia: SIP/2.0/UDP %s;rport;branch=z9hG4bK%s\r\n"+
			"From: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n"+
			"Content-Type: Application/MANSCDP+xml\r\n%sContent-Length: %d\r\n\r\n%s",
			upperID, pc.LocalAddr(), randomHex(4), from, to, callID, headers, len(sentBody), sentBody)
		return rawExchange(t, pc, u.Addr(), req)
	}
	stale := time.Now().Add(-11 * time.Minute).Format("2006-01-02T15:04:05")
	for _, tc := range []struct {
		name, callID, headers, body string
		status                      int
		reason                      string
	}{
		{"valid", "ka-1", "Date: " + now + "\r\nNote: " + note("ka-1", now, "MD5") + "\r\n", body, 404, "Not Registered"},
		{"tampered body", "ka-2", "Date: " + now + "\r\nNote: " + note("ka-2", now, "MD5") + "\r\n", strings.Replace(body, "<SN>1<", "<SN>2<", 1), 403, "Note Digest Mismatch"},
		{"missing Note", "ka-3", "Date: " + now + "\r\n", body, 403, "Missing Note"},
		{"missing Date", "ka-4", "Note: " + note("ka-4", now, "MD5") + "\r\n", body, 403, "Missing Date"},
		{"stale Date", "ka-5", "Date: " + stale + "\r\nNote: " + note("ka-5", stale, "MD5") + "\r\n", body, 403, "Date Out Of Window"},
		{"other algorithm", "ka-6", "Date: " + now + "\r\nNote: " + note("ka-6", now, "SM3") + "\r\n", body, 403, "Note Algorithm Mismatch"},
	} {
		res := send(tc.callID, tc.headers, tc.body)
		if res.StatusCode != tc.status || res.Reason != tc.reason {
			t.Errorf("%s: answered %d %s, want %d %s", tc.name, res.StatusCode, res.Reason, tc.status, tc.reason)
		}
	}
	if s := u.NoteStats(); s.Valid != 1 || s.Invalid != 5 {
		t.Errorf("Note checks %+v, want 1 valid and 5 invalid", s)
	}
	refused := u.Refused()
	if len(refused) != 5 || !errors.Is(refused[0].Reason, gbnote.ErrMismatch) || refused[0].CmdType != "Keepalive" {
		t.Fatalf("refused %+v, want the 5 bad keepalives, the tampered one first", refused)
	}
	for _, r := range u.Requests() {
		if r.Method == "MESSAGE" && r.Request.CallID().Value() != "ka-1" {
			t.Errorf("refused request %s reached the upper's handlers", r.Request.CallID().Value())
		}
	}
}

// TestDeviceRequiresNote: an upper that does not sign has its query and its INVITE refused by a
// device that requires the Note, and the device never acts on them.
func TestDeviceRequiresNote(t *testing.T) {
	checkGoroutines(t)
	ctx := testContext(t)
	u := startUpper(t, UpperConfig{QuietPeriod: 150 * time.Millisecond})
	d := newDevice(t, DeviceConfig{Server: u.Addr(), KeepaliveInterval: -1, Note: NoteConfig{Seed: noteSeed, Algorithm: "SM3", Require: true}})
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ans, err := u.Request(ctx, devID, "Query", "DeviceInfo", "")
	if err != nil {
		t.Fatal(err)
	}
	if ans.Status != 403 || ans.Reason != "Missing Note" || len(ans.Bodies) != 0 {
		t.Errorf("unsigned query answered %d %s with %d bodies, want 403 Missing Note and none", ans.Status, ans.Reason, len(ans.Bodies))
	}
	if _, err := u.Play(ctx, devID, devID, PlayOptions{}); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("unsigned INVITE: %v, want refused with 403", err)
	}
	if n := len(d.Requests()); n != 0 {
		t.Errorf("the device's handlers saw %d refused requests", n)
	}
	if r := d.Refused(); len(r) != 2 || r[0].Method != "MESSAGE" || r[1].Method != "INVITE" {
		t.Errorf("refused %d requests, want the MESSAGE and the INVITE", len(r))
	}
	r, err := d.WaitRefused(ctx)
	if err != nil || !errors.Is(r.Reason, gbnote.ErrNoNote) {
		t.Errorf("WaitRefused = %v, %v", r.Reason, err)
	}
}

// TestMonitorUserIdentitySent: the value set on the upper reaches the device on each request but
// REGISTER; cleared, none is sent.
func TestMonitorUserIdentitySent(t *testing.T) {
	checkGoroutines(t)
	ctx := testContext(t)
	u, d := startPair(t, "udp", DeviceConfig{KeepaliveInterval: -1})
	const chain = "34020000002000000003-34020000002000000002-" + upperID
	u.SetMonitorUserIdentity(chain)
	d.SetMonitorUserIdentity("ignored-on-register")
	mustRequest(t, u, "Query", "DeviceInfo", "")
	q, err := d.WaitRequest(ctx, "MESSAGE", "DeviceInfo")
	if err != nil {
		t.Fatal(err)
	}
	if got := q.MonitorUserIdentity(); got != chain {
		t.Errorf("device received Monitor-User-Identity %q, want %q", got, chain)
	}
	answer, err := u.WaitRequest(ctx, "MESSAGE", "DeviceInfo")
	if err != nil {
		t.Fatal(err)
	}
	if got := answer.MonitorUserIdentity(); got != "ignored-on-register" {
		t.Errorf("upper received %q from the device", got)
	}
	if _, err := d.Register(ctx, 3600); err != nil {
		t.Fatal(err)
	}
	for _, r := range u.Requests() {
		if r.Method == "REGISTER" && r.MonitorUserIdentity() != "" {
			t.Errorf("REGISTER carries Monitor-User-Identity %q", r.MonitorUserIdentity())
		}
	}
	u.SetMonitorUserIdentity("")
	mustRequest(t, u, "Query", "DeviceStatus", "")
	q, err = d.WaitRequest(ctx, "MESSAGE", "DeviceStatus")
	if err != nil {
		t.Fatal(err)
	}
	if q.Request.GetHeader(headerMonitorUserIdentity) != nil {
		t.Errorf("cleared identity still sent: %q", q.MonitorUserIdentity())
	}
}
