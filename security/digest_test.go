package security

import (
	"crypto/md5"
	"crypto/sha256"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/icholy/digest"
)

const (
	testRealm    = "3402000000"
	testDevice   = "34020000001320000001"
	testPassword = "12345678"
	testSource   = "192.0.2.10"
	// Devices often hash a uri that differs from the Request-URI.
	testURI = "sip:34020000002000000001@3402000000"
)

var testUsers = map[string]string{testDevice: testPassword, "admin": "12345"}

// attempt is a request from id at source, with the secret testUsers holds
// for id (none for an unknown id).
func attempt(method, header, source, id string) Attempt {
	return Attempt{Method: method, Authorization: header, ID: id, Source: source, Secret: Secret{Password: testUsers[id]}}
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newTestServer(clock *fakeClock) *DigestServer {
	return NewDigestServer(DigestConfig{Realm: testRealm, Now: clock.Now})
}

// answer is what a device puts in its Authorization header.
type answer struct {
	alg, user, realm, password, method, uri, nonce, opaque string
	qop, nc, cnonce                                        string
	omitAlgorithm                                          bool // RFC 2617: absent means MD5
}

// rfcResponse computes the response straight from the RFC 2617 / 7616
// formulas, independently of the package under test.
func rfcResponse(a answer) string {
	h := func(s string) string {
		if strings.HasPrefix(strings.ToUpper(a.alg), "SHA-256") {
			return fmt.Sprintf("%x", sha256.Sum256([]byte(s)))
		}
		return fmt.Sprintf("%x", md5.Sum([]byte(s)))
	}
	ha1 := h(a.user + ":" + a.realm + ":" + a.password)
	if strings.HasSuffix(strings.ToLower(a.alg), "-sess") {
		ha1 = h(ha1 + ":" + a.nonce + ":" + a.cnonce)
	}
	ha2 := h(a.method + ":" + a.uri)
	if a.qop == "" {
		return h(ha1 + ":" + a.nonce + ":" + ha2)
	}
	return h(ha1 + ":" + a.nonce + ":" + a.nc + ":" + a.cnonce + ":" + a.qop + ":" + ha2)
}

func (a answer) header(response string) string {
	s := fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s"`,
		a.user, a.realm, a.nonce, a.uri, response)
	if !a.omitAlgorithm {
		s += ", algorithm=" + a.alg
	}
	if a.opaque != "" {
		s += fmt.Sprintf(`, opaque="%s"`, a.opaque)
	}
	if a.qop != "" {
		s += fmt.Sprintf(`, qop=%s, nc=%s, cnonce="%s"`, a.qop, a.nc, a.cnonce)
	}
	return s
}

// answerChallenge answers a challenge the way a correctly configured device
// would; a.alg overrides the challenge's algorithm.
func answerChallenge(challenge string, a answer) (string, error) {
	ch, err := digest.ParseChallenge(challenge)
	if err != nil {
		return "", fmt.Errorf("our challenge %q does not parse: %w", challenge, err)
	}
	a.realm, a.nonce, a.opaque = ch.Realm, ch.Nonce, ch.Opaque
	if a.alg == "" {
		a.alg = ch.Algorithm
	}
	return a.header(rfcResponse(a)), nil
}

func respond(t testing.TB, challenge string, a answer) string {
	t.Helper()
	header, err := answerChallenge(challenge, a)
	if err != nil {
		t.Fatal(err)
	}
	return header
}

func deviceAnswer() answer {
	return answer{user: testDevice, password: testPassword, method: "REGISTER", uri: testURI}
}

func TestSeedSampleHikvision(t *testing.T) {
	// The two REGISTER exchanges in the seed document (register and unregister).
	samples := []struct{ nonce, opaque, response string }{
		{"a8afe6fcbee6331d89d3eb0d3d19ce39", "a853e4f25298413f9bf3a9aa6767857d", "907ddb1bcc25174d7de4a96c947fb066"},
		{"42dc1acbe02b15743942c0af9314768b", "8e3da4136ac9ab537de09a9932c2a9a3", "7328353ed26e3f2edf3ff57e834d5665"},
	}
	for _, sample := range samples {
		a := answer{alg: "MD5", user: "admin", realm: "hik", password: "12345", method: "REGISTER",
			uri: "sip:130909115229300920@10.64.49.44:7100", nonce: sample.nonce, opaque: sample.opaque}
		if got := rfcResponse(a); got != sample.response {
			t.Fatalf("RFC formula with password 12345 gives %s, sample says %s", got, sample.response)
		}
		header := a.header(sample.response)
		c, alg, err := parseCredentials(header)
		if err != nil {
			t.Fatalf("sample header rejected: %v", err)
		}
		if got := alg.response(c, "REGISTER", HA1("MD5", "admin", "hik", "12345")); got != sample.response {
			t.Errorf("package computes %s for the sample, want %s", got, sample.response)
		}

		// Through Verify the sample's nonce is not ours: with the right password
		// that is stale (the device retries), with a wrong one it is a failure.
		s := NewDigestServer(DigestConfig{Realm: "hik", Now: newFakeClock().Now})
		if err := s.Verify(attempt("REGISTER", header, testSource, "admin")); !errors.Is(err, ErrStaleNonce) {
			t.Errorf("sample with right password: got %v, want ErrStaleNonce", err)
		}
		wrong := Attempt{Method: "REGISTER", Authorization: header, ID: "admin", Source: testSource, Secret: Secret{Password: "12345678"}}
		if err := s.Verify(wrong); !errors.Is(err, ErrBadCredentials) {
			t.Errorf("sample with wrong password: got %v, want ErrBadCredentials", err)
		}
	}
}

func TestChallengeFormat(t *testing.T) {
	s := newTestServer(newFakeClock())
	cases := []struct {
		alg   string
		stale bool
		want  string
	}{
		{"MD5", false, `^Digest realm="3402000000", nonce="[0-9a-f]{32}", opaque="[0-9a-f]{32}", algorithm=MD5$`},
		{"", false, `^Digest realm="3402000000", nonce="[0-9a-f]{32}", opaque="[0-9a-f]{32}", algorithm=MD5$`},
		{"sha-256", true, `^Digest realm="3402000000", nonce="[0-9a-f]{32}", opaque="[0-9a-f]{32}", stale=true, algorithm=SHA-256$`},
		{"MD5-sess", false, `algorithm=MD5-sess$`},
		{"SHA-512", false, `algorithm=MD5$`}, // unsupported: falls back
	}
	for _, c := range cases {
		if got := s.Challenge(c.alg, c.stale); !regexp.MustCompile(c.want).MatchString(got) {
			t.Errorf("Challenge(%q, %v) = %s, want match %s", c.alg, c.stale, got, c.want)
		}
	}

	q := NewDigestServer(DigestConfig{Realm: testRealm, OfferQOP: true})
	if got := q.Challenge("MD5", false); !strings.HasSuffix(got, `, qop="auth"`) {
		t.Errorf("OfferQOP challenge = %s, want qop=\"auth\"", got)
	}

	seen := make(map[string]bool)
	for range 2000 {
		ch, err := digest.ParseChallenge(s.Challenge("MD5", false))
		if err != nil {
			t.Fatal(err)
		}
		if seen[ch.Nonce] {
			t.Fatalf("nonce %s issued twice", ch.Nonce)
		}
		seen[ch.Nonce] = true
	}
}

func TestSupportedAlgorithm(t *testing.T) {
	for name, want := range map[string]bool{"MD5": true, "md5": true, "SHA-256": true, "sha-256-sess": true,
		"MD5-sess": true, "": true, "SHA-512": false, "SHA1": false} {
		if got := SupportedAlgorithm(name); got != want {
			t.Errorf("SupportedAlgorithm(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestVerifyValid(t *testing.T) {
	cases := []struct {
		name      string
		challenge string // algorithm asked for
		mod       func(a *answer)
	}{
		{"md5 no qop", "MD5", func(a *answer) {}},
		{"md5 lower-case algorithm", "MD5", func(a *answer) { a.alg = "md5" }},
		{"md5 algorithm omitted", "MD5", func(a *answer) { a.omitAlgorithm = true }},
		{"md5 qop=auth", "MD5", func(a *answer) { a.qop, a.nc, a.cnonce = "auth", "00000001", "0a4f113b" }},
		{"md5 qop=auth later nc", "MD5", func(a *answer) { a.qop, a.nc, a.cnonce = "auth", "0000002a", "x" }},
		{"md5-sess qop=auth", "MD5-sess", func(a *answer) { a.qop, a.nc, a.cnonce = "auth", "00000001", "c0ffee" }},
		{"sha-256 no qop", "SHA-256", func(a *answer) {}},
		{"sha-256 qop=auth", "SHA-256", func(a *answer) {
			a.qop, a.nc, a.cnonce = "auth", "00000001", "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
		}},
		{"sha-256-sess qop=auth", "SHA-256-sess", func(a *answer) { a.qop, a.nc, a.cnonce = "auth", "00000001", "abc" }},
		{"uri differs from request-uri", "MD5", func(a *answer) { a.uri = "sip:3402000000@192.0.2.1:5060;transport=udp" }},
		{"non-register method", "MD5", func(a *answer) { a.method = "MESSAGE" }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newTestServer(newFakeClock())
			a := deviceAnswer()
			c.mod(&a)
			header := respond(t, s.Challenge(c.challenge, false), a)
			if err := s.Verify(attempt(a.method, header, testSource, a.user)); err != nil {
				t.Fatalf("Verify(%s) = %v", header, err)
			}
		})
	}
}

func TestVerifyUpperCaseResponse(t *testing.T) {
	s := newTestServer(newFakeClock())
	a := deviceAnswer()
	ch, _ := digest.ParseChallenge(s.Challenge("MD5", false))
	a.alg, a.realm, a.nonce, a.opaque = "MD5", ch.Realm, ch.Nonce, ch.Opaque
	header := a.header(strings.ToUpper(rfcResponse(a)))
	if err := s.Verify(attempt("REGISTER", header, testSource, testDevice)); err != nil {
		t.Fatalf("upper-case hex response rejected: %v", err)
	}
}

// The client side that sipgo's DoDigestAuth uses (icholy/digest.Digest) must
// interoperate with our challenges.
func TestVerifyIcholyClient(t *testing.T) {
	for _, alg := range []string{"MD5", "SHA-256"} {
		for _, offerQOP := range []bool{false, true} {
			s := NewDigestServer(DigestConfig{Realm: testRealm, OfferQOP: offerQOP})
			ch, err := digest.ParseChallenge(s.Challenge(alg, false))
			if err != nil {
				t.Fatal(err)
			}
			cred, err := digest.Digest(ch, digest.Options{Method: "REGISTER", URI: testURI, Username: testDevice, Password: testPassword})
			if err != nil {
				t.Fatal(err)
			}
			if offerQOP != (cred.QOP == "auth") {
				t.Fatalf("%s offerQOP=%v: client used qop %q", alg, offerQOP, cred.QOP)
			}
			if err := s.Verify(attempt("REGISTER", cred.String(), testSource, testDevice)); err != nil {
				t.Errorf("%s offerQOP=%v: %v (header %s)", alg, offerQOP, err, cred.String())
			}
		}
	}
}

func TestVerifyRejects(t *testing.T) {
	clock := newFakeClock()
	s := newTestServer(clock)
	other := newTestServer(clock)
	cases := []struct {
		name   string
		header func() string
		want   error
	}{
		{"wrong password", func() string {
			a := deviceAnswer()
			a.password = "wrong"
			return respond(t, s.Challenge("MD5", false), a)
		}, ErrBadCredentials},
		{"another account's valid credentials", func() string {
			a := deviceAnswer()
			a.user, a.password = "admin", "12345"
			return respond(t, s.Challenge("MD5", false), a)
		}, ErrBadCredentials},
		{"realm mismatch", func() string {
			a := deviceAnswer()
			ch, _ := digest.ParseChallenge(s.Challenge("MD5", false))
			a.alg, a.realm, a.nonce = "MD5", "3402000001", ch.Nonce
			return a.header(rfcResponse(a))
		}, ErrBadCredentials},
		{"response for another method", func() string {
			a := deviceAnswer()
			a.method = "INVITE"
			return respond(t, s.Challenge("MD5", false), a)
		}, ErrBadCredentials},
		{"qop values not covered by the response", func() string {
			a := deviceAnswer()
			h := respond(t, s.Challenge("MD5", false), a) // computed without qop
			return h + `, qop=auth, nc=00000001, cnonce="abc"`
		}, ErrBadCredentials},
		{"nonce from another server", func() string {
			return respond(t, other.Challenge("MD5", false), deviceAnswer())
		}, ErrStaleNonce},
		{"forged nonce", func() string {
			a := deviceAnswer()
			a.alg, a.realm, a.nonce = "MD5", testRealm, "00112233445566778899aabbccddeeff"
			return a.header(rfcResponse(a))
		}, ErrStaleNonce},
		{"algorithm downgrade", func() string {
			a := deviceAnswer()
			a.alg = "MD5"
			return respond(t, s.Challenge("SHA-256", false), a)
		}, ErrStaleNonce},
		{"opaque not ours", func() string {
			a := deviceAnswer()
			h := respond(t, s.Challenge("MD5", false), a)
			return regexp.MustCompile(`opaque="[0-9a-f]+"`).ReplaceAllString(h, `opaque="0000"`)
		}, ErrStaleNonce},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			source := fmt.Sprintf("192.0.2.%d", i+1) // keep the cases clear of the lockout
			err := s.Verify(attempt("REGISTER", c.header(), source, testDevice))
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

func TestVerifyMalformed(t *testing.T) {
	s := newTestServer(newFakeClock())
	full := `username="u", realm="3402000000", nonce="n", uri="sip:x", response="r"`
	cases := []string{
		"",
		"Basic YWxhZGRpbjpvcGVuc2VzYW1l",
		"Digest",
		"Digest ",
		`Digest username="u", realm="3402000000", nonce="n", uri="sip:x"`,
		`Digest realm="3402000000", nonce="n", uri="sip:x", response="r"`,
		`Digest username="u", nonce="n", uri="sip:x", response="r"`,
		`Digest username="u", realm="3402000000", uri="sip:x", response="r"`,
		`Digest username="u", realm="3402000000", nonce="n", response="r"`,
		`Digest username="u", realm="3402000000", nonce="n", uri="sip:x", response="r`,
		`Digest username="u" realm="3402000000"`,
		`Digest username=, realm="x"`,
		`Digest uri=sip:x`,
		"Digest " + full + ", algorithm=SHA-512",
		"Digest " + full + ", qop=auth-int, nc=00000001, cnonce=\"c\"",
		"Digest " + full + ", qop=auth",
		"Digest " + full + ", qop=auth, nc=zz, cnonce=\"c\"",
		"Digest " + full + ", qop=auth, nc=00000000, cnonce=\"c\"",
		"Digest " + full + ", algorithm=MD5-sess",
		"Digest " + full + ", userhash=true",
	}
	for _, header := range cases {
		if err := s.Verify(attempt("REGISTER", header, testSource, testDevice)); !errors.Is(err, ErrMalformed) {
			t.Errorf("Verify(%q) = %v, want ErrMalformed", header, err)
		}
	}
}

func TestReplay(t *testing.T) {
	s := newTestServer(newFakeClock())
	header := respond(t, s.Challenge("MD5", false), deviceAnswer())
	if err := s.Verify(attempt("REGISTER", header, testSource, testDevice)); err != nil {
		t.Fatalf("first use: %v", err)
	}
	for range 10 { // replays are stale, not failures: they must not lock the device out
		if err := s.Verify(attempt("REGISTER", header, testSource, testDevice)); !errors.Is(err, ErrStaleNonce) {
			t.Fatalf("replay: got %v, want ErrStaleNonce", err)
		}
	}
	if err := s.Verify(attempt("REGISTER", respond(t, s.Challenge("MD5", false), deviceAnswer()), testSource, testDevice)); err != nil {
		t.Fatalf("fresh nonce after replays: %v", err)
	}
}

func TestWrongAttemptUsesUpNonce(t *testing.T) {
	s := newTestServer(newFakeClock())
	ch := s.Challenge("MD5", false)
	bad := deviceAnswer()
	bad.password = "guess"
	if err := s.Verify(attempt("REGISTER", respond(t, ch, bad), testSource, testDevice)); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("wrong password: %v", err)
	}
	if err := s.Verify(attempt("REGISTER", respond(t, ch, deviceAnswer()), testSource, testDevice)); !errors.Is(err, ErrStaleNonce) {
		t.Fatalf("right password on a used nonce: got %v, want ErrStaleNonce", err)
	}
}

func TestNonceExpiry(t *testing.T) {
	clock := newFakeClock()
	s := NewDigestServer(DigestConfig{Realm: testRealm, NonceTTL: 30 * time.Second, Now: clock.Now})

	onTime := respond(t, s.Challenge("MD5", false), deviceAnswer())
	late := respond(t, s.Challenge("MD5", false), deviceAnswer())
	clock.Advance(30 * time.Second)
	if err := s.Verify(attempt("REGISTER", onTime, testSource, testDevice)); err != nil {
		t.Fatalf("nonce exactly NonceTTL old: %v", err)
	}
	clock.Advance(time.Second)
	if err := s.Verify(attempt("REGISTER", late, testSource, testDevice)); !errors.Is(err, ErrStaleNonce) {
		t.Fatalf("nonce older than NonceTTL: got %v, want ErrStaleNonce", err)
	}
}

func TestUsedNoncesBounded(t *testing.T) {
	clock := newFakeClock()
	s := NewDigestServer(DigestConfig{Realm: testRealm, Now: clock.Now, MaxTrackedNonces: 4})

	var headers []string
	for range 6 {
		headers = append(headers, respond(t, s.Challenge("MD5", false), deviceAnswer()))
		clock.Advance(time.Second)
	}
	for i, h := range headers {
		if err := s.Verify(attempt("REGISTER", h, testSource, testDevice)); err != nil {
			t.Fatalf("header %d: %v", i, err)
		}
	}
	if n := usedCount(s); n > 4 {
		t.Fatalf("%d used nonces tracked, cap is 4", n)
	}
	// Evicted nonces must not become replayable.
	for i, h := range headers {
		if err := s.Verify(attempt("REGISTER", h, testSource, testDevice)); !errors.Is(err, ErrStaleNonce) {
			t.Fatalf("replay of header %d: got %v, want ErrStaleNonce", i, err)
		}
	}
	// Expired entries are dropped on the next Verify.
	clock.Advance(2 * time.Minute)
	if err := s.Verify(attempt("REGISTER", respond(t, s.Challenge("MD5", false), deviceAnswer()), testSource, testDevice)); err != nil {
		t.Fatal(err)
	}
	if n := usedCount(s); n != 1 {
		t.Fatalf("%d used nonces tracked after expiry, want 1", n)
	}
}

func usedCount(s *DigestServer) int {
	s.used.mu.Lock()
	defer s.used.mu.Unlock()
	return len(s.used.set)
}

func TestLockout(t *testing.T) {
	clock := newFakeClock()
	s := newTestServer(clock) // 5 failures in 5m lock out for 10m
	bad := deviceAnswer()
	bad.password = "guess"
	try := func(a answer, source string) error {
		return s.Verify(attempt("REGISTER", respond(t, s.Challenge("MD5", false), a), source, a.user))
	}

	for i := range 5 {
		if err := try(bad, testSource+":5060"); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("failure %d: got %v", i+1, err)
		}
	}
	// Another source port is the same source IP; the right password does not help.
	if err := try(deviceAnswer(), testSource+":6000"); !errors.Is(err, ErrLockedOut) {
		t.Fatalf("after 5 failures: got %v, want ErrLockedOut", err)
	}
	if err := try(deviceAnswer(), "192.0.2.99"); err != nil {
		t.Fatalf("same user from another IP must not be locked out: %v", err)
	}
	clock.Advance(10*time.Minute - time.Second)
	if err := try(deviceAnswer(), testSource); !errors.Is(err, ErrLockedOut) {
		t.Fatalf("just before the lockout ends: got %v, want ErrLockedOut", err)
	}
	clock.Advance(time.Second)
	if err := try(deviceAnswer(), testSource); err != nil {
		t.Fatalf("after the lockout: %v", err)
	}
}

func TestLockoutResetAndWindow(t *testing.T) {
	clock := newFakeClock()
	s := newTestServer(clock)
	bad := deviceAnswer()
	bad.password = "guess"
	try := func(a answer) error {
		return s.Verify(attempt("REGISTER", respond(t, s.Challenge("MD5", false), a), testSource, a.user))
	}
	fail := func(n int) {
		t.Helper()
		for range n {
			if err := try(bad); !errors.Is(err, ErrBadCredentials) {
				t.Fatalf("got %v, want ErrBadCredentials", err)
			}
		}
	}

	fail(4)
	if err := try(deviceAnswer()); err != nil { // a success resets the count
		t.Fatal(err)
	}
	fail(4)
	if err := try(deviceAnswer()); err != nil {
		t.Fatalf("4 failures after a success must not lock out: %v", err)
	}

	fail(4)
	clock.Advance(5*time.Minute + time.Second) // the window has passed
	fail(1)
	if err := try(deviceAnswer()); err != nil {
		t.Fatalf("failures spread over two windows must not lock out: %v", err)
	}

	// Unknown users count too.
	a := deviceAnswer()
	a.user = "nobody"
	for range 5 {
		if err := try(a); !errors.Is(err, ErrBadCredentials) {
			t.Fatal(err)
		}
	}
	if err := try(a); !errors.Is(err, ErrLockedOut) {
		t.Fatalf("unknown user after 5 failures: got %v, want ErrLockedOut", err)
	}
}

func TestFailureRecordsBounded(t *testing.T) {
	clock := newFakeClock()
	s := NewDigestServer(DigestConfig{Realm: testRealm, Now: clock.Now, MaxTrackedFailures: 8})
	bad := deviceAnswer()
	bad.password = "guess"
	try := func(a answer, source string) error {
		return s.Verify(attempt("REGISTER", respond(t, s.Challenge("MD5", false), a), source, a.user))
	}
	for range 5 {
		try(bad, testSource)
	}
	// A flood of single failures for other IDs from other sources must
	// neither grow memory nor lift the lockout.
	for i := range 200 {
		a := bad
		a.user = fmt.Sprintf("340200000013200%05d", i)
		if err := try(a, fmt.Sprintf("198.51.%d.%d", i/250, i%250)); !errors.Is(err, ErrBadCredentials) {
			t.Fatal(err)
		}
	}
	for name, n := range map[string]int{"pair": size(s.lockout.pair), "ip": size(s.lockout.ip), "id": size(s.lockout.id)} {
		if n > 8 {
			t.Fatalf("%d %s failure records, cap is 8", n, name)
		}
	}
	if err := try(deviceAnswer(), testSource); !errors.Is(err, ErrLockedOut) {
		t.Fatalf("lockout lifted by a flood of other sources: %v", err)
	}
}

func size[K comparable](t *failureTracker[K]) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.records)
}

func TestConcurrentVerify(t *testing.T) {
	s := NewDigestServer(DigestConfig{Realm: testRealm})
	const workers, rounds = 4, 100
	var wg sync.WaitGroup
	var failures atomic.Int64
	for range workers {
		wg.Go(func() {
			for range rounds {
				header, err := answerChallenge(s.Challenge("MD5", false), deviceAnswer())
				if err == nil {
					err = s.Verify(attempt("REGISTER", header, testSource, testDevice))
				}
				if err != nil {
					failures.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d of %d concurrent verifications failed", n, workers*rounds)
	}

	// The same credentials sent by many goroutines at once succeed exactly once.
	header := respond(t, s.Challenge("MD5", false), deviceAnswer())
	var ok atomic.Int64
	for range workers {
		wg.Go(func() {
			if err := s.Verify(attempt("REGISTER", header, testSource, testDevice)); err == nil {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Fatalf("one nonce accepted %d times", ok.Load())
	}
}

func FuzzVerify(f *testing.F) {
	s := NewDigestServer(DigestConfig{Realm: testRealm, OfferQOP: true})
	valid := respond(f, s.Challenge("MD5", false), deviceAnswer())
	qop := deviceAnswer()
	qop.qop, qop.nc, qop.cnonce = "auth", "00000001", "abc"
	for _, seed := range []string{
		valid,
		respond(f, s.Challenge("SHA-256-sess", false), qop),
		`Digest username="admin", realm="hik", nonce="a8afe6fcbee6331d89d3eb0d3d19ce39", uri="sip:130909115229300920@10.64.49.44:7100", response="907ddb1bcc25174d7de4a96c947fb066", algorithm=MD5, opaque="a853e4f25298413f9bf3a9aa6767857d"`,
		`Digest username="a\"b", realm="3402000000", nonce="", uri="", response=""`,
		`Digest nc=ffffffffff, qop=auth`,
		`digest   username = "x" ,realm="y"`,
		"Digest \xff\xfe",
		"",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, header string) {
		err := s.Verify(attempt("REGISTER", header, testSource, testDevice))
		if err == nil {
			if !strings.Contains(header, testDevice) {
				t.Fatalf("accepted credentials without the ID %s: %q", testDevice, header)
			}
			return
		}
		if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrStaleNonce) &&
			!errors.Is(err, ErrBadCredentials) && !errors.Is(err, ErrLockedOut) {
			t.Fatalf("untyped error %v", err)
		}
	})
}

func BenchmarkChallengeVerify(b *testing.B) {
	// Includes the client-side hashing of each answer (about a third of the time).
	s := NewDigestServer(DigestConfig{Realm: testRealm})
	cred := func(challenge string) string {
		i := strings.Index(challenge, `nonce="`) + len(`nonce="`)
		a := deviceAnswer()
		a.alg, a.realm, a.nonce = "MD5", testRealm, challenge[i:i+32]
		return a.header(rfcResponse(a))
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := s.Verify(attempt("REGISTER", cred(s.Challenge("MD5", false)), testSource, testDevice)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := s.Verify(attempt("REGISTER", cred(s.Challenge("MD5", false)), testSource, testDevice)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
