package cascade

import (
	"cmp"
	"context"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
	"github.com/gbproxy/gbproxy/endpoint"
)

// notifyQueue bounds NOTIFYs waiting for one slow upper; past it we drop
// and log rather than hold memory for a platform that is not reading.
const notifyQueue = 8192

// upperSub is an upper platform's subscription to us (we are the notifier).
type upperSub struct {
	upper     *upperClient
	kind      string
	targetID  string // as the upper sees it; our own ID means everything
	localID   string // resolved local ID; "" = everything shared
	ownerID   string // the device owning localID, when it is a channel
	callID    string
	event     string
	dialog    dialogIDs
	peer      endpoint.Peer
	expiresAt time.Time
	cseq      atomic.Uint32
	queue     chan notifyBody
	done      chan struct{}
}

// targetKey is what one upper subscription is about: a platform keeps at
// most one per key, a new dialog replacing the old.
type targetKey struct{ platform, kind, target string }

// upperSubs are the upper platforms' subscriptions to us, each with its
// notifier.
type upperSubs struct {
	up       *upperSide
	mu       sync.Mutex
	uppers   map[string]*upperSub // call ID + remote tag
	byTarget map[targetKey]string // -> key in uppers
	wg       sync.WaitGroup
}

func newUpperSubs(up *upperSide) *upperSubs {
	return &upperSubs{up: up, uppers: map[string]*upperSub{}, byTarget: map[targetKey]string{}}
}

// run expires upper subscriptions until ctx ends, then ends them all.
func (s *upperSubs) run(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			s.mu.Lock()
			for key := range s.uppers {
				s.dropLocked(key)
			}
			s.mu.Unlock()
			s.wg.Wait()
			return
		case <-tick.C:
			s.expireUppers()
			s.publishWants() // expired ones go; written only when changed
		}
	}
}

func (s *upperSubs) expireUppers() {
	now := s.up.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, sub := range s.uppers {
		if now.After(sub.expiresAt) {
			sub.upper.log.Info().Str("kind", sub.kind).Str("call_id", sub.callID).Msg("upper platform subscription expired without refresh")
			s.dropLocked(key)
		}
	}
}

// dropLocked ends the upper subscription under key: its notifier stops and
// its state goes.
func (s *upperSubs) dropLocked(key string) {
	sub := s.uppers[key]
	if sub == nil {
		return
	}
	close(sub.done)
	delete(s.uppers, key)
	tk := sub.targetKey()
	if s.byTarget[tk] == key {
		delete(s.byTarget, tk)
	}
}

// dropPlatform ends every subscription of an upper client that went.
func (s *upperSubs) dropPlatform(u *upperClient) {
	s.mu.Lock()
	for key, sub := range s.uppers {
		if sub.upper == u {
			s.dropLocked(key)
		}
	}
	s.mu.Unlock()
	s.changed() // device subscriptions nobody needs now end
}

// changed: what the uppers subscribe to changed; the device subscriptions
// and, in a cluster, the published wants follow.
func (s *upperSubs) changed() {
	s.publishWants()
	s.up.devices.pokeSubscriptions()
}

func (sub *upperSub) targetKey() targetKey {
	return targetKey{sub.upper.id, sub.kind, sub.targetID}
}

// handleUpperSubscribe serves SUBSCRIBE from an upper platform (GB/T 28181
// §9.11): new, refresh, or Expires: 0.
func (up *upperSide) handleUpperSubscribe(req *sip.Request, tx sip.ServerTransaction) {
	u := up.upperOf(req)
	if u == nil {
		up.ep.Respond(tx, req, sip.StatusForbidden, "Forbidden (unknown platform)", nil)
		return
	}
	hdr, err := manscdp.Peek(req.Body())
	if err != nil {
		u.log.Warn().Err(err).Msg("SUBSCRIBE with an unreadable MANSCDP body answered 400")
		up.ep.Respond(tx, req, sip.StatusBadRequest, "Bad Request (MANSCDP body)", nil)
		return
	}
	if !subscriptionKinds[hdr.CmdType] {
		// The CmdType is GB/T 28181's event package: one we don't serve.
		u.log.Warn().Str("cmd_type", hdr.CmdType).Msg("SUBSCRIBE without a Catalog, Alarm, MobilePosition or PTZPosition query answered 489")
		up.ep.Respond(tx, req, 489, "Bad Event", nil)
		return
	}
	expires := min(requestedExpires(req), up.cfg.Upper.SubscribeExpiresMax)
	s := up.subs
	key := callIDOf(req) + "/" + req.From().Params.GetOr("tag", "")
	log := u.log.With().Str("kind", hdr.CmdType).Str("target_id", hdr.DeviceID).Str("call_id", callIDOf(req)).Logger()

	s.mu.Lock()
	sub := s.uppers[key]
	toTag, inDialog := req.To().Params.Get("tag")
	switch {
	case sub == nil && inDialog && toTag != "":
		s.mu.Unlock()
		up.ep.Respond(tx, req, sip.StatusCallTransactionDoesNotExists, "Subscription Does Not Exist", nil)
		return
	case sub != nil && expires == 0:
		s.dropLocked(key)
		s.mu.Unlock()
		log.Info().Msg("upper platform unsubscribed")
		up.answerSubscribe(tx, req, sub, hdr, 0)
		s.changed()
		return
	case sub != nil:
		sub.expiresAt = up.now().Add(secondsDuration(expires))
		s.mu.Unlock()
		up.answerSubscribe(tx, req, sub, hdr, expires)
		return
	}
	s.mu.Unlock()

	sub = &upperSub{upper: u, kind: hdr.CmdType, targetID: hdr.DeviceID, callID: callIDOf(req),
		event: endpoint.HeaderValue(req, "Event"), queue: make(chan notifyBody, notifyQueue), done: make(chan struct{})}
	if hdr.DeviceID != up.cfg.ID {
		local, dev, ok := up.registry.resolve(u.view(), hdr.DeviceID)
		owner := dev.ID
		if !ok {
			local, owner, ok = up.resolveRemote(u.view(), hdr.DeviceID)
		}
		if !ok {
			log.Info().Msg("SUBSCRIBE for an ID not shared with this platform answered 404")
			up.ep.Respond(tx, req, sip.StatusNotFound, "Not Found (not shared with this platform)", nil)
			return
		}
		sub.localID, sub.ownerID = local, owner
	}
	sub.dialog = dialogIDs{
		local:     req.To().Address,
		remote:    req.From().Address,
		localTag:  sip.GenerateTagN(16),
		remoteTag: req.From().Params.GetOr("tag", ""),
		target:    req.From().Address,
	}
	if ct := req.Contact(); ct != nil {
		sub.dialog.target = ct.Address
	}
	sub.peer = endpoint.Peer{Transport: strings.ToUpper(req.Transport()), Addr: req.Source()}
	if expires == 0 { // a fetch: answer, nothing to keep
		up.answerSubscribe(tx, req, sub, hdr, 0)
		return
	}
	sub.expiresAt = up.now().Add(secondsDuration(expires))
	s.mu.Lock()
	replaced, had := s.byTarget[sub.targetKey()]
	if had {
		// A platform that lost track of its subscription (restart) starts a
		// new dialog: the old one ends quietly, nobody reads it any more.
		s.dropLocked(replaced)
	}
	if len(s.uppers) >= up.cfg.Upper.MaxSubscriptions {
		s.mu.Unlock()
		log.Warn().Int("max_subscriptions", up.cfg.Upper.MaxSubscriptions).Msg("SUBSCRIBE refused: upper.max_subscriptions reached across all upper platforms")
		up.ep.Respond(tx, req, sip.StatusServiceUnavailable, "Service Unavailable (subscription limit upper.max_subscriptions reached)", nil)
		return
	}
	s.uppers[key] = sub
	s.byTarget[sub.targetKey()] = key
	s.mu.Unlock()
	up.answerSubscribe(tx, req, sub, hdr, expires)
	log.Info().Int("expires", expires).Bool("replaced", had).Msg("upper platform subscribed")
	s.wg.Add(1)
	go s.notifier(sub)
	s.changed()
}

// answerSubscribe sends 200 with our dialog tag, the granted Expires and, as
// GB/T 28181 devices do, a Response body with Result OK.
func (up *upperSide) answerSubscribe(tx sip.ServerTransaction, req *sip.Request, sub *upperSub, hdr manscdp.Header, expires int) {
	to := &sip.ToHeader{Address: req.To().Address, Params: req.To().Params.Clone()}
	if _, ok := to.Params.Get("tag"); !ok {
		to.Params.Add("tag", sub.dialog.localTag)
	}
	body, err := manscdp.Encode(manscdp.RootResponse, &manscdp.ResultResponse{
		Base: manscdp.Base{CmdType: hdr.CmdType, SN: hdr.SN, DeviceID: hdr.DeviceID}, Result: "OK"}, sub.upper.charset())
	if err != nil {
		body = nil
	}
	headers := []sip.Header{to,
		sip.NewHeader("Expires", strconv.Itoa(expires)),
		&sip.ContactHeader{Address: up.ep.Contact(up.cfg.ID, endpoint.PeerOf(req))},
	}
	if sub.event != "" {
		headers = append(headers, sip.NewHeader("Event", sub.event))
	}
	if body != nil {
		headers = append(headers, sip.NewHeader("Content-Type", contentTypeMANSCDP))
	}
	up.ep.Respond(tx, req, sip.StatusOK, "OK", body, headers...)
}

// notifier sends one subscription's NOTIFYs in order.
func (s *upperSubs) notifier(sub *upperSub) {
	defer s.wg.Done()
	for {
		select {
		case <-sub.done:
			return
		case n := <-sub.queue:
			s.sendNotify(sub, n)
		}
	}
}

// notifyBody is one queued NOTIFY: a device's report forwarded carries the
// Monitor-User-Identity it came with (extended); our own catalog changes
// carry none (ours is added on the way out).
type notifyBody struct {
	body     []byte
	identity sip.Header
}

func (s *upperSubs) sendNotify(sub *upperSub, n notifyBody) {
	up := s.up
	u := sub.upper
	ctx, cancel := context.WithTimeout(up.ctx, requestTimeout)
	defer cancel()
	peer := sub.peer
	if u.cfg().Transport != "udp" { // our own connection, as the SUBSCRIBE may have come on another
		p, err := u.peer(ctx, u.target())
		if err != nil {
			u.log.Warn().Err(err).Str("kind", sub.kind).Msg("NOTIFY not sent: no connection to the upper platform")
			return
		}
		peer = p
	}
	s.mu.Lock()
	remaining := max(int(time.Until(sub.expiresAt).Seconds()), 0)
	s.mu.Unlock()
	req := newInDialog(up.ep, sip.NOTIFY, sub.dialog, sub.callID, sub.cseq.Add(1), peer)
	req.AppendHeader(sip.NewHeader("Event", cmp.Or(sub.event, eventHeader(sub.kind))))
	req.AppendHeader(sip.NewHeader("Subscription-State", "active;expires="+strconv.Itoa(remaining)))
	req.AppendHeader(sip.NewHeader("Content-Type", contentTypeMANSCDP))
	req.SetBody(n.body)
	if n.identity != nil {
		req.AppendHeader(n.identity)
	}
	res, err := up.ep.Do(ctx, req)
	if err != nil || !res.IsSuccess() {
		up.metrics.Inc("gbproxy_notify_total", "platform", u.id, "kind", sub.kind, "result", "failed")
		u.log.Warn().Err(err).Int("status", statusOf(res)).Str("kind", sub.kind).Str("call_id", sub.callID).Msg("upper platform did not take our NOTIFY")
		return
	}
	up.metrics.Inc("gbproxy_notify_total", "platform", u.id, "kind", sub.kind, "result", "ok")
}

// channelEvents fans this node's catalog changes out to every Catalog
// subscription that sees them, mapped for its platform.
func (s *upperSubs) channelEvents(evs []ChannelEvent) {
	s.catalogEvents(s.up.localEvents(evs), s.up.registry.eventsFor)
}

// catalogEvents fans catalog changes out to the Catalog subscriptions,
// itemsFor filtering and mapping them for each platform.
func (s *upperSubs) catalogEvents(evs []ChannelEvent, itemsFor func(*shareView, []ChannelEvent) []manscdp.CatalogItem) {
	if len(evs) == 0 {
		return
	}
	for _, sub := range s.active("Catalog") {
		items := itemsFor(sub.upper.view(), evs)
		if sub.localID != "" {
			items = s.onlyTarget(sub, evs, items)
		}
		if len(items) > 0 {
			s.enqueueCatalog(sub, items)
		}
	}
}

// shareChanged tells one platform's Catalog subscribers about items that its
// new sharing added or removed.
func (s *upperSubs) shareChanged(u *upperClient, items []manscdp.CatalogItem) {
	if len(items) > 0 {
		for _, sub := range s.active("Catalog") {
			if sub.upper == u && sub.localID == "" {
				s.enqueueCatalog(sub, items)
			}
		}
	}
	s.up.devices.pokeSubscriptions()
}

func (s *upperSubs) enqueueCatalog(sub *upperSub, items []manscdp.CatalogItem) {
	u := sub.upper
	bodies, err := s.up.catalogBodies(manscdp.RootNotify, nextSN(), items, u.catalogPerMessage(sub.peer.Transport), s.up.datagramBudget(u, u.target()), u.charset())
	if err != nil {
		u.log.Error().Err(err).Msg("catalog NOTIFY could not be encoded")
		return
	}
	for _, b := range bodies {
		s.enqueue(sub, notifyBody{body: b.body})
	}
}

// onlyTarget keeps the items of a subscription to one device or channel.
func (s *upperSubs) onlyTarget(sub *upperSub, evs []ChannelEvent, items []manscdp.CatalogItem) []manscdp.CatalogItem {
	v := sub.upper.view()
	keep := map[string]bool{}
	for _, ev := range evs {
		if ev.DeviceID == sub.localID || ev.Item.DeviceID == sub.localID {
			keep[v.up(ev.Item.DeviceID)] = true
		}
	}
	out := items[:0]
	for _, it := range items {
		if keep[it.DeviceID] {
			out = append(out, it)
		}
	}
	return out
}

// forward sends a device's Alarm, MobilePosition or PTZPosition report to the
// subscriptions of that kind that see id.
func (s *upperSubs) forward(kind, deviceID, id string, body []byte, identity sip.Header) {
	for _, sub := range s.active(kind) {
		if sub.localID != "" && sub.localID != id && sub.localID != deviceID {
			continue
		}
		v := sub.upper.view()
		if !s.up.sharesReport(v, deviceID, id) {
			continue
		}
		out, err := manscdp.Rewrite(body, nextSN(), func(x string) (string, bool) { return v.up(x), true }, sub.upper.charset())
		if err != nil {
			sub.upper.log.Warn().Err(err).Str("kind", kind).Str("device_id", deviceID).Msg("report could not be rewritten for the upper platform; dropped")
			continue
		}
		s.enqueue(sub, notifyBody{body: out, identity: identity})
	}
}

func (s *upperSubs) enqueue(sub *upperSub, n notifyBody) {
	select {
	case sub.queue <- n:
	case <-sub.done:
	default:
		s.up.metrics.Inc("gbproxy_notify_total", "platform", sub.upper.id, "kind", sub.kind, "result", "dropped")
		sub.upper.log.Warn().Str("kind", sub.kind).Msg("NOTIFY dropped: the upper platform is not keeping up")
	}
}

func (s *upperSubs) active(kind string) []*upperSub {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*upperSub
	for _, sub := range s.uppers {
		if sub.kind == kind {
			out = append(out, sub)
		}
	}
	return out
}

// wanted counts, per (device, kind), the upper subscriptions a device
// subscription would serve: ours and, in a cluster, the other nodes' (for
// devices held here).
func (s *upperSubs) wanted() map[downKey]int {
	s.mu.Lock()
	demands := make([]demand, 0, len(s.uppers))
	for _, sub := range s.uppers {
		demands = append(demands, demand{v: sub.upper.view(), kind: sub.kind, device: sub.ownerID})
	}
	s.mu.Unlock()
	demands = append(demands, s.up.remoteDemands()...)
	want := map[downKey]int{}
	if len(demands) == 0 {
		return want
	}
	r := s.up.registry
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, d := range demands {
		if d.device != "" {
			if dev := r.devices[d.device]; dev != nil && dev.Online {
				want[downKey{d.device, d.kind}]++
			}
			continue
		}
		for id, dev := range r.devices {
			if !dev.Online {
				continue
			}
			if d.v.sharesDevice(id) || r.sharesAnyChannelLocked(d.v, id) {
				want[downKey{id, d.kind}]++
			}
		}
	}
	return want
}

func (r *Registry) sharesAnyChannelLocked(v *shareView, deviceID string) bool {
	for _, c := range r.channels[deviceID] {
		if v.sharesChannelLocked(r, c) {
			return true
		}
	}
	return false
}

// state is the API view; the subscriptions' lock is held.
func (sub *upperSub) state() SubscriptionState {
	return SubscriptionState{Kind: sub.kind, Platform: sub.upper.id, TargetID: sub.targetID, CallID: sub.callID, ExpiresAt: sub.expiresAt}
}

// states lists every upper's subscriptions to us.
func (s *upperSubs) states() []SubscriptionState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []SubscriptionState{}
	for _, sub := range s.uppers {
		out = append(out, sub.state())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Platform+out[i].Kind < out[j].Platform+out[j].Kind })
	return out
}

// statesOf lists one platform's subscriptions to us.
func (s *upperSubs) statesOf(platformID string) []SubscriptionState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []SubscriptionState{}
	for _, sub := range s.uppers {
		if sub.upper.id == platformID {
			out = append(out, sub.state())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Kind+out[i].CallID < out[j].Kind+out[j].CallID })
	return out
}
