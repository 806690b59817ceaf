package load

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// catalogPerMessage is how many channels one Catalog Response MESSAGE
// carries (about 450 bytes each: a few kB a datagram, fine on loopback).
const catalogPerMessage = 16

var (
	methodINVITE = []byte("INVITE")
	methodACK    = []byte("ACK")
	methodBYE    = []byte("BYE")
	cmdCatalog   = []byte("Catalog")
)

// callDevice is the camera of a CallLoad: registration, Catalog and
// keepalives go through the registration generator's runner and endpoint;
// it answers every INVITE for one of its channels 200 OK with an SDP
// answer (re-sent until ACKed), and BYE with 200 OK. No media is sent.
type callDevice struct {
	r        *runner
	ep       *endpoint
	id       string
	channels []string
	index    map[string]int // channel ID → its place in channels
	trying   bool           // send 100 Trying before the 200 OK
	mediaIP  string

	catalogDone chan struct{} // closed once a full catalog was acknowledged
	catalogOnce sync.Once

	invites, byes, resent atomic.Int64

	mu       sync.Mutex
	dialogs  map[string]*deviceDialog // by Call-ID, from INVITE to BYE
	ssrcs    map[string]int           // y= of the open dialogs' offers
	problems map[string]int           // what was wrong with the INVITEs it got
}

// deviceDialog is one INVITE the device answered.
type deviceDialog struct {
	answer []byte // our 200 OK, re-sent until the ACK comes
	ssrc   string // the offer's y=
	to     netip.AddrPort
	first  time.Time
	resend resend
	acked  bool
}

func newCallDevice(r *runner, ep *endpoint, id string, channels int, trying bool) *callDevice {
	d := &callDevice{r: r, ep: ep, id: id, trying: trying, mediaIP: r.cfg.LocalIP,
		index: make(map[string]int, channels), catalogDone: make(chan struct{}),
		dialogs: map[string]*deviceDialog{}, ssrcs: map[string]int{}, problems: map[string]int{}}
	for i := range channels {
		ch := channelID(id, i)
		d.channels = append(d.channels, ch)
		d.index[ch] = i
	}
	return d
}

// channelID is a device's channel i: its ID with type code 131 (camera)
// and serial i+1.
func channelID(deviceID string, i int) string {
	return fmt.Sprintf("%s131%07d", deviceID[:10], i+1)
}

func (d *callDevice) handle(b []byte, from netip.AddrPort, scratch []byte) []byte {
	h, err := scan(b)
	if err != nil {
		return scratch
	}
	if h.status != 0 {
		if msg, err := parse(b); err == nil {
			d.ep.deliver(msg) // registration, Catalog Response, keepalive
		}
		return scratch
	}
	switch {
	case bytes.Equal(h.method, methodINVITE):
		return d.invite(b, h, from, scratch)
	case bytes.Equal(h.method, methodACK):
		d.mu.Lock()
		if dl := d.dialogs[string(h.callID)]; dl != nil {
			dl.acked = true
		}
		d.mu.Unlock()
		return scratch
	case bytes.Equal(h.method, methodBYE):
		d.mu.Lock()
		if dl, ok := d.dialogs[string(h.callID)]; ok {
			d.endLocked(string(h.callID), dl)
			d.byes.Add(1)
		}
		d.mu.Unlock()
	}
	scratch = appendReply(scratch[:0], b, "200 OK", "")
	d.ep.conn.WriteToUDPAddrPort(scratch, from)
	if bytes.Equal(h.method, methodMESSAGE) {
		if m := peekMANSCDP(h.body); m.is(rootQuery, cmdCatalog) {
			d.catalogQuery(string(h.callID), string(m.sn), string(m.deviceID))
		}
	}
	return scratch
}

// invite answers a new INVITE, or repeats the answer to a re-sent one.
func (d *callDevice) invite(b []byte, h head, from netip.AddrPort, scratch []byte) []byte {
	d.mu.Lock()
	dl := d.dialogs[string(h.callID)]
	d.mu.Unlock()
	if dl != nil {
		d.ep.conn.WriteToUDPAddrPort(dl.answer, from)
		return scratch
	}
	msg, err := parse(b)
	if err != nil {
		return scratch
	}
	channel := requestUser(b)
	i, ok := d.index[channel]
	if !ok {
		d.problem("INVITE for a channel not in the catalog")
		scratch = appendReply(scratch[:0], b, "404 Not Found", "")
		d.ep.conn.WriteToUDPAddrPort(scratch, from)
		return scratch
	}
	offer := readSDP(msg.body)
	switch {
	case !offer.video || offer.port == 0 || offer.ip == "":
		d.problem("offer without a usable m=video and c=")
	case offer.direction != "recvonly":
		d.problem("offer not a=recvonly")
	case len(offer.ssrc) != 10:
		d.problem("offer without a 10-digit y=")
	case msg.header("Subject") == "":
		d.problem("INVITE without Subject")
	}
	ssrc := offer.ssrc
	if ssrc == "" {
		ssrc = "0" + d.id[3:8] + "0000"
	}
	if d.trying {
		scratch = appendReply(scratch[:0], b, "100 Trying", "")
		d.ep.conn.WriteToUDPAddrPort(scratch, from)
	}
	sdp := appendAnswerSDP(nil, channel, d.mediaIP, fakeMediaPort(i), ssrc)
	answer := appendReplyBody(nil, b, "200 OK", "Contact: <sip:"+channel+"@"+d.ep.local+">\r\nContent-Type: application/sdp\r\n", sdp)
	now := time.Now()
	dl = &deviceDialog{answer: answer, to: from, first: now, ssrc: offer.ssrc}
	dl.resend.sent(now)
	d.mu.Lock()
	if prior := d.dialogs[msg.callID]; prior != nil { // another reader took a copy
		dl = prior
	} else {
		d.dialogs[msg.callID] = dl
		d.invites.Add(1)
		if offer.ssrc != "" {
			if d.ssrcs[offer.ssrc] > 0 {
				d.problems["offer y= already offered in another open dialog"]++
			}
			d.ssrcs[offer.ssrc]++
		}
	}
	d.mu.Unlock()
	d.ep.conn.WriteToUDPAddrPort(dl.answer, from)
	return scratch
}

// fakeMediaPort is where a channel claims to send from: nothing is sent.
func fakeMediaPort(i int) int { return 40000 + 2*(i%10000) }

// requestUser is the user part of a request's Request-URI.
func requestUser(b []byte) string {
	first, _, _ := bytes.Cut(b, crlf)
	_, uri, _ := bytes.Cut(first, []byte(" "))
	uri, _, _ = bytes.Cut(uri, []byte(" "))
	return uriUser(string(uri))
}

// uriUser is the user part of a sip: URI, "" if it has none.
func uriUser(uri string) string {
	rest, ok := strings.CutPrefix(uri, "sip:")
	if !ok {
		return ""
	}
	user, _, ok := strings.Cut(rest, "@")
	if !ok {
		return ""
	}
	return user
}

func (d *callDevice) problem(what string) {
	d.mu.Lock()
	d.problems[what]++
	d.mu.Unlock()
}

// catalogQuery sends the whole catalog, catalogPerMessage channels a
// MESSAGE, once per query.
func (d *callDevice) catalogQuery(callID, sn, deviceID string) {
	ep := d.ep
	ep.mu.Lock()
	seen := ep.answered[callID]
	ep.answered[callID] = true
	ep.mu.Unlock()
	if seen || deviceID != d.id {
		return
	}
	go func() {
		for start := 0; start < len(d.channels); start += catalogPerMessage {
			part := d.channels[start:min(start+catalogPerMessage, len(d.channels))]
			id := catalogCallID(d.id, sn) + "-" + strconv.Itoa(start)
			msg := catalogResponseItems(d.r.cfg, ep.local, d.id, sn, len(d.channels), part, id)
			res, err := d.r.transact(d.r.ctx, ep, id, 1, msg)
			if err != nil || res.status != 200 {
				d.problem(fmt.Sprintf("Catalog Response not accepted: %v %d %s", err, res.status, res.reason))
				return
			}
		}
		d.catalogOnce.Do(func() { close(d.catalogDone) })
	}()
}

// keepalives sends a Keepalive every interval until ctx ends.
func (d *callDevice) keepalives(ctx context.Context, every time.Duration, tmpl messageTemplate) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for sn := int64(1); ; sn++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		body := xmlDeclaration + "<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>" + strconv.FormatInt(sn, 10) +
			"</SN>\r\n<DeviceID>" + d.id + "</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
		msg := tmpl.appendMessage(nil, sn, []byte(body))
		if res, err := d.r.transact(ctx, d.ep, string(tmpl.callPrefix)+strconv.FormatInt(sn, 10), 1, msg); err != nil || res.status != 200 {
			d.problem(fmt.Sprintf("keepalive not accepted: %v %d", err, res.status))
		}
	}
}

// sweep re-sends 200 OKs not yet ACKed, for 64·T1 (RFC 3261 §13.3.1.4).
func (d *callDevice) sweep(now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for key, dl := range d.dialogs {
		if dl.acked || !dl.resend.due(now) {
			continue
		}
		if now.Sub(dl.first) >= 64*timerT1 {
			d.endLocked(key, dl)
			d.problems["no ACK for the 200 OK to INVITE"]++
			continue
		}
		d.resent.Add(1)
		d.ep.conn.WriteToUDPAddrPort(dl.answer, dl.to)
	}
}

func (d *callDevice) endLocked(callID string, dl *deviceDialog) {
	delete(d.dialogs, callID)
	if dl.ssrc == "" {
		return
	}
	if d.ssrcs[dl.ssrc]--; d.ssrcs[dl.ssrc] <= 0 {
		delete(d.ssrcs, dl.ssrc)
	}
}

// open is the number of dialogs between INVITE and BYE.
func (d *callDevice) open() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.dialogs)
}

func (d *callDevice) problemsCopy() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]int, len(d.problems))
	for k, v := range d.problems {
		out[k] = v
	}
	return out
}
