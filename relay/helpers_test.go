package relay

import (
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/rs/zerolog"
)

const loopback = "127.0.0.1"

// newTestRelay returns a relay on test ports below Linux's ephemeral range,
// closed at the end of the test.
func newTestRelay(t testing.TB, tweak func(*Config)) *Relay {
	t.Helper()
	cfg := Config{PortMin: 20000, PortMax: 29998, Logger: testLogger(t)}
	if tweak != nil {
		tweak(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func testLogger(t testing.TB) zerolog.Logger {
	if os.Getenv("RELAY_TEST_LOG") != "" {
		return zerolog.New(zerolog.NewTestWriter(t))
	}
	return zerolog.Nop()
}

// peer is a test endpoint: a device or an upper, over UDP or TCP.
type peer struct {
	t   testing.TB
	udp *net.UDPConn
	to  netip.AddrPort // where UDP writes go
	tcp net.Conn
	// splitWrites sends each TCP frame in several writes with pauses, so
	// that frames arrive split across segments.
	splitWrites bool
}

func listenUDP(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadBuffer(4 << 20)
	t.Cleanup(func() { c.Close() })
	return c
}

func listenTCP(t testing.TB) *net.TCPListener {
	t.Helper()
	l, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func addrOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort()
	case *net.TCPAddr:
		return a.AddrPort()
	}
	panic("unexpected address type")
}

func dialTCP(t testing.TB, to netip.AddrPort) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp4", to.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func acceptTCP(t testing.TB, l *net.TCPListener) net.Conn {
	t.Helper()
	_ = l.SetDeadline(time.Now().Add(5 * time.Second))
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (p *peer) write(b []byte) {
	p.t.Helper()
	if p.udp != nil {
		if _, err := p.udp.WriteToUDPAddrPort(b, p.to); err != nil {
			p.t.Fatal(err)
		}
		return
	}
	frame := binary.BigEndian.AppendUint16(nil, uint16(len(b)))
	frame = append(frame, b...)
	p.writeRaw(frame)
}

func (p *peer) writeRaw(b []byte) {
	p.t.Helper()
	for len(b) > 0 {
		n := len(b)
		if p.splitWrites {
			n = min(n, 1+rand.IntN(700))
		}
		if _, err := p.tcp.Write(b[:n]); err != nil {
			p.t.Fatal(err)
		}
		b = b[n:]
		if p.splitWrites && len(b) > 0 {
			time.Sleep(50 * time.Microsecond)
		}
	}
}

// read returns the next packet, or nil after timeout.
func (p *peer) read(timeout time.Duration) []byte {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	if p.udp != nil {
		_ = p.udp.SetReadDeadline(deadline)
		buf := make([]byte, 70000)
		n, _, err := p.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil
			}
			p.t.Fatal(err)
		}
		return buf[:n]
	}
	_ = p.tcp.SetReadDeadline(deadline)
	var hdr [2]byte
	if _, err := io.ReadFull(p.tcp, hdr[:]); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil
		}
		p.t.Fatal(err)
	}
	buf := make([]byte, binary.BigEndian.Uint16(hdr[:]))
	if _, err := io.ReadFull(p.tcp, buf); err != nil {
		p.t.Fatal(err)
	}
	return buf
}

func (p *peer) readRTP(timeout time.Duration) *rtp.Packet {
	p.t.Helper()
	b := p.read(timeout)
	if b == nil {
		return nil
	}
	var pk rtp.Packet
	if err := pk.Unmarshal(b); err != nil {
		p.t.Fatalf("received bytes are not RTP: %v", err)
	}
	return &pk
}

// openSource opens a Source of transport t and the device peer that feeds it.
func openSource(t testing.TB, r *Relay, tr Transport, opts SourceOptions) (*Source, *peer) {
	t.Helper()
	dev := &peer{t: t}
	var devLn *net.TCPListener
	if tr == TCPActive {
		devLn = listenTCP(t)
		opts.Peer = addrOf(devLn.Addr())
	}
	s, err := r.NewSource(loopback, tr, opts)
	if err != nil {
		t.Fatal(err)
	}
	switch tr {
	case UDP:
		dev.udp, dev.to = listenUDP(t), s.LocalAddr()
	case TCPPassive:
		dev.tcp = dialTCP(t, s.LocalAddr())
	case TCPActive:
		dev.tcp = acceptTCP(t, devLn)
	}
	waitReady(t, &s.Leg)
	return s, dev
}

// addSink adds a Sink of transport t to s and the upper peer it feeds.
func addSink(t testing.TB, s *Source, tr Transport, ssrc uint32, opts SinkOptions) (*Sink, *peer) {
	t.Helper()
	up := &peer{t: t}
	var dest netip.AddrPort
	var upLn *net.TCPListener
	switch tr {
	case UDP:
		up.udp = listenUDP(t)
		dest = addrOf(up.udp.LocalAddr())
	case TCPActive:
		upLn = listenTCP(t)
		dest = addrOf(upLn.Addr())
	}
	k, err := s.AddSink(loopback, tr, dest, ssrc, opts)
	if err != nil {
		t.Fatal(err)
	}
	switch tr {
	case UDP:
		up.to = k.LocalAddr()
	case TCPPassive:
		up.tcp = dialTCP(t, k.LocalAddr())
	case TCPActive:
		up.tcp = acceptTCP(t, upLn)
	}
	waitReady(t, &k.Leg)
	return k, up
}

func waitReady(t testing.TB, l *Leg) {
	t.Helper()
	select {
	case <-l.Ready():
	case <-time.After(5 * time.Second):
		t.Fatalf("%s leg %s not ready", l.transport, l.local)
	}
}

// stream makes RTP packets like a device: PS payload type 96, a marker
// at the end of each frame, timestamps that need not be sane.
type stream struct {
	ssrc uint32
	seq  uint16
	ts   uint32
}

func (st *stream) next(payload []byte, marker bool) []byte {
	p := rtp.Packet{
		Header:  rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: st.seq, Timestamp: st.ts, SSRC: st.ssrc, Marker: marker},
		Payload: payload,
	}
	st.seq++
	if marker {
		st.ts += 40 // milliseconds, as some devices do
	}
	b, err := p.Marshal()
	if err != nil {
		panic(err)
	}
	return b
}

func randomPayload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return b
}

// eventually polls cond until it holds or the time is up.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
