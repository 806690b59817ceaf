package cascade

import (
	"context"
	"encoding/xml"
	"errors"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
)

// routeTable remembers queries and controls routed from an upper platform to
// a device, by the SN we gave them, until their answer is complete. SNs are
// unique across the whole proxy, so answers for many uppers can't collide.
type routeTable struct {
	up      *upperSide
	mu      sync.Mutex
	pending map[int64]*routedQuery
}

type routedQuery struct {
	sn       int64 // ours, toward the device
	origSN   int64 // the upper's
	upper    *upperClient
	view     *shareView
	deviceID string // the device that must answer
	targetID string // the ID the upper asked for, as it sees it
	cmdType  string
	multi    bool
	answers  int // response MESSAGEs forwarded
	items    int // list items forwarded (multi-message answers)
	timer    *time.Timer
	started  time.Time // the upper's request arrived (set by add)
}

func newRouteTable(up *upperSide) *routeTable {
	return &routeTable{up: up, pending: map[int64]*routedQuery{}}
}

func (t *routeTable) add(q *routedQuery) {
	t.mu.Lock()
	defer t.mu.Unlock()
	q.started = time.Now()
	q.timer = time.AfterFunc(t.up.cfg.Lower.QueryTimeout, func() { t.expire(q) })
	t.pending[q.sn] = q
}

func (t *routeTable) remove(sn int64) *routedQuery {
	t.mu.Lock()
	defer t.mu.Unlock()
	q := t.pending[sn]
	if q != nil {
		q.timer.Stop()
		delete(t.pending, sn)
	}
	return q
}

// dropPlatform forgets the requests an upper client that went is waiting
// for: late answers from devices then go nowhere.
func (t *routeTable) dropPlatform(u *upperClient) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for sn, q := range t.pending {
		if q.upper == u {
			q.timer.Stop()
			delete(t.pending, sn)
		}
	}
}

func (t *routeTable) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending)
}

// expire answers the upper when the device stayed silent: an ERROR result
// rather than silence, so its operator sees why.
func (t *routeTable) expire(q *routedQuery) {
	t.mu.Lock()
	if t.pending[q.sn] != q {
		t.mu.Unlock()
		return
	}
	delete(t.pending, q.sn)
	answers, items := q.answers, q.items
	t.mu.Unlock()
	up := t.up
	log := q.upper.log.With().Str("device_id", q.deviceID).Str("target_id", q.targetID).Str("cmd_type", q.cmdType).
		Int64("sn", q.origSN).Int64("routed_sn", q.sn).Logger()
	up.metrics.Inc("gbproxy_routed_total", "platform", q.upper.id, "result", "timeout")
	if answers > 0 {
		log.Warn().Int("items", items).Msg("device stopped answering part-way; the upper platform got what arrived")
		return
	}
	log.Warn().Stringer("query_timeout", up.cfg.Lower.QueryTimeout).Msg("device did not answer a routed request in time; the upper platform gets Result ERROR")
	resp := &manscdp.ResultResponse{
		Base:   manscdp.Base{CmdType: q.cmdType, SN: q.origSN, DeviceID: q.targetID},
		Result: "ERROR",
		Extra:  []manscdp.AnyElement{{XMLName: xml.Name{Local: "Reason"}, Text: "device did not answer in time"}},
	}
	up.answerUpper(q.upper, resp)
}

// routed is one request from an upper on its way to a device: who asked,
// how to answer, and the fields its log lines carry. Fields are added only
// to lines actually logged: the answered-OK path, which is every routed
// request in normal operation, logs nothing.
type routed struct {
	up       *upperSide
	u        *upperClient
	req      *sip.Request
	tx       sip.ServerTransaction
	cmdType  string
	sn       int64
	targetID string
	// set by target
	local string
	dev   Device
	hops  int
}

func (r *routed) with(e *zerolog.Event) *zerolog.Event {
	e = e.Str("target_id", r.targetID).Str("cmd_type", r.cmdType).Int64("sn", r.sn).Str("call_id", callIDOf(r.req))
	if r.dev.ID != "" {
		e = e.Str("device_id", r.dev.ID).Str("channel_id", r.local)
	}
	return e
}

func (r *routed) answer(result string, code int, reason string) {
	r.up.metrics.Inc("gbproxy_routed_total", "platform", r.u.id, "result", result)
	r.up.ep.Respond(r.tx, r.req, code, reason, nil)
}

func (r *routed) badRequest(reason string) {
	r.up.ep.Respond(r.tx, r.req, sip.StatusBadRequest, "Bad Request ("+reason+")", nil)
}

// target finds the device behind targetID as the upper sees it and checks
// what every routed request must pass: shared (404), online (480) and
// Max-Forwards left (483), answering those itself.
func (r *routed) target(v *shareView) bool {
	local, dev, ok := r.up.registry.resolve(v, r.targetID)
	if !ok {
		r.with(r.u.log.Info()).Msg("request for an ID not shared with this upper platform answered 404")
		r.answer("not_found", sip.StatusNotFound, "Not Found (not shared with this platform)")
		return false
	}
	r.local, r.dev = local, dev
	if !dev.Online {
		r.with(r.u.log.Info()).Msg("request for a channel whose device is offline answered 480")
		r.answer("offline", sip.StatusTemporarilyUnavailable, "Temporarily Unavailable (device offline)")
		return false
	}
	r.hops = 70
	if mf := r.req.MaxForwards(); mf != nil {
		r.hops = int(mf.Val())
	}
	if r.hops <= 1 {
		r.with(r.u.log.Warn()).Msg("request has passed too many proxies (cascade loop?) and is refused with 483")
		r.answer("loop", sip.StatusTooManyHops, "Too Many Hops")
		return false
	}
	return true
}

// send carries body to the device (Max-Forwards one less, our
// Monitor-User-Identity) and answers the upper with the device leg's SIP
// outcome; undo runs when the device did not take it.
func (r *routed) send(body []byte, undo func()) {
	ctx, cancel := context.WithTimeout(r.up.ctx, requestTimeout)
	defer cancel()
	mf := sip.MaxForwardsHeader(r.hops - 1)
	res, err := r.up.devices.sendToDevice(ctx, r.dev, sip.MESSAGE, body, &mf, r.up.sig.forwardIdentity(r.req, r.u.id))
	switch {
	case err != nil:
		undo()
		r.with(r.u.log.Warn()).Err(err).Msg("device did not take the routed request; answered 408")
		r.answer("device_timeout", sip.StatusRequestTimeout, "Request Timeout (device did not answer)")
	case !res.IsSuccess():
		undo()
		r.with(r.u.log.Warn()).Int("status", res.StatusCode).Msg("device refused the routed request; its answer is passed up")
		r.answer("device_refused", res.StatusCode, res.Reason)
	default:
		r.answer("ok", sip.StatusOK, "OK")
	}
}

// route carries a query or control from an upper platform to the device that
// owns the target, with our SN and local IDs; the SIP outcome of the device
// leg becomes the upper's final response.
func (up *upperSide) route(u *upperClient, req *sip.Request, tx sip.ServerTransaction, hdr manscdp.Header) {
	r := &routed{up: up, u: u, req: req, tx: tx, cmdType: hdr.CmdType, sn: hdr.SN, targetID: hdr.DeviceID}
	v := u.view()
	if up.forwardToOwner(r, v) {
		return
	}
	if !r.target(v) {
		return
	}
	expects := hdr.Root == manscdp.RootQuery
	if hdr.Root == manscdp.RootControl {
		var m manscdp.Message
		if err := manscdp.Decode(req.Body(), &m); err != nil {
			r.with(u.log.Warn()).Err(err).Msg("unreadable control answered 400")
			r.badRequest("MANSCDP body")
			return
		}
		if ptz := m.Text("PTZCmd"); ptz != "" {
			switch _, err := manscdp.ParsePTZCmd(ptz); {
			case errors.Is(err, manscdp.ErrPTZUndefined):
				r.with(u.log.Info()).Err(err).Msg("PTZCmd outside the standard's instruction set passed on (vendor extension?)")
			case err != nil:
				r.with(u.log.Warn()).Err(err).Str("ptz_cmd", ptz[:min(len(ptz), 64)]).Msg("malformed PTZCmd answered 400; the upper platform sent a bad command")
				r.badRequest("PTZCmd")
				return
			}
		}
		expects = manscdp.ExpectsResponse(hdr.Root, hdr.CmdType, &m)
		up.noteSnapshot(u, &m)
	}
	sn := nextSN()
	body, err := manscdp.Rewrite(req.Body(), sn, func(id string) (string, bool) { return v.down(id) }, "")
	if err != nil {
		r.with(u.log.Warn()).Err(err).Msg("unreadable MANSCDP body answered 400")
		r.badRequest("MANSCDP body")
		return
	}
	if expects {
		up.routes.add(&routedQuery{sn: sn, origSN: hdr.SN, upper: u, view: v, deviceID: r.dev.ID,
			targetID: hdr.DeviceID, cmdType: hdr.CmdType, multi: manscdp.MultiPart(hdr.CmdType)})
	}
	r.send(body, func() { up.routes.remove(sn) })
}

// deliver forwards a device's Response to the upper that asked, with the
// upper's SN and IDs and the Monitor-User-Identity it came with, extended.
// It reports false when no routed request has this SN (then the message is
// ours: a catalog answer, or stray).
func (t *routeTable) deliver(deviceID string, hdr manscdp.Header, body []byte, identity sip.Header) bool {
	t.mu.Lock()
	q := t.pending[hdr.SN]
	if q == nil || q.deviceID != deviceID {
		t.mu.Unlock()
		return false
	}
	done := !q.multi
	if q.multi {
		var m manscdp.Message
		if err := manscdp.Decode(body, &m); err == nil {
			sum, n, ok := manscdp.CountItems(&m)
			q.items += n
			done = ok && q.items >= sum
		}
	}
	q.answers++
	if done {
		q.timer.Stop()
		delete(t.pending, q.sn)
	} else {
		q.timer.Reset(t.up.cfg.Lower.QueryTimeout)
	}
	t.mu.Unlock()

	out, err := manscdp.Rewrite(body, q.origSN, func(id string) (string, bool) { return q.view.up(id), true }, q.upper.charset())
	if err != nil {
		q.upper.log.Warn().Err(err).Str("device_id", deviceID).Int64("sn", hdr.SN).Msg("device answer could not be rewritten for the upper platform; dropped")
		return true
	}
	if err := q.upper.message(out, identity); err != nil {
		q.upper.log.Warn().Err(err).Str("device_id", deviceID).Str("cmd_type", hdr.CmdType).
			Int64("sn", q.origSN).Msg("upper platform did not take a routed answer")
		return true
	}
	if done {
		t.up.metrics.Observe("gbproxy_routed_query_seconds", time.Since(q.started), "platform", q.upper.id)
	}
	return true
}
