package manscdp

import (
	"errors"
	"strings"
	"testing"
)

func TestMessageForwardsUnknownCommand(t *testing.T) {
	body := []byte(`<?xml version="1.0" encoding="GB2312"?>
<Response>
  <CmdType>PresetQuery</CmdType>
  <SN>17</SN>
  <DeviceID>34020000001320000001</DeviceID>
  <PresetList Num="2">
    <Item><PresetID>1</PresetID><PresetName>东门入口</PresetName></Item>
    <Item><PresetID>2</PresetID><PresetName>球机一号</PresetName></Item>
  </PresetList>
</Response>`)
	var m Message
	mustDecode(t, body, &m)
	if h, err := m.Header(); err != nil || h != (Header{RootResponse, CmdPresetQuery, 17, "34020000001320000001"}) {
		t.Fatalf("Header = %+v, %v", h, err)
	}
	if got := m.Find("PresetList/Item/PresetName"); got == nil || got.Text != "东门入口" {
		t.Fatalf("Find = %+v", got)
	}
	m.SetText("DeviceID", "51000000001320000009")
	m.SetText("SN", "900")
	enc, err := Encode(m.XMLName.Local, &m, CharsetUTF8)
	if err != nil {
		t.Fatal(err)
	}
	want := "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<Response><CmdType>PresetQuery</CmdType><SN>900</SN>" +
		"<DeviceID>51000000001320000009</DeviceID><PresetList Num=\"2\">" +
		"<Item><PresetID>1</PresetID><PresetName>东门入口</PresetName></Item>" +
		"<Item><PresetID>2</PresetID><PresetName>球机一号</PresetName></Item></PresetList></Response>"
	if string(enc) != want {
		t.Fatalf("Encode =\n%s\nwant\n%s", enc, want)
	}
}

func TestMessagePathHelpers(t *testing.T) {
	var m Message
	mustDecode(t, []byte(`<Notify><CmdType>Alarm</CmdType><deviceid> 7 </deviceid><Info><AlarmType>2</AlarmType></Info></Notify>`), &m)
	if got := m.Text("DeviceID"); got != "7" {
		t.Errorf("Text(DeviceID) = %q: names match case-insensitively and text is trimmed", got)
	}
	if got := m.Text("Info/Missing"); got != "" {
		t.Errorf("Text of a missing path = %q", got)
	}
	m.SetText("DeviceID", "8")
	if m.Children[1].XMLName.Local != "deviceid" || m.Children[1].Text != "8" {
		t.Errorf("SetText changed the wrong element: %+v", m.Children)
	}
	m.SetText("Info/AlarmTypeParam/EventType", "1")
	enc, err := Encode(RootNotify, &m, CharsetUTF8)
	if err != nil {
		t.Fatal(err)
	}
	want := "<Info><AlarmType>2</AlarmType><AlarmTypeParam><EventType>1</EventType></AlarmTypeParam></Info>"
	if !strings.Contains(string(enc), want) {
		t.Errorf("Encode = %s, want it to contain %s", enc, want)
	}
	if _, err := (&Message{}).Header(); !errors.Is(err, ErrNoCmdType) {
		t.Errorf("Header of an empty message: %v", err)
	}
}

func TestMessageKeepsPrefixedNamesVerbatim(t *testing.T) {
	body := `<Response><CmdType>X</CmdType><v:Ext xmlns:v="urn:vendor" v:level="2"><v:Sub xml:lang="zh">a</v:Sub></v:Ext><Plain xmlns="urn:y"><Inner/></Plain></Response>`
	var m Message
	mustDecode(t, []byte(body), &m)
	enc, err := Encode(RootResponse, &m, CharsetUTF8)
	if err != nil {
		t.Fatal(err)
	}
	want := `<Response><CmdType>X</CmdType><v:Ext xmlns:v="urn:vendor" v:level="2"><v:Sub xml:lang="zh">a</v:Sub></v:Ext><Plain xmlns="urn:y"><Inner></Inner></Plain></Response>`
	if got := string(enc[strings.Index(string(enc), "<Response>"):]); got != want {
		t.Fatalf("Encode =\n%s\nwant\n%s", got, want)
	}
}
