package relay

// backlog keeps copies of packets a leg can't pass on yet, or must pass on
// again: a Source keeps the packets since the stream's last key frame (or,
// before any and while it has no Sink, since the stream began: the device
// streams as soon as it has our ACK, before the upper's leg exists) for
// each receiver that joins; a TCP Sink keeps what arrives before its
// connection is up (the upper dials in, or listens, only after our 200 OK).
// Either way a receiver starts with a key frame instead of waiting a whole
// GOP for the next one. A Source's backlog keeps its buffer from one key
// frame to the next, so that recording allocates nothing once warm.
type backlog struct {
	buf     []byte
	entries []backlogEntry
	pkts    []pkt
}

type backlogEntry struct {
	off, n   int
	seq      uint16
	datagram bool
}

// maxBacklog bounds a backlog: about four seconds of a 4 Mbit/s stream.
const maxBacklog = 2 << 20

func (q *backlog) empty() bool { return len(q.entries) == 0 }

// push copies p in; false if it does not fit.
func (q *backlog) push(p pkt) bool {
	if len(q.buf)+len(p.frame) > maxBacklog {
		return false
	}
	q.entries = append(q.entries, backlogEntry{off: len(q.buf), n: len(p.frame), seq: p.seq, datagram: p.datagram})
	q.buf = append(q.buf, p.frame...)
	return true
}

// add copies pkts in; it returns how many did not fit.
func (q *backlog) add(pkts []pkt) (dropped int) {
	for _, p := range pkts {
		if !q.push(p) {
			dropped++
		}
	}
	return dropped
}

// replay hands the held packets to send in batches no larger than the
// scratch buffers take, and keeps them. send may rewrite them in place.
func (q *backlog) replay(send func([]pkt)) {
	for e := q.entries; len(e) > 0; {
		n := min(len(e), maxPkts)
		q.pkts = q.pkts[:0]
		for _, e := range e[:n] {
			q.pkts = append(q.pkts, pkt{frame: q.buf[e.off : e.off+e.n], seq: e.seq, datagram: e.datagram})
		}
		send(q.pkts)
		e = e[n:]
	}
}

// drain replays the held packets, then forgets them and frees the memory.
func (q *backlog) drain(send func([]pkt)) {
	q.replay(send)
	*q = backlog{}
}

// reset forgets the held packets but keeps the memory for the next ones.
func (q *backlog) reset() {
	q.buf = q.buf[:0]
	q.entries = q.entries[:0]
}
