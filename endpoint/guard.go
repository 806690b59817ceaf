package endpoint

import (
	"bytes"
	"cmp"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Verdict is a Guard's decision about one incoming request. Over UDP it is
// made before sipgo creates a transaction, so a refusal is answered
// statelessly and leaves no state behind; over TCP/TLS before any handler.
type Verdict struct {
	// Known: the request comes from an authenticated peer bound to this
	// source (a registered device on its address or connection, a
	// configured upper platform). Other sources are rate limited per IP
	// (Options.Limit). Over TCP/TLS, Known also claims the connection.
	Known bool
	// Code, when not 0, refuses the request with this final status.
	Code    int
	Reason  string
	Headers []sip.Header
	// Label is the reason label of gbproxy_sip_refused_total: it must come
	// from a fixed set ("not_registered", "wrong_source"…), never from the
	// request. Empty counts as "other".
	Label string
	// Hint is the log line's message: what was refused and what the
	// operator can do ("" = a generic one).
	Hint string
	// Routine marks an answer that is part of a normal exchange (a digest
	// challenge): sent like a refusal, but neither logged nor counted as one.
	Routine bool
}

// Guard decides which requests reach the handlers. Admit runs on the read
// path: it must be quick and must not block. Admit runs exactly once per
// received request (retransmissions included). The endpoint logs (bounded
// per source) and counts every refusal: Admit need not.
type Guard interface {
	Admit(req *sip.Request) Verdict
}

// SourceGuard is a Guard that can also tell, from the source IP alone,
// whether a peer of ours may be sending: over UDP, datagrams from other
// IPs are rate limited before they are parsed, so a flood costs little.
type SourceGuard interface {
	KnownSource(ip netip.Addr) bool
}

// Refuse is a Verdict refusing with code.
func Refuse(code int, reason string, headers ...sip.Header) Verdict {
	return Verdict{Code: code, Reason: reason, Headers: headers}
}

// Reasons of the endpoint's own refusals (gbproxy_sip_refused_total).
const (
	reasonOversize    = "oversize"
	reasonUnparseable = "unparseable"
	reasonMalformed   = "malformed"
	reasonVersion     = "version"
	reasonCSeq        = "cseq"
	reasonRateLimited = "rate_limited"
)

// Bounds on what the rest of gbproxy takes from a request as is: GB IDs
// are 20 digits, Call-IDs a few dozen characters.
const (
	maxCallID = 256
	maxUser   = 64
)

// checkRequest applies the standard's checks that need no state: SIP/2.0
// only (RFC 3261 §21.5.7), the mandatory headers (§8.1.1), and a CSeq
// method equal to the request's (§8.1.1.5).
func checkRequest(req *sip.Request) Verdict {
	if !strings.EqualFold(req.SipVersion, "SIP/2.0") {
		return Verdict{Code: sip.StatusVersionNotSupported, Reason: "Version Not Supported", Label: reasonVersion}
	}
	switch {
	case req.Via() == nil, req.From() == nil, req.To() == nil, req.CallID() == nil:
		return Verdict{Code: sip.StatusBadRequest, Reason: "Bad Request (missing Via, From, To or Call-ID)", Label: reasonMalformed}
	case req.CSeq() == nil:
		return Verdict{Code: sip.StatusBadRequest, Reason: "Bad Request (missing CSeq)", Label: reasonCSeq}
	case !strings.EqualFold(string(req.CSeq().MethodName), string(req.Method)):
		return Verdict{Code: sip.StatusBadRequest, Reason: "Bad Request (CSeq method differs from the request method)", Label: reasonCSeq}
	case len(req.CallID().Value()) > maxCallID || len(req.From().Address.User) > maxUser ||
		len(req.To().Address.User) > maxUser || len(req.Recipient.User) > maxUser:
		// Every log line and table key downstream takes these as they are.
		return Verdict{Code: sip.StatusBadRequest, Reason: "Bad Request (Call-ID or user part too long)", Label: reasonMalformed}
	}
	return Verdict{}
}

// admit decides about one request: the standard's checks, then the Guard,
// then the per-IP limit for sources that are not known peers. drop means no
// answer at all.
// charged: the request's source was already charged to the limit (UDP,
// before parsing).
func (e *Endpoint) admit(req *sip.Request, charged bool) (v Verdict, drop bool) {
	v = checkRequest(req)
	if v.Code == 0 && e.guard != nil {
		v = e.guard.Admit(req)
	}
	// Malformed requests are limited too: each is answered, and over UDP an
	// answer to a forged source would reflect a flood onto it.
	if (!v.Known || v.Code != 0) && e.limit != nil && !charged && !e.limit(sourceIP(req.Source()).String()) {
		return Verdict{Label: reasonRateLimited}, true
	}
	return v, false
}

// serve runs h for a request sipgo passed up, after admitting it. UDP
// requests were admitted on the read path already (filterDatagram): Admit
// may keep state (nonces) and must see each request once.
func (e *Endpoint) serve(req *sip.Request, tx sip.ServerTransaction, h Handler) {
	e.countIn(req)
	if req.Transport() != "UDP" {
		v, drop := e.admit(req, false)
		if drop || v.Code != 0 {
			e.refused(req, v, drop)
			if !drop && !req.IsAck() {
				e.Respond(tx, req, v.Code, reasonOr(v), nil, v.Headers...)
			}
			return
		}
		if v.Known {
			e.Claim(req.Source())
		}
	}
	defer func() {
		if r := recover(); r != nil {
			e.log.Error().Str("method", clip(string(req.Method))).Str("call_id", clip(callID(req))).
				Interface("panic", r).Msg("request handler panicked; answered 500 (please report this bug)")
			e.Respond(tx, req, sip.StatusInternalServerError, "Server Internal Error", nil)
		}
	}()
	h(req, tx)
}

func reasonOr(v Verdict) string {
	if v.Reason == "" {
		return "Refused"
	}
	return v.Reason
}

// refused counts a refused or dropped request and logs it, bounded per source.
func (e *Endpoint) refused(req *sip.Request, v Verdict, dropped bool) {
	if v.Routine && !dropped {
		return
	}
	label := v.Label
	if label == "" {
		label = "other"
	}
	e.metrics.Inc("gbproxy_sip_refused_total", "side", e.name, "reason", label)
	ip := sourceIP(req.Source())
	ok, suppressed := e.drops.allow(ip, label, time.Now())
	if !ok {
		return
	}
	ev := e.log.Warn().Str("reason", label).Str("source", req.Source()).Str("transport", req.Transport()).
		Str("method", clip(string(req.Method))).Str("call_id", clip(callID(req))).Int("suppressed", suppressed)
	if from := req.From(); from != nil {
		ev = ev.Str("from", clip(from.Address.User))
	}
	if dropped {
		ev.Msg("SIP request dropped: source over its rate limit for unauthenticated requests")
		return
	}
	ev.Int("status", v.Code).Str("phrase", clip(v.Reason)).Msg(cmp.Or(v.Hint, "SIP request refused"))
}

// udpGuard is the UDP socket as sipgo reads it: ReadFrom returns only the
// datagrams that pass filterDatagram; the others are answered statelessly
// or dropped there, so sipgo never keeps state (transactions, pooled
// addresses) or writes log lines for them.
type udpGuard struct {
	net.PacketConn
	e *Endpoint
}

func (g *udpGuard) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := g.PacketConn.ReadFrom(b)
		if err != nil || g.e.filterDatagram(b[:n], n == len(b), addr) {
			return n, addr, err
		}
	}
}

// filterDatagram reports whether sipgo may have the datagram data from src.
// full: the datagram filled the read buffer, so it may have been cut.
func (e *Endpoint) filterDatagram(data []byte, full bool, src net.Addr) bool {
	if full {
		e.droppedDatagram(src, reasonOversize, data, nil)
		return false
	}
	if len(data) <= 4 && len(bytes.Trim(data, "\r\n")) == 0 {
		return true // CRLF keep-alive (RFC 5626 §3.5.1)
	}
	charged := false
	if e.limit != nil && e.sources != nil {
		if ip := addrIP(src); !e.sources.KnownSource(ip) {
			if !e.limit(ip.String()) {
				e.droppedDatagram(src, reasonRateLimited, data, nil)
				return false
			}
			charged = true
		}
	}
	msg, err := e.parser.ParseSIP(data)
	if err != nil {
		e.droppedDatagram(src, reasonUnparseable, data, err)
		return false
	}
	req, ok := msg.(*sip.Request)
	if !ok {
		return true
	}
	req.SetTransport("UDP")
	req.SetSource(src.String())
	v, drop := e.admit(req, charged)
	if !drop && v.Code == 0 {
		return true
	}
	e.countIn(req)
	e.refused(req, v, drop)
	if !drop && !req.IsAck() {
		e.respondStateless(req, v, src)
	}
	return false
}

func (e *Endpoint) droppedDatagram(src net.Addr, reason string, data []byte, err error) {
	e.metrics.Inc("gbproxy_sip_refused_total", "side", e.name, "reason", reason)
	ok, suppressed := e.drops.allow(addrIP(src), reason, time.Now())
	if !ok {
		return
	}
	ev := e.log.Warn().Str("reason", reason).Str("source", src.String()).Int("suppressed", suppressed)
	switch {
	case err != nil:
		ev.Int("bytes", len(data)).Str("error", clip(err.Error())).Str("data", clipBytes(data)).Msg("UDP datagram dropped: not a SIP message")
	case reason == reasonRateLimited:
		ev.Msg("UDP datagram dropped unparsed: a source with no registered device or configured upper over its rate limit (security.unauthenticated_rate)")
	default:
		ev.Int("read_buffer", len(data)).Msg("UDP datagram dropped: as large as the read buffer, so possibly cut (send large messages over TCP)")
	}
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// respondStateless answers req straight to the datagram's source, outside
// any transaction: a retransmission gets a new, equal answer.
func (e *Endpoint) respondStateless(req *sip.Request, v Verdict, to net.Addr) {
	res := e.NewResponse(req, v.Code, reasonOr(v), nil, v.Headers...)
	e.metrics.Inc("gbproxy_sip_messages_total", "side", e.name, "direction", "out", "method", methodLabel(req.Method), "status", statusLabel(res.StatusCode))
	buf := bufPool.Get().(*bytes.Buffer)
	defer bufPool.Put(buf)
	buf.Reset()
	res.StringWrite(buf)
	if _, err := e.udp.WriteTo(buf.Bytes(), to); err != nil {
		if ok, _ := e.drops.allow(addrIP(to), "send_error", time.Now()); !ok {
			return
		}
		e.log.Warn().Err(err).Str("remote", to.String()).Int("status", res.StatusCode).Msg("could not send SIP response")
	}
}
