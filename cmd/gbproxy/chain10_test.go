package main

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
)

// Issue 10's flows three levels deep: upper ← top proxy ← middle proxy ←
// camera, with one signalling transport between all levels. The top proxy
// shares the camera's channel under mappedTarget, so every test also proves
// the IDs are mapped where the upper meets the cascade.

const (
	chainMid = "34020100002000000001"
	chainCam = "34020100001320000001"
)

type chainRig struct {
	top, mid *testProxy
	upper    *sim.Upper
	cam      *sim.Device
	ch       string // the camera's channel, as the middle and top proxies know it
}

// newChainRig starts the three levels over transport; platform adds keys
// to the top proxy's upper platform, camera adjusts the camera.
func newChainRig(t *testing.T, transport, platform string, camera func(*sim.DeviceConfig)) *chainRig {
	t.Helper()
	r := &chainRig{ch: sim.MakeChannels(chainCam, 1)[0].ID}
	r.upper = newUpper(t, "127.0.0.1:0", nil)
	r.top = startProxy(t, "", upperPlatformYAML(r.upper.Addr(), transport)+
		fmt.Sprintf("      share:\n        map: {%q: %q}\n", r.ch, mappedTarget)+platform+refreshYAML)
	r.mid = startProxy(t, "", strings.Replace(proxyAsUpperYAML(chainMid, proxyID, r.top.lowerAddr()),
		"transport: tcp", "transport: "+transport, 1))
	r.cam = newDevice(t, r.mid, chainCam, transport, 1, func(c *sim.DeviceConfig) {
		c.ServerID, c.Domain = chainMid, chainMid[:10]
		if camera != nil {
			camera(c)
		}
	})
	ctx := ctxTimeout(t, 15*time.Second)
	if err := r.cam.Start(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the camera's channel reaches the top proxy through the middle one", func() bool {
		return len(r.top.channels(chainMid)) == 1 && r.top.platform(upperID).Registered
	})
	if _, err := r.upper.WaitRegistered(ctx, proxyID); err != nil {
		t.Fatal(err)
	}
	mid, _ := r.top.device(chainMid)
	cam, _ := r.mid.device(chainCam)
	for what, got := range map[string]string{"top → upper": r.top.platform(upperID).Transport, "middle → top": mid.Transport, "camera → middle": cam.Transport} {
		if !strings.EqualFold(got, transport) {
			t.Fatalf("%s signalling over %q, want %s", what, got, transport)
		}
	}
	return r
}

// TestChainBroadcast: the upper's Notify Broadcast reaches the camera with
// its local target; the Response returns with the upper's SN and IDs; the
// camera's INVITE to the source becomes the middle proxy's INVITE at the top
// and the top's at the upper; audio the upper sends arrives at the camera
// byte-identical under the camera's SSRC; the upper's BYE ends every leg at
// both proxies, and so does the camera's BYE.
func TestChainBroadcast(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			r := newChainRig(t, transport, "", nil)
			ctx := ctxTimeout(t, 30*time.Second)
			for _, hangup := range []string{"upper", "camera"} {
				chainBroadcastOnce(t, ctx, r, hangup)
			}
		})
	}
}

// chainBroadcastOnce runs one broadcast; hangup says who sends BYE.
func chainBroadcastOnce(t *testing.T, ctx context.Context, r *chainRig, hangup string) {
	t.Helper()
	ans, err := r.upper.Broadcast(ctx, proxyID, voiceSource, mappedTarget)
	if err != nil || ans.Status != 200 || len(ans.Bodies) != 1 {
		t.Fatalf("Broadcast three levels deep: %+v, %v", ans, err)
	}
	if b := ans.Bodies[0]; b.CmdType != "Broadcast" || b.SN != ans.SN || b.DeviceID != mappedTarget || b.Result != "OK" {
		t.Fatalf("Response Broadcast at the upper: %+v; want SN %d, DeviceID %s, Result OK", b, ans.SN, mappedTarget)
	}
	notify, err := r.cam.WaitRequest(ctx, "MESSAGE", "Broadcast")
	if err != nil {
		t.Fatal(err)
	}
	if body := string(notify.Body); !strings.Contains(body, "<TargetID>"+r.ch+"</TargetID>") || !strings.Contains(body, "<SourceID>"+voiceSource+"</SourceID>") {
		t.Fatalf("Notify at the camera does not carry its local target and the source:\n%s", body)
	}
	src, err := r.upper.WaitVoiceSource(ctx)
	if err != nil {
		t.Fatal(err)
	}
	voice, err := r.cam.WaitVoice(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if src.SourceID != voiceSource || src.Offer.Direction != "recvonly" || src.Offer.Media != "audio" {
		t.Fatalf("top proxy's INVITE at the upper: source %s, offer %+v; want %s, recvonly audio", src.SourceID, src.Offer, voiceSource)
	}
	if voice.Answer.SSRC != fmt.Sprintf("%010d", voice.SSRC) || voice.Answer.Direction != "sendonly" {
		t.Fatalf("middle proxy's answer to the camera: %+v; want sendonly with y=%010d", voice.Answer, voice.SSRC)
	}
	// Each proxy holds one broadcast: the middle one with the camera
	// below, the top one with the middle proxy below, under the
	// SSRC the middle proxy asked for.
	topS, midS := r.top.sessions(), r.mid.sessions()
	if len(topS) != 1 || len(midS) != 1 || topS[0].Kind != "broadcast" || midS[0].Kind != "broadcast" ||
		midS[0].ChannelID != r.ch || topS[0].ChannelID != r.ch || topS[0].SSRCLower != midS[0].SSRCUpper ||
		midS[0].SSRCLower != fmt.Sprintf("%010d", voice.SSRC) {
		t.Fatalf("broadcast sessions: top %+v, middle %+v", topS, midS)
	}
	var sent [][]byte
	for i := range 25 {
		p := make([]byte, 160)
		for j := range p {
			p[j] = byte(i*37 + j)
		}
		sent = append(sent, p)
	}
	if err := src.Send(sent...); err != nil {
		t.Fatal(err)
	}
	if _, err := voice.Receiver().WaitPackets(ctx, len(sent)); err != nil {
		t.Fatalf("audio at the camera: %v", err)
	}
	for _, pk := range voice.Receiver().Packets() {
		if pk.SSRC != voice.SSRC || pk.PayloadType != 8 {
			t.Fatalf("audio packet at the camera with SSRC %d PT %d; want the camera's %d, PT 8", pk.SSRC, pk.PayloadType, voice.SSRC)
		}
	}
	if got, want := voice.Receiver().Payload(), bytes.Join(sent, nil); !bytes.Equal(got, want) {
		t.Fatalf("audio payload at the camera: %d bytes, not the %d the upper sent", len(got), len(want))
	}
	if hangup == "upper" {
		if err := src.Bye(ctx); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, ctx, voice.Ended(), "camera leg after the upper's BYE")
	} else {
		if err := voice.Bye(ctx); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, ctx, src.Ended(), "upper leg after the camera's BYE")
	}
	requireClean(t, r.top)
	requireClean(t, r.mid)
}

// TestChainSnapshot: SnapShotConfig goes down two proxies with the local ID,
// UploadSnapShotFinished comes back up with the SessionID kept and the
// upper's ID.
func TestChainSnapshot(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			r := newChainRig(t, transport, "", nil)
			ctx := ctxTimeout(t, 20*time.Second)
			session := "7c1d9e20-43b5-4a8f-8e61-0b2c3d4e5f60-" + transport
			ans, err := r.upper.Request(ctx, proxyID, "Control", "DeviceConfig", mappedTarget, sim.Field{Name: "SnapShotConfig", Raw: true,
				Value: "<SnapNum>3</SnapNum><Interval>1</Interval><UploadURL>http://192.0.2.1/upload</UploadURL><SessionID>" + session + "</SessionID>"})
			if err != nil || ans.Status != 200 || len(ans.Bodies) != 1 || ans.Bodies[0].DeviceID != mappedTarget || ans.Bodies[0].SN != ans.SN || ans.Bodies[0].Result != "OK" {
				t.Fatalf("DeviceConfig SnapShotConfig three levels deep: %+v, %v", ans, err)
			}
			ctl, err := r.cam.WaitControl(ctx, "SnapShotConfig")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(ctl.Body), "<DeviceID>"+r.ch+"</DeviceID>") || !strings.Contains(string(ctl.Body), session) {
				t.Fatalf("SnapShotConfig at the camera:\n%s", ctl.Body)
			}
			done, err := r.upper.WaitRequest(ctx, "MESSAGE", "UploadSnapShotFinished")
			if err != nil {
				t.Fatal(err)
			}
			body := string(done.Body)
			for _, want := range []string{"<SessionID>" + session + "</SessionID>", "<DeviceID>" + mappedTarget + "</DeviceID>", session + "-3"} {
				if !strings.Contains(body, want) {
					t.Fatalf("UploadSnapShotFinished at the upper lacks %s:\n%s", want, body)
				}
			}
			if strings.Contains(body, r.ch) {
				t.Fatalf("UploadSnapShotFinished at the upper leaks the local ID %s:\n%s", r.ch, body)
			}
		})
	}
}

const bigRecordCount = 2000

var filePathRE = regexp.MustCompile(`<FilePath>([^<]*)</FilePath>`)

// checkBigRecordInfo asks target for a day of recordings and requires all
// bigRecordCount of them, distinct, under the upper's SN and ID, declared
// and encoded in charset (the Chinese Address survives the decoding).
func checkBigRecordInfo(t *testing.T, u *sim.Upper, target, charset string) {
	t.Helper()
	ctx := ctxTimeout(t, 30*time.Second)
	ans, err := u.Request(ctx, proxyID, "Query", "RecordInfo", target,
		sim.Field{Name: "StartTime", Value: "2026-11-24T00:00:00"}, sim.Field{Name: "EndTime", Value: "2026-11-25T00:00:00"})
	if err != nil || ans.Status != 200 || !ans.Complete || ans.Items() != bigRecordCount {
		t.Fatalf("RecordInfo: status %d, complete %v, %d items in %d messages, err %v; want %d items",
			ans.Status, ans.Complete, ans.Items(), len(ans.Bodies), err, bigRecordCount)
	}
	decl := `encoding="` + map[string]string{"gb2312": "GB2312", "utf-8": "UTF-8"}[charset] + `"`
	paths := map[string]bool{}
	for _, b := range ans.Bodies {
		if b.Err != nil || b.SN != ans.SN || b.DeviceID != target || b.SumNum != bigRecordCount {
			t.Fatalf("a RecordInfo answer at the upper: SN %d DeviceID %s SumNum %d err %v; want SN %d, %s, %d",
				b.SN, b.DeviceID, b.SumNum, b.Err, ans.SN, target, bigRecordCount)
		}
		raw := string(b.Raw)
		if !strings.Contains(strings.SplitN(raw, "?>", 2)[0], decl) || !strings.Contains(raw, "录像存储1") {
			t.Fatalf("a RecordInfo answer not in the upper's charset %s:\n%.400s", charset, raw)
		}
		for _, m := range filePathRE.FindAllStringSubmatch(raw, -1) {
			paths[m[1]] = true
		}
	}
	if len(paths) != bigRecordCount {
		t.Fatalf("%d distinct recordings at the upper, want %d", len(paths), bigRecordCount)
	}
	t.Logf("%d recordings in %d messages", ans.Items(), len(ans.Bodies))
}

// bigRecords makes a camera (NVR-like) answer RecordInfo with
// bigRecordCount recordings, perMessage a MESSAGE, in charset.
func bigRecords(perMessage int, charset string) func(*sim.DeviceConfig) {
	return func(c *sim.DeviceConfig) {
		c.RecordsPerQuery, c.RecordsPerMessage, c.Charset = bigRecordCount, perMessage, charset
	}
}

// bigRecordCase is one 2,000-item RecordInfo run. The item count per
// message below must not matter, nor the charset the device speaks: the
// upper gets the answer complete in its own charset.
type bigRecordCase struct {
	name, transport, upperCharset, devCharset string
	perMessage                                int
}

var bigRecordCases = []bigRecordCase{
	{"udp-gb2312", "udp", "gb2312", sim.CharsetUTF8, 2},
	{"tcp-utf8", "tcp", "utf-8", sim.CharsetGB2312, 25},
}

// TestChainRecordInfoLarge: 2,000 recordings spread over many MESSAGEs
// arrive complete at the upper through two proxies.
func TestChainRecordInfoLarge(t *testing.T) {
	for _, tc := range bigRecordCases {
		t.Run(tc.name, func(t *testing.T) {
			r := newChainRig(t, tc.transport, "      charset: "+tc.upperCharset+"\n", bigRecords(tc.perMessage, tc.devCharset))
			checkBigRecordInfo(t, r.upper, mappedTarget, tc.upperCharset)
		})
	}
}

// TestRecordInfoLarge: the same through one proxy, the charsets the other
// way round.
func TestRecordInfoLarge(t *testing.T) {
	for _, tc := range []bigRecordCase{
		{"udp-utf8", "udp", "utf-8", sim.CharsetGB2312, 2},
		{"tcp-gb2312", "tcp", "gb2312", sim.CharsetUTF8, 25},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rig := newLiveRig(t, rigOptions{sipTransport: tc.transport, platform: "      charset: " + tc.upperCharset,
				device: bigRecords(tc.perMessage, tc.devCharset)})
			checkBigRecordInfo(t, rig.upper, rig.ch, tc.upperCharset)
		})
	}
}
