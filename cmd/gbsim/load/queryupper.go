package load

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// fakeUpper is the upper platform: it takes the proxy's registration and
// keepalives, and drives the queries of the current run.
type fakeUpper struct {
	conn       *net.UDPConn
	domain     string // digest realm of its challenges
	nonce      string
	registered chan struct{} // closed on the proxy's first authorised REGISTER
	regOnce    sync.Once
	run        atomic.Pointer[queryRun] // nil between runs
	calls      atomic.Pointer[callRun]  // the CallLoad's current (or held) run
}

// waitRegistered waits for the proxy's first authorised REGISTER.
func (u *fakeUpper) waitRegistered(ctx context.Context, id string) error {
	select {
	case <-u.registered:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("load: the proxy did not register to the fake upper platform at %s: %w "+
			"(is it in the proxy's upper.platforms with id %s, transport udp?)", u.conn.LocalAddr(), ctx.Err(), id)
	}
}

// handle answers one datagram; scratch is the reader's reply buffer.
func (u *fakeUpper) handle(b []byte, from netip.AddrPort, scratch []byte) []byte {
	h, err := scan(b)
	if err != nil {
		return scratch
	}
	run := u.run.Load()
	if h.status != 0 {
		if run != nil && h.status >= 200 {
			if sn, ok := run.tmpl.number(h.callID); ok {
				run.final(sn, h.status, h.reason)
			}
		}
		if calls := u.calls.Load(); calls != nil {
			calls.response(h, b)
		}
		return scratch
	}
	if bytes.Equal(h.method, methodREGISTER) {
		scratch = u.answerRegister(scratch[:0], b)
	} else {
		scratch = appendReply(scratch[:0], b, "200 OK", "")
	}
	if len(scratch) > 0 {
		u.conn.WriteToUDPAddrPort(scratch, from)
	}
	if calls := u.calls.Load(); calls != nil && bytes.Equal(h.method, methodBYE) {
		calls.peerBye(h.callID)
	}
	if run != nil && bytes.Equal(h.method, methodMESSAGE) {
		if m := peekMANSCDP(h.body); m.is(rootResponse, cmdDeviceStatus) {
			run.answered(m.sn, m.deviceID, time.Now())
		}
	}
	return scratch
}

// answerRegister challenges a REGISTER without credentials and accepts any
// with them: the proxy's digest is not what is measured.
func (u *fakeUpper) answerRegister(dst, raw []byte) []byte {
	msg, err := parse(raw)
	if err != nil {
		return dst
	}
	if msg.header("Authorization") == "" {
		return appendReply(dst, raw, "401 Unauthorized",
			`WWW-Authenticate: Digest realm="`+u.domain+`", nonce="`+u.nonce+`", opaque="`+u.nonce+`", algorithm=MD5`+"\r\n")
	}
	expires := msg.header("Expires")
	if _, err := strconv.Atoi(expires); err != nil {
		expires = "3600"
	}
	if expires != "0" {
		u.regOnce.Do(func() { close(u.registered) })
	}
	return appendReply(dst, raw, "200 OK", "Expires: "+expires+"\r\n")
}

// queryRun is the state of one Run: queries in flight by SN, and the tally.
type queryRun struct {
	tmpl    messageTemplate
	target  []byte // DeviceID that Responses must carry
	dest    netip.AddrPort
	timeout time.Duration
	// free holds one pendingQuery per allowed query in flight: taking one
	// is the sender's admission, giving it back ends a query.
	free chan *pendingQuery

	mu          sync.Mutex
	outstanding map[int64]*pendingQuery
	sent        int64 // highest SN sent
	latencies   []time.Duration
	failReasons map[string]int
	wrongSN     int
	retransmits int
	lastDone    time.Time
}

type pendingQuery struct {
	sn         int64
	msg        []byte
	sentAt     time.Time
	answeredAt time.Time
	resend     resend
	final      bool // a final response arrived: no more re-sending
	accepted   bool // and it was 2xx
	answered   bool // the Response MESSAGE arrived
}

func newQueryRun(tmpl messageTemplate, target string, dest netip.AddrPort, cfg QueryConfig) *queryRun {
	r := &queryRun{
		tmpl: tmpl, target: []byte(target), dest: dest, timeout: cfg.Timeout,
		free:        make(chan *pendingQuery, cfg.Concurrency),
		outstanding: make(map[int64]*pendingQuery, cfg.Concurrency),
		latencies:   make([]time.Duration, 0, cfg.Queries),
		failReasons: map[string]int{},
	}
	for range cfg.Concurrency {
		r.free <- &pendingQuery{msg: make([]byte, 0, 1024)}
	}
	return r
}

// send builds and sends query sn in pq, a buffer only this goroutine uses
// until the query ends.
func (r *queryRun) send(conn *net.UDPConn, pq *pendingQuery, sn int64, body []byte) {
	pq.msg = r.tmpl.appendMessage(pq.msg[:0], sn, body)
	now := time.Now()
	*pq = pendingQuery{sn: sn, msg: pq.msg, sentAt: now}
	pq.resend.sent(now)
	r.mu.Lock()
	r.outstanding[sn] = pq
	r.sent = sn
	r.mu.Unlock()
	conn.WriteToUDPAddrPort(pq.msg, r.dest)
}

// final takes the final response to query sn.
func (r *queryRun) final(sn int64, status int, reason []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pq := r.outstanding[sn]
	if pq == nil || pq.final {
		return // late, or a retransmitted answer
	}
	pq.final = true
	switch {
	case status >= 300:
		r.finish(pq, strconv.Itoa(status)+" "+string(reason), time.Now())
	case pq.answered:
		r.finish(pq, "", time.Now())
	default:
		pq.accepted = true
	}
}

// answered takes a DeviceStatus Response.
func (r *queryRun) answered(snText, deviceID []byte, now time.Time) {
	sn, ok := atoi(snText)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !ok || sn < 1 || int64(sn) > r.sent || !bytes.Equal(deviceID, r.target) {
		r.wrongSN++
		return
	}
	pq := r.outstanding[int64(sn)]
	if pq == nil || pq.answered {
		return // after its timeout, or a retransmission
	}
	pq.answered, pq.answeredAt = true, now
	if pq.accepted {
		r.finish(pq, "", now)
	}
}

// finish ends a query, successful when failure is "". r.mu is held.
func (r *queryRun) finish(pq *pendingQuery, failure string, now time.Time) {
	delete(r.outstanding, pq.sn)
	if failure == "" {
		r.latencies = append(r.latencies, pq.answeredAt.Sub(pq.sentAt))
	} else {
		r.failReasons[failure]++
	}
	r.lastDone = now
	r.free <- pq // never blocks: it holds as many as were taken
}

// sweep re-sends unanswered queries and fails the ones out of time.
func (r *queryRun) sweep(conn *net.UDPConn, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, pq := range r.outstanding {
		switch {
		case now.Sub(pq.sentAt) >= r.timeout:
			r.finish(pq, timeoutReason(pq), now)
		case !pq.final && pq.resend.due(now):
			r.retransmits++
			conn.WriteToUDPAddrPort(pq.msg, r.dest)
		}
	}
}

func timeoutReason(pq *pendingQuery) string {
	switch {
	case !pq.final && !pq.answered:
		return "timeout: no final response nor Response"
	case !pq.final:
		return "timeout: no final response"
	default:
		return "timeout: no Response MESSAGE"
	}
}
