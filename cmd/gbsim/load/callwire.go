package load

import (
	"bytes"
	"strconv"
)

// callTemplate is what stays the same across the INVITE dialogs one upper
// platform starts: its From, Contact and Via, the domain its callees are in,
// and the Call-ID prefix (messageTemplate's, so number works alike).
type callTemplate struct {
	messageTemplate
	fromID   string
	toDomain string // host of the Request-URI and To of an INVITE
	contact  string // <sip:fromID@local>
	mediaIP  string // c= of the offers
}

func newCallTemplate(fromID, fromDomain, toDomain, local, mediaIP, callPrefix string) callTemplate {
	return callTemplate{
		messageTemplate: newTemplate(fromID, fromDomain, fromID, toDomain, local, callPrefix),
		fromID:          fromID, toDomain: toDomain, contact: "<sip:" + fromID + "@" + local + ">", mediaIP: mediaIP,
	}
}

// Branch suffixes: one transaction each for the INVITE (and the ACK of a
// non-2xx answer), the ACK of a 2xx, and the BYE.
const (
	branchInvite = "i"
	branchAck    = "a"
	branchBye    = "b"
)

// appendStart appends a request's start line and the headers all of a
// dialog's requests share: Via, From, To, Call-ID and CSeq.
func (t *callTemplate) appendStart(dst []byte, method, requestURI, channel string, n int64, branch, toTag string, cseq int) []byte {
	dst = append(append(append(dst, method...), ' '), requestURI...)
	dst = append(dst, " SIP/2.0\r\nVia: SIP/2.0/UDP "...)
	dst = append(dst, t.local...)
	dst = append(dst, ";rport;branch=z9hG4bK"...)
	dst = strconv.AppendInt(append(dst, t.callPrefix...), n, 10)
	dst = append(append(append(dst, '-'), branch...), "\r\nFrom: "...)
	dst = append(dst, t.from...)
	dst = strconv.AppendInt(append(dst, ";tag=f"...), n, 10)
	dst = append(dst, "\r\nTo: <sip:"...)
	dst = append(append(append(dst, channel...), '@'), t.toDomain...)
	dst = append(dst, '>')
	if toTag != "" {
		dst = append(append(dst, ";tag="...), toTag...)
	}
	dst = append(dst, "\r\nCall-ID: "...)
	dst = strconv.AppendInt(append(dst, t.callPrefix...), n, 10)
	dst = strconv.AppendInt(append(dst, "\r\nCSeq: "...), int64(cseq), 10)
	dst = append(append(append(dst, ' '), method...), "\r\nMax-Forwards: 70\r\nUser-Agent: "+userAgent+"\r\n"...)
	return dst
}

// appendInvite appends INVITE number n for a live stream of channel, with
// GB's Subject "channel:ssrc,upper:0" and the offer sdp (appendOfferSDP).
func (t *callTemplate) appendInvite(dst []byte, n int64, channel, ssrc string, sdp []byte) []byte {
	dst = t.appendStart(dst, "INVITE", "sip:"+channel+"@"+t.toDomain, channel, n, branchInvite, "", 1)
	dst = append(append(dst, "Contact: "...), t.contact...)
	dst = append(append(append(dst, "\r\nSubject: "...), channel...), ':')
	dst = append(append(append(dst, ssrc...), ','), t.fromID...)
	dst = append(dst, ":0\r\nContent-Type: APPLICATION/SDP\r\nContent-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(sdp)), 10)
	return append(append(dst, crlfcrlf...), sdp...)
}

// appendInDialog appends an ACK or BYE after a 2xx: to the remote target,
// with the callee's To tag. ACK of a non-2xx uses the INVITE's branch and
// Request-URI (RFC 3261 §17.1.1.3).
func (t *callTemplate) appendInDialog(dst []byte, method, requestURI, channel string, n int64, branch, toTag string, cseq int) []byte {
	dst = t.appendStart(dst, method, requestURI, channel, n, branch, toTag, cseq)
	return append(dst, "Content-Length: 0\r\n\r\n"...)
}

// appendOfferSDP is an upper platform's live offer: receive PS (or H.264,
// MPEG-4) over RTP/UDP on ip:port, SSRC ssrc.
func appendOfferSDP(dst []byte, user, ip string, port int, ssrc string) []byte {
	dst = append(append(append(dst, "v=0\r\no="...), user...), " 0 0 IN IP4 "...)
	dst = append(append(append(dst, ip...), "\r\ns=Play\r\nc=IN IP4 "...), ip...)
	dst = strconv.AppendInt(append(dst, "\r\nt=0 0\r\nm=video "...), int64(port), 10)
	dst = append(dst, " RTP/AVP 96 98 97\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\na=rtpmap:98 H264/90000\r\na=rtpmap:97 MPEG4/90000\r\ny="...)
	return append(append(dst, ssrc...), "\r\n"...)
}

// appendAnswerSDP is a camera's answer: it sends PS over RTP/UDP from
// ip:port with SSRC ssrc (the offer's y=).
func appendAnswerSDP(dst []byte, user, ip string, port int, ssrc string) []byte {
	dst = append(append(append(dst, "v=0\r\no="...), user...), " 0 0 IN IP4 "...)
	dst = append(append(append(dst, ip...), "\r\ns=Play\r\nc=IN IP4 "...), ip...)
	dst = strconv.AppendInt(append(dst, "\r\nt=0 0\r\nm=video "...), int64(port), 10)
	dst = append(dst, " RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\ny="...)
	return append(append(dst, ssrc...), "\r\n"...)
}

// sdpFacts is what the load generator checks in an SDP body.
type sdpFacts struct {
	ip, ssrc, direction string
	port                int
	video               bool
}

// readSDP picks c=, the first m=video, its direction attribute and y= out of
// an SDP body; a plain line scan, as the fields checked are few.
func readSDP(body []byte) sdpFacts {
	var f sdpFacts
	inVideo := false
	for len(body) > 0 {
		var line []byte
		line, body, _ = bytes.Cut(body, []byte("\n"))
		line = bytes.TrimRight(line, "\r")
		switch {
		case bytes.HasPrefix(line, []byte("c=IN IP4 ")):
			f.ip = string(bytes.TrimSpace(line[len("c=IN IP4 "):]))
		case bytes.HasPrefix(line, []byte("m=")):
			inVideo = !f.video && bytes.HasPrefix(line, []byte("m=video "))
			if inVideo {
				f.video = true
				fields := bytes.Fields(line[len("m=video "):])
				if len(fields) > 0 {
					f.port, _ = atoi(fields[0])
				}
			}
		case inVideo && (bytes.Equal(line, []byte("a=sendonly")) || bytes.Equal(line, []byte("a=recvonly")) ||
			bytes.Equal(line, []byte("a=sendrecv")) || bytes.Equal(line, []byte("a=inactive"))):
			f.direction = string(line[2:])
		case bytes.HasPrefix(line, []byte("y=")):
			f.ssrc = string(bytes.TrimSpace(line[2:]))
		}
	}
	return f
}

// headerParam returns the value of ;name= in a header value ("" if none).
func headerParam(value, name string) string {
	i := indexFold(value, ";"+name+"=")
	if i < 0 {
		return ""
	}
	v := value[i+len(name)+2:]
	if end := bytes.IndexAny([]byte(v), ";> \t"); end >= 0 {
		v = v[:end]
	}
	return v
}

func indexFold(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if bytes.EqualFold([]byte(s[i:i+len(sub)]), []byte(sub)) {
			return i
		}
	}
	return -1
}

// contactURI is the URI of a Contact header value, "" if none.
func contactURI(value string) string {
	if start := bytes.IndexByte([]byte(value), '<'); start >= 0 {
		if end := bytes.IndexByte([]byte(value[start:]), '>'); end > 0 {
			return value[start+1 : start+end]
		}
	}
	uri, _, _ := bytes.Cut([]byte(value), []byte(";"))
	return string(bytes.TrimSpace(uri))
}
