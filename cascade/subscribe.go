package cascade

import (
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/endpoint"
)

// Subscription kinds (the CmdType of the SUBSCRIBE body).
var subscriptionKinds = map[string]bool{"Catalog": true, "Alarm": true, "MobilePosition": true, "PTZPosition": true}

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

// dialogIDs are the addresses of one subscription dialog, from our side.
type dialogIDs struct {
	local, remote       sip.Uri
	localTag, remoteTag string
	target              sip.Uri // Request-URI of in-dialog requests
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

// Subscriptions lists both sides for the API: uppers subscribed to us, and
// our subscriptions to devices with how many upper subscriptions each serves.
func (c *Cascade) Subscriptions() (upper, lower []SubscriptionState) {
	return c.upper.subs.states(), c.lower.subs.states()
}
