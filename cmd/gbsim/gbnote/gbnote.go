// Package gbnote is the GB/T 28181 signalling digest (SIP信令认证) as the simulators speak it: every
// request but REGISTER carries
//
//	Date: yyyy-MM-ddTHH:mm:ss
//	Note: Digest nonce="<n>", algorithm=<alg>
//
// where n is the digest, base64-encoded (or hex, for vendors that send it so), of the From, To,
// Call-ID and Date values as written on the wire, the shared seed and the body, concatenated without
// separators. It is written from the standard and shares no code with gbproxy, so the simulators
// check the proxy rather than repeat its mistakes. It knows no SIP stack: callers pass header values.
package gbnote

import (
	"crypto/md5"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/emmansun/gmsm/sm3"
)

// DateLayout is the Date header as GB/T 28181 writes it: local time, seconds, no zone.
const DateLayout = "2006-01-02T15:04:05"

// DefaultWindow is how far a Date may be from our clock, the standard's initial setting.
const DefaultWindow = 10 * time.Minute

// Algorithm names as they appear in the Note header.
const (
	MD5    = "MD5"
	SHA256 = "SHA-256"
	SM3    = "SM3"
)

// Config turns the digest on for one simulated peer; the zero value (no Seed) is off.
type Config struct {
	Seed      string // shared secret, configured on both sides
	Algorithm string // MD5 (default), SHA-256 or SM3
	Hex       bool   // nonce in hex instead of base64 (accepted either case on input)
	// Require makes a simulator refuse (403) requests other than REGISTER and ACK that lack a valid
	// Note or whose Date is more than Window off.
	Require bool
	Window  time.Duration // default DefaultWindow
}

// Errors a check reports; the simulators turn each into its own 403 reason phrase.
var (
	ErrNoNote    = errors.New("no Note header")
	ErrBadNote   = errors.New("Note header not understood")
	ErrAlgorithm = errors.New("Note algorithm differs from the configured one")
	ErrMismatch  = errors.New("Note digest does not match the message")
	ErrNoDate    = errors.New("no Date header")
	ErrBadDate   = errors.New("Date header not in yyyy-MM-ddTHH:mm:ss form")
	ErrStaleDate = errors.New("Date header outside the allowed window")
)

// Signer computes and checks Note values for one Config. It is safe for concurrent use.
type Signer struct {
	alg    string
	seed   string
	hex    bool
	window time.Duration
}

// New validates cfg; it returns nil and no error when cfg.Seed is empty (the digest is off).
func New(cfg Config) (*Signer, error) {
	if cfg.Seed == "" {
		return nil, nil
	}
	alg := cfg.Algorithm
	switch {
	case alg == "" || strings.EqualFold(alg, MD5):
		alg = MD5
	case strings.EqualFold(alg, SHA256):
		alg = SHA256
	case strings.EqualFold(alg, SM3):
		alg = SM3
	default:
		return nil, fmt.Errorf("note algorithm %q not supported: use %s, %s or %s", cfg.Algorithm, MD5, SHA256, SM3)
	}
	window := cfg.Window
	if window <= 0 {
		window = DefaultWindow
	}
	return &Signer{alg: alg, seed: cfg.Seed, hex: cfg.Hex, window: window}, nil
}

// Algorithm returns the algorithm name written in Note.
func (s *Signer) Algorithm() string { return s.alg }

// AppendInput appends the digest input to dst: from, to, callID and date (header values, surrounding
// whitespace trimmed), the seed, then the body.
func (s *Signer) AppendInput(dst, from, to, callID, date, body []byte) []byte {
	for _, v := range [][]byte{from, to, callID, date} {
		dst = append(dst, trim(v)...)
	}
	dst = append(dst, s.seed...)
	return append(dst, body...)
}

// trim drops surrounding SIP whitespace (space, tab, CR, LF) without allocating.
func trim(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// maxSize is the largest digest of the supported algorithms.
const maxSize = 32

// sum writes the raw digest of input to out and returns its length.
func (s *Signer) sum(out *[maxSize]byte, input []byte) int {
	switch s.alg {
	case SHA256:
		*out = sha256.Sum256(input)
		return sha256.Size
	case SM3:
		*out = sm3.Sum(input)
		return sm3.Size
	default:
		d := md5.Sum(input)
		copy(out[:], d[:])
		return md5.Size
	}
}

// AppendNonce appends the encoded digest of input (made by AppendInput) to dst. input may lie in
// dst's spare capacity: it is read in full before anything is written.
func (s *Signer) AppendNonce(dst, input []byte) []byte {
	var d [maxSize]byte
	return s.appendEncoded(dst, d[:s.sum(&d, input)])
}

func (s *Signer) appendEncoded(dst, digest []byte) []byte {
	if s.hex {
		return hex.AppendEncode(dst, digest)
	}
	return base64.StdEncoding.AppendEncode(dst, digest)
}

// AppendNote appends the Note header value for input (made by AppendInput) to dst; input may lie
// in dst's spare capacity, as for AppendNonce.
func (s *Signer) AppendNote(dst, input []byte) []byte {
	var d [maxSize]byte
	n := s.sum(&d, input)
	dst = append(dst, `Digest nonce="`...)
	dst = s.appendEncoded(dst, d[:n])
	dst = append(dst, `", algorithm=`...)
	return append(dst, s.alg...)
}

// AppendNoteOf appends the Note header value of a message with these header values and body to
// dst. The values may alias dst. It assembles the input in dst's spare capacity, growing dst first,
// so that a buffer reused across messages soon stops allocating.
func (s *Signer) AppendNoteOf(dst, from, to, callID, date, body []byte) []byte {
	dst = slices.Grow(dst, len(from)+len(to)+len(callID)+len(date)+len(s.seed)+len(body)+noteSize)
	return s.AppendNote(dst, s.AppendInput(dst[len(dst):], from, to, callID, date, body))
}

// noteSize bounds a Note value: the 64 hex digits of a 32-byte digest and the words around them.
const noteSize = 96

// Note returns the Note header value of a message with these header values and body.
func (s *Signer) Note(from, to, callID, date string, body []byte) string {
	return string(s.AppendNoteOf(nil, []byte(from), []byte(to), []byte(callID), []byte(date), body))
}

// Date formats t as a Date header value.
func Date(t time.Time) string { return t.Format(DateLayout) }

// Check verifies a received request's Note (note, empty when absent) and Date (date, empty when
// absent) against its other header values and body, at time now. The error wraps one of the Err
// values above.
func (s *Signer) Check(from, to, callID, date, note string, body []byte, now time.Time) error {
	if strings.TrimSpace(note) == "" {
		return ErrNoNote
	}
	nonce, alg, err := ParseNote(note)
	if err != nil {
		return err
	}
	if alg != "" && !strings.EqualFold(alg, s.alg) {
		return fmt.Errorf("%w: %q, want %s", ErrAlgorithm, alg, s.alg)
	}
	date = strings.TrimSpace(date)
	if date == "" {
		return ErrNoDate
	}
	t, err := ParseDate(date)
	if err != nil {
		return err
	}
	if off := now.Sub(t).Abs(); off > s.window {
		return fmt.Errorf("%w: %s off, at most %s", ErrStaleDate, off.Round(time.Second), s.window)
	}
	var got []byte
	if s.hex {
		got, err = hex.DecodeString(nonce)
	} else {
		got, err = base64.StdEncoding.DecodeString(nonce)
	}
	if err != nil {
		encoding := "padded base64"
		if s.hex {
			encoding = "hex"
		}
		return fmt.Errorf("%w: nonce is not %s", ErrBadNote, encoding)
	}
	var want [maxSize]byte
	n := s.sum(&want, s.AppendInput(nil, []byte(from), []byte(to), []byte(callID), []byte(date), body))
	if subtle.ConstantTimeCompare(got, want[:n]) != 1 {
		return ErrMismatch
	}
	return nil
}

// ParseDate reads a Date value in GB/T 28181 form as local time; fractional seconds are accepted.
func ParseDate(v string) (time.Time, error) {
	t, err := time.ParseInLocation(DateLayout, strings.TrimSpace(v), time.Local)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %q", ErrBadDate, quote(v))
	}
	return t, nil
}

// ParseNote reads `Digest nonce="<n>", algorithm=<alg>`: the scheme and parameter names in any case,
// values quoted or not, unknown parameters ignored. algorithm is empty when absent.
func ParseNote(v string) (nonce, algorithm string, err error) {
	scheme, params, _ := strings.Cut(strings.TrimSpace(v), " ")
	if !strings.EqualFold(scheme, "Digest") {
		return "", "", fmt.Errorf("%w: scheme %q, want Digest", ErrBadNote, quote(scheme))
	}
	seen := false
	for params = strings.TrimSpace(params); params != ""; {
		var name, value string
		name, params, _ = strings.Cut(params, "=")
		name = strings.TrimSpace(name)
		params = strings.TrimLeft(params, " \t")
		if rest, ok := strings.CutPrefix(params, `"`); ok {
			var closed bool
			value, params, closed = strings.Cut(rest, `"`)
			if !closed {
				return "", "", fmt.Errorf("%w: unterminated quote in %s", ErrBadNote, quote(name))
			}
			_, params, _ = strings.Cut(params, ",")
		} else {
			value, params, _ = strings.Cut(params, ",")
			value = strings.TrimSpace(value)
		}
		params = strings.TrimLeft(params, " \t,")
		switch {
		case strings.EqualFold(name, "nonce"):
			nonce, seen = value, true
		case strings.EqualFold(name, "algorithm"):
			algorithm = value
		}
	}
	if !seen || nonce == "" {
		return "", "", fmt.Errorf("%w: no nonce", ErrBadNote)
	}
	return nonce, algorithm, nil
}

// quote bounds what an error repeats from the wire.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
