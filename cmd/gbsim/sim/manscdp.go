package sim

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"unicode/utf8"

	"golang.org/x/text/encoding/simplifiedchinese"
)

// Body charsets a Device can answer in.
const (
	// CharsetGB2312 declares encoding="GB2312" and encodes the body accordingly (the GB/T 28181 default).
	CharsetGB2312 = "gb2312"
	// CharsetUTF8 declares encoding="UTF-8" and sends UTF-8.
	CharsetUTF8 = "utf-8"
	// CharsetUTF8AsGB2312 declares GB2312 but sends UTF-8, as some real devices do.
	CharsetUTF8AsGB2312 = "utf-8-as-gb2312"
)

const contentTypeMANSCDP = "Application/MANSCDP+xml"

// encodeBody marshals v into a MANSCDP body in the given charset. encoding/xml cannot write GB2312,
// so the declaration is written here and the whole document is transcoded afterwards.
func encodeBody(v any, charset string) ([]byte, error) {
	doc, err := xml.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("marshal MANSCDP body: %w", err)
	}
	declared := "GB2312"
	if charset == CharsetUTF8 {
		declared = "UTF-8"
	}
	body := make([]byte, 0, len(doc)+48)
	body = append(body, `<?xml version="1.0" encoding="`+declared+`"?>`+"\r\n"...)
	body = append(body, doc...)
	body = append(body, "\r\n"...)
	if charset != CharsetGB2312 {
		return body, nil
	}
	// GBK is a superset of GB2312 with identical codes for every GB2312 character.
	gb, err := simplifiedchinese.GBK.NewEncoder().Bytes(body)
	if err != nil {
		return nil, fmt.Errorf("encode MANSCDP body as GB2312: %w (a name holds a character outside GB2312; use charset %q)", err, CharsetUTF8)
	}
	return gb, nil
}

// toUTF8 returns body as UTF-8. A body that already is valid UTF-8 is kept as is, whatever it declares,
// because some devices declare GB2312 and send UTF-8; anything else is decoded as GB18030, a superset of
// GB2312 and GBK, whose decoder turns invalid sequences into U+FFFD instead of failing.
func toUTF8(body []byte) []byte {
	if utf8.Valid(body) {
		return body
	}
	out, err := simplifiedchinese.GB18030.NewDecoder().Bytes(body)
	if err != nil {
		return body
	}
	return out
}

// decodeBody unmarshals a body already converted by toUTF8 into v; the encoding declaration is ignored.
func decodeBody(utf8Body []byte, v any) error {
	dec := xml.NewDecoder(bytes.NewReader(utf8Body))
	dec.CharsetReader = func(_ string, r io.Reader) (io.Reader, error) { return r, nil }
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("parse MANSCDP body: %w", err)
	}
	return nil
}

// cmdHeader holds the fields every MANSCDP command shares; Root is Query, Response, Notify or Control.
type cmdHeader struct {
	XMLName  xml.Name
	CmdType  string `xml:"CmdType"`
	SN       int    `xml:"SN"`
	DeviceID string `xml:"DeviceID"`
}

// Root returns the document element's name.
func (h cmdHeader) Root() string { return h.XMLName.Local }

type queryCmd struct {
	XMLName  xml.Name `xml:"Query"`
	CmdType  string   `xml:"CmdType"`
	SN       int      `xml:"SN"`
	DeviceID string   `xml:"DeviceID"`
}

type keepaliveNotify struct {
	XMLName  xml.Name `xml:"Notify"`
	CmdType  string   `xml:"CmdType"`
	SN       int      `xml:"SN"`
	DeviceID string   `xml:"DeviceID"`
	Status   string   `xml:"Status"`
}

type catalogResponse struct {
	XMLName    xml.Name    `xml:"Response"`
	CmdType    string      `xml:"CmdType"`
	SN         int         `xml:"SN"`
	DeviceID   string      `xml:"DeviceID"`
	SumNum     int         `xml:"SumNum"`
	DeviceList catalogList `xml:"DeviceList"`
}

type catalogList struct {
	Num   int           `xml:"Num,attr"`
	Items []catalogItem `xml:"Item"`
}

// catalogItem is one DeviceList entry in the order of GB/T 28181 A.2.6.4.
type catalogItem struct {
	DeviceID     string `xml:"DeviceID"`
	Name         string `xml:"Name"`
	Manufacturer string `xml:"Manufacturer"`
	Model        string `xml:"Model"`
	Owner        string `xml:"Owner"`
	CivilCode    string `xml:"CivilCode"`
	Address      string `xml:"Address"`
	Parental     int    `xml:"Parental"`
	ParentID     string `xml:"ParentID"`
	SafetyWay    int    `xml:"SafetyWay"`
	RegisterWay  int    `xml:"RegisterWay"`
	Secrecy      int    `xml:"Secrecy"`
	Status       string `xml:"Status"`
}

type deviceInfoResponse struct {
	XMLName      xml.Name `xml:"Response"`
	CmdType      string   `xml:"CmdType"`
	SN           int      `xml:"SN"`
	DeviceID     string   `xml:"DeviceID"`
	DeviceName   string   `xml:"DeviceName"`
	Result       string   `xml:"Result"`
	Manufacturer string   `xml:"Manufacturer"`
	Model        string   `xml:"Model"`
	Firmware     string   `xml:"Firmware"`
	Channel      int      `xml:"Channel"`
}

type deviceStatusResponse struct {
	XMLName     xml.Name    `xml:"Response"`
	CmdType     string      `xml:"CmdType"`
	SN          int         `xml:"SN"`
	DeviceID    string      `xml:"DeviceID"`
	Result      string      `xml:"Result"`
	Online      string      `xml:"Online"`
	Status      string      `xml:"Status"`
	Encode      string      `xml:"Encode"`
	Record      string      `xml:"Record"`
	DeviceTime  string      `xml:"DeviceTime"`
	Alarmstatus alarmStatus `xml:"Alarmstatus"`
}

type alarmStatus struct {
	Num int `xml:"Num,attr"`
}
