package cascade

import (
	"errors"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/configs"
	"github.com/gbproxy/gbproxy/endpoint"
	"github.com/gbproxy/gbproxy/security"
)

// Refusal labels of the signalling checks (Verdict.Label, a fixed set).
const (
	refusedNoteMissing = "note_missing"
	refusedNoteInvalid = "note_invalid"
	refusedNoteDate    = "note_date"
	refusedNoteReplay  = "note_replay"
	refusedHops        = "identity_hops"
	refusedLoop        = "identity_loop"
	refusedIdentity    = "identity_malformed"
)

// signalling applies GB/T 28181's cross-domain signalling security to the
// requests of bound peers: the Monitor-User-Identity hop and loop limits and
// the per-message Note digest, in and out.
type signalling struct {
	notary  *security.Notary
	gateway string
	maxHops int
}

func newSignalling(cfg *configs.Config) *signalling {
	s := &signalling{
		notary:  security.NewNotary(cfg.Security.DateWindow, nil),
		gateway: cfg.GatewayID(),
		maxHops: cfg.Security.MaxHops,
	}
	return s
}

func noteConfig(p configs.SignallingConfig) security.NoteConfig {
	return security.NoteConfig{Algorithm: p.NoteAlgorithm, Seed: p.NoteSeed, Hex: p.NoteEncoding == "hex"}
}

// check runs on a request already bound to its peer; a zero Verdict passes
// (Known is the caller's to set).
func (s *signalling) check(req *sip.Request, peer configs.SignallingConfig) endpoint.Verdict {
	if err := security.CheckIdentity(endpoint.HeaderValue(req, security.MonitorUserIdentityHeader), s.gateway, s.maxHops); err != nil {
		switch {
		case errors.Is(err, security.ErrTooManyHops):
			return refusal(sip.StatusTooManyHops, "Too Many Hops (Monitor-User-Identity)", refusedHops, "")
		case errors.Is(err, security.ErrIdentityLoop):
			return refusal(sip.StatusLoopDetected, "Loop Detected (Monitor-User-Identity)", refusedLoop, "")
		default:
			return refusal(sip.StatusBadRequest, "Bad Request (Monitor-User-Identity)", refusedIdentity, "")
		}
	}
	if !peer.Requires() || req.Method == sip.REGISTER {
		return endpoint.Verdict{}
	}
	switch err := s.notary.Verify(req, noteConfig(peer)); {
	case err == nil:
		return endpoint.Verdict{}
	case errors.Is(err, security.ErrNoteMissing):
		return refusal(sip.StatusForbidden, "Forbidden (Note missing)", refusedNoteMissing, "")
	case errors.Is(err, security.ErrNoteDate):
		return refusal(sip.StatusForbidden, "Forbidden (Date missing or outside the window)", refusedNoteDate, "")
	case errors.Is(err, security.ErrNoteReplay):
		return refusal(sip.StatusForbidden, "Forbidden (Note replayed)", refusedNoteReplay, "")
	default:
		return refusal(sip.StatusForbidden, "Forbidden (Note invalid)", refusedNoteInvalid, "")
	}
}

// outgoing prepares a request just before it leaves toward peer: requests
// we originate carry <gateway>-<gateway> (forwarders set their own value
// first), and a peer with send or require gets Date and Note on every
// request but REGISTER.
func (s *signalling) outgoing(req *sip.Request, peer configs.SignallingConfig) error {
	if req.GetHeader(security.MonitorUserIdentityHeader) == nil {
		req.AppendHeader(sip.NewHeader(security.MonitorUserIdentityHeader, s.gateway+"-"+s.gateway))
	}
	if !peer.Sends() || req.Method == sip.REGISTER {
		return nil
	}
	return s.notary.Sign(req, noteConfig(peer))
}

// forwardIdentity is the Monitor-User-Identity of a request we forward on
// behalf of in, whose originator (the upper's or the device's ID) is used
// when in carries none.
func (s *signalling) forwardIdentity(in *sip.Request, originator string) sip.Header {
	v := security.ForwardIdentity(s.gateway, endpoint.HeaderValue(in, security.MonitorUserIdentityHeader), originator)
	return sip.NewHeader(security.MonitorUserIdentityHeader, v)
}

// toDevice is the lower endpoint's Outgoing hook: To names the device, or
// one of its channels (calls and their in-dialog requests).
func (l *lowerSide) toDevice(req *sip.Request) {
	id := toUser(req)
	if owner, ok := l.registry.ChannelOwner(id); ok {
		id = owner
	}
	if err := l.sig.outgoing(req, l.deviceSignalling(id)); err != nil {
		l.log.Error().Err(err).Str("device_id", id).Str("method", string(req.Method)).Msg("could not sign a request to a device; check its note_algorithm")
	}
}

// toUpper is the upper endpoint's Outgoing hook: To names the platform, or
// another of its IDs (a voice source): then where the request goes does.
func (up *upperSide) toUpper(req *sip.Request) {
	var peer configs.SignallingConfig
	u := up.upperByID(toUser(req))
	if u == nil {
		u = up.upperAt(req.Transport(), req.Destination())
	}
	if u != nil {
		peer = u.cfg().SignallingConfig
	}
	if err := up.sig.outgoing(req, peer); err != nil {
		up.log.Error().Err(err).Str("platform", toUser(req)).Str("method", string(req.Method)).Msg("could not sign a request to an upper platform; check its note_algorithm")
	}
	up.signInternal(req)
}

func toUser(req *sip.Request) string {
	if t := req.To(); t != nil {
		return t.Address.User
	}
	return ""
}
