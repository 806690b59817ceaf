package manscdp

import (
	"bytes"
	"encoding/xml"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"unicode/utf8"
)

// addSeeds adds the sample bodies, GB2312 encodings of Chinese names and quirky variants.
func addSeeds(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.xml"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no samples in testdata: %v", err)
	}
	for _, file := range files {
		body, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body)
		f.Add(append(body, 0, 0, 0xff))
		f.Add(bytes.ToLower(body))
	}
	gb, err := Encode(RootResponse, chineseCatalog(), CharsetGB2312)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(gb)
	f.Add([]byte("\xef\xbb\xbf<notify><cmdtype><![CDATA[Keepalive]]></cmdtype><SN>&#55;</SN><Devicelist Num='x'><item/></Devicelist></notify>"))
	f.Add([]byte(`<Response><CmdType>X</CmdType><a:b xmlns:a="urn:x" a:c="1">t</a:b><d xmlns="urn:y"><e/></d></Response>`))
	f.Add([]byte(`<Response xmlns="urn:r"><CmdType>&#13;X&#9;</CmdType><名字 xml:lang="zh">文本]]&gt;</名字></Response>`))
	f.Add([]byte(`<Response><CmdType>X</CmdType><V a="1" b='>'>t<W/>u</V><!-- c --></Response>`))
}

func FuzzPeek(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		h, err := Peek(body)
		if err != nil {
			return
		}
		if h.Root == "" || h.CmdType == "" {
			t.Fatalf("Peek succeeded with an empty root or CmdType: %+v", h)
		}
		// Where the body is well-formed UTF-8 with at most one of each header child, the
		// fast path must agree with reading the whole tree.
		var m Message
		if !utf8.Valid(body) || Decode(body, &m) != nil || hasDuplicateHeaderChild(m) {
			return
		}
		slow, err := m.Header()
		if err != nil || slow != h {
			t.Fatalf("Peek = %+v, Message.Header = %+v, %v", h, slow, err)
		}
	})
}

func hasDuplicateHeaderChild(m Message) bool {
	count := map[int]int{}
	for _, c := range m.Children {
		if f := headerField([]byte(c.XMLName.Local)); f != 0 {
			count[f]++
			if count[f] > 1 {
				return true
			}
		}
	}
	return false
}

// FuzzDecode checks that Decode never panics and that whatever decodes survives
// Encode→Decode unchanged, in both output charsets.
func FuzzDecode(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, newTarget := range []func() any{
			func() any { return new(Message) },
			func() any { return new(CatalogResponse) },
			func() any { return new(Keepalive) },
			func() any { return new(DeviceStatusResponse) },
			func() any { return new(AlarmNotify) },
			func() any { return new(RecordInfoResponse) },
			func() any { return new(CruiseTrackResponse) },
			func() any { return new(AlarmQuery) },
			func() any { return new(DeviceControl) },
			func() any { return new(ConfigDownloadResponse) },
		} {
			first := newTarget()
			if Decode(body, first) != nil {
				continue
			}
			// What Encode sets by design: the root from its argument, Num from the items.
			switch m := first.(type) {
			case *Message:
				m.XMLName = xml.Name{Local: RootResponse}
			case *CatalogResponse:
				m.DeviceList.Num = len(m.DeviceList.Items)
			case *DeviceStatusResponse:
				if m.Alarmstatus != nil {
					m.Alarmstatus.Num = len(m.Alarmstatus.Items)
				}
			case *RecordInfoResponse:
				if m.RecordList != nil {
					m.RecordList.Num = len(m.RecordList.Items)
				}
			case *CruiseTrackResponse:
				if m.CruisePointList != nil {
					m.CruisePointList.Num = len(m.CruisePointList.Points)
				}
			}
			for _, cs := range []Charset{CharsetUTF8, CharsetGB2312} {
				enc, err := Encode(RootResponse, first, cs)
				if err != nil {
					t.Fatalf("Encode %T as %s: %v", first, cs, err)
				}
				if cs == CharsetGB2312 && utf8.Valid(enc) && !isASCII(enc) {
					continue // a GB body that is also valid UTF-8 is read as UTF-8 (see package doc)
				}
				second := newTarget()
				if err := Decode(enc, second); err != nil {
					t.Fatalf("Decode of own %s output failed: %v\n%s", cs, err, enc)
				}
				if !reflect.DeepEqual(first, second) {
					t.Fatalf("%T changed through %s Encode→Decode:\n%+v\n%+v\n%s", first, cs, first, second, enc)
				}
			}
		}
	})
}
