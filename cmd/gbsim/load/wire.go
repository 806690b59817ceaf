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
	if msg.status == 401 {
		res.realm, res.nonce, res.opaque = digestParams(msg.header("WWW-Authenticate"))
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
	ep.conn.WriteToUDP(okResponse(msg), from)
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
		res, err := ep.r.transact(ep.r.ctx, ep, catalogCallID(deviceID, sn), 1, catalogResponse(ep.r.cfg, ep.local, deviceID, sn))
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
}

// compactNames maps RFC 3261 compact header names to full ones.
var compactNames = map[string]string{"i": "call-id", "v": "via", "f": "from", "t": "to", "l": "content-length", "c": "content-type"}

func parse(b []byte) (message, error) {
	head, body, ok := bytes.Cut(b, []byte("\r\n\r\n"))
	if !ok {
		return message{}, errors.New("no end of headers")
	}
	lines := strings.Split(string(head), "\r\n")
	var msg message
	first := strings.SplitN(lines[0], " ", 3)
	if len(first) < 3 {
		return message{}, fmt.Errorf("bad start line %q", lines[0])
	}
	if first[0] == "SIP/2.0" {
		status, err := strconv.Atoi(first[1])
		if err != nil || status < 100 || status > 699 {
			return message{}, fmt.Errorf("bad status line %q", lines[0])
		}
		msg.status, msg.reason = status, first[2]
	} else {
		msg.method = first[0]
	}
	msg.headers = lines[1:]
	msg.callID = msg.header("Call-ID")
	cseq, _, _ := strings.Cut(msg.header("CSeq"), " ")
	msg.cseq, _ = strconv.Atoi(cseq)
	if msg.callID == "" || msg.cseq == 0 {
		return message{}, errors.New("missing Call-ID or CSeq")
	}
	msg.body = body
	return msg, nil
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
	_, rest, ok := bytes.Cut(body, []byte("<"+tag+">"))
	if !ok {
		return ""
	}
	text, _, ok := bytes.Cut(rest, []byte("</"+tag+">"))
	if !ok {
		return ""
	}
	return string(bytes.TrimSpace(text))
}

func registerRequest(cfg Config, local string, d device, cseq int, authorization string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "REGISTER sip:%s@%s SIP/2.0\r\n", cfg.ServerID, cfg.Domain)
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

// okResponse echoes Via, From, To, Call-ID and CSeq, tagging To if needed.
func okResponse(req message) []byte {
	var b bytes.Buffer
	b.WriteString("SIP/2.0 200 OK\r\n")
	for _, line := range req.headers {
		name, value, ok := headerLine(line)
		if !ok {
			continue
		}
		switch name {
		case "via", "from", "call-id", "cseq":
			b.WriteString(line + "\r\n")
		case "to":
			if !strings.Contains(value, ";tag=") {
				line += ";tag=load" + strconv.Itoa(req.cseq)
			}
			b.WriteString(line + "\r\n")
		}
	}
	fmt.Fprintf(&b, "User-Agent: %s\r\nContent-Length: 0\r\n\r\n", userAgent)
	return b.Bytes()
}

// catalogResponse is a Catalog Response with SumNum 1 and one camera channel,
// whose ID is the device's with type code 131 (camera).
func catalogResponse(cfg Config, local, deviceID, sn string) []byte {
	channelID := deviceID[:10] + "131" + deviceID[13:]
	body := fmt.Sprintf(`<?xml version="1.0" encoding="GB2312"?>`+"\r\n"+
		"<Response>\r\n<CmdType>Catalog</CmdType>\r\n<SN>%s</SN>\r\n<DeviceID>%s</DeviceID>\r\n<SumNum>1</SumNum>\r\n"+
		"<DeviceList Num=\"1\">\r\n<Item>\r\n<DeviceID>%s</DeviceID>\r\n<Name>Camera %s</Name>\r\n<Manufacturer>gbsim</Manufacturer>\r\n"+
		"<Model>load</Model>\r\n<Owner>0</Owner>\r\n<CivilCode>%s</CivilCode>\r\n<Address>lab</Address>\r\n<Parental>0</Parental>\r\n"+
		"<ParentID>%s</ParentID>\r\n<SafetyWay>0</SafetyWay>\r\n<RegisterWay>1</RegisterWay>\r\n<Secrecy>0</Secrecy>\r\n<Status>ON</Status>\r\n"+
		"</Item>\r\n</DeviceList>\r\n</Response>\r\n",
		sn, deviceID, channelID, channelID[15:], deviceID[:6], deviceID)
	var b bytes.Buffer
	fmt.Fprintf(&b, "MESSAGE sip:%s@%s SIP/2.0\r\n", cfg.ServerID, cfg.Domain)
	fmt.Fprintf(&b, "Via: SIP/2.0/UDP %s;rport;branch=z9hG4bKcat-%s-%s\r\n", local, deviceID, sn)
	fmt.Fprintf(&b, "From: <sip:%s@%s>;tag=cat%s\r\n", deviceID, cfg.Domain, sn)
	fmt.Fprintf(&b, "To: <sip:%s@%s>\r\n", cfg.ServerID, cfg.Domain)
	fmt.Fprintf(&b, "Call-ID: %s\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n", catalogCallID(deviceID, sn))
	fmt.Fprintf(&b, "Content-Type: Application/MANSCDP+xml\r\nUser-Agent: %s\r\nContent-Length: %d\r\n\r\n%s", userAgent, len(body), body)
	return b.Bytes()
}
