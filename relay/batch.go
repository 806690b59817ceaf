package relay

import (
	"net"
	"net/netip"
	"sync"
)

const (
	// batchSize is how many datagrams one recvmmsg/sendmmsg moves.
	batchSize = 32
	// maxDatagram is the largest UDP datagram a receive leg accepts; larger
	// ones arrive truncated and are dropped. Devices packetize RTP over UDP
	// well below this; the 30+ KB packets some devices send come over TCP.
	maxDatagram = 8190
	// slotSize leaves room for an RFC 4571 prefix before each datagram so
	// that it can go out on TCP as it lies.
	slotSize = frameHeaderLen + maxDatagram
	// maxPkts bounds the packets forwarded in one go (TCP frames of one read).
	maxPkts = 64
	// outCap is how many datagrams are queued before a sendmmsg.
	outCap = 64
	// maxFragHeader bounds the RTP header (CSRCs, extension) copied into
	// each fragment of a packet that must be split.
	maxFragHeader = 128
	// scratchPoolCap bounds the idle batches kept for reuse (~260 KB each).
	// Under a flood of many streams each source holds a batch while it waits
	// on a full send buffer; with too few kept they were reallocated at
	// ~30 MB/s (relay benchmarks, 1,000 streams).
	scratchPoolCap = 64
)

// pkt is one validated RTP packet ready to forward.
type pkt struct {
	frame []byte // 2-byte RFC 4571 prefix (or room for it) + RTP packet
	seq   uint16 // continuous sequence number assigned by the receive leg
	// datagram: it arrived as a UDP datagram, so it is never split.
	datagram bool
	// key: its payload starts a PS pack of a key frame (psKeyStart).
	key bool
}

func (p pkt) rtp() []byte { return p.frame[frameHeaderLen:] }

// outMsg is one datagram to send: body alone (a packet rewritten in place)
// or hdr+body (a fragment: own header, then a slice of the original payload).
type outMsg struct {
	hdr, body []byte
}

// scratch is the working memory of one batch: receive slots, the packets
// to forward and the datagrams queued for sending. It is pooled, and held by
// a leg only while it moves packets, so that an idle leg holds none.
type scratch struct {
	slots   []byte // batchSize slots of slotSize
	size    [batchSize]int
	trunc   [batchSize]bool
	from    [batchSize]netip.AddrPort
	pkts    []pkt
	out     []outMsg
	fragHdr []byte // outCap headers of maxFragHeader
	tcpOut  net.Buffers
	tcpVec  [][]byte // backing array of tcpOut, which WriteTo consumes
	sys     sysBatch // OS-specific batched-I/O state
}

func newScratch() *scratch {
	sc := &scratch{
		slots:   make([]byte, batchSize*slotSize),
		pkts:    make([]pkt, 0, maxPkts),
		out:     make([]outMsg, 0, outCap),
		fragHdr: make([]byte, outCap*maxFragHeader),
		tcpVec:  make([][]byte, 0, maxPkts),
	}
	sc.initSys()
	return sc
}

// slot returns receive slot i, prefix room included.
func (sc *scratch) slot(i int) []byte {
	return sc.slots[i*slotSize : (i+1)*slotSize : (i+1)*slotSize]
}

// fragHeader returns the header room of the next queued datagram.
func (sc *scratch) fragHeader() []byte {
	i := len(sc.out) * maxFragHeader
	return sc.fragHdr[i : i+maxFragHeader]
}

// scratchPool is a plain free list rather than a sync.Pool: sync.Pool drops
// entries at each GC (and randomly under -race), which would show up as
// allocations on the forwarding path.
var scratchPool struct {
	mu   sync.Mutex
	free []*scratch
}

func getScratch() *scratch {
	scratchPool.mu.Lock()
	n := len(scratchPool.free)
	if n == 0 {
		scratchPool.mu.Unlock()
		return newScratch()
	}
	sc := scratchPool.free[n-1]
	scratchPool.free = scratchPool.free[:n-1]
	scratchPool.mu.Unlock()
	return sc
}

func putScratch(sc *scratch) {
	// Drop references into TCP read buffers so that a pooled batch does not
	// keep a closed connection's buffer alive.
	clear(sc.pkts[:cap(sc.pkts)])
	clear(sc.out[:cap(sc.out)])
	clear(sc.tcpVec[:cap(sc.tcpVec)])
	sc.pkts = sc.pkts[:0]
	sc.out = sc.out[:0]
	scratchPool.mu.Lock()
	if len(scratchPool.free) < scratchPoolCap {
		scratchPool.free = append(scratchPool.free, sc)
	}
	scratchPool.mu.Unlock()
}
