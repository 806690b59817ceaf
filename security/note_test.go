package security

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/emmansun/gmsm/sm3"
)

const (
	noteSeed = "gb28181-seed"
	noteBody = `<?xml version="1.0" encoding="GB2312"?>
<Query>
<CmdType>Catalog</CmdType>
<SN>17</SN>
<DeviceID>34020000001320000001</DeviceID>
</Query>
`
	noteDate = "2026-11-02T10:00:00"
)

// noteMessage is a request as a device writes it, with a Date.
func noteMessage(branch, date string) string {
	msg := "MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 192.0.2.10:5060;rport;branch=" + branch + "\r\n" +
		"From: <sip:34020000001320000001@3402000000>;tag=1928169842\r\n" +
		"To: <sip:34020000002000000001@3402000000>\r\n" +
		"Call-ID: 3187228566@192.0.2.10\r\n" +
		"CSeq: 20 MESSAGE\r\n" +
		"Max-Forwards: 70\r\n" +
		"Content-Type: Application/MANSCDP+xml\r\n"
	if date != "" {
		msg += "Date: " + date + "\r\n"
	}
	return msg + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(noteBody)) + noteBody
}

func parseRequest(t testing.TB, raw string) *sip.Request {
	t.Helper()
	msg, err := sip.ParseMessage([]byte(raw))
	if err != nil {
		t.Fatalf("parse %q: %v", raw, err)
	}
	return msg.(*sip.Request)
}

// noteClock is the local time noteDate stands for.
func noteClock(t testing.TB) func() time.Time {
	at, err := time.ParseInLocation("2006-01-02T15:04:05", noteDate, time.Local)
	if err != nil {
		t.Fatal(err)
	}
	return func() time.Time { return at }
}

// wireValue returns a header's value from a serialised message, trimmed.
func wireValue(t *testing.T, wire, name string) string {
	t.Helper()
	for line := range strings.SplitSeq(wire, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, name) {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s header in %q", name, wire)
	return ""
}

// The digest computed here by hand, from the signed message as it is
// written, must be what Sign puts in the Note.
func TestNoteDigestIndependent(t *testing.T) {
	if got := sm3.Sum([]byte("abc")); hex.EncodeToString(got[:]) !=
		"66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0" {
		t.Fatalf("SM3(abc) = %x: not the GB/T 32905 known answer", got)
	}
	hashes := map[string]func([]byte) []byte{
		"MD5":     func(b []byte) []byte { s := md5.Sum(b); return s[:] },
		"SHA-256": func(b []byte) []byte { s := sha256.Sum256(b); return s[:] },
		"SM3":     func(b []byte) []byte { s := sm3.Sum(b); return s[:] },
	}
	for alg, hash := range hashes {
		t.Run(alg, func(t *testing.T) {
			n := NewNotary(10*time.Minute, noteClock(t))
			req := parseRequest(t, noteMessage("z9hG4bK1", noteDate))
			if err := n.Sign(req, NoteConfig{Algorithm: alg, Seed: noteSeed}); err != nil {
				t.Fatal(err)
			}
			wire := req.String()
			concat := wireValue(t, wire, "From") + wireValue(t, wire, "To") + wireValue(t, wire, "Call-ID") +
				wireValue(t, wire, "Date") + noteSeed + noteBody
			want := base64.StdEncoding.EncodeToString(hash([]byte(concat)))
			if got := wireValue(t, wire, "Note"); got != `Digest nonce="`+want+`", algorithm=`+alg {
				t.Fatalf("Note on the wire = %s, want nonce %s over %q", got, want, concat)
			}

			raw, err := NoteDigest(strings.ToLower(alg), " <sip:34020000001320000001@3402000000>;tag=1928169842 ",
				"<sip:34020000002000000001@3402000000>", "3187228566@192.0.2.10", noteDate+"\t", noteSeed, []byte(noteBody))
			if err != nil || base64.StdEncoding.EncodeToString(raw) != want {
				t.Fatalf("NoteDigest = %x, %v; want %s", raw, err, want)
			}

			// What was written verifies once parsed back.
			if err := n.Verify(parseRequest(t, wire), NoteConfig{Algorithm: alg, Seed: noteSeed}); err != nil {
				t.Fatalf("signed message does not verify: %v", err)
			}
		})
	}
	if _, err := NoteDigest("SHA-1", "", "", "", "", "", nil); err == nil {
		t.Fatal("NoteDigest accepted SHA-1")
	}
}

func TestNoteSignAddsDate(t *testing.T) {
	n := NewNotary(0, noteClock(t))
	req := parseRequest(t, noteMessage("z9hG4bK1", ""))
	req.AppendHeader(sip.NewHeader("NOTE", "Digest nonce=\"stale\""))
	if err := n.Sign(req, NoteConfig{Seed: noteSeed}); err != nil {
		t.Fatal(err)
	}
	wire := req.String()
	if got := wireValue(t, wire, "Date"); got != noteDate {
		t.Fatalf("Date = %q, want %q", got, noteDate)
	}
	if strings.Count(strings.ToLower(wire), "\r\nnote:") != 1 || !strings.Contains(wire, "algorithm=MD5") {
		t.Fatalf("want exactly one fresh MD5 Note: %s", wire)
	}
	if err := n.Verify(parseRequest(t, wire), NoteConfig{Seed: noteSeed}); err != nil {
		t.Fatal(err)
	}
	if err := n.Sign(sip.NewRequest(sip.MESSAGE, sip.Uri{User: "x", Host: "y"}), NoteConfig{}); err == nil {
		t.Fatal("signed a request without From/To/Call-ID")
	}
	if err := n.Sign(req, NoteConfig{Algorithm: "SHA-1"}); err == nil {
		t.Fatal("signed with SHA-1")
	}
}

// signed returns a message signed by a peer whose clock reads date.
func signed(t *testing.T, c NoteConfig, branch, date string, edit func(string) string) *sip.Request {
	t.Helper()
	return signRaw(t, c, noteMessage(branch, date), edit)
}

// signRaw signs a raw message, then applies edit to what is written.
func signRaw(t *testing.T, c NoteConfig, raw string, edit func(string) string) *sip.Request {
	t.Helper()
	req := parseRequest(t, raw)
	if err := NewNotary(0, noteClock(t)).Sign(req, c); err != nil {
		t.Fatal(err)
	}
	wire := req.String()
	if edit != nil {
		wire = edit(wire)
	}
	return parseRequest(t, wire)
}

func TestNoteVerifyRejects(t *testing.T) {
	c := NoteConfig{Algorithm: "SM3", Seed: noteSeed}
	at := noteClock(t)()
	cases := []struct {
		name string
		req  func() *sip.Request
		want error
	}{
		{"tampered body", func() *sip.Request {
			return signed(t, c, "z9hG4bK1", noteDate, func(w string) string { return strings.Replace(w, "<SN>17<", "<SN>18<", 1) })
		}, ErrNoteInvalid},
		{"tampered From", func() *sip.Request {
			return signed(t, c, "z9hG4bK1", noteDate, func(w string) string { return strings.Replace(w, "tag=1928169842", "tag=1", 1) })
		}, ErrNoteInvalid},
		{"tampered Date", func() *sip.Request {
			return signed(t, c, "z9hG4bK1", noteDate, func(w string) string { return strings.Replace(w, noteDate, "2026-11-02T10:00:01", 1) })
		}, ErrNoteInvalid},
		{"another seed", func() *sip.Request {
			return signed(t, NoteConfig{Algorithm: "SM3", Seed: "guess"}, "z9hG4bK1", noteDate, nil)
		}, ErrNoteInvalid},
		{"another algorithm", func() *sip.Request {
			return signed(t, NoteConfig{Algorithm: "MD5", Seed: noteSeed}, "z9hG4bK1", noteDate, nil)
		}, ErrNoteInvalid},
		{"another algorithm named as ours", func() *sip.Request {
			return signed(t, NoteConfig{Algorithm: "MD5", Seed: noteSeed}, "z9hG4bK1", noteDate,
				func(w string) string { return strings.Replace(w, "algorithm=MD5", "algorithm=SM3", 1) })
		}, ErrNoteInvalid},
		{"hex where base64 is configured", func() *sip.Request {
			return signed(t, NoteConfig{Algorithm: "SM3", Seed: noteSeed, Hex: true}, "z9hG4bK1", noteDate, nil)
		}, ErrNoteInvalid},
		{"unparseable Note", func() *sip.Request {
			return signed(t, c, "z9hG4bK1", noteDate, func(w string) string { return strings.Replace(w, "nonce=", "nonce", 1) })
		}, ErrNoteInvalid},
		{"missing Note", func() *sip.Request { return parseRequest(t, noteMessage("z9hG4bK1", noteDate)) }, ErrNoteMissing},
		{"missing Date", func() *sip.Request {
			return signed(t, c, "z9hG4bK1", noteDate, func(w string) string { return strings.Replace(w, "Date: "+noteDate+"\r\n", "", 1) })
		}, ErrNoteDate},
		{"stale Date", func() *sip.Request {
			return signed(t, c, "z9hG4bK1", GBDate(at.Add(-10*time.Minute-time.Second)), nil)
		}, ErrNoteDate},
		{"future Date", func() *sip.Request {
			return signed(t, c, "z9hG4bK1", GBDate(at.Add(10*time.Minute+time.Second)), nil)
		}, ErrNoteDate},
		{"unparseable Date", func() *sip.Request { return signed(t, c, "z9hG4bK1", "Mon, 02 Nov 2026 10:00:00 GMT", nil) }, ErrNoteDate},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := NewNotary(10*time.Minute, noteClock(t))
			if err := n.Verify(tc.req(), c); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	// The edges of the window are inside it.
	for _, d := range []time.Duration{-10 * time.Minute, 10 * time.Minute} {
		if err := NewNotary(10*time.Minute, noteClock(t)).Verify(signed(t, c, "z9hG4bK1", GBDate(at.Add(d)), nil), c); err != nil {
			t.Errorf("Date %s from now: %v", d, err)
		}
	}
	if err := NewNotary(0, noteClock(t)).Verify(signed(t, c, "z9hG4bK1", noteDate+".123", nil), c); err != nil {
		t.Errorf("Date with milliseconds: %v", err)
	}
}

func TestNoteReplay(t *testing.T) {
	c := NoteConfig{Algorithm: "SHA-256", Seed: noteSeed}
	clock := newFakeClock()
	clock.now = noteClock(t)()
	n := NewNotary(10*time.Minute, clock.Now)
	if err := n.Verify(signed(t, c, "z9hG4bK1", noteDate, nil), c); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if err := n.Verify(signed(t, c, "z9hG4bK1", noteDate, nil), c); err != nil {
		t.Fatalf("retransmission under the same branch: %v", err)
	}
	if err := n.Verify(signed(t, c, "z9hG4bK2", noteDate, nil), c); !errors.Is(err, ErrNoteReplay) {
		t.Fatalf("same nonce under another branch: got %v, want ErrNoteReplay", err)
	}
	noBranch := func(w string) string { return strings.Replace(w, ";branch=z9hG4bK1", "", 1) }
	if err := n.Verify(signed(t, c, "z9hG4bK1", noteDate, noBranch), c); !errors.Is(err, ErrNoteReplay) {
		t.Fatalf("same nonce without a branch: got %v, want ErrNoteReplay", err)
	}
	// A new message (another Call-ID) is not a replay.
	other := strings.Replace(noteMessage("z9hG4bK3", noteDate), "3187228566@", "3187228567@", 1)
	if err := n.Verify(signRaw(t, c, other, nil), c); err != nil {
		t.Fatalf("another message: %v", err)
	}
	// Once the Date is out of the window the entry goes; the Date check refuses the replay.
	clock.Advance(10 * time.Minute)
	if err := n.Verify(signed(t, c, "z9hG4bK4", noteDate, nil), c); !errors.Is(err, ErrNoteDate) {
		t.Fatalf("replay after the window: got %v, want ErrNoteDate", err)
	}
	// The next message verified clears the expired entries.
	if err := n.Verify(signed(t, c, "z9hG4bK5", GBDate(clock.Now()), nil), c); err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	left := len(n.seen)
	n.mu.Unlock()
	if left != 1 {
		t.Fatalf("%d nonces kept, want only the last one", left)
	}
}

func TestNoteReplayCacheBounded(t *testing.T) {
	c := NoteConfig{Seed: noteSeed}
	clock := newFakeClock()
	clock.now = noteClock(t)()
	n := NewNotary(10*time.Minute, clock.Now)
	n.max = 4
	var reqs []*sip.Request
	for i := range 6 {
		date := GBDate(clock.Now())
		reqs = append(reqs, signRaw(t, c, strings.Replace(noteMessage("z9hG4bK1", date), "3187228566@", fmt.Sprintf("%d@", i), 1), nil))
		if err := n.Verify(reqs[i], c); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		clock.Advance(time.Second)
	}
	n.mu.Lock()
	size := len(n.seen)
	n.mu.Unlock()
	if size > 4 {
		t.Fatalf("%d nonces kept, cap 4", size)
	}
	// Evicted or not, none can be replayed under another branch.
	for i, req := range reqs {
		req.Via().Params.Add("branch", "z9hG4bKother")
		if err := n.Verify(req, c); !errors.Is(err, ErrNoteReplay) {
			t.Fatalf("replay of message %d after overflow: got %v, want ErrNoteReplay", i, err)
		}
	}
}

func TestNoteHex(t *testing.T) {
	c := NoteConfig{Algorithm: "MD5", Seed: noteSeed, Hex: true}
	req := signed(t, c, "z9hG4bK1", noteDate, nil)
	nonce, _, err := ParseNote(req.GetHeader("Note").Value())
	if err != nil {
		t.Fatal(err)
	}
	want := md5.Sum([]byte(req.From().Value() + req.To().Value() + req.CallID().Value() + noteDate + noteSeed + noteBody))
	if nonce != hex.EncodeToString(want[:]) {
		t.Fatalf("hex nonce %s, want %x", nonce, want)
	}
	if err := NewNotary(0, noteClock(t)).Verify(req, c); err != nil {
		t.Fatal(err)
	}
	upper := signed(t, c, "z9hG4bK1", noteDate, func(w string) string { return strings.Replace(w, nonce, strings.ToUpper(nonce), 1) })
	if err := NewNotary(0, noteClock(t)).Verify(upper, c); err != nil {
		t.Fatalf("upper-case hex: %v", err)
	}
	c.Hex = false
	if err := NewNotary(0, noteClock(t)).Verify(req, c); !errors.Is(err, ErrNoteInvalid) {
		t.Fatalf("hex nonce with base64 configured: got %v, want ErrNoteInvalid", err)
	}
	// Unpadded base64, as some vendors write it, is accepted.
	b64 := signed(t, c, "z9hG4bK1", noteDate, func(w string) string { return strings.Replace(w, `==", algorithm`, `", algorithm`, 1) })
	if err := NewNotary(0, noteClock(t)).Verify(b64, c); err != nil {
		t.Fatalf("base64 without padding: %v", err)
	}
}

func TestParseNote(t *testing.T) {
	cases := []struct {
		in, nonce, alg string
		ok             bool
	}{
		{`Digest nonce="q1w2e3==", algorithm=MD5`, "q1w2e3==", "MD5", true},
		{`digest NONCE = "q1w2e3==" , Algorithm = SM3`, "q1w2e3==", "SM3", true},
		{`Digest nonce=q1w2e3==,algorithm="SHA-256"`, "q1w2e3==", "SHA-256", true},
		{`Digest nonce="q1w2e3==" algorithm=SM3`, "q1w2e3==", "SM3", true},
		{`Digest algorithm =MD5, nonce= "a+b/c="`, "a+b/c=", "MD5", true},
		{`nonce="abc"`, "abc", "", true},
		{`Digest nonce="abc", realm="x, y", algorithm=MD5`, "abc", "MD5", true},
		{`Digest  nonce="abc",,  algorithm=MD5 ,`, "abc", "MD5", true},
		{``, "", "", false},
		{`Digest`, "", "", false},
		{`Digest algorithm=MD5`, "", "", false},
		{`Digest nonce=""`, "", "", false},
		{`Digest nonce="abc`, "", "", false},
		{`Digest nonce`, "", "", false},
		{`Digest =abc`, "", "", false},
		{`Basic nonce="abc"`, "", "", false},
		{`Digest nonce="a", nonce="b"`, "", "", false},
		{`Digest nonce="a", algorithm=MD5, algorithm=SM3`, "", "", false},
	}
	for _, c := range cases {
		nonce, alg, err := ParseNote(c.in)
		if (err == nil) != c.ok || nonce != c.nonce || alg != c.alg {
			t.Errorf("ParseNote(%q) = %q, %q, %v; want %q, %q, ok=%v", c.in, nonce, alg, err, c.nonce, c.alg, c.ok)
		}
	}
}

func TestGBDate(t *testing.T) {
	at := time.Date(2026, 11, 2, 10, 0, 7, 123e6, time.Local)
	if got := GBDate(at); got != "2026-11-02T10:00:07" {
		t.Fatalf("GBDate = %q", got)
	}
	if got := GBDate(at.UTC()); got != "2026-11-02T10:00:07" {
		t.Fatalf("GBDate of the same instant in UTC = %q: want local time", got)
	}
	for in, want := range map[string]time.Time{
		"2026-11-02T10:00:07":       at.Truncate(time.Second),
		" 2026-11-02T10:00:07.123 ": at,
	} {
		if got, err := ParseGBDate(in); err != nil || !got.Equal(want) {
			t.Errorf("ParseGBDate(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "2026-11-02 10:00:07", "2026-11-02T10:00", "Mon, 02 Nov 2026 10:00:07 GMT", "2026-11-02T10:00:07Z"} {
		if _, err := ParseGBDate(in); err == nil {
			t.Errorf("ParseGBDate(%q) accepted", in)
		}
	}
}

func FuzzParseNote(f *testing.F) {
	for _, s := range []string{`Digest nonce="q1w2e3==", algorithm=MD5`, `digest nonce = abc ,algorithm = SM3`,
		`Digest nonce="a`, `nonce=`, `Digest ,,,=`, "Digest nonce=\"\xff\"", ``} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		nonce, alg, err := ParseNote(v)
		if err != nil {
			return
		}
		if nonce == "" {
			t.Fatalf("ParseNote(%q) accepted an empty nonce", v)
		}
		// What we write for a parsed note parses back the same.
		again := `Digest nonce="` + nonce + `"`
		if alg != "" {
			again += `, algorithm="` + alg + `"`
		}
		if !strings.Contains(nonce, `"`) && !strings.Contains(alg, `"`) {
			if n2, a2, err := ParseNote(again); err != nil || n2 != nonce || a2 != alg {
				t.Fatalf("ParseNote(%q) = %q, %q, %v; want %q, %q", again, n2, a2, err, nonce, alg)
			}
		}
	})
}

func FuzzNoteVerify(f *testing.F) {
	f.Add(`Digest nonce="q1w2e3==", algorithm=MD5`, noteDate, "3187228566@192.0.2.10", []byte(noteBody), false)
	f.Add(`Digest nonce="0123456789abcdef0123456789abcdef", algorithm=md5`, noteDate+".999", "x", []byte{}, true)
	f.Add("Digest nonce=\"\", algorithm=\xff", "\x00", "", []byte("\xff"), false)
	at := noteClock(f)
	f.Fuzz(func(t *testing.T, note, date, callID string, body []byte, isHex bool) {
		c := NoteConfig{Algorithm: "SM3", Seed: noteSeed, Hex: isHex}
		n := NewNotary(10*time.Minute, at)
		req := sip.NewRequest(sip.MESSAGE, sip.Uri{User: "34020000002000000001", Host: "3402000000"})
		from := &sip.FromHeader{Address: sip.Uri{User: "34020000001320000001", Host: "3402000000"}}
		from.Params.Add("tag", "1")
		req.AppendHeader(from)
		req.AppendHeader(&sip.ToHeader{Address: sip.Uri{User: "34020000002000000001", Host: "3402000000"}})
		cid := sip.CallIDHeader(callID)
		req.AppendHeader(&cid)
		req.AppendHeader(sip.NewHeader("Date", date))
		req.AppendHeader(sip.NewHeader("Note", note))
		req.SetBody(body)
		err := n.Verify(req, c)
		if err != nil && !errors.Is(err, ErrNoteInvalid) && !errors.Is(err, ErrNoteDate) && !errors.Is(err, ErrNoteReplay) {
			t.Fatalf("untyped error %v", err)
		}
		if err == nil {
			t.Fatalf("random Note %q verified", note)
		}
		// Signed, the same request verifies whenever its Date is valid.
		if err := n.Sign(req, c); err != nil {
			t.Fatal(err)
		}
		err = n.Verify(req, c)
		if d, derr := ParseGBDate(date); derr == nil && d.Sub(at()).Abs() <= 10*time.Minute {
			if err != nil {
				t.Fatalf("signed request with Date %q: %v", date, err)
			}
		} else if !errors.Is(err, ErrNoteDate) {
			t.Fatalf("signed request with bad Date %q: got %v, want ErrNoteDate", date, err)
		}
	})
}

// BenchmarkNoteSign: the "plain" case is what every request costs to
// write anyway (serialising it), the baseline the signing cost reads against.
func BenchmarkNoteSign(b *testing.B) {
	b.Run("plain", func(b *testing.B) {
		req := parseRequest(b, noteMessage("z9hG4bK1", noteDate))
		b.ReportAllocs()
		for b.Loop() {
			_ = req.String()
		}
	})
	for _, alg := range []string{"MD5", "SHA-256", "SM3"} {
		b.Run(alg, func(b *testing.B) {
			n := NewNotary(0, noteClock(b))
			req := parseRequest(b, noteMessage("z9hG4bK1", noteDate))
			c := NoteConfig{Algorithm: alg, Seed: noteSeed}
			b.ReportAllocs()
			for b.Loop() {
				if err := n.Sign(req, c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkNoteVerify verifies one message over and over: after the first
// time it is a retransmission, so the replay cache is looked up, not grown.
// The "plain" case is parsing the message, which every request costs.
func BenchmarkNoteVerify(b *testing.B) {
	b.Run("plain", func(b *testing.B) {
		raw := []byte(noteMessage("z9hG4bK1", noteDate))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := sip.ParseMessage(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, alg := range []string{"MD5", "SHA-256", "SM3"} {
		b.Run(alg, func(b *testing.B) {
			n := NewNotary(0, noteClock(b))
			c := NoteConfig{Algorithm: alg, Seed: noteSeed}
			req := parseRequest(b, noteMessage("z9hG4bK1", noteDate))
			if err := n.Sign(req, c); err != nil {
				b.Fatal(err)
			}
			req = parseRequest(b, req.String())
			b.ReportAllocs()
			for b.Loop() {
				if err := n.Verify(req, c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The digest covers neither method nor CSeq: the ACK and the BYE after it in
// the same second, both without a body, carry the same nonce. Both pass; the
// BYE again under another branch is a replay.
func TestNoteSameNonceOtherMethod(t *testing.T) {
	c := NoteConfig{Algorithm: "MD5", Seed: noteSeed}
	n := NewNotary(10*time.Minute, noteClock(t))
	inDialog := func(method, branch string) *sip.Request {
		raw := "MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\r\n" +
			"Via: SIP/2.0/UDP 192.0.2.10:5060;rport;branch=" + branch + "\r\n" +
			"From: <sip:34020000001320000001@3402000000>;tag=1928169842\r\n" +
			"To: <sip:34020000002000000001@3402000000>;tag=77\r\n" +
			"Call-ID: 3187228566@192.0.2.10\r\n" +
			"CSeq: 20 MESSAGE\r\n" +
			"Date: " + noteDate + "\r\n" +
			"Content-Length: 0\r\n\r\n"
		raw = strings.ReplaceAll(raw, "MESSAGE", method)
		return signRaw(t, c, raw, nil)
	}
	ack, bye := inDialog("ACK", "z9hG4bKa"), inDialog("BYE", "z9hG4bKb")
	if ack.GetHeader(NoteHeader).Value() != bye.GetHeader(NoteHeader).Value() {
		t.Fatal("test premise: ACK and BYE should carry the same Note")
	}
	if err := n.Verify(ack, c); err != nil {
		t.Fatal(err)
	}
	if err := n.Verify(bye, c); err != nil {
		t.Fatalf("BYE after the ACK in the same second: %v", err)
	}
	if err := n.Verify(inDialog("BYE", "z9hG4bKc"), c); !errors.Is(err, ErrNoteReplay) {
		t.Fatalf("the BYE under another branch: got %v, want ErrNoteReplay", err)
	}
}
