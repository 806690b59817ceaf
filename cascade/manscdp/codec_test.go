package manscdp

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestDecodeSamples(t *testing.T) {
	var keepalive Keepalive
	mustDecode(t, readSample(t, "keepalive.xml"), &keepalive)
	if keepalive.CmdType != CmdKeepalive || keepalive.SN != 2749 || keepalive.DeviceID != "130909113319427420" ||
		keepalive.Status != "OK" || keepalive.Info != nil || keepalive.Extra != nil {
		t.Errorf("keepalive = %+v", keepalive)
	}

	var catalogQuery CatalogQuery
	mustDecode(t, readSample(t, "catalog_query.xml"), &catalogQuery)
	if catalogQuery.Base != (Base{CmdCatalog, 471, "130909113319427420"}) || catalogQuery.StartTime != "" {
		t.Errorf("catalog query = %+v", catalogQuery)
	}

	var catalog CatalogResponse
	mustDecode(t, readSample(t, "catalog_response.xml"), &catalog)
	wantItem := CatalogItem{
		DeviceID: "62010201001320000393", Name: "Camera 01", Manufacturer: "Hikvision", Model: "IP Camera",
		Owner: "Owner", CivilCode: "5100000000", Address: "Address", Parental: "0",
		ParentID: "51000000002000000001", SafetyWay: "0", RegisterWay: "1", Secrecy: "0", Status: "ON",
	}
	if catalog.SumNum != 1 || catalog.DeviceList.Num != 1 || len(catalog.DeviceList.Items) != 1 ||
		!reflect.DeepEqual(catalog.DeviceList.Items[0], wantItem) {
		t.Errorf("catalog = %+v", catalog)
	}

	var info DeviceInfoResponse
	mustDecode(t, readSample(t, "deviceinfo_response.xml"), &info)
	if info.DeviceName != "Camera 01" || info.Result != "OK" || info.Manufacturer != "Hikvision" ||
		info.Model != "IP Camera" || info.Firmware != "V5.5.0" || info.Channel != "1" {
		t.Errorf("device info = %+v", info)
	}

	var status DeviceStatusResponse
	mustDecode(t, readSample(t, "devicestatus_response.xml"), &status)
	if status.Result != "OK" || status.Online != "ONLINE" || status.Status != "OK" || status.Encode != "ON" ||
		status.Record != "OFF" || status.DeviceTime != "2023-09-15T21:30:15" ||
		status.Alarmstatus == nil || status.Alarmstatus.Num != 0 || len(status.Alarmstatus.Items) != 0 {
		t.Errorf("device status = %+v", status)
	}

	var alarm AlarmNotify
	mustDecode(t, readSample(t, "alarm_notify.xml"), &alarm)
	if alarm.AlarmDescription != "视频动检" || alarm.AlarmMethod != "5" || alarm.Info == nil ||
		alarm.Info.AlarmType != "2" || alarm.Info.AlarmTypeParam == nil || alarm.Info.AlarmTypeParam.EventType != "1" {
		t.Errorf("alarm = %+v", alarm)
	}
	// AlarmInfo is not in the standard's alarm message: it must be kept, not dropped.
	if len(alarm.Extra) != 1 || alarm.Extra[0].XMLName.Local != "AlarmInfo" || alarm.Extra[0].Text != "11" {
		t.Errorf("alarm extra = %+v", alarm.Extra)
	}
}

func TestEncodeExactOutput(t *testing.T) {
	msg := ResultResponse{Base: Base{CmdType: CmdAlarm, SN: 2, DeviceID: "34020000001340000001"}, Result: "OK"}
	got, err := Encode("response", &msg, CharsetUTF8)
	if err != nil {
		t.Fatal(err)
	}
	want := "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<Response><CmdType>Alarm</CmdType><SN>2</SN>" +
		"<DeviceID>34020000001340000001</DeviceID><Result>OK</Result></Response>"
	if string(got) != want {
		t.Fatalf("Encode =\n%s\nwant\n%s", got, want)
	}
}

func TestEncodeErrors(t *testing.T) {
	msg := BasicQuery{Base: Base{CmdType: CmdDeviceInfo, SN: 1, DeviceID: "1"}}
	if _, err := Encode("Request", &msg, CharsetUTF8); err == nil || !strings.Contains(err.Error(), "not Query, Response") {
		t.Errorf("bad root: %v", err)
	}
	if _, err := Encode(RootQuery, &msg, "latin1"); err == nil || !strings.Contains(err.Error(), "use gb2312 or utf-8") {
		t.Errorf("bad charset: %v", err)
	}
	if _, err := Encode(RootQuery, make(chan int), CharsetUTF8); err == nil {
		t.Error("encoding a channel succeeded")
	}
}

func TestParseCharset(t *testing.T) {
	for label, want := range map[string]Charset{"GB2312": CharsetGB2312, "gbk": CharsetGB2312, " GB18030 ": CharsetGB2312, "UTF-8": CharsetUTF8, "utf8": CharsetUTF8} {
		if got, err := ParseCharset(label); err != nil || got != want {
			t.Errorf("ParseCharset(%q) = %q, %v; want %q", label, got, err, want)
		}
	}
	for _, label := range []string{"", "big5", "latin1"} {
		if _, err := ParseCharset(label); err == nil {
			t.Errorf("ParseCharset(%q) succeeded", label)
		}
	}
}

// gb2312 holds the GB2312 bytes of the names used below, as produced by iconv.
var gb2312 = map[string][]byte{
	"东门入口": {0xb6, 0xab, 0xc3, 0xc5, 0xc8, 0xeb, 0xbf, 0xda},
	"球机一号": {0xc7, 0xf2, 0xbb, 0xfa, 0xd2, 0xbb, 0xba, 0xc5},
}

func chineseCatalog() *CatalogResponse {
	return &CatalogResponse{
		Base:   Base{CmdType: CmdCatalog, SN: 9, DeviceID: "34020000002000000001"},
		SumNum: 2,
		DeviceList: ItemList{Items: []CatalogItem{
			{DeviceID: "34020000001320000001", Name: "球机一号", Address: "东门入口", Status: "ON",
				Info: &CatalogItemInfo{PTZType: "1"}},
			{DeviceID: "34020000001320000002", Name: "东门入口", Status: "OFF"},
		}},
	}
}

func TestGB2312RoundTrip(t *testing.T) {
	in := chineseCatalog()
	body, err := Encode(RootResponse, in, CharsetGB2312)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(body, []byte(`<?xml version="1.0" encoding="GB2312"?>`)) {
		t.Fatalf("declaration: %q", body[:50])
	}
	for name, gb := range gb2312 {
		if !bytes.Contains(body, gb) {
			t.Errorf("body lacks GB2312 bytes of %s: %x", name, body)
		}
		if bytes.Contains(body, []byte(name)) {
			t.Errorf("body contains %s as UTF-8", name)
		}
	}
	if utf8.Valid(body) {
		t.Fatal("GB2312 body is valid UTF-8; the test names no longer exercise transcoding")
	}
	var out CatalogResponse
	mustDecode(t, body, &out)
	in.DeviceList.Num = 2 // Encode writes the item count
	if !reflect.DeepEqual(&out, in) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", out, *in)
	}
}

func TestUTF8BodyDeclaringGB2312(t *testing.T) {
	body := []byte(`<?xml version="1.0" encoding="GB2312"?>` +
		`<Response><CmdType>Catalog</CmdType><SN>3</SN><DeviceID>1</DeviceID><SumNum>1</SumNum>` +
		`<DeviceList Num="1"><Item><DeviceID>2</DeviceID><Name>球机一号</Name></Item></DeviceList></Response>`)
	var out CatalogResponse
	mustDecode(t, body, &out)
	if got := out.DeviceList.Items[0].Name; got != "球机一号" {
		t.Fatalf("Name = %q, want 球机一号 (body was UTF-8 and must not be transcoded)", got)
	}
}

func TestGBBodyWithoutOrWithWrongDeclaration(t *testing.T) {
	for _, decl := range []string{"", `<?xml version="1.0"?>`, `<?xml version="1.0" encoding="UTF-8"?>`, `<?xml version="1.0" encoding="GBK"?>`} {
		body := append([]byte(decl+"<Notify><CmdType>Alarm</CmdType><SN>1</SN><DeviceID>1</DeviceID><AlarmDescription>"),
			gb2312["东门入口"]...)
		body = append(body, "</AlarmDescription></Notify>"...)
		var out AlarmNotify
		mustDecode(t, body, &out)
		if out.AlarmDescription != "东门入口" {
			t.Errorf("declaration %q: AlarmDescription = %q", decl, out.AlarmDescription)
		}
	}
}

func TestDecodeRejectsUnsupportedCharset(t *testing.T) {
	body := []byte("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><Notify><CmdType>Alarm</CmdType><AlarmDescription>caf\xe9</AlarmDescription></Notify>")
	var out AlarmNotify
	if err := Decode(body, &out); err == nil || !strings.Contains(err.Error(), `"ISO-8859-1"`) {
		t.Fatalf("Decode = %v, want unsupported charset error", err)
	}
	// The same declaration on a UTF-8 body is harmless.
	body = []byte(`<?xml version="1.0" encoding="ISO-8859-1"?><Notify><CmdType>Alarm</CmdType><AlarmDescription>café</AlarmDescription></Notify>`)
	mustDecode(t, body, &out)
	if out.AlarmDescription != "café" {
		t.Fatalf("AlarmDescription = %q", out.AlarmDescription)
	}
}

func TestDecodeTrailingGarbageDoesNotForceTranscoding(t *testing.T) {
	// Without cutting after the root, the invalid byte would make the body "not UTF-8"
	// and the UTF-8 name would be garbled by GB18030 decoding.
	body := []byte("<Response><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>1</DeviceID><SumNum>1</SumNum>" +
		"<DeviceList Num=\"1\"><Item><DeviceID>2</DeviceID><Name>球机一号</Name></Item></DeviceList></Response>\r\n\x00\x00\xff\xfe")
	var out CatalogResponse
	mustDecode(t, body, &out)
	if out.DeviceList.Items[0].Name != "球机一号" {
		t.Fatalf("Name = %q", out.DeviceList.Items[0].Name)
	}
}

func TestMultiItemCatalog(t *testing.T) {
	body := []byte(`<?xml version="1.0" encoding="GB2312"?>
<Response><CmdType>Catalog</CmdType><SN>5</SN><DeviceID>34020000002000000001</DeviceID><SumNum>10</SumNum>
<DeviceList Num="3">
<Item><DeviceID>34020000001320000001</DeviceID><Status>ON</Status></Item>
<Item><DeviceID>34020000001320000002</DeviceID><Status>OFF</Status></Item>
<Item><DeviceID>34020000001320000003</DeviceID><Status>ON</Status></Item>
</DeviceList></Response>`)
	var out CatalogResponse
	mustDecode(t, body, &out)
	if out.SumNum != 10 || out.DeviceList.Num != 3 || len(out.DeviceList.Items) != 3 ||
		out.DeviceList.Items[2].DeviceID != "34020000001320000003" || out.DeviceList.Items[1].Status != "OFF" {
		t.Fatalf("decoded %+v", out)
	}
	// A page of the answer: Num follows the items actually sent, SumNum stays the total.
	out.DeviceList.Items = out.DeviceList.Items[:2]
	enc, err := Encode(RootResponse, &out, CharsetUTF8)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(enc, []byte(`<SumNum>10</SumNum><DeviceList Num="2"><Item>`)) {
		t.Fatalf("encoded %s", enc)
	}
}

func TestListToleratesBadNum(t *testing.T) {
	for _, list := range []string{`<DeviceList>`, `<DeviceList Num="">`, `<DeviceList Num="two">`} {
		body := []byte(`<Response><CmdType>Catalog</CmdType><SN>5</SN><DeviceID>1</DeviceID><SumNum>1</SumNum>` +
			list + `<Item><DeviceID>2</DeviceID></Item></DeviceList></Response>`)
		var out CatalogResponse
		mustDecode(t, body, &out)
		if out.DeviceList.Num != 0 || len(out.DeviceList.Items) != 1 {
			t.Errorf("%s: %+v", list, out.DeviceList)
		}
	}
}

func TestLenientElementNames(t *testing.T) {
	body := []byte(`<response><cmdType>Catalog</cmdType><SN>5</SN><DeviceId>1</DeviceId><SumNum>1</SumNum>` +
		`<Devicelist num="1"><item><DeviceID>2</DeviceID><name>Cam</name><INFO><PTZtype>3</PTZtype></INFO></item></Devicelist></response>`)
	var out CatalogResponse
	mustDecode(t, body, &out)
	if out.CmdType != CmdCatalog || out.DeviceID != "1" || out.DeviceList.Num != 1 || len(out.DeviceList.Items) != 1 {
		t.Fatalf("decoded %+v", out)
	}
	item := out.DeviceList.Items[0]
	if item.Name != "Cam" || item.Info == nil || item.Info.PTZType != "3" || item.Extra != nil {
		t.Fatalf("item %+v", item)
	}
}

func TestUnknownElementsRoundTrip(t *testing.T) {
	body := []byte(`<?xml version="1.0" encoding="UTF-8"?>
<Response>
  <CmdType>Catalog</CmdType>
  <SN>5</SN>
  <DeviceID>1</DeviceID>
  <VendorTop kind="x">top</VendorTop>
  <SumNum>1</SumNum>
  <DeviceList Num="1">
    <Item>
      <DeviceID>2</DeviceID>
      <Name>东门入口</Name>
      <VendorExt level="2" mode="a&amp;b">
        <Sub>one</Sub>
        <Sub>two</Sub>
        <Empty/>
      </VendorExt>
      <Info>
        <PTZType>1</PTZType>
        <VendorInfo>9</VendorInfo>
      </Info>
    </Item>
  </DeviceList>
</Response>`)
	var first CatalogResponse
	mustDecode(t, body, &first)
	item := first.DeviceList.Items[0]
	if len(first.Extra) != 1 || first.Extra[0].XMLName.Local != "VendorTop" || first.Extra[0].Text != "top" {
		t.Fatalf("top-level extra %+v", first.Extra)
	}
	if len(item.Extra) != 1 || item.Info == nil || len(item.Info.Extra) != 1 || item.Info.Extra[0].Text != "9" {
		t.Fatalf("item %+v", item)
	}
	ext := item.Extra[0]
	if ext.Text != "" || len(ext.Children) != 3 || ext.Children[1].Text != "two" || len(ext.Attrs) != 2 || ext.Attrs[1].Value != "a&b" {
		t.Fatalf("vendor extension %+v", ext)
	}
	for _, cs := range []Charset{CharsetUTF8, CharsetGB2312} {
		enc, err := Encode(RootResponse, &first, cs)
		if err != nil {
			t.Fatal(err)
		}
		if cs == CharsetUTF8 && !bytes.Contains(enc, []byte(`<VendorExt level="2" mode="a&amp;b"><Sub>one</Sub><Sub>two</Sub><Empty></Empty></VendorExt>`)) {
			t.Errorf("vendor extension not re-encoded: %s", enc)
		}
		var second CatalogResponse
		mustDecode(t, enc, &second)
		if !reflect.DeepEqual(first, second) {
			t.Errorf("%s round trip changed the message:\n%+v\n%+v", cs, first, second)
		}
	}
}

func TestCatalogNotifyEvent(t *testing.T) {
	body := []byte(`<?xml version="1.0" encoding="GB2312"?><Notify><CmdType>Catalog</CmdType><SN>62</SN><DeviceID>1</DeviceID>` +
		`<SumNum>1</SumNum><DeviceList Num="1"><Item><DeviceID>2</DeviceID><Event>DEL</Event></Item></DeviceList></Notify>`)
	var out CatalogNotify
	mustDecode(t, body, &out)
	if out.DeviceList.Items[0].Event != "DEL" {
		t.Fatalf("Event = %q", out.DeviceList.Items[0].Event)
	}
	enc, err := Encode(RootNotify, &out, CharsetGB2312)
	if err != nil {
		t.Fatal(err)
	}
	// Fields the notification left out stay out.
	if want := `<Item><DeviceID>2</DeviceID><Event>DEL</Event></Item>`; !bytes.Contains(enc, []byte(want)) {
		t.Fatalf("encoded %s, want it to contain %s", enc, want)
	}
}

func TestKeepaliveFaultList(t *testing.T) {
	body := []byte(`<Notify><CmdType>Keepalive</CmdType><SN>3</SN><DeviceID>1</DeviceID><Status>OK</Status>` +
		`<Info><DeviceID>11</DeviceID><DeviceID>12</DeviceID></Info></Notify>`)
	var out Keepalive
	mustDecode(t, body, &out)
	if out.DeviceID != "1" || out.Info == nil || !reflect.DeepEqual(out.Info.DeviceIDs, []string{"11", "12"}) {
		t.Fatalf("keepalive %+v", out)
	}
}

func TestDecodeQuirks(t *testing.T) {
	tests := map[string]string{
		"missing SN":             `<Notify><CmdType>Keepalive</CmdType><DeviceID>1</DeviceID><Status>OK</Status></Notify>`,
		"BOM, CRLF, no encoding": "\xef\xbb\xbf\r\n<?xml version=\"1.0\"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<DeviceID>1</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n",
		"mismatched end tag":     `<Notify><CmdType>Keepalive</CmdType><DeviceID>1</DeviceID><Status>OK</status></Notify>`,
		"unknown entity":         `<Notify><CmdType>Keepalive</CmdType><DeviceID>1</DeviceID><Status>OK</Status><X>&nbsp;</X></Notify>`,
		"trailing garbage":       "<Notify><CmdType>Keepalive</CmdType><DeviceID>1</DeviceID><Status>OK</Status></Notify>\x00\x00<<<",
	}
	for name, body := range tests {
		var out Keepalive
		if err := Decode([]byte(body), &out); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if out.CmdType != CmdKeepalive || out.SN != 0 || out.DeviceID != "1" || out.Status != "OK" {
			t.Errorf("%s: %+v", name, out)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := map[string]string{
		"empty":     "",
		"no root":   "  just text  ",
		"truncated": "<Notify><CmdType>Keepalive</CmdType><DeviceID>1",
		"bad SN":    "<Notify><CmdType>Keepalive</CmdType><SN>x</SN></Notify>",
		"too deep":  strings.Repeat("<a>", MaxDepth+1) + strings.Repeat("</a>", MaxDepth+1),
	}
	for name, body := range tests {
		var out Keepalive
		if err := Decode([]byte(body), &out); err == nil || !strings.HasPrefix(err.Error(), "manscdp: ") {
			t.Errorf("%s: Decode = %v, want a manscdp error", name, err)
		}
	}
	deep := strings.Repeat("<a>", 100000)
	var m Message
	if err := Decode([]byte("<Notify>"+deep), &m); err == nil || !strings.Contains(err.Error(), "nested deeper") {
		t.Errorf("deep generic body: %v", err)
	}
}

func mustDecode(t *testing.T, body []byte, v any) {
	t.Helper()
	if err := Decode(body, v); err != nil {
		t.Fatalf("Decode %T: %v\nbody: %q", v, err, body)
	}
}
