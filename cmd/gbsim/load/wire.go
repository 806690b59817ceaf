package load

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// endpoint is one UDP socket shared by many devices; responses are routed to
// the waiting registration by Call-ID.
type endpoint struct {
	conn   *net.UDPConn
	server *net.UDPAddr
	local  string // ip:port put in Via and Contact
	r      *runner

	mu       sync.Mutex
	waiting  map[string]chan response
	answered map[string]bool // Call-IDs of Catalog queries already answered
}

func listen(ip string, server *net.UDPAddr, r *runner) (*endpoint, error) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		return nil, fmt.Errorf("load: open UDP socket on %s: %w (check LocalIP)", ip, err)
	}
	return &endpoint{conn: conn, server: server, local: conn.LocalAddr().String(), r: r,
		waiting: map[string]chan response{}, answered: map[string]bool{}}, nil
}

// readLoop runs until the socket is closed.
func (ep *endpoint) readLoop() {
	buf := make([]byte, 65536)
	for {
		n, from, err := ep.conn.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ICMP errors surface here on Linux; the retransmit timer covers them
		}
		msg, err := parse(buf[:n])
		if err != nil {
			continue
		}
		if msg.status != 0 {
			ep.deliver(msg)
		} else {
			ep.answerRequest(msg, from)
		}
	}
}

func (ep *endpoint) deliver(msg message) {
	ep.mu.Lock()
	ch := ep.waiting[msg.callID]
	ep.mu.Unlock()
	if ch == nil {
		return // e.g. the 200 to our Catalog Response
	}
	res := response{status: msg.status, reason: msg.reason, cseq: msg.cseq}
	switch msg.status {
	case 401:
		res.realm, res.nonce, res.opaque = digestParams(msg.header("WWW-Authenticate"))
	case 302:
		res.contact = msg.header("Contact")
	}
	select {
	case ch <- res:
	default: // a burst of retransmitted answers; the waiter has enough
	}
}

// answerRequest says 200 OK to any request; a Catalog query is also answered
// with a one-channel Catalog Response, once per query, re-sent until the
// registrar acknowledges it.
func (ep *endpoint) answerRequest(msg message, from *net.UDPAddr) {
	ep.conn.WriteToUDP(appendReply(nil, msg.raw, "200 OK", ""), from)
	if msg.method != "MESSAGE" || !bytes.Contains(msg.body, []byte("<CmdType>Catalog</CmdType>")) ||
		!bytes.Contains(msg.body, []byte("<Query>")) {
		return
	}
	ep.mu.Lock()
	seen := ep.answered[msg.callID]
	ep.answered[msg.callID] = true
	ep.mu.Unlock()
	if seen {
		return
	}
	ep.r.lastQuery.Store(time.Now().UnixNano())
	deviceID, sn := xmlText(msg.body, "DeviceID"), xmlText(msg.body, "SN")
	if len(deviceID) != 20 {
		return
	}
	ep.r.catalogPending.Add(1)
	go func() {
		defer ep.r.catalogPending.Add(-1)
		// To the server that asked: after a 302 that is not the configured one.
		res, err := ep.r.transactTo(ep.r.ctx, ep, from, catalogCallID(deviceID, sn), 1, catalogResponse(ep.r.cfg, ep.local, deviceID, sn))
		if err == nil && res.status == 200 {
			ep.r.catalogs.Add(1)
		}
	}()
}

func catalogCallID(deviceID, sn string) string { return "cat-" + deviceID + "-" + sn }

// response is what a registration needs from a final answer.
type response struct {
	status, cseq         int
	reason               string
	realm, nonce, opaque string
	contact              string // of a 302
}

// message is a parsed SIP datagram: a response when status is non-zero.
type message struct {
	status  int
	reason  string
	method  string
	callID  string
	cseq    int
	headers []string // raw "Name: value" lines
	body    []byte
	raw     []byte // the whole datagram, to echo headers in a reply
}

// compactNames maps RFC 3261 compact header names to full ones.
var compactNames = map[string]string{"i": "call-id", "v": "via", "f": "from", "t": "to", "l": "content-length", "c": "content-type"}

// parse is scan plus every header as a string, for the paths that are not
// hot (registration, digest challenges, Catalog queries).
func parse(b []byte) (message, error) {
	h, err := scan(b)
	if err != nil {
		return message{}, err
	}
	return message{
		status: h.status, reason: string(h.reason), method: string(h.method),
		callID: string(h.callID), cseq: h.cseq,
		headers: strings.Split(string(h.headers), "\r\n"),
		body:    h.body, raw: b,
	}, nil
}

// head is what scan finds in a datagram; its slices alias the datagram.
type head struct {
	status  int    // non-zero for a response
	reason  []byte // of a response
	method  []byte // of a request
	callID  []byte
	cseq    int
	headers []byte // header lines after the start line
	body    []byte
}

var (
	crlf     = []byte("\r\n")
	crlfcrlf = []byte("\r\n\r\n")
	sipMajor = []byte("SIP/2.0")
)

// scan reads the start line, Call-ID and CSeq of a SIP datagram without
// allocating (errors aside): the load generator's hot path.
func scan(b []byte) (head, error) {
	hdrs, body, ok := bytes.Cut(b, crlfcrlf)
	if !ok {
		return head{}, errors.New("no end of headers")
	}
	first, rest, _ := bytes.Cut(hdrs, crlf)
	h := head{headers: rest, body: body}
	word, tail, ok1 := bytes.Cut(first, []byte(" "))
	second, third, ok2 := bytes.Cut(tail, []byte(" "))
	if !ok1 || !ok2 || len(third) == 0 {
		return head{}, fmt.Errorf("bad start line %q", first)
	}
	if bytes.Equal(word, sipMajor) {
		status, ok := atoi(second)
		if !ok || status < 100 || status > 699 {
			return head{}, fmt.Errorf("bad status line %q", first)
		}
		h.status, h.reason = status, third
	} else {
		h.method = word
	}
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, crlf)
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		name, value = bytes.TrimSpace(name), bytes.TrimSpace(value)
		switch {
		case isHeader(name, "call-id", "i"):
			h.callID = value
		case isHeader(name, "cseq", "cseq"):
			number, _, _ := bytes.Cut(value, []byte(" "))
			h.cseq, _ = atoi(number)
		}
	}
	if len(h.callID) == 0 || h.cseq == 0 {
		return head{}, errors.New("missing Call-ID or CSeq")
	}
	return h, nil
}

func isHeader(name []byte, full, compact string) bool {
	return bytes.EqualFold(name, []byte(full)) || bytes.EqualFold(name, []byte(compact))
}

// atoi parses a non-negative decimal of at most 18 digits.
func atoi(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// header returns the first value of the named header.
func (m message) header(name string) string {
	for _, line := range m.headers {
		if n, v, ok := headerLine(line); ok && n == strings.ToLower(name) {
			return v
		}
	}
	return ""
}

func headerLine(line string) (name, value string, ok bool) {
	n, v, ok := strings.Cut(line, ":")
	if !ok {
		return "", "", false
	}
	n = strings.ToLower(strings.TrimSpace(n))
	if full, isCompact := compactNames[n]; isCompact {
		n = full
	}
	return n, strings.TrimSpace(v), true
}

// digestParams reads realm, nonce and opaque from a Digest challenge.
func digestParams(challenge string) (realm, nonce, opaque string) {
	rest, ok := strings.CutPrefix(challenge, "Digest ")
	if !ok {
		return "", "", ""
	}
	for rest != "" {
		var name, value string
		name, rest, _ = strings.Cut(rest, "=")
		name = strings.ToLower(strings.TrimSpace(name))
		rest = strings.TrimLeft(rest, " ")
		if strings.HasPrefix(rest, `"`) {
			value, rest, _ = strings.Cut(rest[1:], `"`)
			_, rest, _ = strings.Cut(rest, ",")
		} else {
			value, rest, _ = strings.Cut(rest, ",")
			value = strings.TrimSpace(value)
		}
		switch name {
		case "realm":
			realm = value
		case "nonce":
			nonce = value
		case "opaque":
			opaque = value
		}
	}
	return realm, nonce, opaque
}

// xmlText returns the text of the first <tag> element, or "".
func xmlText(body []byte, tag string) string {
	return string(xmlValue(body, []byte("<"+tag+">"), []byte("</"+tag+">")))
}

// xmlValue returns the trimmed text between the first open and the close
// after it, or nil; a plain search, as MANSCDP bodies are flat and small.
func xmlValue(body, open, close []byte) []byte {
	_, rest, ok := bytes.Cut(body, open)
	if !ok {
		return nil
	}
	text, _, ok := bytes.Cut(rest, close)
	if !ok {
		return nil
	}
	return bytes.TrimSpace(text)
}

func registerRequest(cfg Config, requestURI, local string, d device, cseq int, authorization string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "REGISTER %s SIP/2.0\r\n", requestURI)
	fmt.Fprintf(&b, "Via: SIP/2.0/UDP %s;rport;branch=z9hG4bK%s-%d\r\n", local, d.callID, cseq)
	fmt.Fprintf(&b, "From: <sip:%s@%s>;tag=%s\r\n", d.id, cfg.Domain, d.tag)
	fmt.Fprintf(&b, "To: <sip:%s@%s>\r\n", d.id, cfg.Domain)
	fmt.Fprintf(&b, "Call-ID: %s\r\nCSeq: %d REGISTER\r\n", d.callID, cseq)
	fmt.Fprintf(&b, "Contact: <sip:%s@%s>\r\n", d.id, local)
	fmt.Fprintf(&b, "Max-Forwards: 70\r\nUser-Agent: %s\r\nExpires: 3600\r\n", userAgent)
	if authorization != "" {
		fmt.Fprintf(&b, "Authorization: %s\r\n", authorization)
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return b.Bytes()
}

// appendReply appends to dst a response to the request datagram req that
// echoes Via, From, To (tagged if it was not), Call-ID and CSeq; extra is
// more header lines, each ending in CRLF.
func appendReply(dst, req []byte, status, extra string) []byte {
	return appendReplyBody(dst, req, status, extra, nil)
}

// appendReplyBody is appendReply with a body; extra names its Content-Type.
func appendReplyBody(dst, req []byte, status, extra string, body []byte) []byte {
	hdrs, _, _ := bytes.Cut(req, crlfcrlf)
	_, rest, _ := bytes.Cut(hdrs, crlf)
	dst = append(append(append(dst, "SIP/2.0 "...), status...), crlf...)
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, crlf)
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		name = bytes.TrimSpace(name)
		switch {
		case isHeader(name, "via", "v"), isHeader(name, "from", "f"), isHeader(name, "call-id", "i"), isHeader(name, "cseq", "cseq"):
			dst = append(append(dst, line...), crlf...)
		case isHeader(name, "to", "t"):
			dst = append(dst, line...)
			if !bytes.Contains(value, []byte(";tag=")) {
				dst = append(dst, ";tag=gbsimload"...)
			}
			dst = append(dst, crlf...)
		}
	}
	dst = append(dst, extra...)
	dst = append(dst, "User-Agent: "+userAgent+"\r\nContent-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(body)), 10)
	return append(append(dst, crlfcrlf...), body...)
}

// catalogResponse is a Catalog Response with SumNum 1 and one camera channel,
// whose ID is the device's with type code 131 (camera).
func catalogResponse(cfg Config, local, deviceID, sn string) []byte {
	channelID := deviceID[:10] + "131" + deviceID[13:]
	return catalogResponseItems(cfg, local, deviceID, sn, 1, []string{channelID}, catalogCallID(deviceID, sn))
}

// catalogResponseItems is one MESSAGE of a Catalog Response that may span
// several: sumNum channels in all, channelIDs in this one, sent in its own
// transaction callID.
func catalogResponseItems(cfg Config, local, deviceID, sn string, sumNum int, channelIDs []string, callID string) []byte {
	var body bytes.Buffer
	fmt.Fprintf(&body, `<?xml version="1.0" encoding="GB2312"?>`+"\r\n"+
		"<Response>\r\n<CmdType>Catalog</CmdType>\r\n<SN>%s</SN>\r\n<DeviceID>%s</DeviceID>\r\n<SumNum>%d</SumNum>\r\n"+
		"<DeviceList Num=\"%d\">\r\n", sn, deviceID, sumNum, len(channelIDs))
	for _, channelID := range channelIDs {
		fmt.Fprintf(&body, "<Item>\r\n<DeviceID>%s</DeviceID>\r\n<Name>Camera %s</Name>\r\n<Manufacturer>gbsim</Manufacturer>\r\n"+
			"<Model>load</Model>\r\n<Owner>0</Owner>\r\n<CivilCode>%s</CivilCode>\r\n<Address>lab</Address>\r\n<Parental>0</Parental>\r\n"+
			"<ParentID>%s</ParentID>\r\n<SafetyWay>0</SafetyWay>\r\n<RegisterWay>1</RegisterWay>\r\n<Secrecy>0</Secrecy>\r\n<Status>ON</Status>\r\n"+
			"</Item>\r\n", channelID, channelID[15:], deviceID[:6], deviceID)
	}
	body.WriteString("</DeviceList>\r\n</Response>\r\n")
	var b bytes.Buffer
	fmt.Fprintf(&b, "MESSAGE sip:%s@%s SIP/2.0\r\n", cfg.ServerID, cfg.Domain)
	fmt.Fprintf(&b, "Via: SIP/2.0/UDP %s;rport;branch=z9hG4bK%s\r\n", local, callID)
	from, to := "<sip:"+deviceID+"@"+cfg.Domain+">;tag=cat"+sn, "<sip:"+cfg.ServerID+"@"+cfg.Domain+">"
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\n", from, to)
	fmt.Fprintf(&b, "Call-ID: %s\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n", callID)
	if cfg.note != nil {
		b.WriteString(noteLines(cfg.note, from, to, callID, body.Bytes()))
	}
	fmt.Fprintf(&b, "Content-Type: Application/MANSCDP+xml\r\nUser-Agent: %s\r\nContent-Length: %d\r\n\r\n", userAgent, body.Len())
	b.Write(body.Bytes())
	return b.Bytes()
}
