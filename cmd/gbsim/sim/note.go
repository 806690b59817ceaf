package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cmd/gbsim/gbnote"
)

// NoteConfig turns on the GB/T 28181 signalling digest (SIP信令认证) for a simulator: with a Seed,
// every request it sends but REGISTER carries Date and Note; with Require, requests it receives
// (REGISTER and ACK aside) without a valid Note, or with a Date more than Window off, are answered
// 403. The zero value is off.
type NoteConfig = gbnote.Config

// headerMonitorUserIdentity is the cross-domain identity header of GB/T 28181 (the seed's 跨域访问).
const headerMonitorUserIdentity = "Monitor-User-Identity"

// MonitorUserIdentity returns the request's Monitor-User-Identity value, empty when absent.
func (r Received) MonitorUserIdentity() string {
	return headerValue(r.Request, headerMonitorUserIdentity)
}

// Refused is a request a simulator answered 403 because its Note did not check out.
type Refused struct {
	Received
	Reason error // wraps one of gbnote's Err values
}

// NoteStats counts received requests, REGISTER aside, by the outcome of their Note check. With
// Require, Invalid requests other than ACK were refused.
type NoteStats struct{ Valid, Invalid int64 }

// guard is a simulator's Note and Monitor-User-Identity handling: it stamps the requests the
// simulator sends and checks the ones it receives. Device and Upper embed it for its methods.
type guard struct {
	signer   *gbnote.Signer // nil: Note off
	require  bool
	log      *slog.Logger
	identity atomic.Pointer[string]
	valid    atomic.Int64
	invalid  atomic.Int64
	refused  journal[Refused]
}

func newGuard(cfg NoteConfig, log *slog.Logger) (*guard, error) {
	s, err := gbnote.New(cfg)
	if err != nil {
		return nil, err
	}
	if s == nil && cfg.Require {
		return nil, errors.New("note: Require needs a Seed")
	}
	return &guard{signer: s, require: cfg.Require, log: log}, nil
}

// SetMonitorUserIdentity makes every request sent from now on, REGISTER aside, carry
// Monitor-User-Identity with this value (e.g. a chain of gateway IDs to test the proxy's 482/483);
// empty sends none.
func (g *guard) SetMonitorUserIdentity(v string) { g.identity.Store(&v) }

// NoteStats returns the Note check counts so far.
func (g *guard) NoteStats() NoteStats {
	return NoteStats{Valid: g.valid.Load(), Invalid: g.invalid.Load()}
}

// Refused returns every request refused for its Note, in arrival order.
func (g *guard) Refused() []Refused { return g.refused.all() }

// WaitRefused returns the oldest refused request no earlier WaitRefused returned, waiting for one.
func (g *guard) WaitRefused(ctx context.Context) (Refused, error) {
	return g.refused.wait(ctx, "request refused for its Note", func(Refused) bool { return true })
}

// stamp adds Monitor-User-Identity, Date and Note to a request about to be sent. Note covers the
// header values as sipgo will write them (Value is what its serialiser writes after "Name: ").
func (g *guard) stamp(req *sip.Request) {
	if req.Method == sip.REGISTER {
		return
	}
	if id := g.identity.Load(); id != nil && *id != "" {
		req.RemoveHeader(headerMonitorUserIdentity)
		req.AppendHeader(sip.NewHeader(headerMonitorUserIdentity, *id))
	}
	if g.signer == nil {
		return
	}
	date := gbnote.Date(time.Now())
	req.RemoveHeader("Date")
	req.RemoveHeader("Note")
	req.AppendHeader(sip.NewHeader("Date", date))
	req.AppendHeader(sip.NewHeader("Note", g.signer.Note(headerValue(req, "From"), headerValue(req, "To"),
		headerValue(req, "Call-ID"), date, req.Body())))
}

// check verifies a received request's Note. The header values are sipgo's re-serialisation of what
// it parsed, which is the wire text for the canonical forms peers write.
func (g *guard) check(req *sip.Request, now time.Time) error {
	return g.signer.Check(headerValue(req, "From"), headerValue(req, "To"), headerValue(req, "Call-ID"),
		headerValue(req, "Date"), headerValue(req, "Note"), req.Body(), now)
}

// wrap puts the Note check in front of a request handler; without a seed it returns h unchanged.
func (g *guard) wrap(h sipgo.RequestHandler) sipgo.RequestHandler {
	if g.signer == nil {
		return h
	}
	return func(req *sip.Request, tx sip.ServerTransaction) {
		if req.Method == sip.REGISTER {
			h(req, tx)
			return
		}
		err := g.check(req, time.Now())
		if err == nil {
			g.valid.Add(1)
			h(req, tx)
			return
		}
		g.invalid.Add(1)
		log := g.log.With("method", req.Method.String(), "call_id", headerValue(req, "Call-ID"),
			"source", req.Source(), "error", err)
		switch {
		case !g.require:
			log.Debug("request without a valid Note accepted: Require is off")
			h(req, tx)
		case req.IsAck():
			log.Warn("ACK without a valid Note accepted: an ACK cannot be answered")
			h(req, tx)
		default:
			log.Warn("request refused: no valid Note signalling digest")
			rec, _ := newReceived(req, false)
			g.refused.add(Refused{Received: rec, Reason: err})
			respond(g.log, tx, sip.NewResponseFromRequest(req, sip.StatusForbidden, notePhrase(err), nil))
		}
	}
}

// notePhrase is the 403 reason phrase saying which check failed.
func notePhrase(err error) string {
	for _, p := range []struct {
		err    error
		phrase string
	}{
		{gbnote.ErrNoNote, "Missing Note"},
		{gbnote.ErrBadNote, "Bad Note"},
		{gbnote.ErrAlgorithm, "Note Algorithm Mismatch"},
		{gbnote.ErrMismatch, "Note Digest Mismatch"},
		{gbnote.ErrNoDate, "Missing Date"},
		{gbnote.ErrBadDate, "Bad Date"},
		{gbnote.ErrStaleDate, "Date Out Of Window"},
	} {
		if errors.Is(err, p.err) {
			return p.phrase
		}
	}
	return "Forbidden"
}

// install makes client stamp every request it sends, ACKs included. sipgo's TxRequester is the one
// place every Do, TransactionRequest and WriteRequest of a client passes once the request is built;
// WriteRequest is then for ACKs only (a raw retransmission goes to the transport layer itself).
func (g *guard) install(client *sipgo.Client, ua *sipgo.UserAgent) {
	client.TxRequester = stampingRequester{g: g, ua: ua}
}

// stampingRequester is sipgo's own send path (transaction layer, or transport for an ACK) after stamp.
type stampingRequester struct {
	g  *guard
	ua *sipgo.UserAgent
}

func (r stampingRequester) Request(ctx context.Context, req *sip.Request) (sip.ClientTransaction, error) {
	r.g.stamp(req)
	if req.IsAck() {
		if err := r.ua.TransportLayer().WriteMsg(req); err != nil {
			return nil, fmt.Errorf("send ACK: %w", err)
		}
		return nil, nil
	}
	tx, err := r.ua.TransactionLayer().Request(ctx, req)
	if err != nil {
		return nil, err // not tx: a nil *ClientTx in the interface would not be nil
	}
	return tx, nil
}

// headerValue returns a header's value, empty when the request or the header is absent.
func headerValue(req *sip.Request, name string) string {
	if req == nil {
		return ""
	}
	if h := req.GetHeader(name); h != nil {
		return h.Value()
	}
	return ""
}
