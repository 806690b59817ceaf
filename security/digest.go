// Package security implements the server side of SIP digest authentication
// (RFC 2617, RFC 7616, RFC 3261 §22, GB/T 28181 §9.1) for gbproxy's registrar:
// cameras, NVRs and lower platforms REGISTER to us and we challenge them.
package security

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/icholy/digest"
)

// Errors returned by Verify; test with errors.Is. The SIP mapping is given per error.
var (
	// ErrMalformed: answer 400 (unparseable header, missing fields, unsupported algorithm or qop).
	ErrMalformed = errors.New("malformed digest Authorization")
	// ErrStaleNonce: answer 401 with a fresh challenge and stale=true.
	ErrStaleNonce = errors.New("digest nonce unknown, expired or already used")
	// ErrBadCredentials: answer 403 (wrong response, unknown user, realm mismatch).
	ErrBadCredentials = errors.New("digest credentials rejected")
	// ErrLockedOut: answer 403 (too many failures from this username and source IP).
	ErrLockedOut = errors.New("digest authentication locked out")
)

// Algorithm names accepted by Challenge and in credentials (case-insensitive).
const (
	AlgorithmMD5        = "MD5"
	AlgorithmMD5Sess    = "MD5-sess"
	AlgorithmSHA256     = "SHA-256"
	AlgorithmSHA256Sess = "SHA-256-sess"
)

// DigestConfig configures a DigestServer. Zero fields take the documented defaults.
type DigestConfig struct {
	Realm       string        // our SIP domain, e.g. "3402000000"; must be set
	NonceTTL    time.Duration // default 60s: a nonce older than this is stale (second resolution)
	MaxFailures int           // default 5 failed attempts ...
	FailWindow  time.Duration // default 5m ... within this window ...
	LockoutFor  time.Duration // default 10m ... lock out that (username, source IP) pair
	Now         func() time.Time

	// OfferQOP adds qop="auth" to challenges. Off by default: many GB devices
	// answer without qop. Credentials with qop=auth are accepted either way.
	OfferQOP bool
	// MaxTrackedNonces bounds the set of used nonces kept for replay protection
	// (default 1<<18, about 15 MB when full).
	MaxTrackedNonces int
	// MaxTrackedFailures bounds the (username, source IP) failure records
	// (default 1<<16).
	MaxTrackedFailures int
}

// DigestServer issues challenges and verifies digest credentials. It is safe
// for concurrent use.
type DigestServer struct {
	realm    string
	opaque   string
	offerQOP bool
	now      func() time.Time
	nonces   *nonceCodec
	used     *usedNonces
	failures *failureTracker
}

// NewDigestServer returns a server with a fresh random nonce key: nonces issued
// by another process (or before a restart) are treated as stale.
func NewDigestServer(cfg DigestConfig) *DigestServer {
	if cfg.NonceTTL <= 0 {
		cfg.NonceTTL = 60 * time.Second
	}
	if cfg.MaxFailures <= 0 {
		cfg.MaxFailures = 5
	}
	if cfg.FailWindow <= 0 {
		cfg.FailWindow = 5 * time.Minute
	}
	if cfg.LockoutFor <= 0 {
		cfg.LockoutFor = 10 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxTrackedNonces <= 0 {
		cfg.MaxTrackedNonces = 1 << 18
	}
	if cfg.MaxTrackedFailures <= 0 {
		cfg.MaxTrackedFailures = 1 << 16
	}
	var opaque [16]byte
	rand.Read(opaque[:]) // never fails since Go 1.24
	return &DigestServer{
		realm:    cfg.Realm,
		opaque:   hex.EncodeToString(opaque[:]),
		offerQOP: cfg.OfferQOP,
		now:      cfg.Now,
		nonces:   newNonceCodec(),
		used:     newUsedNonces(cfg.NonceTTL, cfg.MaxTrackedNonces),
		failures: newFailureTracker(cfg.MaxFailures, cfg.FailWindow, cfg.LockoutFor, cfg.MaxTrackedFailures),
	}
}

// Challenge issues a fresh single-use nonce and returns the WWW-Authenticate
// value, e.g. `Digest realm="3402000000", nonce="…", opaque="…", algorithm=MD5`.
// An unsupported algorithm name falls back to MD5 (check configuration with
// SupportedAlgorithm). stale=true tells the client its previous nonce was stale.
func (s *DigestServer) Challenge(algorithm string, stale bool) string {
	alg, _ := parseAlgorithm(algorithm) // an unsupported name yields MD5
	ch := digest.Challenge{
		Realm:     s.realm,
		Nonce:     s.nonces.issue(s.now(), alg),
		Opaque:    s.opaque,
		Stale:     stale,
		Algorithm: alg.String(),
	}
	if s.offerQOP {
		ch.QOP = []string{"auth"}
	}
	return ch.String()
}

// Verify checks an Authorization header value for a request with the given
// SIP method. password returns the secret for a username (ok=false: unknown
// user). source is the peer IP (an "ip:port" is reduced to the IP); together
// with the username it keys the lockout. On success it returns the username.
//
// As RFC 2617 §3.2.1 asks, ErrStaleNonce is returned only when the response is
// right for a nonce that is not (or no longer) valid; a wrong response is
// ErrBadCredentials whatever the nonce, and counts towards the lockout.
func (s *DigestServer) Verify(method, authorization, source string, password func(username string) (string, bool)) (string, error) {
	cred, alg, err := parseCredentials(authorization)
	if err != nil {
		return "", err
	}
	now := s.now()
	who := failureKey{user: cred.Username, source: sourceIP(source)}
	if until, locked := s.failures.lockedUntil(who, now); locked {
		return "", fmt.Errorf("%w: user %q from %s until %s after repeated failures",
			ErrLockedOut, who.user, who.source, until.Format(time.RFC3339))
	}
	if cred.Realm != s.realm {
		s.failures.fail(who, now)
		return "", fmt.Errorf("%w: realm %q is not ours (%q): set the device's SIP server domain to %q",
			ErrBadCredentials, cred.Realm, s.realm, s.realm)
	}

	// Consume the nonce before checking the response so that every attempt,
	// right or wrong, uses it up.
	fresh := false
	if cred.Opaque == "" || cred.Opaque == s.opaque {
		if key, issued, ours := s.nonces.open(cred.Nonce, alg); ours {
			fresh = s.used.consume(key, issued, now)
		}
	}

	secret, known := password(cred.Username)
	if !known {
		s.failures.fail(who, now)
		return "", fmt.Errorf("%w: unknown user %q", ErrBadCredentials, cred.Username)
	}
	if !responseMatches(alg.response(cred, method, secret), cred.Response) {
		s.failures.fail(who, now)
		return "", fmt.Errorf("%w: wrong response for user %q from %s: check the password configured for it on both sides",
			ErrBadCredentials, cred.Username, who.source)
	}
	if !fresh {
		return "", fmt.Errorf("%w: user %q", ErrStaleNonce, cred.Username)
	}
	s.failures.reset(who)
	return cred.Username, nil
}

// SupportedAlgorithm reports whether name is a digest algorithm this package
// implements, so configuration can be checked at start-up.
func SupportedAlgorithm(name string) bool {
	_, ok := parseAlgorithm(name)
	return ok
}

// parseCredentials parses an Authorization value and checks that it carries
// everything needed to compute the response.
func parseCredentials(authorization string) (*digest.Credentials, algorithm, error) {
	cred, err := digest.ParseCredentials(strings.TrimSpace(authorization))
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	missing := ""
	switch {
	case cred.Username == "":
		missing = "username"
	case cred.Realm == "":
		missing = "realm"
	case cred.Nonce == "":
		missing = "nonce"
	case cred.URI == "":
		missing = "uri"
	case cred.Response == "":
		missing = "response"
	}
	if missing != "" {
		return nil, 0, fmt.Errorf("%w: no %s parameter", ErrMalformed, missing)
	}
	alg, ok := parseAlgorithm(cred.Algorithm)
	if !ok {
		return nil, 0, fmt.Errorf("%w: unsupported algorithm %q (use MD5 or SHA-256)", ErrMalformed, cred.Algorithm)
	}
	switch {
	case cred.QOP != "" && !strings.EqualFold(cred.QOP, "auth"):
		return nil, 0, fmt.Errorf("%w: unsupported qop %q (only auth)", ErrMalformed, cred.QOP)
	case cred.QOP != "" && (cred.Cnonce == "" || cred.Nc <= 0):
		return nil, 0, fmt.Errorf("%w: qop=auth needs cnonce and a positive nc", ErrMalformed)
	case alg.sess() && cred.Cnonce == "":
		return nil, 0, fmt.Errorf("%w: %s needs cnonce", ErrMalformed, alg)
	case cred.Userhash:
		return nil, 0, fmt.Errorf("%w: userhash was not offered", ErrMalformed)
	}
	return cred, alg, nil
}

// responseMatches compares in constant time; clients may send upper-case hex.
func responseMatches(expected, got string) bool {
	return subtle.ConstantTimeCompare([]byte(expected), []byte(strings.ToLower(got))) == 1
}

// sourceIP reduces "ip:port" to the IP so that a device changing its source
// port does not escape the lockout.
func sourceIP(source string) string {
	if host, _, err := net.SplitHostPort(source); err == nil {
		return host
	}
	return source
}

// algorithm is a digest algorithm; its numeric value is sealed into nonces.
type algorithm uint8

const (
	algMD5 algorithm = iota + 1
	algMD5Sess
	algSHA256
	algSHA256Sess
)

// parseAlgorithm maps a name to an algorithm; an absent name means MD5 (RFC 2617).
func parseAlgorithm(name string) (algorithm, bool) {
	for _, alg := range []algorithm{algMD5, algMD5Sess, algSHA256, algSHA256Sess} {
		if strings.EqualFold(name, alg.String()) {
			return alg, true
		}
	}
	return algMD5, name == ""
}

func (a algorithm) String() string {
	switch a {
	case algMD5Sess:
		return AlgorithmMD5Sess
	case algSHA256:
		return AlgorithmSHA256
	case algSHA256Sess:
		return AlgorithmSHA256Sess
	}
	return AlgorithmMD5
}

func (a algorithm) sess() bool { return a == algMD5Sess || a == algSHA256Sess }

// response computes the expected response (RFC 2617 §3.2.2, RFC 7616 §3.4.1)
// with the uri, cnonce, nc and qop the client used.
func (a algorithm) response(c *digest.Credentials, method, password string) string {
	ha1 := a.hashHex(c.Username, c.Realm, password)
	if a.sess() {
		ha1 = a.hashHex(ha1, c.Nonce, c.Cnonce)
	}
	ha2 := a.hashHex(method, c.URI)
	if c.QOP == "" {
		return a.hashHex(ha1, c.Nonce, ha2)
	}
	return a.hashHex(ha1, c.Nonce, fmt.Sprintf("%08x", c.Nc), c.Cnonce, c.QOP, ha2)
}

// hashHex returns the lower-case hex digest of parts joined with ':'.
func (a algorithm) hashHex(parts ...string) string {
	var scratch [256]byte
	in := scratch[:0]
	for i, p := range parts {
		if i > 0 {
			in = append(in, ':')
		}
		in = append(in, p...)
	}
	if a == algSHA256 || a == algSHA256Sess {
		sum := sha256.Sum256(in)
		return hex.EncodeToString(sum[:])
	}
	sum := md5.Sum(in)
	return hex.EncodeToString(sum[:])
}
