package load

import (
	"context"
	"crypto/md5"
	"encoding/base64"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/gbnote"
)

// noteTally counts the Note checks of the requests a fake peer received; guarded by the peer's mu.
type noteTally struct {
	valid, invalid int
	byMethod       map[string]int // valid, per method and CmdType
	firstErr       error
}

// checking wraps a fake peer's handler with the Note check; without a signer it returns handle.
func (n *noteTally) checking(s *gbnote.Signer, handle func(message, *net.UDPAddr)) func(message, *net.UDPAddr) {
	if s == nil {
		return handle
	}
	return func(msg message, from *net.UDPAddr) {
		if msg.status == 0 && msg.method != "REGISTER" {
			err := s.Check(msg.header("From"), msg.header("To"), msg.callID, msg.header("Date"), msg.header("Note"), msg.body, time.Now())
			if err != nil {
				n.invalid++
				if n.firstErr == nil {
					n.firstErr = err
				}
			} else {
				if n.byMethod == nil {
					n.byMethod = map[string]int{}
				}
				n.valid++
				n.byMethod[msg.method+" "+string(peekMANSCDP(msg.body).cmdType)]++
			}
		}
		handle(msg, from)
	}
}

// TestQueryLoadSigned runs queries through a relay that signs its own requests and checks the
// Note of every request the generator sends: the upper's queries, the device's Responses and its
// Catalog answer all check out, and the generator takes the relay's signed requests as before.
func TestQueryLoadSigned(t *testing.T) {
	for _, alg := range []string{gbnote.MD5, gbnote.SHA256, gbnote.SM3} {
		t.Run(alg, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cfg := gbnote.Config{Seed: "bench-seed", Algorithm: alg, Require: true}
			signer, err := gbnote.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			const n = 100
			q, err := NewQueryLoad(QueryConfig{ProxyID: testServerID, Domain: testDomain, DeviceID: testDeviceID, Password: testPassword,
				UpperID: testUpperID, Queries: n, Concurrency: 8, Note: cfg})
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			f := startSigningRelay(t, q.UpperAddr(), signer)
			if err := q.WaitRegistered(ctx); err != nil {
				t.Fatal(err)
			}
			if err := q.SetProxy(f.lower.LocalAddr().String(), f.upper.LocalAddr().String()); err != nil {
				t.Fatal(err)
			}
			res, err := q.Run(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if res.Completed != n || res.Failed != 0 {
				t.Fatalf("got %+v, want %d completed", res, n)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			tally := f.notes
			if tally.invalid != 0 {
				t.Errorf("%d requests without a valid Note, first: %v", tally.invalid, tally.firstErr)
			}
			// Each query and each Response at least once (retransmissions are signed alike).
			if tally.byMethod["MESSAGE DeviceStatus"] < 2*n || tally.byMethod["MESSAGE Catalog"] < 1 {
				t.Errorf("valid Notes by request: %v, want %d DeviceStatus queries and Responses and the Catalog answer", tally.byMethod, 2*n)
			}
		})
	}
}

// TestMessageNoteOnTheWire computes the Note of a generated message step by step with crypto/md5
// over the literal header values, and checks the message still scans and its length is right.
func TestMessageNoteOnTheWire(t *testing.T) {
	const seed = "wire-seed"
	tmpl := newTemplate(testUpperID, "4401000000", testDeviceID, "3402000000", "127.0.0.1:5060", "gbq-x-1-")
	var err error
	if tmpl.note, err = gbnote.New(gbnote.Config{Seed: seed}); err != nil {
		t.Fatal(err)
	}
	body := appendDeviceStatusQuery(nil, 42, testDeviceID)
	raw := string(tmpl.appendMessage(nil, 42, body))
	date, ok := headerOf(raw, "Date")
	if !ok || len(date) != len("2006-01-02T15:04:05") || date[10] != 'T' {
		t.Fatalf("Date %q in\n%s", date, raw)
	}
	sum := md5.Sum([]byte("<sip:" + testUpperID + "@4401000000>;tag=f42" + "<sip:" + testDeviceID + "@3402000000>" + "gbq-x-1-42" + date + seed + string(body)))
	want := `Digest nonce="` + base64.StdEncoding.EncodeToString(sum[:]) + `", algorithm=MD5`
	if note, _ := headerOf(raw, "Note"); note != want {
		t.Errorf("Note %q, want %q", note, want)
	}
	if !strings.Contains(raw, "\r\nCall-ID: gbq-x-1-42\r\nDate: "+date+"\r\nNote: "+want+"\r\nCSeq: 1 MESSAGE\r\n") ||
		!strings.HasSuffix(raw, "Content-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+string(body)) {
		t.Errorf("message layout:\n%s", raw)
	}
	h, err := scan([]byte(raw))
	if err != nil || string(h.callID) != "gbq-x-1-42" || h.cseq != 1 || string(h.body) != string(body) {
		t.Errorf("signed message scans as %+v, %v", h, err)
	}

	// On the hot path a reused buffer makes signing allocation-free.
	buf := make([]byte, 0, 256)
	allocs := testing.AllocsPerRun(100, func() { buf = tmpl.appendMessage(buf[:0], 42, body) })
	if allocs != 0 {
		t.Errorf("signed appendMessage: %v allocations with a reused buffer, want 0", allocs)
	}
}

func headerOf(raw, name string) (string, bool) {
	for _, line := range strings.Split(raw, "\r\n") {
		if v, ok := strings.CutPrefix(line, name+": "); ok {
			return v, true
		}
	}
	return "", false
}

// BenchmarkAppendMessage is the generator's cost of building one query, plain and signed.
func BenchmarkAppendMessage(b *testing.B) {
	body := appendDeviceStatusQuery(nil, 42, testDeviceID)
	for _, alg := range []string{"off", gbnote.MD5, gbnote.SHA256, gbnote.SM3} {
		b.Run(alg, func(b *testing.B) {
			tmpl := newTemplate(testUpperID, "4401000000", testDeviceID, "3402000000", "127.0.0.1:5060", "gbq-x-1-")
			if alg != "off" {
				tmpl.note, _ = gbnote.New(gbnote.Config{Seed: "bench-seed", Algorithm: alg})
			}
			buf := make([]byte, 0, 2048)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				buf = tmpl.appendMessage(buf[:0], int64(i), body)
			}
		})
	}
}
