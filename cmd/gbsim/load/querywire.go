package load

import (
	"bytes"
	"strconv"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/gbnote"
)

// messageTemplate is what stays the same across the MANSCDP MESSAGEs one
// side sends, so building one is a handful of appends and no formatting.
type messageTemplate struct {
	requestURI string // sip:ID@domain
	from, to   string // <sip:ID@domain>
	local      string // ip:port for Via
	// callPrefix starts every Call-ID and branch; the message's number
	// follows it, so a response names its request without a lookup table.
	callPrefix []byte
	note       *gbnote.Signer // signs each message with Date and Note when not nil
}

func newTemplate(fromID, fromDomain, toID, toDomain, local, callPrefix string) messageTemplate {
	return messageTemplate{
		requestURI: "sip:" + toID + "@" + toDomain,
		from:       "<sip:" + fromID + "@" + fromDomain + ">",
		to:         "<sip:" + toID + "@" + toDomain + ">",
		local:      local,
		callPrefix: []byte(callPrefix),
	}
}

// appendMessage appends MESSAGE number n carrying a MANSCDP body.
func (t *messageTemplate) appendMessage(dst []byte, n int64, body []byte) []byte {
	dst = append(dst, "MESSAGE "...)
	dst = append(dst, t.requestURI...)
	dst = append(dst, " SIP/2.0\r\nVia: SIP/2.0/UDP "...)
	dst = append(dst, t.local...)
	dst = append(dst, ";rport;branch=z9hG4bK"...)
	dst = strconv.AppendInt(append(dst, t.callPrefix...), n, 10)
	dst = append(dst, "\r\nFrom: "...)
	from := len(dst)
	dst = append(dst, t.from...)
	dst = strconv.AppendInt(append(dst, ";tag=f"...), n, 10)
	fromEnd := len(dst)
	dst = append(dst, "\r\nTo: "...)
	to := len(dst)
	dst = append(dst, t.to...)
	toEnd := len(dst)
	dst = append(dst, "\r\nCall-ID: "...)
	callID := len(dst)
	dst = strconv.AppendInt(append(dst, t.callPrefix...), n, 10)
	if t.note != nil {
		dst = appendNoteHeaders(dst, t.note, dst[from:fromEnd], dst[to:toEnd], dst[callID:], body)
	}
	dst = append(dst, "\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: Application/MANSCDP+xml\r\nUser-Agent: "+userAgent+"\r\nContent-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(body)), 10)
	dst = append(dst, "\r\n\r\n"...)
	return append(dst, body...)
}

// number returns n of a Call-ID made by appendMessage, false for others.
func (t *messageTemplate) number(callID []byte) (int64, bool) {
	rest, ok := bytes.CutPrefix(callID, t.callPrefix)
	if !ok {
		return 0, false
	}
	n, ok := atoi(rest)
	return int64(n), ok
}

const xmlDeclaration = `<?xml version="1.0" encoding="GB2312"?>` + "\r\n"

func appendDeviceStatusQuery(dst []byte, sn int64, deviceID string) []byte {
	dst = append(dst, xmlDeclaration+"<Query>\r\n<CmdType>DeviceStatus</CmdType>\r\n<SN>"...)
	dst = strconv.AppendInt(dst, sn, 10)
	dst = append(dst, "</SN>\r\n<DeviceID>"...)
	dst = append(dst, deviceID...)
	return append(dst, "</DeviceID>\r\n</Query>\r\n"...)
}

// appendDeviceStatusResponse answers a query with its own SN and DeviceID.
func appendDeviceStatusResponse(dst, sn, deviceID []byte) []byte {
	dst = append(dst, xmlDeclaration+"<Response>\r\n<CmdType>DeviceStatus</CmdType>\r\n<SN>"...)
	dst = append(dst, sn...)
	dst = append(dst, "</SN>\r\n<DeviceID>"...)
	dst = append(dst, deviceID...)
	return append(dst, "</DeviceID>\r\n<Result>OK</Result>\r\n<Online>ONLINE</Online>\r\n<Status>OK</Status>\r\n</Response>\r\n"...)
}

var (
	methodMESSAGE   = []byte("MESSAGE")
	methodREGISTER  = []byte("REGISTER")
	rootQuery       = []byte("Query")
	rootResponse    = []byte("Response")
	cmdDeviceStatus = []byte("DeviceStatus")
	openCmdType     = []byte("<CmdType>")
	closeCmdType    = []byte("</CmdType>")
	openSN          = []byte("<SN>")
	closeSN         = []byte("</SN>")
	openDeviceID    = []byte("<DeviceID>")
	closeDeviceID   = []byte("</DeviceID>")
)

// manscdpHead is what the hot path reads of a MANSCDP body; the slices
// alias the body.
type manscdpHead struct {
	root, cmdType, sn, deviceID []byte
}

func (m manscdpHead) is(root, cmdType []byte) bool {
	return bytes.Equal(m.root, root) && bytes.Equal(m.cmdType, cmdType)
}

// peekMANSCDP finds the root element and the header fields by plain
// search: MANSCDP bodies are flat, and the first SN and DeviceID are the
// header's.
func peekMANSCDP(body []byte) manscdpHead {
	rest := body
	if _, afterDeclaration, ok := bytes.Cut(rest, []byte("?>")); ok {
		rest = afterDeclaration
	}
	var m manscdpHead
	if start := bytes.IndexByte(rest, '<'); start >= 0 {
		name := rest[start+1:]
		if end := bytes.IndexAny(name, "> \t\r\n/"); end >= 0 {
			m.root = name[:end]
		}
	}
	m.cmdType = xmlValue(rest, openCmdType, closeCmdType)
	m.sn = xmlValue(rest, openSN, closeSN)
	m.deviceID = xmlValue(rest, openDeviceID, closeDeviceID)
	return m
}

// RFC 3261 timer E for a request over UDP.
const (
	timerT1 = 500 * time.Millisecond
	timerT2 = 4 * time.Second
)

// resend schedules re-sending a request after T1, 2·T1, 4·T1, … capped at T2.
type resend struct {
	sends int
	next  time.Time
}

func (r *resend) sent(now time.Time) {
	r.sends, r.next = 1, now.Add(timerT1)
}

// due reports whether the request is to be sent again now, and if so
// counts the send and schedules the next one.
func (r *resend) due(now time.Time) bool {
	if now.Before(r.next) {
		return false
	}
	interval := timerT2
	if r.sends < 3 {
		interval = timerT1 << r.sends
	}
	r.sends++
	r.next = now.Add(interval)
	return true
}
