package cascade

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
)

const contentTypeMANSCDP = "Application/MANSCDP+xml"

// requestTimeout bounds one MESSAGE transaction we send; sipgo's own UDP
// timeout (64·T1 = 32 s) is far longer than a keepalive period.
const requestTimeout = 8 * time.Second

var snCounter atomic.Int64

func nextSN() int64 { return snCounter.Add(1) }

// catalogCollector asks devices for their catalog and gathers the answer,
// which may span many MESSAGEs (SumNum in total, DeviceList Num in each).
type catalogCollector struct {
	l       *lowerSide
	mu      sync.Mutex
	pending map[string]*catalogAnswer // device ID -> answer being gathered
	stopped bool
}

type catalogAnswer struct {
	sn     int64
	sumNum int
	items  map[string]manscdp.CatalogItem
	order  []string
	timer  *time.Timer
}

func newCatalogCollector(l *lowerSide) *catalogCollector {
	return &catalogCollector{l: l, pending: map[string]*catalogAnswer{}}
}

// query sends a Catalog query to a device in the background.
func (cc *catalogCollector) query(dev Device) {
	l := cc.l
	l.registry.catalogAsked(dev.ID, l.now())
	sn := nextSN()
	cc.mu.Lock()
	if cc.stopped {
		cc.mu.Unlock()
		return
	}
	cc.startLocked(dev.ID, sn)
	cc.mu.Unlock()
	body, err := manscdp.Encode("Query", &manscdp.CatalogQuery{Base: manscdp.Base{CmdType: "Catalog", SN: sn, DeviceID: dev.ID}}, manscdp.CharsetGB2312)
	if err != nil {
		l.log.Error().Err(err).Str("device_id", dev.ID).Msg("encode Catalog query")
		return
	}
	l.tasks.spawn(func() {
		ctx, cancel := context.WithTimeout(l.ctx, requestTimeout)
		defer cancel()
		res, err := l.sendToDevice(ctx, dev, sip.MESSAGE, body)
		if err != nil || !res.IsSuccess() {
			l.log.Warn().Err(err).Str("device_id", dev.ID).Int("status", statusOf(res)).Msg("device did not accept the Catalog query; its channels stay as last known")
			cc.drop(dev.ID, sn)
		}
	})
}

func (cc *catalogCollector) startLocked(deviceID string, sn int64) *catalogAnswer {
	if old := cc.pending[deviceID]; old != nil {
		old.timer.Stop()
	}
	a := &catalogAnswer{sn: sn, sumNum: -1, items: map[string]manscdp.CatalogItem{}}
	a.timer = time.AfterFunc(cc.l.cfg.Lower.CatalogTimeout, func() { cc.finish(deviceID, a, false) })
	cc.pending[deviceID] = a
	return a
}

func (cc *catalogCollector) drop(deviceID string, sn int64) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if a := cc.pending[deviceID]; a != nil && a.sn == sn {
		a.timer.Stop()
		delete(cc.pending, deviceID)
	}
}

// receive takes one Catalog Response MESSAGE. Answers nobody asked for (a
// device pushing its catalog, or a late answer) are gathered the same way.
func (cc *catalogCollector) receive(deviceID string, body []byte) {
	var resp manscdp.CatalogResponse
	if err := manscdp.Decode(body, &resp); err != nil {
		cc.l.log.Warn().Err(err).Str("device_id", deviceID).Msg("unreadable Catalog response ignored")
		return
	}
	cc.mu.Lock()
	if cc.stopped {
		cc.mu.Unlock()
		return
	}
	a := cc.pending[deviceID]
	if a == nil || a.sn != resp.SN {
		a = cc.startLocked(deviceID, resp.SN)
	}
	a.sumNum = resp.SumNum
	for _, it := range resp.DeviceList.Items {
		if _, dup := a.items[it.DeviceID]; !dup {
			a.order = append(a.order, it.DeviceID)
		}
		a.items[it.DeviceID] = it
	}
	a.timer.Reset(cc.l.cfg.Lower.CatalogTimeout)
	done := len(a.items) >= a.sumNum
	cc.mu.Unlock()
	if done {
		cc.finish(deviceID, a, true)
	}
}

func (cc *catalogCollector) finish(deviceID string, a *catalogAnswer, complete bool) {
	cc.mu.Lock()
	if cc.pending[deviceID] != a {
		cc.mu.Unlock()
		return
	}
	delete(cc.pending, deviceID)
	a.timer.Stop()
	items := make([]manscdp.CatalogItem, 0, len(a.order))
	for _, id := range a.order {
		items = append(items, a.items[id])
	}
	cc.mu.Unlock()

	l := cc.l
	log := l.log.With().Str("device_id", deviceID).Int64("sn", a.sn).Int("received", len(items)).Int("sum_num", a.sumNum).Logger()
	if !complete && len(items) == 0 {
		log.Warn().Msg("device sent no Catalog answer in time; its channels stay as last known")
		return
	}
	added, removed, refused := l.registry.setChannels(deviceID, items, complete, l.now())
	l.logRefused(deviceID, refused)
	l.publishChannels(deviceID)
	if complete {
		log.Info().Int("added", added).Int("removed", removed).Msg("device catalog stored")
	} else {
		log.Warn().Int("added", added).Msg("device catalog incomplete (SumNum not reached in time); stored what arrived, removed nothing")
	}
}

func (cc *catalogCollector) stop() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.stopped = true
	for id, a := range cc.pending {
		a.timer.Stop()
		delete(cc.pending, id)
	}
}

func statusOf(res *sip.Response) int {
	if res == nil {
		return 0
	}
	return res.StatusCode
}

// setHeaders replaces headers of the same name, or appends.
func setHeaders(req *sip.Request, headers []sip.Header) {
	for _, h := range headers {
		if req.GetHeader(h.Name()) != nil {
			req.ReplaceHeader(h)
		} else {
			req.AppendHeader(h)
		}
	}
}
