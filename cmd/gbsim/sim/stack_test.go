package sim

import (
	"errors"
	"net"
	"testing"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// TestClosedStackKeepsSocketPooled: sipgo handles each request on a goroutine of its own, which can
// run after the simulator closed. It then answers on the pooled connection of the sender; finding
// none, it would open a new UDP socket nobody closes. After Close, the pool must still hold the
// (closed) socket for every peer heard from and for the socket's own address, and writing on it fails.
func TestClosedStackKeepsSocketPooled(t *testing.T) {
	checkGoroutines(t)
	u := startUpper(t, UpperConfig{})
	pc := listenUDP(t)
	if r := rawExchange(t, pc, u.Addr(), rawRequest(pc, "OPTIONS", upperID+"@"+u.Addr(), "opt-"+randomHex(4), "", "", "")); r.StatusCode != 200 {
		t.Fatalf("OPTIONS answered %d", r.StatusCode)
	}
	d := newDevice(t, DeviceConfig{Server: u.Addr(), KeepaliveInterval: -1})
	if err := d.Start(testContext(t)); err != nil {
		t.Fatal(err)
	}
	devAddr := d.LocalAddr()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		ua    *sipgo.UserAgent
		local string
		peers []string
	}{
		{"upper", u.ua, u.Addr(), []string{pc.LocalAddr().String(), devAddr}},
		{"device", d.ua, devAddr, []string{u.Addr()}},
	} {
		for _, addr := range append(tc.peers, tc.local) {
			c, err := tc.ua.TransportLayer().GetConnection("udp", addr)
			if err != nil {
				t.Errorf("%s closed: no pooled UDP connection for %s (%v): sipgo would open a new socket to answer a late request", tc.name, addr, err)
				continue
			}
			if got := c.LocalAddr().String(); got != tc.local {
				t.Errorf("%s closed: pooled connection for %s is on %s, want the closed socket %s", tc.name, addr, got, tc.local)
			}
			res := sip.NewResponse(sip.StatusOK, "OK")
			res.SetDestination(addr)
			if err := c.WriteMsg(res); !errors.Is(err, net.ErrClosed) {
				t.Errorf("%s closed: writing on the pooled socket: %v, want %v", tc.name, err, net.ErrClosed)
			}
			_, _ = c.TryClose()
		}
	}
}
