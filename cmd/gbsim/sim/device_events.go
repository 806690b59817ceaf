package sim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// subscribable are the CmdTypes a device accepts subscriptions for (GB/T 28181 §9.11).
var subscribable = map[string]bool{"Catalog": true, "Alarm": true, "MobilePosition": true, "PTZPosition": true}

// AlarmConfig describes an alarm for Device.SendAlarm (GB/T 28181 A.2.5.2).
type AlarmConfig struct {
	ChannelID string // alarm source; default the device itself
	Priority  int    // 1 (most urgent) to 4; default 1
	// Method: 1 telephone, 2 device, 3 SMS, 4 GPS, 5 video analysis, 6 device fault, 7 other; default 2.
	Method      int
	Type        int // alarm type within the method, sent in Info/AlarmType; 0 sends no Info
	Description string
}

// MobilePosition is one position report for Device.SendMobilePosition (GB/T 28181 A.2.5.6).
type MobilePosition struct {
	ChannelID                                       string // default the device itself
	Longitude, Latitude, Speed, Direction, Altitude float64
}

// SubscriptionInfo is a subscription a device holds.
type SubscriptionInfo struct {
	Event    string // Event header as received, e.g. "Catalog;id=7" or "presence"
	CmdType  string // CmdType of the SUBSCRIBE's Query: Catalog, Alarm, MobilePosition or PTZPosition
	DeviceID string // DeviceID of the Query
	Expires  int    // granted expiry, seconds
	CallID   string
	From     string    // the subscriber's From URI
	Until    time.Time // when it lapses unless refreshed
}

// deviceSub is a subscription dialog, the device being the notifier.
type deviceSub struct {
	info SubscriptionInfo
	dest string // where NOTIFYs go: the subscriber's Contact over UDP, the registration connection over TCP

	sendMu sync.Mutex // serialises NOTIFYs so their CSeq grows in send order
	dlg    dialog     // guarded by Device.mu
}

// SendAlarm reports an alarm: a Notify MESSAGE to the server, whose 2xx it waits for, and a NOTIFY
// to every alarm subscriber. It returns the SN to pass to WaitAlarmAck.
func (d *Device) SendAlarm(ctx context.Context, a AlarmConfig) (int, error) {
	if a.ChannelID == "" {
		a.ChannelID = d.cfg.ID
	}
	if a.Priority == 0 {
		a.Priority = 1
	}
	if a.Method == 0 {
		a.Method = 2
	}
	n := alarmNotify{CmdType: "Alarm", SN: d.nextSN(), DeviceID: a.ChannelID, AlarmPriority: a.Priority,
		AlarmMethod: a.Method, AlarmTime: time.Now().Format(gbTimeLayout), AlarmDescription: a.Description}
	if a.Type != 0 {
		n.Info = &alarmInfo{AlarmType: a.Type}
	}
	d.setDuty("ALARM")
	if err := d.sendMANSCDP(ctx, n); err != nil {
		return n.SN, fmt.Errorf("device %s: alarm: %w", d.cfg.ID, err)
	}
	return n.SN, d.notifySubscribers(ctx, "Alarm", n)
}

// WaitAlarmAck waits for the Response (CmdType Alarm) the server sends back for the alarm with this SN.
func (d *Device) WaitAlarmAck(ctx context.Context, sn int) (Received, error) {
	return d.journal.wait(ctx, fmt.Sprintf("alarm Response with SN %d", sn), func(r Received) bool {
		return r.Method == "MESSAGE" && r.Root == "Response" && r.CmdType == "Alarm" && r.SN == sn
	})
}

// SetChannelStatus changes a channel's status and reports it as a catalog event: status is ON, OFF,
// VLOST (video lost) or DEFECT; the item's Status becomes ON or OFF.
func (d *Device) SetChannelStatus(ctx context.Context, channelID, status string) error {
	if !slices.Contains([]string{"ON", "OFF", "VLOST", "DEFECT"}, status) {
		return fmt.Errorf("channel status %q: want ON, OFF, VLOST or DEFECT", status)
	}
	d.mu.Lock()
	i := slices.IndexFunc(d.channels, func(ch Channel) bool { return ch.ID == channelID })
	if i < 0 {
		d.mu.Unlock()
		return fmt.Errorf("device %s has no channel %s", d.cfg.ID, channelID)
	}
	d.channels[i].Status = "OFF"
	if status == "ON" {
		d.channels[i].Status = "ON"
	}
	item := d.catalogItem(d.channels[i])
	d.mu.Unlock()
	item.Event = status
	return d.catalogEvent(ctx, item)
}

// AddChannel adds a catalog entry and reports it (event ADD).
func (d *Device) AddChannel(ctx context.Context, ch Channel) error {
	d.mu.Lock()
	if slices.ContainsFunc(d.channels, func(c Channel) bool { return c.ID == ch.ID }) {
		d.mu.Unlock()
		return fmt.Errorf("device %s already has channel %s", d.cfg.ID, ch.ID)
	}
	d.channels = append(d.channels, ch)
	item := d.catalogItem(ch)
	d.mu.Unlock()
	item.Event = "ADD"
	return d.catalogEvent(ctx, item)
}

// RemoveChannel removes a catalog entry and reports it (event DEL).
func (d *Device) RemoveChannel(ctx context.Context, id string) error {
	d.mu.Lock()
	n := len(d.channels)
	d.channels = slices.DeleteFunc(d.channels, func(c Channel) bool { return c.ID == id })
	removed := len(d.channels) < n
	d.mu.Unlock()
	if !removed {
		return fmt.Errorf("device %s has no channel %s", d.cfg.ID, id)
	}
	return d.catalogEvent(ctx, catalogItem{DeviceID: id, Event: "DEL"})
}

// catalogEvent sends a one-item catalog notification: a NOTIFY to every catalog subscriber, or,
// with none, a MESSAGE to the server as some devices do.
func (d *Device) catalogEvent(ctx context.Context, item catalogItem) error {
	n := catalogNotify{CmdType: "Catalog", SN: d.nextSN(), DeviceID: d.cfg.ID, SumNum: 1,
		DeviceList: catalogList{Num: 1, Items: []catalogItem{item}}}
	return d.notifyOrMessage(ctx, n.CmdType, n)
}

// SendMobilePosition reports a position to MobilePosition subscribers, or by MESSAGE when there is none.
func (d *Device) SendMobilePosition(ctx context.Context, p MobilePosition) error {
	if p.ChannelID == "" {
		p.ChannelID = d.cfg.ID
	}
	n := mobilePositionNotify{CmdType: "MobilePosition", SN: d.nextSN(), DeviceID: p.ChannelID,
		Time: time.Now().Format(gbTimeLayout), Longitude: p.Longitude, Latitude: p.Latitude,
		Speed: p.Speed, Direction: p.Direction, Altitude: p.Altitude}
	return d.notifyOrMessage(ctx, n.CmdType, n)
}

func (d *Device) notifyOrMessage(ctx context.Context, cmdType string, v any) error {
	if len(d.activeSubs(cmdType)) == 0 {
		if err := d.sendMANSCDP(ctx, v); err != nil {
			return fmt.Errorf("device %s: %s notification: %w", d.cfg.ID, cmdType, err)
		}
		return nil
	}
	return d.notifySubscribers(ctx, cmdType, v)
}

// Subscriptions returns the subscriptions in force, ordered by Call-ID.
func (d *Device) Subscriptions() []SubscriptionInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]SubscriptionInfo, 0, len(d.subs))
	for _, s := range d.subs {
		if time.Now().Before(s.info.Until) {
			out = append(out, s.info)
		}
	}
	slices.SortFunc(out, func(a, b SubscriptionInfo) int { return strings.Compare(a.CallID, b.CallID) })
	return out
}

// WaitSubscriptions waits until the subscriptions in force satisfy cond and returns them. It
// re-checks on every SUBSCRIBE, so a lapse without one goes unnoticed until the next.
func (d *Device) WaitSubscriptions(ctx context.Context, cond func([]SubscriptionInfo) bool) ([]SubscriptionInfo, error) {
	for {
		changed := d.subChange.changed()
		if subs := d.Subscriptions(); cond(subs) {
			return subs, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return d.Subscriptions(), fmt.Errorf("device %s: awaited subscriptions not reached: %w", d.cfg.ID, ctx.Err())
		}
	}
}

func (d *Device) activeSubs(cmdType string) []*deviceSub {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*deviceSub
	for _, s := range d.subs {
		if s.info.CmdType == cmdType && time.Now().Before(s.info.Until) {
			out = append(out, s)
		}
	}
	return out
}

func (d *Device) notifySubscribers(ctx context.Context, cmdType string, v any) error {
	var errs []error
	for _, s := range d.activeSubs(cmdType) {
		if err := d.sendNotify(ctx, s, v); err != nil {
			errs = append(errs, fmt.Errorf("device %s: %w", d.cfg.ID, err))
		}
	}
	return errors.Join(errs...)
}

// sendNotify sends v in the subscription's dialog. A 481 means the subscriber forgot the dialog,
// which ends the subscription (RFC 6665 §4.1.3).
func (d *Device) sendNotify(ctx context.Context, s *deviceSub, v any) error {
	body, err := encodeBody(v, d.cfg.Charset)
	if err != nil {
		return err
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	d.mu.Lock()
	req := s.dlg.newRequest(sip.NOTIFY, s.dest, d.transport)
	info, dest, client := s.info, s.dest, d.client
	d.mu.Unlock()
	remaining := max(int(time.Until(info.Until)/time.Second), 0)
	req.AppendHeader(sip.NewHeader("Event", info.Event))
	req.AppendHeader(sip.NewHeader("Subscription-State", "active;expires="+strconv.Itoa(remaining)))
	req.AppendHeader(d.contact())
	setMANSCDPBody(req, body)
	res, err := client.Do(ctx, req)
	if err != nil {
		return fmt.Errorf("%s NOTIFY to %s over %s (Call-ID %s): %w", info.CmdType, dest, d.transport, info.CallID, err)
	}
	if res.StatusCode == sip.StatusCallTransactionDoesNotExists {
		d.dropSub(info.CallID)
	}
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("%s NOTIFY to %s (Call-ID %s) answered %d %s", info.CmdType, dest, info.CallID, res.StatusCode, res.Reason)
	}
	return nil
}

func (d *Device) dropSub(callID string) {
	d.mu.Lock()
	delete(d.subs, callID)
	d.mu.Unlock()
	d.subChange.notify()
}

// contact is the device's Contact: the address it registered from (its UDP socket before that).
func (d *Device) contact() *sip.ContactHeader {
	d.mu.Lock()
	local := d.regLocal
	if local == "" && d.udpConn != nil {
		local = d.udpConn.LocalAddr().String()
	}
	d.mu.Unlock()
	return &sip.ContactHeader{Address: contactURI(d.cfg.ID, local)}
}

// notifyDest is where NOTIFYs for a subscription from req go: over TCP the registration connection
// (the device listens on nothing), over UDP the subscriber's Contact, else the request's source.
func (d *Device) notifyDest(req *sip.Request) string {
	if connOriented(d.transport) {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.serverAddr
	}
	if c := req.Contact(); c != nil && net.ParseIP(c.Address.Host) != nil {
		port := c.Address.Port
		if port == 0 {
			port = 5060
		}
		return net.JoinHostPort(c.Address.Host, strconv.Itoa(port))
	}
	return req.Source()
}

// onSubscribe handles SUBSCRIBE (RFC 6665, GB/T 28181 §9.11): a new subscription, a refresh in its
// dialog, or an unsubscription (Expires: 0). A new SUBSCRIBE from the same subscriber for the same
// CmdType replaces the subscription it already has; one that names our tag but no known dialog gets 481.
func (d *Device) onSubscribe(req *sip.Request, tx sip.ServerTransaction, rec Received) {
	reply := func(code int, reason string) {
		respond(d.log, tx, sip.NewResponseFromRequest(req, code, reason, nil))
	}
	event := req.GetHeader("Event")
	var cmd command
	switch {
	case req.CallID() == nil || req.From() == nil || req.To() == nil:
		reply(sip.StatusBadRequest, "Missing Dialog Headers")
		return
	case event == nil:
		reply(sip.StatusBadRequest, "Missing Event Header")
		return
	case rec.Root != "Query" || decodeBody(rec.Body, &cmd) != nil:
		reply(sip.StatusBadRequest, "MANSCDP Query Body Required")
		return
	}
	if code := d.rejectStatus(cmd.CmdType); code != 0 {
		reply(code, "Rejected By Configuration")
		return
	}
	if !subscribable[cmd.CmdType] {
		reply(489, "Bad Event") // RFC 6665: the event package is not supported
		return
	}
	asked := headerInt(req, "Expires", 3600) // RFC 6665 leaves the default to the event package
	if asked < 0 {
		reply(sip.StatusBadRequest, "Bad Expires")
		return
	}
	granted := min(asked, d.cfg.SubscriptionMaxExpires)
	callID := req.CallID().Value()
	subscriber := req.From().Address
	dest := d.notifyDest(req)

	d.mu.Lock()
	s := d.subs[callID]
	if tag := toTag(req); tag != "" && (s == nil || tag != s.dlg.localTag) {
		d.mu.Unlock()
		reply(sip.StatusCallTransactionDoesNotExists, "Subscription Does Not Exist")
		return
	}
	if s == nil {
		for id, old := range d.subs {
			if old.info.CmdType == cmd.CmdType && old.dlg.remote.User == subscriber.User {
				delete(d.subs, id)
			}
		}
		s = &deviceSub{dlg: dialog{callID: callID, local: req.To().Address, remote: subscriber,
			localTag: randomHex(5), remoteTag: fromTag(req), target: subscriber}}
	}
	if c := req.Contact(); c != nil {
		s.dlg.target = c.Address
	}
	s.dest = dest
	s.info = SubscriptionInfo{Event: event.Value(), CmdType: cmd.CmdType, DeviceID: cmd.DeviceID, Expires: granted,
		CallID: callID, From: subscriber.String(), Until: time.Now().Add(time.Duration(granted) * time.Second)}
	if granted > 0 {
		d.subs[callID] = s
	} else {
		delete(d.subs, callID)
	}
	localTag := s.dlg.localTag
	d.mu.Unlock()
	d.subChange.notify()
	d.log.Info("subscription", "cmd_type", cmd.CmdType, "expires", granted, "call_id", callID, "subscriber", subscriber.User)

	body, err := encodeBody(resultResponse{CmdType: cmd.CmdType, SN: cmd.SN, DeviceID: d.targetID(cmd), Result: "OK"}, d.cfg.Charset)
	if err != nil {
		reply(sip.StatusInternalServerError, "Cannot Encode Answer")
		return
	}
	res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil)
	res.To().Params.Add("tag", localTag)
	exp := sip.ExpiresHeader(granted)
	res.AppendHeader(&exp)
	res.AppendHeader(sip.NewHeader("Event", event.Value()))
	res.AppendHeader(d.contact())
	setMANSCDPBody(res, body)
	respond(d.log, tx, res)
}
