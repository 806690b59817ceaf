package manscdp

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func readSample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPeekSamples(t *testing.T) {
	tests := []struct {
		file string
		want Header
	}{
		{"keepalive.xml", Header{RootNotify, CmdKeepalive, 2749, "130909113319427420"}},
		{"catalog_query.xml", Header{RootQuery, CmdCatalog, 471, "130909113319427420"}},
		{"catalog_response.xml", Header{RootResponse, CmdCatalog, 1708, "62010201001320000393"}},
		{"deviceinfo_query.xml", Header{RootQuery, CmdDeviceInfo, 1708, "62010201001320000393"}},
		{"deviceinfo_response.xml", Header{RootResponse, CmdDeviceInfo, 1708, "62010201001320000393"}},
		{"devicestatus_query.xml", Header{RootQuery, CmdDeviceStatus, 1708, "62010201001320000393"}},
		{"devicestatus_response.xml", Header{RootResponse, CmdDeviceStatus, 1708, "62010201001320000393"}},
		{"alarm_notify.xml", Header{RootNotify, CmdAlarm, 2, "34020000001340000001"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			body := readSample(t, tt.file)
			got, err := Peek(body)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("Peek = %+v, want %+v", got, tt.want)
			}
			var m Message
			if err := Decode(body, &m); err != nil {
				t.Fatal(err)
			}
			if slow, err := m.Header(); err != nil || slow != got {
				t.Fatalf("Message.Header = %+v, %v; Peek = %+v", slow, err, got)
			}
		})
	}
}

func TestPeekQuirks(t *testing.T) {
	keepalive := Header{RootNotify, CmdKeepalive, 7, "34020000001110000001"}
	tests := []struct {
		name string
		body string
		want Header
	}{
		{"BOM and leading whitespace", "\xef\xbb\xbf \r\n<?xml version=\"1.0\"?>\n<Notify><CmdType>Keepalive</CmdType><SN>7</SN><DeviceID>34020000001110000001</DeviceID></Notify>", keepalive},
		{"no declaration", "<Notify><CmdType>Keepalive</CmdType><SN>7</SN><DeviceID>34020000001110000001</DeviceID></Notify>", keepalive},
		{"odd-case root and children", "<notify><cmdtype>Keepalive</cmdtype><sn>7</sn><deviceid>34020000001110000001</deviceid></notify>", keepalive},
		{"trailing NULs and garbage", "<Notify><CmdType>Keepalive</CmdType><SN>7</SN><DeviceID>34020000001110000001</DeviceID></Notify>\x00\x00\xff<junk", keepalive},
		{"whitespace around values", "<Notify><CmdType>\r\n Keepalive\t</CmdType><SN> 7 </SN><DeviceID>\n34020000001110000001\n</DeviceID></Notify>", keepalive},
		{"comments, PI and attributes", "<!-- x --><?pi?><Notify a=\"1>2\"><!-- <DeviceID>9</DeviceID> --><CmdType>Keepalive</CmdType><SN x='>'>7</SN><DeviceID>34020000001110000001</DeviceID></Notify>", keepalive},
		{"nested DeviceID before the root's own", "<Notify><CmdType>Keepalive</CmdType><Info><DeviceID>1</DeviceID><X/></Info><SN>7</SN><DeviceID>34020000001110000001</DeviceID><Status>OK</Status></Notify>", keepalive},
		{"missing SN", "<Notify><CmdType>Keepalive</CmdType><DeviceID>34020000001110000001</DeviceID><Status>OK</Status></Notify>", Header{RootNotify, CmdKeepalive, 0, "34020000001110000001"}},
		{"empty SN", "<Notify><CmdType>Keepalive</CmdType><SN/><DeviceID>34020000001110000001</DeviceID></Notify>", Header{RootNotify, CmdKeepalive, 0, "34020000001110000001"}},
		{"CDATA value (slow path)", "<Notify><CmdType><![CDATA[Keepalive]]></CmdType><SN>7</SN><DeviceID>34020000001110000001</DeviceID></Notify>", keepalive},
		{"entity in value (slow path)", "<Notify><CmdType>Keep&#97;live</CmdType><SN>7</SN><DeviceID>34020000001110000001</DeviceID></Notify>", keepalive},
		{"unknown root kept as sent", "<Foo><CmdType>Keepalive</CmdType><SN>7</SN><DeviceID>34020000001110000001</DeviceID></Foo>", Header{"Foo", CmdKeepalive, 7, "34020000001110000001"}},
		{"GB2312 body", "<?xml version=\"1.0\" encoding=\"GB2312\"?><Notify><CmdType>Alarm</CmdType><SN>7</SN><DeviceID>34020000001110000001</DeviceID><AlarmDescription>\xca\xd3\xc6\xb5</AlarmDescription></Notify>", Header{RootNotify, CmdAlarm, 7, "34020000001110000001"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Peek([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("Peek = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestPeekRejects(t *testing.T) {
	tests := []struct {
		name, body, wantErr string
	}{
		{"empty", "", "no XML root"},
		{"text only", "hello", "no XML root"},
		{"self-closing root", "<Notify/>", "no CmdType"},
		{"no CmdType", "<Notify><SN>1</SN><DeviceID>1</DeviceID></Notify>", "no CmdType"},
		{"CmdType only nested", "<Notify><Info><CmdType>Keepalive</CmdType></Info></Notify>", "no CmdType"},
		{"bad SN", "<Notify><CmdType>Keepalive</CmdType><SN>12a</SN></Notify>", `SN "12a"`},
		{"unterminated root tag", "<Notify", "not terminated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := Peek([]byte(tt.body))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Peek = %+v, %v; want error containing %q", h, err, tt.wantErr)
			}
		})
	}
	if _, err := Peek([]byte("<Query><SN>1</SN></Query>")); !errors.Is(err, ErrNoCmdType) {
		t.Fatalf("missing CmdType: %v, want ErrNoCmdType", err)
	}
}

func TestPeekDoesNotReadPastHeader(t *testing.T) {
	// Everything after the three header fields is ignored, even if malformed.
	body := "<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>2</DeviceID><Status>OK</Bogus"
	got, err := Peek([]byte(body))
	if err != nil || got != (Header{RootNotify, CmdKeepalive, 1, "2"}) {
		t.Fatalf("Peek = %+v, %v", got, err)
	}
}

func TestPeekAllocations(t *testing.T) {
	body := readSample(t, "keepalive.xml")
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := Peek(body); err != nil {
			t.Fatal(err)
		}
	})
	// Only the DeviceID string: root and known CmdTypes are interned, SN is parsed in place.
	if allocs > 1 {
		t.Fatalf("Peek allocates %v times per keepalive, want at most 1", allocs)
	}
}

// A peer cannot get kilobytes of a header value into our logs and metrics.
func TestPeekBoundsHeaderValues(t *testing.T) {
	long := strings.Repeat("1", 65)
	for _, body := range []string{
		`<?xml version="1.0"?><Query><CmdType>` + long + `</CmdType><SN>1</SN><DeviceID>1</DeviceID></Query>`,
		`<?xml version="1.0"?><Query><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>` + long + `</DeviceID></Query>`,
		`<?xml version="1.0"?><Q` + long + `><CmdType>Catalog</CmdType></Q` + long + `>`,
	} {
		if h, err := Peek([]byte(body)); err == nil {
			t.Errorf("Peek accepted %+v", h)
		}
	}
	if _, err := Peek([]byte(`<?xml version="1.0"?><Query><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>34020000001320000001</DeviceID></Query>`)); err != nil {
		t.Fatal(err)
	}
}
