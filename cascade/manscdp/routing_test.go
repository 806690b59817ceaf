package manscdp

import (
	"fmt"
	"testing"
)

func decodeMessage(t *testing.T, body string) *Message {
	t.Helper()
	var m Message
	mustDecode(t, []byte(body), &m)
	return &m
}

func control(children string) string {
	return `<Control><CmdType>DeviceControl</CmdType><SN>1</SN><DeviceID>1</DeviceID>` + children + `</Control>`
}

func TestExpectsResponse(t *testing.T) {
	tests := []struct {
		root, cmdType, body string
		want                bool
	}{
		{RootQuery, CmdCatalog, "", true},
		{RootQuery, CmdPTZPosition, "", true},
		{"query", "Alarm", "", true},
		{RootControl, CmdDeviceConfig, "", true},
		{RootControl, CmdDeviceControl, control(`<PTZCmd>A50F0100000000B5</PTZCmd>`), false},
		{RootControl, CmdDeviceControl, control(`<TeleBoot>Boot</TeleBoot>`), false},
		{RootControl, CmdDeviceControl, control(`<IFameCmd>Send</IFameCmd>`), false},
		{RootControl, CmdDeviceControl, control(`<IFrameCmd>Send</IFrameCmd>`), false},
		{RootControl, CmdDeviceControl, control(`<DragZoomIn><Length>1</Length></DragZoomIn>`), false},
		{RootControl, CmdDeviceControl, control(`<DragZoomOut><Length>1</Length></DragZoomOut>`), false},
		{RootControl, CmdDeviceControl, control(`<PTZPreciseCtrl><Pan>1</Pan></PTZPreciseCtrl>`), false},
		{RootControl, CmdDeviceControl, control(`<FormatSDCard>1</FormatSDCard>`), false},
		{RootControl, CmdDeviceControl, control(`<TargetTrack>Auto</TargetTrack>`), false},
		{RootControl, CmdDeviceControl, control(`<RecordCmd>Record</RecordCmd>`), true},
		{RootControl, CmdDeviceControl, control(`<GuardCmd>SetGuard</GuardCmd>`), true},
		{RootControl, CmdDeviceControl, control(`<AlarmCmd>ResetAlarm</AlarmCmd><Info><AlarmMethod>2</AlarmMethod></Info>`), true},
		{RootControl, CmdDeviceControl, control(`<homeposition><Enabled>0</Enabled></homeposition>`), true},
		{RootControl, CmdDeviceControl, control(`<DeviceUpgrade><Firmware>2</Firmware></DeviceUpgrade>`), true},
		{RootControl, CmdDeviceControl, control(`<Vendor>1</Vendor>`), false},
		{RootNotify, CmdAlarm, "", true},
		{RootNotify, CmdBroadcast, "", true},
		{RootNotify, CmdKeepalive, "", false},
		{RootNotify, CmdMediaStatus, "", false},
		{RootNotify, CmdCatalog, "", false},
		{RootNotify, CmdUploadSnapShotFinished, "", false},
		{RootResponse, CmdCatalog, "", false},
		{RootResponse, CmdAlarm, "", false},
	}
	for _, tt := range tests {
		var m *Message
		if tt.body != "" {
			m = decodeMessage(t, tt.body)
		}
		if got := ExpectsResponse(tt.root, tt.cmdType, m); got != tt.want {
			t.Errorf("ExpectsResponse(%s, %s, %s) = %v, want %v", tt.root, tt.cmdType, tt.body, got, tt.want)
		}
	}
	if ExpectsResponse(RootControl, CmdDeviceControl, nil) {
		t.Error("DeviceControl without its body cannot be known to expect a response")
	}
}

func TestMultiPart(t *testing.T) {
	for _, cmd := range []string{CmdCatalog, CmdRecordInfo, CmdPresetQuery, CmdCruiseTrackListQuery, CmdCruiseTrackQuery, CmdSDCardStatus, "recordinfo"} {
		if !MultiPart(cmd) {
			t.Errorf("MultiPart(%s) = false", cmd)
		}
	}
	for _, cmd := range []string{CmdDeviceInfo, CmdDeviceStatus, CmdConfigDownload, CmdHomePositionQuery, CmdPTZPosition, CmdKeepalive, ""} {
		if MultiPart(cmd) {
			t.Errorf("MultiPart(%s) = true", cmd)
		}
	}
}

func TestCountItemsAcrossMessages(t *testing.T) {
	// A RecordInfo answer of 5 recordings in 3 MESSAGEs.
	page := func(n int) string {
		items := ""
		for i := 0; i < n; i++ {
			items += fmt.Sprintf("<Item><DeviceID>1</DeviceID><Name>r%d</Name></Item>", i)
		}
		return fmt.Sprintf(`<Response><CmdType>RecordInfo</CmdType><SN>9</SN><DeviceID>1</DeviceID><SumNum> 5 </SumNum>`+
			`<RecordList Num="%d">%s</RecordList></Response>`, n, items)
	}
	total := 0
	for i, n := range []int{2, 2, 1} {
		sum, items, ok := CountItems(decodeMessage(t, page(n)))
		if !ok || sum != 5 || items != n {
			t.Fatalf("page %d: CountItems = %d, %d, %v", i, sum, items, ok)
		}
		total += items
		if complete := total >= sum; complete != (i == 2) {
			t.Fatalf("after page %d complete = %v", i, complete)
		}
	}

	tests := []struct {
		name, body string
		sum, items int
		ok         bool
	}{
		{"catalog", `<Response><CmdType>Catalog</CmdType><SumNum>10</SumNum><DeviceList Num="2"><Item/><Item/><Other/></DeviceList></Response>`, 10, 2, true},
		{"cruise tracks", `<Response><CmdType>CruiseTrackListQuery</CmdType><SumNum>3</SumNum><CruiseTrackList Num="1"><CruiseTrack/></CruiseTrackList></Response>`, 3, 1, true},
		{"cruise points", `<Response><CmdType>CruiseTrackQuery</CmdType><SumNum>2</SumNum><CruisePointList><CruisePoint/><cruisepoint/></CruisePointList></Response>`, 2, 2, true},
		{"SD cards", `<Response><CmdType>SDCardStatus</CmdType><SumNum>1</SumNum><SDCardStatusInfo Num="1"><Item/></SDCardStatusInfo></Response>`, 1, 1, true},
		{"empty answer", `<Response><CmdType>RecordInfo</CmdType><SumNum>0</SumNum></Response>`, 0, 0, true},
		{"presets without SumNum", `<Response><CmdType>PresetQuery</CmdType><PresetList Num="2"><Item/><Item/></PresetList></Response>`, 2, 2, true},
		{"bad SumNum", `<Response><CmdType>Catalog</CmdType><SumNum>many</SumNum><DeviceList><Item/></DeviceList></Response>`, 0, 1, false},
		{"negative SumNum", `<Response><CmdType>Catalog</CmdType><SumNum>-1</SumNum></Response>`, 0, 0, false},
		{"not counted", `<Response><CmdType>DeviceInfo</CmdType><SumNum>1</SumNum></Response>`, 0, 0, false},
	}
	for _, tt := range tests {
		sum, items, ok := CountItems(decodeMessage(t, tt.body))
		if sum != tt.sum || items != tt.items || ok != tt.ok {
			t.Errorf("%s: CountItems = %d, %d, %v; want %d, %d, %v", tt.name, sum, items, ok, tt.sum, tt.items, tt.ok)
		}
	}
	if _, _, ok := CountItems(nil); ok {
		t.Error("CountItems(nil) ok")
	}
}
