package manscdp

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// mapIDs maps the IDs of ids and reports false for any other.
func mapIDs(ids map[string]string) func(string) (string, bool) {
	return func(id string) (string, bool) {
		to, ok := ids[id]
		return to, ok
	}
}

func mustRewrite(t *testing.T, body []byte, sn int64, mapID func(string) (string, bool), cs Charset) []byte {
	t.Helper()
	out, err := Rewrite(body, sn, mapID, cs)
	if err != nil {
		t.Fatalf("Rewrite: %v\nbody: %q", err, body)
	}
	return out
}

func TestRewriteSampleKeepsEverythingElse(t *testing.T) {
	body := readSample(t, "recordinfo_response.xml")
	orig := bytes.Clone(body)
	out := mustRewrite(t, body, 77, mapIDs(map[string]string{"34020000001320000001": "51000000001320000009"}), "")
	want := strings.ReplaceAll(string(orig), "34020000001320000001", "51000000001320000009")
	want = strings.Replace(want, "<SN>17430</SN>", "<SN>77</SN>", 1)
	if string(out) != want {
		t.Fatalf("Rewrite =\n%s\nwant\n%s", out, want)
	}
	if !bytes.Equal(body, orig) {
		t.Fatal("Rewrite modified its input")
	}
	if h, err := Peek(out); err != nil || h.SN != 77 || h.DeviceID != "51000000001320000009" {
		t.Fatalf("Peek = %+v, %v", h, err)
	}
}

func TestRewriteIDElements(t *testing.T) {
	ids := mapIDs(map[string]string{"1": "A1", "2": "B&2", "3": "C3", "4": "D4", "5": "E5", "6": "F6", "7": "G7", "9": "I9"})
	in := `<?xml version="1.0"?>
<!-- <SN>1</SN> <DeviceID>1</DeviceID> -->
<Response>
<CmdType>Catalog</CmdType><SN> 5 </SN><deviceid> 1 </deviceid>
<DeviceList Num="3"><Item><DeviceID>2</DeviceID><SN>8</SN><ParentID>3</ParentID><BusinessGroupID>4</BusinessGroupID>
<Info><BusinessGroupID>&#53;</BusinessGroupID></Info><Name>1</Name></Item>
<Item><DeviceID><![CDATA[6]]><!-- c --></DeviceID><DeviceID2>7</DeviceID2><DeviceID>unknown</DeviceID><DeviceID/></Item>
<Item><DeviceID>x<DeviceID>9</DeviceID></DeviceID><DeviceID a="1">7</DeviceID></Item></DeviceList>
</Response>
trailing`
	want := `<?xml version="1.0"?>
<!-- <SN>1</SN> <DeviceID>1</DeviceID> -->
<Response>
<CmdType>Catalog</CmdType><SN>12</SN><deviceid>A1</deviceid>
<DeviceList Num="3"><Item><DeviceID>B&amp;2</DeviceID><SN>8</SN><ParentID>C3</ParentID><BusinessGroupID>D4</BusinessGroupID>
<Info><BusinessGroupID>E5</BusinessGroupID></Info><Name>1</Name></Item>
<Item><DeviceID>F6</DeviceID><DeviceID2>7</DeviceID2><DeviceID>unknown</DeviceID><DeviceID/></Item>
<Item><DeviceID>x<DeviceID>I9</DeviceID></DeviceID><DeviceID a="1">G7</DeviceID></Item></DeviceList>
</Response>
trailing`
	if out := mustRewrite(t, []byte(in), 12, ids, ""); string(out) != want {
		t.Fatalf("Rewrite =\n%s\nwant\n%s", out, want)
	}
	// Without a mapping and a new SN the body is returned as it came.
	if out := mustRewrite(t, []byte(in), -1, nil, ""); string(out) != in {
		t.Fatalf("Rewrite changed the body:\n%s", out)
	}
	identity := func(id string) (string, bool) { return id, true }
	if out := mustRewrite(t, []byte(in), -1, identity, ""); string(out) != in {
		t.Fatalf("identity mapping changed the body:\n%s", out)
	}
}

func TestRewriteSN(t *testing.T) {
	tests := []struct{ in, want string }{
		{`<Notify><CmdType>Keepalive</CmdType><DeviceID>1</DeviceID></Notify>`,
			`<Notify><CmdType>Keepalive</CmdType><SN>42</SN><DeviceID>mapped</DeviceID></Notify>`},
		{`<Notify><DeviceID>1</DeviceID><CmdType>Keepalive</CmdType></Notify>`,
			`<Notify><DeviceID>mapped</DeviceID><CmdType>Keepalive</CmdType><SN>42</SN></Notify>`},
		{`<Notify><DeviceID>1</DeviceID></Notify>`, `<Notify><SN>42</SN><DeviceID>mapped</DeviceID></Notify>`},
		{`<Notify><CmdType>K</CmdType><SN/><Info><SN>1</SN></Info></Notify>`,
			`<Notify><CmdType>K</CmdType><SN>42</SN><Info><SN>1</SN></Info></Notify>`},
		{`<Notify><CmdType>K</CmdType><sn><!-- c -->7</sn></Notify>`, `<Notify><CmdType>K</CmdType><sn>42</sn></Notify>`},
		{`<Notify><CmdType>K</CmdType><SN><X><DeviceID>1</DeviceID></X>7</SN></Notify>`, `<Notify><CmdType>K</CmdType><SN>42</SN></Notify>`},
		{`<Notify><CmdType>K</CmdType><SN>1</SN><SN>2</SN></Notify>`, `<Notify><CmdType>K</CmdType><SN>42</SN><SN>42</SN></Notify>`},
	}
	for _, tt := range tests {
		if out := mustRewrite(t, []byte(tt.in), 42, mapIDs(map[string]string{"1": "mapped"}), ""); string(out) != tt.want {
			t.Errorf("Rewrite(%s) =\n%s\nwant\n%s", tt.in, out, tt.want)
		}
	}
}

func TestRewriteGB2312(t *testing.T) {
	catalog := chineseCatalog()
	body, err := Encode(RootResponse, catalog, CharsetGB2312)
	if err != nil {
		t.Fatal(err)
	}
	ids := mapIDs(map[string]string{"34020000001320000001": "51000000001320000001"})

	// Kept in GB2312: only the SN and the ID bytes change.
	want := bytes.Replace(body, []byte("<SN>9</SN>"), []byte("<SN>10</SN>"), 1)
	want = bytes.Replace(want, []byte("34020000001320000001"), []byte("51000000001320000001"), 1)
	for _, cs := range []Charset{"", CharsetGB2312, "GBK"} {
		if out := mustRewrite(t, body, 10, ids, cs); !bytes.Equal(out, want) {
			t.Errorf("cs %q: Rewrite =\n%q\nwant\n%q", cs, out, want)
		}
	}

	// Converted to UTF-8 on the way.
	out := mustRewrite(t, body, 10, ids, CharsetUTF8)
	if !utf8.Valid(out) || !bytes.HasPrefix(out, []byte(`<?xml version="1.0" encoding="UTF-8"?>`)) || !bytes.Contains(out, []byte("球机一号")) {
		t.Fatalf("not converted to UTF-8: %q", out)
	}
	var got CatalogResponse
	mustDecode(t, out, &got)
	if got.SN != 10 || got.DeviceList.Items[0].DeviceID != "51000000001320000001" || got.DeviceList.Items[0].Name != "球机一号" ||
		got.DeviceList.Items[1].Name != "东门入口" {
		t.Fatalf("decoded %+v", got)
	}

	// And back: the same bytes Encode writes, apart from SN and ID.
	back := mustRewrite(t, out, 9, mapIDs(map[string]string{"51000000001320000001": "34020000001320000001"}), CharsetGB2312)
	if !bytes.Equal(back, body) {
		t.Fatalf("UTF-8→GB2312 =\n%q\nwant\n%q", back, body)
	}
}

func TestRewriteNonASCIIIDs(t *testing.T) {
	body := append([]byte(`<?xml version="1.0" encoding="GB2312"?><Response><CmdType>X</CmdType><SN>1</SN><DeviceID>`),
		gb2312["东门入口"]...)
	body = append(body, "</DeviceID></Response>"...)
	var seen string
	mapID := func(id string) (string, bool) { seen = id; return "西门<1>", true }
	out := mustRewrite(t, body, -1, mapID, "")
	if seen != "东门入口" {
		t.Fatalf("mapID got %q, want the ID in UTF-8", seen)
	}
	if utf8.Valid(out) {
		t.Fatalf("the GB2312 body became UTF-8: %q", out)
	}
	var m Message
	mustDecode(t, out, &m)
	if got := m.Text("DeviceID"); got != "西门<1>" {
		t.Fatalf("DeviceID = %q", got)
	}
}

func TestRewriteErrors(t *testing.T) {
	tests := map[string]string{
		"empty":               "",
		"no root":             "just text",
		"truncated":           "<Response><CmdType>X</CmdType><DeviceID>1",
		"unclosed child":      "<Response><CmdType>X</CmdType><Item><DeviceID>1</DeviceID></Response>",
		"unterminated tag":    `<Response><CmdType>X</CmdType><Item a="1`,
		"unterminated note":   "<Response><CmdType>X</CmdType><!-- </Response>",
		"bare <":              "<Response><CmdType>X</CmdType>a < b</Response>",
		"empty root":          "<Response/>",
		"unsupported charset": "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><Response><CmdType>caf\xe9</CmdType></Response>",
	}
	for name, body := range tests {
		out, err := Rewrite([]byte(body), 1, nil, "")
		if err == nil || !strings.HasPrefix(err.Error(), "manscdp: ") {
			t.Errorf("%s: Rewrite = %q, %v; want a manscdp error", name, out, err)
		}
	}
	if _, err := Rewrite(readSample(t, "keepalive.xml"), 1, nil, "latin1"); err == nil {
		t.Error("Rewrite accepted charset latin1")
	}
	if _, err := Rewrite([]byte("<Response/>"), 1, nil, ""); !errors.Is(err, ErrNoCmdType) {
		t.Errorf("empty root: %v", err)
	}
}

func TestConvert(t *testing.T) {
	gbName := string(gb2312["东门入口"])
	tests := []struct {
		name, in string
		cs       Charset
		want     string
	}{
		{"ASCII relabelled", `<?xml version="1.0" encoding="GB2312"?><A>x</A>`, CharsetUTF8, `<?xml version="1.0" encoding="UTF-8"?><A>x</A>`},
		{"ASCII without label", "<A>x</A>", CharsetGB2312, "<A>x</A>"},
		{"ASCII same label", `<?xml version='1.0' encoding='gbk'?><A>x</A>`, CharsetGB2312, `<?xml version='1.0' encoding='gbk'?><A>x</A>`},
		{"UTF-8 declared GB2312", `<?xml version="1.0" encoding="GB2312"?><A>东门</A>`, CharsetUTF8, `<?xml version="1.0" encoding="UTF-8"?><A>东门</A>`},
		{"UTF-8 to GB, declaration added", "\xef\xbb\xbf <A>东门入口</A>\x00", CharsetGB2312,
			"<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<A>" + gbName + "</A>\x00"},
		{"UTF-8 to GB, encoding added", `<?xml version="1.0" standalone="yes"?>` + "\n<A>东门入口</A>", CharsetGB2312,
			`<?xml version="1.0" encoding="GB2312" standalone="yes"?>` + "\n<A>" + gbName + "</A>"},
		{"GB to UTF-8", "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<A>" + gbName + "</A>\r\n\x00\xff", CharsetUTF8,
			"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<A>东门入口</A>\r\n\x00\ufffd"},
		{"GB lying UTF-8", `<?xml version="1.0" encoding="UTF-8"?><A>` + gbName + "</A>", CharsetGB2312,
			`<?xml version="1.0" encoding="GB2312"?><A>` + gbName + "</A>"},
		{"GB without label", "<A>" + gbName + "</A>", CharsetGB2312, "<A>" + gbName + "</A>"},
	}
	for _, tt := range tests {
		in := []byte(tt.in)
		out, err := Convert(in, tt.cs)
		if err != nil || string(out) != tt.want {
			t.Errorf("%s: Convert =\n%q, %v\nwant\n%q", tt.name, out, err, tt.want)
			continue
		}
		if len(out) > 0 && len(in) > 0 && &out[0] == &in[0] {
			t.Errorf("%s: Convert returned its input instead of a copy", tt.name)
		}
		if rw := mustRewrite(t, in, -1, nil, tt.cs); !bytes.Equal(rw, out) {
			t.Errorf("%s: Rewrite without edits = %q, Convert = %q", tt.name, rw, out)
		}
	}
	if _, err := Convert([]byte("<A/>"), ""); err == nil {
		t.Error("Convert accepted an empty charset")
	}
}

// recordInfoPage is a typical RecordInfo answer: 10 recordings with Chinese names, GB2312.
func recordInfoPage(tb testing.TB) []byte {
	r := &RecordInfoResponse{Base: Base{CmdType: CmdRecordInfo, SN: 17430, DeviceID: "34020000001320000001"},
		Name: "东门入口", SumNum: 25, RecordList: &List[RecordItem]{}}
	for i := range 10 {
		r.RecordList.Items = append(r.RecordList.Items, RecordItem{DeviceID: "34020000001320000001", Name: "东门入口",
			FilePath: fmt.Sprintf("/record/2023-10-14/%02d.ps", i), Address: "球机一号",
			StartTime: fmt.Sprintf("2023-10-14T%02d:00:00", i), EndTime: fmt.Sprintf("2023-10-14T%02d:59:59", i),
			Secrecy: "0", Type: "time", FileSize: "19396096"})
	}
	body, err := Encode(RootResponse, r, CharsetGB2312)
	if err != nil {
		tb.Fatal(err)
	}
	return body
}

var benchIDs = mapIDs(map[string]string{"34020000001320000001": "51000000001320000009"})

func BenchmarkRewriteRecordInfo(b *testing.B) {
	body := recordInfoPage(b)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Rewrite(body, 99, benchIDs, CharsetGB2312); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeEncodeRecordInfo does Rewrite's job through the generic tree.
func BenchmarkDecodeEncodeRecordInfo(b *testing.B) {
	body := recordInfoPage(b)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var m Message
		if err := Decode(body, &m); err != nil {
			b.Fatal(err)
		}
		m.SetText("SN", "99")
		mapTree(m.Children)
		if _, err := Encode(m.XMLName.Local, &m, CharsetGB2312); err != nil {
			b.Fatal(err)
		}
	}
}

func mapTree(elements []AnyElement) {
	for i := range elements {
		e := &elements[i]
		if isIDElement([]byte(e.XMLName.Local)) {
			if to, ok := benchIDs(trimXMLSpace(e.Text)); ok {
				e.Text = to
			}
		}
		mapTree(e.Children)
	}
}

func TestBenchmarkPathsAgree(t *testing.T) {
	body := recordInfoPage(t)
	fast := mustRewrite(t, body, 99, benchIDs, CharsetGB2312)
	var viaRewrite, viaTree RecordInfoResponse
	mustDecode(t, fast, &viaRewrite)
	var m Message
	mustDecode(t, body, &m)
	m.SetText("SN", "99")
	mapTree(m.Children)
	slow, err := Encode(RootResponse, &m, CharsetGB2312)
	if err != nil {
		t.Fatal(err)
	}
	mustDecode(t, slow, &viaTree)
	if viaRewrite.SN != 99 || viaRewrite.RecordList.Items[9].DeviceID != "51000000001320000009" ||
		!reflect.DeepEqual(viaRewrite, viaTree) {
		t.Fatalf("Rewrite and the tree disagree:\n%+v\n%+v", viaRewrite, viaTree)
	}
}

func FuzzRewrite(f *testing.F) {
	addSeeds(f)
	f.Add(recordInfoPage(f))
	f.Add([]byte(`<R><CmdType>X</CmdType><SN><![CDATA[1]]></SN><DeviceID>&#49;<!--x--></DeviceID><a><ParentID> 2 </ParentID></a></R>`))
	f.Add([]byte("<R><CmdType>X</CmdType><DeviceID>\xb6\xab</DeviceID><![CDATA[\xb6\x5d]>]]></R>"))
	const mapped = "51000000001320000099"
	identity := func(id string) (string, bool) { return id, true }
	toMapped := func(string) (string, bool) { return mapped, true }
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := Rewrite(body, -1, identity, "")
		if err != nil {
			return
		}
		if !bytes.Equal(out, body) {
			t.Fatalf("identity Rewrite changed the body:\n%q\n%q", body, out)
		}
		if label := declaredEncoding(bytes.TrimLeft(body, " \t\r\n")); utf8.Valid(body) && (label == "" || strings.EqualFold(label, "utf-8")) {
			if out := mustRewrite(t, body, -1, identity, CharsetUTF8); !bytes.Equal(out, body) {
				t.Fatalf("identity Rewrite of a UTF-8 body to UTF-8 changed it:\n%q\n%q", body, out)
			}
		}
		if !utf8.Valid(body) && !validGB18030(body) {
			return // decoders may read invalid GB sequences as swallowing markup
		}
		for _, cs := range []Charset{CharsetUTF8, CharsetGB2312} {
			converted, err := Convert(body, cs)
			if err != nil {
				t.Fatalf("Rewrite succeeded but Convert to %s failed: %v", cs, err)
			}
			if out := mustRewrite(t, body, -1, nil, cs); !bytes.Equal(out, converted) {
				t.Fatalf("Rewrite without edits to %s = %q, Convert = %q", cs, out, converted)
			}
			h, err := Peek(body)
			if err != nil {
				continue
			}
			out, err := Rewrite(body, 4242, toMapped, cs)
			if err != nil {
				t.Fatalf("Rewrite with edits to %s failed: %v", cs, err)
			}
			got, err := Peek(out)
			// Peek returns a root name as it is in the body, so only an ASCII one compares.
			sameRoot := got.Root == h.Root || !isASCII([]byte(h.Root))
			if err != nil || got.SN != 4242 || !sameRoot || got.CmdType != h.CmdType {
				t.Fatalf("Peek after Rewrite to %s = %+v, %v; before %+v\n%q\n%q", cs, got, err, h, body, out)
			}
			if h.DeviceID != "" && got.DeviceID != mapped && !deviceIDHasChildren(body) {
				t.Fatalf("DeviceID %q not mapped: %+v\n%q", h.DeviceID, got, out)
			}
		}
	})
}

// validGB18030 reports whether b is made of whole GB18030 characters (0x80 being read as
// the euro sign, as golang.org/x/text reads it).
func validGB18030(b []byte) bool {
	for i := 0; i < len(b); {
		n := gbCharLen(b[i:])
		if n == 1 && b[i] > 0x80 {
			return false
		}
		i += n
	}
	return true
}

// deviceIDHasChildren reports whether the root's first DeviceID has child elements, which
// Rewrite leaves alone.
func deviceIDHasChildren(body []byte) bool {
	var m Message
	if Decode(body, &m) != nil {
		return true
	}
	e := m.Find("DeviceID")
	return e == nil || len(e.Children) > 0
}
