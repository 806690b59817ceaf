package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
)

const (
	voiceSource  = "44010000001360000001" // the upper's voice input
	mappedTarget = "44010000001370000009" // the channel as the upper sees it
)

// newVoiceRig is a live rig whose upper sees the device's channel under
// another ID, so that every test also proves the IDs are mapped.
// With note, the upper requires a Note on every request: our INVITE and BYE
// to its voice source (an ID of its other than the platform's) too.
func newVoiceRig(t *testing.T, transport string, note bool, opts ...func(*rigOptions)) (*liveRig, string) {
	ch := sim.MakeChannels(liveDevice, 1)[0].ID
	o := rigOptions{sipTransport: transport,
		platform: fmt.Sprintf("      share:\n        map: {%q: %q}", ch, mappedTarget)}
	for _, f := range opts {
		f(&o)
	}
	if note {
		const seed = "voice-note-seed"
		o.platform += "\n      signalling_digest: require\n      note_seed: " + seed
		o.upper = func(c *sim.UpperConfig) { c.Note = sim.NoteConfig{Seed: seed, Algorithm: "MD5", Require: true} }
	}
	rig := newLiveRig(t, o)
	if note {
		t.Cleanup(func() {
			if st := rig.upper.NoteStats(); st.Invalid != 0 || st.Valid == 0 {
				t.Errorf("upper's Note checks: %+v; want all valid", st)
			}
		})
	}
	return rig, ch
}

// TestBroadcast runs the 2016 voice broadcast through the proxy: the
// upper's Notify reaches the device with the local target, the device's
// Response returns with the upper's IDs and SN, the device's INVITE to the
// source is bridged to an INVITE of ours at the upper, and the audio the
// upper sends arrives at the device byte-identical under the device's SSRC.
// BYE from either side ends both legs with nothing left behind.
func TestBroadcast(t *testing.T) {
	for _, tc := range []struct {
		name, transport string
		note            bool
	}{{"udp", "udp", false}, {"tcp", "tcp", false}, {"udp-note-required", "udp", true}} {
		t.Run(tc.name, func(t *testing.T) {
			rig, ch := newVoiceRig(t, tc.transport, tc.note)
			ctx := ctxTimeout(t, 30*time.Second)

			for _, target := range []string{"44010000001379999999", ch} { // unknown; hidden by the map
				ans, err := rig.upper.Broadcast(ctx, proxyID, voiceSource, target)
				if err != nil || ans.Status != 404 {
					t.Fatalf("Broadcast to unshared %s: status %d, err %v; want 404", target, ans.Status, err)
				}
			}
			// A device calling a source no broadcast announced is refused.
			var se *sim.StatusError
			if _, err := rig.dev.InviteVoice(ctx, voiceSource, ch, 1234); !errors.As(err, &se) || se.Status != 404 {
				t.Fatalf("INVITE to a source with no broadcast pending: %v; want 404", err)
			}

			for _, hangup := range []string{"upper", "device"} {
				ans, err := rig.upper.Broadcast(ctx, proxyID, voiceSource, mappedTarget)
				if err != nil || ans.Status != 200 || len(ans.Bodies) != 1 {
					t.Fatalf("Broadcast: %+v, %v", ans, err)
				}
				if b := ans.Bodies[0]; b.CmdType != "Broadcast" || b.SN != ans.SN || b.DeviceID != mappedTarget || b.Result != "OK" {
					t.Fatalf("Response Broadcast at the upper: %+v; want SN %d, DeviceID %s, Result OK", b, ans.SN, mappedTarget)
				}
				notify, err := rig.dev.WaitRequest(ctx, "MESSAGE", "Broadcast")
				if err != nil {
					t.Fatal(err)
				}
				if body := string(notify.Body); !strings.Contains(body, "<TargetID>"+ch+"</TargetID>") || !strings.Contains(body, "<SourceID>"+voiceSource+"</SourceID>") {
					t.Fatalf("Notify at the device does not carry the local target and the source:\n%s", body)
				}
				src, err := rig.upper.WaitVoiceSource(ctx)
				if err != nil {
					t.Fatal(err)
				}
				voice, err := rig.dev.WaitVoice(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if src.SourceID != voiceSource || src.Offer.Direction != "recvonly" || src.Offer.Media != "audio" {
					t.Fatalf("proxy's INVITE at the upper: source %s, offer %+v; want %s, recvonly audio", src.SourceID, src.Offer, voiceSource)
				}
				if voice.Answer.SSRC != fmt.Sprintf("%010d", voice.SSRC) || voice.Answer.Direction != "sendonly" {
					t.Fatalf("proxy's answer to the device: %+v; want sendonly with y=%010d", voice.Answer, voice.SSRC)
				}
				var sent [][]byte
				for i := range 25 {
					p := make([]byte, 160)
					for j := range p {
						p[j] = byte(i*31 + j)
					}
					sent = append(sent, p)
				}
				if err := src.Send(sent...); err != nil {
					t.Fatal(err)
				}
				if _, err := voice.Receiver().WaitPackets(ctx, len(sent)); err != nil {
					t.Fatalf("audio at the device: %v", err)
				}
				for _, pk := range voice.Receiver().Packets() {
					if pk.SSRC != voice.SSRC || pk.PayloadType != 8 {
						t.Fatalf("audio packet at the device with SSRC %d PT %d; want the device's %d, PT 8", pk.SSRC, pk.PayloadType, voice.SSRC)
					}
				}
				if got, want := voice.Receiver().Payload(), bytes.Join(sent, nil); !bytes.Equal(got, want) {
					t.Fatalf("audio payload at the device: %d bytes, not the %d the upper sent", len(got), len(want))
				}
				if s := rig.p.sessions(); len(s) != 1 || s[0].Kind != "broadcast" || s[0].ChannelID != ch {
					t.Fatalf("sessions during the broadcast: %+v", s)
				}
				if hangup == "upper" {
					if err := src.Bye(ctx); err != nil {
						t.Fatal(err)
					}
					waitClosed(t, ctx, voice.Ended(), "device leg after the upper's BYE")
				} else {
					if err := voice.Bye(ctx); err != nil {
						t.Fatal(err)
					}
					waitClosed(t, ctx, src.Ended(), "upper leg after the device's BYE")
				}
				requireClean(t, rig.p)
			}
		})
	}
}

// TestBroadcastSetupFaults: a device that loses our first 200 OK gets it
// again (UDP and TCP); one that never ACKs is BYE'd after 64·T1 with the
// upper's leg; an upper whose 200 OK crosses our CANCEL (the device gave up
// during set-up) is ACKed and BYE'd. Nothing is left behind in any case.
func TestBroadcastSetupFaults(t *testing.T) {
	// startBroadcast has the upper send the Notify; the device calls back.
	startBroadcast := func(t *testing.T, ctx context.Context, rig *liveRig) {
		t.Helper()
		if ans, err := rig.upper.Broadcast(ctx, proxyID, voiceSource, mappedTarget); err != nil || ans.Status != 200 {
			t.Fatalf("Broadcast: %+v, %v", ans, err)
		}
	}
	for _, transport := range []string{"udp", "tcp"} {
		t.Run("first 200 OK lost over "+transport, func(t *testing.T) {
			t.Parallel()
			rig, _ := newVoiceRig(t, transport, false, func(o *rigOptions) {
				o.device = func(c *sim.DeviceConfig) { c.VoiceOKsIgnored = 1 }
			})
			ctx := ctxTimeout(t, 20*time.Second)
			startBroadcast(t, ctx, rig)
			voice, err := rig.dev.WaitVoice(ctx)
			if err != nil {
				t.Fatalf("device's broadcast call after its first 200 OK was lost: %v", err)
			}
			src, err := rig.upper.WaitVoiceSource(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := src.Send(make([]byte, 160)); err != nil {
				t.Fatal(err)
			}
			if _, err := voice.Receiver().WaitPackets(ctx, 1); err != nil {
				t.Fatalf("audio at the device: %v", err)
			}
			if err := voice.Bye(ctx); err != nil {
				t.Fatal(err)
			}
			waitClosed(t, ctx, src.Ended(), "upper leg after the device's BYE")
			requireClean(t, rig.p)
		})
	}
	t.Run("no ACK", func(t *testing.T) {
		t.Parallel()
		rig, _ := newVoiceRig(t, "udp", false, func(o *rigOptions) {
			o.device = func(c *sim.DeviceConfig) { c.VoiceNoAck = true }
		})
		ctx := ctxTimeout(t, 60*time.Second)
		startBroadcast(t, ctx, rig)
		voice, err := rig.dev.WaitVoice(ctx)
		if err != nil {
			t.Fatal(err)
		}
		src, err := rig.upper.WaitVoiceSource(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Audio keeps flowing, so that only the missing ACK can end the call
		// (not media.no_media_timeout).
		go func() {
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-src.Ended():
					return
				case <-tick.C:
					_ = src.Send(make([]byte, 160))
				}
			}
		}()
		start := time.Now()
		waitClosed(t, ctx, voice.Ended(), "device leg that never ACKed")
		waitClosed(t, ctx, src.Ended(), "upper leg of a broadcast the device never ACKed")
		if took := time.Since(start); took < 25*time.Second {
			t.Errorf("BYE after %v; want it after 64·T1 (32 s) of re-sent 200 OKs", took)
		}
		requireClean(t, rig.p)
	})
	t.Run("upper's 200 OK crosses our CANCEL", func(t *testing.T) {
		t.Parallel()
		rig, _ := newVoiceRig(t, "udp", false, func(o *rigOptions) {
			o.upper = func(c *sim.UpperConfig) { c.VoiceAnswerDelay = time.Minute } // beyond lower.invite_timeout (3 s)
		})
		ctx := ctxTimeout(t, 30*time.Second)
		startBroadcast(t, ctx, rig)
		src, err := rig.upper.WaitVoiceSource(ctx)
		if err != nil {
			t.Fatal(err)
		}
		waitClosed(t, ctx, src.Ended(), "upper leg whose 200 OK crossed our CANCEL")
		requireClean(t, rig.p)
		if n := len(rig.dev.Voices()); n != 0 {
			t.Errorf("device has %d broadcast calls; want its INVITE refused", n)
		}
	})
}

func waitClosed(t *testing.T, ctx interface{ Done() <-chan struct{} }, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-ctx.Done():
		t.Fatalf("%s: not ended", what)
	}
}

// TestSnapshot routes a SnapShotConfig down with the local ID and relays the
// device's UploadSnapShotFinished up with the SessionID kept and the
// upper's ID.
func TestSnapshot(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			rig, ch := newVoiceRig(t, transport, false)
			ctx := ctxTimeout(t, 20*time.Second)
			session := "0f8e2b6c-5a3d-4c1e-9b7a-2d4f6e8a0c1b-" + transport
			ans, err := rig.upper.Request(ctx, proxyID, "Control", "DeviceConfig", mappedTarget, sim.Field{Name: "SnapShotConfig", Raw: true,
				Value: "<SnapNum>2</SnapNum><Interval>1</Interval><UploadURL>http://192.0.2.1/upload?token=a&amp;b=1</UploadURL><SessionID>" + session + "</SessionID>"})
			if err != nil || ans.Status != 200 || len(ans.Bodies) != 1 || ans.Bodies[0].DeviceID != mappedTarget || ans.Bodies[0].Result != "OK" {
				t.Fatalf("DeviceConfig SnapShotConfig: %+v, %v", ans, err)
			}
			ctl, err := rig.dev.WaitControl(ctx, "SnapShotConfig")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(ctl.Body), "<DeviceID>"+ch+"</DeviceID>") || !strings.Contains(string(ctl.Body), session) {
				t.Fatalf("SnapShotConfig at the device:\n%s", ctl.Body)
			}
			done, err := rig.upper.WaitRequest(ctx, "MESSAGE", "UploadSnapShotFinished")
			if err != nil {
				t.Fatal(err)
			}
			body := string(done.Body)
			for _, want := range []string{"<SessionID>" + session + "</SessionID>", "<DeviceID>" + mappedTarget + "</DeviceID>", session + "-2"} {
				if !strings.Contains(body, want) {
					t.Fatalf("UploadSnapShotFinished at the upper lacks %s:\n%s", want, body)
				}
			}
			if strings.Contains(body, ch) {
				t.Fatalf("UploadSnapShotFinished at the upper leaks the local ID %s:\n%s", ch, body)
			}
		})
	}
}
