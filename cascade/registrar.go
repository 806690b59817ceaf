package cascade

import (
	"errors"
	"net"
	"regexp"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
	"github.com/gbproxy/gbproxy/security"
)

// Device IDs are 20 digits in GB/T 28181-2016; 18-digit IDs still exist in
// older devices (the seed's Hikvision sample), so they are accepted too.
var deviceIDPattern = regexp.MustCompile(`^[0-9]{18,20}$`)

const defaultExpires = 3600

// handleRegister is the downward registrar (GB/T 28181 §9.1).
func (c *Cascade) handleRegister(req *sip.Request, tx sip.ServerTransaction) {
	ep := c.lower
	from := req.From()
	if from == nil || !deviceIDPattern.MatchString(from.Address.User) {
		c.registerResult("bad_id")
		ep.Respond(tx, req, sip.StatusBadRequest, "Bad Request (From must carry an 18-20 digit device ID)", nil)
		return
	}
	id := from.Address.User
	log := c.log.With().Str("device_id", id).Str("call_id", callIDOf(req)).Str("remote", req.Source()).Logger()

	if !c.isOurTarget(req.Recipient) {
		c.registerResult("wrong_target")
		log.Warn().Str("request_uri", req.Recipient.String()).Msg("REGISTER for another SIP server refused; set the device's SIP server ID to " + c.cfg.ID)
		ep.Respond(tx, req, sip.StatusForbidden, "Forbidden (not this SIP server)", nil)
		return
	}
	password, known := c.devicePassword(id)
	if !known {
		c.registerResult("unknown_device")
		log.Warn().Msg("REGISTER from a device not in lower.devices refused (allow_unknown is false)")
		ep.Respond(tx, req, sip.StatusForbidden, "Forbidden (unknown device)", nil)
		return
	}
	auth := req.GetHeader("Authorization")
	if auth == nil {
		c.challenge(tx, req, false)
		return
	}
	_, err := c.digest.Verify(string(req.Method), auth.Value(), req.Source(), func(string) (string, bool) { return password, true })
	switch {
	case errors.Is(err, security.ErrStaleNonce):
		c.challenge(tx, req, true)
		return
	case errors.Is(err, security.ErrMalformed):
		c.registerResult("malformed_auth")
		log.Warn().Err(err).Msg("REGISTER with unreadable Authorization header")
		ep.Respond(tx, req, sip.StatusBadRequest, "Bad Request (malformed Authorization)", nil)
		return
	case errors.Is(err, security.ErrLockedOut):
		c.registerResult("locked_out")
		log.Warn().Msg("REGISTER refused: too many failed attempts from this address; it is locked out for a while")
		ep.Respond(tx, req, sip.StatusForbidden, "Forbidden (locked out)", nil)
		return
	case err != nil:
		c.registerResult("bad_credentials")
		log.Warn().Msg("REGISTER with wrong password refused; check the device's SIP password against lower.password / lower.devices")
		ep.Respond(tx, req, sip.StatusForbidden, "Forbidden (wrong credentials)", nil)
		return
	}

	expires := requestedExpires(req)
	now := c.now()
	if expires == 0 {
		c.registry.unregister(id, now)
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
	fresh := c.registry.register(dev)
	c.registerResult("ok")
	ep.Respond(tx, req, sip.StatusOK, "OK", nil,
		sip.NewHeader("Date", gbDate(now)),
		sip.NewHeader("Expires", strconv.Itoa(expires)))
	if fresh {
		log.Info().Str("transport", dev.Transport).Int("expires", expires).Str("user_agent", dev.UserAgent).Msg("device registered")
		c.catalogs.query(dev)
	}
}

func (c *Cascade) challenge(tx sip.ServerTransaction, req *sip.Request, stale bool) {
	c.registerResult("challenged")
	c.lower.Respond(tx, req, sip.StatusUnauthorized, "Unauthorized", nil,
		sip.NewHeader("WWW-Authenticate", c.digest.Challenge(c.cfg.Lower.AuthAlgorithm, stale)))
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

// devicePassword returns the digest password for id and whether id may
// register at all.
func (c *Cascade) devicePassword(id string) (string, bool) {
	p, listed := c.passwords[id]
	if !listed && !c.cfg.Lower.AllowUnknown {
		return "", false
	}
	if p == "" {
		p = c.cfg.Lower.Password
	}
	return p, true
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

// handleLowerMessage serves MESSAGEs from devices: keepalives and answers to
// our queries.
func (c *Cascade) handleLowerMessage(req *sip.Request, tx sip.ServerTransaction) {
	from := req.From()
	if from == nil {
		c.lower.Respond(tx, req, sip.StatusBadRequest, "Bad Request (no From)", nil)
		return
	}
	body := req.Body()
	hdr, err := manscdp.Peek(body)
	if err != nil {
		c.log.Warn().Err(err).Str("from", from.Address.User).Str("remote", req.Source()).Msg("MESSAGE with unreadable MANSCDP body answered 400")
		c.lower.Respond(tx, req, sip.StatusBadRequest, "Bad Request (MANSCDP body)", nil)
		return
	}
	deviceID := from.Address.User
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
	}
	switch {
	case hdr.Root == "Notify" && hdr.CmdType == "Keepalive":
		c.metrics.Inc("gbproxy_keepalives_total", "side", "lower", "result", "ok")
		c.lower.Respond(tx, req, sip.StatusOK, "OK", nil)
	case hdr.Root == "Response" && hdr.CmdType == "Catalog":
		c.lower.Respond(tx, req, sip.StatusOK, "OK", nil)
		c.catalogs.receive(deviceID, body)
	default:
		c.lower.Respond(tx, req, sip.StatusOK, "OK", nil)
		c.log.Debug().Str("device_id", deviceID).Str("root", hdr.Root).Str("cmd_type", hdr.CmdType).Msg("MESSAGE from device accepted; nothing routes it yet")
	}
}

func callIDOf(m sip.Message) string {
	if h := m.CallID(); h != nil {
		return h.Value()
	}
	return ""
}
