package relay

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/pion/rtp"
)

func TestSeqTracker(t *testing.T) {
	type step struct {
		ssrc uint32
		seq  uint16
		want uint16
		rest bool
	}
	cases := map[string][]step{
		"wraps without restart":    {{1, 65534, 65534, false}, {1, 65535, 65535, false}, {1, 0, 0, false}, {1, 1, 1, false}},
		"new ssrc continues":       {{1, 10, 10, false}, {1, 11, 11, false}, {2, 900, 12, true}, {2, 901, 13, false}},
		"forward jump continues":   {{1, 10, 10, false}, {1, 10 + maxDropout, 11, true}, {1, 11 + maxDropout, 12, false}},
		"backward jump continues":  {{1, 500, 500, false}, {1, 500 - maxMisorder - 1, 501, true}},
		"gap kept, late kept":      {{1, 10, 10, false}, {1, 13, 13, false}, {1, 11, 11, false}, {1, 14, 14, false}},
		"duplicate same number":    {{1, 10, 10, false}, {1, 10, 10, false}, {1, 11, 11, false}},
		"restart after restart":    {{1, 10, 10, false}, {2, 7, 11, true}, {3, 40000, 12, true}, {3, 40001, 13, false}},
		"restart keeps gaps after": {{1, 10, 10, false}, {2, 100, 11, true}, {2, 103, 14, false}},
	}
	for name, steps := range cases {
		var tr seqTracker
		for i, s := range steps {
			got, rest := tr.next(s.ssrc, s.seq)
			if got != s.want || rest != s.rest {
				t.Errorf("%s step %d: next(%d, %d) = %d, %v; want %d, %v", name, i, s.ssrc, s.seq, got, rest, s.want, s.rest)
			}
		}
	}

	var tr seqTracker
	for _, s := range []uint16{1, 2, 5, 6, 4, 9} { // 3, 7, 8 missing; 4 late
		tr.next(1, s)
	}
	if tr.lost != 3 {
		t.Errorf("lost = %d, want 3", tr.lost)
	}
}

func marshal(t testing.TB, p *rtp.Packet) []byte {
	t.Helper()
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRTPHeaderLen(t *testing.T) {
	full := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, CSRC: []uint32{1, 2}, Padding: true, PaddingSize: 4}, Payload: []byte("payload")}
	if err := full.SetExtensionWithProfile(1, []byte{9, 9, 9}, 0xBEDE); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*rtp.Packet{
		{Header: rtp.Header{Version: 2, PayloadType: 96}},
		{Header: rtp.Header{Version: 2, PayloadType: 8, Marker: true}, Payload: []byte{1}},
		full,
	} {
		b := marshal(t, p)
		if h, ok := rtpHeaderLen(b); !ok || h != p.Header.MarshalSize() {
			t.Errorf("rtpHeaderLen = %d, %v; want %d, true", h, ok, p.Header.MarshalSize())
		}
	}
	for name, b := range map[string][]byte{
		"empty":            nil,
		"short":            {0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0},
		"version 0":        make([]byte, 12),
		"RTCP receiver":    {0x81, 0xc9, 0, 7, 0, 0, 0, 1, 0, 0, 0, 0},
		"CSRC past end":    {0x81, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1},
		"extension cut":    {0x90, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde},
		"extension length": {0x90, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde, 0, 9},
		"zero padding":     {0xa0, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0},
	} {
		if _, ok := rtpHeaderLen(b); ok {
			t.Errorf("%s: accepted as RTP", name)
		}
	}
}

func TestNextFrame(t *testing.T) {
	stream := []byte{0, 3, 'a', 'b', 'c', 0, 1, 'x', 0}
	size, complete, err := nextFrame(stream)
	if size != 5 || !complete || err != nil {
		t.Fatalf("first frame: %d %v %v", size, complete, err)
	}
	if size, complete, _ = nextFrame(stream[5:7]); size != 3 || complete {
		t.Fatalf("split frame: %d %v, want 3 incomplete", size, complete)
	}
	if _, complete, _ = nextFrame(stream[8:]); complete {
		t.Fatal("one byte of a length prefix reported complete")
	}
	if _, _, err = nextFrame([]byte{0, 0, 1}); err == nil {
		t.Fatal("zero length accepted")
	}
}

func TestFragmentPlan(t *testing.T) {
	for _, c := range []struct{ pkt, hdr, pad, max, count, chunk int }{
		{1400, 12, 0, 1400, 1, 1388},
		{1401, 12, 0, 1400, 2, 1388},
		{30012, 12, 0, 1400, 22, 1388},
		{30012, 12, 4, 1400, 22, 1388},
		{300, 300, 0, 256, 0, 0}, // header alone too big
		{500, 12, 488, 256, 1, 244},
	} {
		count, chunk := fragmentPlan(c.pkt, c.hdr, c.pad, c.max)
		if count != c.count || chunk != c.chunk {
			t.Errorf("fragmentPlan(%d, %d, %d, %d) = %d, %d; want %d, %d", c.pkt, c.hdr, c.pad, c.max, count, chunk, c.count, c.chunk)
		}
	}
}

// FuzzRTPInput feeds arbitrary bytes through what a receive leg does with
// them: framing, validation, renumbering and the split for UDP. Nothing may
// panic, frames must tile the stream, and a split packet must reassemble.
func FuzzRTPInput(f *testing.F) {
	p := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, Marker: true, CSRC: []uint32{7}}, Payload: bytes.Repeat([]byte{0xab}, 3000)}
	b := marshal(f, p)
	f.Add(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b, uint16(300))
	f.Add([]byte{0, 0}, []byte{0x80}, uint16(256))
	f.Add([]byte{0xff, 0xff, 0x80, 0x60}, []byte("not rtp"), uint16(1400))
	f.Add([]byte{0, 12, 0xa0, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1}, []byte{0x90, 0x60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xbe, 0xde, 0xff, 0xff}, uint16(600))
	f.Fuzz(func(t *testing.T, stream, packet []byte, max uint16) {
		var tr seqTracker
		for rest := stream; ; {
			size, complete, err := nextFrame(rest)
			if err != nil || !complete {
				break
			}
			if size < frameHeaderLen || size > len(rest) {
				t.Fatalf("frame size %d out of %d bytes", size, len(rest))
			}
			if _, ok := rtpHeaderLen(rest[frameHeaderLen:size]); ok {
				tr.next(rtpSSRC(rest[frameHeaderLen:]), rtpSeq(rest[frameHeaderLen:]))
			}
			rest = rest[size:]
		}

		hl, ok := rtpHeaderLen(packet)
		if !ok || int(max) < 2*maxFragHeader || hl > maxFragHeader {
			return
		}
		pad := 0
		if packet[0]&paddingBit != 0 {
			pad = int(packet[len(packet)-1])
		}
		count, chunk := fragmentPlan(len(packet), hl, pad, int(max))
		payload := packet[hl : len(packet)-pad]
		var got []byte
		hdr := make([]byte, hl)
		for i := 0; i < count; i++ {
			writeFragmentHeader(hdr, packet[:hl], uint16(i), 1, i == count-1)
			body := payload[min(i*chunk, len(payload)):min((i+1)*chunk, len(payload))]
			if len(hdr)+len(body) > int(max) {
				t.Fatalf("fragment of %d bytes over %d", len(hdr)+len(body), max)
			}
			if h, ok := rtpHeaderLen(append(hdr[:hl:hl], body...)); !ok || h != hl {
				t.Fatalf("fragment %d is not valid RTP", i)
			}
			got = append(got, body...)
		}
		if !bytes.Equal(got, payload) {
			t.Fatal("fragments do not reassemble the payload")
		}
	})
}
