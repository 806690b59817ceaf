package cascade

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
	"github.com/gbproxy/gbproxy/endpoint"
)

const (
	// subscribeBackoff keeps a device that refuses our SUBSCRIBE from being
	// asked again at every change (no subscription storms).
	subscribeBackoff = time.Minute
	subscribeWorkers = 16
)

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

// deviceSubs keeps one subscription per (device, kind) that serves every
// upper subscription needing it.
type deviceSubs struct {
	l        *lowerSide
	mu       sync.Mutex
	downs    map[downKey]*deviceSub
	inFlight map[downKey]bool
	backoff  map[downKey]time.Time
	kick     chan struct{}
}

func newDeviceSubs(l *lowerSide) *deviceSubs {
	return &deviceSubs{l: l, downs: map[downKey]*deviceSub{}, inFlight: map[downKey]bool{}, backoff: map[downKey]time.Time{},
		kick: make(chan struct{}, 1)}
}

func (s *deviceSubs) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// run keeps the device subscriptions equal to what the uppers need, until
// ctx ends.
func (s *deviceSubs) run(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-s.kick:
		}
		s.reconcile(ctx)
	}
}

// deviceReset forgets our subscriptions to a device that registered anew:
// a rebooted device has lost them.
func (s *deviceSubs) deviceReset(deviceID string) {
	s.mu.Lock()
	for key := range s.downs {
		if key.deviceID == deviceID {
			delete(s.downs, key)
		}
	}
	s.mu.Unlock()
	s.poke()
}

// reconcile subscribes to devices that some upper needs, refreshes those
// about to expire and ends the ones nobody needs: one subscription per
// device and kind, however many uppers.
func (s *deviceSubs) reconcile(ctx context.Context) {
	want := s.l.feed.wanted()
	now := s.l.now()
	refreshBefore := secondsDuration(s.l.cfg.Lower.SubscribeExpires) / 4
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
		dev, known := s.l.registry.Device(key.deviceID)
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
					s.l.log.Debug().Err(err).Str("device_id", j.key.deviceID).Str("kind", j.key.kind).
						Msg("ending our subscription at the device failed; it lapses at its expiry")
				}
				return
			}
			sub, err := s.subscribeDevice(ctx, j.key, j.sub, s.l.cfg.Lower.SubscribeExpires)
			s.mu.Lock()
			delete(s.inFlight, j.key)
			if err != nil {
				delete(s.downs, j.key)
				s.backoff[j.key] = s.l.now().Add(subscribeBackoff)
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
func (s *deviceSubs) subscribeDevice(ctx context.Context, key downKey, sub *deviceSub, expires int) (*deviceSub, error) {
	l := s.l
	log := l.log.With().Str("device_id", key.deviceID).Str("kind", key.kind).Int("expires", expires).Logger()
	dev, ok := l.registry.Device(key.deviceID)
	if !ok {
		return nil, fmt.Errorf("device %s unknown", key.deviceID)
	}
	host, port := endpoint.SplitHostPort(dev.Remote)
	peer := endpoint.Peer{Transport: dev.Transport, Addr: dev.Remote}
	var req *sip.Request
	if sub == nil {
		sub = &deviceSub{deviceID: key.deviceID, kind: key.kind}
		req = l.ep.NewRequest(sip.SUBSCRIBE, sip.Uri{Scheme: "sip", User: dev.ID, Host: host, Port: port}, peer,
			sip.Uri{Scheme: "sip", User: l.cfg.ID, Host: l.cfg.Domain}, sip.Uri{Scheme: "sip", User: dev.ID, Host: l.cfg.Domain})
		sub.callID = callIDOf(req)
		sub.cseq = 1
		sub.dialog = dialogIDs{local: req.From().Address, remote: req.To().Address, localTag: req.From().Params.GetOr("tag", "")}
	} else {
		sub.cseq++
		sub.dialog.target = sip.Uri{Scheme: "sip", User: dev.ID, Host: host, Port: port}
		req = newInDialog(l.ep, sip.SUBSCRIBE, sub.dialog, sub.callID, sub.cseq, peer)
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
	res, err := l.ep.Do(ctx, req)
	if err == nil && !res.IsSuccess() {
		err = fmt.Errorf("device answered %d %s", res.StatusCode, res.Reason)
	}
	if err != nil {
		l.metrics.Inc("gbproxy_device_subscriptions_total", "kind", key.kind, "result", "failed")
		if expires > 0 {
			log.Warn().Err(err).Stringer("retry_in", subscribeBackoff).Msg("device refused or ignored our SUBSCRIBE; changes reach uppers only on catalog refresh")
		}
		return nil, err
	}
	l.metrics.Inc("gbproxy_device_subscriptions_total", "kind", key.kind, "result", "ok")
	if tag, ok := res.To().Params.Get("tag"); ok {
		sub.dialog.remoteTag = tag
	}
	granted := grantedExpires(res, expires)
	sub.expiresAt = l.now().Add(secondsDuration(granted))
	if expires > 0 {
		log.Debug().Int("granted", granted).Msg("subscribed to device")
	}
	return sub, nil
}

// states lists our subscriptions to devices.
func (s *deviceSubs) states() []SubscriptionState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []SubscriptionState{}
	for _, sub := range s.downs {
		out = append(out, SubscriptionState{Kind: sub.kind, DeviceID: sub.deviceID, CallID: sub.callID, ExpiresAt: sub.expiresAt, Refs: sub.refs})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].DeviceID+out[i].Kind < out[j].DeviceID+out[j].Kind })
	return out
}
