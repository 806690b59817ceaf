package security

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// serveUDP runs a sipgo server on 127.0.0.1 with the handlers route sets,
// and returns its address.
func serveUDP(t *testing.T, route func(srv *sipgo.Server)) string {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("gbproxy-test"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	route(srv)
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeUDP(conn)
	t.Cleanup(func() {
		srv.Close()
		ua.Close()
		conn.Close()
	})
	return conn.LocalAddr().String()
}

// startRegistrar serves REGISTER the way gbproxy's registrar is meant to use
// DigestServer, with the secrets testUsers holds.
func startRegistrar(t *testing.T, s *DigestServer, algorithm string) string {
	return startRegistrarWith(t, s, algorithm, func(id string) Secret { return Secret{Password: testUsers[id]} })
}

// startRegistrarWith is startRegistrar with the secrets secret returns. A
// lockout is answered 403 "Locked Out" so that tests can tell it apart.
func startRegistrarWith(t *testing.T, s *DigestServer, algorithm string, secret func(id string) Secret) string {
	return serveUDP(t, func(srv *sipgo.Server) {
		srv.OnRegister(func(req *sip.Request, tx sip.ServerTransaction) {
			challenge := func(stale bool) *sip.Response {
				res := sip.NewResponseFromRequest(req, sip.StatusUnauthorized, "Unauthorized", nil)
				res.AppendHeader(sip.NewHeader("WWW-Authenticate", s.Challenge(algorithm, stale)))
				return res
			}
			auth := req.GetHeader("Authorization")
			if auth == nil {
				tx.Respond(challenge(false))
				return
			}
			id := req.From().Address.User
			err := s.Verify(Attempt{Method: req.Method.String(), Authorization: auth.Value(), ID: id,
				Source: req.Source(), Secret: secret(id)})
			switch {
			case err == nil:
				tx.Respond(sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil))
			case errors.Is(err, ErrStaleNonce):
				tx.Respond(challenge(true))
			case errors.Is(err, ErrMalformed):
				tx.Respond(sip.NewResponseFromRequest(req, sip.StatusBadRequest, "Bad Request", nil))
			case errors.Is(err, ErrLockedOut):
				tx.Respond(sip.NewResponseFromRequest(req, sip.StatusForbidden, "Locked Out", nil))
			default:
				tx.Respond(sip.NewResponseFromRequest(req, sip.StatusForbidden, "Forbidden", nil))
			}
		})
	})
}

// rawPeer is a UDP socket writing requests by hand, as a device or an
// attacker on another address would.
type rawPeer struct {
	t    *testing.T
	conn *net.UDPConn
	to   *net.UDPAddr
	seq  int
}

func newRawPeer(t *testing.T, local, to string) *rawPeer {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(local)})
	if err != nil {
		t.Fatalf("bind %s: %v", local, err)
	}
	t.Cleanup(func() { conn.Close() })
	addr, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		t.Fatal(err)
	}
	return &rawPeer{t: t, conn: conn, to: addr}
}

// send writes raw and returns the first final response.
func (p *rawPeer) send(raw string) *sip.Response {
	p.t.Helper()
	if _, err := p.conn.WriteToUDP([]byte(raw), p.to); err != nil {
		p.t.Fatal(err)
	}
	buf := make([]byte, 65535)
	for {
		p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := p.conn.ReadFromUDP(buf)
		if err != nil {
			p.t.Fatalf("no answer to %.60q: %v", raw, err)
		}
		msg, err := sip.ParseMessage(buf[:n])
		if err != nil {
			p.t.Fatalf("unparseable answer %q: %v", buf[:n], err)
		}
		if res, ok := msg.(*sip.Response); ok && res.StatusCode >= 200 {
			return res
		}
	}
}

// register sends REGISTER as id, answering the challenge with secret.
func (p *rawPeer) register(id string, secret Secret) *sip.Response {
	p.t.Helper()
	uri := "sip:34020000002000000001@3402000000"
	request := func(authorization string) string {
		p.seq++
		local := p.conn.LocalAddr().String()
		msg := fmt.Sprintf("REGISTER %s SIP/2.0\r\n"+
			"Via: SIP/2.0/UDP %s;rport;branch=z9hG4bK%d%d\r\n"+
			"From: <sip:%s@3402000000>;tag=%d\r\n"+
			"To: <sip:%s@3402000000>\r\n"+
			"Call-ID: %s@%s\r\n"+
			"CSeq: %d REGISTER\r\n"+
			"Contact: <sip:%s@%s>\r\n"+
			"Max-Forwards: 70\r\nExpires: 3600\r\n",
			uri, local, p.conn.LocalAddr().(*net.UDPAddr).Port, p.seq, id, p.seq, id, id, local, p.seq, id, local)
		if authorization != "" {
			msg += "Authorization: " + authorization + "\r\n"
		}
		return msg + "Content-Length: 0\r\n\r\n"
	}
	res := p.send(request(""))
	if res.StatusCode != sip.StatusUnauthorized {
		return res
	}
	auth, err := Authorize(res.GetHeader("WWW-Authenticate").Value(), "REGISTER", uri, id, secret)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.send(request(auth))
}

// An attacker on 127.0.0.2 guessing with a new ID each time is locked out
// as an address, while a device holding only an HA1 registers from 127.0.0.1.
func TestRotatingIDBruteForceOverUDP(t *testing.T) {
	s := NewDigestServer(DigestConfig{Realm: testRealm})
	ha1 := HA1("MD5", testDevice, testRealm, testPassword)
	addr := startRegistrarWith(t, s, "MD5", func(id string) Secret {
		if id == testDevice {
			return Secret{HA1: ha1}
		}
		return Secret{Password: "unguessable"}
	})
	attacker := newRawPeer(t, "127.0.0.2", addr)
	device := newRawPeer(t, "127.0.0.1", addr)
	for i := range 30 {
		res := attacker.register(fmt.Sprintf("340200000013200%05d", i), Secret{Password: "guess"})
		if res.StatusCode != sip.StatusForbidden || res.Reason != "Forbidden" {
			t.Fatalf("guess %d: %d %s, want 403 Forbidden", i+1, res.StatusCode, res.Reason)
		}
	}
	for _, id := range []string{"34020000001320099999", testDevice} {
		if res := attacker.register(id, Secret{Password: testPassword}); res.StatusCode != sip.StatusForbidden || res.Reason != "Locked Out" {
			t.Fatalf("attacker as %s after 30 guesses: %d %s, want 403 Locked Out", id, res.StatusCode, res.Reason)
		}
	}
	if res := device.register(testDevice, Secret{HA1: ha1}); res.StatusCode != sip.StatusOK {
		t.Fatalf("device during the attack: %d %s", res.StatusCode, res.Reason)
	}
}

// A signed MESSAGE verifies as sipgo parses it off the wire; the same bytes
// resent from another address under another branch are a replay.
func TestNoteOverUDP(t *testing.T) {
	c := NoteConfig{Algorithm: "SM3", Seed: noteSeed}
	n := NewNotary(10*time.Minute, noteClock(t))
	addr := serveUDP(t, func(srv *sipgo.Server) {
		srv.OnMessage(func(req *sip.Request, tx sip.ServerTransaction) {
			if err := n.Verify(req, c); err != nil {
				reason := "Note Invalid"
				switch {
				case errors.Is(err, ErrNoteMissing):
					reason = "Note Missing"
				case errors.Is(err, ErrNoteDate):
					reason = "Date Out Of Window"
				case errors.Is(err, ErrNoteReplay):
					reason = "Note Replayed"
				}
				tx.Respond(sip.NewResponseFromRequest(req, sip.StatusForbidden, reason, nil))
				return
			}
			tx.Respond(sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil))
		})
	})
	device := newRawPeer(t, "127.0.0.1", addr)
	attacker := newRawPeer(t, "127.0.0.2", addr)

	req := parseRequest(t, noteMessage("z9hG4bK1", ""))
	if err := NewNotary(0, noteClock(t)).Sign(req, c); err != nil {
		t.Fatal(err)
	}
	wire := req.String()
	if res := device.send(wire); res.StatusCode != sip.StatusOK {
		t.Fatalf("signed MESSAGE: %d %s", res.StatusCode, res.Reason)
	}
	replay := strings.Replace(wire, "branch=z9hG4bK1", "branch=z9hG4bK2", 1)
	if res := attacker.send(replay); res.StatusCode != sip.StatusForbidden || res.Reason != "Note Replayed" {
		t.Fatalf("replay from 127.0.0.2: %d %s, want 403 Note Replayed", res.StatusCode, res.Reason)
	}
	tampered := strings.Replace(replay, "<SN>17<", "<SN>99<", 1)
	tampered = strings.Replace(tampered, "branch=z9hG4bK2", "branch=z9hG4bK3", 1)
	if res := attacker.send(tampered); res.StatusCode != sip.StatusForbidden || res.Reason != "Note Invalid" {
		t.Fatalf("tampered body: %d %s, want 403 Note Invalid", res.StatusCode, res.Reason)
	}
	unsigned := strings.Replace(noteMessage("z9hG4bK4", noteDate), "3187228566@", "1@", 1)
	if res := attacker.send(unsigned); res.StatusCode != sip.StatusForbidden || res.Reason != "Note Missing" {
		t.Fatalf("unsigned MESSAGE: %d %s, want 403 Note Missing", res.StatusCode, res.Reason)
	}
}

// sipgo's client (DoDigestAuth, as used for our own upward registration)
// must get through our challenges for every algorithm and qop we offer.
func TestSipgoDigestClient(t *testing.T) {
	cases := []struct {
		algorithm string
		offerQOP  bool
		password  string
		want      int
	}{
		{"MD5", false, testPassword, sip.StatusOK},
		{"SHA-256", false, testPassword, sip.StatusOK},
		{"MD5", true, testPassword, sip.StatusOK},
		{"SHA-256", true, testPassword, sip.StatusOK},
		{"MD5", false, "wrong", sip.StatusForbidden},
	}
	ua, err := sipgo.NewUA(sipgo.WithUserAgent(testDevice))
	if err != nil {
		t.Fatal(err)
	}
	defer ua.Close()
	client, err := sipgo.NewClient(ua, sipgo.WithClientConnectionAddr("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	for _, c := range cases {
		t.Run(fmt.Sprintf("%s qop=%v password=%s", c.algorithm, c.offerQOP, c.password), func(t *testing.T) {
			s := NewDigestServer(DigestConfig{Realm: testRealm, OfferQOP: c.offerQOP})
			addr := startRegistrar(t, s, c.algorithm)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()

			var recipient sip.Uri
			if err := sip.ParseUri(fmt.Sprintf("sip:34020000002000000001@%s", addr), &recipient); err != nil {
				t.Fatal(err)
			}
			req := sip.NewRequest(sip.REGISTER, recipient)
			req.AppendHeader(sip.NewHeader("Contact", fmt.Sprintf("<sip:%s@127.0.0.1>", testDevice)))
			res, err := client.Do(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != sip.StatusUnauthorized {
				t.Fatalf("first REGISTER: %d, want 401", res.StatusCode)
			}
			res, err = client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: testDevice, Password: c.password})
			if err != nil {
				t.Fatal(err)
			}
			if int(res.StatusCode) != c.want {
				t.Fatalf("authenticated REGISTER: %d, want %d", res.StatusCode, c.want)
			}
		})
	}
}
