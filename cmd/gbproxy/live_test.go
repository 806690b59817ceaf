package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
	"github.com/gbproxy/gbproxy/cmd/gbsim/sim/media"
)

// Live video end to end: a simulated device streams GB-conformant PS over
// RTP (H.264 from the embedded clip) through gbproxy to a simulated upper
// platform, over real sockets on 127.0.0.1.

const liveDevice = "34020000001320000001"

// liveRig is a proxy registered to one upper, with one camera below.
type liveRig struct {
	p     *testProxy
	upper *sim.Upper
	dev   *sim.Device
	ch    string // the camera's channel, as the upper sees it (shared as is)
}

type rigOptions struct {
	streamMode   string // lower.stream_mode
	sipTransport string // device and upper signalling: udp | tcp
	extraLower   string // more lower: keys
	extraUpper   string // more upper: keys
	extraTop     string // more top-level sections (media: ...)
	platform     string // more keys of the upper platform
	device       func(*sim.DeviceConfig)
	upper        func(*sim.UpperConfig)
}

func newLiveRig(t *testing.T, o rigOptions) *liveRig {
	t.Helper()
	ctx := ctxTimeout(t, 20*time.Second)
	if o.sipTransport == "" {
		o.sipTransport = "udp"
	}
	if o.streamMode == "" {
		o.streamMode = "udp"
	}
	u := newUpper(t, "127.0.0.1:0", o.upper)
	yaml := fmt.Sprintf(`
lower:
  listen: "127.0.0.1:0"
  keepalive_interval: 300ms
  keepalive_timeout_count: 3
  catalog_timeout: 2s
  stream_mode: %s
  invite_timeout: 3s
%s
upper:
  listen: "127.0.0.1:0"
%s
  platforms:
    - id: %q
      address: %q
      transport: %s
      password: %q
      keepalive_interval: 300ms
      retry_interval: 300ms
%s
%s`, o.streamMode, o.extraLower, o.extraUpper, upperID, u.Addr(), o.sipTransport, upperPass, o.platform, o.extraTop)
	p := startProxy(t, "", yaml)
	dev := newDevice(t, p, liveDevice, o.sipTransport, 1, o.device)
	if err := dev.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ch := sim.MakeChannels(liveDevice, 1)[0].ID
	eventually(t, 10*time.Second, "channel stored and proxy registered upward", func() bool {
		return len(p.channels(liveDevice)) == 1 && p.platform(upperID).Registered
	})
	if _, err := u.WaitRegistered(ctx, proxyID); err != nil {
		t.Fatal(err)
	}
	return &liveRig{p: p, upper: u, dev: dev, ch: ch}
}

// apiSession is GET /api/v1/sessions' contract.
type apiSession struct {
	CallID         string    `json:"call_id"`
	ChannelID      string    `json:"channel_id"`
	UpperID        string    `json:"upper_id"`
	Kind           string    `json:"kind"`
	UpperTransport string    `json:"upper_transport"`
	LowerTransport string    `json:"lower_transport"`
	SSRCUpper      string    `json:"ssrc_upper"`
	SSRCLower      string    `json:"ssrc_lower"`
	Packets        uint64    `json:"packets"`
	Bytes          uint64    `json:"bytes"`
	Lost           uint64    `json:"lost"`
	StartedAt      time.Time `json:"started_at"`
}

func (p *testProxy) sessions() []apiSession {
	var out []apiSession
	p.api("/api/v1/sessions", &out)
	return out
}

// requireClean waits until the proxy holds no session, device stream,
// SSRC or relay port.
func requireClean(t *testing.T, p *testProxy) {
	t.Helper()
	eventually(t, 8*time.Second, "no sessions, streams, SSRCs or relay ports left", func() bool {
		s, st, ssrc := p.b2bua.Counts()
		return s == 0 && st == 0 && ssrc == 0 && p.relay.PortsInUse() == 0 && len(p.sessions()) == 0
	})
}

// mirror is the device's view of a proxy-side TCP mode.
var mirror = map[string]string{"udp": "udp", "tcp-passive": "tcp-active", "tcp-active": "tcp-passive"}

var modes = []string{"udp", "tcp-passive", "tcp-active"}

// TestLiveAllTransportCombinations plays the clip once through the proxy in
// each of the 9 device-side × upper-side transport combinations. The upper
// must get every payload byte the device sent, in order, under its own
// SSRC, decodable as H.264; BYE from the upper must leave nothing behind.
func TestLiveAllTransportCombinations(t *testing.T) {
	requireFFprobe(t)
	for _, lowerMode := range modes {
		for _, upperMode := range modes {
			t.Run("device-"+lowerMode+"/upper-"+upperMode, func(t *testing.T) {
				t.Parallel()
				sipTransport := "udp"
				if lowerMode == "tcp-active" { // and the device's INVITE travels down its own TCP connection
					sipTransport = "tcp"
				}
				rig := newLiveRig(t, rigOptions{streamMode: lowerMode, sipTransport: sipTransport, device: func(c *sim.DeviceConfig) {
					c.TCPMaxRTPPacket = 32000 // large TCP packets, as some devices send: split for UDP receivers
				}})
				ctx := ctxTimeout(t, 30*time.Second)
				const ssrc = "0100000001"
				play, err := rig.upper.Play(ctx, proxyID, rig.ch, sim.PlayOptions{Transport: upperMode, SSRC: ssrc})
				if err != nil {
					t.Fatal(err)
				}
				if play.Answer.SSRC != ssrc {
					t.Errorf("200 OK y=%q, want the upper's %s", play.Answer.SSRC, ssrc)
				}
				wantSetup := map[string]string{"udp": "", "tcp-passive": "active", "tcp-active": "passive"}[upperMode]
				if play.Answer.Setup != wantSetup {
					t.Errorf("answer a=setup:%q to an upper offering %s, want %q", play.Answer.Setup, upperMode, wantSetup)
				}
				// A whole pass of the clip, from its first key frame: nothing
				// the device sent before the upper's leg was up may be lost.
				if _, err := play.WaitBytes(ctx, clipBytes(t)); err != nil {
					t.Fatal(err)
				}
				st := rig.dev.Streams()[0]
				if st.MediaErr != "" || st.Ended {
					t.Fatalf("device stream failed: %+v", st)
				}
				if st.Transport != mirror[lowerMode] {
					t.Errorf("device streamed over %s, want %s for lower.stream_mode %s", st.Transport, mirror[lowerMode], lowerMode)
				}
				if st.SSRC == ssrc {
					t.Errorf("device leg uses the upper's SSRC %s; it must have its own", ssrc)
				}
				got := play.Payload()
				var sent []byte // the device records a packet just after sending it
				eventually(t, time.Second, "device's record to catch up", func() bool { sent = rig.dev.SentPayload(st.CallID); return len(sent) >= len(got) })
				if !bytes.Equal(got, sent[:len(got)]) {
					i := 0
					for i < min(len(got), len(sent)) && got[i] == sent[i] {
						i++
					}
					t.Fatalf("PS payload differs at byte %d: upper got %d bytes, device sent %d", i, len(got), len(sent))
				}
				for i, pk := range play.Packets() {
					if fmt.Sprintf("%010d", pk.SSRC) != ssrc {
						t.Fatalf("packet %d has SSRC %010d, want %s", i, pk.SSRC, ssrc)
					}
					// media.max_udp_packet (default 1472): fits an Ethernet MTU.
					if upperMode == "udp" && pk.PayloadLen+12 > 1472 {
						t.Fatalf("packet %d to a UDP upper is %d bytes, want ≤ 1472", i, pk.PayloadLen+12)
					}
				}
				checkSequence(t, play.Packets())
				probeH264(t, play.Payload())
				sess := rig.p.sessions()
				if len(sess) != 1 || sess[0].UpperTransport != mirror[upperMode] || sess[0].LowerTransport != lowerMode ||
					sess[0].SSRCUpper != ssrc || sess[0].Kind != "live" || sess[0].Packets == 0 || sess[0].CallID != play.CallID() {
					t.Errorf("/api/v1/sessions = %+v", sess)
				}
				if err := play.Bye(ctx); err != nil {
					t.Fatal(err)
				}
				if _, err := rig.dev.WaitStream(ctx, func(s sim.StreamInfo) bool { return s.CallID == st.CallID && s.Ended }); err != nil {
					t.Fatal("device call not ended after the upper's BYE: ", err)
				}
				requireClean(t, rig.p)
			})
		}
	}
}

// clipBytes is the PS payload of one pass of the simulator's clip.
func clipBytes(t *testing.T) int {
	t.Helper()
	clipOnce.Do(func() {
		frames, err := media.SplitAccessUnits(media.DefaultVideo)
		if err != nil {
			t.Fatal(err)
		}
		mux, err := media.NewMuxer(media.MuxerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		for i, f := range frames {
			clipLen += len(mux.Mux(f.Data, f.Key, uint64(i)*3600))
		}
	})
	return clipLen
}

var (
	clipOnce sync.Once
	clipLen  int
)

// checkSequence: consecutive sequence numbers, whatever the split.
func checkSequence(t *testing.T, pkts []media.PacketInfo) {
	t.Helper()
	for i := 1; i < len(pkts); i++ {
		if pkts[i].Sequence != pkts[i-1].Sequence+1 {
			t.Fatalf("sequence jumps from %d to %d at packet %d", pkts[i-1].Sequence, pkts[i].Sequence, i)
		}
	}
}

func requireFFprobe(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("ffprobe"); err != nil {
		if os.Getenv("GBPROXY_REQUIRE_FFMPEG") != "" {
			t.Fatal("ffprobe not installed (apt-get install ffmpeg)")
		}
		t.Skip("ffprobe not installed (apt-get install ffmpeg); .ci/run installs it")
	}
}

// probeH264 asks ffprobe to decode the received program stream.
func probeH264(t *testing.T, ps []byte) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "received.ps")
	if err := os.WriteFile(f, ps, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ffprobe", "-v", "error", "-f", "mpeg", "-count_frames", "-show_streams", "-of", "json", f).Output()
	if err != nil {
		t.Fatalf("ffprobe could not read the received stream: %v", err)
	}
	var probe struct {
		Streams []struct {
			CodecName string `json:"codec_name"`
			Frames    string `json:"nb_read_frames"`
		} `json:"streams"`
	}
	if err := json.Unmarshal(out, &probe); err != nil {
		t.Fatal(err)
	}
	if len(probe.Streams) == 0 || probe.Streams[0].CodecName != "h264" || probe.Streams[0].Frames == "0" {
		t.Fatalf("ffprobe: %s", out)
	}
}

// startPlay plays the rig's channel and waits for media.
func (r *liveRig) startPlay(t *testing.T, ctx context.Context, u *sim.Upper, opts sim.PlayOptions) *sim.Play {
	t.Helper()
	play, err := u.Play(ctx, proxyID, r.ch, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := play.WaitPackets(ctx, 20); err != nil {
		t.Fatal("no media reached the upper: ", err)
	}
	return play
}

func waitEnded(t *testing.T, ctx context.Context, play *sim.Play, what string) {
	t.Helper()
	select {
	case <-play.Ended():
		if by := play.EndedBy(); by != "bye-received" {
			t.Errorf("%s: call ended by %q, want a BYE from the proxy", what, by)
		}
	case <-ctx.Done():
		t.Fatalf("%s: the upper got no BYE", what)
	}
}

// TestLiveTeardown: every way a session ends frees both legs.
func TestLiveTeardown(t *testing.T) {
	t.Run("device BYE", func(t *testing.T) {
		t.Parallel()
		rig := newLiveRig(t, rigOptions{})
		ctx := ctxTimeout(t, 20*time.Second)
		play := rig.startPlay(t, ctx, rig.upper, sim.PlayOptions{Transport: "udp"})
		if err := rig.dev.HangUp(ctx, rig.dev.Streams()[0].CallID); err != nil {
			t.Fatal(err)
		}
		waitEnded(t, ctx, play, "device hung up")
		requireClean(t, rig.p)
	})
	t.Run("upper CANCEL", func(t *testing.T) {
		t.Parallel()
		rig := newLiveRig(t, rigOptions{device: func(c *sim.DeviceConfig) { c.InviteDelay = 3 * time.Second }})
		ctx := ctxTimeout(t, 20*time.Second)
		short, cancel := context.WithTimeout(ctx, 800*time.Millisecond)
		defer cancel()
		if _, err := rig.upper.Play(short, proxyID, rig.ch, sim.PlayOptions{Transport: "udp"}); err == nil {
			t.Fatal("Play succeeded though it was cancelled")
		}
		st, err := rig.dev.WaitStream(ctx, func(s sim.StreamInfo) bool { return s.Ended })
		if err != nil || st.EndReason != sim.EndCancel {
			t.Fatalf("device call after the upper's CANCEL: %+v %v, want ended by CANCEL", st, err)
		}
		requireClean(t, rig.p)
	})
	t.Run("device offline", func(t *testing.T) {
		t.Parallel()
		rig := newLiveRig(t, rigOptions{sipTransport: "tcp"})
		ctx := ctxTimeout(t, 20*time.Second)
		play := rig.startPlay(t, ctx, rig.upper, sim.PlayOptions{Transport: "tcp-active"})
		rig.dev.Close() // its TCP connection drops: offline at once
		waitEnded(t, ctx, play, "device went offline")
		requireClean(t, rig.p)
	})
	t.Run("no media", func(t *testing.T) {
		t.Parallel()
		rig := newLiveRig(t, rigOptions{extraTop: "media: {port_min: 30000, port_max: 30999, no_media_timeout: 1s}"})
		ctx := ctxTimeout(t, 20*time.Second)
		play := rig.startPlay(t, ctx, rig.upper, sim.PlayOptions{Transport: "udp"})
		callID := rig.dev.Streams()[0].CallID
		if err := rig.dev.StopMedia(callID); err != nil {
			t.Fatal(err)
		}
		waitEnded(t, ctx, play, "device stopped sending")
		st, err := rig.dev.WaitStream(ctx, func(s sim.StreamInfo) bool { return s.CallID == callID && s.Ended })
		if err != nil || st.EndReason != sim.EndBye {
			t.Fatalf("device call after no-media timeout: %+v %v, want ended by our BYE", st, err)
		}
		requireClean(t, rig.p)
	})
	t.Run("API DELETE", func(t *testing.T) {
		t.Parallel()
		rig := newLiveRig(t, rigOptions{})
		ctx := ctxTimeout(t, 20*time.Second)
		play := rig.startPlay(t, ctx, rig.upper, sim.PlayOptions{Transport: "tcp-passive"})
		if code, body := rig.p.do("DELETE", "/api/v1/sessions/"+play.CallID(), ""); code != 204 {
			t.Fatalf("DELETE session: %d %s", code, body)
		}
		if code, _ := rig.p.do("DELETE", "/api/v1/sessions/no-such-call", ""); code != 404 {
			t.Errorf("DELETE of an unknown session: %d, want 404", code)
		}
		waitEnded(t, ctx, play, "session deleted through the API")
		if _, err := rig.dev.WaitStream(ctx, func(s sim.StreamInfo) bool { return s.Ended && s.EndReason == sim.EndBye }); err != nil {
			t.Fatal("device got no BYE: ", err)
		}
		requireClean(t, rig.p)
	})
}

// TestLiveSharedStream: a second viewer of a live channel shares the device
// stream under its own SSRC; the device call ends with the last viewer.
func TestLiveSharedStream(t *testing.T) {
	const upper2 = "44020000002000000002"
	ctx := ctxTimeout(t, 30*time.Second)
	u1 := newUpper(t, "127.0.0.1:0", nil)
	u2 := newUpper(t, "127.0.0.1:0", func(c *sim.UpperConfig) { c.ID, c.Domain = upper2, upper2[:10] })
	p := startProxy(t, "", twoPlatformsYAML(u1.Addr(), upper2, u2.Addr()))
	dev := newDevice(t, p, liveDevice, "udp", 1, nil)
	if err := dev.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, u := range []*sim.Upper{u1, u2} {
		if _, err := u.WaitRegistered(ctx, proxyID); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "channel stored", func() bool { return len(p.channels(liveDevice)) == 1 })
	rig := &liveRig{p: p, ch: sim.MakeChannels(liveDevice, 1)[0].ID}
	a := rig.startPlay(t, ctx, u1, sim.PlayOptions{Transport: "udp", SSRC: "0100000011"})
	b := rig.startPlay(t, ctx, u2, sim.PlayOptions{Transport: "tcp-passive", SSRC: "0100000022"})
	again := rig.startPlay(t, ctx, u1, sim.PlayOptions{Transport: "udp", SSRC: "0100000033"}) // same upper twice
	if n := len(dev.Streams()); n != 1 {
		t.Fatalf("device got %d INVITEs for three viewers of one channel, want 1", n)
	}
	for play, want := range map[*sim.Play]uint32{a: 100000011, b: 100000022, again: 100000033} {
		for _, pk := range play.Packets() {
			if pk.SSRC != want {
				t.Fatalf("viewer %s got SSRC %d, want its own %d", play.CallID(), pk.SSRC, want)
			}
		}
	}
	if len(p.sessions()) != 3 {
		t.Errorf("sessions: %+v", p.sessions())
	}
	for _, play := range []*sim.Play{a, again} {
		if err := play.Bye(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// The last viewer still gets media after the others left.
	n := len(b.Packets())
	if _, err := b.WaitPackets(ctx, n+20); err != nil {
		t.Fatal("remaining viewer lost its media when the others left: ", err)
	}
	if st := dev.Streams()[0]; st.Ended {
		t.Fatalf("device call ended while a viewer remains: %+v", st)
	}
	if err := b.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := dev.WaitStream(ctx, func(s sim.StreamInfo) bool { return s.Ended && s.EndReason == sim.EndBye }); err != nil {
		t.Fatal("device call not ended with the last viewer: ", err)
	}
	requireClean(t, p)
}

// TestLiveRefusals: what the upper hears when a call can't be made, and
// that a refusal leaves nothing behind.
func TestLiveRefusals(t *testing.T) {
	statusOf := func(err error) int {
		var se *sim.StatusError
		if errors.As(err, &se) {
			return se.Status
		}
		return 0
	}
	t.Run("not shared, device refuses, bad media address", func(t *testing.T) {
		rig := newLiveRig(t, rigOptions{
			platform: `      media_allow: ["192.0.2.0/24"]`,
			device:   func(c *sim.DeviceConfig) {},
		})
		ctx := ctxTimeout(t, 20*time.Second)
		_, err := rig.upper.Play(ctx, proxyID, "34020000001320000999", sim.PlayOptions{Transport: "udp"})
		if statusOf(err) != 404 {
			t.Errorf("unknown channel: %v, want 404", err)
		}
		_, err = rig.upper.Play(ctx, proxyID, rig.ch, sim.PlayOptions{Transport: "udp"})
		if statusOf(err) != 403 {
			t.Errorf("media to 127.0.0.1 outside media_allow: %v, want 403", err)
		}
		if n := len(rig.dev.Streams()); n != 0 {
			t.Errorf("device was called %d times for INVITEs refused before any set-up", n)
		}
		requireClean(t, rig.p)
	})
	t.Run("device busy", func(t *testing.T) {
		rig := newLiveRig(t, rigOptions{device: func(c *sim.DeviceConfig) { c.InviteStatus = 486 }})
		ctx := ctxTimeout(t, 20*time.Second)
		_, err := rig.upper.Play(ctx, proxyID, rig.ch, sim.PlayOptions{Transport: "udp"})
		if statusOf(err) != 486 {
			t.Errorf("device answering 486: upper got %v, want 486", err)
		}
		requireClean(t, rig.p)
	})
	t.Run("device offline", func(t *testing.T) {
		rig := newLiveRig(t, rigOptions{sipTransport: "tcp"})
		ctx := ctxTimeout(t, 20*time.Second)
		rig.dev.Close()
		eventually(t, 5*time.Second, "device offline", func() bool { d, _ := rig.p.device(liveDevice); return !d.Online })
		_, err := rig.upper.Play(ctx, proxyID, rig.ch, sim.PlayOptions{Transport: "udp"})
		if statusOf(err) != 480 {
			t.Errorf("offline device: %v, want 480", err)
		}
		requireClean(t, rig.p)
	})
}

// TestLiveFieldQuirks: uppers that repeat their INVITE ignoring the first
// 200 OK (UDP and TCP), uppers that listen only after their 200 OK, devices
// with millisecond timestamps sending from another port than announced.
func TestLiveFieldQuirks(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run("INVITE retransmitted over "+transport, func(t *testing.T) {
			t.Parallel()
			rig := newLiveRig(t, rigOptions{sipTransport: transport})
			ctx := ctxTimeout(t, 20*time.Second)
			start := time.Now()
			play := rig.startPlay(t, ctx, rig.upper, sim.PlayOptions{Transport: "udp", RetransmitInvite: true})
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("play with a repeated INVITE took %v", took)
			}
			if play.InviteResponses < 2 {
				t.Errorf("upper saw %d 200 OKs, want the repeated INVITE answered too", play.InviteResponses)
			}
			if n := len(rig.dev.Streams()); n != 1 {
				t.Errorf("device got %d INVITEs, want 1", n)
			}
			play.Close()
			requireClean(t, rig.p)
		})
	}
	t.Run("upper listens late", func(t *testing.T) {
		t.Parallel()
		rig := newLiveRig(t, rigOptions{})
		ctx := ctxTimeout(t, 20*time.Second)
		play := rig.startPlay(t, ctx, rig.upper, sim.PlayOptions{Transport: "tcp-passive", ListenLate: time.Second})
		play.Close()
		requireClean(t, rig.p)
	})
	t.Run("device quirks", func(t *testing.T) {
		t.Parallel()
		rig := newLiveRig(t, rigOptions{device: func(c *sim.DeviceConfig) { c.TimestampMS, c.SendFromOtherPort = true, true }})
		ctx := ctxTimeout(t, 20*time.Second)
		play := rig.startPlay(t, ctx, rig.upper, sim.PlayOptions{Transport: "udp"})
		if st := rig.dev.Streams()[0]; st.Source == st.LocalAddr {
			t.Fatalf("device sent from its announced address %s; the quirk is off", st.Source)
		}
		checkSequence(t, play.Packets())
		play.Close()
		requireClean(t, rig.p)
	})
}

// TestLiveSIPpUpper: SIPp, a third-party SIP stack, plays the upper
// platform: INVITE with a GB SDP, ACK, BYE; our media reaches the port it
// offered with the SSRC it asked for.
func TestLiveSIPpUpper(t *testing.T) {
	sipp := requireSIPp(t)
	scenario, _ := filepath.Abs("testdata/sipp/upper_play.xml")
	for _, transport := range []string{"u1", "t1"} {
		t.Run(transport, func(t *testing.T) {
			rig := newLiveRig(t, rigOptions{})
			rx, err := media.ListenUDPReceiver("127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer rx.Close()
			const ssrc = "0100000077"
			fields := strings.Join([]string{rig.ch, upperID, proxyID, "127.0.0.1", fmt.Sprint(rx.Port()), ssrc}, ";")
			cmd := runSIPp(t, sipp, fields, rig.p.cascade.UpperAddr(), "-sf", scenario, "-t", transport, "-p", fmt.Sprint(freePort(t)))
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("SIPp upper scenario failed: %v\n%s", err, tail(out))
			}
			pkts := rx.Packets()
			if len(pkts) < 20 {
				t.Fatalf("SIPp's media port got %d RTP packets during the call", len(pkts))
			}
			for _, pk := range pkts {
				if fmt.Sprintf("%010d", pk.SSRC) != ssrc {
					t.Fatalf("RTP to SIPp's port with SSRC %010d, want %s", pk.SSRC, ssrc)
				}
			}
			requireClean(t, rig.p)
		})
	}
}

// TestLiveMalformedInvites: bad INVITEs from an upper get a clear SIP error
// and leave the proxy able to serve the next good one.
func TestLiveMalformedInvites(t *testing.T) {
	rig := newLiveRig(t, rigOptions{})
	ctx := ctxTimeout(t, 20*time.Second)
	conn, err := net.Dial("udp", rig.p.cascade.UpperAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sdpFor := func(session, media string) string {
		return "v=0\r\no=" + upperID + " 0 0 IN IP4 127.0.0.1\r\ns=" + session + "\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" + media + "y=0100000001\r\n"
	}
	const video = "m=video 40000 RTP/AVP 96\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\n"
	cases := []struct {
		name, body string
		maxFwd     int
		want       int
	}{
		{"garbage body", "this is not SDP at all", 70, 400},
		{"unknown s=", sdpFor("Broadcast", video), 70, 488}, // Play, Playback and Download are bridged
		{"no video", sdpFor("Play", "m=audio 40000 RTP/AVP 8\r\na=recvonly\r\n"), 70, 488},
		{"UDP to port 0", sdpFor("Play", "m=video 0 RTP/AVP 96\r\na=recvonly\r\n"), 70, 488},
		{"TCP passive to 0.0.0.0", strings.Replace(sdpFor("Play", "m=video 40000 TCP/RTP/AVP 96\r\na=setup:passive\r\n"), "c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0", 1), 70, 488},
		{"loop", sdpFor("Play", video), 1, 483},
	}
	for i, c := range cases {
		local := conn.LocalAddr().String()
		msg := fmt.Sprintf("INVITE sip:%s@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;rport;branch=z9hG4bK-bad%d\r\n"+
			"From: <sip:%s@%s>;tag=bad%d\r\nTo: <sip:%s@%s>\r\nCall-ID: bad-%d\r\nCSeq: 1 INVITE\r\nContact: <sip:%s@%s>\r\n"+
			"Max-Forwards: %d\r\nContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s",
			rig.ch, rig.p.cascade.UpperAddr(), local, i, upperID, local, i, rig.ch, rig.p.cascade.UpperAddr(), i, upperID, local,
			c.maxFwd, len(c.body), c.body)
		if _, err := conn.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		got := 0
		buf := make([]byte, 4096)
		for got == 0 || got == 100 {
			_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatalf("%s: no final answer: %v", c.name, err)
			}
			if res := string(buf[:n]); strings.Contains(res, fmt.Sprintf("bad-%d\r\n", i)) { // not an earlier case's retransmission
				fmt.Sscanf(res, "SIP/2.0 %d", &got)
			}
		}
		if got != c.want {
			t.Errorf("%s: answered %d, want %d", c.name, got, c.want)
		}
	}
	play := rig.startPlay(t, ctx, rig.upper, sim.PlayOptions{Transport: "udp"})
	play.Close()
	requireClean(t, rig.p)
}

// TestLiveNetworkZones: each side's media binds to its own media_ip (two
// loopback addresses stand for two interfaces), and the upper is told the
// external address when one is configured (NAT).
func TestLiveNetworkZones(t *testing.T) {
	rig := newLiveRig(t, rigOptions{
		extraLower: `  media_ip: "127.0.0.1"`,
		extraUpper: "  media_ip: \"127.0.0.2\"\n  media_external_ip: \"198.51.100.7\"",
	})
	ctx := ctxTimeout(t, 20*time.Second)
	play := rig.startPlay(t, ctx, rig.upper, sim.PlayOptions{Transport: "udp"})
	if play.Answer.IP != "198.51.100.7" {
		t.Errorf("answer to the upper announces c=%s, want upper.media_external_ip", play.Answer.IP)
	}
	for _, src := range play.Receiver().Stats().Sources {
		if !strings.HasPrefix(src, "127.0.0.2:") {
			t.Errorf("upper-side media came from %s, want upper.media_ip 127.0.0.2", src)
		}
	}
	st := rig.dev.Streams()[0]
	if st.Offer.IP != "127.0.0.1" || !strings.HasPrefix(st.Remote, "127.0.0.1:") {
		t.Errorf("device was offered c=%s and sends to %s, want lower.media_ip 127.0.0.1", st.Offer.IP, st.Remote)
	}
	play.Close()
	requireClean(t, rig.p)
}

// TestLiveThreeLevels: upper platform ← top proxy ← middle proxy ← camera.
// Each level has its own SSRC toward the next; the upper still gets the one
// it asked for, the camera's bytes unchanged, and BYE clears both proxies.
func TestLiveThreeLevels(t *testing.T) {
	const midID, camID = "34020100002000000001", "34020100001320000001"
	up := newUpper(t, "127.0.0.1:0", nil)
	top := startProxy(t, "", upperPlatformYAML(up.Addr(), "udp")+refreshYAML+"  stream_mode: tcp-passive\n")
	mid := startProxy(t, "", proxyAsUpperYAML(midID, proxyID, top.lowerAddr()))
	cam := newDevice(t, mid, camID, "udp", 1, func(c *sim.DeviceConfig) { c.ServerID, c.Domain = midID, midID[:10] })
	ctx := ctxTimeout(t, 30*time.Second)
	if err := cam.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ch := sim.MakeChannels(camID, 1)[0].ID
	eventually(t, 8*time.Second, "the camera's channel reaches the top proxy", func() bool { return len(top.channels(midID)) == 1 })
	if _, err := up.WaitRegistered(ctx, proxyID); err != nil {
		t.Fatal(err)
	}
	const ssrc = "0440100005"
	play, err := up.Play(ctx, proxyID, ch, sim.PlayOptions{Transport: "tcp-active", SSRC: ssrc})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := play.WaitBytes(ctx, clipBytes(t)); err != nil {
		t.Fatal(err)
	}
	for _, pk := range play.Packets() {
		if fmt.Sprintf("%010d", pk.SSRC) != ssrc {
			t.Fatalf("SSRC %010d three levels up, want %s", pk.SSRC, ssrc)
		}
	}
	got := play.Payload()
	st := cam.Streams()[0]
	var sent []byte
	eventually(t, time.Second, "camera's record to catch up", func() bool { sent = cam.SentPayload(st.CallID); return len(sent) >= len(got) })
	if !bytes.Equal(got, sent[:len(got)]) {
		t.Fatal("PS payload changed on its way through two proxies")
	}
	topS, midS := top.sessions(), mid.sessions()
	if len(topS) != 1 || len(midS) != 1 || topS[0].LowerTransport != "tcp-passive" || midS[0].UpperTransport != "tcp-active" {
		t.Fatalf("sessions: top %+v, middle %+v", topS, midS)
	}
	if topS[0].SSRCLower != midS[0].SSRCUpper || midS[0].SSRCLower == topS[0].SSRCLower {
		t.Errorf("SSRCs per level: top→middle %s (middle sees %s), middle→camera %s", topS[0].SSRCLower, midS[0].SSRCUpper, midS[0].SSRCLower)
	}
	if err := play.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cam.WaitStream(ctx, func(s sim.StreamInfo) bool { return s.Ended && s.EndReason == sim.EndBye }); err != nil {
		t.Fatal("camera call not ended three levels down: ", err)
	}
	requireClean(t, top)
	requireClean(t, mid)
}

// TestLiveTalkBack: an upper offering a=sendrecv gets it when the device
// answers sendrecv, and what it sends on its leg reaches the device; a
// second viewer of the same stream only receives.
func TestLiveTalkBack(t *testing.T) {
	rig := newLiveRig(t, rigOptions{})
	ctx := ctxTimeout(t, 20*time.Second)
	play := rig.startPlay(t, ctx, rig.upper, sim.PlayOptions{Transport: "udp", TalkBack: true})
	if play.Answer.Direction != "sendrecv" {
		t.Fatalf("answer a=%s to a sendrecv offer, want sendrecv", play.Answer.Direction)
	}
	if st := rig.dev.Streams()[0]; st.Offer.Direction != "sendrecv" {
		t.Fatalf("device offered a=%s, want sendrecv", st.Offer.Direction)
	}
	other := rig.startPlay(t, ctx, rig.upper, sim.PlayOptions{Transport: "udp", TalkBack: true})
	if other.Answer.Direction != "sendonly" {
		t.Errorf("second viewer answered a=%s, want sendonly (one talks back at a time)", other.Answer.Direction)
	}
	conn, err := net.Dial("udp", play.Answer.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const n = 20
	for i := range n {
		pkt := []byte{0x80, 8, 0, byte(i), 0, 0, 0, byte(i), 0, 0, 0, 7} // PCMA, SSRC 7
		if _, err := conn.Write(append(pkt, make([]byte, 160)...)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := rig.dev.WaitStream(ctx, func(s sim.StreamInfo) bool { return s.Received >= n }); err != nil {
		t.Fatalf("device got %d of the %d packets the upper sent back: %v", rig.dev.Streams()[0].Received, n, err)
	}
	other.Close()
	play.Close()
	requireClean(t, rig.p)
}
