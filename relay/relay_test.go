package relay

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
)

var transports = []Transport{UDP, TCPPassive, TCPActive}

// sent is what a test sent, to check what arrives against.
type sent struct {
	payload []byte
	marker  bool
	ts      uint32
}

// sendFrames sends n packets of random sizes up to maxPayload from dev.
func sendFrames(dev *peer, st *stream, n, maxPayload int) []sent {
	var out []sent
	for i := 0; i < n; i++ {
		pl := randomPayload(1 + rand.IntN(maxPayload))
		marker := i%7 == 6
		ts := st.ts
		dev.write(st.next(pl, marker))
		out = append(out, sent{pl, marker, ts})
		if i%50 == 49 && dev.udp != nil {
			time.Sleep(time.Millisecond) // let a UDP reader keep up
		}
	}
	return out
}

// expectStream reads len(want) packets from up and checks each: the sink's
// SSRC, identical payload, marker and timestamp, and a sequence continuing
// from *seq (set from the first packet when *seq is negative).
func expectStream(t *testing.T, up *peer, want []sent, ssrc uint32, seq *int) {
	t.Helper()
	for i, w := range want {
		p := up.readRTP(2 * time.Second)
		if p == nil {
			t.Fatalf("packet %d of %d did not arrive", i, len(want))
		}
		if p.SSRC != ssrc {
			t.Fatalf("packet %d: SSRC %d, want the sink's %d", i, p.SSRC, ssrc)
		}
		if *seq >= 0 && p.SequenceNumber != uint16(*seq) {
			t.Fatalf("packet %d: sequence %d, want %d (continuous)", i, p.SequenceNumber, uint16(*seq))
		}
		*seq = int(p.SequenceNumber+1) & 0xffff
		if !bytes.Equal(p.Payload, w.payload) || p.Marker != w.marker || p.Timestamp != w.ts || p.PayloadType != 96 {
			t.Fatalf("packet %d differs: marker %v ts %d pt %d len %d, want marker %v ts %d len %d",
				i, p.Marker, p.Timestamp, p.PayloadType, len(p.Payload), w.marker, w.ts, len(w.payload))
		}
	}
}

func TestAllTransportCombinations(t *testing.T) {
	r := newTestRelay(t, nil)
	for _, st := range transports {
		for _, kt := range transports {
			t.Run(st.String()+"-to-"+kt.String(), func(t *testing.T) {
				t.Parallel()
				src, dev := openSource(t, r, st, SourceOptions{ID: t.Name()})
				defer src.Close()
				dev.splitWrites = true
				const ssrc = 1100000042
				_, up := addSink(t, src, kt, ssrc, SinkOptions{ID: "upper"})
				stream := &stream{ssrc: 777, seq: 65500} // wraps
				want := sendFrames(dev, stream, 300, 1300)
				seq := -1
				expectStream(t, up, want, ssrc, &seq)
				if st := src.Stats(); st.In.Packets != 300 || st.In.Lost != 0 || st.In.Dropped != 0 {
					t.Errorf("source stats %+v, want 300 packets, none lost or dropped", st.In)
				}
			})
		}
	}
}

func TestSenderRestartKeepsSequenceContinuous(t *testing.T) {
	r := newTestRelay(t, nil)
	for _, st := range []Transport{UDP, TCPPassive} {
		t.Run(st.String(), func(t *testing.T) {
			src, dev := openSource(t, r, st, SourceOptions{ID: "restart"})
			defer src.Close()
			_, up := addSink(t, src, UDP, 42, SinkOptions{})
			seq := -1
			a := &stream{ssrc: 1, seq: 65530}
			expectStream(t, up, sendFrames(dev, a, 20, 500), 42, &seq)
			b := &stream{ssrc: 2, seq: 100} // new SSRC
			expectStream(t, up, sendFrames(dev, b, 20, 500), 42, &seq)
			b.seq = 30000 // forward jump
			expectStream(t, up, sendFrames(dev, b, 20, 500), 42, &seq)
			b.seq = 5 // backward jump
			expectStream(t, up, sendFrames(dev, b, 20, 500), 42, &seq)
			if s := src.Stats(); s.In.Lost != 0 || s.In.Packets != 80 {
				t.Errorf("stats %+v: restarts must not count as loss", s.In)
			}
		})
	}
}

func TestLossKeepsGapAndCounts(t *testing.T) {
	r := newTestRelay(t, nil)
	src, dev := openSource(t, r, UDP, SourceOptions{})
	defer src.Close()
	_, up := addSink(t, src, UDP, 9, SinkOptions{})
	st := &stream{ssrc: 5, seq: 10}
	for i := 0; i < 10; i++ {
		dev.write(st.next([]byte{byte(i)}, false))
		if i == 4 {
			st.seq += 2 // two packets lost on the way
		}
	}
	var seqs []uint16
	for i := 0; i < 10; i++ {
		p := up.readRTP(2 * time.Second)
		if p == nil {
			t.Fatalf("packet %d missing", i)
		}
		seqs = append(seqs, p.SequenceNumber)
	}
	for i := 1; i < len(seqs); i++ {
		want := uint16(1)
		if i == 5 {
			want = 3 // the gap is passed on so that the upper sees the loss
		}
		if seqs[i]-seqs[i-1] != want {
			t.Fatalf("sequence step %d→%d at %d, want %d", seqs[i-1], seqs[i], i, want)
		}
	}
	if lost := src.Stats().In.Lost; lost != 2 {
		t.Errorf("Lost = %d, want 2", lost)
	}
}

// reassemble reads fragments from up until one carries... the original's
// timestamp changes; it returns them.
func readFragments(t *testing.T, up *peer, n int) []*rtp.Packet {
	t.Helper()
	var out []*rtp.Packet
	for i := 0; i < n; i++ {
		b := up.read(2 * time.Second)
		if b == nil {
			t.Fatalf("fragment %d of %d missing", i, n)
		}
		if len(b) > defaultMaxUDPPayload {
			t.Fatalf("fragment of %d bytes exceeds MaxUDPPayload %d", len(b), defaultMaxUDPPayload)
		}
		var p rtp.Packet
		if err := p.Unmarshal(b); err != nil {
			t.Fatal(err)
		}
		out = append(out, &p)
	}
	return out
}

func TestLargeTCPPacketsSplitForUDP(t *testing.T) {
	r := newTestRelay(t, nil)
	src, dev := openSource(t, r, TCPPassive, SourceOptions{ID: "big"})
	defer src.Close()
	dev.splitWrites = true
	_, up := addSink(t, src, UDP, 31, SinkOptions{})

	cases := []struct {
		name    string
		payload int
		marker  bool
		hdr     func(*rtp.Header)
		padding byte
	}{
		{name: "30KB marked", payload: 30000, marker: true},
		{name: "30KB unmarked", payload: 30000},
		{name: "exactly fits", payload: defaultMaxUDPPayload - 12, marker: true},
		{name: "one byte over", payload: defaultMaxUDPPayload - 12 + 1, marker: true},
		{name: "largest frame", payload: 65535 - 12},
		{name: "csrc extension padding", payload: 5000, marker: true, padding: 7, hdr: func(h *rtp.Header) {
			h.CSRC = []uint32{11, 22}
			if err := h.SetExtensionWithProfile(1, []byte{1, 2, 3}, 0xBEDE); err != nil {
				t.Fatal(err)
			}
		}},
	}
	seq := -1
	var ts uint32 = 1000
	for i, c := range cases {
		payload := randomPayload(c.payload)
		p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: uint16(500 + i), Timestamp: ts, SSRC: 3, Marker: c.marker}, Payload: payload}
		if c.hdr != nil {
			c.hdr(&p.Header)
		}
		if c.padding > 0 {
			p.Header.Padding, p.Header.PaddingSize = true, c.padding
		}
		b, err := p.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		dev.write(b)
		hl := p.Header.MarshalSize()
		n := 1
		if len(b) > defaultMaxUDPPayload {
			chunk := defaultMaxUDPPayload - hl
			n = (c.payload + chunk - 1) / chunk
		}
		frags := readFragments(t, up, n)
		var got []byte
		for i, f := range frags {
			if seq >= 0 && f.SequenceNumber != uint16(seq) {
				t.Fatalf("%s: fragment %d sequence %d, want %d", c.name, i, f.SequenceNumber, uint16(seq))
			}
			seq = int(f.SequenceNumber+1) & 0xffff
			if f.Timestamp != ts || f.SSRC != 31 {
				t.Fatalf("%s: fragment %d timestamp %d SSRC %d, want %d and 31", c.name, i, f.Timestamp, f.SSRC, ts)
			}
			if wantM := c.marker && i == len(frags)-1; f.Marker != wantM {
				t.Fatalf("%s: fragment %d of %d marker %v, want %v", c.name, i, len(frags), f.Marker, wantM)
			}
			if len(f.CSRC) != len(p.CSRC) || !bytes.Equal(f.GetExtension(1), p.GetExtension(1)) {
				t.Fatalf("%s: fragment %d lost CSRCs or extension", c.name, i)
			}
			got = append(got, f.Payload...)
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("%s: reassembled payload (%d bytes) differs from the original (%d)", c.name, len(got), len(payload))
		}
		ts += 3600
	}
}

// A packet that arrived as a UDP datagram already crossed a UDP path: it
// leaves as one datagram, even above MaxUDPPayload.
func TestUDPDatagramNeverSplit(t *testing.T) {
	r := newTestRelay(t, func(c *Config) { c.MaxUDPPayload = 500 })
	src, dev := openSource(t, r, UDP, SourceOptions{})
	defer src.Close()
	_, up := addSink(t, src, UDP, 8, SinkOptions{})
	st := &stream{ssrc: 4}
	payload := randomPayload(4000)
	dev.write(st.next(payload, true))
	b := up.read(2 * time.Second)
	if len(b) != 12+len(payload) || !bytes.Equal(b[12:], payload) {
		t.Fatalf("got a %d-byte datagram, want the %d-byte packet whole", len(b), 12+len(payload))
	}
}

func TestLatchAndReverse(t *testing.T) {
	r := newTestRelay(t, func(c *Config) { c.RelatchAfter = 300 * time.Millisecond })
	src, devA := openSource(t, r, UDP, SourceOptions{ID: "latch"})
	defer src.Close()
	devB := &peer{t: t, udp: listenUDP(t), to: src.LocalAddr()}
	_, up := addSink(t, src, UDP, 50, SinkOptions{Reverse: true, ReverseSSRC: 60})

	a, b := &stream{ssrc: 1}, &stream{ssrc: 2}
	seq := -1
	expectStream(t, up, sendFrames(devA, a, 5, 100), 50, &seq)
	sendFrames(devB, b, 5, 100) // a second sender while the first is live
	expectStream(t, up, sendFrames(devA, a, 5, 100), 50, &seq)
	if p := up.read(100 * time.Millisecond); p != nil {
		t.Fatal("packets from a non-latched sender were forwarded")
	}
	if d := src.Stats().In.Dropped; d != 5 {
		t.Errorf("Dropped = %d, want the stray sender's 5", d)
	}

	// Reverse audio goes to the latched sender, with the reverse SSRC.
	audio := &stream{ssrc: 999}
	up.write(audio.next([]byte("talk"), true))
	if p := devA.readRTP(2 * time.Second); p == nil || p.SSRC != 60 || string(p.Payload) != "talk" {
		t.Fatalf("reverse packet at the latched device: %+v", p)
	}

	// After the latched sender falls silent, another may take over (NAT
	// rebinding after a device restart).
	time.Sleep(400 * time.Millisecond)
	expectStream(t, up, sendFrames(devB, b, 5, 100), 50, &seq)
	up.write(audio.next([]byte("again"), true))
	if p := devB.readRTP(2 * time.Second); p == nil || string(p.Payload) != "again" {
		t.Fatalf("reverse packet did not follow the re-latch: %+v", p)
	}
}

func TestExpectedIP(t *testing.T) {
	r := newTestRelay(t, nil)
	other := netip.MustParseAddr("192.0.2.1") // never sent to: only compared

	src, dev := openSource(t, r, UDP, SourceOptions{Expect: []netip.Addr{other}})
	defer src.Close()
	_, up := addSink(t, src, UDP, 1, SinkOptions{})
	sendFrames(dev, &stream{}, 3, 100)
	eventually(t, "drops counted", func() bool { return src.Stats().In.Dropped == 3 })
	if p := up.read(50 * time.Millisecond); p != nil {
		t.Fatal("packet from an unexpected IP was forwarded")
	}

	tsrc, err := r.NewSource(loopback, TCPPassive, SourceOptions{Expect: []netip.Addr{other}})
	if err != nil {
		t.Fatal(err)
	}
	defer tsrc.Close()
	expectRefused(t, loopback, tsrc.LocalAddr())
	eventually(t, "refusal counted", func() bool { return tsrc.Stats().Refused == 1 })
}

func TestAllowedDestinations(t *testing.T) {
	r := newTestRelay(t, func(c *Config) { c.AllowedDest = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")} })
	src, err := r.NewSource(loopback, UDP, SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	inUse := r.PortsInUse()
	for _, tr := range []Transport{UDP, TCPActive} {
		_, err := src.AddSink(loopback, tr, netip.MustParseAddrPort("127.0.0.1:30000"), 1, SinkOptions{})
		if !errors.Is(err, ErrDestNotAllowed) || !strings.Contains(err.Error(), "127.0.0.1:30000") {
			t.Errorf("%v sink to a destination outside the list: err %v, want ErrDestNotAllowed naming it", tr, err)
		}
	}
	if _, err := r.NewSource(loopback, TCPActive, SourceOptions{Peer: netip.MustParseAddrPort("127.0.0.1:30000")}); !errors.Is(err, ErrDestNotAllowed) {
		t.Errorf("TCP-active source dialing outside the list: err %v", err)
	}
	if _, err := src.AddSink(loopback, UDP, netip.MustParseAddrPort("0.0.0.0:30000"), 1, SinkOptions{}); err == nil {
		t.Error("sink to an unspecified address was accepted")
	}
	if got := r.PortsInUse(); got != inUse {
		t.Errorf("refused set-ups left %d ports taken, want %d", got, inUse)
	}

	open := newTestRelay(t, func(c *Config) { c.AllowedDest = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} })
	osrc, dev := openSource(t, open, UDP, SourceOptions{})
	defer osrc.Close()
	_, up := addSink(t, osrc, UDP, 3, SinkOptions{})
	seq := -1
	expectStream(t, up, sendFrames(dev, &stream{}, 3, 100), 3, &seq)
}

func TestFanOut(t *testing.T) {
	r := newTestRelay(t, nil)
	src, dev := openSource(t, r, UDP, SourceOptions{ID: "shared"})
	defer src.Close()
	ssrcs := []uint32{101, 102, 103}
	sinkTr := []Transport{UDP, UDP, TCPPassive}
	sinks := make([]*Sink, 3)
	ups := make([]*peer, 3)
	seqs := []int{-1, -1, -1}
	for i := range sinks {
		sinks[i], ups[i] = addSink(t, src, sinkTr[i], ssrcs[i], SinkOptions{ID: fmt.Sprint("upper", i)})
	}
	st := &stream{ssrc: 7}
	want := sendFrames(dev, st, 50, 1000)
	for i := range ups {
		expectStream(t, ups[i], want, ssrcs[i], &seqs[i])
	}

	if left := src.RemoveSink(sinks[1]); left != 2 {
		t.Fatalf("RemoveSink left %d, want 2", left)
	}
	select {
	case <-sinks[1].Done():
	default:
		t.Error("removed sink not done")
	}
	k4, up4 := addSink(t, src, TCPActive, 104, SinkOptions{ID: "late"})
	want = sendFrames(dev, st, 50, 1000)
	for _, i := range []int{0, 2} {
		expectStream(t, ups[i], want, ssrcs[i], &seqs[i])
	}
	seq4 := -1
	expectStream(t, up4, want, 104, &seq4)
	if p := ups[1].read(100 * time.Millisecond); p != nil {
		t.Fatal("removed sink still receives")
	}
	if got := sinks[0].Stats().Out.Packets; got != 100 {
		t.Errorf("sink 0 sent %d packets, want 100", got)
	}
	for i, k := range []*Sink{sinks[0], sinks[2], k4} {
		if left := src.RemoveSink(k); left != 2-i {
			t.Fatalf("RemoveSink left %d, want %d", left, 2-i)
		}
	}
}

func TestIdleTimeout(t *testing.T) {
	const idle = 150 * time.Millisecond
	r := newTestRelay(t, func(c *Config) { c.IdleTimeout = idle })
	fired := make(chan time.Time, 2)
	src, dev := openSource(t, r, UDP, SourceOptions{OnIdle: func() { fired <- time.Now() }})
	defer src.Close()
	st := &stream{}
	var last time.Time
	for i := 0; i < 10; i++ { // media for 300 ms: twice the timeout
		dev.write(st.next([]byte{1}, false))
		last = time.Now()
		time.Sleep(30 * time.Millisecond)
	}
	select {
	case at := <-fired:
		t.Fatalf("idle hook ran %v after the last packet, while media flowed", at.Sub(last))
	default:
	}
	select {
	case at := <-fired:
		if at.Sub(last) < idle {
			t.Fatalf("idle hook ran %v after the last packet, before the %v timeout", at.Sub(last), idle)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("idle hook did not run")
	}
	if since := src.IdleSince(); since.Before(last.Add(-50*time.Millisecond)) || since.After(last.Add(50*time.Millisecond)) {
		t.Errorf("IdleSince %v, want about the last packet %v", since, last)
	}
}

func TestGarbageUDP(t *testing.T) {
	r := newTestRelay(t, nil)
	src, dev := openSource(t, r, UDP, SourceOptions{})
	defer src.Close()
	_, up := addSink(t, src, UDP, 1, SinkOptions{})
	garbage := [][]byte{
		[]byte("hello, not RTP"),
		{0x80, 0x60, 0, 1},                               // short
		{0x80, 0xc8, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0},       // RTCP sender report
		{0x40, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1},       // version 1
		{0x8f, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1},       // 15 CSRCs announced, none present
		{0xa0, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff}, // padding longer than the packet
		make([]byte, maxDatagram+100),                    // truncated by the receive slot
	}
	for _, g := range garbage {
		dev.write(g)
	}
	seq := -1
	expectStream(t, up, sendFrames(dev, &stream{}, 5, 100), 1, &seq)
	if d := src.Stats().In.Dropped; d != uint64(len(garbage)) {
		t.Errorf("Dropped = %d, want %d", d, len(garbage))
	}
}

func TestGarbageTCP(t *testing.T) {
	r := newTestRelay(t, nil)
	src, dev := openSource(t, r, TCPPassive, SourceOptions{})
	defer src.Close()
	_, up := addSink(t, src, UDP, 1, SinkOptions{})
	dev.write([]byte("not rtp at all")) // framed, but not RTP: dropped
	dev.write([]byte{0x80, 0x60})       // short
	seq := -1
	expectStream(t, up, sendFrames(dev, &stream{}, 5, 100), 1, &seq)
	eventually(t, "2 dropped frames counted", func() bool { return src.Stats().In.Dropped == 2 })
	select {
	case <-src.Done():
		t.Fatalf("isolated bad frames ended the leg: %v", src.Err())
	default:
	}
}

func TestTCPBadFramingEndsLeg(t *testing.T) {
	r := newTestRelay(t, nil)
	bareRTP := func() []byte { // a device that forgot the RFC 4571 prefix
		st := &stream{}
		var raw []byte
		for len(raw) < 200<<10 {
			raw = append(raw, st.next(make([]byte, 1000), false)...)
		}
		return raw
	}
	nonRTPFrames := func() []byte {
		var raw []byte
		for i := 0; i < maxBadFrames; i++ {
			raw = append(raw, 0, 20)
			raw = append(raw, "twenty bytes, no RTP"...)
		}
		return raw
	}
	for name, raw := range map[string][]byte{"zero length": {0, 0}, "bare RTP": bareRTP(), "non-RTP frames": nonRTPFrames()} {
		t.Run(name, func(t *testing.T) {
			src, dev := openSource(t, r, TCPPassive, SourceOptions{})
			defer src.Close()
			go func() { _, _ = dev.tcp.Write(raw) }()
			select {
			case <-src.Done():
			case <-time.After(3 * time.Second):
				t.Fatal("leg did not end")
			}
			if err := src.Err(); err == nil || !strings.Contains(err.Error(), "RFC 4571") {
				t.Errorf("Err = %v, want a message naming RFC 4571", err)
			}
		})
	}
}

func TestTCPActiveRetriesUntilListenerOpens(t *testing.T) {
	r := newTestRelay(t, nil)
	src, dev := openSource(t, r, UDP, SourceOptions{})
	defer src.Close()
	l := listenTCP(t)
	dest := addrOf(l.Addr())
	l.Close() // the upper is not listening yet
	k, err := src.AddSink(loopback, TCPActive, dest, 77, SinkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	l2, err := net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(dest))
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	up := &peer{t: t, tcp: acceptTCP(t, l2)}
	waitReady(t, &k.Leg)
	seq := -1
	expectStream(t, up, sendFrames(dev, &stream{}, 10, 1000), 77, &seq)
}

func TestTCPActiveGivesUp(t *testing.T) {
	r := newTestRelay(t, func(c *Config) { c.ConnectTimeout = 300 * time.Millisecond })
	src, err := r.NewSource(loopback, UDP, SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	l := listenTCP(t)
	dest := addrOf(l.Addr())
	l.Close()
	k, err := src.AddSink(loopback, TCPActive, dest, 1, SinkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-k.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("connect retries did not stop")
	}
	if err := k.Err(); err == nil || !strings.Contains(err.Error(), "could not connect") {
		t.Errorf("Err = %v", err)
	}
}

func TestUpperHangUpEndsSink(t *testing.T) {
	r := newTestRelay(t, nil)
	src, _ := openSource(t, r, UDP, SourceOptions{})
	defer src.Close()
	k, up := addSink(t, src, TCPPassive, 1, SinkOptions{})
	up.tcp.Close()
	select {
	case <-k.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("sink did not notice the upper hanging up")
	}
	if k.Err() == nil {
		t.Error("Err is nil after the upper hung up")
	}
}

func TestReverseOverTCP(t *testing.T) {
	r := newTestRelay(t, nil)
	src, dev := openSource(t, r, TCPActive, SourceOptions{})
	defer src.Close()
	_, up := addSink(t, src, TCPPassive, 5, SinkOptions{Reverse: true, ReverseSSRC: 6})
	if _, err := src.AddSink(loopback, UDP, addrOf(listenUDP(t).LocalAddr()), 7, SinkOptions{Reverse: true}); err == nil {
		t.Error("a second reverse sink was accepted")
	}
	up.splitWrites = true
	audio := &stream{ssrc: 123, seq: 9}
	want := sendFrames(up, audio, 30, 320)
	seq := -1
	expectStream(t, dev, want, 6, &seq)
}

func TestCloseFreesPortsAndGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	r := newTestRelay(t, func(c *Config) { c.IdleTimeout = time.Minute })
	for _, st := range transports {
		src, dev := openSource(t, r, st, SourceOptions{OnIdle: func() {}})
		ups := make([]*peer, 0, 3)
		for i, kt := range transports {
			_, up := addSink(t, src, kt, uint32(i), SinkOptions{Reverse: i == 0})
			ups = append(ups, up)
		}
		want := sendFrames(dev, &stream{}, 5, 100)
		for i, up := range ups {
			seq := -1
			expectStream(t, up, want, uint32(i), &seq)
		}
		// Legs still waiting for their peer.
		if _, err := src.AddSink(loopback, TCPPassive, netip.AddrPort{}, 9, SinkOptions{}); err != nil {
			t.Fatal(err)
		}
		l := listenTCP(t)
		pending := addrOf(l.Addr())
		l.Close()
		if _, err := src.AddSink(loopback, TCPActive, pending, 9, SinkOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.NewSource(loopback, TCPPassive, SourceOptions{}); err != nil {
		t.Fatal(err)
	}
	if r.PortsInUse() != 3*6+1 {
		t.Fatalf("PortsInUse = %d, want %d", r.PortsInUse(), 3*6+1)
	}
	r.Close()
	if n := r.PortsInUse(); n != 0 {
		t.Errorf("%d ports still taken after Close", n)
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
	if _, err := r.NewSource(loopback, UDP, SourceOptions{}); err == nil {
		t.Error("closed relay opened a source")
	}
}

func TestNoAllocationUDPToUDP(t *testing.T) {
	r := newTestRelay(t, nil)
	src, dev := openSource(t, r, UDP, SourceOptions{})
	defer src.Close()
	_, up := addSink(t, src, UDP, 1, SinkOptions{})
	st := &stream{}
	const burst = 32
	pkts := make([][]byte, burst)
	for i := range pkts {
		pkts[i] = st.next(make([]byte, 1388), i == burst-1)
	}
	buf := make([]byte, 2048)
	run := func() {
		for _, p := range pkts {
			if _, err := dev.udp.WriteToUDPAddrPort(p, dev.to); err != nil {
				t.Fatal(err)
			}
		}
		for range pkts {
			if _, _, err := up.udp.ReadFromUDPAddrPort(buf); err != nil {
				t.Fatal(err)
			}
		}
	}
	run() // warm up: pooled batches, socket state
	if allocs := testing.AllocsPerRun(50, run); allocs >= 1 {
		t.Errorf("%.1f allocations per burst of %d packets, want none on the UDP→UDP path", allocs, burst)
	}
}
