package load

import (
	"bytes"
	"hash/maphash"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// maxResponseSends caps how often one Response MESSAGE is sent.
const maxResponseSends = 4

// fakeDevice is the camera below the proxy. Registration and Catalog answers
// go through the registration generator's runner and endpoint; DeviceStatus
// queries and the acknowledgements of their Responses take the fast path.
type fakeDevice struct {
	r    *runner
	ep   *endpoint
	tmpl messageTemplate // for Responses
	next atomic.Int64    // number of the latest Response
	// retransmits counts re-sent Responses.
	retransmits atomic.Int64

	mu      sync.Mutex
	dest    netip.AddrPort // where Responses go: the proxy's lower side, or the upper
	pending map[int64]*pendingResponse
	// seen and seenBefore hold hashes of the Call-IDs of queries answered in
	// the last one or two dedupPeriods, so a retransmitted query gets its 200
	// again but no second Response.
	seen, seenBefore map[uint64]struct{}
	seed             maphash.Seed
}

type pendingResponse struct {
	n      int64
	msg    []byte
	resend resend
	// home is the free list of the reader that built it; only that reader
	// refills msg, so a buffer is never rewritten while it is being sent.
	home chan *pendingResponse
}

// deviceReader is one read loop's reusable buffers.
type deviceReader struct {
	reply, body []byte
	free        chan *pendingResponse
}

func newDeviceReader() *deviceReader {
	return &deviceReader{reply: make([]byte, 0, 1024), body: make([]byte, 0, 512), free: make(chan *pendingResponse, 1024)}
}

func (d *fakeDevice) handle(b []byte, from netip.AddrPort, rd *deviceReader) {
	h, err := scan(b)
	if err != nil {
		return
	}
	if h.status != 0 {
		if n, ok := d.tmpl.number(h.callID); ok {
			if h.status >= 200 {
				d.acknowledged(n)
			}
		} else if msg, err := parse(b); err == nil {
			d.ep.deliver(msg) // registration or Catalog Response
		}
		return
	}
	m := peekMANSCDP(h.body)
	if !bytes.Equal(h.method, methodMESSAGE) || !m.is(rootQuery, cmdDeviceStatus) {
		if msg, err := parse(b); err == nil {
			d.ep.answerRequest(msg, net.UDPAddrFromAddrPort(from))
		}
		return
	}
	rd.reply = appendReply(rd.reply[:0], b, "200 OK", "")
	d.ep.conn.WriteToUDPAddrPort(rd.reply, from)
	d.respond(h.callID, m.sn, m.deviceID, rd)
}

// respond sends the Response to a DeviceStatus query the first time it is
// seen, and keeps it for re-sending until it is acknowledged.
func (d *fakeDevice) respond(callID, sn, deviceID []byte, rd *deviceReader) {
	key := maphash.Bytes(d.seed, callID)
	d.mu.Lock()
	_, dup := d.seen[key]
	if _, old := d.seenBefore[key]; old {
		dup = true
	}
	if !dup {
		d.seen[key] = struct{}{}
	}
	dest := d.dest
	d.mu.Unlock()
	if dup {
		return
	}
	var p *pendingResponse
	select {
	case p = <-rd.free:
	default:
		p = &pendingResponse{msg: make([]byte, 0, 1024), home: rd.free}
	}
	p.n = d.next.Add(1)
	rd.body = appendDeviceStatusResponse(rd.body[:0], sn, deviceID)
	p.msg = d.tmpl.appendMessage(p.msg[:0], p.n, rd.body)
	p.resend.sent(time.Now())
	d.mu.Lock()
	d.pending[p.n] = p
	d.mu.Unlock()
	d.ep.conn.WriteToUDPAddrPort(p.msg, dest)
}

func (d *fakeDevice) acknowledged(n int64) {
	d.mu.Lock()
	p := d.pending[n]
	delete(d.pending, n)
	d.mu.Unlock()
	if p != nil {
		d.release(p)
	}
}

func (d *fakeDevice) release(p *pendingResponse) {
	select {
	case p.home <- p:
	default: // its reader has plenty
	}
}

// sweep re-sends unacknowledged Responses, giving up after maxResponseSends.
func (d *fakeDevice) sweep(now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for n, p := range d.pending {
		if !p.resend.due(now) {
			continue
		}
		if p.resend.sends > maxResponseSends {
			delete(d.pending, n)
			d.release(p)
			continue
		}
		d.retransmits.Add(1)
		d.ep.conn.WriteToUDPAddrPort(p.msg, d.dest)
	}
}

// dedupPeriod outlasts the four retransmissions of timer E (7.5 s); a query
// re-sent later still than that is answered twice, which its sender ignores.
const dedupPeriod = 8 * time.Second

// forgetOldQueries starts a new dedup generation; called every dedupPeriod.
func (d *fakeDevice) forgetOldQueries() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seenBefore, d.seen = d.seen, make(map[uint64]struct{}, len(d.seen))
}
