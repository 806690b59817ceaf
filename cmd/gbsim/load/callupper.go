package load

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

type callPhase int

const (
	inviting    callPhase = iota // INVITE sent, no final answer yet
	established                  // 200 OK taken and ACKed, held for HangUp
	byeing                       // BYE sent, no final answer yet
)

// callRun is the state of one CallLoad run: the calls in flight by number,
// the established ones held for HangUp, and the tally.
type callRun struct {
	tmpl     callTemplate
	dest     netip.AddrPort
	conn     *net.UDPConn
	timeout  time.Duration
	hold     bool
	channels []string // as the upper addresses them
	// free holds one token per allowed call in flight: taking one is the
	// sender's admission, giving it back ends (or, held, establishes) a call.
	free chan struct{}
	// idle queues the channels no call is using, least recently used first,
	// so no two calls in flight share one; a call's channel goes back before
	// its token. Nil in Hold runs, which use one channel per call.
	idle chan string

	mu    sync.Mutex
	calls map[int64]*upperCall // INVITE or BYE outstanding
	held  map[int64]*upperCall // established, not yet hung up
	tally callTally
	// byeLatency: the latencies are BYE to answer (HangUp), not set-ups.
	byeLatency bool
}

type callTally struct {
	latencies   []time.Duration
	failReasons map[string]int
	setups      int // 200 OK with a good answer, ACKed
	completed   int // BYE answered 2xx
	retransmits int
	endedByPeer int
	lastDone    time.Time
}

type upperCall struct {
	n             int64
	channel, ssrc string
	phase         callPhase
	req, ack      []byte // INVITE or BYE (re-sent until answered); ACK of the 2xx (re-sent on its retransmissions)
	sentAt        time.Time
	resend        resend
	provisional   bool
	peerBye       bool // the other side sent BYE too
	holdsToken    bool
	target, toTag string // remote target and tag from the 200 OK
	failure       string // set when the 200 OK was wrong: the call is ended, then counted failed
}

// newCallRun plans calls, concurrency in flight, on channels (each one
// used by a single call when hold, else by one call at a time).
func newCallRun(tmpl callTemplate, dest netip.AddrPort, conn *net.UDPConn, timeout time.Duration, hold bool, channels []string, concurrency, calls int) *callRun {
	r := &callRun{tmpl: tmpl, dest: dest, conn: conn, timeout: timeout, hold: hold, channels: channels,
		calls: make(map[int64]*upperCall, concurrency), held: map[int64]*upperCall{}}
	if !hold {
		r.idle = make(chan string, len(channels))
		for _, ch := range channels {
			r.idle <- ch
		}
	}
	r.reset(concurrency, calls)
	return r
}

// reset starts a new tally with concurrency tokens.
func (r *callRun) reset(concurrency, expected int) {
	r.free = make(chan struct{}, concurrency)
	for range concurrency {
		r.free <- struct{}{}
	}
	r.tally = callTally{latencies: make([]time.Duration, 0, expected), failReasons: map[string]int{}}
}

// upperSSRC is the y= of call n: live (0), digits 4-8 of the upper's ID, a
// four-digit serial.
func upperSSRC(upperID string, n int64) string {
	return fmt.Sprintf("0%s%04d", upperID[3:8], n%10000)
}

// invite starts call n on channel; the caller holds a token.
func (r *callRun) invite(n int64, channel string) {
	c := &upperCall{n: n, channel: channel, ssrc: upperSSRC(r.tmpl.fromID, n), holdsToken: true}
	sdp := appendOfferSDP(make([]byte, 0, 256), r.tmpl.fromID, r.tmpl.mediaIP, fakeMediaPort(int(n)), c.ssrc)
	c.req = r.tmpl.appendInvite(make([]byte, 0, 1024), n, channel, c.ssrc, sdp)
	now := time.Now()
	c.sentAt = now
	c.resend.sent(now)
	r.mu.Lock()
	r.calls[n] = c
	r.mu.Unlock()
	r.conn.WriteToUDPAddrPort(c.req, r.dest)
}

// bye ends an established call; the caller holds r.mu.
func (r *callRun) byeLocked(c *upperCall, now time.Time) {
	c.phase = byeing
	c.req = r.tmpl.appendInDialog(c.req[:0], "BYE", c.target, c.channel, c.n, branchBye, c.toTag, 2)
	c.sentAt = now
	c.resend.sent(now)
	r.calls[c.n] = c
	r.conn.WriteToUDPAddrPort(c.req, r.dest)
}

// response takes any response to one of the run's requests.
func (r *callRun) response(h head, b []byte) {
	n, ok := r.tmpl.number(h.callID)
	if !ok {
		return
	}
	now := time.Now()
	var answer message
	if h.cseq == 1 && h.status >= 200 {
		answer, _ = parse(b) // scan accepted it: so does parse
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls[n]
	if c == nil {
		c = r.held[n]
	}
	switch {
	case c == nil:
		if h.cseq == 1 && h.status/100 == 2 {
			r.lateAnswer(n, answer) // after its timeout: end it so the proxy frees it
		}
	case h.cseq == 1 && c.phase == inviting:
		switch {
		case h.status < 200:
			c.provisional = true
		case h.status >= 300:
			c.toTag = headerParam(answer.header("To"), "tag")
			ack := r.tmpl.appendInDialog(nil, "ACK", "sip:"+c.channel+"@"+r.tmpl.toDomain, c.channel, n, branchInvite, c.toTag, 1)
			r.conn.WriteToUDPAddrPort(ack, r.dest)
			r.finishLocked(c, "INVITE: "+strconv.Itoa(h.status)+" "+string(h.reason), now)
		default:
			r.acceptLocked(c, answer, now)
		}
	case h.cseq == 1 && h.status/100 == 2 && c.ack != nil:
		r.conn.WriteToUDPAddrPort(c.ack, r.dest) // our ACK was lost: the 200 OK came again
	case h.cseq == 2 && c.phase == byeing && h.status >= 200:
		failure := c.failure
		if failure == "" && h.status >= 300 {
			failure = "BYE: " + strconv.Itoa(h.status) + " " + string(h.reason)
			if c.peerBye {
				failure += " (the other side had sent BYE)"
			}
		}
		if failure == "" && r.byeLatency {
			r.tally.latencies = append(r.tally.latencies, now.Sub(c.sentAt))
		}
		r.finishLocked(c, failure, now)
	}
}

// acceptLocked ACKs the 200 OK to c's INVITE, checks its SDP answer, and
// holds or hangs up the call.
func (r *callRun) acceptLocked(c *upperCall, answer message, now time.Time) {
	c.toTag = headerParam(answer.header("To"), "tag")
	c.target = contactURI(answer.header("Contact"))
	if c.target == "" {
		c.target = "sip:" + c.channel + "@" + r.tmpl.toDomain
	}
	c.ack = r.tmpl.appendInDialog(nil, "ACK", c.target, c.channel, c.n, branchAck, c.toTag, 1)
	r.conn.WriteToUDPAddrPort(c.ack, r.dest)
	sdp := readSDP(answer.body)
	switch {
	case c.toTag == "":
		c.failure = "200 OK without a To tag"
	case !strings.Contains(strings.ToLower(answer.header("Content-Type")), "sdp"):
		c.failure = "200 OK without an SDP body"
	case !sdp.video || sdp.port == 0 || sdp.ip == "":
		c.failure = "SDP answer without a usable m=video and c="
	case sdp.direction != "sendonly" && sdp.direction != "sendrecv" && sdp.direction != "":
		c.failure = "SDP answer a=" + sdp.direction
	case sdp.ssrc != c.ssrc:
		c.failure = fmt.Sprintf("SDP answer y=%q, not the offer's", sdp.ssrc)
	}
	if c.failure == "" {
		r.tally.setups++
		r.tally.latencies = append(r.tally.latencies, now.Sub(c.sentAt))
	}
	if r.hold && c.failure == "" {
		c.phase = established
		delete(r.calls, c.n)
		r.held[c.n] = c
		r.tally.lastDone = now
		r.releaseLocked(c)
		return
	}
	r.byeLocked(c, now)
}

// lateAnswer ACKs and ends a call that answered after its timeout.
func (r *callRun) lateAnswer(n int64, answer message) {
	channel := uriUser(contactURI(answer.header("To")))
	target := contactURI(answer.header("Contact"))
	toTag := headerParam(answer.header("To"), "tag")
	if channel == "" || target == "" {
		return
	}
	r.conn.WriteToUDPAddrPort(r.tmpl.appendInDialog(nil, "ACK", target, channel, n, branchAck, toTag, 1), r.dest)
	r.conn.WriteToUDPAddrPort(r.tmpl.appendInDialog(nil, "BYE", target, channel, n, branchBye, toTag, 2), r.dest)
}

// finishLocked ends c, successful when failure is "".
func (r *callRun) finishLocked(c *upperCall, failure string, now time.Time) {
	delete(r.calls, c.n)
	delete(r.held, c.n)
	if failure == "" {
		r.tally.completed++
	} else {
		r.tally.failReasons[failure]++
	}
	r.tally.lastDone = now
	r.releaseLocked(c)
}

func (r *callRun) releaseLocked(c *upperCall) {
	if c.holdsToken {
		c.holdsToken = false
		if r.idle != nil {
			r.idle <- c.channel // never blocks: it holds every channel
		}
		r.free <- struct{}{} // nor this: it holds as many as were taken
	}
}

// peerBye takes a BYE from the other side (the proxy ending a call).
func (r *callRun) peerBye(callID []byte) {
	n, ok := r.tmpl.number(callID)
	if !ok {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.held[n]; c != nil {
		delete(r.held, n)
		r.tally.endedByPeer++
		r.tally.failReasons["ended by the other side's BYE while held"]++
		r.releaseLocked(c)
	} else if c := r.calls[n]; c != nil && c.phase == byeing && !c.peerBye {
		c.peerBye = true // crossed our BYE, which may get 481 now
		r.tally.endedByPeer++
	}
}

// sweep re-sends unanswered INVITEs (until a provisional answer) and BYEs,
// and fails the ones out of time.
func (r *callRun) sweep(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.calls {
		switch {
		case now.Sub(c.sentAt) >= r.timeout:
			reason := "timeout: no answer to BYE"
			if c.phase == inviting {
				reason = "timeout: no final answer to INVITE"
				if c.provisional {
					reason += " (only 1xx)"
				}
			}
			r.finishLocked(c, reason, now)
		case (c.phase == byeing || !c.provisional) && c.resend.due(now):
			r.tally.retransmits++
			r.conn.WriteToUDPAddrPort(c.req, r.dest)
		}
	}
}

// heldCalls lists the established calls, in no order.
func (r *callRun) heldCalls() []*upperCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*upperCall, 0, len(r.held))
	for _, c := range r.held {
		out = append(out, c)
	}
	return out
}

// hangUp sends BYE for held call c; the caller holds a token.
func (r *callRun) hangUp(c *upperCall) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.held[c.n] != c {
		r.free <- struct{}{} // ended by the other side meanwhile
		return
	}
	delete(r.held, c.n)
	c.holdsToken = true
	r.byeLocked(c, time.Now())
}

func (r *callRun) heldCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.held)
}
