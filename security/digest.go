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
	// ErrBadCredentials: answer 403 (wrong response, unknown ID, username that
	// is not the From ID, realm mismatch, HA1 unusable with the algorithm).
	ErrBadCredentials = errors.New("digest credentials rejected")
	// ErrLockedOut: answer 403 (too many failures from this source or for this ID).
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
	Realm    string        // our SIP domain, e.g. "3402000000"; must be set
	NonceTTL time.Duration // default 60s: a nonce older than this is stale (second resolution)
	Lockout  LockoutConfig
	Now      func() time.Time

	// OfferQOP adds qop="auth" to challenges. Off by default: many GB devices
	// answer without qop. Credentials with qop=auth are accepted either way.
	OfferQOP bool
	// MaxTrackedNonces bounds the set of used nonces kept for replay protection
	// (default 1<<18, about 15 MB when full).
	MaxTrackedNonces int
	// MaxTrackedFailures bounds each of the three failure tables: per (ID,
	// source IP), per source IP and per ID (default 1<<16 records each).
	MaxTrackedFailures int
}

// Secret is what a peer authenticates with: a plain password, or the hex HA1
// (H(id:realm:password)); 32 hex digits = MD5 HA1, 64 = SHA-256 HA1. The
// password is used when both are set, as it works with every algorithm. The
// zero Secret means the ID is unknown.
type Secret struct{ Password, HA1 string }

// Attempt is one authenticated request to verify.
type Attempt struct {
	Method, Authorization string
	ID                    string // the From user: the digest username must equal it (else ErrBadCredentials, counted)
	Source                string // "ip:port" (or ip) of the request
	RegisteredIP          string // IP the ID is registered from now, "" if none
	Secret                Secret
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
	lockout  *lockout
}

// NewDigestServer returns a server with a fresh random nonce key: nonces issued
// by another process (or before a restart) are treated as stale.
func NewDigestServer(cfg DigestConfig) *DigestServer {
	if cfg.NonceTTL <= 0 {
		cfg.NonceTTL = 60 * time.Second
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
		lockout:  newLockout(cfg.Lockout, cfg.MaxTrackedFailures),
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

// Verify checks the Authorization value of a request from a.Source claiming
// to be a.ID. Lockouts are checked first and refuse without counting; every
// other failure except a malformed header, a stale nonce or an HA1 that
// cannot serve the algorithm (a configuration error, not a guess) counts
// towards all three lockouts (see LockoutConfig).
//
// As RFC 2617 §3.2.1 asks, ErrStaleNonce is returned only when the response is
// right for a nonce that is not (or no longer) valid; a wrong response is
// ErrBadCredentials whatever the nonce.
func (s *DigestServer) Verify(a Attempt) error {
	now := s.now()
	ip := sourceIP(a.Source)
	if err := s.lockout.check(a.ID, ip, a.RegisteredIP, now); err != nil {
		return err
	}
	cred, alg, err := parseCredentials(a.Authorization)
	if err != nil {
		return err
	}
	id := clip(a.ID)
	fail := func(err error) error {
		s.lockout.fail(a.ID, ip, now)
		return err
	}
	if cred.Username != a.ID {
		return fail(fmt.Errorf("%w: digest username %q is not the From ID %q (from %s): set the device's SIP user name to its ID",
			ErrBadCredentials, clip(cred.Username), id, ip))
	}
	if cred.Realm != s.realm {
		return fail(fmt.Errorf("%w: realm %q is not ours (%q): set the device's SIP server domain to %q",
			ErrBadCredentials, clip(cred.Realm), s.realm, s.realm))
	}

	// Consume the nonce before checking the response so that every attempt,
	// right or wrong, uses it up.
	fresh := false
	if cred.Opaque == "" || cred.Opaque == s.opaque {
		if key, issued, ours := s.nonces.open(cred.Nonce, alg); ours {
			fresh = s.used.consume(key, issued, now)
		}
	}

	if a.Secret == (Secret{}) {
		return fail(fmt.Errorf("%w: unknown ID %q (from %s)", ErrBadCredentials, id, ip))
	}
	ha1, err := ha1For(alg, cred.Username, cred.Realm, a.Secret)
	if err != nil {
		return fmt.Errorf("%w: ID %q: %w", ErrBadCredentials, id, err)
	}
	if !responseMatches(alg.response(cred, a.Method, ha1), cred.Response) {
		return fail(fmt.Errorf("%w: wrong response for ID %q from %s: check the password configured for it on both sides",
			ErrBadCredentials, id, ip))
	}
	if !fresh {
		return fmt.Errorf("%w: ID %q", ErrStaleNonce, id)
	}
	s.lockout.succeed(a.ID, ip)
	return nil
}

// HA1 computes the hex HA1, H(username:realm:password), for an algorithm name
// ("MD5", "SHA-256"; the -sess variants use the same HA1), for configuration
// tooling and tests. It returns "" for an unsupported algorithm.
func HA1(algorithm, username, realm, password string) string {
	alg, ok := parseAlgorithm(algorithm)
	if !ok {
		return ""
	}
	return alg.hashHex(username, realm, password)
}

// CheckHA1 reports whether ha1 has the form of an MD5 or SHA-256 HA1, so
// configuration can be checked at start-up.
func CheckHA1(ha1 string) error {
	if _, err := ha1Hash(ha1); err != nil {
		return err
	}
	return nil
}

// ha1Hash tells which hash an HA1 was computed with from its length.
func ha1Hash(ha1 string) (algorithm, error) {
	var alg algorithm
	switch len(ha1) {
	case 2 * md5.Size:
		alg = algMD5
	case 2 * sha256.Size:
		alg = algSHA256
	default:
		return 0, fmt.Errorf("HA1 has %d characters: want 32 (MD5) or 64 (SHA-256) hex digits", len(ha1))
	}
	for _, c := range []byte(ha1) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return 0, errors.New("HA1 is not hexadecimal")
		}
	}
	return alg, nil
}

// ha1For returns the lower-case hex HA1 to use with alg.
func ha1For(alg algorithm, username, realm string, secret Secret) (string, error) {
	if secret.Password != "" {
		return alg.hashHex(username, realm, secret.Password), nil
	}
	if secret.HA1 == "" {
		return "", errors.New("no password or HA1 configured")
	}
	h, err := ha1Hash(secret.HA1)
	if err != nil {
		return "", err
	}
	if h.sha256() != alg.sha256() {
		return "", fmt.Errorf("the configured HA1 is a %s HA1 but the algorithm is %s: configure a %s HA1 (or the plain password), or use %s",
			h, alg, alg.base(), h)
	}
	return strings.ToLower(secret.HA1), nil
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
		return nil, 0, fmt.Errorf("%w: %w", ErrMalformed, err)
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

// clip shortens a value taken from the wire for an error message or log line.
func clip(s string) string { return clipN(64, s) }

func clipN(n int, s string) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
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

func (a algorithm) sha256() bool { return a == algSHA256 || a == algSHA256Sess }

// base is the algorithm without -sess: the one its HA1 is computed with.
func (a algorithm) base() algorithm {
	if a.sha256() {
		return algSHA256
	}
	return algMD5
}

// response computes the expected response (RFC 2617 §3.2.2, RFC 7616 §3.4.1)
// from the hex HA1 with the uri, cnonce, nc and qop the client used.
func (a algorithm) response(c *digest.Credentials, method, ha1 string) string {
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
	if a.sha256() {
		sum := sha256.Sum256(in)
		return hex.EncodeToString(sum[:])
	}
	sum := md5.Sum(in)
	return hex.EncodeToString(sum[:])
}
