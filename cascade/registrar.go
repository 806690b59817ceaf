package cascade

import (
	"context"
	"errors"
	"net"
	"regexp"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
	"github.com/gbproxy/gbproxy/endpoint"
	"github.com/gbproxy/gbproxy/security"
)

// Device IDs are 20 digits in GB/T 28181-2016; 18-digit IDs still exist in
// older devices (the seed's Hikvision sample), so they are accepted too.
var deviceIDPattern = regexp.MustCompile(`^[0-9]{18,20}$`)

const defaultExpires = 3600

// screenRegister authenticates a REGISTER in the lower guard, before any
// transaction exists: every refusal (bad ID, another server, unknown
// device, bad or stale credentials, lockout) and the digest challenge are
// answered statelessly over UDP, so a REGISTER flood keeps no state. Only an
// authenticated REGISTER reaches handleRegister.
func (c *Cascade) screenRegister(req *sip.Request) endpoint.Verdict {
	from := req.From()
	if from == nil || !deviceIDPattern.MatchString(from.Address.User) {
		c.registerResult("bad_id")
		return refusal(sip.StatusBadRequest, "Bad Request (From must carry an 18-20 digit device ID)", "register_bad_id",
			"REGISTER without an 18-20 digit device ID in From refused")
	}
	id := from.Address.User
	if !c.isOurTarget(req.Recipient) {
		c.registerResult("wrong_target")
		return refusal(sip.StatusForbidden, "Forbidden (not this SIP server)", "register_wrong_target",
			"REGISTER for another SIP server refused; set the device's SIP server ID to "+c.cfg.ID)
	}
	secret, known := c.deviceSecret(id)
	if !known {
		c.registerResult("unknown_device")
		return refusal(sip.StatusForbidden, "Forbidden (unknown device)", "register_unknown_device",
			"REGISTER from a device not in lower.devices refused (allow_unknown is false)")
	}
	if req.GetHeader("Authorization") == nil {
		return c.challenge(false)
	}
	err := c.verifyRegister(req, id, secret)
	switch {
	case err == nil:
		return endpoint.Verdict{}
	case errors.Is(err, security.ErrStaleNonce):
		return c.challenge(true)
	case errors.Is(err, security.ErrMalformed):
		c.registerResult("malformed_auth")
		return refusal(sip.StatusBadRequest, "Bad Request (malformed Authorization)", "register_malformed_auth",
			"REGISTER with an unreadable Authorization header refused")
	case errors.Is(err, security.ErrLockedOut):
		c.registerResult("locked_out")
		return refusal(sip.StatusForbidden, "Forbidden (locked out)", "register_locked_out",
			"REGISTER refused: too many failed attempts from this address or for this ID; locked out for security.lockout.lock_for")
	default:
		c.registerResult("bad_credentials")
		return refusal(sip.StatusForbidden, "Forbidden (wrong credentials)", "register_bad_credentials",
			"REGISTER with wrong credentials refused; check the device's SIP password against lower.password / lower.devices")
	}
}

// handleRegister is the downward registrar (GB/T 28181 §9.1) for a
// REGISTER that screenRegister authenticated.
func (c *Cascade) handleRegister(req *sip.Request, tx sip.ServerTransaction) {
	ep := c.lower
	id := fromUser(req)
	log := c.log.With().Str("device_id", id).Str("call_id", callIDOf(req)).Str("remote", req.Source()).Logger()

	expires := requestedExpires(req)
	now := c.now()
	if expires == 0 {
		c.registry.unregister(id, now)
		c.deviceOffline(id, "unregistered")
		c.registerResult("unregistered")
		log.Info().Msg("device unregistered")
		ep.Respond(tx, req, sip.StatusOK, "OK", nil, sip.NewHeader("Date", gbDate(now)), sip.NewHeader("Expires", "0"))
		return
	}
	if expires < c.cfg.Lower.RegisterExpiresMin {
		c.registerResult("too_brief")
		ep.Respond(tx, req, sip.StatusIntervalToBrief, "Interval Too Brief", nil,
			sip.NewHeader("Min-Expires", strconv.Itoa(c.cfg.Lower.RegisterExpiresMin)))
		return
	}
	expires = min(expires, c.cfg.Lower.RegisterExpiresMax)

	dev := Device{
		ID:            id,
		Transport:     strings.ToUpper(req.Transport()),
		Remote:        req.Source(),
		CallID:        callIDOf(req),
		Expires:       expires,
		RegisteredAt:  now,
		ExpiresAt:     now.Add(secondsDuration(expires)),
		LastKeepalive: now,
	}
	if h := req.Contact(); h != nil {
		dev.Contact = h.Address.String()
	}
	if h := req.GetHeader("User-Agent"); h != nil {
		dev.UserAgent = h.Value()
	}
	dev.GBVersion = endpoint.HeaderValue(req, "X-GB-Ver")
	old, moved := c.movedFrom(dev)
	if moved {
		// The old address's calls end there before the device's address
		// changes; its other state (channels, subscriptions) carries over.
		log.Warn().Str("from", strings.ToLower(old.Transport)+":"+old.Remote).Str("to", strings.ToLower(dev.Transport)+":"+dev.Remote).
			Msg("device re-registered from another address; its calls at the old address end")
		for _, f := range c.offlineHooks {
			f(id, reasonMoved)
		}
	}
	fresh := c.registry.register(dev) || moved
	if moved && endpoint.ConnOriented(old.Transport) {
		c.lower.CloseConn(old.Remote)
	}
	if endpoint.ConnOriented(dev.Transport) {
		c.lower.Claim(dev.Remote)
	}
	c.registerResult("ok")
	ep.Respond(tx, req, sip.StatusOK, "OK", nil,
		sip.NewHeader("Date", gbDate(now)),
		sip.NewHeader("Expires", strconv.Itoa(expires)))
	if fresh {
		log.Info().Str("transport", dev.Transport).Int("expires", expires).Str("user_agent", dev.UserAgent).Str("gb_version", dev.GBVersion).Msg("device registered")
		if c.upperByID(id) != nil {
			log.Warn().Msg("this device is also one of our upper platforms (a cascade loop): its channels are never shared back to it")
		}
		c.subs.deviceReset(id)
		c.catalogs.query(dev)
	}
}

// reasonMoved is the offline hooks' reason when a device registered again
// from another address.
const reasonMoved = "re-registered from another address"

// verifyRegister checks the digest credentials of device id's REGISTER
// against its secret; the credentials must name id, and the address id is
// registered from is never locked out by failures from elsewhere.
func (c *Cascade) verifyRegister(req *sip.Request, id string, secret security.Secret) error {
	return c.digest.Verify(security.Attempt{Method: string(req.Method), Authorization: endpoint.HeaderValue(req, "Authorization"),
		ID: id, Source: req.Source(), RegisteredIP: c.registeredIP(id), Secret: secret})
}

// movedFrom reports an online device that dev's registration takes to
// another address: another connection, another IP, or with bind_source
// ip-port another port (off counts as ip here).
func (c *Cascade) movedFrom(dev Device) (Device, bool) {
	old, ok := c.registry.Device(dev.ID)
	if !ok || !old.Online {
		return old, false
	}
	return old, !boundSource(c.cfg.Lower.BindSource, old.Transport, old.Remote, dev.Transport, dev.Remote)
}

// challenge is the 401 with a fresh nonce (self-validating: it keeps no
// state), stale=true when the credentials were right for an old nonce.
func (c *Cascade) challenge(stale bool) endpoint.Verdict {
	c.registerResult("challenged")
	v := endpoint.Refuse(sip.StatusUnauthorized, "Unauthorized",
		sip.NewHeader("WWW-Authenticate", c.digest.Challenge(c.cfg.Lower.AuthAlgorithm, stale)))
	v.Routine = true
	return v
}

func (c *Cascade) registerResult(result string) {
	c.metrics.Inc("gbproxy_registrations_total", "result", result)
}

// isOurTarget: the Request-URI names our ID, or only our domain or an address.
func (c *Cascade) isOurTarget(u sip.Uri) bool {
	if u.User != "" {
		return u.User == c.cfg.ID
	}
	return u.Host == c.cfg.Domain || net.ParseIP(u.Host) != nil
}

// deviceSecret returns the digest secret for id and whether id may
// register at all.
func (c *Cascade) deviceSecret(id string) (security.Secret, bool) {
	d, listed := c.allowedEntry(id)
	if !listed && !c.cfg.Lower.AllowUnknown {
		return security.Secret{}, false
	}
	s := d.secret
	if s == (security.Secret{}) {
		s = security.Secret{Password: c.cfg.Lower.Password, HA1: c.cfg.Lower.PasswordHA1}
	}
	return s, true
}

// registeredIP is the IP an online device is registered from ("" if none):
// the lockout never refuses it for failures from elsewhere.
func (c *Cascade) registeredIP(id string) string {
	d, ok := c.registry.Device(id)
	if !ok || !d.Online {
		return ""
	}
	host, _ := endpoint.SplitHostPort(d.Remote)
	return host
}

// requestedExpires reads Expires, then the Contact's expires parameter;
// "Contact: *" means unregister.
func requestedExpires(req *sip.Request) int {
	if h := req.GetHeader("Expires"); h != nil {
		if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil && n >= 0 {
			return n
		}
	}
	if h := req.Contact(); h != nil {
		if h.Address.Wildcard {
			return 0
		}
		if v, ok := h.Params.Get("expires"); ok {
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				return n
			}
		}
	}
	return defaultExpires
}

// handleLowerMessage serves MESSAGEs from devices: keepalives, answers to
// our queries and to routed ones, alarms and other notifications.
func (c *Cascade) handleLowerMessage(req *sip.Request, tx sip.ServerTransaction) {
	c.fromDevice(req, tx, true)
}

// handleLowerNotify serves NOTIFYs of our subscriptions to devices.
func (c *Cascade) handleLowerNotify(req *sip.Request, tx sip.ServerTransaction) {
	c.fromDevice(req, tx, false)
}

// fromDevice answers a device's MESSAGE or NOTIFY, then acts on its body.
// Any request from a registered device is also a sign of life.
func (c *Cascade) fromDevice(req *sip.Request, tx sip.ServerTransaction, isMessage bool) {
	from := req.From()
	if from == nil {
		c.lower.Respond(tx, req, sip.StatusBadRequest, "Bad Request (no From)", nil)
		return
	}
	body := req.Body()
	hdr, err := manscdp.Peek(body)
	if err != nil {
		c.log.Warn().Err(err).Str("from", from.Address.User).Str("remote", req.Source()).Str("method", string(req.Method)).Msg("request with unreadable MANSCDP body answered 400")
		c.lower.Respond(tx, req, sip.StatusBadRequest, "Bad Request (MANSCDP body)", nil)
		return
	}
	deviceID := from.Address.User
	if _, ok := c.registry.Device(deviceID); !ok {
		// In-dialog requests (MediaStatus of a playback) carry the channel
		// ID the dialog was made with; the lower guard bound it to its owner.
		if owner, ok := c.registry.ChannelOwner(deviceID); ok {
			deviceID = owner
		}
	}
	now := c.now()
	known, revived := c.registry.keepalive(deviceID, strings.ToUpper(req.Transport()), req.Source(), now)
	if !known {
		// 403 tells a device we lost (restart, expiry) to register again.
		c.lower.Respond(tx, req, sip.StatusForbidden, "Forbidden (not registered)", nil)
		if hdr.CmdType == "Keepalive" {
			c.metrics.Inc("gbproxy_keepalives_total", "side", "lower", "result", "unregistered")
		}
		return
	}
	if revived {
		c.log.Info().Str("device_id", deviceID).Msg("device back online")
		c.subs.poke()
	}
	c.lower.Respond(tx, req, sip.StatusOK, "OK", nil)
	if isMessage && c.dialogHook != nil && req.To().Params.Has("tag") && c.dialogHook(deviceID, req) {
		return
	}
	switch {
	case hdr.Root == manscdp.RootNotify && hdr.CmdType == "Keepalive":
		c.metrics.Inc("gbproxy_keepalives_total", "side", "lower", "result", "ok")
	case hdr.Root == manscdp.RootResponse:
		if !c.routes.deliver(deviceID, hdr, body, c.sig.forwardIdentity(req, deviceID)) && hdr.CmdType == "Catalog" {
			c.catalogs.receive(deviceID, body)
		}
	case hdr.Root == manscdp.RootNotify && hdr.CmdType == "Catalog":
		c.catalogNotify(deviceID, body)
	case hdr.Root == manscdp.RootNotify && hdr.CmdType == "Alarm":
		c.alarmFromDevice(deviceID, hdr, body, isMessage, c.sig.forwardIdentity(req, deviceID))
	case hdr.Root == manscdp.RootNotify && hdr.CmdType == manscdp.CmdUploadSnapShotFinished:
		c.snapshotFinished(deviceID, hdr, body, c.sig.forwardIdentity(req, deviceID))
	case hdr.Root == manscdp.RootNotify && subscriptionKinds[hdr.CmdType]:
		c.subs.forward(hdr.CmdType, deviceID, hdr.DeviceID, body, c.sig.forwardIdentity(req, deviceID))
	default:
		c.log.Debug().Str("device_id", deviceID).Str("root", hdr.Root).Str("cmd_type", hdr.CmdType).Msg("request from device accepted; nothing routes it")
	}
}

// catalogNotify applies a device's catalog change; subscribed uppers hear of
// it through the registry's events.
func (c *Cascade) catalogNotify(deviceID string, body []byte) {
	var n manscdp.CatalogNotify
	if err := manscdp.Decode(body, &n); err != nil {
		c.log.Warn().Err(err).Str("device_id", deviceID).Msg("unreadable catalog notification ignored")
		return
	}
	refused := c.registry.applyNotify(deviceID, n.DeviceList.Items, c.now())
	c.logRefused(deviceID, refused)
	c.log.Info().Str("device_id", deviceID).Int("items", len(n.DeviceList.Items)).Msg("catalog change from device applied")
}

// logRefused reports channels refused because another device owns them.
func (c *Cascade) logRefused(deviceID string, refused []string) {
	if len(refused) == 0 {
		return
	}
	c.metrics.Add("gbproxy_channels_refused_total", int64(len(refused)))
	c.log.Warn().Str("device_id", deviceID).Int("count", len(refused)).Str("first", refused[0]).
		Msg("channels refused: another online device already reports these IDs, or they are this proxy's own (a cascade loop, or IDs configured twice)")
}

// alarmFromDevice acknowledges an alarm (GB/T 28181 §9.4: 200, then a
// Response with Result OK) and forwards it to every upper that sees the
// alarming channel, and to Alarm subscribers.
func (c *Cascade) alarmFromDevice(deviceID string, hdr manscdp.Header, body []byte, isMessage bool, identity sip.Header) {
	c.metrics.Inc("gbproxy_alarms_total", "direction", "in")
	c.log.Info().Str("device_id", deviceID).Str("channel_id", hdr.DeviceID).Int64("sn", hdr.SN).Msg("alarm from device")
	if isMessage {
		go func() {
			dev, ok := c.registry.Device(deviceID)
			if !ok {
				return
			}
			ack, err := manscdp.Encode(manscdp.RootResponse, &manscdp.ResultResponse{
				Base: manscdp.Base{CmdType: "Alarm", SN: hdr.SN, DeviceID: hdr.DeviceID}, Result: "OK"}, manscdp.CharsetGB2312)
			if err != nil {
				return
			}
			ctx, cancel := context.WithTimeout(c.ctx, requestTimeout)
			defer cancel()
			if res, err := c.sendToDevice(ctx, dev, sip.MESSAGE, ack); err != nil || !res.IsSuccess() {
				c.log.Warn().Err(err).Int("status", statusOf(res)).Str("device_id", deviceID).Msg("device did not take our alarm acknowledgement")
			}
		}()
	}
	for _, u := range c.upperList() {
		v := u.view()
		if !c.registry.sharesID(v, hdr.DeviceID) {
			continue
		}
		if !u.state().Registered {
			u.log.Warn().Str("device_id", deviceID).Str("channel_id", hdr.DeviceID).Msg("alarm not forwarded: not registered to this upper platform (see last_error in /api/v1/platforms)")
			continue
		}
		out, err := manscdp.Rewrite(body, nextSN(), func(id string) (string, bool) { return v.up(id), true }, u.charset())
		if err != nil {
			u.log.Warn().Err(err).Str("device_id", deviceID).Msg("alarm could not be rewritten for the upper platform; dropped")
			continue
		}
		go func() {
			if err := u.message(out, identity); err != nil {
				u.log.Warn().Err(err).Str("device_id", deviceID).Str("channel_id", hdr.DeviceID).Msg("upper platform did not take the alarm")
				return
			}
			c.metrics.Inc("gbproxy_alarms_total", "direction", "out")
		}()
	}
	c.subs.forward("Alarm", deviceID, hdr.DeviceID, body, identity)
}

func callIDOf(m sip.Message) string {
	if h := m.CallID(); h != nil {
		return h.Value()
	}
	return ""
}
