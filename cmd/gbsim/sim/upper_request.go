package sim

import (
	"context"
	"errors"
	"fmt"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Answer is what a lower sent back for one Request.
type Answer struct {
	SN     int    // SN of the request
	Status int    // final SIP status of the request's MESSAGE
	Reason string // its reason phrase
	// Bodies are the Response MESSAGEs that carried SN, in arrival order.
	Bodies []AnswerBody
	// Complete is true when the items received reached the announced SumNum; a single Response
	// without SumNum (DeviceInfo, a control's Result) is complete by itself.
	Complete bool
}

// Items counts the list items of every body.
func (a Answer) Items() int {
	n := 0
	for _, b := range a.Bodies {
		n += b.Items
	}
	return n
}

// AnswerBody is one Response MESSAGE body, raw and decoded.
type AnswerBody struct {
	Raw      []byte // converted to UTF-8; the XML declaration is left as sent
	Root     string // "Response" unless the lower got it wrong
	CmdType  string
	SN       int
	DeviceID string
	Result   string // empty when the body has none
	SumNum   int    // 0 when the body has none
	Items    int    // <Item>s in its list (DeviceList, RecordList, PresetList, Alarmstatus, ...)
	Err      error  // why the body could not be decoded; the fields above are then partial
}

func newAnswerBody(raw []byte) AnswerBody {
	var v answerView
	b := AnswerBody{Raw: raw, Err: decodeBody(raw, &v)}
	b.Root, b.CmdType, b.SN, b.DeviceID, b.Result, b.SumNum = v.XMLName.Local, v.CmdType, v.SN, v.DeviceID, v.Result, v.SumNum
	for _, l := range v.Lists {
		b.Items += len(l.Items)
	}
	return b
}

// lowerRoute is how requests reach a registered lower: down its own TCP/TLS connection when it
// registered over one, else to the UDP address it registered from.
type lowerRoute struct {
	client          *sipgo.Client
	dest, transport string
	uri             sip.Uri // sip:lowerID@its domain
}

func (u *Upper) route(lowerID string) (lowerRoute, error) {
	l, ok := u.Lower(lowerID)
	if !ok || !l.Registered {
		return lowerRoute{}, fmt.Errorf("lower %s is not registered", lowerID)
	}
	r := lowerRoute{client: u.udpClient, dest: l.Source, transport: l.Transport,
		uri: sip.Uri{Scheme: "sip", User: lowerID, Host: l.Domain}}
	if connOriented(l.Transport) {
		conn, err := u.ua.TransportLayer().GetConnection(l.Transport, l.Source)
		if err != nil {
			return lowerRoute{}, fmt.Errorf("lower %s: its %s connection from %s is closed; it must register again", lowerID, l.Transport, l.Source)
		}
		_, _ = conn.TryClose()
		r.client = u.tcpClient
	}
	return r, nil
}

func (u *Upper) nextSN() int { return int(u.sn.Add(1)) }

// startCommand registers SN sn as pending, then sends body in a MESSAGE to the lower and returns the
// final response. Unless it fails, the caller must call dropPending(sn).
func (u *Upper) startCommand(ctx context.Context, lowerID, cmdType string, sn int, body []byte) (*pendingQuery, *sip.Response, error) {
	r, err := u.route(lowerID)
	if err != nil {
		return nil, nil, err
	}
	p := &pendingQuery{cmdType: cmdType}
	u.mu.Lock()
	u.pending[sn] = p
	u.mu.Unlock()
	res, err := r.client.Do(ctx, newMessage(u.selfURI(), r.uri, r.dest, r.transport, body))
	if err != nil {
		u.dropPending(sn)
		return nil, nil, fmt.Errorf("%s to lower %s at %s/%s: %w", cmdType, lowerID, r.dest, r.transport, err)
	}
	return p, res, nil
}

// sendQuery sends a plain MANSCDP Query and fails unless its MESSAGE is answered 2xx.
func (u *Upper) sendQuery(ctx context.Context, lowerID, cmdType, deviceID string) (int, *pendingQuery, error) {
	sn := u.nextSN()
	body, err := encodeBody(queryCmd{CmdType: cmdType, SN: sn, DeviceID: deviceID}, CharsetGB2312)
	if err != nil {
		return 0, nil, err
	}
	p, res, err := u.startCommand(ctx, lowerID, cmdType, sn, body)
	if err != nil {
		return 0, nil, err
	}
	if res.StatusCode/100 != 2 {
		u.dropPending(sn)
		return 0, nil, fmt.Errorf("%s query to lower %s answered %d %s", cmdType, lowerID, res.StatusCode, res.Reason)
	}
	return sn, p, nil
}

func (u *Upper) dropPending(sn int) {
	u.mu.Lock()
	delete(u.pending, sn)
	u.mu.Unlock()
}

// nextBodies waits for Response bodies past the first seen ones.
func (u *Upper) nextBodies(ctx context.Context, p *pendingQuery, seen int) ([][]byte, error) {
	for {
		changed := p.update.changed()
		u.mu.Lock()
		fresh := p.bodies[seen:]
		u.mu.Unlock()
		if len(fresh) > 0 {
			return fresh, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Request sends any MANSCDP command — root "Query" or "Control" — of cmdType about deviceID (the
// lower itself when empty), with a fresh SN and the extra child elements in order. It returns the
// MESSAGE's SIP status and every Response carrying the SN, collected until their items reach
// SumNum, or until no Response came for QuietPeriod, or until ctx ends (then with an error as well).
// A non-2xx status is no error: the Answer reports it, with no bodies.
func (u *Upper) Request(ctx context.Context, lowerID, root, cmdType, deviceID string, extra ...Field) (Answer, error) {
	if deviceID == "" {
		deviceID = lowerID
	}
	ans := Answer{SN: u.nextSN()}
	doc, err := buildCommand(root, cmdType, ans.SN, deviceID, extra)
	if err != nil {
		return ans, err
	}
	body, err := encodeDoc(doc, CharsetGB2312)
	if err != nil {
		return ans, err
	}
	p, res, err := u.startCommand(ctx, lowerID, cmdType, ans.SN, body)
	if err != nil {
		return ans, err
	}
	defer u.dropPending(ans.SN)
	ans.Status, ans.Reason = res.StatusCode, res.Reason
	if res.StatusCode/100 != 2 {
		return ans, nil
	}
	for !ans.Complete {
		quiet, cancel := context.WithTimeout(ctx, u.cfg.QuietPeriod)
		bodies, err := u.nextBodies(quiet, p, len(ans.Bodies))
		cancel()
		if ctx.Err() != nil {
			return ans, fmt.Errorf("%s %s to lower %s (SN %d): %d Responses, %d items so far: %w",
				root, cmdType, lowerID, ans.SN, len(ans.Bodies), ans.Items(), ctx.Err())
		}
		if err != nil {
			return ans, nil // quiet period over
		}
		sum := 0
		for _, raw := range bodies {
			ans.Bodies = append(ans.Bodies, newAnswerBody(raw))
		}
		for _, b := range ans.Bodies {
			sum = max(sum, b.SumNum)
		}
		ans.Complete = ans.Items() >= sum
	}
	return ans, nil
}

// QueryCatalog queries a lower's catalog and collects Response MESSAGEs until SumNum items arrived.
// When ctx ends first it returns the items so far, the SumNum announced (0 if none came) and an error.
func (u *Upper) QueryCatalog(ctx context.Context, lowerID string) ([]CatalogItem, int, error) {
	sn, p, err := u.sendQuery(ctx, lowerID, "Catalog", lowerID)
	if err != nil {
		return nil, 0, err
	}
	defer u.dropPending(sn)
	var items []CatalogItem
	sum, seen := -1, 0
	for sum < 0 || len(items) < sum {
		bodies, err := u.nextBodies(ctx, p, seen)
		if err != nil {
			return items, max(sum, 0), fmt.Errorf("catalog of lower %s (SN %d): %d of %d items received: %w",
				lowerID, sn, len(items), max(sum, 0), err)
		}
		seen += len(bodies)
		for _, body := range bodies {
			var r catalogResponse
			if err := decodeBody(body, &r); err != nil {
				return items, max(sum, 0), fmt.Errorf("catalog of lower %s: %w", lowerID, err)
			}
			if r.DeviceList.Num != len(r.DeviceList.Items) {
				return items, r.SumNum, fmt.Errorf("catalog of lower %s: DeviceList Num=%d but %d items", lowerID, r.DeviceList.Num, len(r.DeviceList.Items))
			}
			sum = r.SumNum
			for _, it := range r.DeviceList.Items {
				items = append(items, newCatalogItem(it))
			}
		}
	}
	return items, sum, nil
}

// Query sends a MANSCDP Query of cmdType about deviceID (the lower itself when empty) and returns the
// first Response body carrying its SN, decoded to UTF-8.
func (u *Upper) Query(ctx context.Context, lowerID, cmdType, deviceID string) ([]byte, error) {
	if deviceID == "" {
		deviceID = lowerID
	}
	sn, p, err := u.sendQuery(ctx, lowerID, cmdType, deviceID)
	if err != nil {
		return nil, err
	}
	defer u.dropPending(sn)
	bodies, err := u.nextBodies(ctx, p, 0)
	if err != nil {
		return nil, fmt.Errorf("%s query to lower %s (SN %d): no Response: %w", cmdType, lowerID, sn, err)
	}
	return bodies[0], nil
}

// Alarms returns the alarm notifications (Notify MESSAGEs, CmdType Alarm) lowers sent, in arrival order.
func (u *Upper) Alarms() []Received { return u.alarms.all() }

// WaitAlarm returns the oldest alarm from deviceID (any when empty) that no earlier WaitAlarm
// returned, waiting until one arrives or ctx ends. The alarm's Response may still be on its way.
func (u *Upper) WaitAlarm(ctx context.Context, deviceID string) (Received, error) {
	return u.alarms.wait(ctx, "alarm from "+deviceID, func(r Received) bool { return deviceID == "" || r.DeviceID == deviceID })
}

// onAlarm answers an alarm notification as GB/T 28181 §9.4 has it: 200 OK, then a Response
// MESSAGE with the alarm's SN, DeviceID and Result OK.
func (u *Upper) onAlarm(req *sip.Request, tx sip.ServerTransaction, rec Received) {
	from := req.From()
	if from == nil {
		u.reply(req, tx, sip.StatusBadRequest, "Missing From")
		return
	}
	u.alarms.add(rec)
	u.reply(req, tx, sip.StatusOK, "OK")
	lowerID := from.Address.User
	u.log.Info("alarm received", "lower", lowerID, "device", rec.DeviceID, "sn", rec.SN)
	body, err := encodeBody(resultResponse{CmdType: "Alarm", SN: rec.SN, DeviceID: rec.DeviceID, Result: "OK"}, CharsetGB2312)
	if err != nil {
		u.log.Warn("alarm answer not encodable", "error", err)
		return
	}
	r, err := u.route(lowerID)
	if err != nil { // not registered here: answer where the alarm came from
		r = lowerRoute{client: u.udpClient, dest: req.Source(), transport: req.Transport(),
			uri: sip.Uri{Scheme: "sip", User: lowerID, Host: from.Address.Host}}
		if connOriented(r.transport) {
			r.client = u.tcpClient
		}
	}
	u.goSend(func(ctx context.Context) error {
		res, err := r.client.Do(ctx, newMessage(u.selfURI(), r.uri, r.dest, r.transport, body))
		if err == nil && res.StatusCode/100 != 2 {
			err = fmt.Errorf("answered %d %s", res.StatusCode, res.Reason)
		}
		if err != nil {
			return fmt.Errorf("alarm Response (SN %d) to lower %s at %s: %w", rec.SN, lowerID, r.dest, err)
		}
		return nil
	})
}

// goSend runs send in the background until Close; handlers must return before sipgo finishes a
// transaction, and answers must follow the 200 OK.
func (u *Upper) goSend(send func(ctx context.Context) error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return
	}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		if err := send(u.ctx); err != nil && !errors.Is(err, context.Canceled) {
			u.log.Warn("send failed", "error", err)
		}
	}()
}
