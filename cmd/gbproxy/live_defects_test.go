package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
)

// Live-media defects seen from outside (issue 10, item 7), each over real
// sockets through the proxy with the simulators.

// A device's 1,412-byte UDP packets (1,400 payload + header, common) reach a
// UDP upper unsplit: as many packets and bytes as the device sent.
func TestLive1412ByteUDPPacketsUnsplit(t *testing.T) {
	rig := newLiveRig(t, rigOptions{device: func(c *sim.DeviceConfig) {
		c.UDPMaxRTPPacket = 1412
		c.StreamOnce = true
	}})
	ctx := ctxTimeout(t, 30*time.Second)
	play := rig.startPlay(t, ctx, rig.upper, sim.PlayOptions{Transport: "udp"})
	clip := clipBytes(t)
	if _, err := play.WaitBytes(ctx, clip); err != nil {
		t.Fatal("the upper did not receive the whole clip: ", err)
	}
	pkts := play.Packets()
	bytesIn, largest := 0, 0
	for _, p := range pkts {
		bytesIn += p.PayloadLen
		largest = max(largest, p.PayloadLen)
	}
	// The device counts a packet after sending it.
	eventually(t, 5*time.Second, "the device to count the whole clip", func() bool { return rig.dev.Streams()[0].Bytes == clip })
	st := rig.dev.Streams()[0]
	if len(pkts) != st.Packets || bytesIn != st.Bytes {
		t.Fatalf("device sent %d packets (%d payload bytes), upper got %d (%d): want equal", st.Packets, st.Bytes, len(pkts), bytesIn)
	}
	if largest != 1400 {
		t.Fatalf("largest payload at the upper %d bytes, want the device's 1,400 (1,412-byte packets unsplit)", largest)
	}
}

// A single-channel camera whose channel ID is its own device ID: the channel
// is stored, shared upward and plays.
func TestLiveOwnIDChannel(t *testing.T) {
	rig := newLiveRig(t, rigOptions{device: func(c *sim.DeviceConfig) {
		c.Channels = []sim.Channel{{ID: liveDevice, Name: "single", Status: "ON", ParentID: liveDevice}}
	}})
	rig.ch = liveDevice
	ctx := ctxTimeout(t, 30*time.Second)
	items, _, err := rig.upper.QueryCatalog(ctx, proxyID)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, it := range items {
		if it.DeviceID == liveDevice {
			found = true
			if it.ParentID == liveDevice {
				t.Errorf("own-ID channel shared with itself as parent")
			}
		}
	}
	if !found {
		t.Fatalf("own-ID channel not in the upper's catalog: %+v", items)
	}
	play := rig.startPlay(t, ctx, rig.upper, sim.PlayOptions{Transport: "udp"})
	if st := rig.dev.Streams()[0]; st.ChannelID != liveDevice {
		t.Fatalf("device INVITEd for %q, want its own ID", st.ChannelID)
	}
	if err := play.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	requireClean(t, rig.p)
}

// A second viewer joining a running stream starts at a key frame: its first
// packet begins a PS pack header followed by a system header.
func TestLiveSecondViewerStartsAtKeyFrame(t *testing.T) {
	for _, mode := range []string{"udp", "tcp-passive"} {
		t.Run(mode, func(t *testing.T) {
			rig := newLiveRig(t, rigOptions{})
			ctx := ctxTimeout(t, 30*time.Second)
			first := rig.startPlay(t, ctx, rig.upper, sim.PlayOptions{Transport: "udp", SSRC: "0100000011"})
			if _, err := first.WaitPackets(ctx, 150); err != nil { // well into the stream
				t.Fatal(err)
			}
			second := rig.startPlay(t, ctx, rig.upper, sim.PlayOptions{Transport: mode, SSRC: "0100000022"})
			pkts := second.Packets()
			head := second.Payload()[:pkts[0].PayloadLen]
			if !psKeyFrameStart(head) {
				t.Fatalf("second viewer's first packet does not start a key frame's PS pack: % x", head[:min(len(head), 24)])
			}
			if n := len(rig.dev.Streams()); n != 1 {
				t.Fatalf("device got %d INVITEs for two viewers, want 1", n)
			}
		})
	}
}

// psKeyFrameStart: an MPEG-2 pack header (with its stuffing) followed by a
// system header, as GB/T 28181 devices begin a key frame.
func psKeyFrameStart(b []byte) bool {
	if len(b) < 18 || !bytes.Equal(b[:4], []byte{0, 0, 1, 0xBA}) {
		return false
	}
	n := 14 + int(b[13]&7)
	return len(b) >= n+4 && bytes.Equal(b[n:n+4], []byte{0, 0, 1, 0xBB})
}

// An upper whose signalling is lost takes its sessions with it: both legs
// freed, the device BYE'd, no port left.
func TestLiveUpperSignallingLost(t *testing.T) {
	t.Run("TCP connection closed", func(t *testing.T) {
		rig := newLiveRig(t, rigOptions{sipTransport: "tcp"})
		ctx := ctxTimeout(t, 30*time.Second)
		// UDP media: closing the upper does not end the media legs on its own.
		rig.startPlay(t, ctx, rig.upper, sim.PlayOptions{Transport: "udp", SSRC: "0100000011"})
		rig.startPlay(t, ctx, rig.upper, sim.PlayOptions{Transport: "udp", SSRC: "0100000022"})
		if n := len(rig.p.sessions()); n != 2 {
			t.Fatalf("%d sessions, want 2", n)
		}
		rig.upper.Close() // its TCP connection to the proxy closes
		if _, err := rig.dev.WaitStream(ctx, func(s sim.StreamInfo) bool { return s.Ended && s.EndReason == sim.EndBye }); err != nil {
			t.Fatal("device got no BYE after the upper's signalling was lost: ", err)
		}
		requireClean(t, rig.p)
	})
	t.Run("keepalives unanswered", func(t *testing.T) {
		rig := newLiveRig(t, rigOptions{})
		ctx := ctxTimeout(t, 30*time.Second)
		play := rig.startPlay(t, ctx, rig.upper, sim.PlayOptions{Transport: "udp"})
		rig.upper.SetKeepaliveReply(false)
		waitEnded(t, ctx, play, "upper stopped answering keepalives")
		if _, err := rig.dev.WaitStream(ctx, func(s sim.StreamInfo) bool { return s.Ended && s.EndReason == sim.EndBye }); err != nil {
			t.Fatal("device got no BYE: ", err)
		}
		requireClean(t, rig.p)
	})
}
