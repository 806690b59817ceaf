package security

import (
	"crypto/md5"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/emmansun/gmsm/sm3"
)

// Errors returned by Notary.Verify; each is answered 403 with a reason phrase
// saying which.
var (
	ErrNoteMissing = errors.New("no Note signalling digest")
	ErrNoteInvalid = errors.New("invalid Note signalling digest")
	ErrNoteDate    = errors.New("Date missing or outside the allowed window")
	ErrNoteReplay  = errors.New("Note nonce replayed")
)

// Header names of GB/T 28181 signalling authentication.
const (
	NoteHeader = "Note"
	DateHeader = "Date"
)

// NoteConfig is one peer's signalling digest setting.
type NoteConfig struct {
	Algorithm string // MD5 (default when empty), SHA-256 or SM3; case-insensitive
	Seed      string
	Hex       bool // the digest is written in hex instead of base64
}

// gbDateLayout is how GB/T 28181 writes Date: local time, no zone. Parsing
// with it also accepts fractional seconds (time.Parse does so after "05").
const gbDateLayout = "2006-01-02T15:04:05"

// GBDate formats t as yyyy-MM-ddTHH:mm:ss in local time.
func GBDate(t time.Time) string { return t.Local().Format(gbDateLayout) }

// ParseGBDate parses yyyy-MM-ddTHH:mm:ss, optionally with .SSS milliseconds,
// as local time.
func ParseGBDate(s string) (time.Time, error) {
	t, err := time.ParseInLocation(gbDateLayout, strings.TrimSpace(s), time.Local)
	if err != nil {
		return time.Time{}, fmt.Errorf("Date %q is not yyyy-MM-ddTHH:mm:ss", clip(s))
	}
	return t, nil
}

type noteAlgorithm uint8

const (
	noteMD5 noteAlgorithm = iota
	noteSHA256
	noteSM3
)

func parseNoteAlgorithm(name string) (noteAlgorithm, error) {
	switch {
	case name == "" || strings.EqualFold(name, "MD5"):
		return noteMD5, nil
	case strings.EqualFold(name, "SHA-256"):
		return noteSHA256, nil
	case strings.EqualFold(name, "SM3"):
		return noteSM3, nil
	}
	return 0, fmt.Errorf("unsupported Note algorithm %q: use MD5, SHA-256 or SM3", clip(name))
}

func (a noteAlgorithm) String() string {
	switch a {
	case noteSHA256:
		return "SHA-256"
	case noteSM3:
		return "SM3"
	}
	return "MD5"
}

// noteBuffers hold the concatenation being hashed, so that signing and
// verifying do not allocate it per message.
var noteBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// maxPooledNote keeps one large body from pinning a large buffer in the pool.
const maxPooledNote = 64 << 10

// sum appends the raw digest of the concatenation to dst.
func (a noteAlgorithm) sum(dst []byte, from, to, callID, date, seed string, body []byte) []byte {
	bp := noteBuffers.Get().(*[]byte)
	in := (*bp)[:0]
	for _, s := range [...]string{from, to, callID, date} {
		in = append(in, strings.TrimSpace(s)...)
	}
	in = append(append(in, seed...), body...)
	switch a {
	case noteSHA256:
		s := sha256.Sum256(in)
		dst = append(dst, s[:]...)
	case noteSM3:
		s := sm3.Sum(in)
		dst = append(dst, s[:]...)
	default:
		s := md5.Sum(in)
		dst = append(dst, s[:]...)
	}
	if cap(in) <= maxPooledNote {
		*bp = in
		noteBuffers.Put(bp)
	}
	return dst
}

// NoteDigest returns the raw digest of from+to+callID+date+seed+body (no
// separators; each header value as written on the wire, surrounding
// whitespace trimmed).
func NoteDigest(algorithm, from, to, callID, date, seed string, body []byte) ([]byte, error) {
	alg, err := parseNoteAlgorithm(algorithm)
	if err != nil {
		return nil, err
	}
	return alg.sum(nil, from, to, callID, date, seed, body), nil
}

// ParseNote parses a Note value such as `Digest nonce="…", algorithm=MD5`. It
// takes spacing, case and quoting as vendors write them (`algorithm = SM3`,
// unquoted values, no comma between parameters, no "Digest"); algorithm is ""
// when absent. Unknown parameters are ignored.
func ParseNote(value string) (nonce, algorithm string, err error) {
	s := strings.TrimSpace(value)
	if len(s) >= len("Digest") && strings.EqualFold(s[:len("Digest")], "Digest") &&
		(len(s) == len("Digest") || s[len("Digest")] == ' ' || s[len("Digest")] == '\t') {
		s = s[len("Digest"):]
	}
	var sawNonce, sawAlg bool
	for {
		s = strings.TrimLeft(s, " \t,")
		if s == "" {
			break
		}
		i := strings.IndexAny(s, "= \t,")
		if i <= 0 {
			return "", "", fmt.Errorf("Note %q: want Digest nonce=\"…\", algorithm=…", clip(value))
		}
		name := s[:i]
		s = strings.TrimLeft(s[i:], " \t")
		if s == "" || s[0] != '=' {
			return "", "", fmt.Errorf("Note %q: parameter %q has no value", clip(value), clip(name))
		}
		s = strings.TrimLeft(s[1:], " \t")
		var v string
		if strings.HasPrefix(s, `"`) {
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				return "", "", fmt.Errorf("Note %q: unterminated quote", clip(value))
			}
			v, s = s[1:1+end], s[2+end:]
		} else {
			end := strings.IndexAny(s, " \t,")
			if end < 0 {
				end = len(s)
			}
			v, s = s[:end], s[end:]
		}
		switch {
		case strings.EqualFold(name, "nonce"):
			if sawNonce {
				return "", "", fmt.Errorf("Note %q: two nonces", clip(value))
			}
			nonce, sawNonce = v, true
		case strings.EqualFold(name, "algorithm"):
			if sawAlg {
				return "", "", fmt.Errorf("Note %q: two algorithms", clip(value))
			}
			algorithm, sawAlg = v, true
		}
	}
	if nonce == "" {
		return "", "", fmt.Errorf("Note %q has no nonce", clip(value))
	}
	return nonce, algorithm, nil
}

// Notary signs our requests with a Note and verifies the Note of requests
// from peers that must send one, remembering nonces to refuse replays. It is
// safe for concurrent use.
//
// A nonce is remembered with the Via branch it came under until its Date
// leaves the window (after that the Date check refuses it anyway). The cache
// is bounded: when full, the oldest entry goes and any Date at or before that
// entry's is refused as a possible replay, so eviction never lets one through.
// Only verified messages are cached, so only peers holding the seed fill it.
type Notary struct {
	window time.Duration
	now    func() time.Time

	mu        sync.Mutex
	max       int
	seen      map[string]noteSeen // raw digest -> first sighting
	queue     fifo[noteQueued]    // insertion order
	watermark time.Time           // unseen messages dated at or before this are refused
}

type noteSeen struct {
	branch  string
	expires time.Time
}

type noteQueued struct {
	key  string
	date time.Time
}

// maxNoteEntries bounds the replay cache: about 130,000 signed requests per
// window, some 20 MB when full.
const maxNoteEntries = 1 << 17

// NewNotary returns a Notary accepting a Date up to window away from now()
// (default 10 minutes when window <= 0, time.Now when now is nil).
func NewNotary(window time.Duration, now func() time.Time) *Notary {
	if window <= 0 {
		window = 10 * time.Minute
	}
	if now == nil {
		now = time.Now
	}
	return &Notary{window: window, now: now, max: maxNoteEntries, seen: make(map[string]noteSeen)}
}

// Sign adds a Date (when req has none) and a Note (replacing any) to req,
// computed over the From, To, Call-ID and Date values as sipgo will write
// them. Call it last, once From (with its tag), To, Call-ID and the body are
// final.
func (n *Notary) Sign(req *sip.Request, c NoteConfig) error {
	alg, err := parseNoteAlgorithm(c.Algorithm)
	if err != nil {
		return err
	}
	from, to, callID := req.From(), req.To(), req.CallID()
	if from == nil || to == nil || callID == nil {
		return errors.New("sign request: From, To and Call-ID must be set before the Note is computed")
	}
	date := req.GetHeader(DateHeader)
	if date == nil {
		date = sip.NewHeader(DateHeader, GBDate(n.now()))
		req.AppendHeader(date)
	}
	for h := req.GetHeader(NoteHeader); h != nil; h = req.GetHeader(NoteHeader) {
		req.RemoveHeader(h.Name())
	}
	var raw [sha256.Size]byte
	sum := alg.sum(raw[:0], from.Value(), to.Value(), callID.Value(), date.Value(), c.Seed, req.Body())
	var nonce string
	if c.Hex {
		nonce = hex.EncodeToString(sum)
	} else {
		nonce = base64.StdEncoding.EncodeToString(sum)
	}
	req.AppendHeader(sip.NewHeader(NoteHeader, `Digest nonce="`+nonce+`", algorithm=`+alg.String()))
	return nil
}

// Verify checks the Note of a request from a peer that must send one: the
// digest with c, the Date within the window, and the nonce not seen under
// another Via branch (a retransmission under the same branch is accepted).
// From and To are taken as sipgo renders them, which is the wire form for
// the usual `<sip:id@domain>;tag=…` written by GB devices.
func (n *Notary) Verify(req *sip.Request, c NoteConfig) error {
	want, err := parseNoteAlgorithm(c.Algorithm)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoteInvalid, err)
	}
	h := req.GetHeader(NoteHeader)
	if h == nil {
		return ErrNoteMissing
	}
	nonce, algorithm, err := ParseNote(h.Value())
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoteInvalid, err)
	}
	if algorithm != "" {
		if got, err := parseNoteAlgorithm(algorithm); err != nil || got != want {
			return fmt.Errorf("%w: algorithm %q, but %s is configured for this peer", ErrNoteInvalid, clip(algorithm), want)
		}
	}
	var raw [2 * sha256.Size]byte // room for what decoding writes beyond a digest
	got, err := decodeNote(raw[:0], nonce, c.Hex)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoteInvalid, err)
	}
	from, to, callID := req.From(), req.To(), req.CallID()
	if from == nil || to == nil || callID == nil {
		return fmt.Errorf("%w: From, To or Call-ID missing", ErrNoteInvalid)
	}
	dateHeader := req.GetHeader(DateHeader)
	if dateHeader == nil {
		return fmt.Errorf("%w: no Date header", ErrNoteDate)
	}
	var expect [sha256.Size]byte
	sum := want.sum(expect[:0], from.Value(), to.Value(), callID.Value(), dateHeader.Value(), c.Seed, req.Body())
	if subtle.ConstantTimeCompare(got, sum) != 1 {
		return fmt.Errorf("%w: digest does not match the message: check note_seed and note_algorithm on both sides", ErrNoteInvalid)
	}
	date, err := ParseGBDate(dateHeader.Value())
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoteDate, err)
	}
	now := n.now()
	if skew := now.Sub(date); skew > n.window || skew < -n.window {
		return fmt.Errorf("%w: Date %s is %s away from our clock, more than %s: synchronise both clocks",
			ErrNoteDate, GBDate(date), skew.Abs().Round(time.Second), n.window)
	}
	branch := ""
	if via := req.Via(); via != nil {
		branch, _ = via.Params.Get("branch")
	}
	// The standard's digest covers neither the method nor CSeq: an ACK and
	// the BYE after it in the same second (no body either) carry the same
	// nonce. A nonce counts as replayed when seen for the same method.
	var keyBuf [sha256.Size + 16]byte
	key := append(append(keyBuf[:0], sum...), req.Method...)
	return n.remember(key, branch, date, now)
}

// decodeNote decodes the digest written in nonce into dst's capacity. Base64
// without padding is accepted too: some vendors leave it out.
func decodeNote(dst []byte, nonce string, isHex bool) ([]byte, error) {
	if isHex {
		if hex.DecodedLen(len(nonce)) > cap(dst) {
			return nil, fmt.Errorf("nonce %q is too long for a digest", clip(nonce))
		}
		dst = dst[:hex.DecodedLen(len(nonce))]
		if _, err := hex.Decode(dst, []byte(nonce)); err != nil {
			return nil, fmt.Errorf("nonce %q is not hex (note_encoding is hex)", clip(nonce))
		}
		return dst, nil
	}
	enc := base64.StdEncoding
	if len(nonce)%4 != 0 {
		enc = base64.RawStdEncoding
	}
	if enc.DecodedLen(len(nonce)) > cap(dst) {
		return nil, fmt.Errorf("nonce %q is too long for a digest", clip(nonce))
	}
	m, err := enc.Decode(dst[:enc.DecodedLen(len(nonce))], []byte(nonce))
	if err != nil {
		return nil, fmt.Errorf("nonce %q is not base64 (set note_encoding: hex for a peer that writes hex)", clip(nonce))
	}
	return dst[:m], nil
}

// remember records a verified digest (with its method), or refuses it as a
// replay.
func (n *Notary) remember(sum []byte, branch string, date, now time.Time) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for n.queue.len() > 0 {
		front := n.queue.front()
		if e, ok := n.seen[front.key]; ok && now.Before(e.expires) {
			break
		}
		delete(n.seen, front.key)
		n.queue.pop()
	}
	if e, ok := n.seen[string(sum)]; ok {
		if branch == "" || e.branch != branch {
			return fmt.Errorf("%w: already received under Via branch %q, now under %q", ErrNoteReplay, clip(e.branch), clip(branch))
		}
		return nil // a retransmission
	}
	if len(n.seen) >= n.max {
		oldest := n.queue.pop()
		delete(n.seen, oldest.key)
		if oldest.date.After(n.watermark) {
			n.watermark = oldest.date
		}
	}
	if !date.After(n.watermark) {
		return fmt.Errorf("%w: Date %s is older than the replay cache covers after an overflow", ErrNoteReplay, GBDate(date))
	}
	key := string(sum)
	n.seen[key] = noteSeen{branch: strings.Clone(branch), expires: date.Add(n.window)}
	n.queue.push(noteQueued{key: key, date: date})
	return nil
}
