package relay

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"
)

const attackerIP = "127.0.0.2" // Linux routes all of 127/8 to loopback

// dialFrom connects to to from the local IP from.
func dialFrom(t *testing.T, from string, to netip.AddrPort) (net.Conn, error) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp4", to.String())
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// expectRefused connects from from to to and fails the test unless the
// connection is closed at once with nothing sent (the reset may already
// fail the connect).
func expectRefused(t *testing.T, from string, to netip.AddrPort) {
	t.Helper()
	c, err := dialFrom(t, from, to)
	if err != nil {
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("connect from %s: %v; want it accepted and reset, or reset", from, err)
		}
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection from %s: read %d bytes, err %v; want it closed at once with nothing sent", from, n, err)
	}
}

// A TCP-passive sink takes its connection only from the peer it was told
// of, within the allow-lists: a stranger is reset without a byte, counted,
// and the leg still serves the real peer afterwards.
func TestTCPPassiveSinkRefusesStrangers(t *testing.T) {
	upper := netip.MustParseAddr(loopback)
	attacker := netip.MustParseAddr(attackerIP)
	for _, c := range []struct {
		name  string
		relay []netip.Prefix
		opts  SinkOptions
	}{
		{"not the upper's address", nil, SinkOptions{AcceptFrom: []netip.Addr{upper}}},
		{"outside the sink's allow-list", nil, SinkOptions{AcceptFrom: []netip.Addr{upper, attacker},
			AllowedDest: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}},
		{"outside the relay's allow-list", []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, SinkOptions{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newTestRelay(t, func(cfg *Config) { cfg.AllowedDest = c.relay })
			src, dev := openSource(t, r, UDP, SourceOptions{})
			defer src.Close()
			refusedFrom := make(chan netip.AddrPort, 8)
			c.opts.OnRefused = func(from netip.AddrPort) { refusedFrom <- from }
			k, err := src.AddSink(loopback, TCPPassive, netip.AddrPort{}, 12, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			st := &stream{}
			early := sendFrames(dev, st, 20, 1000)
			eventually(t, "early packets received", func() bool { return src.Stats().In.Packets == 20 })

			const attempts = maxRefusalLogs + 2 // past the logged ones: still refused
			for i := range attempts {
				expectRefused(t, attackerIP, k.LocalAddr())
				select {
				case from := <-refusedFrom:
					if from.Addr() != attacker {
						t.Errorf("OnRefused got %v, want %s", from, attackerIP)
					}
				case <-time.After(2 * time.Second):
					t.Fatalf("attempt %d: OnRefused not called", i)
				}
			}
			if got := k.Stats().Refused; got != attempts {
				t.Errorf("Stats.Refused = %d, want %d", got, attempts)
			}
			select {
			case <-k.Ready():
				t.Fatal("sink became ready on a refused connection")
			case <-k.Done():
				t.Fatalf("sink ended after refusals: %v", k.Err())
			default:
			}

			conn, err := dialFrom(t, loopback, k.LocalAddr())
			if err != nil {
				t.Fatal(err)
			}
			up := &peer{t: t, tcp: conn}
			waitReady(t, &k.Leg)
			later := sendFrames(dev, st, 5, 1000)
			seq := -1
			expectStream(t, up, append(early, later...), 12, &seq)
		})
	}
}

// Without AcceptFrom or allow-lists a TCP-passive sink takes any peer, as
// relay users other than the B2BUA expect.
func TestTCPPassiveSinkOpenByDefault(t *testing.T) {
	r := newTestRelay(t, nil)
	src, dev := openSource(t, r, UDP, SourceOptions{})
	defer src.Close()
	k, err := src.AddSink(loopback, TCPPassive, netip.AddrPort{}, 3, SinkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := dialFrom(t, attackerIP, k.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	up := &peer{t: t, tcp: conn}
	waitReady(t, &k.Leg)
	seq := -1
	expectStream(t, up, sendFrames(dev, &stream{}, 3, 200), 3, &seq)
	if n := k.Stats().Refused; n != 0 {
		t.Errorf("refused %d connections", n)
	}
}
