package manscdp

import (
	"encoding/xml"
	"slices"
	"strings"
)

// Queries, responses and notifications of GB/T 28181-2016 Annex A beyond those in
// messages.go, with the commands and fields GB/T 28181-2022 added (marked 2022). The
// conventions of messages.go apply: optional values are strings with omitempty, nested
// optional elements are pointers, unknown children stay in Extra.

// Queries that carry only the common children.
type (
	PresetQuery          = BasicQuery
	HomePositionQuery    = BasicQuery // 2022
	CruiseTrackListQuery = BasicQuery // 2022
	PTZPositionQuery     = BasicQuery // 2022
	SDCardStatusQuery    = BasicQuery // 2022
)

// RecordInfoQuery searches the recordings of a device or channel.
type RecordInfoQuery struct {
	Base
	StartTime       string       `xml:"StartTime"`
	EndTime         string       `xml:"EndTime"`
	FilePath        string       `xml:"FilePath,omitempty"`
	Address         string       `xml:"Address,omitempty"`
	Secrecy         string       `xml:"Secrecy,omitempty"`
	Type            string       `xml:"Type,omitempty"` // time, alarm, manual, all
	RecorderID      string       `xml:"RecorderID,omitempty"`
	IndistinctQuery string       `xml:"IndistinctQuery,omitempty"`
	StreamNumber    string       `xml:"StreamNumber,omitempty"` // 2022
	AlarmMethod     string       `xml:"AlarmMethod,omitempty"`  // 2022
	AlarmType       string       `xml:"AlarmType,omitempty"`    // 2022
	Extra           []AnyElement `xml:",any"`
}

// RecordInfoResponse is one MESSAGE of a RecordInfo answer, which may be split across many:
// SumNum is the total, RecordList holds this message's share.
type RecordInfoResponse struct {
	Base
	Name       string            `xml:"Name,omitempty"`
	SumNum     int               `xml:"SumNum"`
	RecordList *List[RecordItem] `xml:"RecordList,omitempty"`
	Extra      []AnyElement      `xml:",any"`
}

// RecordItem is one recording.
type RecordItem struct {
	DeviceID       string       `xml:"DeviceID"`
	Name           string       `xml:"Name,omitempty"`
	FilePath       string       `xml:"FilePath,omitempty"`
	Address        string       `xml:"Address,omitempty"`
	StartTime      string       `xml:"StartTime,omitempty"`
	EndTime        string       `xml:"EndTime,omitempty"`
	Secrecy        string       `xml:"Secrecy,omitempty"`
	Type           string       `xml:"Type,omitempty"`
	RecorderID     string       `xml:"RecorderID,omitempty"`
	FileSize       string       `xml:"FileSize,omitempty"`
	RecordLocation string       `xml:"RecordLocation,omitempty"` // 2022
	StreamNumber   string       `xml:"StreamNumber,omitempty"`   // 2022
	Extra          []AnyElement `xml:",any"`
}

// ConfigDownloadQuery asks for configuration; ConfigType lists the wanted blocks separated
// by "/", for example "BasicParam/VideoParamOpt".
type ConfigDownloadQuery struct {
	Base
	ConfigType string       `xml:"ConfigType"`
	Extra      []AnyElement `xml:",any"`
}

// ConfigDownloadResponse carries the configuration blocks that were asked for. Blocks
// gbproxy only forwards are kept as trees.
type ConfigDownloadResponse struct {
	Base
	Result              string          `xml:"Result"`
	BasicParam          *BasicParam     `xml:"BasicParam,omitempty"`
	VideoParamOpt       *VideoParamOpt  `xml:"VideoParamOpt,omitempty"`
	SVACEncodeConfig    *AnyElement     `xml:"SVACEncodeConfig,omitempty"`
	SVACDecodeConfig    *AnyElement     `xml:"SVACDecodeConfig,omitempty"`
	VideoParamAttribute *AnyElement     `xml:"VideoParamAttribute,omitempty"` // 2022
	VideoRecordPlan     *AnyElement     `xml:"VideoRecordPlan,omitempty"`     // 2022
	VideoAlarmRecord    *AnyElement     `xml:"VideoAlarmRecord,omitempty"`    // 2022
	PictureMask         *AnyElement     `xml:"PictureMask,omitempty"`         // 2022
	FrameMirror         *AnyElement     `xml:"FrameMirror,omitempty"`         // 2022
	AlarmReport         *AnyElement     `xml:"AlarmReport,omitempty"`         // 2022
	OSDConfig           *AnyElement     `xml:"OSDConfig,omitempty"`           // 2022
	SnapShotConfig      *SnapShotConfig `xml:"SnapShotConfig,omitempty"`      // 2022
	Extra               []AnyElement    `xml:",any"`
}

// BasicParam is the basic configuration block of ConfigDownload and DeviceConfig.
type BasicParam struct {
	Name               string       `xml:"Name,omitempty"`
	DeviceID           string       `xml:"DeviceID,omitempty"`
	SIPServerID        string       `xml:"SIPServerID,omitempty"`
	SIPServerIP        string       `xml:"SIPServerIP,omitempty"`
	SIPServerPort      string       `xml:"SIPServerPort,omitempty"`
	DomainName         string       `xml:"DomainName,omitempty"`
	Expiration         string       `xml:"Expiration,omitempty"`
	Password           string       `xml:"Password,omitempty"`
	HeartBeatInterval  string       `xml:"HeartBeatInterval,omitempty"`
	HeartBeatCount     string       `xml:"HeartBeatCount,omitempty"`
	PositionCapability string       `xml:"PositionCapability,omitempty"`
	Longitude          string       `xml:"Longitude,omitempty"`
	Latitude           string       `xml:"Latitude,omitempty"`
	Extra              []AnyElement `xml:",any"`
}

// VideoParamOpt lists the download speeds and resolutions a device supports, each as
// "/"-separated values.
type VideoParamOpt struct {
	DownloadSpeed string       `xml:"DownloadSpeed,omitempty"`
	Resolution    string       `xml:"Resolution,omitempty"`
	Extra         []AnyElement `xml:",any"`
}

// SnapShotConfig orders snapshots (DeviceConfig) or reports the snapshot configuration
// (ConfigDownload). The device uploads the pictures over HTTP to UploadURL and then sends
// UploadSnapShotFinished with the same SessionID.
type SnapShotConfig struct {
	SnapNum   string       `xml:"SnapNum"`  // 1 to 10; 1 for a manual snapshot
	Interval  string       `xml:"Interval"` // seconds between pictures, at least 1
	UploadURL string       `xml:"UploadURL"`
	SessionID string       `xml:"SessionID"` // 32 to 128 letters, digits and dashes
	Extra     []AnyElement `xml:",any"`
}

// PresetQueryResponse lists a camera's presets. SumNum is optional because some devices
// leave it out.
type PresetQueryResponse struct {
	Base
	SumNum     string            `xml:"SumNum,omitempty"`
	PresetList *List[PresetItem] `xml:"PresetList,omitempty"`
	Extra      []AnyElement      `xml:",any"`
}

// PresetItem is one preset.
type PresetItem struct {
	PresetID   string       `xml:"PresetID"`
	PresetName string       `xml:"PresetName,omitempty"`
	Extra      []AnyElement `xml:",any"`
}

// HomePositionResponse answers a HomePositionQuery (2022).
type HomePositionResponse struct {
	Base
	HomePosition *HomePosition `xml:"HomePosition,omitempty"`
	Extra        []AnyElement  `xml:",any"`
}

// HomePosition is the home (guard) position: with Enabled 1 the camera returns to preset
// PresetIndex after ResetTime idle seconds. It is both queried and set (DeviceControl).
type HomePosition struct {
	Enabled     string       `xml:"Enabled"` // 0 or 1
	ResetTime   string       `xml:"ResetTime,omitempty"`
	PresetIndex string       `xml:"PresetIndex,omitempty"`
	Extra       []AnyElement `xml:",any"`
}

// CruiseTrackQuery asks for the points of cruise track Number (2022).
type CruiseTrackQuery struct {
	Base
	Number string       `xml:"Number"`
	Extra  []AnyElement `xml:",any"`
}

// CruiseTrackListResponse lists a camera's cruise tracks (2022).
type CruiseTrackListResponse struct {
	Base
	SumNum          int              `xml:"SumNum"`
	CruiseTrackList *CruiseTrackList `xml:"CruiseTrackList,omitempty"`
	Extra           []AnyElement     `xml:",any"`
}

// CruiseTrackList is a counted list whose items are <CruiseTrack> elements; like List, it
// is encoded with Num set to the number of tracks.
type CruiseTrackList struct {
	Num    int           `xml:"Num,attr"`
	Tracks []CruiseTrack `xml:"CruiseTrack"`
}

// MarshalXML writes Num as the number of tracks.
func (l CruiseTrackList) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	return marshalCounted(e, start, "CruiseTrack", l.Tracks)
}

// UnmarshalXML reads the tracks and, leniently, Num.
func (l *CruiseTrackList) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	var err error
	l.Num, l.Tracks, err = unmarshalCounted[CruiseTrack](d, start, "CruiseTrack")
	return err
}

// CruiseTrack names one cruise track.
type CruiseTrack struct {
	Number string       `xml:"Number"`
	Name   string       `xml:"Name,omitempty"`
	Extra  []AnyElement `xml:",any"`
}

// CruiseTrackResponse lists the points of one cruise track (2022).
type CruiseTrackResponse struct {
	Base
	Number          string           `xml:"Number,omitempty"`
	Name            string           `xml:"Name,omitempty"`
	SumNum          int              `xml:"SumNum"`
	CruisePointList *CruisePointList `xml:"CruisePointList,omitempty"`
	Extra           []AnyElement     `xml:",any"`
}

// CruisePointList is a counted list whose items are <CruisePoint> elements, encoded with
// Num set to the number of points.
type CruisePointList struct {
	Num    int           `xml:"Num,attr"`
	Points []CruisePoint `xml:"CruisePoint"`
}

// MarshalXML writes Num as the number of points.
func (l CruisePointList) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	return marshalCounted(e, start, "CruisePoint", l.Points)
}

// UnmarshalXML reads the points and, leniently, Num.
func (l *CruisePointList) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	var err error
	l.Num, l.Points, err = unmarshalCounted[CruisePoint](d, start, "CruisePoint")
	return err
}

// CruisePoint is one stop of a cruise track.
type CruisePoint struct {
	PresetIndex string       `xml:"PresetIndex"`
	StayTime    string       `xml:"StayTime,omitempty"` // seconds
	Speed       string       `xml:"Speed,omitempty"`
	Extra       []AnyElement `xml:",any"`
}

// PTZPositionResponse answers a PTZPosition query with the camera's precise position
// (2022). Angles are degrees.
type PTZPositionResponse struct {
	Base
	Pan                  string       `xml:"Pan,omitempty"`
	Tilt                 string       `xml:"Tilt,omitempty"`
	Zoom                 string       `xml:"Zoom,omitempty"`
	HorizontalFieldAngle string       `xml:"HorizontalFieldAngle,omitempty"`
	VerticalFieldAngle   string       `xml:"VerticalFieldAngle,omitempty"`
	MaxViewDistance      string       `xml:"MaxViewDistance,omitempty"` // metres
	Extra                []AnyElement `xml:",any"`
}

// PTZPositionNotify reports the precise position to a PTZPosition subscriber (2022).
type PTZPositionNotify = PTZPositionResponse

// SDCardStatusResponse answers an SDCardStatus query (2022).
type SDCardStatusResponse struct {
	Base
	SumNum           int               `xml:"SumNum"`
	SDCardStatusInfo *List[SDCardItem] `xml:"SDCardStatusInfo,omitempty"`
	Extra            []AnyElement      `xml:",any"`
}

// SDCardItem is the state of one memory card. Capacities are in MB.
type SDCardItem struct {
	ID             string       `xml:"ID"`
	HddName        string       `xml:"HddName,omitempty"`
	Status         string       `xml:"Status,omitempty"` // ok, formatting, unformatted, idle, error
	FormatProgress string       `xml:"FormatProgress,omitempty"`
	Capacity       string       `xml:"Capacity,omitempty"`
	FreeSpace      string       `xml:"FreeSpace,omitempty"`
	Extra          []AnyElement `xml:",any"`
}

// AlarmQuery is the body of an Alarm subscription (SUBSCRIBE) or query. The standard names
// the time range StartAlarmTime/EndAlarmTime; many platforms, and the project's feature
// document, send StartTime/EndTime instead, so both are kept. Decode also reads the
// misspelling StartAlarmPrority/EndAlarmPrority seen in the wild; Encode writes the
// standard spelling.
type AlarmQuery struct {
	Base
	StartAlarmPriority string       `xml:"StartAlarmPriority,omitempty"`
	EndAlarmPriority   string       `xml:"EndAlarmPriority,omitempty"`
	AlarmMethod        string       `xml:"AlarmMethod,omitempty"`
	AlarmType          string       `xml:"AlarmType,omitempty"`
	StartAlarmTime     string       `xml:"StartAlarmTime,omitempty"`
	EndAlarmTime       string       `xml:"EndAlarmTime,omitempty"`
	StartTime          string       `xml:"StartTime,omitempty"`
	EndTime            string       `xml:"EndTime,omitempty"`
	Extra              []AnyElement `xml:",any"`
}

// UnmarshalXML decodes the query and moves the misspelled priority elements into their
// fields when the correctly spelled ones are absent.
func (q *AlarmQuery) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	type plain AlarmQuery // without this method, so DecodeElement does not recurse here
	if err := d.DecodeElement((*plain)(q), &start); err != nil {
		return err
	}
	q.Extra = adoptMisspelled(q.Extra, "StartAlarmPrority", &q.StartAlarmPriority)
	q.Extra = adoptMisspelled(q.Extra, "EndAlarmPrority", &q.EndAlarmPriority)
	return nil
}

// adoptMisspelled moves the text of the first plain element of extra named name into
// field, if field is empty, and returns the rest of extra (nil when nothing is left, as a
// fresh decode would leave it).
func adoptMisspelled(extra []AnyElement, name string, field *string) []AnyElement {
	if *field != "" {
		return extra
	}
	for i, e := range extra {
		if strings.EqualFold(e.XMLName.Local, name) && len(e.Children) == 0 && len(e.Attrs) == 0 {
			*field = e.Text
			extra = slices.Delete(extra, i, i+1)
			break
		}
	}
	if len(extra) == 0 {
		return nil
	}
	return extra
}

// MobilePositionQuery subscribes to position reports every Interval seconds.
type MobilePositionQuery struct {
	Base
	Interval string       `xml:"Interval,omitempty"`
	Extra    []AnyElement `xml:",any"`
}

// MobilePositionNotify is a position report of a mobile device (WGS-84 degrees, km/h,
// degrees clockwise from north, metres).
type MobilePositionNotify struct {
	Base
	Time      string       `xml:"Time,omitempty"`
	Longitude string       `xml:"Longitude,omitempty"`
	Latitude  string       `xml:"Latitude,omitempty"`
	Speed     string       `xml:"Speed,omitempty"`
	Direction string       `xml:"Direction,omitempty"`
	Altitude  string       `xml:"Altitude,omitempty"`
	Height    string       `xml:"Height,omitempty"` // 2022
	Extra     []AnyElement `xml:",any"`
}

// MediaStatusEndOfFile is the NotifyType of a MediaStatus notification sent when playback
// or download of a recording reaches the end of the file.
const MediaStatusEndOfFile = "121"

// MediaStatusNotify reports a media stream event, such as end of file.
type MediaStatusNotify struct {
	Base
	NotifyType string       `xml:"NotifyType"`
	Extra      []AnyElement `xml:",any"`
}

// BroadcastNotify announces a voice broadcast from SourceID to TargetID. It has no
// DeviceID; a sender's DeviceID is kept in Extra.
type BroadcastNotify struct {
	CmdType  string       `xml:"CmdType"`
	SN       int64        `xml:"SN"`
	SourceID string       `xml:"SourceID"`
	TargetID string       `xml:"TargetID"`
	Extra    []AnyElement `xml:",any"`
}

// BroadcastResponse is the target's answer to a BroadcastNotify.
type BroadcastResponse = ResultResponse

// UploadSnapShotFinished reports that the pictures ordered by a SnapShotConfig have been
// uploaded (2022).
type UploadSnapShotFinished struct {
	Base
	SessionID    string        `xml:"SessionID"`
	SnapShotList *SnapShotList `xml:"SnapShotList,omitempty"`
	Extra        []AnyElement  `xml:",any"`
}

// SnapShotList holds the identifiers the device gave the uploaded pictures.
type SnapShotList struct {
	SnapShotFileIDs []string     `xml:"SnapShotFileID"`
	Extra           []AnyElement `xml:",any"`
}

// DeviceUpgradeResult reports the outcome of a DeviceUpgrade control (2022).
type DeviceUpgradeResult struct {
	Base
	SessionID           string       `xml:"SessionID"`
	UpgradeResult       string       `xml:"UpgradeResult"` // OK or ERROR
	Firmware            string       `xml:"Firmware,omitempty"`
	UpgradeFailedReason string       `xml:"UpgradeFailedReason,omitempty"`
	Extra               []AnyElement `xml:",any"`
}
