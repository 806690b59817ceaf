package relay

// backlog keeps the packets a leg can't pass on yet — a Source with no Sink
// attached (the device streams as soon as it has our ACK, before the upper's
// leg exists), or a TCP Sink whose connection is not up (the upper dials in,
// or listens, only after our 200 OK) — so that the receiver starts with the
// stream's first frame, usually the key frame, instead of waiting a whole
// GOP for the next one. It holds copies, allocated only while set-up lasts
// and released once drained.
type backlog struct {
	buf     []byte
	entries []backlogEntry
	pkts    []pkt
}

type backlogEntry struct {
	off, n int
	seq    uint16
}

// maxBacklog bounds a backlog: about four seconds of a 4 Mbit/s stream.
const maxBacklog = 2 << 20

func (q *backlog) empty() bool { return len(q.entries) == 0 }

// add copies pkts in; it returns how many did not fit.
func (q *backlog) add(pkts []pkt) (dropped int) {
	for _, p := range pkts {
		if len(q.buf)+len(p.frame) > maxBacklog {
			dropped++
			continue
		}
		q.entries = append(q.entries, backlogEntry{off: len(q.buf), n: len(p.frame), seq: p.seq})
		q.buf = append(q.buf, p.frame...)
	}
	return dropped
}

// drain hands the held packets to send in batches no larger than the
// scratch buffers take, then forgets them.
func (q *backlog) drain(send func([]pkt)) {
	for len(q.entries) > 0 {
		n := min(len(q.entries), maxPkts)
		q.pkts = q.pkts[:0]
		for _, e := range q.entries[:n] {
			q.pkts = append(q.pkts, pkt{frame: q.buf[e.off : e.off+e.n], seq: e.seq})
		}
		send(q.pkts)
		q.entries = q.entries[n:]
	}
	*q = backlog{}
}
