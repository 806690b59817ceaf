package sim

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/emiago/sipgo/sip"
)

// subscribeDefaults are the query conditions sent when Subscribe is given none, as platforms send them.
var subscribeDefaults = map[string][]Field{
	"Alarm":          {{Name: "StartAlarmPriority", Value: "0"}, {Name: "EndAlarmPriority", Value: "0"}, {Name: "AlarmMethod", Value: "0"}},
	"MobilePosition": {{Name: "Interval", Value: "5"}},
}

// Subscription is a subscription the upper holds at a lower (RFC 6665, GB/T 28181 §9.11). The
// NOTIFYs that arrive in its dialog are answered 200 and recorded.
type Subscription struct {
	LowerID, CmdType, DeviceID string
	Event                      string // Event header sent: "Catalog;id=N" or "presence;id=N"

	u        *Upper
	extra    []Field
	notifies journal[Received]
	sendMu   sync.Mutex // serialises SUBSCRIBEs so their CSeq grows in send order

	mu       sync.Mutex // guards the fields below
	dlg      dialog
	expires  int
	response *sip.Response
	ended    bool
}

// Subscribe subscribes to a lower's events of cmdType (Catalog, Alarm, MobilePosition, PTZPosition)
// about deviceID (the lower itself when empty), for expires seconds. The SUBSCRIBE carries a Query
// with the extra fields (for Alarm and MobilePosition, when none are given, the usual conditions) and
// Event "Catalog" for catalogs, "presence" otherwise, as deployed platforms send. A non-2xx answer is
// an error.
func (u *Upper) Subscribe(ctx context.Context, lowerID, cmdType, deviceID string, expires int, extra ...Field) (*Subscription, error) {
	r, err := u.route(lowerID)
	if err != nil {
		return nil, err
	}
	if deviceID == "" {
		deviceID = lowerID
	}
	if len(extra) == 0 {
		extra = subscribeDefaults[cmdType]
	}
	event := "presence"
	if cmdType == "Catalog" {
		event = "Catalog"
	}
	sn := u.nextSN()
	s := &Subscription{
		LowerID: lowerID, CmdType: cmdType, DeviceID: deviceID, Event: event + ";id=" + strconv.Itoa(sn),
		u: u, extra: extra,
		dlg: dialog{callID: randomHex(10), local: u.selfURI(), remote: r.uri, localTag: randomHex(5), target: r.uri},
	}
	// Known before sending: the first NOTIFY may overtake the 200 OK.
	u.mu.Lock()
	u.subs[s.dlg.callID] = s
	u.mu.Unlock()
	if err := s.subscribe(ctx, sn, expires); err != nil {
		u.mu.Lock()
		delete(u.subs, s.dlg.callID)
		u.mu.Unlock()
		return nil, err
	}
	return s, nil
}

// Refresh re-subscribes in the dialog for expires seconds.
func (s *Subscription) Refresh(ctx context.Context, expires int) error {
	return s.subscribe(ctx, s.u.nextSN(), expires)
}

// Unsubscribe sends SUBSCRIBE with Expires: 0. Afterwards only NOTIFYs saying the subscription is
// terminated are accepted; others get 481.
func (s *Subscription) Unsubscribe(ctx context.Context) error {
	return s.subscribe(ctx, s.u.nextSN(), 0)
}

// subscribe sends one SUBSCRIBE in the dialog and takes the peer's tag, Contact and granted expiry
// from a 2xx.
func (s *Subscription) subscribe(ctx context.Context, sn, expires int) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	ended := s.ended
	s.mu.Unlock()
	if ended {
		return fmt.Errorf("%s subscription to lower %s (Call-ID %s) ended already", s.CmdType, s.LowerID, s.dlg.callID)
	}
	r, err := s.u.route(s.LowerID)
	if err != nil {
		return err
	}
	doc, err := buildCommand("Query", s.CmdType, sn, s.DeviceID, s.extra)
	if err != nil {
		return err
	}
	body, err := encodeDoc(doc, CharsetGB2312)
	if err != nil {
		return err
	}
	s.mu.Lock()
	req := s.dlg.newRequest(sip.SUBSCRIBE, r.dest, r.transport)
	s.mu.Unlock()
	req.AppendHeader(&sip.ContactHeader{Address: contactURI(s.u.cfg.ID, s.u.addr)})
	req.AppendHeader(sip.NewHeader("Event", s.Event))
	exp := sip.ExpiresHeader(expires)
	req.AppendHeader(&exp)
	setMANSCDPBody(req, body)
	res, err := r.client.Do(ctx, req)
	if err != nil {
		return fmt.Errorf("SUBSCRIBE %s to lower %s at %s/%s: %w", s.CmdType, s.LowerID, r.dest, r.transport, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.response = res
	ok := res.StatusCode/100 == 2
	if ok {
		if s.dlg.remoteTag == "" {
			s.dlg.remoteTag = toTag(res)
		}
		if c := res.Contact(); c != nil {
			s.dlg.target = c.Address
		}
		s.expires = headerInt(res, "Expires", expires)
	}
	if expires == 0 && (ok || res.StatusCode == sip.StatusCallTransactionDoesNotExists) {
		s.ended = true
	}
	if !ok {
		return fmt.Errorf("SUBSCRIBE %s to lower %s answered %d %s", s.CmdType, s.LowerID, res.StatusCode, res.Reason)
	}
	return nil
}

// Expires returns the expiry the lower granted last, seconds.
func (s *Subscription) Expires() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.expires
}

// Response returns the final response to the last SUBSCRIBE.
func (s *Subscription) Response() *sip.Response {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.response
}

// CallID returns the subscription dialog's Call-ID.
func (s *Subscription) CallID() string { return s.dlg.callID }

// Notifies returns the NOTIFYs received in the dialog, in arrival order.
func (s *Subscription) Notifies() []Received { return s.notifies.all() }

// WaitNotify returns the oldest NOTIFY whose UTF-8 body satisfies match (any when nil) that no
// earlier WaitNotify returned, waiting until one arrives or ctx ends.
func (s *Subscription) WaitNotify(ctx context.Context, match func(body []byte) bool) (Received, error) {
	return s.notifies.wait(ctx, s.CmdType+" NOTIFY", func(r Received) bool { return match == nil || match(r.Body) })
}

// CatalogItems returns the items of every catalog notification received, in arrival order.
func (s *Subscription) CatalogItems() []CatalogItem {
	var items []CatalogItem
	for _, r := range s.notifies.all() {
		var n catalogNotify
		if r.CmdType != "Catalog" || decodeBody(r.Body, &n) != nil {
			continue
		}
		for _, it := range n.DeviceList.Items {
			items = append(items, newCatalogItem(it))
		}
	}
	return items
}

// accepts reports whether a NOTIFY belongs to the dialog: our tag in To, the lower's in From (taken
// from this NOTIFY when it overtook the 200 OK), and after unsubscription only a final one.
func (s *Subscription) accepts(req *sip.Request) bool {
	state := ""
	if h := req.GetHeader("Subscription-State"); h != nil {
		state = strings.ToLower(strings.TrimSpace(h.Value()))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if toTag(req) != s.dlg.localTag {
		return false
	}
	if s.dlg.remoteTag == "" {
		s.dlg.remoteTag = fromTag(req)
	} else if fromTag(req) != s.dlg.remoteTag {
		return false
	}
	return !s.ended || strings.HasPrefix(state, "terminated")
}

// onNotify answers NOTIFYs in a subscription dialog with 200 and any other with 481.
func (u *Upper) onNotify(req *sip.Request, tx sip.ServerTransaction) {
	rec, _ := newReceived(req, false)
	u.journal.add(rec)
	var s *Subscription
	if id := req.CallID(); id != nil {
		u.mu.Lock()
		s = u.subs[id.Value()]
		u.mu.Unlock()
	}
	if s == nil || !s.accepts(req) {
		u.log.Info("NOTIFY matching no subscription refused", "source", rec.Source, "cmd_type", rec.CmdType)
		u.reply(req, tx, sip.StatusCallTransactionDoesNotExists, "Subscription Does Not Exist")
		return
	}
	u.log.Debug("NOTIFY received", "lower", s.LowerID, "cmd_type", rec.CmdType, "sn", rec.SN)
	s.notifies.add(rec)
	u.reply(req, tx, sip.StatusOK, "OK")
}
