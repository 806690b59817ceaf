package security

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// startRegistrar serves REGISTER on 127.0.0.1 over UDP the way gbproxy's
// registrar is meant to use DigestServer, and returns its address.
func startRegistrar(t *testing.T, s *DigestServer, algorithm string) string {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("gbproxy-test"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
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
		err := s.Verify(attempt(req.Method.String(), auth.Value(), req.Source(), req.From().Address.User))
		switch {
		case err == nil:
			tx.Respond(sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil))
		case errors.Is(err, ErrStaleNonce):
			tx.Respond(challenge(true))
		case errors.Is(err, ErrMalformed):
			tx.Respond(sip.NewResponseFromRequest(req, sip.StatusBadRequest, "Bad Request", nil))
		default:
			tx.Respond(sip.NewResponseFromRequest(req, sip.StatusForbidden, "Forbidden", nil))
		}
	})
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
