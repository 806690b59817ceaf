package manscdp

import (
	"encoding/xml"
	"strconv"
	"strings"
)

// Typed messages. Optional values are strings with omitempty (or pointers for nested
// elements) so that an element the sender left out stays out when the message is
// re-encoded; callers convert numbers where they need them. Each message keeps unknown
// children in Extra. To add a CmdType, declare its struct the same way: embed Base, add
// the fields in the standard's order, end with Extra.

// Base holds the children every MANSCDP body starts with.
type Base struct {
	CmdType  string `xml:"CmdType"`
	SN       int64  `xml:"SN"`
	DeviceID string `xml:"DeviceID"`
}

// List is a counted list such as <DeviceList Num="2"><Item>…</Item><Item>…</Item></DeviceList>.
// Num is what the sender declared; Encode always writes len(Items), because a peer that
// trusts a wrong Num waits for items that never come.
type List[T any] struct {
	Num   int `xml:"Num,attr"`
	Items []T `xml:"Item"`
}

// MarshalXML writes Num as the number of items.
func (l List[T]) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	return marshalCounted(e, start, "Item", l.Items)
}

// UnmarshalXML reads the items and, leniently, Num: a missing or malformed Num is 0 rather
// than a reason to lose the items. Children other than Item are skipped.
func (l *List[T]) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	var err error
	l.Num, l.Items, err = unmarshalCounted[T](d, start, "Item")
	return err
}

// marshalCounted writes a counted list whose items are named itemName, with Num set to
// the number of items.
func marshalCounted[T any](e *xml.Encoder, start xml.StartElement, itemName string, items []T) error {
	start.Attr = append(start.Attr, xml.Attr{Name: xml.Name{Local: "Num"}, Value: strconv.Itoa(len(items))})
	if err := e.EncodeToken(start); err != nil {
		return err
	}
	for i := range items {
		if err := e.EncodeElement(&items[i], xml.StartElement{Name: xml.Name{Local: itemName}}); err != nil {
			return err
		}
	}
	return e.EncodeToken(start.End())
}

// unmarshalCounted reads a counted list whose items are named itemName, skipping other
// children; a missing or malformed Num is 0.
func unmarshalCounted[T any](d *xml.Decoder, start xml.StartElement, itemName string) (num int, items []T, err error) {
	for _, a := range start.Attr {
		if strings.EqualFold(a.Name.Local, "Num") {
			num, _ = strconv.Atoi(trimXMLSpace(a.Value))
		}
	}
	for {
		t, err := d.Token()
		if err != nil {
			return num, items, err
		}
		switch el := t.(type) {
		case xml.StartElement:
			if el.Name.Local != itemName {
				if err := d.Skip(); err != nil {
					return num, items, err
				}
				continue
			}
			var item T
			if err := d.DecodeElement(&item, &el); err != nil {
				return num, items, err
			}
			items = append(items, item)
		case xml.EndElement:
			return num, items, nil
		}
	}
}

// ItemList is the DeviceList of Catalog answers and notifications.
type ItemList = List[CatalogItem]

// Keepalive is the Notify a device sends every heartbeat interval (A.2.5.2).
type Keepalive struct {
	Base
	Status string         `xml:"Status"`
	Info   *KeepaliveInfo `xml:"Info,omitempty"`
	Extra  []AnyElement   `xml:",any"`
}

// KeepaliveInfo lists the sender's faulty devices.
type KeepaliveInfo struct {
	DeviceIDs []string     `xml:"DeviceID"`
	Extra     []AnyElement `xml:",any"`
}

// BasicQuery is a Query with nothing but the common children.
type BasicQuery struct {
	Base
	Extra []AnyElement `xml:",any"`
}

// DeviceInfoQuery and DeviceStatusQuery carry only the common children.
type (
	DeviceInfoQuery   = BasicQuery
	DeviceStatusQuery = BasicQuery
)

// CatalogQuery asks for the device directory; the time range is optional.
type CatalogQuery struct {
	Base
	StartTime string       `xml:"StartTime,omitempty"`
	EndTime   string       `xml:"EndTime,omitempty"`
	Extra     []AnyElement `xml:",any"`
}

// CatalogResponse is one Response of a Catalog answer, which may be split across many
// MESSAGEs: SumNum is the total, DeviceList holds this message's share.
type CatalogResponse struct {
	Base
	SumNum     int          `xml:"SumNum"`
	DeviceList ItemList     `xml:"DeviceList"`
	Extra      []AnyElement `xml:",any"`
}

// CatalogNotify is a catalog change notification (Notify root, subscription NOTIFY); its
// items carry Event.
type CatalogNotify = CatalogResponse

// CatalogItem is one directory entry, with the fields of GB/T 28181-2016 and -2022.
type CatalogItem struct {
	DeviceID          string           `xml:"DeviceID"`
	Name              string           `xml:"Name,omitempty"`
	Manufacturer      string           `xml:"Manufacturer,omitempty"`
	Model             string           `xml:"Model,omitempty"`
	Owner             string           `xml:"Owner,omitempty"`
	CivilCode         string           `xml:"CivilCode,omitempty"`
	Block             string           `xml:"Block,omitempty"`
	Address           string           `xml:"Address,omitempty"`
	Parental          string           `xml:"Parental,omitempty"`
	ParentID          string           `xml:"ParentID,omitempty"`
	BusinessGroupID   string           `xml:"BusinessGroupID,omitempty"` // 2022: at item level
	SafetyWay         string           `xml:"SafetyWay,omitempty"`
	RegisterWay       string           `xml:"RegisterWay,omitempty"`
	CertNum           string           `xml:"CertNum,omitempty"`
	Certifiable       string           `xml:"Certifiable,omitempty"`
	ErrCode           string           `xml:"ErrCode,omitempty"`
	EndTime           string           `xml:"EndTime,omitempty"`
	SecurityLevelCode string           `xml:"SecurityLevelCode,omitempty"` // 2022
	Secrecy           string           `xml:"Secrecy,omitempty"`
	IPAddress         string           `xml:"IPAddress,omitempty"`
	Port              string           `xml:"Port,omitempty"`
	Password          string           `xml:"Password,omitempty"`
	Status            string           `xml:"Status,omitempty"`
	Longitude         string           `xml:"Longitude,omitempty"`
	Latitude          string           `xml:"Latitude,omitempty"`
	Event             string           `xml:"Event,omitempty"` // Notify only: ON, OFF, VLOST, DEFECT, ADD, DEL, UPDATE
	Info              *CatalogItemInfo `xml:"Info,omitempty"`
	Extra             []AnyElement     `xml:",any"`
}

// CatalogItemInfo is the camera attribute block of a catalog item. Fields marked 2016 were
// dropped by 2022 and fields marked 2022 are new there; in 2022 PTZType may also be a
// "/"-separated list.
type CatalogItemInfo struct {
	PTZType                  string       `xml:"PTZType,omitempty"`
	PhotoelectricImagingType string       `xml:"PhotoelectricImagingType,omitempty"` // 2022
	CapturePositionType      string       `xml:"CapturePositionType,omitempty"`      // 2022
	PositionType             string       `xml:"PositionType,omitempty"`             // 2016
	RoomType                 string       `xml:"RoomType,omitempty"`
	UseType                  string       `xml:"UseType,omitempty"` // 2016
	SupplyLightType          string       `xml:"SupplyLightType,omitempty"`
	DirectionType            string       `xml:"DirectionType,omitempty"`
	Resolution               string       `xml:"Resolution,omitempty"`
	StreamNumberList         string       `xml:"StreamNumberList,omitempty"` // 2022
	BusinessGroupID          string       `xml:"BusinessGroupID,omitempty"`  // 2016
	DownloadSpeed            string       `xml:"DownloadSpeed,omitempty"`
	SVCSpaceSupportMode      string       `xml:"SVCSpaceSupportMode,omitempty"`
	SVCTimeSupportMode       string       `xml:"SVCTimeSupportMode,omitempty"`
	SSVCRatioSupportList     string       `xml:"SSVCRatioSupportList,omitempty"`     // 2022
	MobileDeviceType         string       `xml:"MobileDeviceType,omitempty"`         // 2022
	HorizontalFieldAngle     string       `xml:"HorizontalFieldAngle,omitempty"`     // 2022
	VerticalFieldAngle       string       `xml:"VerticalFieldAngle,omitempty"`       // 2022
	MaxViewDistance          string       `xml:"MaxViewDistance,omitempty"`          // 2022
	GrassrootsCode           string       `xml:"GrassrootsCode,omitempty"`           // 2022
	PointType                string       `xml:"PointType,omitempty"`                // 2022
	PointCommonName          string       `xml:"PointCommonName,omitempty"`          // 2022
	MAC                      string       `xml:"MAC,omitempty"`                      // 2022
	FunctionType             string       `xml:"FunctionType,omitempty"`             // 2022
	EncodeType               string       `xml:"EncodeType,omitempty"`               // 2022
	InstallTime              string       `xml:"InstallTime,omitempty"`              // 2022
	ManagementUnit           string       `xml:"ManagementUnit,omitempty"`           // 2022
	ContactInfo              string       `xml:"ContactInfo,omitempty"`              // 2022
	RecordSaveDays           string       `xml:"RecordSaveDays,omitempty"`           // 2022
	IndustrialClassification string       `xml:"IndustrialClassification,omitempty"` // 2022
	Extra                    []AnyElement `xml:",any"`
}

// DeviceInfoResponse answers a DeviceInfo query.
type DeviceInfoResponse struct {
	Base
	DeviceName   string       `xml:"DeviceName,omitempty"`
	Result       string       `xml:"Result"`
	DeviceType   string       `xml:"DeviceType,omitempty"`
	Manufacturer string       `xml:"Manufacturer,omitempty"`
	Model        string       `xml:"Model,omitempty"`
	Firmware     string       `xml:"Firmware,omitempty"`
	MaxCamera    string       `xml:"MaxCamera,omitempty"`
	MaxAlarm     string       `xml:"MaxAlarm,omitempty"`
	Channel      string       `xml:"Channel,omitempty"`
	Extra        []AnyElement `xml:",any"`
}

// DeviceStatusResponse answers a DeviceStatus query.
type DeviceStatusResponse struct {
	Base
	Result      string                 `xml:"Result"`
	Online      string                 `xml:"Online,omitempty"`
	Status      string                 `xml:"Status,omitempty"`
	Reason      string                 `xml:"Reason,omitempty"`
	Encode      string                 `xml:"Encode,omitempty"`
	Record      string                 `xml:"Record,omitempty"`
	DeviceTime  string                 `xml:"DeviceTime,omitempty"`
	Alarmstatus *List[AlarmStatusItem] `xml:"Alarmstatus,omitempty"` // spelled so in the standard
	Extra       []AnyElement           `xml:",any"`
}

// AlarmStatusItem is the duty state of one alarm input.
type AlarmStatusItem struct {
	DeviceID   string       `xml:"DeviceID"`
	DutyStatus string       `xml:"DutyStatus,omitempty"` // ONDUTY, OFFDUTY, ALARM
	Extra      []AnyElement `xml:",any"`
}

// AlarmNotify is an alarm report (Notify root, in MESSAGE or subscription NOTIFY).
type AlarmNotify struct {
	Base
	AlarmPriority    string       `xml:"AlarmPriority,omitempty"`
	AlarmMethod      string       `xml:"AlarmMethod,omitempty"`
	AlarmTime        string       `xml:"AlarmTime,omitempty"`
	AlarmDescription string       `xml:"AlarmDescription,omitempty"`
	Longitude        string       `xml:"Longitude,omitempty"`
	Latitude         string       `xml:"Latitude,omitempty"`
	Info             *AlarmInfo   `xml:"Info,omitempty"`
	Extra            []AnyElement `xml:",any"`
}

// AlarmInfo details the alarm type.
type AlarmInfo struct {
	AlarmType      string          `xml:"AlarmType,omitempty"`
	AlarmTypeParam *AlarmTypeParam `xml:"AlarmTypeParam,omitempty"`
	Extra          []AnyElement    `xml:",any"`
}

// AlarmTypeParam holds the parameters of an alarm type.
type AlarmTypeParam struct {
	EventType string       `xml:"EventType,omitempty"`
	Extra     []AnyElement `xml:",any"`
}

// ResultResponse is a Response whose only content is Result (OK or ERROR): the answer to
// an Alarm notification and to the DeviceControl commands that require one.
type ResultResponse struct {
	Base
	Result string       `xml:"Result"`
	Extra  []AnyElement `xml:",any"`
}
