package cascade

import (
	"cmp"
	"context"
	"fmt"
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

// Subscription kinds (the CmdType of the SUBSCRIBE body).
var subscriptionKinds = map[string]bool{"Catalog": true, "Alarm": true, "MobilePosition": true, "PTZPosition": true}

const (
	// notifyQueue bounds NOTIFYs waiting for one slow upper; past it we drop
	// and log rather than hold memory for a platform that is not reading.
	notifyQueue = 8192
	// subscribeBackoff keeps a device that refuses our SUBSCRIBE from being
	// asked again at every change (no subscription storms).
	subscribeBackoff = time.Minute
	subscribeWorkers = 16
)

// SubscriptionState is one subscription as the API shows it.
type SubscriptionState struct {
	Kind      string    `json:"kind"`
	Platform  string    `json:"platform,omitempty"`  // upper side
	DeviceID  string    `json:"device_id,omitempty"` // lower side
	TargetID  string    `json:"target_id,omitempty"` // what the upper subscribed to, as it sees it
	CallID    string    `json:"call_id"`
	ExpiresAt time.Time `json:"expires_at"`
	Refs      int       `json:"refs,omitempty"` // lower side: upper subscriptions it serves
}

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

// dialogIDs are the addresses of one subscription dialog, from our side.
type dialogIDs struct {
	local, remote       sip.Uri
	localTag, remoteTag string
	target              sip.Uri // Request-URI of in-dialog requests
}

// deviceSub is our subscription to a device (we are the subscriber).
type deviceSub struct {
	deviceID  string
	kind      string
	callID    string
	dialog    dialogIDs
	cseq      uint32
	expiresAt time.Time
	refs      int
}

type downKey struct{ deviceID, kind string }

// targetKey is what one upper subscription is about: a platform keeps at
// most one per key, a new dialog replacing the old.
type targetKey struct{ platform, kind, target string }

// subscriptions keeps both sides: uppers subscribed to us, and the one
// subscription per (device, kind) that serves all of them.
type subscriptions struct {
	c        *Cascade
	mu       sync.Mutex
	uppers   map[string]*upperSub // call ID + remote tag
	byTarget map[targetKey]string // -> key in uppers
	downs    map[downKey]*deviceSub
	inFlight map[downKey]bool
	backoff  map[downKey]time.Time
	kick     chan struct{}
	wg       sync.WaitGroup
}

func newSubscriptions(c *Cascade) *subscriptions {
	return &subscriptions{
		c: c, uppers: map[string]*upperSub{}, byTarget: map[targetKey]string{}, downs: map[downKey]*deviceSub{},
		inFlight: map[downKey]bool{}, backoff: map[downKey]time.Time{},
		kick: make(chan struct{}, 1),
	}
}

func (s *subscriptions) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// run expires upper subscriptions and keeps the device subscriptions equal
// to what the uppers need, until ctx ends.
func (s *subscriptions) run(ctx context.Context) {
	defer s.c.wg.Done()
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
		case <-s.kick:
		}
		s.expireUppers()
		s.reconcile(ctx)
	}
}

func (s *subscriptions) expireUppers() {
	now := s.c.now()
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
func (s *subscriptions) dropLocked(key string) {
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
func (s *subscriptions) dropPlatform(u *upperClient) {
	s.mu.Lock()
	for key, sub := range s.uppers {
		if sub.upper == u {
			s.dropLocked(key)
		}
	}
	s.mu.Unlock()
	s.poke() // device subscriptions nobody needs now end
}

func (sub *upperSub) targetKey() targetKey {
	return targetKey{sub.upper.id, sub.kind, sub.targetID}
}

// deviceReset forgets our subscriptions to a device that registered anew:
// a rebooted device has lost them.
func (s *subscriptions) deviceReset(deviceID string) {
	s.mu.Lock()
	for key := range s.downs {
		if key.deviceID == deviceID {
			delete(s.downs, key)
		}
	}
	s.mu.Unlock()
	s.poke()
}

// handleUpperSubscribe serves SUBSCRIBE from an upper platform (GB/T 28181
// §9.11): new, refresh, or Expires: 0.
func (c *Cascade) handleUpperSubscribe(req *sip.Request, tx sip.ServerTransaction) {
	u := c.upperOf(req)
	if u == nil {
		c.upper.Respond(tx, req, sip.StatusForbidden, "Forbidden (unknown platform)", nil)
		return
	}
	hdr, err := manscdp.Peek(req.Body())
	if err != nil || !subscriptionKinds[hdr.CmdType] {
		u.log.Warn().Err(err).Str("cmd_type", hdr.CmdType).Msg("SUBSCRIBE without a Catalog, Alarm, MobilePosition or PTZPosition query answered 489")
		c.upper.Respond(tx, req, 489, "Bad Event", nil)
		return
	}
	expires := min(requestedExpires(req), c.cfg.Upper.SubscribeExpiresMax)
	s := c.subs
	key := callIDOf(req) + "/" + req.From().Params.GetOr("tag", "")
	log := u.log.With().Str("kind", hdr.CmdType).Str("target_id", hdr.DeviceID).Str("call_id", callIDOf(req)).Logger()

	s.mu.Lock()
	sub := s.uppers[key]
	toTag, inDialog := req.To().Params.Get("tag")
	switch {
	case sub == nil && inDialog && toTag != "":
		s.mu.Unlock()
		c.upper.Respond(tx, req, sip.StatusCallTransactionDoesNotExists, "Subscription Does Not Exist", nil)
		return
	case sub != nil && expires == 0:
		s.dropLocked(key)
		s.mu.Unlock()
		log.Info().Msg("upper platform unsubscribed")
		c.answerSubscribe(tx, req, sub, hdr, 0)
		s.poke()
		return
	case sub != nil:
		sub.expiresAt = c.now().Add(secondsDuration(expires))
		s.mu.Unlock()
		c.answerSubscribe(tx, req, sub, hdr, expires)
		return
	}
	s.mu.Unlock()

	sub = &upperSub{upper: u, kind: hdr.CmdType, targetID: hdr.DeviceID, callID: callIDOf(req),
		event: endpoint.HeaderValue(req, "Event"), queue: make(chan notifyBody, notifyQueue), done: make(chan struct{})}
	if hdr.DeviceID != c.cfg.ID {
		local, dev, ok := c.registry.resolve(u.view(), hdr.DeviceID)
		if !ok {
			log.Info().Msg("SUBSCRIBE for an ID not shared with this platform answered 404")
			c.upper.Respond(tx, req, sip.StatusNotFound, "Not Found (not shared with this platform)", nil)
			return
		}
		sub.localID, sub.ownerID = local, dev.ID
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
		c.answerSubscribe(tx, req, sub, hdr, 0)
		return
	}
	sub.expiresAt = c.now().Add(secondsDuration(expires))
	s.mu.Lock()
	replaced, had := s.byTarget[sub.targetKey()]
	if had {
		// A platform that lost track of its subscription (restart) starts a
		// new dialog: the old one ends quietly, nobody reads it any more.
		s.dropLocked(replaced)
	}
	if len(s.uppers) >= c.cfg.Upper.MaxSubscriptions {
		s.mu.Unlock()
		log.Warn().Int("max_subscriptions", c.cfg.Upper.MaxSubscriptions).Msg("SUBSCRIBE refused: upper.max_subscriptions reached across all upper platforms")
		c.upper.Respond(tx, req, sip.StatusServiceUnavailable, "Service Unavailable (subscription limit upper.max_subscriptions reached)", nil)
		return
	}
	s.uppers[key] = sub
	s.byTarget[sub.targetKey()] = key
	s.mu.Unlock()
	c.answerSubscribe(tx, req, sub, hdr, expires)
	log.Info().Int("expires", expires).Bool("replaced", had).Msg("upper platform subscribed")
	s.wg.Add(1)
	go s.notifier(sub)
	s.poke()
}

// answerSubscribe sends 200 with our dialog tag, the granted Expires and, as
// GB/T 28181 devices do, a Response body with Result OK.
func (c *Cascade) answerSubscribe(tx sip.ServerTransaction, req *sip.Request, sub *upperSub, hdr manscdp.Header, expires int) {
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
		&sip.ContactHeader{Address: c.upper.Contact(c.cfg.ID, endpoint.PeerOf(req))},
	}
	if sub.event != "" {
		headers = append(headers, sip.NewHeader("Event", sub.event))
	}
	if body != nil {
		headers = append(headers, sip.NewHeader("Content-Type", contentTypeMANSCDP))
	}
	c.upper.Respond(tx, req, sip.StatusOK, "OK", body, headers...)
}

// notifier sends one subscription's NOTIFYs in order.
func (s *subscriptions) notifier(sub *upperSub) {
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

func (s *subscriptions) sendNotify(sub *upperSub, n notifyBody) {
	c := s.c
	u := sub.upper
	ctx, cancel := context.WithTimeout(c.ctx, requestTimeout)
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
	req := newInDialog(c.upper, sip.NOTIFY, sub.dialog, sub.callID, sub.cseq.Add(1), peer)
	req.AppendHeader(sip.NewHeader("Event", cmp.Or(sub.event, eventHeader(sub.kind))))
	req.AppendHeader(sip.NewHeader("Subscription-State", "active;expires="+strconv.Itoa(remaining)))
	req.AppendHeader(sip.NewHeader("Content-Type", contentTypeMANSCDP))
	req.SetBody(n.body)
	if n.identity != nil {
		req.AppendHeader(n.identity)
	}
	res, err := c.upper.Do(ctx, req)
	if err != nil || !res.IsSuccess() {
		c.metrics.Inc("gbproxy_notify_total", "platform", u.id, "kind", sub.kind, "result", "failed")
		u.log.Warn().Err(err).Int("status", statusOf(res)).Str("kind", sub.kind).Str("call_id", sub.callID).Msg("upper platform did not take our NOTIFY")
		return
	}
	c.metrics.Inc("gbproxy_notify_total", "platform", u.id, "kind", sub.kind, "result", "ok")
}

// newInDialog builds a request inside an existing dialog.
func newInDialog(ep *endpoint.Endpoint, method sip.RequestMethod, d dialogIDs, callID string, cseq uint32, peer endpoint.Peer) *sip.Request {
	req := ep.NewRequest(method, d.target, peer, d.local, d.remote)
	req.From().Params.Add("tag", d.localTag)
	if d.remoteTag != "" {
		req.To().Params.Add("tag", d.remoteTag)
	}
	// The typed header: a generic one would leave req.CallID() (what Note
	// signs) at the Call-ID NewRequest made.
	cid := sip.CallIDHeader(callID)
	req.ReplaceHeader(&cid)
	req.CSeq().SeqNo = cseq
	return req
}

// eventHeader is the Event package for a kind: GB/T 28181 devices use
// "Catalog" for catalogs and "presence" for the others.
func eventHeader(kind string) string {
	if kind == "Catalog" {
		return "Catalog"
	}
	return "presence"
}

// channelEvents fans catalog changes out to every Catalog subscription that
// sees them, mapped for its platform.
func (s *subscriptions) channelEvents(evs []ChannelEvent) {
	if len(evs) == 0 {
		return
	}
	for _, sub := range s.active("Catalog") {
		items := s.c.registry.eventsFor(sub.upper.view(), evs)
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
func (s *subscriptions) shareChanged(u *upperClient, items []manscdp.CatalogItem) {
	if len(items) > 0 {
		for _, sub := range s.active("Catalog") {
			if sub.upper == u && sub.localID == "" {
				s.enqueueCatalog(sub, items)
			}
		}
	}
	s.poke()
}

func (s *subscriptions) enqueueCatalog(sub *upperSub, items []manscdp.CatalogItem) {
	u := sub.upper
	bodies, err := s.c.catalogBodies(manscdp.RootNotify, nextSN(), items, u.catalogPerMessage(sub.peer.Transport), s.c.datagramBudget(u, u.target()), u.charset())
	if err != nil {
		u.log.Error().Err(err).Msg("catalog NOTIFY could not be encoded")
		return
	}
	for _, b := range bodies {
		s.enqueue(sub, notifyBody{body: b.body})
	}
}

// onlyTarget keeps the items of a subscription to one device or channel.
func (s *subscriptions) onlyTarget(sub *upperSub, evs []ChannelEvent, items []manscdp.CatalogItem) []manscdp.CatalogItem {
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
func (s *subscriptions) forward(kind, deviceID, id string, body []byte, identity sip.Header) {
	for _, sub := range s.active(kind) {
		if sub.localID != "" && sub.localID != id && sub.localID != deviceID {
			continue
		}
		v := sub.upper.view()
		if !s.c.registry.sharesID(v, id) {
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

func (s *subscriptions) enqueue(sub *upperSub, n notifyBody) {
	select {
	case sub.queue <- n:
	case <-sub.done:
	default:
		s.c.metrics.Inc("gbproxy_notify_total", "platform", sub.upper.id, "kind", sub.kind, "result", "dropped")
		sub.upper.log.Warn().Str("kind", sub.kind).Msg("NOTIFY dropped: the upper platform is not keeping up")
	}
}

func (s *subscriptions) active(kind string) []*upperSub {
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
// subscription would serve.
func (s *subscriptions) wanted() map[downKey]int {
	s.mu.Lock()
	subs := make([]*upperSub, 0, len(s.uppers))
	for _, sub := range s.uppers {
		subs = append(subs, sub)
	}
	s.mu.Unlock()
	want := map[downKey]int{}
	if len(subs) == 0 {
		return want
	}
	r := s.c.registry
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, sub := range subs {
		if sub.ownerID != "" || sub.localID != "" {
			dev := sub.ownerID
			if d := r.devices[dev]; d != nil && d.Online {
				want[downKey{dev, sub.kind}]++
			}
			continue
		}
		v := sub.upper.view()
		for id, d := range r.devices {
			if !d.Online {
				continue
			}
			if v.sharesDevice(id) || r.sharesAnyChannelLocked(v, id) {
				want[downKey{id, sub.kind}]++
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

// reconcile subscribes to devices that some upper needs, refreshes those
// about to expire and ends the ones nobody needs: one subscription per
// device and kind, however many uppers.
func (s *subscriptions) reconcile(ctx context.Context) {
	want := s.wanted()
	now := s.c.now()
	refreshBefore := secondsDuration(s.c.cfg.Lower.SubscribeExpires) / 4
	type job struct {
		key  downKey
		sub  *deviceSub // nil: new subscription
		stop bool
	}
	var jobs []job
	s.mu.Lock()
	for key, sub := range s.downs {
		n := want[key]
		sub.refs = n
		dev, known := s.c.registry.Device(key.deviceID)
		switch {
		case !known || !dev.Online:
			delete(s.downs, key) // it went with the device
		case n == 0:
			delete(s.downs, key)
			jobs = append(jobs, job{key: key, sub: sub, stop: true})
		case now.After(sub.expiresAt.Add(-refreshBefore)) && !s.inFlight[key]:
			s.inFlight[key] = true
			jobs = append(jobs, job{key: key, sub: sub})
		}
	}
	for key := range want {
		if s.downs[key] != nil || s.inFlight[key] || now.Before(s.backoff[key]) {
			continue
		}
		s.inFlight[key] = true
		jobs = append(jobs, job{key: key})
	}
	s.mu.Unlock()
	if len(jobs) == 0 {
		return
	}
	sem := make(chan struct{}, subscribeWorkers)
	var wg sync.WaitGroup
	for _, j := range jobs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if j.stop {
				if _, err := s.subscribeDevice(ctx, j.key, j.sub, 0); err != nil {
					s.c.log.Debug().Err(err).Str("device_id", j.key.deviceID).Str("kind", j.key.kind).
						Msg("ending our subscription at the device failed; it lapses at its expiry")
				}
				return
			}
			sub, err := s.subscribeDevice(ctx, j.key, j.sub, s.c.cfg.Lower.SubscribeExpires)
			s.mu.Lock()
			delete(s.inFlight, j.key)
			if err != nil {
				delete(s.downs, j.key)
				s.backoff[j.key] = s.c.now().Add(subscribeBackoff)
			} else {
				sub.refs = want[j.key]
				s.downs[j.key] = sub
				delete(s.backoff, j.key)
			}
			s.mu.Unlock()
		}()
	}
	wg.Wait()
}

// subscribeDevice sends SUBSCRIBE to a device: new when sub is nil, else a
// refresh (or, with expires 0, the end) of that dialog.
func (s *subscriptions) subscribeDevice(ctx context.Context, key downKey, sub *deviceSub, expires int) (*deviceSub, error) {
	c := s.c
	log := c.log.With().Str("device_id", key.deviceID).Str("kind", key.kind).Int("expires", expires).Logger()
	dev, ok := c.registry.Device(key.deviceID)
	if !ok {
		return nil, fmt.Errorf("device %s unknown", key.deviceID)
	}
	host, port := endpoint.SplitHostPort(dev.Remote)
	peer := endpoint.Peer{Transport: dev.Transport, Addr: dev.Remote}
	var req *sip.Request
	if sub == nil {
		sub = &deviceSub{deviceID: key.deviceID, kind: key.kind}
		req = c.lower.NewRequest(sip.SUBSCRIBE, sip.Uri{Scheme: "sip", User: dev.ID, Host: host, Port: port}, peer,
			sip.Uri{Scheme: "sip", User: c.cfg.ID, Host: c.cfg.Domain}, sip.Uri{Scheme: "sip", User: dev.ID, Host: c.cfg.Domain})
		sub.callID = callIDOf(req)
		sub.cseq = 1
		sub.dialog = dialogIDs{local: req.From().Address, remote: req.To().Address, localTag: req.From().Params.GetOr("tag", "")}
	} else {
		sub.cseq++
		sub.dialog.target = sip.Uri{Scheme: "sip", User: dev.ID, Host: host, Port: port}
		req = newInDialog(c.lower, sip.SUBSCRIBE, sub.dialog, sub.callID, sub.cseq, peer)
	}
	q := &manscdp.CatalogQuery{Base: manscdp.Base{CmdType: key.kind, SN: nextSN(), DeviceID: dev.ID}}
	body, err := manscdp.Encode(manscdp.RootQuery, q, manscdp.CharsetGB2312)
	if err != nil {
		return nil, err
	}
	req.AppendHeader(sip.NewHeader("Event", eventHeader(key.kind)))
	req.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(expires)))
	req.AppendHeader(sip.NewHeader("Content-Type", contentTypeMANSCDP))
	req.SetBody(body)
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	res, err := c.lower.Do(ctx, req)
	if err == nil && !res.IsSuccess() {
		err = fmt.Errorf("device answered %d %s", res.StatusCode, res.Reason)
	}
	if err != nil {
		c.metrics.Inc("gbproxy_device_subscriptions_total", "kind", key.kind, "result", "failed")
		if expires > 0 {
			log.Warn().Err(err).Stringer("retry_in", subscribeBackoff).Msg("device refused or ignored our SUBSCRIBE; changes reach uppers only on catalog refresh")
		}
		return nil, err
	}
	c.metrics.Inc("gbproxy_device_subscriptions_total", "kind", key.kind, "result", "ok")
	if tag, ok := res.To().Params.Get("tag"); ok {
		sub.dialog.remoteTag = tag
	}
	granted := grantedExpires(res, expires)
	sub.expiresAt = c.now().Add(secondsDuration(granted))
	if expires > 0 {
		log.Debug().Int("granted", granted).Msg("subscribed to device")
	}
	return sub, nil
}

// state is the API view; the subscriptions' lock is held.
func (sub *upperSub) state() SubscriptionState {
	return SubscriptionState{Kind: sub.kind, Platform: sub.upper.id, TargetID: sub.targetID, CallID: sub.callID, ExpiresAt: sub.expiresAt}
}

// statesOf lists one platform's subscriptions to us.
func (s *subscriptions) statesOf(platformID string) []SubscriptionState {
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

// Subscriptions lists both sides for the API: uppers subscribed to us, and
// our subscriptions to devices with how many upper subscriptions each serves.
func (c *Cascade) Subscriptions() (upper, lower []SubscriptionState) {
	s := c.subs
	s.mu.Lock()
	defer s.mu.Unlock()
	upper, lower = []SubscriptionState{}, []SubscriptionState{}
	for _, sub := range s.uppers {
		upper = append(upper, sub.state())
	}
	for _, sub := range s.downs {
		lower = append(lower, SubscriptionState{Kind: sub.kind, DeviceID: sub.deviceID, CallID: sub.callID, ExpiresAt: sub.expiresAt, Refs: sub.refs})
	}
	sort.Slice(upper, func(i, j int) bool { return upper[i].Platform+upper[i].Kind < upper[j].Platform+upper[j].Kind })
	sort.Slice(lower, func(i, j int) bool { return lower[i].DeviceID+lower[i].Kind < lower[j].DeviceID+lower[j].Kind })
	return upper, lower
}
