package relay

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

// Devices commonly send 1,412-byte RTP packets (1,400 payload + header):
// they fit an Ethernet UDP datagram and leave exactly as they came.
func TestUDP1412PacketsUnsplit(t *testing.T) {
	for _, sinkT := range []Transport{UDP, TCPPassive} {
		t.Run(sinkT.String(), func(t *testing.T) {
			r := newTestRelay(t, nil)
			src, dev := openSource(t, r, UDP, SourceOptions{ID: "1412"})
			defer src.Close()
			k, up := addSink(t, src, sinkT, 77, SinkOptions{})
			const n = 200
			st := &stream{ssrc: 5}
			var sent [][]byte
			for i := range n {
				b := st.next(randomPayload(1400), i%10 == 9)
				sent = append(sent, b)
				dev.write(b)
			}
			var bytesIn int
			for i := range n {
				b := up.read(5 * time.Second)
				if b == nil {
					t.Fatalf("packet %d of %d missing", i, n)
				}
				if len(b) != 1412 || !bytes.Equal(b[12:], sent[i][12:]) {
					t.Fatalf("packet %d: %d bytes, want the 1,412-byte packet unchanged", i, len(b))
				}
				bytesIn += len(b)
			}
			eventually(t, "the sink's counters", func() bool { return k.Stats().Out.Packets == n })
			if in, out := src.Stats().In, k.Stats().Out; in.Packets != out.Packets || in.Bytes != out.Bytes || out.Bytes != uint64(bytesIn) {
				t.Fatalf("in %d packets %d bytes, out %d packets %d bytes, received %d bytes: want all equal", in.Packets, in.Bytes, out.Packets, out.Bytes, bytesIn)
			}
		})
	}
}

// psPack is an RTP payload starting a PS pack (MPEG-2 pack header, here
// with stuffing bytes): a key frame's carries a system header next, other
// frames' go straight to a video PES.
func psPack(key bool, stuffing, n int) []byte {
	b := []byte{0, 0, 1, psPackHeader, 0x44, 0, 0x04, 0, 0x04, 0x01, 0x01, 0x38, 0x83, 0xf8 | byte(stuffing)}
	b = append(b, bytes.Repeat([]byte{0xff}, stuffing)...)
	if key {
		b = append(b, 0, 0, 1, psSystemHeader, 0, 9)
	} else {
		b = append(b, 0, 0, 1, 0xE0, 0xff, 0xff)
	}
	return append(b, randomPayload(n-len(b))...)
}

// frame sends one frame of parts packets and returns them.
func sendFrame(dev *peer, st *stream, key bool, parts int) [][]byte {
	var out [][]byte
	for i := range parts {
		payload := randomPayload(1000)
		if i == 0 {
			payload = psPack(key, int(st.seq)%8, 1000)
		}
		b := st.next(payload, i == parts-1)
		out = append(out, b)
		dev.write(b)
	}
	return out
}

// A receiver that joins a running stream gets the packets since the last
// key frame first, so its first packet starts a key frame's PS pack.
func TestJoiningSinkStartsAtKeyFrame(t *testing.T) {
	for _, c := range []struct{ src, sink Transport }{{UDP, UDP}, {UDP, TCPPassive}, {TCPPassive, UDP}} {
		t.Run(fmt.Sprintf("%v-to-%v", c.src, c.sink), func(t *testing.T) {
			r := newTestRelay(t, nil)
			src, dev := openSource(t, r, c.src, SourceOptions{ID: "join"})
			defer src.Close()
			_, first := addSink(t, src, UDP, 1, SinkOptions{})
			st := &stream{ssrc: 9, seq: 65530} // wraps while cached
			var sent [][]byte
			gop := func() {
				sent = append(sent, sendFrame(dev, st, true, 4)...)
				for range 5 {
					sent = append(sent, sendFrame(dev, st, false, 2)...)
				}
			}
			gop()
			lastKey := len(sent)
			gop()
			eventually(t, "the stream to reach the relay", func() bool { return src.Stats().In.Packets == uint64(len(sent)) })

			_, second := addSink(t, src, c.sink, 2, SinkOptions{})
			sent = append(sent, sendFrame(dev, st, false, 2)...)

			want := sent[lastKey:]
			var prev uint16
			for i, w := range want {
				p := second.readRTP(5 * time.Second)
				if p == nil {
					t.Fatalf("second viewer: packet %d of %d missing", i, len(want))
				}
				if i == 0 && !psKeyStart(p.Payload) {
					t.Fatalf("second viewer's first packet does not start a key frame's PS pack: % x", p.Payload[:20])
				}
				if !bytes.Equal(p.Payload, w[12:]) || p.SSRC != 2 {
					t.Fatalf("second viewer: packet %d (SSRC %d) differs from packet %d since the key frame", i, p.SSRC, i)
				}
				if i > 0 && p.SequenceNumber != prev+1 {
					t.Fatalf("second viewer: sequence %d after %d", p.SequenceNumber, prev)
				}
				prev = p.SequenceNumber
			}
			for i, w := range sent {
				p := first.readRTP(5 * time.Second)
				if p == nil || !bytes.Equal(p.Payload, w[12:]) {
					t.Fatalf("first viewer: packet %d missing or different (each packet once, in order)", i)
				}
			}
		})
	}
}

// A GOP beyond the bound is not kept: a half GOP would decode as a broken
// picture, so the late viewer starts live as before; the next key frame is
// kept again.
func TestJoiningSinkAfterOversizedGOP(t *testing.T) {
	r := newTestRelay(t, nil)
	src, dev := openSource(t, r, TCPPassive, SourceOptions{ID: "big-gop"})
	defer src.Close()
	_, _ = addSink(t, src, UDP, 1, SinkOptions{})
	st := &stream{ssrc: 3}
	n := 0
	dev.write(st.next(psPack(true, 0, 30000), false))
	n++
	for sent := 30000; sent <= maxBacklog; sent += 30000 {
		dev.write(st.next(randomPayload(30000), false))
		n++
	}
	eventually(t, "the GOP to reach the relay", func() bool { return src.Stats().In.Packets == uint64(n) })
	_, late := addSink(t, src, UDP, 2, SinkOptions{})
	live := st.next(psPack(false, 0, 1000), true)
	dev.write(live)
	p := late.readRTP(5 * time.Second)
	if p == nil || !bytes.Equal(p.Payload, live[12:]) {
		t.Fatal("late viewer after an oversized GOP: want the live packet first")
	}

	key := st.next(psPack(true, 3, 1000), true)
	dev.write(key)
	if p := late.readRTP(5 * time.Second); p == nil || !bytes.Equal(p.Payload, key[12:]) {
		t.Fatal("late viewer: key frame missing")
	}
	eventually(t, "the key frame to reach the relay", func() bool { return src.Stats().In.Packets == uint64(n+2) })
	_, third := addSink(t, src, UDP, 3, SinkOptions{})
	dev.write(st.next(psPack(false, 0, 1000), true))
	if p := third.readRTP(5 * time.Second); p == nil || !bytes.Equal(p.Payload, key[12:]) {
		t.Fatal("viewer joining after a new key frame: want that key frame first")
	}
}

func TestPSKeyStart(t *testing.T) {
	for _, c := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"key frame", psPack(true, 0, 100), true},
		{"key frame with stuffing", psPack(true, 7, 100), true},
		{"key frame, stream map first", append(psPack(false, 2, 40)[:16], 0, 0, 1, psMap, 0, 0), true},
		{"other frame", psPack(false, 0, 100), false},
		{"MPEG-1 pack header", append([]byte{0, 0, 1, psPackHeader, 0x21}, psPack(true, 0, 100)[5:]...), false},
		{"pack header cut short", psPack(true, 5, 100)[:20], false},
		{"middle of a frame", randomPayload(100), false},
		{"empty", nil, false},
	} {
		if got := psKeyStart(c.b); got != c.want {
			t.Errorf("%s: psKeyStart = %v, want %v", c.name, got, c.want)
		}
	}
}

// FuzzPSKeyStart: any payload, any length, no panic.
func FuzzPSKeyStart(f *testing.F) {
	f.Add(psPack(true, 7, 40))
	f.Add(psPack(false, 0, 40))
	f.Fuzz(func(t *testing.T, b []byte) { psKeyStart(b) })
}

// BenchmarkGOPKeep is the per-packet cost of keeping a running PS stream's
// packets since its last key frame (a GOP of 512 packets of 1,412 bytes):
// a copy, and no allocation once the buffer has grown.
func BenchmarkGOPKeep(b *testing.B) {
	s := &Source{}
	st := &stream{ssrc: 1}
	batches := make([][]pkt, 8)
	for i := range batches {
		for j := range maxPkts {
			payload := randomPayload(1400)
			if i == 0 && j == 0 {
				payload = psPack(true, 0, 1400)
			}
			frame := append([]byte{0, 0}, st.next(payload, false)...)
			batches[i] = append(batches[i], pkt{frame: frame, seq: uint16(j), datagram: true, key: psKeyStart(payload)})
		}
	}
	for _, batch := range batches { // warm: the buffer grows over the first GOP
		s.keep(batch, true)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N { // an op is one GOP: make bench runs one
		for _, batch := range batches {
			s.keep(batch, true)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batches)*maxPkts), "ns/pkt")
}
