package endpoint

import "github.com/emiago/sipgo/sip"

// Verdict is a Guard's decision about one incoming request. Over UDP it is
// made before sipgo creates a transaction, so a refusal is answered
// statelessly and leaves no state behind; over TCP/TLS before any handler.
type Verdict struct {
	// Known: the request comes from an authenticated peer bound to this
	// source (a registered device on its address or connection, a
	// configured upper platform). Other sources are rate limited per IP.
	Known bool
	// Code, when not 0, refuses the request with this final status.
	Code    int
	Reason  string
	Headers []sip.Header
	// Label names the refusal in metrics, from a fixed set.
	Label string
}

// Guard decides which requests reach the handlers. Admit runs on the read
// path: it must be quick and must not block.
type Guard interface {
	Admit(req *sip.Request) Verdict
}

// Refuse is a Verdict refusing with code.
func Refuse(code int, reason string, headers ...sip.Header) Verdict {
	return Verdict{Code: code, Reason: reason, Headers: headers}
}

// Claim marks the TCP/TLS connection from remote as authenticated (a
// REGISTER succeeded on it): it is no longer closed for idling.
func (e *Endpoint) Claim(remote string) {}
