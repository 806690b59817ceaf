package sim

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/emiago/sipgo/sip"
)

var transports = []string{"udp", "tcp"}

// startPair starts an upper (quiet period 150 ms) and a device registered to it.
func startPair(t *testing.T, transport string, cfg DeviceConfig) (*Upper, *Device) {
	t.Helper()
	u := startUpper(t, UpperConfig{QuietPeriod: 150 * time.Millisecond})
	cfg.Server, cfg.Transport = u.Addr(), transport
	if cfg.Channels == nil {
		cfg.Channels = MakeChannels(devID, 3)
	}
	d := newDevice(t, cfg)
	if err := d.Start(testContext(t)); err != nil {
		t.Fatal(err)
	}
	return u, d
}

func mustRequest(t *testing.T, u *Upper, root, cmdType, deviceID string, extra ...Field) Answer {
	t.Helper()
	ans, err := u.Request(testContext(t), devID, root, cmdType, deviceID, extra...)
	if err != nil {
		t.Fatal(err)
	}
	if ans.Status != 200 {
		t.Fatalf("%s %s answered %d %s", root, cmdType, ans.Status, ans.Reason)
	}
	return ans
}

func TestRecordInfoInSeveralMessages(t *testing.T) {
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			checkGoroutines(t)
			u, d := startPair(t, transport, DeviceConfig{RecordsPerQuery: 5, RecordsPerMessage: 2})
			ch := MakeChannels(devID, 3)[1]
			from, to := "2026-11-24T08:00:00", "2026-11-24T18:00:00"
			ans := mustRequest(t, u, "Query", "RecordInfo", ch.ID,
				Field{Name: "StartTime", Value: from}, Field{Name: "EndTime", Value: to},
				Field{Name: "Secrecy", Value: "0"}, Field{Name: "Type", Value: "all"})
			if !ans.Complete || len(ans.Bodies) != 3 || ans.Items() != 5 {
				t.Fatalf("complete %v, %d bodies, %d items; want complete, 3 bodies, 5 items", ans.Complete, len(ans.Bodies), ans.Items())
			}
			for i, b := range ans.Bodies {
				if b.Err != nil || b.Root != "Response" || b.CmdType != "RecordInfo" || b.SN != ans.SN ||
					b.DeviceID != ch.ID || b.SumNum != 5 || b.Items != []int{2, 2, 1}[i] {
					t.Errorf("body %d: %+v", i, b)
				}
				var r recordInfoResponse
				if err := decodeBody(b.Raw, &r); err != nil {
					t.Fatal(err)
				}
				if r.RecordList.Num != b.Items {
					t.Errorf("body %d: RecordList Num %d, %d items", i, r.RecordList.Num, b.Items)
				}
				for _, it := range r.RecordList.Items {
					if it.DeviceID != ch.ID || it.Name != ch.Name || it.StartTime < from || it.EndTime > to || it.StartTime >= it.EndTime {
						t.Errorf("record %+v: want channel %s named %s within %s..%s", it, ch.ID, ch.Name, from, to)
					}
				}
			}
			q, err := d.WaitRequest(testContext(t), "MESSAGE", "RecordInfo")
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"<StartTime>" + from + "</StartTime>", "<Type>all</Type>"} {
				if !bytes.Contains(q.Body, []byte(want)) {
					t.Errorf("query as received lacks %s:\n%s", want, q.Body)
				}
			}

			none := mustRequest(t, u, "Query", "RecordInfo", "34020000001310009999")
			if !none.Complete || len(none.Bodies) != 1 || none.Bodies[0].SumNum != 0 || none.Bodies[0].Items != 0 {
				t.Errorf("unknown channel: %+v, want one body with SumNum 0", none)
			}
		})
	}
}

func TestDeviceControl(t *testing.T) {
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			checkGoroutines(t)
			u, d := startPair(t, transport, DeviceConfig{})
			ctx := testContext(t)
			ch := MakeChannels(devID, 3)[0].ID
			up := PTZCmd(1, PTZUp, 0, 0xFA, 0)
			if up != "A50F010800FA00B7" { // the seed document's "up" sample
				t.Errorf("PTZCmd(up) = %s", up)
			}
			ans := mustRequest(t, u, "Control", "DeviceControl", ch, Field{Name: "PTZCmd", Value: up})
			if len(ans.Bodies) != 0 {
				t.Errorf("PTZ control answered with %d Responses, want none", len(ans.Bodies))
			}
			ctl, err := d.WaitControl(ctx, "PTZCmd")
			if err != nil {
				t.Fatal(err)
			}
			if ctl.Err != nil || ctl.Value != up || ctl.DeviceID != ch || ctl.SN != ans.SN {
				t.Errorf("control %+v (err %v)", ctl.Received, ctl.Err)
			}
			mustRequest(t, u, "Control", "DeviceControl", ch, Field{Name: "PTZCmd", Value: "A50F010800FA00B8"})
			if ctl, err := d.WaitControl(ctx, "PTZCmd"); err != nil || ctl.Err == nil {
				t.Errorf("PTZCmd with a wrong checksum accepted: %v %v", ctl.Err, err)
			}

			guard := mustRequest(t, u, "Control", "DeviceControl", devID, Field{Name: "GuardCmd", Value: "SetGuard"})
			if !guard.Complete || len(guard.Bodies) != 1 || guard.Bodies[0].Result != "OK" || guard.Bodies[0].CmdType != "DeviceControl" {
				t.Errorf("GuardCmd answer %+v", guard)
			}
			status := mustRequest(t, u, "Query", "DeviceStatus", devID)
			if len(status.Bodies) != 1 || !bytes.Contains(status.Bodies[0].Raw, []byte("<DutyStatus>ONDUTY</DutyStatus>")) {
				t.Errorf("DeviceStatus after SetGuard: %+v", status)
			}
			bad := mustRequest(t, u, "Control", "DeviceControl", "34020000001310009999", Field{Name: "RecordCmd", Value: "Record"})
			if len(bad.Bodies) != 1 || bad.Bodies[0].Result != "ERROR" {
				t.Errorf("RecordCmd for an unknown channel: %+v, want Result ERROR", bad)
			}
			cfg := mustRequest(t, u, "Control", "DeviceConfig", devID,
				Field{Name: "BasicParam", Value: "<Name>东门</Name><Expiration>3600</Expiration>", Raw: true})
			if len(cfg.Bodies) != 1 || cfg.Bodies[0].Result != "OK" || cfg.Bodies[0].CmdType != "DeviceConfig" {
				t.Errorf("DeviceConfig answer %+v", cfg)
			}
			if ctl, err := d.WaitControl(ctx, "BasicParam"); err != nil || !strings.Contains(ctl.Value, "东门") {
				t.Errorf("DeviceConfig as recorded: %q, %v", ctl.Value, err)
			}
		})
	}
}

func TestPTZCmdChecksum(t *testing.T) {
	// Samples from the seed document, checked by hand against A.3.1.
	for _, s := range []string{"A50F010800FA00B7", "A50F010400FA00B3", "A50F01100000A065", "A50F0100000000B5", "a50f014400fa00f3"} {
		if err := CheckPTZCmd(s); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	for _, s := range []string{"A50F010800FA00B6", "A50E010800FA00B6", "B50F010800FA00C7", "A50F0108", "ZZ0F010800FA00B7", ""} {
		if err := CheckPTZCmd(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
	if got := PTZCmd(0x123, PTZLeft|PTZUp, 0x20, 0x30, 0x5); CheckPTZCmd(got) != nil || got[4:6] != "23" || got[12:14] != "51" {
		t.Errorf("PTZCmd(address 0x123, zoom 5) = %s: want address low byte 23 and byte 7 = 51", got)
	}
}

func TestOtherQueries(t *testing.T) {
	checkGoroutines(t)
	u, _ := startPair(t, "udp", DeviceConfig{Charset: CharsetUTF8})
	ch := MakeChannels(devID, 3)[0].ID
	presets := mustRequest(t, u, "Query", "PresetQuery", ch)
	if len(presets.Bodies) != 1 || presets.Bodies[0].Items != 3 || !bytes.Contains(presets.Bodies[0].Raw, []byte("<PresetName>大门</PresetName>")) {
		t.Errorf("PresetQuery: %+v", presets)
	}
	cfg := mustRequest(t, u, "Query", "ConfigDownload", devID, Field{Name: "ConfigType", Value: "BasicParam"})
	if len(cfg.Bodies) != 1 || cfg.Bodies[0].Result != "OK" || !bytes.Contains(cfg.Bodies[0].Raw, []byte("<SIPServerID>"+upperID+"</SIPServerID>")) {
		t.Errorf("ConfigDownload: %+v", cfg)
	}
	mustRequest(t, u, "Control", "DeviceControl", ch,
		Field{Name: "HomePosition", Value: "<Enabled>1</Enabled><ResetTime>30</ResetTime><PresetIndex>2</PresetIndex>", Raw: true})
	home := mustRequest(t, u, "Query", "HomePositionQuery", ch)
	if len(home.Bodies) != 1 || !bytes.Contains(home.Bodies[0].Raw, []byte("<PresetIndex>2</PresetIndex>")) {
		t.Errorf("HomePositionQuery after HomePosition control: %+v", home)
	}
	pos := mustRequest(t, u, "Query", "PTZPosition", ch)
	if len(pos.Bodies) != 1 || !bytes.Contains(pos.Bodies[0].Raw, []byte("<Pan>")) {
		t.Errorf("PTZPosition: %+v", pos)
	}
	unknown := mustRequest(t, u, "Query", "CruiseTrackListQuery", ch)
	if len(unknown.Bodies) != 0 || unknown.Complete {
		t.Errorf("unsimulated query answered: %+v", unknown)
	}
}

func TestNoAnswerAndReject(t *testing.T) {
	checkGoroutines(t)
	u, d := startPair(t, "tcp", DeviceConfig{NoAnswer: map[string]bool{"DeviceInfo": true}, Reject: map[string]int{"DeviceStatus": 403}})
	start := time.Now()
	ans := mustRequest(t, u, "Query", "DeviceInfo", "")
	if len(ans.Bodies) != 0 || ans.Complete || time.Since(start) < 150*time.Millisecond {
		t.Errorf("NoAnswer DeviceInfo: %+v after %v; want no Response after the quiet period", ans, time.Since(start))
	}
	if _, err := d.WaitRequest(testContext(t), "MESSAGE", "DeviceInfo"); err != nil {
		t.Error(err)
	}
	rej, err := u.Request(testContext(t), devID, "Query", "DeviceStatus", "")
	if err != nil || rej.Status != 403 || len(rej.Bodies) != 0 {
		t.Errorf("rejected DeviceStatus: %+v, %v; want status 403", rej, err)
	}
	if _, err := u.Query(testContext(t), devID, "DeviceStatus", ""); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("Query of a rejected type = %v, want a 403 error", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := u.Request(ctx, devID, "Query", "DeviceInfo", ""); err == nil {
		t.Error("Request whose context ended before the quiet period returned no error")
	}
}

func TestAlarmRoundTrip(t *testing.T) {
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			checkGoroutines(t)
			u, d := startPair(t, transport, DeviceConfig{})
			ctx := testContext(t)
			ch := MakeChannels(devID, 3)[2].ID
			sn, err := d.SendAlarm(ctx, AlarmConfig{ChannelID: ch, Priority: 2, Method: 5, Type: 2, Description: "视频动检"})
			if err != nil {
				t.Fatal(err)
			}
			alarm, err := u.WaitAlarm(ctx, ch)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"<AlarmPriority>2</AlarmPriority>", "<AlarmMethod>5</AlarmMethod>",
				"<AlarmDescription>视频动检</AlarmDescription>", "<Info><AlarmType>2</AlarmType></Info>", "<AlarmTime>"} {
				if !bytes.Contains(alarm.Body, []byte(want)) {
					t.Errorf("alarm lacks %s:\n%s", want, alarm.Body)
				}
			}
			if alarm.SN != sn || alarm.Root != "Notify" || len(u.Alarms()) != 1 {
				t.Errorf("alarm SN %d root %s (%d recorded), want SN %d, Notify, 1", alarm.SN, alarm.Root, len(u.Alarms()), sn)
			}
			ack, err := d.WaitAlarmAck(ctx, sn)
			if err != nil {
				t.Fatal(err)
			}
			if ack.DeviceID != ch || !bytes.Contains(ack.Body, []byte("<Result>OK</Result>")) || ack.Transport != strings.ToUpper(transport) {
				t.Errorf("alarm Response over %s:\n%s", ack.Transport, ack.Body)
			}
			if transport == "tcp" && !ack.OnRegConn {
				t.Error("alarm Response did not come down the registration connection")
			}
		})
	}
}

func TestCatalogSubscription(t *testing.T) {
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			checkGoroutines(t)
			u, d := startPair(t, transport, DeviceConfig{SubscriptionMaxExpires: 60, Charset: CharsetGB2312})
			ctx := testContext(t)
			sub, err := u.Subscribe(ctx, devID, "Catalog", "", 120)
			if err != nil {
				t.Fatal(err)
			}
			res := sub.Response()
			if sub.Expires() != 60 || toTag(res) == "" || !strings.HasPrefix(res.GetHeader("Event").Value(), "Catalog;id=") ||
				!bytes.Contains(toUTF8(res.Body()), []byte("<Result>OK</Result>")) {
				t.Errorf("SUBSCRIBE answer (granted %d):\n%s", sub.Expires(), res)
			}
			subs := d.Subscriptions()
			if len(subs) != 1 || subs[0].CmdType != "Catalog" || subs[0].Expires != 60 || subs[0].CallID != sub.CallID() ||
				subs[0].Event != sub.Event || !strings.Contains(subs[0].From, upperID) {
				t.Fatalf("device subscriptions %+v", subs)
			}

			chans := MakeChannels(devID, 3)
			if err := d.SetChannelStatus(ctx, chans[1].ID, "OFF"); err != nil {
				t.Fatal(err)
			}
			first, err := sub.WaitNotify(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			n := first.Request
			if n.CallID().Value() != sub.CallID() || fromTag(n) != toTag(res) || n.GetHeader("Event").Value() != sub.Event ||
				!strings.HasPrefix(n.GetHeader("Subscription-State").Value(), "active;expires=") ||
				n.ContentType().Value() != contentTypeMANSCDP || first.Root != "Notify" || first.Transport != strings.ToUpper(transport) {
				t.Errorf("NOTIFY:\n%s", n)
			}
			if utf8.Valid(n.Body()) {
				t.Error("GB2312 device sent a UTF-8 NOTIFY body")
			}
			if err := d.AddChannel(ctx, Channel{ID: "34020000001310000099", Name: "新增摄像机", Status: "ON"}); err != nil {
				t.Fatal(err)
			}
			if err := d.RemoveChannel(ctx, chans[0].ID); err != nil {
				t.Fatal(err)
			}
			second, err := sub.WaitNotify(ctx, func(b []byte) bool { return bytes.Contains(b, []byte("<Event>ADD</Event>")) })
			if err != nil {
				t.Fatal(err)
			}
			if _, err := sub.WaitNotify(ctx, func(b []byte) bool { return bytes.Contains(b, []byte("<Event>DEL</Event>")) }); err != nil {
				t.Fatal(err)
			}
			if second.Request.CSeq().SeqNo <= n.CSeq().SeqNo {
				t.Errorf("NOTIFY CSeq %d after %d", second.Request.CSeq().SeqNo, n.CSeq().SeqNo)
			}
			want := []CatalogItem{
				{DeviceID: chans[1].ID, Event: "OFF", Status: "OFF", Name: chans[1].Name},
				{DeviceID: "34020000001310000099", Event: "ADD", Status: "ON", Name: "新增摄像机"},
				{DeviceID: chans[0].ID, Event: "DEL"},
			}
			got := sub.CatalogItems()
			if len(got) != len(want) {
				t.Fatalf("catalog notifications %+v", got)
			}
			for i, w := range want {
				if g := got[i]; g.DeviceID != w.DeviceID || g.Event != w.Event || g.Status != w.Status || g.Name != w.Name {
					t.Errorf("notification %d = %+v, want %+v", i, g, w)
				}
			}

			if err := sub.Refresh(ctx, 30); err != nil {
				t.Fatal(err)
			}
			if subs := d.Subscriptions(); len(subs) != 1 || subs[0].Expires != 30 || subs[0].CallID != sub.CallID() || sub.Expires() != 30 {
				t.Errorf("after refresh: device %+v, granted %d", subs, sub.Expires())
			}
			if err := sub.Unsubscribe(ctx); err != nil {
				t.Fatal(err)
			}
			if subs := d.Subscriptions(); len(subs) != 0 {
				t.Errorf("after unsubscribe the device still holds %+v", subs)
			}
			if err := sub.Refresh(ctx, 30); err == nil {
				t.Error("refresh after unsubscribe succeeded")
			}
			// Without a subscriber the change goes up as a MESSAGE.
			if err := d.SetChannelStatus(ctx, chans[2].ID, "VLOST"); err != nil {
				t.Fatal(err)
			}
			m, err := u.WaitRequest(ctx, "MESSAGE", "Catalog")
			if err != nil {
				t.Fatal(err)
			}
			if m.Root != "Notify" || !bytes.Contains(m.Body, []byte("<Event>VLOST</Event>")) {
				t.Errorf("catalog change without subscriber:\n%s", m.Body)
			}
			if len(sub.Notifies()) != 3 {
				t.Errorf("%d NOTIFYs recorded, want 3", len(sub.Notifies()))
			}
		})
	}
}

func TestAlarmAndPositionSubscriptions(t *testing.T) {
	checkGoroutines(t)
	u, d := startPair(t, "udp", DeviceConfig{})
	ctx := testContext(t)
	alarms, err := u.Subscribe(ctx, devID, "Alarm", "", 600)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(alarms.Event, "presence;id=") {
		t.Errorf("alarm subscription Event %q, want presence", alarms.Event)
	}
	q, err := d.WaitRequest(ctx, "SUBSCRIBE", "Alarm")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(q.Body, []byte("<StartAlarmPriority>0</StartAlarmPriority>")) || q.Request.GetHeader("Expires").Value() != "600" {
		t.Errorf("alarm SUBSCRIBE:\n%s", q.Request)
	}
	position, err := u.Subscribe(ctx, devID, "MobilePosition", "", 600)
	if err != nil {
		t.Fatal(err)
	}
	sn, err := d.SendAlarm(ctx, AlarmConfig{Description: "防区报警"})
	if err != nil {
		t.Fatal(err)
	}
	n, err := alarms.WaitNotify(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n.SN != sn || n.CmdType != "Alarm" || n.DeviceID != devID {
		t.Errorf("alarm NOTIFY %+v", n)
	}
	if _, err := u.WaitAlarm(ctx, devID); err != nil {
		t.Errorf("alarm not also reported by MESSAGE: %v", err)
	}
	if err := d.SendMobilePosition(ctx, MobilePosition{Longitude: 117.2, Latitude: 31.8}); err != nil {
		t.Fatal(err)
	}
	p, err := position.WaitNotify(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.CmdType != "MobilePosition" || !bytes.Contains(p.Body, []byte("<Longitude>117.2</Longitude>")) || len(alarms.Notifies()) != 1 {
		t.Errorf("position NOTIFY %s (alarm NOTIFYs %d)", p.Body, len(alarms.Notifies()))
	}
	// A second subscription from the same subscriber for the same events replaces the first.
	again, err := u.Subscribe(ctx, devID, "Alarm", "", 600)
	if err != nil {
		t.Fatal(err)
	}
	var alarmSubs []SubscriptionInfo
	for _, s := range d.Subscriptions() {
		if s.CmdType == "Alarm" {
			alarmSubs = append(alarmSubs, s)
		}
	}
	if len(alarmSubs) != 1 || alarmSubs[0].CallID != again.CallID() {
		t.Errorf("alarm subscriptions after a new SUBSCRIBE: %+v", alarmSubs)
	}
	if _, err := u.Subscribe(ctx, devID, "DeviceInfo", "", 600); err == nil || !strings.Contains(err.Error(), "489") {
		t.Errorf("subscription to DeviceInfo = %v, want 489", err)
	}
}

// rawExchange sends a request written by hand from pc to dest and returns the final response.
func rawExchange(t *testing.T, pc net.PacketConn, dest, request string) *sip.Response {
	t.Helper()
	addr, err := net.ResolveUDPAddr("udp", dest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.WriteTo([]byte(request), addr); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		_ = pc.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := sip.ParseMessage(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		if res, ok := msg.(*sip.Response); ok && res.StatusCode >= 200 {
			return res
		}
	}
}

// rawRequest writes a request from pc; headers are extra header lines, each ending in CRLF.
func rawRequest(pc net.PacketConn, method, to, callID, toTag, headers, body string) string {
	toParams := ""
	if toTag != "" {
		toParams = ";tag=" + toTag
	}
	return fmt.Sprintf("%s sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;rport;branch=z9hG4bK%s\r\n"+
		"From: <sip:%s@3402000000>;tag=a1\r\nTo: <sip:%s>%s\r\nCall-ID: %s\r\nCSeq: %d %s\r\n"+
		"Max-Forwards: 70\r\nContact: <sip:%s@%s>\r\n%sContent-Length: %d\r\n\r\n%s",
		method, to, pc.LocalAddr(), randomHex(4), upperID, to, toParams, callID, time.Now().UnixNano()%100000, method,
		upperID, pc.LocalAddr(), headers, len(body), body)
}

func listenUDP(t *testing.T) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// TestUpperAnswersOptionsAndRefusesStrayNotify talks to the upper over a plain UDP socket.
func TestUpperAnswersOptionsAndRefusesStrayNotify(t *testing.T) {
	checkGoroutines(t)
	u := startUpper(t, UpperConfig{})
	pc := listenUDP(t)
	to := upperID + "@" + u.Addr()
	for _, tc := range []struct {
		method, headers string
		want            int
	}{
		{"OPTIONS", "", 200},
		{"NOTIFY", "Event: Catalog\r\nSubscription-State: active;expires=60\r\n", 481},
	} {
		res := rawExchange(t, pc, u.Addr(), rawRequest(pc, tc.method, to, "stray-"+randomHex(4), "b2", tc.headers, ""))
		if res.StatusCode != tc.want || res.GetHeader("X-GB-Ver") == nil || res.GetHeader("X-GB-Ver").Value() != "3.0" {
			t.Errorf("%s answered:\n%s\nwant %d with X-GB-Ver: 3.0", tc.method, res, tc.want)
		}
	}
}

// TestDeviceSubscribeDialogRules drives the device's SUBSCRIBE handling by hand, including the
// seed document's unsubscription: same Call-ID, no To tag, Expires 0.
func TestDeviceSubscribeDialogRules(t *testing.T) {
	checkGoroutines(t)
	_, d := startPair(t, "udp", DeviceConfig{})
	pc := listenUDP(t)
	to := devID + "@" + d.LocalAddr()
	query := `<?xml version="1.0" encoding="UTF-8"?>` + "\r\n<Query><CmdType>Catalog</CmdType><SN>130</SN><DeviceID>" + devID + "</DeviceID></Query>"
	headers := func(expires int) string {
		return fmt.Sprintf("Event: Catalog;id=1\r\nExpires: %d\r\nContent-Type: Application/MANSCDP+xml\r\n", expires)
	}
	callID := "sub-" + randomHex(4)
	res := rawExchange(t, pc, d.LocalAddr(), rawRequest(pc, "SUBSCRIBE", to, callID, "", headers(60), query))
	tag := toTag(res)
	if res.StatusCode != 200 || tag == "" || headerInt(res, "Expires", -1) != 60 || res.GetHeader("Event").Value() != "Catalog;id=1" ||
		!bytes.Contains(res.Body(), []byte("<SN>130</SN>")) || res.Contact() == nil {
		t.Fatalf("SUBSCRIBE answered:\n%s", res)
	}
	if subs := d.Subscriptions(); len(subs) != 1 || subs[0].CallID != callID {
		t.Fatalf("subscriptions %+v", subs)
	}
	if res := rawExchange(t, pc, d.LocalAddr(), rawRequest(pc, "SUBSCRIBE", to, callID, "not-ours", headers(60), query)); res.StatusCode != 481 {
		t.Errorf("SUBSCRIBE with a foreign To tag answered %d, want 481", res.StatusCode)
	}
	if res := rawExchange(t, pc, d.LocalAddr(), rawRequest(pc, "SUBSCRIBE", to, callID, "", "Expires: 60\r\n", query)); res.StatusCode != 400 {
		t.Errorf("SUBSCRIBE without Event answered %d, want 400", res.StatusCode)
	}
	res = rawExchange(t, pc, d.LocalAddr(), rawRequest(pc, "SUBSCRIBE", to, callID, "", headers(0), query))
	if res.StatusCode != 200 || toTag(res) != tag || headerInt(res, "Expires", -1) != 0 {
		t.Errorf("unsubscription answered:\n%s", res)
	}
	if subs := d.Subscriptions(); len(subs) != 0 {
		t.Errorf("subscriptions after unsubscription: %+v", subs)
	}
}

func TestGBVersionRecorded(t *testing.T) {
	checkGoroutines(t)
	u := startUpper(t, UpperConfig{})
	d := newDevice(t, DeviceConfig{Server: u.Addr(), GBVersion: "3.0"})
	res, err := d.Register(testContext(t), 3600)
	if err != nil {
		t.Fatal(err)
	}
	if h := res.GetHeader("X-GB-Ver"); h == nil || h.Value() != "3.0" {
		t.Errorf("registrar's 200 lacks X-GB-Ver: 3.0:\n%s", res)
	}
	if l, _ := u.Lower(devID); l.GBVersion != "3.0" {
		t.Errorf("LowerState.GBVersion = %q, want 3.0", l.GBVersion)
	}
}

func TestTreeCatalog(t *testing.T) {
	for _, charset := range []string{CharsetGB2312, CharsetUTF8AsGB2312} {
		t.Run(charset, func(t *testing.T) {
			checkGoroutines(t)
			tree := MakeTree(devID, "340200", 2, 3)
			u, _ := startPair(t, "udp", DeviceConfig{Channels: tree, Charset: charset})
			items, sum, err := u.QueryCatalog(testContext(t), devID)
			if err != nil {
				t.Fatal(err)
			}
			if sum != len(tree) || len(items) != len(tree) {
				t.Fatalf("SumNum %d, %d items, want %d", sum, len(items), len(tree))
			}
			byID := map[string]CatalogItem{}
			for _, it := range items {
				byID[it.DeviceID] = it
			}
			bg := byID["34020000002150000001"]
			if civil := byID["340200"]; civil.Name != "行政区划340200" || civil.Parental != 1 || civil.Manufacturer != "" {
				t.Errorf("civil code node %+v", civil)
			}
			if bg.Parental != 1 || bg.ParentID != devID || bg.Name != "业务分组" {
				t.Errorf("business group %+v", bg)
			}
			var vos, cams int
			for _, it := range items {
				switch typeCode(it.DeviceID) {
				case typeVirtualOrg:
					vos++
					if it.ParentID != bg.DeviceID || it.BusinessGroupID != bg.DeviceID || it.Parental != 1 {
						t.Errorf("virtual organisation %+v", it)
					}
				case typeCamera:
					cams++
					if parent := byID[it.ParentID]; typeCode(parent.DeviceID) != typeVirtualOrg || it.BusinessGroupID != bg.DeviceID ||
						it.CivilCode != "340200" || it.Status != "ON" || it.Parental != 0 || !strings.HasPrefix(it.Name, "虚拟组织") {
						t.Errorf("camera %+v", it)
					}
				}
			}
			if vos != 2 || cams != 6 {
				t.Errorf("%d virtual organisations, %d cameras; want 2 and 6", vos, cams)
			}
		})
	}
}

func TestMakeTree(t *testing.T) {
	tree := MakeTree("44010000002000000001", "4401061", 3, 4)
	if len(tree) != 2+3+12 || tree[0].ID != "440106" {
		t.Fatalf("%d entries, civil node %q; want 17 and 440106 (odd digit dropped)", len(tree), tree[0].ID)
	}
	seen := map[string]bool{}
	for _, ch := range tree[1:] {
		if len(ch.ID) != 20 || !strings.HasPrefix(ch.ID, "44010600") || seen[ch.ID] {
			t.Errorf("ID %s: want 20 digits, centre code 44010600, unique", ch.ID)
		}
		seen[ch.ID] = true
	}
	if got := MakeTree("34020000002000000001", "", 0, 5); len(got) != 2 || got[0].ID != "340200" {
		t.Errorf("no groups, default civil code: %+v", got)
	}
	if got := MakeTree("x", "x", -1, -1); len(got) != 2 || got[0].ID != "34" {
		t.Errorf("bad input: %+v", got)
	}
}

func TestBuildCommand(t *testing.T) {
	doc, err := buildCommand("Query", "RecordInfo", 7, devID, []Field{{Name: "Address", Value: "a<b&c"}, {Name: "Info", Value: "<X>1</X>", Raw: true}})
	if err != nil {
		t.Fatal(err)
	}
	want := "<Query>\r\n<CmdType>RecordInfo</CmdType>\r\n<SN>7</SN>\r\n<DeviceID>" + devID +
		"</DeviceID>\r\n<Address>a&lt;b&amp;c</Address>\r\n<Info><X>1</X></Info>\r\n</Query>"
	if string(doc) != want {
		t.Errorf("got\n%s\nwant\n%s", doc, want)
	}
	for _, bad := range []string{"", "1A", "a b", "x>"} {
		if _, err := buildCommand("Query", "Catalog", 1, devID, []Field{{Name: bad}}); err == nil {
			t.Errorf("element name %q accepted", bad)
		}
	}
}

// TestLargeCatalogOverUDP pushes one item per MESSAGE over UDP and checks nothing is lost.
func TestLargeCatalogOverUDP(t *testing.T) {
	checkGoroutines(t)
	const n = 1000
	u, _ := startPair(t, "udp", DeviceConfig{Channels: MakeChannels(devID, n)})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	items, sum, err := u.QueryCatalog(ctx, devID)
	if err != nil || sum != n || len(items) != n {
		t.Fatalf("%d of %d items: %v", len(items), sum, err)
	}
	t.Logf("%d catalog MESSAGEs in %v", n, time.Since(start))
}
