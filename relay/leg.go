package relay

import (
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Counters describe one direction of a leg. They are read while the leg runs.
type Counters struct {
	Packets uint64
	Bytes   uint64 // RTP bytes, without RFC 4571 prefixes
	// Lost counts packets missing from the sequence (receive side only);
	// a late packet that fills a gap is taken off again.
	Lost uint64
	// Dropped counts packets not forwarded: malformed, RTCP, from a stray
	// sender, too large to split (receive side), or not sendable because
	// the leg is not connected yet or the kernel refused them (send side).
	Dropped uint64
	Last    time.Time // last packet; zero before the first
}

// Stats are a leg's counters. For a Source, In is what the device sends and
// Out the reverse media sent to it; for a Sink, Out is what goes to the
// upper and In the reverse media the upper sends.
type Stats struct {
	In, Out Counters
	// Refused counts connections a TCP-passive leg closed because they came
	// from an address it does not accept.
	Refused uint64
}

type counters struct {
	packets, bytes, lost, dropped atomic.Uint64
	last                          atomic.Int64 // UnixNano
}

func (c *counters) snapshot() Counters {
	s := Counters{
		Packets: c.packets.Load(),
		Bytes:   c.bytes.Load(),
		Lost:    c.lost.Load(),
		Dropped: c.dropped.Load(),
	}
	if l := c.last.Load(); l != 0 {
		s.Last = time.Unix(0, l)
	}
	return s
}

// Leg is what Sources and Sinks share: local address, counters, lifecycle.
type Leg struct {
	transport Transport
	local     netip.AddrPort
	in, out   counters
	refused   atomic.Uint64
	log       zerolog.Logger

	ready     chan struct{}
	readyOnce sync.Once
	done      chan struct{}
	doneOnce  sync.Once
	closing   atomic.Bool
	errMu     sync.Mutex
	err       error
}

func newLeg(t Transport, local netip.AddrPort, log zerolog.Logger) Leg {
	return Leg{
		transport: t,
		local:     local,
		log:       log.With().Str("transport", t.String()).Stringer("local", local).Logger(),
		ready:     make(chan struct{}),
		done:      make(chan struct{}),
	}
}

// LocalAddr is the leg's local media address, the one to put in SDP.
func (l *Leg) LocalAddr() netip.AddrPort { return l.local }

// Transport is the leg's transport.
func (l *Leg) Transport() Transport { return l.transport }

// Stats returns the leg's counters so far.
func (l *Leg) Stats() Stats {
	return Stats{In: l.in.snapshot(), Out: l.out.snapshot(), Refused: l.refused.Load()}
}

// Ready is closed once the leg can carry media: at once for UDP, when the
// connection is up for TCP.
func (l *Leg) Ready() <-chan struct{} { return l.ready }

// Done is closed when the leg has ended: closed by the owner, or failed
// (peer closed its TCP connection, connect gave up, stream not RFC 4571).
func (l *Leg) Done() <-chan struct{} { return l.done }

// Err tells why the leg failed; nil while it runs or if the owner closed it.
func (l *Leg) Err() error {
	l.errMu.Lock()
	defer l.errMu.Unlock()
	return l.err
}

func (l *Leg) markReady() { l.readyOnce.Do(func() { close(l.ready) }) }

// fail ends the leg on its own (not on the owner's Close) and logs why.
func (l *Leg) fail(err error) {
	if l.closing.Load() {
		return
	}
	l.errMu.Lock()
	first := l.err == nil
	if first {
		l.err = err
	}
	l.errMu.Unlock()
	if first {
		l.log.Error().Err(err).Msg("media leg failed")
	}
	l.doneOnce.Do(func() { close(l.done) })
}

func (l *Leg) finish() { l.doneOnce.Do(func() { close(l.done) }) }

// inbound is the receiving half of a leg, used by its reader goroutine only:
// it validates packets, numbers them continuously and counts per batch.
type inbound struct {
	leg     *Leg
	track   seqTracker
	packets uint64
	bytes   uint64
	dropped uint64
	warned  bool
}

// admit checks one frame (prefix room + RTP packet) and returns it ready to
// forward.
func (in *inbound) admit(frame []byte) (pkt, bool) {
	b := frame[frameHeaderLen:]
	hl, ok := rtpHeaderLen(b)
	if !ok {
		in.drop("not an RTP packet (short, not version 2, RTCP or bad header lengths)", 1)
		return pkt{}, false
	}
	ssrc := rtpSSRC(b)
	seq, restarted := in.track.next(ssrc, rtpSeq(b))
	if restarted {
		in.leg.log.Info().Uint32("ssrc", ssrc).Uint16("seq", rtpSeq(b)).Msg("media sender restarted; outgoing sequence continues")
	}
	in.packets++
	in.bytes += uint64(len(b))
	return pkt{frame: frame, seq: seq, datagram: in.leg.transport == UDP, key: psKeyStart(b[hl:])}, true
}

// drop counts n refused packets; the first one of a leg is logged.
func (in *inbound) drop(reason string, n int) {
	in.dropped += uint64(n)
	if !in.warned {
		in.warned = true
		in.leg.log.Warn().Str("reason", reason).Msg("dropping media packet (further drops are only counted)")
	}
}

// commit publishes the batch's counts.
func (in *inbound) commit(now int64) {
	c := &in.leg.in
	if in.packets > 0 {
		c.packets.Add(in.packets)
		c.bytes.Add(in.bytes)
		c.last.Store(now)
	}
	if in.dropped > 0 {
		c.dropped.Add(in.dropped)
	}
	c.lost.Store(in.track.lost)
	in.packets, in.bytes, in.dropped = 0, 0, 0
}

// output is the sending half of a leg: it numbers packets in its own
// sequence, rewrites SSRC and sequence in place and writes them to its one
// peer. Only one goroutine sends on an output at a time.
type output struct {
	leg     *Leg
	ssrc    uint32
	maxUDP  int
	started bool
	seqOff  uint16 // outgoing = leg's continuous number + seqOff

	udp  *udpSock
	dest atomic.Pointer[netip.AddrPort] // UDP peer; nil until known
	tcp  atomic.Pointer[net.TCPConn]    // nil until connected
	held backlog                        // packets waiting for the TCP connection

	warned bool
}

func (o *output) outSeq(in uint16) uint16 {
	if !o.started {
		// RFC 3550 wants a random initial sequence number.
		o.started = true
		o.seqOff = uint16(rand.Uint32()) - in
	}
	return in + o.seqOff
}

func (o *output) send(sc *scratch, pkts []pkt, now int64) {
	if len(pkts) == 0 {
		return
	}
	if o.udp != nil {
		o.sendUDP(sc, pkts, now)
	} else {
		o.sendTCP(sc, pkts, now)
	}
}

func (o *output) dropOut(n int, reason string) {
	o.leg.out.dropped.Add(uint64(n))
	if !o.warned {
		o.warned = true
		o.leg.log.Warn().Str("reason", reason).Msg("not sending media (further drops are only counted)")
	}
}

func (o *output) sendUDP(sc *scratch, pkts []pkt, now int64) {
	dp := o.dest.Load()
	if dp == nil {
		o.dropOut(len(pkts), "peer address not known yet")
		return
	}
	dest := *dp
	sc.out = sc.out[:0]
	for _, p := range pkts {
		b := p.rtp()
		seq := o.outSeq(p.seq)
		if len(b) <= o.maxUDP || p.datagram {
			rewrite(b, seq, o.ssrc)
			sc.out = append(sc.out, outMsg{body: b})
			if len(sc.out) == outCap && !o.flushUDP(sc, dest, now) {
				return
			}
			continue
		}
		// A TCP-framed packet too large for a datagram: split rather than
		// leave it to IP fragmentation, which many uppers and middleboxes
		// handle badly.
		hl, _ := rtpHeaderLen(b)
		pad := 0
		if b[0]&paddingBit != 0 {
			pad = int(b[len(b)-1])
		}
		count, chunk := fragmentPlan(len(b), hl, pad, o.maxUDP)
		if count == 0 || hl > maxFragHeader {
			o.dropOut(1, "RTP header too long to split the packet for UDP")
			continue
		}
		payload := b[hl : len(b)-pad]
		for i := 0; i < count; i++ {
			h := sc.fragHeader()[:hl]
			writeFragmentHeader(h, b[:hl], seq+uint16(i), o.ssrc, i == count-1)
			body := payload[min(i*chunk, len(payload)):min((i+1)*chunk, len(payload))]
			sc.out = append(sc.out, outMsg{hdr: h, body: body})
			if len(sc.out) == outCap && !o.flushUDP(sc, dest, now) {
				return
			}
		}
		o.seqOff += uint16(count - 1)
	}
	if len(sc.out) > 0 {
		o.flushUDP(sc, dest, now)
	}
}

// flushUDP sends the queued datagrams; false if the socket is closed.
func (o *output) flushUDP(sc *scratch, dest netip.AddrPort, now int64) bool {
	queued := len(sc.out)
	var bytes uint64
	for _, m := range sc.out {
		bytes += uint64(len(m.hdr) + len(m.body))
	}
	sent, err := o.udp.write(sc, dest)
	c := &o.leg.out
	if sent > 0 {
		c.packets.Add(uint64(sent))
		// Byte count assumes the refused datagrams (rare) were average sized.
		c.bytes.Add(bytes * uint64(sent) / uint64(queued))
		c.last.Store(now)
	}
	if sent < queued {
		c.dropped.Add(uint64(queued - sent))
	}
	return err == nil
}

func (o *output) sendTCP(sc *scratch, pkts []pkt, now int64) {
	conn := o.tcp.Load()
	if conn == nil {
		if n := o.held.add(pkts); n > 0 {
			o.dropOut(n, "TCP connection not established yet and the set-up backlog is full")
		}
		return
	}
	if o.leg.Err() != nil {
		return
	}
	if !o.held.empty() {
		o.held.drain(func(b []pkt) { o.writeTCP(sc, conn, b, now) })
	}
	o.writeTCP(sc, conn, pkts, now)
}

func (o *output) writeTCP(sc *scratch, conn *net.TCPConn, pkts []pkt, now int64) {
	if o.leg.Err() != nil {
		return
	}
	vec := sc.tcpVec[:0]
	var bytes uint64
	for _, p := range pkts {
		b := p.rtp()
		rewrite(b, o.outSeq(p.seq), o.ssrc)
		binary.BigEndian.PutUint16(p.frame, uint16(len(b)))
		vec = append(vec, p.frame)
		bytes += uint64(len(b))
	}
	sc.tcpOut = vec
	err := conn.SetWriteDeadline(time.Unix(0, now).Add(tcpWriteTimeout))
	if err == nil {
		_, err = sc.tcpOut.WriteTo(conn)
	}
	if err != nil {
		o.leg.fail(tcpWriteError(conn, err))
		return
	}
	c := &o.leg.out
	c.packets.Add(uint64(len(pkts)))
	c.bytes.Add(bytes)
	c.last.Store(now)
}
