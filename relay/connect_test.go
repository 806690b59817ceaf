package relay

import (
	"errors"
	"net/netip"
	"testing"
)

// A TCP-active source learns its peer from the device's SDP answer, after
// its port was offered: Connect dials it then.
func TestTCPActiveConnectLater(t *testing.T) {
	r := newTestRelay(t, nil)
	src, err := r.NewSource(loopback, TCPActive, SourceOptions{ID: "late-peer"})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ln := listenTCP(t)
	if err := src.Connect(addrOf(ln.Addr())); err != nil {
		t.Fatal(err)
	}
	if err := src.Connect(addrOf(ln.Addr())); err == nil {
		t.Error("second Connect was accepted")
	}
	dev := &peer{t: t, tcp: acceptTCP(t, ln)}
	waitReady(t, &src.Leg)
	if got := addrOf(dev.tcp.LocalAddr()); got != addrOf(ln.Addr()) {
		t.Fatalf("device side of the connection is %v", got)
	}
	if got := addrOf(dev.tcp.RemoteAddr()); got != src.LocalAddr() {
		t.Errorf("source dialled from %v, want its offered address %v", got, src.LocalAddr())
	}
	_, up := addSink(t, src, UDP, 42, SinkOptions{})
	seq := -1
	expectStream(t, up, sendFrames(dev, &stream{ssrc: 5}, 3, 200), 42, &seq)

	udp, err := r.NewSource(loopback, UDP, SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	if err := udp.Connect(addrOf(ln.Addr())); err == nil {
		t.Error("Connect on a UDP source was accepted")
	}
}

func TestTCPActiveConnectRefusedOutsideAllowList(t *testing.T) {
	r := newTestRelay(t, func(c *Config) { c.AllowedDest = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")} })
	src, err := r.NewSource(loopback, TCPActive, SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if err := src.Connect(netip.MustParseAddrPort("127.0.0.1:9")); !errors.Is(err, ErrDestNotAllowed) {
		t.Errorf("Connect outside the allowed list: %v", err)
	}
}

// A sink's own allow-list (one upper's) applies on top of the relay's.
func TestSinkAllowList(t *testing.T) {
	r := newTestRelay(t, nil)
	src, dev := openSource(t, r, UDP, SourceOptions{})
	defer src.Close()
	only := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	inUse := r.PortsInUse()
	for _, tr := range []Transport{UDP, TCPActive} {
		if _, err := src.AddSink(loopback, tr, netip.MustParseAddrPort("127.0.0.1:30000"), 1, SinkOptions{AllowedDest: only}); !errors.Is(err, ErrDestNotAllowed) {
			t.Errorf("%v sink outside its allow-list: %v", tr, err)
		}
	}
	if got := r.PortsInUse(); got != inUse {
		t.Errorf("refused sinks left %d ports taken, want %d", got, inUse)
	}
	_, up := addSink(t, src, UDP, 7, SinkOptions{AllowedDest: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	seq := -1
	expectStream(t, up, sendFrames(dev, &stream{}, 2, 100), 7, &seq)
}

// The device streams from our ACK on, before the upper's leg exists: what
// arrives before the first Sink reaches it first, in order.
func TestPacketsBeforeFirstSinkAreKept(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.String(), func(t *testing.T) {
			r := newTestRelay(t, nil)
			src, dev := openSource(t, r, tr, SourceOptions{})
			defer src.Close()
			st := &stream{ssrc: 9}
			early := sendFrames(dev, st, 40, 1300)
			eventually(t, "early packets received", func() bool { return src.Stats().In.Packets == 40 })
			_, up := addSink(t, src, UDP, 11, SinkOptions{})
			later := sendFrames(dev, st, 10, 1300)
			seq := -1
			expectStream(t, up, append(early, later...), 11, &seq)
		})
	}
}

// An upper that opens its TCP listener late (or dials in late) still gets
// the stream from where its leg was added.
func TestTCPSinkGetsPacketsFromBeforeItConnected(t *testing.T) {
	r := newTestRelay(t, nil)
	src, dev := openSource(t, r, UDP, SourceOptions{})
	defer src.Close()
	k, err := src.AddSink(loopback, TCPPassive, netip.AddrPort{}, 12, SinkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st := &stream{}
	early := sendFrames(dev, st, 30, 1300)
	eventually(t, "early packets received", func() bool { return src.Stats().In.Packets == 30 })
	up := &peer{t: t, tcp: dialTCP(t, k.LocalAddr())}
	waitReady(t, &k.Leg)
	later := sendFrames(dev, st, 5, 1300)
	seq := -1
	expectStream(t, up, append(early, later...), 12, &seq)
}
