package sim

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"strconv"
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

// encodeBody marshals v into a MANSCDP body in the given charset.
func encodeBody(v any, charset string) ([]byte, error) {
	doc, err := xml.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("marshal MANSCDP body: %w", err)
	}
	return encodeDoc(doc, charset)
}

// encodeDoc prefixes an XML document with its declaration and encodes it in charset. encoding/xml
// cannot write GB2312, so the declaration is written here and the whole document transcoded afterwards.
func encodeDoc(doc []byte, charset string) ([]byte, error) {
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

// catalogItem is one DeviceList entry in the order of GB/T 28181 A.2.6.4. Directory nodes (civil
// codes, business groups, virtual organisations) carry fewer elements than devices, hence omitempty;
// Event is set only in catalog notifications (A.2.5.4).
type catalogItem struct {
	DeviceID        string `xml:"DeviceID"`
	Event           string `xml:"Event,omitempty"`
	Name            string `xml:"Name,omitempty"`
	Manufacturer    string `xml:"Manufacturer,omitempty"`
	Model           string `xml:"Model,omitempty"`
	Owner           string `xml:"Owner,omitempty"`
	CivilCode       string `xml:"CivilCode,omitempty"`
	Address         string `xml:"Address,omitempty"`
	Parental        string `xml:"Parental,omitempty"`
	ParentID        string `xml:"ParentID,omitempty"`
	BusinessGroupID string `xml:"BusinessGroupID,omitempty"`
	SafetyWay       string `xml:"SafetyWay,omitempty"`
	RegisterWay     string `xml:"RegisterWay,omitempty"`
	Secrecy         string `xml:"Secrecy,omitempty"`
	Status          string `xml:"Status,omitempty"`
}

// catalogNotify is a catalog change notification (A.2.5.4), sent by NOTIFY or MESSAGE.
type catalogNotify struct {
	XMLName    xml.Name    `xml:"Notify"`
	CmdType    string      `xml:"CmdType"`
	SN         int         `xml:"SN"`
	DeviceID   string      `xml:"DeviceID"`
	SumNum     int         `xml:"SumNum"`
	DeviceList catalogList `xml:"DeviceList"`
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
	Num   int               `xml:"Num,attr"`
	Items []alarmStatusItem `xml:"Item"`
}

// alarmStatusItem is one alarm input's guard state: ONDUTY, OFFDUTY or ALARM.
type alarmStatusItem struct {
	DeviceID   string `xml:"DeviceID"`
	DutyStatus string `xml:"DutyStatus"`
}

// command is a Query or Control as a device reads it: the common header and every other child,
// so the device can tell which control (PTZCmd, GuardCmd, ...) or which query condition it carries.
type command struct {
	XMLName  xml.Name
	CmdType  string    `xml:"CmdType"`
	SN       int       `xml:"SN"`
	DeviceID string    `xml:"DeviceID"`
	Children []element `xml:",any"`
}

type element struct {
	XMLName xml.Name
	Inner   string `xml:",innerxml"`
}

// field returns the inner XML of the first child called name.
func (c command) field(name string) (string, bool) {
	for _, e := range c.Children {
		if e.XMLName.Local == name {
			return e.Inner, true
		}
	}
	return "", false
}

// resultResponse is the answer that carries only a Result: control (A.2.6.1), alarm notification
// (A.2.6.2), device configuration and subscription answers.
type resultResponse struct {
	XMLName  xml.Name `xml:"Response"`
	CmdType  string   `xml:"CmdType"`
	SN       int      `xml:"SN"`
	DeviceID string   `xml:"DeviceID"`
	Result   string   `xml:"Result"`
}

// recordInfoResponse answers a RecordInfo query (A.2.6.6); SumNum counts every record of the
// answer, RecordList Num the ones in this message.
type recordInfoResponse struct {
	XMLName    xml.Name   `xml:"Response"`
	CmdType    string     `xml:"CmdType"`
	SN         int        `xml:"SN"`
	DeviceID   string     `xml:"DeviceID"`
	Name       string     `xml:"Name"`
	SumNum     int        `xml:"SumNum"`
	RecordList recordList `xml:"RecordList"`
}

type recordList struct {
	Num   int          `xml:"Num,attr"`
	Items []recordItem `xml:"Item"`
}

type recordItem struct {
	DeviceID  string `xml:"DeviceID"`
	Name      string `xml:"Name"`
	FilePath  string `xml:"FilePath"`
	Address   string `xml:"Address"`
	StartTime string `xml:"StartTime"`
	EndTime   string `xml:"EndTime"`
	Secrecy   int    `xml:"Secrecy"`
	Type      string `xml:"Type"`
	FileSize  int64  `xml:"FileSize"`
}

type presetQueryResponse struct {
	XMLName    xml.Name   `xml:"Response"`
	CmdType    string     `xml:"CmdType"`
	SN         int        `xml:"SN"`
	DeviceID   string     `xml:"DeviceID"`
	PresetList presetList `xml:"PresetList"`
}

type presetList struct {
	Num   int          `xml:"Num,attr"`
	Items []presetItem `xml:"Item"`
}

type presetItem struct {
	PresetID   int    `xml:"PresetID"`
	PresetName string `xml:"PresetName"`
}

// configDownloadResponse answers ConfigDownload with the basic parameters (A.2.6.10).
type configDownloadResponse struct {
	XMLName    xml.Name   `xml:"Response"`
	CmdType    string     `xml:"CmdType"`
	SN         int        `xml:"SN"`
	DeviceID   string     `xml:"DeviceID"`
	Result     string     `xml:"Result"`
	BasicParam basicParam `xml:"BasicParam"`
}

type basicParam struct {
	Name              string `xml:"Name"`
	DeviceID          string `xml:"DeviceID"`
	SIPServerID       string `xml:"SIPServerID"`
	SIPServerIP       string `xml:"SIPServerIP"`
	SIPServerPort     int    `xml:"SIPServerPort"`
	DomainName        string `xml:"DomainName"`
	Expiration        int    `xml:"Expiration"`
	HeartBeatInterval int    `xml:"HeartBeatInterval"`
	HeartBeatCount    int    `xml:"HeartBeatCount"`
}

// homePosition is both the HomePosition control (A.2.3.1) and the HomePositionQuery answer's content.
type homePosition struct {
	Enabled     int `xml:"Enabled"`
	ResetTime   int `xml:"ResetTime"`
	PresetIndex int `xml:"PresetIndex"`
}

type homePositionResponse struct {
	XMLName      xml.Name     `xml:"Response"`
	CmdType      string       `xml:"CmdType"`
	SN           int          `xml:"SN"`
	DeviceID     string       `xml:"DeviceID"`
	Result       string       `xml:"Result"`
	HomePosition homePosition `xml:"HomePosition"`
}

// ptzPositionResponse answers the GB/T 28181-2022 PTZPosition query.
type ptzPositionResponse struct {
	XMLName  xml.Name `xml:"Response"`
	CmdType  string   `xml:"CmdType"`
	SN       int      `xml:"SN"`
	DeviceID string   `xml:"DeviceID"`
	Pan      float64  `xml:"Pan"`
	Tilt     float64  `xml:"Tilt"`
	Zoom     float64  `xml:"Zoom"`
}

// alarmNotify reports an alarm (A.2.5.2).
type alarmNotify struct {
	XMLName          xml.Name   `xml:"Notify"`
	CmdType          string     `xml:"CmdType"`
	SN               int        `xml:"SN"`
	DeviceID         string     `xml:"DeviceID"`
	AlarmPriority    int        `xml:"AlarmPriority"`
	AlarmMethod      int        `xml:"AlarmMethod"`
	AlarmTime        string     `xml:"AlarmTime"`
	AlarmDescription string     `xml:"AlarmDescription,omitempty"`
	Info             *alarmInfo `xml:"Info"`
}

type alarmInfo struct {
	AlarmType int `xml:"AlarmType"`
}

// mobilePositionNotify reports a mobile device's position (A.2.5.6).
type mobilePositionNotify struct {
	XMLName   xml.Name `xml:"Notify"`
	CmdType   string   `xml:"CmdType"`
	SN        int      `xml:"SN"`
	DeviceID  string   `xml:"DeviceID"`
	Time      string   `xml:"Time"`
	Longitude float64  `xml:"Longitude"`
	Latitude  float64  `xml:"Latitude"`
	Speed     float64  `xml:"Speed"`
	Direction float64  `xml:"Direction"`
	Altitude  float64  `xml:"Altitude"`
}

// answerView is what Upper.Request decodes of any Response: the header, Result, SumNum, and the
// number of Items of whatever list it carries (DeviceList, RecordList, PresetList, Alarmstatus, ...).
type answerView struct {
	XMLName  xml.Name
	CmdType  string     `xml:"CmdType"`
	SN       int        `xml:"SN"`
	DeviceID string     `xml:"DeviceID"`
	Result   string     `xml:"Result"`
	SumNum   int        `xml:"SumNum"`
	Lists    []itemList `xml:",any"`
}

type itemList struct {
	Items []struct{} `xml:"Item"`
}

// Field is one extra child element of a command sent by Upper.Request or Upper.Subscribe.
type Field struct {
	Name  string
	Value string // element text, escaped when sent
	// Raw sends Value unescaped, for nested elements such as an Info block or a BasicParam.
	Raw bool
}

// buildCommand writes a MANSCDP document: root, then CmdType, SN, DeviceID and the extra fields in order.
func buildCommand(root, cmdType string, sn int, deviceID string, extra []Field) ([]byte, error) {
	var b bytes.Buffer
	writeElement := func(name, value string, raw bool) error {
		if !validName(name) {
			return fmt.Errorf("MANSCDP element name %q is not a valid XML name", name)
		}
		b.WriteString("<" + name + ">")
		if raw {
			b.WriteString(value)
		} else if err := xml.EscapeText(&b, []byte(value)); err != nil {
			return fmt.Errorf("element %s: %w", name, err)
		}
		b.WriteString("</" + name + ">\r\n")
		return nil
	}
	if !validName(root) {
		return nil, fmt.Errorf("MANSCDP root %q is not a valid XML name", root)
	}
	b.WriteString("<" + root + ">\r\n")
	if err := writeElement("CmdType", cmdType, false); err != nil {
		return nil, err
	}
	_ = writeElement("SN", strconv.Itoa(sn), false)
	if err := writeElement("DeviceID", deviceID, false); err != nil {
		return nil, err
	}
	for _, f := range extra {
		if err := writeElement(f.Name, f.Value, f.Raw); err != nil {
			return nil, err
		}
	}
	b.WriteString("</" + root + ">")
	return b.Bytes(), nil
}

// validName accepts the element names MANSCDP uses: ASCII letters, digits, '_', '-' and '.', not
// starting with a digit, '-' or '.'.
func validName(name string) bool {
	if name == "" {
		return false
	}
	for i, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '_':
		case i > 0 && (r >= '0' && r <= '9' || r == '-' || r == '.'):
		default:
			return false
		}
	}
	return true
}
