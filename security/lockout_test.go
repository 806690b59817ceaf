package security

import (
	"crypto/md5"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// guesser sends attempts to s the way a device or an attacker would.
type guesser struct {
	t *testing.T
	s *DigestServer
}

// try answers a fresh challenge as user with password, claiming From ID id,
// from source; registeredIP is where the registrar has id registered.
func (g guesser) try(id, user, password, source, registeredIP string) error {
	g.t.Helper()
	a := deviceAnswer()
	a.user, a.password = user, password
	return g.s.Verify(Attempt{
		Method:        "REGISTER",
		Authorization: respond(g.t, g.s.Challenge("MD5", false), a),
		ID:            id,
		Source:        source,
		RegisteredIP:  registeredIP,
		Secret:        Secret{Password: testUsers[id]},
	})
}

// device tries testDevice's right credentials.
func (g guesser) device(source, registeredIP string) error {
	g.t.Helper()
	return g.try(testDevice, testDevice, testPassword, source, registeredIP)
}

func TestLockoutRotatingIDsPerIP(t *testing.T) {
	clock := newFakeClock()
	g := guesser{t, newTestServer(clock)} // 30 failures per IP in 5m lock it for 10m
	const attacker = "127.0.0.2"

	// A fresh ID on every guess never reaches the per-(ID, IP) limit of 5.
	for i := range 30 {
		id := fmt.Sprintf("340200000013200%05d", i)
		if err := g.try(id, id, "guess", attacker+":5060", ""); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("guess %d: got %v, want ErrBadCredentials", i+1, err)
		}
		clock.Advance(5 * time.Second)
	}
	// Locked whatever the ID, even with the right password.
	if err := g.device(attacker+":6000", ""); !errors.Is(err, ErrLockedOut) {
		t.Fatalf("after 30 failures from one IP with rotating IDs: got %v, want ErrLockedOut", err)
	}
	if err := g.try("34020000001320099999", "34020000001320099999", "guess", attacker, ""); !errors.Is(err, ErrLockedOut) {
		t.Fatalf("a new ID from the locked IP: got %v, want ErrLockedOut", err)
	}
	// The device from its own address is not affected.
	if err := g.device(testSource+":5060", ""); err != nil {
		t.Fatalf("legitimate device during the attack: %v", err)
	}
	clock.Advance(10 * time.Minute)
	if err := g.device(attacker, ""); err != nil {
		t.Fatalf("after the IP lockout: %v", err)
	}
}

func TestLockoutRotatingUsernameForOneID(t *testing.T) {
	clock := newFakeClock()
	g := guesser{t, newTestServer(clock)}
	// Changing the digest username while claiming the same From ID counts
	// against that ID from that IP: the old (username, IP) keying let this
	// through.
	for i := range 5 {
		user := fmt.Sprintf("user%d", i)
		err := g.try(testDevice, user, "guess", "127.0.0.2", "")
		if !errors.Is(err, ErrBadCredentials) || !strings.Contains(err.Error(), "is not the From ID") {
			t.Fatalf("username %s for ID %s: got %v, want ErrBadCredentials naming the mismatch", user, testDevice, err)
		}
	}
	if err := g.device("127.0.0.2", ""); !errors.Is(err, ErrLockedOut) {
		t.Fatalf("after 5 mismatched usernames: got %v, want ErrLockedOut", err)
	}
	if err := g.device(testSource, ""); err != nil {
		t.Fatalf("device from another IP: %v", err)
	}
}

func TestUsernameMustBeFromID(t *testing.T) {
	g := guesser{t, newTestServer(newFakeClock())}
	// admin's own valid credentials do not authenticate the From ID testDevice.
	if err := g.try(testDevice, "admin", "12345", testSource, ""); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("valid credentials of another account: got %v, want ErrBadCredentials", err)
	}
	if err := g.try("admin", "admin", "12345", testSource, ""); err != nil {
		t.Fatalf("the same credentials for their own ID: %v", err)
	}
	// An ID with no secret is unknown, and counts.
	const unknown = "34020000001320009999"
	for range 5 {
		if err := g.try(unknown, unknown, "guess", testSource, ""); !errors.Is(err, ErrBadCredentials) || !strings.Contains(err.Error(), "unknown ID") {
			t.Fatalf("unknown ID: got %v", err)
		}
	}
	if err := g.try(unknown, unknown, "guess", testSource, ""); !errors.Is(err, ErrLockedOut) {
		t.Fatalf("unknown ID after 5 failures: got %v, want ErrLockedOut", err)
	}
}

func TestLockoutPerID(t *testing.T) {
	clock := newFakeClock()
	g := guesser{t, newTestServer(clock)} // 20 failures for one ID in 5m: only its registered IP for 10m
	const registered = "192.0.2.50"

	// Four attacking addresses, five guesses each; each address gets locked
	// by the per-(ID, IP) limit, and the ID's count reaches 20 on the last.
	for attacker := range 4 {
		source := fmt.Sprintf("127.0.0.%d", attacker+2)
		if attacker == 3 {
			// Below the per-ID limit, the device from an unlocked new
			// address still gets in.
			if err := g.device("198.51.100.7", registered); err != nil {
				t.Fatalf("device from a new address after 15 failures: %v", err)
			}
		}
		for i := range 5 {
			if err := g.try(testDevice, testDevice, "guess", source, registered); !errors.Is(err, ErrBadCredentials) {
				t.Fatalf("attacker %s guess %d: got %v", source, i+1, err)
			}
		}
	}
	if err := g.device("198.51.100.8", registered); !errors.Is(err, ErrLockedOut) {
		t.Fatalf("new address after 20 failures for the ID: got %v, want ErrLockedOut", err)
	}
	if err := g.device("198.51.100.8", ""); !errors.Is(err, ErrLockedOut) {
		t.Fatalf("new address for an unregistered, attacked ID: got %v, want ErrLockedOut", err)
	}
	// The registered address keeps working, with any port and as ip:port.
	if err := g.device(registered+":5060", registered); err != nil {
		t.Fatalf("registered address during the per-ID lockout: %v", err)
	}
	if err := g.device(registered+":5070", registered+":5060"); err != nil {
		t.Fatalf("registered address (given as ip:port) during the per-ID lockout: %v", err)
	}
	// Other IDs are not affected from those new addresses.
	if err := g.try("admin", "admin", "12345", "198.51.100.8", ""); err != nil {
		t.Fatalf("another ID during the per-ID lockout: %v", err)
	}
	clock.Advance(10 * time.Minute)
	if err := g.device("198.51.100.8", registered); err != nil {
		t.Fatalf("new address after the per-ID lockout: %v", err)
	}
}

func TestLockedAttemptsDoNotExtend(t *testing.T) {
	clock := newFakeClock()
	s := NewDigestServer(DigestConfig{Realm: testRealm, Now: clock.Now,
		Lockout: LockoutConfig{MaxFailures: 3, MaxFailuresPerIP: 6, MaxFailuresPerID: 9, Window: time.Minute, LockFor: 2 * time.Minute}})
	g := guesser{t, s}
	fail := func(id, source string, n int) {
		t.Helper()
		for i := range n {
			if err := g.try(id, id, "guess", source, ""); !errors.Is(err, ErrBadCredentials) {
				t.Fatalf("failure %d for %s from %s: %v", i+1, id, source, err)
			}
		}
	}
	// Keep guessing through each lock: the guesses are refused and the lock
	// ends on time. The per-IP lock:
	for i := range 6 {
		fail(fmt.Sprintf("3402000000132001%04d", i), "127.0.0.2", 1)
	}
	// Per (ID, IP) and per ID on testDevice, from other addresses:
	fail(testDevice, "127.0.0.3", 3)
	fail(testDevice, "127.0.0.4", 3)
	fail(testDevice, "127.0.0.5", 3)
	locked := []string{"127.0.0.2", "127.0.0.3", "198.51.100.1"} // per IP, per (ID, IP), per ID
	for range 119 {
		clock.Advance(time.Second)
		for _, source := range locked {
			if err := g.try(testDevice, testDevice, "guess", source, ""); !errors.Is(err, ErrLockedOut) {
				t.Fatalf("%s at %s: got %v, want ErrLockedOut", source, clock.Now().Format(time.TimeOnly), err)
			}
		}
	}
	clock.Advance(time.Second) // two minutes after each lock began
	for _, source := range locked {
		if err := g.device(source, ""); err != nil {
			t.Fatalf("%s after LockFor despite attempts while locked: %v", source, err)
		}
	}
}

// The registered address may still try during a per-ID lockout; its failures
// must not extend that lockout either.
func TestRegisteredIPDoesNotExtendIDLock(t *testing.T) {
	clock := newFakeClock()
	s := NewDigestServer(DigestConfig{Realm: testRealm, Now: clock.Now,
		Lockout: LockoutConfig{MaxFailuresPerID: 2, Window: time.Minute, LockFor: 2 * time.Minute}})
	g := guesser{t, s}
	const registered = "192.0.2.50"
	for range 2 {
		if err := g.try(testDevice, testDevice, "guess", "127.0.0.3", registered); !errors.Is(err, ErrBadCredentials) {
			t.Fatal(err)
		}
	}
	if err := g.device("198.51.100.1", registered); !errors.Is(err, ErrLockedOut) {
		t.Fatalf("new address after the per-ID limit: got %v, want ErrLockedOut", err)
	}
	clock.Advance(time.Minute)
	for range 2 {
		if err := g.try(testDevice, testDevice, "guess", registered, registered); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("registered address during the per-ID lockout: got %v, want ErrBadCredentials", err)
		}
	}
	clock.Advance(time.Minute)
	if err := g.device("198.51.100.1", registered); err != nil {
		t.Fatalf("new address once the per-ID lockout ended: %v", err)
	}
}

func TestHA1(t *testing.T) {
	md5HA1 := fmt.Sprintf("%x", md5.Sum([]byte(testDevice+":"+testRealm+":"+testPassword)))
	sha256HA1 := fmt.Sprintf("%x", sha256.Sum256([]byte(testDevice+":"+testRealm+":"+testPassword)))
	for alg, want := range map[string]string{"MD5": md5HA1, "md5-sess": md5HA1, "": md5HA1, "SHA-256": sha256HA1, "SHA-256-sess": sha256HA1, "SM3": ""} {
		if got := HA1(alg, testDevice, testRealm, testPassword); got != want {
			t.Errorf("HA1(%q) = %q, want %q", alg, got, want)
		}
	}
	for ha1, ok := range map[string]bool{md5HA1: true, sha256HA1: true, strings.ToUpper(md5HA1): true,
		md5HA1[:31]: false, md5HA1[:31] + "g": false, "": false, testPassword: false} {
		if err := CheckHA1(ha1); (err == nil) != ok {
			t.Errorf("CheckHA1(%q) = %v, want ok=%v", ha1, err, ok)
		}
	}
}

// Both ends hold only an HA1: our client answers our server.
func TestHA1RoundTrip(t *testing.T) {
	for _, alg := range []string{"MD5", "SHA-256"} {
		for _, offerQOP := range []bool{false, true} {
			s := NewDigestServer(DigestConfig{Realm: testRealm, OfferQOP: offerQOP})
			ha1 := HA1(alg, testDevice, testRealm, testPassword)
			for _, client := range []Secret{{HA1: ha1}, {HA1: strings.ToUpper(ha1)}, {Password: testPassword}} {
				header, err := Authorize(s.Challenge(alg, false), "REGISTER", testURI, testDevice, client)
				if err != nil {
					t.Fatalf("%s qop=%v: Authorize: %v", alg, offerQOP, err)
				}
				a := Attempt{Method: "REGISTER", Authorization: header, ID: testDevice, Source: testSource, Secret: Secret{HA1: ha1}}
				if err := s.Verify(a); err != nil {
					t.Errorf("%s qop=%v client %+v: %v (header %s)", alg, offerQOP, client, err, header)
				}
			}
		}
	}
	// -sess on the server side from an HA1 (our client has no -sess).
	for _, alg := range []string{"MD5-sess", "SHA-256-sess"} {
		s := newTestServer(newFakeClock())
		a := deviceAnswer()
		a.qop, a.nc, a.cnonce = "auth", "00000001", "0a4f113b"
		err := s.Verify(Attempt{Method: "REGISTER", Authorization: respond(t, s.Challenge(alg, false), a), ID: testDevice,
			Source: testSource, Secret: Secret{HA1: HA1(alg, testDevice, testRealm, testPassword)}})
		if err != nil {
			t.Errorf("%s with an HA1 secret: %v", alg, err)
		}
	}
}

func TestHA1AlgorithmMismatch(t *testing.T) {
	s := newTestServer(newFakeClock())
	md5HA1 := HA1("MD5", testDevice, testRealm, testPassword)
	// A configuration error, not a guess: it says what to fix and does not
	// lock the device out however often it happens.
	for range 8 {
		a := deviceAnswer()
		a.alg = "SHA-256"
		err := s.Verify(Attempt{Method: "REGISTER", Authorization: respond(t, s.Challenge("SHA-256", false), a),
			ID: testDevice, Source: testSource, Secret: Secret{HA1: md5HA1}})
		if !errors.Is(err, ErrBadCredentials) || !strings.Contains(err.Error(), "MD5 HA1 but the algorithm is SHA-256") {
			t.Fatalf("MD5 HA1 with a SHA-256 answer: got %v", err)
		}
	}
	if err := s.Verify(Attempt{Method: "REGISTER", Authorization: respond(t, s.Challenge("MD5", false), deviceAnswer()),
		ID: testDevice, Source: testSource, Secret: Secret{HA1: md5HA1}}); err != nil {
		t.Fatalf("MD5 answer after the mismatches: %v", err)
	}
	sha256HA1 := HA1("SHA-256", testDevice, testRealm, testPassword)
	if _, err := Authorize(s.Challenge("MD5", false), "REGISTER", testURI, testDevice, Secret{HA1: sha256HA1}); err == nil ||
		!strings.Contains(err.Error(), "SHA-256 HA1 but the algorithm is MD5") {
		t.Fatalf("client with a SHA-256 HA1 answering MD5: got %v", err)
	}
	if _, err := Authorize(s.Challenge("MD5", false), "REGISTER", testURI, testDevice, Secret{}); err == nil {
		t.Fatal("client without a secret answered a challenge")
	}
	if _, err := Authorize(s.Challenge("MD5-sess", false), "REGISTER", testURI, testDevice, Secret{Password: testPassword}); err == nil {
		t.Fatal("client answered an MD5-sess challenge it cannot compute")
	}
}

func TestStaleNonceWithHA1(t *testing.T) {
	clock := newFakeClock()
	s := NewDigestServer(DigestConfig{Realm: testRealm, NonceTTL: 30 * time.Second, Now: clock.Now})
	secret := Secret{HA1: HA1("MD5", testDevice, testRealm, testPassword)}
	header, err := Authorize(s.Challenge("MD5", false), "REGISTER", testURI, testDevice, secret)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(31 * time.Second)
	a := Attempt{Method: "REGISTER", Authorization: header, ID: testDevice, Source: testSource, Secret: secret}
	// Stale nonces never count: a device that keeps answering late must not
	// lock itself out.
	for range 10 {
		if err := s.Verify(a); !errors.Is(err, ErrStaleNonce) {
			t.Fatalf("answer to an expired nonce: got %v, want ErrStaleNonce", err)
		}
	}
	header, err = Authorize(s.Challenge("MD5", true), "REGISTER", testURI, testDevice, secret)
	if err != nil {
		t.Fatal(err)
	}
	a.Authorization = header
	if err := s.Verify(a); err != nil {
		t.Fatalf("answer to the stale=true challenge: %v", err)
	}
}
