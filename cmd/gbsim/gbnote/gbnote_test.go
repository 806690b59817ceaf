package gbnote

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
)

// A fixed message, its header values as written on the wire.
const (
	kaFrom   = "<sip:34020000001320000001@3402000000>;tag=abc123"
	kaTo     = "<sip:34020000002000000001@3402000000>"
	kaCallID = "4f1c2b9a@127.0.0.1"
	kaDate   = "2024-05-06T07:08:09"
	kaSeed   = "s3cr3t-seed"
	kaBody   = "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>7</SN>\r\n<DeviceID>34020000001320000001</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
)

// The literal concatenation the standard describes: From+To+CallID+Date+seed+body.
const kaInput = "<sip:34020000001320000001@3402000000>;tag=abc123" + "<sip:34020000002000000001@3402000000>" +
	"4f1c2b9a@127.0.0.1" + "2024-05-06T07:08:09" + "s3cr3t-seed" + kaBody

func signer(t testing.TB, cfg Config) *Signer {
	t.Helper()
	s, err := New(cfg)
	if err != nil || s == nil {
		t.Fatalf("New(%+v) = %v, %v", cfg, s, err)
	}
	return s
}

func TestKnownAnswers(t *testing.T) {
	md5Sum := md5.Sum([]byte(kaInput))
	shaSum := sha256.Sum256([]byte(kaInput))
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Seed: kaSeed}, `Digest nonce="` + base64.StdEncoding.EncodeToString(md5Sum[:]) + `", algorithm=MD5`},
		{Config{Seed: kaSeed, Algorithm: "md5", Hex: true}, `Digest nonce="` + hex.EncodeToString(md5Sum[:]) + `", algorithm=MD5`},
		{Config{Seed: kaSeed, Algorithm: "SHA-256"}, `Digest nonce="` + base64.StdEncoding.EncodeToString(shaSum[:]) + `", algorithm=SHA-256`},
	} {
		s := signer(t, tc.cfg)
		// Whitespace around values, as a parser may leave it, is not part of the input.
		if got := s.Note(" "+kaFrom, kaTo+" ", kaCallID, "\t"+kaDate, []byte(kaBody)); got != tc.want {
			t.Errorf("%+v: Note = %s, want %s", tc.cfg, got, tc.want)
		}
	}
}

func TestSM3KnownAnswer(t *testing.T) {
	// GB/T 32905-2016 example 1.
	const want = "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
	s := signer(t, Config{Seed: "x", Algorithm: "SM3", Hex: true})
	if got := string(s.AppendNonce(nil, []byte("abc"))); got != want {
		t.Fatalf("SM3(abc) = %s, want %s", got, want)
	}
	// The same digest through the whole Note: input "a"+"b"+""+"c"... is not possible with a
	// non-empty seed, so check the algorithm name and base64 length instead.
	note := signer(t, Config{Seed: kaSeed, Algorithm: "sm3"}).Note(kaFrom, kaTo, kaCallID, kaDate, []byte(kaBody))
	nonce, alg, err := ParseNote(note)
	if err != nil || alg != SM3 || len(nonce) != 44 {
		t.Fatalf("SM3 Note %q: nonce %q alg %q err %v", note, nonce, alg, err)
	}
}

func TestNewRejectsUnknownAlgorithm(t *testing.T) {
	if s, err := New(Config{}); s != nil || err != nil {
		t.Errorf("zero Config: %v, %v; want off (nil, nil)", s, err)
	}
	if _, err := New(Config{Seed: "x", Algorithm: "SHA-1"}); err == nil || !strings.Contains(err.Error(), "SHA-1") {
		t.Errorf("SHA-1: err = %v, want an error naming it", err)
	}
}

func TestCheck(t *testing.T) {
	now := time.Date(2024, 5, 6, 7, 10, 0, 0, time.Local)
	for _, cfg := range []Config{{Seed: kaSeed}, {Seed: kaSeed, Algorithm: SHA256}, {Seed: kaSeed, Algorithm: SM3}, {Seed: kaSeed, Hex: true}} {
		s := signer(t, cfg)
		note := s.Note(kaFrom, kaTo, kaCallID, kaDate, []byte(kaBody))
		// Milliseconds are accepted; they are part of the Date value and so of the digest.
		noteMS := s.Note(kaFrom, kaTo, kaCallID, kaDate+".250", []byte(kaBody))
		for _, tc := range []struct {
			name                     string
			from, callID, date, note string
			body                     string
			want                     error
		}{
			{"valid", kaFrom, kaCallID, kaDate, note, kaBody, nil},
			{"valid with milliseconds", kaFrom, kaCallID, kaDate + ".250", noteMS, kaBody, nil},
			{"tampered body", kaFrom, kaCallID, kaDate, note, strings.Replace(kaBody, "OK", "ON", 1), ErrMismatch},
			{"other From tag", strings.Replace(kaFrom, "abc123", "abc124", 1), kaCallID, kaDate, note, kaBody, ErrMismatch},
			{"other Call-ID", kaFrom, "x" + kaCallID, kaDate, note, kaBody, ErrMismatch},
			{"no Note", kaFrom, kaCallID, kaDate, "", kaBody, ErrNoNote},
			{"not Digest", kaFrom, kaCallID, kaDate, "Basic abc", kaBody, ErrBadNote},
			{"no Date", kaFrom, kaCallID, "", note, kaBody, ErrNoDate},
			{"bad Date", kaFrom, kaCallID, "06/05/2024 07:08:09", note, kaBody, ErrBadDate},
			{"stale Date", kaFrom, kaCallID, "2024-05-06T06:58:08", note, kaBody, ErrStaleDate},
			{"future Date", kaFrom, kaCallID, "2024-05-06T07:20:01", note, kaBody, ErrStaleDate},
			{"other algorithm", kaFrom, kaCallID, kaDate, strings.Replace(note, "algorithm="+s.Algorithm(), "algorithm=SHA-512", 1), kaBody, ErrAlgorithm},
			{"nonce not encoded", kaFrom, kaCallID, kaDate, `Digest nonce="@@@", algorithm=` + s.Algorithm(), kaBody, ErrBadNote},
		} {
			err := s.Check(tc.from, kaTo, tc.callID, tc.date, tc.note, []byte(tc.body), now)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("%s/%s: Check = %v, want %v", s.Algorithm(), tc.name, err, tc.want)
			}
		}
	}
}

func TestCheckAcceptsUpperCaseHex(t *testing.T) {
	s := signer(t, Config{Seed: kaSeed, Hex: true})
	note := strings.ToUpper(s.Note(kaFrom, kaTo, kaCallID, kaDate, nil))
	note = strings.Replace(note, "DIGEST NONCE", "Digest nonce", 1)
	if err := s.Check(kaFrom, kaTo, kaCallID, kaDate, note, nil, mustDate(t, kaDate)); err != nil {
		t.Fatalf("upper-case hex %s: %v", note, err)
	}
}

func mustDate(t testing.TB, v string) time.Time {
	t.Helper()
	d, err := ParseDate(v)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestParseNote(t *testing.T) {
	for _, tc := range []struct {
		in, nonce, alg string
		ok             bool
	}{
		{`Digest nonce="abc=", algorithm=MD5`, "abc=", "MD5", true},
		{`digest  algorithm="SM3",nonce="x+/="`, "x+/=", "SM3", true},
		{`Digest nonce=abc , algorithm = SHA-256, qop=auth`, "abc", "SHA-256", true},
		{`Digest nonce="abc"`, "abc", "", true},
		{`Digest algorithm=MD5`, "", "", false},
		{`Digest nonce="abc`, "", "", false},
		{`Digest nonce=""`, "", "", false},
		{``, "", "", false},
		{`Basic nonce="abc"`, "", "", false},
	} {
		nonce, alg, err := ParseNote(tc.in)
		if (err == nil) != tc.ok || nonce != tc.nonce || alg != tc.alg {
			t.Errorf("ParseNote(%q) = %q, %q, %v; want %q, %q, ok=%v", tc.in, nonce, alg, err, tc.nonce, tc.alg, tc.ok)
		}
	}
}

// The load generators sign on their hot path: assembling input and Note in a reused buffer must
// not allocate, also when the header values lie in that buffer.
func TestAppendNoteAllocatesNothing(t *testing.T) {
	for _, alg := range []string{MD5, SHA256, SM3} {
		s := signer(t, Config{Seed: kaSeed, Algorithm: alg})
		from, to, callID, date, body := []byte(kaFrom), []byte(kaTo), []byte(kaCallID), []byte(kaDate), []byte(kaBody)
		buf := make([]byte, 0, 2048)
		want := s.Note(kaFrom, kaTo, kaCallID, kaDate, []byte(kaBody))
		allocs := testing.AllocsPerRun(100, func() {
			buf = s.AppendNoteOf(buf[:0], from, to, callID, date, body)
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per Note, want 0", alg, allocs)
		}
		if string(buf) != want {
			t.Errorf("%s: Note built in place = %s, want %s", alg, buf, want)
		}
		// Values aliasing the buffer, as in a message being written: the Note goes after them.
		msg := []byte("From: " + kaFrom + "\r\nTo: " + kaTo + "\r\nCall-ID: " + kaCallID + "\r\nDate: " + kaDate + "\r\nNote: ")
		at := func(v string) []byte { i := strings.Index(string(msg), v); return msg[i : i+len(v)] }
		got := s.AppendNoteOf(msg, at(kaFrom), at(kaTo), at(kaCallID), at(kaDate), body)
		if tail, ok := strings.CutPrefix(string(got), string(msg)); !ok || tail != want {
			t.Errorf("%s: Note after aliased values = %q, want %q", alg, got, want)
		}
	}
}

func FuzzParseNote(f *testing.F) {
	f.Add(`Digest nonce="abc=", algorithm=MD5`)
	f.Add(`digest algorithm="SM3",nonce=x`)
	f.Add(`Digest nonce="`)
	f.Fuzz(func(t *testing.T, v string) {
		nonce, _, err := ParseNote(v)
		if err == nil && nonce == "" {
			t.Fatalf("ParseNote(%q) accepted an empty nonce", v)
		}
		if err != nil && !errors.Is(err, ErrBadNote) {
			t.Fatalf("ParseNote(%q): error %v does not wrap ErrBadNote", v, err)
		}
	})
}

func BenchmarkAppendNote(b *testing.B) {
	for _, alg := range []string{MD5, SHA256, SM3} {
		b.Run(alg, func(b *testing.B) {
			s := signer(b, Config{Seed: kaSeed, Algorithm: alg})
			from, to, callID, date, body := []byte(kaFrom), []byte(kaTo), []byte(kaCallID), []byte(kaDate), []byte(kaBody)
			buf := make([]byte, 0, 2048)
			b.ReportAllocs()
			for b.Loop() {
				buf = s.AppendNoteOf(buf[:0], from, to, callID, date, body)
			}
		})
	}
}

func BenchmarkCheck(b *testing.B) {
	s := signer(b, Config{Seed: kaSeed})
	now := mustDate(b, kaDate)
	note := s.Note(kaFrom, kaTo, kaCallID, kaDate, []byte(kaBody))
	body := []byte(kaBody)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Check(kaFrom, kaTo, kaCallID, kaDate, note, body, now); err != nil {
			b.Fatal(err)
		}
	}
}
