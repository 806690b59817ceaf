package endpoint

import (
	"strconv"

	"github.com/emiago/sipgo/sip"
)

// Metric label values never come from the wire as they are: every distinct
// value is a series kept until restart, so a sender could otherwise create
// them without bound.

// methodLabel is m when gbproxy knows the method, else "other".
func methodLabel(m sip.RequestMethod) string {
	switch m {
	case sip.REGISTER, sip.INVITE, sip.ACK, sip.BYE, sip.CANCEL, sip.OPTIONS, sip.MESSAGE,
		sip.NOTIFY, sip.SUBSCRIBE, sip.INFO, sip.UPDATE, sip.PRACK, sip.REFER:
		return string(m)
	}
	return "other"
}

// statusLabel is the status code when it is a valid SIP status, else "other".
func statusLabel(code int) string {
	if code < 100 || code > 699 {
		return "other"
	}
	return strconv.Itoa(code)
}
