package sim

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/icholy/digest"
	"golang.org/x/text/encoding/simplifiedchinese"
)

// seedCatalogResponse is the Catalog answer from the feature document's sample exchange.
const seedCatalogResponse = `<?xml version="1.0" encoding="GB2312"?>
<Response>
<CmdType>Catalog</CmdType>
<SN>1708</SN>
<DeviceID>62010201001320000393</DeviceID>
<SumNum>1</SumNum>
<DeviceList Num="1">
<Item>
<DeviceID>62010201001320000393</DeviceID>
<Name>Camera 01</Name>
<Manufacturer>Hikvision</Manufacturer>
<Model>IP Camera</Model>
<Owner>Owner</Owner>
<CivilCode>5100000000</CivilCode>
<Address>Address</Address>
<Parental>0</Parental>
<ParentID>51000000002000000001</ParentID>
<SafetyWay>0</SafetyWay>
<RegisterWay>1</RegisterWay>
<Secrecy>0</Secrecy>
<Status>ON</Status>
</Item>
</DeviceList>
</Response>
`

func TestDecodeSeedCatalogSample(t *testing.T) {
	var r catalogResponse
	if err := decodeBody([]byte(seedCatalogResponse), &r); err != nil {
		t.Fatal(err)
	}
	if r.CmdType != "Catalog" || r.SN != 1708 || r.SumNum != 1 || r.DeviceList.Num != 1 || len(r.DeviceList.Items) != 1 {
		t.Fatalf("decoded %+v", r)
	}
	it := r.DeviceList.Items[0]
	if it.DeviceID != "62010201001320000393" || it.Name != "Camera 01" || it.ParentID != "51000000002000000001" ||
		it.Status != "ON" || it.RegisterWay != "1" || it.CivilCode != "5100000000" {
		t.Errorf("item %+v", it)
	}
}

func TestEncodeBodyCharsets(t *testing.T) {
	resp := catalogResponse{CmdType: "Catalog", SN: 7, DeviceID: devID, SumNum: 1,
		DeviceList: catalogList{Num: 1, Items: []catalogItem{{DeviceID: devID, Name: "东门摄像机", Status: "ON"}}}}
	for _, tc := range []struct {
		charset, declared string
		utf8              bool
	}{
		{CharsetGB2312, "GB2312", false},
		{CharsetUTF8, "UTF-8", true},
		{CharsetUTF8AsGB2312, "GB2312", true},
	} {
		body, err := encodeBody(resp, tc.charset)
		if err != nil {
			t.Fatal(err)
		}
		if want := `<?xml version="1.0" encoding="` + tc.declared + `"?>`; !bytes.HasPrefix(body, []byte(want)) {
			t.Errorf("%s: body starts %q, want %q", tc.charset, body[:40], want)
		}
		if utf8.Valid(body) != tc.utf8 {
			t.Errorf("%s: valid UTF-8 = %v", tc.charset, !tc.utf8)
		}
		if !tc.utf8 {
			gb, _ := simplifiedchinese.GBK.NewEncoder().String("东门摄像机")
			if !bytes.Contains(body, []byte("<Name>"+gb+"</Name>")) {
				t.Errorf("GB2312 body lacks the GB2312 bytes of the name: %q", body)
			}
		}
		text := toUTF8(body)
		var back catalogResponse
		if err := decodeBody(text, &back); err != nil {
			t.Fatal(err)
		}
		if back.DeviceList.Items[0].Name != "东门摄像机" || back.SN != 7 {
			t.Errorf("%s: round trip gave %+v", tc.charset, back)
		}
	}
	if _, err := encodeBody(queryCmd{CmdType: "Catalog", DeviceID: "🙂"}, CharsetGB2312); err == nil {
		t.Error("a character outside GB2312 was encoded without error")
	}
}

func TestKeepaliveBody(t *testing.T) {
	body, err := encodeBody(keepaliveNotify{CmdType: "Keepalive", SN: 12, DeviceID: devID, Status: "OK"}, CharsetGB2312)
	if err != nil {
		t.Fatal(err)
	}
	want := "<Notify><CmdType>Keepalive</CmdType><SN>12</SN><DeviceID>" + devID + "</DeviceID><Status>OK</Status></Notify>"
	if !strings.Contains(string(body), want) {
		t.Errorf("keepalive body %q lacks %q", body, want)
	}
}

func TestVerifyDigest(t *testing.T) {
	// RFC 2617 section 3.5 (qop=auth).
	rfc := &digest.Credentials{Username: "Mufasa", Realm: "testrealm@host.com", Nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093",
		URI: "/dir/index.html", QOP: "auth", Nc: 1, Cnonce: "0a4f113b", Response: "6629fae49393a05397450978507c4ef1"}
	if err := verifyDigest(rfc, "GET", "Circle Of Life"); err != nil {
		t.Errorf("RFC 2617 example: %v", err)
	}
	// Credentials computed by icholy/digest, as sipgo's DoDigestAuth sends them.
	for _, chal := range []string{
		`Digest realm="3402000000", nonce="abc", opaque="def", algorithm=MD5`,
		`Digest realm="3402000000", nonce="abc", qop="auth"`,
	} {
		c, err := digest.ParseChallenge(chal)
		if err != nil {
			t.Fatal(err)
		}
		cred, err := digest.Digest(c, digest.Options{Method: "REGISTER", URI: "sip:" + upperID + "@3402000000", Username: devID, Password: "pw"})
		if err != nil {
			t.Fatal(err)
		}
		if err := verifyDigest(cred, "REGISTER", "pw"); err != nil {
			t.Errorf("%s: valid credentials refused: %v", chal, err)
		}
		if err := verifyDigest(cred, "REGISTER", "wrong"); err == nil {
			t.Errorf("%s: wrong password accepted", chal)
		}
	}
	if err := verifyDigest(&digest.Credentials{Algorithm: "SHA-256"}, "REGISTER", "pw"); err == nil {
		t.Error("SHA-256 credentials accepted by an MD5-only check")
	}
}

// FuzzBodyDecoding feeds bodies as they may come off the wire: whatever the bytes, decoding must not
// panic and must yield UTF-8.
func FuzzBodyDecoding(f *testing.F) {
	gb, _ := encodeBody(catalogResponse{CmdType: "Catalog", SN: 1, SumNum: 1,
		DeviceList: catalogList{Num: 1, Items: []catalogItem{{Name: "北门"}}}}, CharsetGB2312)
	f.Add([]byte(seedCatalogResponse))
	f.Add(gb)
	f.Add([]byte(`<?xml version="1.0"?><Notify><CmdType>Keepalive</CmdType><SN>x</SN></Notify>`))
	f.Add([]byte{0xff, 0xfe, 0x81, '<'})
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, body []byte) {
		text := toUTF8(body)
		if !utf8.Valid(text) {
			t.Fatalf("toUTF8(%q) = %q, not UTF-8", body, text)
		}
		var h cmdHeader
		_ = decodeBody(text, &h)
	})
}

// FuzzParseMANSRTSP: any body parses or fails cleanly, and a parsed seek is
// a number or empty.
func FuzzParseMANSRTSP(f *testing.F) {
	f.Add([]byte("PLAY RTSP/1.0\r\nCSeq: 2\r\nRange: npt=100-\r\n"))
	f.Add([]byte("PLAY RTSP/1.0\r\nCSeq: 3\r\nScale: -2.0\r\n"))
	f.Add([]byte("PAUSE RTSP/1.0\r\nCSeq: 4\r\nPauseTime: now\r\n"))
	f.Add([]byte("TEARDOWN RTSP/1.0\r\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := ParseMANSRTSP(body)
		if err == nil && m.Method == "" {
			t.Fatalf("%q parsed without a method", body)
		}
	})
}

func TestParseMANSRTSP(t *testing.T) {
	for _, tc := range []struct {
		body string
		want MANSRTSP
		bad  bool
	}{
		{"PLAY RTSP/1.0\r\nCSeq: 2\r\nRange: npt=100-\r\n", MANSRTSP{Method: "PLAY", CSeq: 2, Range: "100"}, false},
		{"PLAY RTSP/1.0\nCSeq: 5\nRange: npt=now-\nScale: 0.5\n", MANSRTSP{Method: "PLAY", CSeq: 5, Scale: "0.5"}, false},
		{"pause RTSP/1.0\r\nCSeq: 1\r\n", MANSRTSP{Method: "PAUSE", CSeq: 1}, false},
		{"PLAY RTSP/1.0\r\nRange: clock=20260101T000000Z-\r\n", MANSRTSP{}, true},
		{"PLAY\r\n", MANSRTSP{}, true},
	} {
		got, err := ParseMANSRTSP([]byte(tc.body))
		if (err != nil) != tc.bad || (!tc.bad && got != tc.want) {
			t.Errorf("ParseMANSRTSP(%q) = %+v, %v; want %+v (error %v)", tc.body, got, err, tc.want, tc.bad)
		}
	}
}
