package manscdp

import (
	"bytes"
	"encoding/xml"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// roundTrip decodes body into v, then checks that Encode in both charsets followed by
// Decode gives v back unchanged.
func roundTrip(t *testing.T, root string, body []byte, v any) {
	t.Helper()
	mustDecode(t, body, v)
	for _, cs := range []Charset{CharsetUTF8, CharsetGB2312} {
		enc, err := Encode(root, v, cs)
		if err != nil {
			t.Fatalf("Encode %T as %s: %v", v, cs, err)
		}
		again := reflect.New(reflect.TypeOf(v).Elem()).Interface()
		mustDecode(t, enc, again)
		if !reflect.DeepEqual(v, again) {
			t.Fatalf("%T changed through %s Encode→Decode:\n%+v\n%+v\n%s", v, cs, v, again, enc)
		}
	}
}

// vendorExt is an element no struct declares; every sample below carries it at some level.
const vendorExt = `<VendorExt level="2"><Sub>东门</Sub></VendorExt>`

func hasVendorExt(extra []AnyElement) bool {
	for _, e := range extra {
		if e.XMLName.Local == "VendorExt" && len(e.Attrs) == 1 && len(e.Children) == 1 && e.Children[0].Text == "东门" {
			return true
		}
	}
	return false
}

func TestRecordInfoSamples(t *testing.T) {
	var q RecordInfoQuery
	roundTrip(t, RootQuery, readSample(t, "recordinfo_query.xml"), &q)
	if q.Base != (Base{CmdRecordInfo, 10000, "34020000001320000001"}) || q.StartTime != "2023-10-14T00:00:00" ||
		q.EndTime != "2023-10-14T23:00:00" || q.Secrecy != "0" || q.Type != "all" || q.RecorderID != "all" ||
		q.FilePath != "" || q.Extra != nil {
		t.Errorf("query = %+v", q)
	}

	var r RecordInfoResponse
	roundTrip(t, RootResponse, readSample(t, "recordinfo_response.xml"), &r)
	want := RecordItem{DeviceID: "34020000001320000001", Name: "Camera 01", FilePath: "file_path", Address: "Address 1",
		StartTime: "2023-10-14T14:15:52", EndTime: "2023-10-14T14:31:28", Secrecy: "0", Type: "time", FileSize: "19396096"}
	if r.Name != "Camera 01" || r.SumNum != 1 || r.RecordList == nil || r.RecordList.Num != 1 ||
		len(r.RecordList.Items) != 1 || !reflect.DeepEqual(r.RecordList.Items[0], want) {
		t.Errorf("response = %+v", r)
	}
}

func TestRecordInfo2022AndGB2312(t *testing.T) {
	in := &RecordInfoResponse{
		Base: Base{CmdType: CmdRecordInfo, SN: 4, DeviceID: "34020000001320000001"}, Name: "球机一号", SumNum: 7,
		RecordList: &List[RecordItem]{Items: []RecordItem{
			{DeviceID: "34020000001320000001", Name: "球机一号", Address: "东门入口", Type: "alarm",
				RecordLocation: "1", StreamNumber: "0", Extra: []AnyElement{{XMLName: xmlName("VendorExt"), Text: "x"}}},
		}},
	}
	body, err := Encode(RootResponse, in, CharsetGB2312)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(body, gb2312["东门入口"]) || utf8.Valid(body) {
		t.Fatalf("not GB2312: %q", body)
	}
	if !bytes.Contains(body, []byte("<RecordLocation>1</RecordLocation><StreamNumber>0</StreamNumber><VendorExt>x</VendorExt></Item>")) {
		t.Fatalf("2022 fields or extension missing: %s", body)
	}
	var out RecordInfoResponse
	roundTrip(t, RootResponse, body, &out)
	in.RecordList.Num = 1
	if !reflect.DeepEqual(&out, in) {
		t.Fatalf("got %+v\nwant %+v", out, *in)
	}
}

func TestConfigDownload(t *testing.T) {
	var q ConfigDownloadQuery
	roundTrip(t, RootQuery, []byte(`<Query><CmdType>ConfigDownload</CmdType><SN>3</SN><DeviceID>1</DeviceID>`+
		`<ConfigType>BasicParam/VideoParamOpt/SVACEncodeConfig</ConfigType></Query>`), &q)
	if q.ConfigType != "BasicParam/VideoParamOpt/SVACEncodeConfig" {
		t.Errorf("query = %+v", q)
	}

	body := `<?xml version="1.0" encoding="UTF-8"?>
<Response><CmdType>ConfigDownload</CmdType><SN>3</SN><DeviceID>34020000001320000001</DeviceID><Result>OK</Result>
<BasicParam><Name>东门</Name><DeviceID>34020000001320000001</DeviceID><SIPServerID>34020000002000000001</SIPServerID>
<SIPServerIP>192.0.2.1</SIPServerIP><SIPServerPort>5060</SIPServerPort><DomainName>3402000000</DomainName>
<Expiration>3600</Expiration><Password>secret</Password><HeartBeatInterval>60</HeartBeatInterval>
<HeartBeatCount>3</HeartBeatCount><PositionCapability>1</PositionCapability><Longitude>116.3</Longitude>
<Latitude>39.9</Latitude>` + vendorExt + `</BasicParam>
<VideoParamOpt><DownloadSpeed>1/2/4</DownloadSpeed><Resolution>6/5</Resolution></VideoParamOpt>
<SVACEncodeConfig><ROIParam><ROIFlag>1</ROIFlag><ROINumber>0</ROINumber></ROIParam></SVACEncodeConfig>
<OSDConfig><Length>1920</Length><Width>1080</Width></OSDConfig>
<SnapShotConfig><SnapNum>1</SnapNum><Interval>1</Interval><UploadURL>http://192.0.2.9/u</UploadURL><SessionID>s</SessionID></SnapShotConfig>
` + vendorExt + `</Response>`
	var r ConfigDownloadResponse
	roundTrip(t, RootResponse, []byte(body), &r)
	want := BasicParam{Name: "东门", DeviceID: "34020000001320000001", SIPServerID: "34020000002000000001",
		SIPServerIP: "192.0.2.1", SIPServerPort: "5060", DomainName: "3402000000", Expiration: "3600", Password: "secret",
		HeartBeatInterval: "60", HeartBeatCount: "3", PositionCapability: "1", Longitude: "116.3", Latitude: "39.9"}
	if r.Result != "OK" || r.BasicParam == nil || !hasVendorExt(r.BasicParam.Extra) {
		t.Fatalf("response = %+v", r)
	}
	r.BasicParam.Extra = nil
	if !reflect.DeepEqual(*r.BasicParam, want) || r.VideoParamOpt == nil || r.VideoParamOpt.DownloadSpeed != "1/2/4" ||
		r.SnapShotConfig == nil || r.SnapShotConfig.UploadURL != "http://192.0.2.9/u" || !hasVendorExt(r.Extra) {
		t.Errorf("response = %+v", r)
	}
	if e := r.SVACEncodeConfig; e == nil || e.XMLName.Local != "SVACEncodeConfig" || e.Find("ROIParam/ROIFlag").Text != "1" {
		t.Errorf("SVACEncodeConfig = %+v", e)
	}
	if r.OSDConfig == nil || r.OSDConfig.Find("Width").Text != "1080" || r.PictureMask != nil {
		t.Errorf("OSDConfig = %+v, PictureMask = %+v", r.OSDConfig, r.PictureMask)
	}
}

func TestPTZQueries2022(t *testing.T) {
	for _, cmd := range []string{CmdPresetQuery, CmdHomePositionQuery, CmdCruiseTrackListQuery, CmdPTZPosition, CmdSDCardStatus} {
		var q BasicQuery
		roundTrip(t, RootQuery, []byte(`<Query><CmdType>`+cmd+`</CmdType><SN>21</SN><DeviceID>34020000001320000001</DeviceID></Query>`), &q)
		if q.Base != (Base{cmd, 21, "34020000001320000001"}) {
			t.Errorf("%s query = %+v", cmd, q)
		}
	}
	var ct CruiseTrackQuery
	roundTrip(t, RootQuery, []byte(`<Query><CmdType>CruiseTrackQuery</CmdType><SN>23</SN><DeviceID>1</DeviceID><Number>0</Number></Query>`), &ct)
	if ct.Number != "0" {
		t.Errorf("cruise track query = %+v", ct)
	}
}

func TestPresetQueryResponse(t *testing.T) {
	// As some Hikvision devices send it: no SumNum.
	body := `<?xml version="1.0" encoding="GB2312"?><Response><CmdType>PresetQuery</CmdType><SN>17</SN>` +
		`<DeviceID>34020000001320000001</DeviceID><PresetList Num="2"><Item><PresetID>1</PresetID>` +
		`<PresetName>东门入口</PresetName></Item><Item><PresetID>2</PresetID>` + vendorExt + `</Item></PresetList></Response>`
	var r PresetQueryResponse
	roundTrip(t, RootResponse, []byte(body), &r)
	if r.SumNum != "" || r.PresetList == nil || len(r.PresetList.Items) != 2 || r.PresetList.Items[0].PresetName != "东门入口" ||
		r.PresetList.Items[1].PresetID != "2" || !hasVendorExt(r.PresetList.Items[1].Extra) {
		t.Fatalf("response = %+v", r)
	}
	enc, err := Encode(RootResponse, &r, CharsetUTF8)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(enc, []byte("SumNum")) {
		t.Errorf("SumNum the device left out was added: %s", enc)
	}
}

func TestHomePositionResponse(t *testing.T) {
	var r HomePositionResponse
	roundTrip(t, RootResponse, []byte(`<Response><CmdType>HomePositionQuery</CmdType><SN>21</SN><DeviceID>1</DeviceID>`+
		`<HomePosition><Enabled>1</Enabled><ResetTime>10</ResetTime><PresetIndex>1</PresetIndex></HomePosition></Response>`), &r)
	if r.HomePosition == nil || !reflect.DeepEqual(*r.HomePosition, HomePosition{Enabled: "1", ResetTime: "10", PresetIndex: "1"}) {
		t.Fatalf("response = %+v", r)
	}
}

func TestCruiseTrackResponses(t *testing.T) {
	var list CruiseTrackListResponse
	roundTrip(t, RootResponse, []byte(`<Response><CmdType>CruiseTrackListQuery</CmdType><SN>22</SN><DeviceID>1</DeviceID>`+
		`<SumNum>2</SumNum><CruiseTrackList Num="2"><CruiseTrack><Number>0</Number><Name>白天巡航</Name></CruiseTrack>`+
		`<cruisetrack><Number>1</Number></cruisetrack></CruiseTrackList></Response>`), &list)
	if list.SumNum != 2 || list.CruiseTrackList == nil || list.CruiseTrackList.Num != 2 ||
		!reflect.DeepEqual(list.CruiseTrackList.Tracks, []CruiseTrack{{Number: "0", Name: "白天巡航"}, {Number: "1"}}) {
		t.Fatalf("list = %+v", list)
	}
	enc, err := Encode(RootResponse, &CruiseTrackListResponse{Base: list.Base, SumNum: 2,
		CruiseTrackList: &CruiseTrackList{Num: 9, Tracks: list.CruiseTrackList.Tracks[:1]}}, CharsetUTF8)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(enc, []byte(`<CruiseTrackList Num="1"><CruiseTrack><Number>0</Number>`)) {
		t.Errorf("Num must follow the tracks sent: %s", enc)
	}

	var track CruiseTrackResponse
	roundTrip(t, RootResponse, []byte(`<Response><CmdType>CruiseTrackQuery</CmdType><SN>23</SN><DeviceID>1</DeviceID>`+
		`<Number>0</Number><Name>白天巡航</Name><SumNum>2</SumNum><CruisePointList Num="2">`+
		`<CruisePoint><PresetIndex>1</PresetIndex><StayTime>5</StayTime><Speed>8</Speed></CruisePoint>`+
		`<CruisePoint><PresetIndex>2</PresetIndex><StayTime>10</StayTime><Speed>4</Speed></CruisePoint>`+
		`</CruisePointList></Response>`), &track)
	if track.Number != "0" || track.Name != "白天巡航" || track.SumNum != 2 || track.CruisePointList == nil ||
		!reflect.DeepEqual(track.CruisePointList.Points, []CruisePoint{{"1", "5", "8", nil}, {"2", "10", "4", nil}}) {
		t.Fatalf("track = %+v", track)
	}
}

func TestPTZPositionAndSDCardStatus(t *testing.T) {
	var pos PTZPositionResponse
	roundTrip(t, RootResponse, []byte(`<Response><CmdType>PTZPosition</CmdType><SN>24</SN><DeviceID>1</DeviceID>`+
		`<Pan>123.5</Pan><Tilt>-12.25</Tilt><Zoom>4.5</Zoom><HorizontalFieldAngle>52.5</HorizontalFieldAngle>`+
		`<VerticalFieldAngle>30</VerticalFieldAngle><MaxViewDistance>200</MaxViewDistance></Response>`), &pos)
	if pos.Pan != "123.5" || pos.Tilt != "-12.25" || pos.Zoom != "4.5" || pos.HorizontalFieldAngle != "52.5" ||
		pos.VerticalFieldAngle != "30" || pos.MaxViewDistance != "200" {
		t.Errorf("position = %+v", pos)
	}
	var notify PTZPositionNotify
	roundTrip(t, RootNotify, []byte(`<Notify><CmdType>PTZPosition</CmdType><SN>25</SN><DeviceID>1</DeviceID><Pan>1</Pan></Notify>`), &notify)
	if notify.Pan != "1" || notify.Tilt != "" {
		t.Errorf("notify = %+v", notify)
	}

	var sd SDCardStatusResponse
	roundTrip(t, RootResponse, []byte(`<Response><CmdType>SDCardStatus</CmdType><SN>12</SN><DeviceID>1</DeviceID>`+
		`<SumNum>1</SumNum><SDCardStatusInfo Num="1"><Item><ID>1</ID><HddName>SD Card 1</HddName><Status>ok</Status>`+
		`<FormatProgress>0</FormatProgress><Capacity>32768</Capacity><FreeSpace>24576</FreeSpace></Item>`+
		`</SDCardStatusInfo></Response>`), &sd)
	want := SDCardItem{ID: "1", HddName: "SD Card 1", Status: "ok", FormatProgress: "0", Capacity: "32768", FreeSpace: "24576"}
	if sd.SumNum != 1 || sd.SDCardStatusInfo == nil || len(sd.SDCardStatusInfo.Items) != 1 ||
		!reflect.DeepEqual(sd.SDCardStatusInfo.Items[0], want) {
		t.Errorf("SD card status = %+v", sd)
	}
}

func TestAlarmQueryMisspelling(t *testing.T) {
	var q AlarmQuery
	roundTrip(t, RootQuery, readSample(t, "alarm_subscribe.xml"), &q)
	if q.StartAlarmPriority != "0" || q.EndAlarmPriority != "0" || q.AlarmMethod != "0" ||
		q.StartTime != "2023-10-24T00:00:00" || q.EndTime != "2023-10-24T23:00:00" || q.Extra != nil {
		t.Fatalf("query = %+v", q)
	}
	enc, err := Encode(RootQuery, &q, CharsetUTF8)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(enc, []byte("Prority")) || !bytes.Contains(enc, []byte("<StartAlarmPriority>0</StartAlarmPriority><EndAlarmPriority>0</EndAlarmPriority>")) {
		t.Errorf("Encode must write the standard spelling: %s", enc)
	}

	// The standard form, and both spellings at once: the correct one wins, the other is kept.
	var std AlarmQuery
	roundTrip(t, RootQuery, []byte(`<Query><CmdType>Alarm</CmdType><SN>1</SN><DeviceID>1</DeviceID>`+
		`<startalarmpriority>1</startalarmpriority><EndAlarmPrority>3</EndAlarmPrority><EndAlarmPriority>4</EndAlarmPriority>`+
		`<AlarmType>2</AlarmType><StartAlarmTime>2026-01-01T00:00:00</StartAlarmTime><EndAlarmTime>2026-01-02T00:00:00</EndAlarmTime></Query>`), &std)
	if std.StartAlarmPriority != "1" || std.EndAlarmPriority != "4" || std.AlarmType != "2" ||
		std.StartAlarmTime != "2026-01-01T00:00:00" || std.EndAlarmTime != "2026-01-02T00:00:00" ||
		len(std.Extra) != 1 || std.Extra[0].XMLName.Local != "EndAlarmPrority" || std.Extra[0].Text != "3" {
		t.Fatalf("query = %+v", std)
	}
}

func TestMobilePosition(t *testing.T) {
	var q MobilePositionQuery
	roundTrip(t, RootQuery, []byte(`<Query><CmdType>MobilePosition</CmdType><SN>1</SN><DeviceID>1</DeviceID><Interval>5</Interval></Query>`), &q)
	if q.Interval != "5" {
		t.Errorf("query = %+v", q)
	}
	var n MobilePositionNotify
	roundTrip(t, RootNotify, []byte(`<Notify><CmdType>MobilePosition</CmdType><SN>2</SN><DeviceID>34020000001320000001</DeviceID>`+
		`<Time>2026-01-01T08:00:00</Time><Longitude>116.397128</Longitude><Latitude>39.916527</Latitude><Speed>40.5</Speed>`+
		`<Direction>90</Direction><Altitude>50</Altitude><Height>3</Height>`+vendorExt+`</Notify>`), &n)
	if n.Time != "2026-01-01T08:00:00" || n.Longitude != "116.397128" || n.Latitude != "39.916527" || n.Speed != "40.5" ||
		n.Direction != "90" || n.Altitude != "50" || n.Height != "3" || !hasVendorExt(n.Extra) {
		t.Errorf("notify = %+v", n)
	}
}

func TestMediaStatusAndBroadcast(t *testing.T) {
	var ms MediaStatusNotify
	roundTrip(t, RootNotify, readSample(t, "mediastatus_notify.xml"), &ms)
	if ms.NotifyType != MediaStatusEndOfFile || ms.SN != 151 {
		t.Errorf("media status = %+v", ms)
	}
	var bn BroadcastNotify
	roundTrip(t, RootNotify, readSample(t, "broadcast_notify.xml"), &bn)
	if bn.CmdType != CmdBroadcast || bn.SN != 130 || bn.SourceID != "34020000002000000001" ||
		bn.TargetID != "34020000001370000001" || bn.Extra != nil {
		t.Errorf("broadcast = %+v", bn)
	}
	enc, err := Encode(RootNotify, &bn, CharsetUTF8)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(enc, []byte("DeviceID")) {
		t.Errorf("a Broadcast notification has no DeviceID: %s", enc)
	}
	var br BroadcastResponse
	roundTrip(t, RootResponse, readSample(t, "broadcast_response.xml"), &br)
	if br.Result != "OK" || br.DeviceID != "34020000001370000001" {
		t.Errorf("broadcast response = %+v", br)
	}
}

func TestSnapshotAndUpgradeNotifications(t *testing.T) {
	var cfg DeviceConfig
	roundTrip(t, RootControl, readSample(t, "deviceconfig_snapshot.xml"), &cfg)
	want := SnapShotConfig{SnapNum: "3", Interval: "1", UploadURL: "http://192.168.1.121/uploadsnapshot?token=abc&x=1",
		SessionID: "0f8e2b6c-5a3d-4c1e-9b7a-2d4f6e8a0c1b"}
	if cfg.SnapShotConfig == nil || !reflect.DeepEqual(*cfg.SnapShotConfig, want) || cfg.BasicParam != nil {
		t.Fatalf("config = %+v", cfg)
	}

	var done UploadSnapShotFinished
	roundTrip(t, RootNotify, []byte(`<Notify><CmdType>UploadSnapShotFinished</CmdType><SN>8</SN><DeviceID>1</DeviceID>`+
		`<SessionID>0f8e2b6c</SessionID><SnapShotList><SnapShotFileID>a1</SnapShotFileID><SnapShotFileID>a2</SnapShotFileID>`+
		`</SnapShotList></Notify>`), &done)
	if done.SessionID != "0f8e2b6c" || done.SnapShotList == nil || !reflect.DeepEqual(done.SnapShotList.SnapShotFileIDs, []string{"a1", "a2"}) {
		t.Errorf("snapshot finished = %+v", done)
	}

	var up DeviceUpgradeResult
	roundTrip(t, RootNotify, []byte(`<Notify><CmdType>DeviceUpgradeResult</CmdType><SN>9</SN><DeviceID>1</DeviceID>`+
		`<SessionID>u1</SessionID><UpgradeResult>ERROR</UpgradeResult><Firmware>V2.0</Firmware>`+
		`<UpgradeFailedReason>checksum</UpgradeFailedReason></Notify>`), &up)
	if up.SessionID != "u1" || up.UpgradeResult != "ERROR" || up.Firmware != "V2.0" || up.UpgradeFailedReason != "checksum" {
		t.Errorf("upgrade result = %+v", up)
	}
}

func TestDeviceControl(t *testing.T) {
	var ptz DeviceControl
	roundTrip(t, RootControl, readSample(t, "devicecontrol_ptz.xml"), &ptz)
	if ptz.PTZCmd != "A50F010800FA00B7" || ptz.Base != (Base{CmdDeviceControl, 130, "34020000001320000001"}) {
		t.Fatalf("control = %+v", ptz)
	}

	body := `<Control><CmdType>DeviceControl</CmdType><SN>5</SN><DeviceID>1</DeviceID>
<PTZCmd>A50F01820005003C</PTZCmd><PTZCmdParams><PresetName>门口</PresetName></PTZCmdParams>
<TeleBoot>Boot</TeleBoot><RecordCmd>Record</RecordCmd><StreamNumber>1</StreamNumber><GuardCmd>SetGuard</GuardCmd>
<AlarmCmd>ResetAlarm</AlarmCmd><IFameCmd>Send</IFameCmd><IFrameCmd>Send</IFrameCmd>
<DragZoomIn><Length>1920</Length><Width>1080</Width><MidPointX>100</MidPointX><MidPointY>200</MidPointY><LengthX>50</LengthX><LengthY>40</LengthY></DragZoomIn>
<DragZoomOut><Length>1</Length><Width>2</Width><MidPointX>3</MidPointX><MidPointY>4</MidPointY><LengthX>5</LengthX><LengthY>6</LengthY></DragZoomOut>
<HomePosition><Enabled>1</Enabled><ResetTime>30</ResetTime><PresetIndex>2</PresetIndex></HomePosition>
<PTZPreciseCtrl><Pan>10.5</Pan><Tilt>-5</Tilt><Zoom>2</Zoom></PTZPreciseCtrl>
<DeviceUpgrade><Firmware>V2</Firmware><FileURL>http://192.0.2.9/fw.bin</FileURL><Manufacturer>ACME</Manufacturer><SessionID>u1</SessionID></DeviceUpgrade>
<FormatSDCard>1</FormatSDCard><TargetTrack>Manual</TargetTrack><DeviceID2>2</DeviceID2>
<TargetArea><Length>7</Length><Width>8</Width><MidPointX>9</MidPointX><MidPointY>10</MidPointY><LengthX>11</LengthX><LengthY>12</LengthY></TargetArea>
<Info><ControlPriority>5</ControlPriority><AlarmMethod>2</AlarmMethod><AlarmType>1</AlarmType></Info>` + vendorExt + `</Control>`
	var c DeviceControl
	roundTrip(t, RootControl, []byte(body), &c)
	want := DeviceControl{
		Base: Base{CmdDeviceControl, 5, "1"}, PTZCmd: "A50F01820005003C", PTZCmdParams: &PTZCmdParams{PresetName: "门口"},
		TeleBoot: "Boot", RecordCmd: "Record", StreamNumber: "1", GuardCmd: "SetGuard", AlarmCmd: "ResetAlarm",
		IFameCmd: "Send", IFrameCmd: "Send",
		DragZoomIn:     &DragZoom{Length: "1920", Width: "1080", MidPointX: "100", MidPointY: "200", LengthX: "50", LengthY: "40"},
		DragZoomOut:    &DragZoom{"1", "2", "3", "4", "5", "6", nil},
		HomePosition:   &HomePosition{Enabled: "1", ResetTime: "30", PresetIndex: "2"},
		PTZPreciseCtrl: &PTZPreciseCtrl{Pan: "10.5", Tilt: "-5", Zoom: "2"},
		DeviceUpgrade:  &DeviceUpgrade{Firmware: "V2", FileURL: "http://192.0.2.9/fw.bin", Manufacturer: "ACME", SessionID: "u1"},
		FormatSDCard:   "1", TargetTrack: "Manual", DeviceID2: "2",
		TargetArea: &DragZoom{"7", "8", "9", "10", "11", "12", nil},
		Info:       &ControlInfo{ControlPriority: "5", AlarmMethod: "2", AlarmType: "1"},
	}
	if !hasVendorExt(c.Extra) {
		t.Fatalf("extension lost: %+v", c.Extra)
	}
	c.Extra = nil
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("control =\n%+v\nwant\n%+v", c, want)
	}
}

func TestDeviceConfigBlocks(t *testing.T) {
	body := `<?xml version="1.0" encoding="GB2312"?><Control><CmdType>DeviceConfig</CmdType><SN>6</SN><DeviceID>1</DeviceID>` +
		`<BasicParam><Name>大门</Name><Expiration>3600</Expiration><HeartBeatInterval>60</HeartBeatInterval><HeartBeatCount>3</HeartBeatCount></BasicParam>` +
		`<PictureMask><On>1</On><SumNum>1</SumNum><RegionList Num="1"><Item><Seq>1</Seq><Point>20,30,50,60</Point></Item></RegionList></PictureMask>` +
		`<FrameMirror>Horizontal</FrameMirror></Control>`
	var c DeviceConfig
	roundTrip(t, RootControl, []byte(body), &c)
	if c.BasicParam == nil || c.BasicParam.Name != "大门" || c.BasicParam.HeartBeatCount != "3" ||
		c.PictureMask == nil || c.PictureMask.Find("RegionList/Item/Point").Text != "20,30,50,60" ||
		c.FrameMirror == nil || c.FrameMirror.Text != "Horizontal" || c.SnapShotConfig != nil {
		t.Fatalf("config = %+v", c)
	}
	enc, err := Encode(RootControl, &c, CharsetUTF8)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(enc), `<RegionList Num="1"><Item><Seq>1</Seq>`) {
		t.Errorf("forwarded block changed: %s", enc)
	}
}

func xmlName(local string) xml.Name { return xml.Name{Local: local} }
