package sim

import (
	"bytes"
	"errors"
	"net"
	"testing"
	"time"
)

// TestVoiceBroadcastClose runs a broadcast straight between the simulators (Notify, Response,
// the device's INVITE to the source, audio) and closes both ends without a BYE: their voice
// sockets and goroutines must go with them.
func TestVoiceBroadcastClose(t *testing.T) {
	checkGoroutines(t)
	ctx := testContext(t)
	u := startUpper(t, UpperConfig{})
	d := newDevice(t, DeviceConfig{Server: u.Addr(), KeepaliveInterval: time.Second})
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := u.WaitRegistered(ctx, devID); err != nil {
		t.Fatal(err)
	}
	const source, target = "34020000001360000001", "34020000001370000001"
	if ans, err := u.Broadcast(ctx, devID, source, target); err != nil || ans.Status != 200 || len(ans.Bodies) != 1 || ans.Bodies[0].Result != "OK" {
		t.Fatalf("Broadcast: %+v, %v", ans, err)
	}
	src, err := u.WaitVoiceSource(ctx)
	if err != nil {
		t.Fatal(err)
	}
	voice, err := d.WaitVoice(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tone := PCMATone(440, 160)
	if err := src.Send(tone); err != nil {
		t.Fatal(err)
	}
	if _, err := voice.Receiver().WaitPackets(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if got := voice.Receiver().Payload(); !bytes.Equal(got, tone) {
		t.Fatalf("audio at the device: %d bytes, not the %d sent", len(got), len(tone))
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-src.Ended():
	default:
		t.Fatal("voice-source call still up after the upper closed")
	}
	if err := src.Send(tone); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("sending on a closed upper's voice socket: %v; want net.ErrClosed", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-voice.Ended():
	default:
		t.Fatal("broadcast call still up after the device closed")
	}
}

// TestALaw checks the encoder against G.711's table: silence, full scale, a segment edge.
func TestALaw(t *testing.T) {
	for _, c := range []struct {
		in   int16
		want byte
	}{{0, 0xD5}, {-1, 0x55}, {32767, 0xAA}, {-32768, 0x2A}, {256, 0xC5}, {255, 0xDA}} {
		if got := alaw(c.in); got != c.want {
			t.Errorf("alaw(%d) = %#02x, want %#02x", c.in, got, c.want)
		}
	}
}
