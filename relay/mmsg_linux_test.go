package relay

import (
	"testing"

	"golang.org/x/sys/unix"
)

// A socket the kernel refuses GSO on (here: UDP checksums off, which makes
// UDP_SEGMENT sends fail with EINVAL, as a too-small path MTU does) still
// delivers every packet, one datagram at a time.
func TestGSORefusedFallsBackToSingleDatagrams(t *testing.T) {
	r := newTestRelay(t, nil)
	src, dev := openSource(t, r, UDP, SourceOptions{})
	defer src.Close()
	k, up := addSink(t, src, UDP, 70, SinkOptions{})
	if !k.udp.gso.Load() {
		t.Skip("kernel without UDP GSO: nothing to fall back from")
	}
	rc, err := k.udp.conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_NO_CHECK, 1) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	st := &stream{ssrc: 3}
	var want []sent
	for i := 0; i < 40; i++ { // equal sizes: one GSO run per batch
		pl := randomPayload(1000)
		want = append(want, sent{pl, false, st.ts})
		dev.write(st.next(pl, false))
	}
	seq := -1
	expectStream(t, up, want, 70, &seq)
	if d := k.Stats().Out.Dropped; d != 0 {
		t.Errorf("Dropped = %d after GSO refusal, want 0", d)
	}
}
