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
	c       *Cascade
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
}

func newRouteTable(c *Cascade) *routeTable {
	return &routeTable{c: c, pending: map[int64]*routedQuery{}}
}

func (t *routeTable) add(q *routedQuery) {
	t.mu.Lock()
	defer t.mu.Unlock()
	q.timer = time.AfterFunc(t.c.cfg.Lower.QueryTimeout, func() { t.expire(q) })
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
	c := t.c
	log := q.upper.log.With().Str("device_id", q.deviceID).Str("target_id", q.targetID).Str("cmd_type", q.cmdType).
		Int64("sn", q.origSN).Int64("routed_sn", q.sn).Logger()
	c.metrics.Inc("gbproxy_routed_total", "platform", q.upper.cfg.ID, "result", "timeout")
	if answers > 0 {
		log.Warn().Int("items", items).Msg("device stopped answering part-way; the upper platform got what arrived")
		return
	}
	log.Warn().Stringer("query_timeout", c.cfg.Lower.QueryTimeout).Msg("device did not answer a routed request in time; the upper platform gets Result ERROR")
	resp := &manscdp.ResultResponse{
		Base:   manscdp.Base{CmdType: q.cmdType, SN: q.origSN, DeviceID: q.targetID},
		Result: "ERROR",
		Extra:  []manscdp.AnyElement{{XMLName: xml.Name{Local: "Reason"}, Text: "device did not answer in time"}},
	}
	c.answerUpper(q.upper, resp)
}

// route carries a query or control from an upper platform to the device that
// owns the target, with our SN and local IDs; the SIP outcome of the device
// leg becomes the upper's final response.
func (c *Cascade) route(u *upperClient, req *sip.Request, tx sip.ServerTransaction, hdr manscdp.Header) {
	v := u.view()
	local, dev, ok := c.registry.resolve(v, hdr.DeviceID)
	// Fields are added only to lines actually logged: the answered-OK path,
	// which is every routed request in normal operation, logs nothing.
	with := func(e *zerolog.Event) *zerolog.Event {
		e = e.Str("target_id", hdr.DeviceID).Str("cmd_type", hdr.CmdType).Int64("sn", hdr.SN).Str("call_id", callIDOf(req))
		if ok {
			e = e.Str("device_id", dev.ID).Str("channel_id", local)
		}
		return e
	}
	answer := func(result string, code int, reason string) {
		c.metrics.Inc("gbproxy_routed_total", "platform", u.cfg.ID, "result", result)
		c.upper.Respond(tx, req, code, reason, nil)
	}
	badRequest := func(reason string) { c.upper.Respond(tx, req, sip.StatusBadRequest, "Bad Request ("+reason+")", nil) }
	if !ok {
		with(u.log.Info()).Msg("request for an ID not shared with this upper platform answered 404")
		answer("not_found", sip.StatusNotFound, "Not Found (not shared with this platform)")
		return
	}
	if !dev.Online {
		with(u.log.Info()).Msg("request for a channel whose device is offline answered 480")
		answer("offline", sip.StatusTemporarilyUnavailable, "Temporarily Unavailable (device offline)")
		return
	}
	hops := 70
	if mf := req.MaxForwards(); mf != nil {
		hops = int(mf.Val())
	}
	if hops <= 1 {
		with(u.log.Warn()).Msg("request has passed too many proxies (cascade loop?) and is refused with 483")
		answer("loop", sip.StatusTooManyHops, "Too Many Hops")
		return
	}
	expects := hdr.Root == manscdp.RootQuery
	if hdr.Root == manscdp.RootControl {
		var m manscdp.Message
		if err := manscdp.Decode(req.Body(), &m); err != nil {
			with(u.log.Warn()).Err(err).Msg("unreadable control answered 400")
			badRequest("MANSCDP body")
			return
		}
		if ptz := m.Text("PTZCmd"); ptz != "" {
			switch _, err := manscdp.ParsePTZCmd(ptz); {
			case errors.Is(err, manscdp.ErrPTZUndefined):
				with(u.log.Info()).Err(err).Msg("PTZCmd outside the standard's instruction set passed on (vendor extension?)")
			case err != nil:
				with(u.log.Warn()).Err(err).Str("ptz_cmd", ptz[:min(len(ptz), 64)]).Msg("malformed PTZCmd answered 400; the upper platform sent a bad command")
				badRequest("PTZCmd")
				return
			}
		}
		expects = manscdp.ExpectsResponse(hdr.Root, hdr.CmdType, &m)
		c.noteSnapshot(u, &m)
	}
	sn := nextSN()
	body, err := manscdp.Rewrite(req.Body(), sn, func(id string) (string, bool) { return v.down(id) }, "")
	if err != nil {
		with(u.log.Warn()).Err(err).Msg("unreadable MANSCDP body answered 400")
		badRequest("MANSCDP body")
		return
	}
	if expects {
		c.routes.add(&routedQuery{sn: sn, origSN: hdr.SN, upper: u, view: v, deviceID: dev.ID,
			targetID: hdr.DeviceID, cmdType: hdr.CmdType, multi: manscdp.MultiPart(hdr.CmdType)})
	}
	ctx, cancel := context.WithTimeout(c.ctx, requestTimeout)
	defer cancel()
	mf := sip.MaxForwardsHeader(hops - 1)
	res, err := c.sendToDevice(ctx, dev, sip.MESSAGE, body, &mf, c.sig.forwardIdentity(req, u.cfg.ID))
	switch {
	case err != nil:
		c.routes.remove(sn)
		with(u.log.Warn()).Err(err).Msg("device did not take the routed request; answered 408")
		answer("device_timeout", sip.StatusRequestTimeout, "Request Timeout (device did not answer)")
	case !res.IsSuccess():
		c.routes.remove(sn)
		with(u.log.Warn()).Int("status", res.StatusCode).Msg("device refused the routed request; its answer is passed up")
		answer("device_refused", res.StatusCode, res.Reason)
	default:
		answer("ok", sip.StatusOK, "OK")
	}
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
		q.timer.Reset(t.c.cfg.Lower.QueryTimeout)
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
	}
	return true
}
