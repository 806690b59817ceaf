package cascade

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
)

// handleLowerMessage serves MESSAGEs from devices: keepalives, answers to
// our queries and to routed ones, alarms and other notifications.
func (l *lowerSide) handleLowerMessage(req *sip.Request, tx sip.ServerTransaction) {
	l.fromDevice(req, tx, true)
}

// handleLowerNotify serves NOTIFYs of our subscriptions to devices.
func (l *lowerSide) handleLowerNotify(req *sip.Request, tx sip.ServerTransaction) {
	l.fromDevice(req, tx, false)
}

// fromDevice answers a device's MESSAGE or NOTIFY, then acts on its body.
// Any request from a registered device is also a sign of life.
func (l *lowerSide) fromDevice(req *sip.Request, tx sip.ServerTransaction, isMessage bool) {
	from := req.From()
	if from == nil {
		l.ep.Respond(tx, req, sip.StatusBadRequest, "Bad Request (no From)", nil)
		return
	}
	body := req.Body()
	hdr, err := manscdp.Peek(body)
	if err != nil {
		l.log.Warn().Err(err).Str("from", from.Address.User).Str("remote", req.Source()).Str("method", string(req.Method)).Msg("request with unreadable MANSCDP body answered 400")
		l.ep.Respond(tx, req, sip.StatusBadRequest, "Bad Request (MANSCDP body)", nil)
		return
	}
	deviceID := from.Address.User
	if _, ok := l.registry.Device(deviceID); !ok {
		// In-dialog requests (MediaStatus of a playback) carry the channel
		// ID the dialog was made with; the lower guard bound it to its owner.
		if owner, ok := l.registry.ChannelOwner(deviceID); ok {
			deviceID = owner
		}
	}
	now := l.now()
	known, revived := l.registry.keepalive(deviceID, strings.ToUpper(req.Transport()), req.Source(), now)
	if !known {
		// 403 tells a device we lost (restart, expiry) to register again.
		l.ep.Respond(tx, req, sip.StatusForbidden, "Forbidden (not registered)", nil)
		if hdr.CmdType == "Keepalive" {
			l.metrics.Inc("gbproxy_keepalives_total", "side", "lower", "result", "unregistered")
		}
		return
	}
	if revived {
		l.log.Info().Str("device_id", deviceID).Msg("device back online")
		l.subs.poke()
		l.clusterOnline(deviceID, true)
	}
	l.ep.Respond(tx, req, sip.StatusOK, "OK", nil)
	if isMessage && l.dialogHook != nil && req.To().Params.Has("tag") && l.dialogHook(deviceID, req) {
		return
	}
	switch {
	case hdr.Root == manscdp.RootNotify && hdr.CmdType == "Keepalive":
		l.metrics.Inc("gbproxy_keepalives_total", "side", "lower", "result", "ok")
	case hdr.Root == manscdp.RootResponse:
		if !l.feed.deliver(deviceID, hdr, body, l.sig.forwardIdentity(req, deviceID)) && hdr.CmdType == "Catalog" {
			l.catalogs.receive(deviceID, body)
		}
	case hdr.Root == manscdp.RootNotify && hdr.CmdType == "Catalog":
		l.catalogNotify(deviceID, body)
	case hdr.Root == manscdp.RootNotify && hdr.CmdType == "Alarm":
		l.alarmFromDevice(deviceID, hdr, body, isMessage, l.sig.forwardIdentity(req, deviceID))
	case hdr.Root == manscdp.RootNotify && hdr.CmdType == manscdp.CmdUploadSnapShotFinished:
		l.feed.snapshotFinished(deviceID, hdr, body, l.sig.forwardIdentity(req, deviceID))
	case hdr.Root == manscdp.RootNotify && subscriptionKinds[hdr.CmdType]:
		l.feed.report(hdr.CmdType, deviceID, hdr.DeviceID, body, l.sig.forwardIdentity(req, deviceID))
	default:
		l.log.Debug().Str("device_id", deviceID).Str("root", hdr.Root).Str("cmd_type", hdr.CmdType).Msg("request from device accepted; nothing routes it")
	}
}

// catalogNotify applies a device's catalog change; subscribed uppers hear of
// it through the registry's events.
func (l *lowerSide) catalogNotify(deviceID string, body []byte) {
	var n manscdp.CatalogNotify
	if err := manscdp.Decode(body, &n); err != nil {
		l.log.Warn().Err(err).Str("device_id", deviceID).Msg("unreadable catalog notification ignored")
		return
	}
	refused := l.registry.applyNotify(deviceID, n.DeviceList.Items, l.now())
	l.logRefused(deviceID, refused)
	l.publishChannels(deviceID)
	l.log.Info().Str("device_id", deviceID).Int("items", len(n.DeviceList.Items)).Msg("catalog change from device applied")
}

// logRefused reports channels refused because another device owns them.
func (l *lowerSide) logRefused(deviceID string, refused []string) {
	if len(refused) == 0 {
		return
	}
	l.metrics.Add("gbproxy_channels_refused_total", int64(len(refused)))
	l.log.Warn().Str("device_id", deviceID).Int("count", len(refused)).Str("first", refused[0]).
		Msg("channels refused: another online device already reports these IDs, or they are this proxy's own (a cascade loop, or IDs configured twice)")
}

// alarmFromDevice acknowledges an alarm (GB/T 28181 §9.4: 200, then a
// Response with Result OK) and hands it to the upper side.
func (l *lowerSide) alarmFromDevice(deviceID string, hdr manscdp.Header, body []byte, isMessage bool, identity sip.Header) {
	l.metrics.Inc("gbproxy_alarms_total", "direction", "in")
	l.log.Info().Str("device_id", deviceID).Str("channel_id", hdr.DeviceID).Int64("sn", hdr.SN).Msg("alarm from device")
	if isMessage {
		l.tasks.spawn(func() {
			dev, ok := l.registry.Device(deviceID)
			if !ok {
				return
			}
			ack, err := manscdp.Encode(manscdp.RootResponse, &manscdp.ResultResponse{
				Base: manscdp.Base{CmdType: "Alarm", SN: hdr.SN, DeviceID: hdr.DeviceID}, Result: "OK"}, manscdp.CharsetGB2312)
			if err != nil {
				return
			}
			ctx, cancel := context.WithTimeout(l.ctx, requestTimeout)
			defer cancel()
			if res, err := l.sendToDevice(ctx, dev, sip.MESSAGE, ack); err != nil || !res.IsSuccess() {
				l.log.Warn().Err(err).Int("status", statusOf(res)).Str("device_id", deviceID).Msg("device did not take our alarm acknowledgement")
			}
		})
	}
	if !l.alarms.first(deviceID+"/"+hdr.DeviceID+"/"+strconv.FormatInt(hdr.SN, 10), l.now()) {
		l.log.Debug().Str("device_id", deviceID).Int64("sn", hdr.SN).Msg("alarm already forwarded (the device sent it by MESSAGE and by NOTIFY)")
		return
	}
	l.feed.alarm(deviceID, hdr, body, identity)
}

// alarmSeenFor is how long an alarm is remembered: a device subscribed to
// for alarms reports each by MESSAGE (§9.4) and NOTIFY (§9.11) with one
// SN, and the uppers get it once.
const alarmSeenFor = 30 * time.Second

// seenAlarms remembers the alarms forwarded lately.
type seenAlarms struct {
	mu    sync.Mutex
	seen  map[string]time.Time
	swept time.Time
}

// first reports whether key was not seen within alarmSeenFor, and notes it.
func (a *seenAlarms) first(key string, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.seen == nil {
		a.seen = map[string]time.Time{}
	}
	if now.Sub(a.swept) > alarmSeenFor {
		a.swept = now
		for k, at := range a.seen {
			if now.Sub(at) > alarmSeenFor {
				delete(a.seen, k)
			}
		}
	}
	if at, ok := a.seen[key]; ok && now.Sub(at) <= alarmSeenFor {
		return false
	}
	a.seen[key] = now
	return true
}
