package cluster

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// secretKey holds the cluster's shared secret. It is written once, by the
// first node that finds it missing, and has no lease: it outlives every
// node.
const secretKey = prefix + "secret"

// SignatureHeader carries a cluster-internal request's signature:
// node=<id>;ts=<unix ms>;sig=<base64 HMAC-SHA256>.
const SignatureHeader = "X-GBProxy-Cluster"

// ToUpperHeader names the upper platform a node's INVITE to the node
// registered to it is for (directory.ToUpperHeader; a test keeps the two
// equal). The signature covers it when present.
const ToUpperHeader = "X-GBProxy-To-Upper"

// SignatureWindow is how far a signature's time may be from ours; a
// signature is accepted once per Via branch within it.
const SignatureWindow = 30 * time.Second

// Errors of Verify.
var (
	ErrUnsigned   = errors.New("cluster: request not signed")
	ErrBadSig     = errors.New("cluster: signature invalid")
	ErrStale      = errors.New("cluster: signature outside the time window")
	ErrReplay     = errors.New("cluster: signature replayed")
	ErrNotMember  = errors.New("cluster: request not from a live member's upper-side host")
	ErrNoSecret   = errors.New("cluster: shared secret not loaded (etcd unreachable since start)")
	errShortValue = errors.New("cluster: signature header malformed")
)

// signer holds the secret and the signatures seen; guarded by its mutex.
type signer struct {
	mu     sync.Mutex
	secret []byte
	seen   map[string]seenSig // sig -> first sighting
	swept  time.Time
}

type seenSig struct {
	branch  string
	expires time.Time
}

// secret returns the shared secret, creating it in etcd if no node has yet
// (a transaction: the first writer wins, everyone reads its value).
func (c *Cluster) secret(ctx context.Context) ([]byte, error) {
	c.sign.mu.Lock()
	s := c.sign.secret
	c.sign.mu.Unlock()
	if s != nil {
		return s, nil
	}
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return nil, err
	}
	cli, err := c.kv()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoSecret, err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.opTimeout())
	defer cancel()
	res, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(secretKey), "=", 0)).
		Then(clientv3.OpPut(secretKey, base64.StdEncoding.EncodeToString(fresh))).
		Else(clientv3.OpGet(secretKey)).
		Commit()
	if err != nil {
		c.fail("secret", err)
		return nil, fmt.Errorf("%w: %w", ErrNoSecret, err)
	}
	s = fresh
	if res.Succeeded {
		c.wrote(1)
		c.log.Info().Msg("cluster: shared secret created")
	} else {
		kvs := res.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return nil, ErrNoSecret
		}
		if s, err = base64.StdEncoding.DecodeString(string(kvs[0].Value)); err != nil || len(s) < 16 {
			return nil, fmt.Errorf("%w: stored secret unreadable", ErrNoSecret)
		}
	}
	c.sign.mu.Lock()
	c.sign.secret = s
	c.sign.mu.Unlock()
	return s, nil
}

// loadSecret fetches the secret once joined, so that the first
// cluster-internal request does not wait on etcd.
func (c *Cluster) loadSecret() {
	if _, err := c.secret(c.ctx); err != nil {
		c.log.Debug().Err(err).Msg("cluster: shared secret not loaded yet; loaded on first use")
	}
}

// mac is the HMAC over what makes the request this request: method,
// Request-URI, Call-ID, CSeq, From, To, the signer, its time, the body's
// hash and, when present, ToUpperHeader (after the rest, so that requests
// without it sign as before). A captured signature is worthless for any
// other request.
func mac(secret []byte, req *sip.Request, node, ts string) []byte {
	h := hmac.New(sha256.New, secret)
	body := sha256.Sum256(req.Body())
	for _, s := range []string{string(req.Method), req.Recipient.String(), headerValue(req.CallID()),
		headerValue(req.CSeq()), headerValue(req.From()), headerValue(req.To()), node, ts} {
		h.Write([]byte(strings.TrimSpace(s)))
		h.Write([]byte{'\n'})
	}
	h.Write(body[:])
	if to := req.GetHeader(ToUpperHeader); to != nil {
		h.Write([]byte("\n" + strings.TrimSpace(to.Value())))
	}
	return h.Sum(nil)
}

func headerValue(h sip.Header) string {
	if h == nil || (isNilHeader(h)) {
		return ""
	}
	return h.Value()
}

// isNilHeader: sipgo's typed getters return typed nil pointers.
func isNilHeader(h sip.Header) bool {
	switch v := h.(type) {
	case *sip.CallIDHeader:
		return v == nil
	case *sip.CSeqHeader:
		return v == nil
	case *sip.FromHeader:
		return v == nil
	case *sip.ToHeader:
		return v == nil
	}
	return false
}

// Sign marks req as sent by this node to another member. Call it last,
// once every signed part (From and To tags, CSeq, body) is final.
func (c *Cluster) Sign(req *sip.Request) error {
	secret, err := c.secret(c.ctx)
	if err != nil {
		return err
	}
	ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
	sig := base64.RawStdEncoding.EncodeToString(mac(secret, req, c.cfg.NodeID, ts))
	req.RemoveHeader(SignatureHeader)
	req.AppendHeader(sip.NewHeader(SignatureHeader, "node="+c.cfg.NodeID+";ts="+ts+";sig="+sig))
	return nil
}

// Signed reports whether req claims to be cluster-internal (Verify decides
// whether it is).
func Signed(req *sip.Request) bool { return req.GetHeader(SignatureHeader) != nil }

// Verify checks a request that claims to come from another member: it must
// come from the upper-side host of the live member it names, carry a valid
// signature of the cluster's secret made within SignatureWindow, and not be
// a replay (the same signature under another Via branch; a retransmission
// under the same branch passes). It returns the sending node's ID.
func (c *Cluster) Verify(req *sip.Request) (string, error) {
	h := req.GetHeader(SignatureHeader)
	if h == nil {
		return "", ErrUnsigned
	}
	node, ts, sig, err := parseSignature(h.Value())
	if err != nil {
		return "", err
	}
	if !c.memberHost(node, req.Source()) {
		return node, ErrNotMember
	}
	secret, err := c.secret(c.ctx)
	if err != nil {
		return node, err
	}
	got, err := base64.RawStdEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, mac(secret, req, node, ts)) {
		return node, ErrBadSig
	}
	ms, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return node, ErrBadSig
	}
	now := time.Now()
	if d := now.Sub(time.UnixMilli(ms)); d > SignatureWindow || d < -SignatureWindow {
		return node, ErrStale
	}
	branch := ""
	if via := req.Via(); via != nil {
		branch, _ = via.Params.Get("branch")
	}
	return node, c.remember(sig, branch, now)
}

// SignedBy is the node a signed request names as its sender (Verify
// decides whether it is); empty when unsigned or malformed.
func SignedBy(req *sip.Request) string {
	h := req.GetHeader(SignatureHeader)
	if h == nil {
		return ""
	}
	node, _, _, _ := parseSignature(h.Value())
	return node
}

func parseSignature(v string) (node, ts, sig string, err error) {
	for part := range strings.SplitSeq(v, ";") {
		name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return "", "", "", errShortValue
		}
		switch name {
		case "node":
			node = val
		case "ts":
			ts = val
		case "sig":
			sig = val
		}
	}
	if node == "" || ts == "" || sig == "" {
		return "", "", "", errShortValue
	}
	return node, ts, sig, nil
}

// memberHost reports whether source (ip:port) is the host of live member
// node's upper side (its port is the sender's choice over TCP).
func (c *Cluster) memberHost(node, source string) bool {
	host, _, err := net.SplitHostPort(source)
	if err != nil {
		return false
	}
	c.mu.RLock()
	n, ok := c.cache.nodes[node]
	c.mu.RUnlock()
	if !ok || node == c.cfg.NodeID {
		return false
	}
	nh, _, err := net.SplitHostPort(n.Upper)
	return err == nil && net.ParseIP(nh).Equal(net.ParseIP(host))
}

// IsMemberUpper reports whether addr (ip:port) is a live member's
// upper-side SIP address, this node's excepted: requests sent there are
// cluster-internal and get signed.
func (c *Cluster) IsMemberUpper(addr string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for id, n := range c.cache.nodes {
		if id != c.cfg.NodeID && n.Upper == addr {
			return true
		}
	}
	return false
}

// remember records a verified signature until it leaves the window.
func (c *Cluster) remember(sig, branch string, now time.Time) error {
	s := &c.sign
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[string]seenSig{}
	}
	if now.Sub(s.swept) > SignatureWindow {
		for k, e := range s.seen {
			if now.After(e.expires) {
				delete(s.seen, k)
			}
		}
		s.swept = now
	}
	if e, ok := s.seen[sig]; ok {
		if branch == "" || e.branch != branch {
			return ErrReplay
		}
		return nil // a retransmission
	}
	s.seen[sig] = seenSig{branch: branch, expires: now.Add(2 * SignatureWindow)}
	return nil
}
