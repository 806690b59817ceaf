package relay

import (
	"encoding/binary"
	"errors"
)

// RTP fixed-header fields that the relay reads or patches in place.
const (
	rtpMinLen  = 12
	markerBit  = 0x80
	paddingBit = 0x20
)

// rtpHeaderLen returns the length of b's RTP header (fixed part, CSRCs and
// extension) and whether b is a well-formed RTP packet the relay may forward.
// RTCP multiplexed on the RTP port (RFC 5761: second byte 192–223) is refused:
// its SSRCs would leak through unrewritten.
func rtpHeaderLen(b []byte) (int, bool) {
	if len(b) < rtpMinLen || b[0]>>6 != 2 || (b[1] >= 192 && b[1] <= 223) {
		return 0, false
	}
	h := rtpMinLen + int(b[0]&0x0f)*4
	if b[0]&0x10 != 0 {
		if len(b) < h+4 {
			return 0, false
		}
		h += 4 + int(binary.BigEndian.Uint16(b[h+2:]))*4
	}
	if h > len(b) {
		return 0, false
	}
	if b[0]&paddingBit != 0 {
		pad := int(b[len(b)-1])
		if pad == 0 || h+pad > len(b) {
			return 0, false
		}
	}
	return h, true
}

func rtpSeq(b []byte) uint16  { return binary.BigEndian.Uint16(b[2:4]) }
func rtpSSRC(b []byte) uint32 { return binary.BigEndian.Uint32(b[8:12]) }

// rewrite patches sequence number and SSRC in place: no copy, no allocation.
func rewrite(b []byte, seq uint16, ssrc uint32) {
	binary.BigEndian.PutUint16(b[2:4], seq)
	binary.BigEndian.PutUint32(b[8:12], ssrc)
}

// RFC 3550 appendix A.1 limits: a forward step larger than maxDropout or a
// backward step larger than maxMisorder is a restart, not loss or reordering.
const (
	maxDropout  = 3000
	maxMisorder = 100
)

// seqTracker turns one receive leg's sequence numbers into a continuous
// sequence: when the sender restarts (new SSRC, or a jump beyond the RFC 3550
// limits) the numbering continues from the highest one seen so far, while
// real gaps (loss) and reordering are kept so that receivers can still see
// them. It also counts lost packets. Only the leg's reader goroutine uses it.
type seqTracker struct {
	started bool
	ssrc    uint32
	highest uint16 // highest raw sequence number of the current run
	offset  uint16 // added to raw numbers of the current run
	lost    uint64
}

// next returns the continuous sequence number for a packet and whether the
// packet starts a new run (sender restart).
func (t *seqTracker) next(ssrc uint32, seq uint16) (uint16, bool) {
	if !t.started {
		t.started, t.ssrc, t.highest = true, ssrc, seq
		return seq, false
	}
	if ssrc == t.ssrc {
		d := seq - t.highest
		switch {
		case d == 0: // duplicate
		case d < maxDropout:
			t.lost += uint64(d - 1)
			t.highest = seq
		case d > 0xffff-maxMisorder: // late packet fills a gap counted as lost
			if t.lost > 0 {
				t.lost--
			}
		default:
			t.restart(ssrc, seq)
			return seq + t.offset, true
		}
		return seq + t.offset, false
	}
	t.restart(ssrc, seq)
	return seq + t.offset, true
}

func (t *seqTracker) restart(ssrc uint32, seq uint16) {
	t.offset = t.highest + t.offset + 1 - seq
	t.ssrc, t.highest = ssrc, seq
}

// RFC 4571 framing: a 2-byte big-endian length, then the packet.
const frameHeaderLen = 2

var errZeroFrame = errors.New("RFC 4571 frame of length 0")

// nextFrame inspects the start of b, a TCP byte stream. It returns the total
// length (prefix included) of the first frame and whether b holds all of it.
// A zero length means the stream is not RFC 4571 framed: an error.
func nextFrame(b []byte) (size int, complete bool, err error) {
	if len(b) < frameHeaderLen {
		return 0, false, nil
	}
	n := int(binary.BigEndian.Uint16(b))
	if n == 0 {
		return 0, false, errZeroFrame
	}
	size = frameHeaderLen + n
	return size, len(b) >= size, nil
}

// fragmentPlan tells how an RTP packet of pktLen bytes with a header of hdrLen
// bytes and pad padding bytes splits into packets of at most max bytes: the
// number of packets and the payload bytes carried by each (the last carries
// the rest). count is 0 when the header alone does not fit in max.
func fragmentPlan(pktLen, hdrLen, pad, max int) (count, chunk int) {
	chunk = max - hdrLen
	if chunk <= 0 {
		return 0, 0
	}
	payload := pktLen - hdrLen - pad
	if payload <= 0 {
		return 1, chunk
	}
	return (payload + chunk - 1) / chunk, chunk
}

// writeFragmentHeader copies the original header into dst and makes it the
// header of one fragment: own sequence number and SSRC, padding dropped
// (padding is stripped from the payload), marker only on the last fragment
// and only if the original packet had it.
func writeFragmentHeader(dst, hdr []byte, seq uint16, ssrc uint32, last bool) {
	copy(dst, hdr)
	dst[0] &^= paddingBit
	if !last {
		dst[1] &^= markerBit
	}
	rewrite(dst, seq, ssrc)
}

// MPEG-2 program stream start codes (ISO/IEC 13818-1 §2.5.3).
const (
	psPackHeader   = 0xBA
	psSystemHeader = 0xBB
	psMap          = 0xBC
	// psPackHeaderLen is an MPEG-2 pack header without its stuffing bytes.
	psPackHeaderLen = 14
)

// psKeyStart reports whether an RTP payload starts a key frame of a GB/T
// 28181 program stream: devices start each frame's pack in a new RTP packet,
// and only key frames follow the pack header with a system header (or
// directly the stream map). It reads a few bytes and never allocates: it
// runs on every packet.
func psKeyStart(p []byte) bool {
	if len(p) < psPackHeaderLen+4 || p[0] != 0 || p[1] != 0 || p[2] != 1 || p[3] != psPackHeader || p[4]>>6 != 1 {
		return false
	}
	n := psPackHeaderLen + int(p[13]&7) // pack_stuffing_length
	return len(p) >= n+4 && p[n] == 0 && p[n+1] == 0 && p[n+2] == 1 && (p[n+3] == psSystemHeader || p[n+3] == psMap)
}
