package cascade

import (
	"errors"
	"net"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/configs"
	"github.com/gbproxy/gbproxy/endpoint"
	"github.com/gbproxy/gbproxy/security"
)

// Device IDs are 20 digits in GB/T 28181-2016; 18-digit IDs still exist in
// older devices (the seed's Hikvision sample), so they are accepted too.

const defaultExpires = 3600

// screenRegister authenticates a REGISTER in the lower guard, before any
// transaction exists: every refusal (bad ID, another server, unknown
// device, bad or stale credentials, lockout), the digest challenge and, in
// a cluster with redirect on, the 302 to the node that should hold the
// device are answered statelessly over UDP, so a REGISTER flood keeps no
// state. Only an authenticated REGISTER served here reaches handleRegister.
func (l *lowerSide) screenRegister(req *sip.Request) endpoint.Verdict {
	from := req.From()
	if from == nil || !configs.ValidDeviceID(from.Address.User) {
		l.registerResult("bad_id")
		return refusal(sip.StatusBadRequest, "Bad Request (From must carry an 18-20 digit device ID)", "register_bad_id",
			"REGISTER without an 18-20 digit device ID in From refused")
	}
	id := from.Address.User
	if !l.isOurTarget(req.Recipient) {
		l.registerResult("wrong_target")
		return refusal(sip.StatusForbidden, "Forbidden (not this SIP server)", "register_wrong_target",
			"REGISTER for another SIP server refused; set the device's SIP server ID to "+l.cfg.ID)
	}
	secret, known := l.deviceSecret(id)
	if !known {
		l.registerResult("unknown_device")
		return refusal(sip.StatusForbidden, "Forbidden (unknown device)", "register_unknown_device",
			"REGISTER from a device not in lower.devices refused (allow_unknown is false)")
	}
	if req.GetHeader("Authorization") == nil {
		return l.challenge(false)
	}
	err := l.verifyRegister(req, id, secret)
	switch {
	case err == nil:
		if requestedExpires(req) > 0 {
			if n, away := l.redirectTo(req, id, l.now()); away {
				return l.redirectVerdict(req, id, n)
			}
		}
		return endpoint.Verdict{}
	case errors.Is(err, security.ErrStaleNonce):
		return l.challenge(true)
	case errors.Is(err, security.ErrMalformed):
		l.registerResult("malformed_auth")
		return refusal(sip.StatusBadRequest, "Bad Request (malformed Authorization)", "register_malformed_auth",
			"REGISTER with an unreadable Authorization header refused")
	case errors.Is(err, security.ErrLockedOut):
		l.registerResult("locked_out")
		return refusal(sip.StatusForbidden, "Forbidden (locked out)", "register_locked_out",
			"REGISTER refused: too many failed attempts from this address or for this ID; locked out for security.lockout.lock_for")
	default:
		l.registerResult("bad_credentials")
		return refusal(sip.StatusForbidden, "Forbidden (wrong credentials)", "register_bad_credentials",
			"REGISTER with wrong credentials refused; check the device's SIP password against lower.password / lower.devices")
	}
}

// handleRegister is the downward registrar (GB/T 28181 §9.1) for a
// REGISTER that screenRegister authenticated.
func (l *lowerSide) handleRegister(req *sip.Request, tx sip.ServerTransaction) {
	ep := l.ep
	id := fromUser(req)
	log := l.log.With().Str("device_id", id).Str("call_id", callIDOf(req)).Str("remote", req.Source()).Logger()

	expires := requestedExpires(req)
	now := l.now()
	if expires == 0 {
		l.registry.unregister(id, now)
		l.deviceOffline(id, "unregistered")
		l.registerResult("unregistered")
		log.Info().Msg("device unregistered")
		ep.Respond(tx, req, sip.StatusOK, "OK", nil, sip.NewHeader("Date", gbDate(now)), sip.NewHeader("Expires", "0"))
		return
	}
	if expires < l.cfg.Lower.RegisterExpiresMin {
		l.registerResult("too_brief")
		ep.Respond(tx, req, sip.StatusIntervalToBrief, "Interval Too Brief", nil,
			sip.NewHeader("Min-Expires", strconv.Itoa(l.cfg.Lower.RegisterExpiresMin)))
		return
	}
	expires = min(expires, l.cfg.Lower.RegisterExpiresMax)

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
	old, moved := l.movedFrom(dev)
	if moved {
		// The old address's calls end there before the device's address
		// changes; its other state (channels, subscriptions) carries over.
		log.Warn().Str("from", strings.ToLower(old.Transport)+":"+old.Remote).Str("to", strings.ToLower(dev.Transport)+":"+dev.Remote).
			Msg("device re-registered from another address; its calls at the old address end")
		for _, f := range l.offlineHooks {
			f(id, reasonMoved)
		}
	}
	fresh := l.registry.register(dev) || moved
	if moved && endpoint.ConnOriented(old.Transport) {
		l.ep.CloseConn(old.Remote)
	}
	if endpoint.ConnOriented(dev.Transport) {
		l.ep.Claim(dev.Remote)
	}
	l.registerResult("ok")
	l.clusterOnline(id, fresh)
	ep.Respond(tx, req, sip.StatusOK, "OK", nil,
		sip.NewHeader("Date", gbDate(now)),
		sip.NewHeader("Expires", strconv.Itoa(expires)))
	if fresh {
		log.Info().Str("transport", dev.Transport).Int("expires", expires).Str("user_agent", dev.UserAgent).Str("gb_version", dev.GBVersion).Msg("device registered")
		if l.feed.isPlatform(id) {
			log.Warn().Msg("this device is also one of our upper platforms (a cascade loop): its channels are never shared back to it")
		}
		l.subs.deviceReset(id)
		l.catalogs.query(dev)
	}
}

// reasonMoved is the offline hooks' reason when a device registered again
// from another address.
const reasonMoved = "re-registered from another address"

// verifyRegister checks the digest credentials of device id's REGISTER
// against its secret; the credentials must name id, and the address id is
// registered from is never locked out by failures from elsewhere.
func (l *lowerSide) verifyRegister(req *sip.Request, id string, secret security.Secret) error {
	return l.digest.Verify(security.Attempt{Method: string(req.Method), Authorization: endpoint.HeaderValue(req, "Authorization"),
		ID: id, Source: req.Source(), RegisteredIP: l.registeredIP(id), Secret: secret})
}

// movedFrom reports an online device that dev's registration takes to
// another address: another connection, another IP, or with bind_source
// ip-port another port (off counts as ip here).
func (l *lowerSide) movedFrom(dev Device) (Device, bool) {
	old, ok := l.registry.Device(dev.ID)
	if !ok || !old.Online {
		return old, false
	}
	return old, !boundSource(l.cfg.Lower.BindSource, old.Transport, old.Remote, dev.Transport, dev.Remote)
}

// challenge is the 401 with a fresh nonce (self-validating: it keeps no
// state), stale=true when the credentials were right for an old nonce.
func (l *lowerSide) challenge(stale bool) endpoint.Verdict {
	l.registerResult("challenged")
	v := endpoint.Refuse(sip.StatusUnauthorized, "Unauthorized",
		sip.NewHeader("WWW-Authenticate", l.digest.Challenge(l.cfg.Lower.AuthAlgorithm, stale)))
	v.Routine = true
	return v
}

func (l *lowerSide) registerResult(result string) {
	l.metrics.Inc("gbproxy_registrations_total", "result", result)
}

// isOurTarget: the Request-URI names our ID, or only our domain or an address.
func (l *lowerSide) isOurTarget(u sip.Uri) bool {
	if u.User != "" {
		return u.User == l.cfg.ID
	}
	return u.Host == l.cfg.Domain || net.ParseIP(u.Host) != nil
}

// deviceSecret returns the digest secret for id and whether id may
// register at all.
func (l *lowerSide) deviceSecret(id string) (security.Secret, bool) {
	d, listed := l.allowedEntry(id)
	if !listed && !l.cfg.Lower.AllowUnknown {
		return security.Secret{}, false
	}
	s := d.secret
	if s == (security.Secret{}) {
		s = security.Secret{Password: l.cfg.Lower.Password, HA1: l.cfg.Lower.PasswordHA1}
	}
	return s, true
}

// registeredIP is the IP an online device is registered from ("" if none):
// the lockout never refuses it for failures from elsewhere.
func (l *lowerSide) registeredIP(id string) string {
	d, ok := l.registry.Device(id)
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

func callIDOf(m sip.Message) string {
	if h := m.CallID(); h != nil {
		return h.Value()
	}
	return ""
}
