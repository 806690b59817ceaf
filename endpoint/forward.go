package endpoint

import "github.com/emiago/sipgo/sip"

// forwardedHeaders are copied from a request we pass on unchanged in
// meaning (besides its dialog identifiers).
var forwardedHeaders = []string{"Content-Type", "Subject", "Monitor-User-Identity"}

// Forward builds in again toward peer, for a node that passes a request on
// within one logical hop (cluster forwarding): our Via and Contact, in's
// From, To, Call-ID, CSeq, Content-Type, Subject, Monitor-User-Identity
// and body, Max-Forwards one less, Request-URI target.
func (e *Endpoint) Forward(in *sip.Request, target sip.Uri, peer Peer) *sip.Request {
	req := e.NewRequest(in.Method, target, peer, in.From().Address, in.To().Address)
	req.ReplaceHeader(sip.HeaderClone(in.From()))
	req.ReplaceHeader(sip.HeaderClone(in.To()))
	req.ReplaceHeader(sip.HeaderClone(in.CallID()))
	req.ReplaceHeader(sip.HeaderClone(in.CSeq()))
	if mf := in.MaxForwards(); mf != nil {
		hops := sip.MaxForwardsHeader(max(mf.Val(), 1) - 1)
		req.ReplaceHeader(&hops)
	}
	for _, name := range forwardedHeaders {
		if h := in.GetHeader(name); h != nil {
			req.AppendHeader(sip.HeaderClone(h))
		}
	}
	req.SetBody(in.Body())
	return req
}
