package b2bua

import (
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/directory"
)

// remoteCallee places every channel on another cluster node at addr.
type remoteCallee struct {
	oneCallee
	addr string
}

func (r remoteCallee) Callee(string, string) (directory.Callee, error) {
	return directory.Callee{}, &directory.RemoteError{Node: "node-b", Addr: r.addr, Gone: make(chan struct{}),
		ChannelID: testChannel, DeviceID: "34020000001110000001"}
}

// A call forwarded to the owning node is listed with that node and counted
// apart from the sessions relayed here; losing the upper's registration
// ends it with a BYE to the owner. An INVITE that another node forwarded
// already is refused 482, never forwarded again.
func TestForwardedCallListedEndedAndNotLooped(t *testing.T) {
	owner := newFakeDevice(t, "v=0\r\no=owner 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video 5000 RTP/AVP 96\r\n")
	b, upper, _ := newTestB2BUAWith(t, remoteCallee{addr: owner.addr})

	if res := upperInvite(t, upper.Addr()); res.StatusCode != 200 {
		t.Fatalf("forwarded INVITE answered %d %q", res.StatusCode, res.Reason)
	}
	ss := b.Sessions()
	if len(ss) != 1 {
		t.Fatalf("sessions %+v, want the forwarded call", ss)
	}
	if s := ss[0]; s.Node != "node-b" || s.Kind != "live" || s.ChannelID != testChannel || s.UpperChannelID != testChannel ||
		s.DeviceID != "34020000001110000001" || s.UpperID != testUpper || s.StartedAt.IsZero() {
		t.Errorf("forwarded session %+v", s)
	}
	if n, _, _ := b.Counts(); n != 0 {
		t.Errorf("Counts() sessions = %d; a forwarded call is the owner's session", n)
	}
	if g := len(b.forwardedList(func(f *forwarded) bool { return f.answeredOK() })); g != 1 {
		t.Errorf("%d answered forwarded calls", g)
	}

	b.UpperLost(testUpper, "test")
	deadline := time.Now().Add(10 * time.Second)
	for owner.byes.Load() != 1 || len(b.Sessions()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after UpperLost: owner BYEs %d, sessions %+v", owner.byes.Load(), b.Sessions())
		}
		time.Sleep(10 * time.Millisecond)
	}

	res := upperInvite(t, upper.Addr(), sip.NewHeader(directory.ForwardedHeader, "node=a;ts=1;sig=x"))
	if res.StatusCode != sip.StatusLoopDetected {
		t.Fatalf("INVITE forwarded once already answered %d %q, want 482", res.StatusCode, res.Reason)
	}
	if owner.byes.Load() != 1 || len(b.Sessions()) != 0 {
		t.Fatal("a looped INVITE reached the owner")
	}
}
