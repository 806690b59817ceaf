package manscdp

// Control messages (root Control). The answer to those that get one (see ExpectsResponse)
// is a ResultResponse with the same CmdType and SN.

// DeviceControl carries one control command; the fields a command does not use stay
// empty. GB/T 28181-2016 A.2.3.1, with the commands GB/T 28181-2022 added.
type DeviceControl struct {
	Base
	PTZCmd         string          `xml:"PTZCmd,omitempty"` // 16 hex digits, see PTZCmd
	PTZCmdParams   *PTZCmdParams   `xml:"PTZCmdParams,omitempty"`
	TeleBoot       string          `xml:"TeleBoot,omitempty"`     // Boot
	RecordCmd      string          `xml:"RecordCmd,omitempty"`    // Record, StopRecord
	StreamNumber   string          `xml:"StreamNumber,omitempty"` // 2022, with RecordCmd
	GuardCmd       string          `xml:"GuardCmd,omitempty"`     // SetGuard, ResetGuard
	AlarmCmd       string          `xml:"AlarmCmd,omitempty"`     // ResetAlarm
	IFameCmd       string          `xml:"IFameCmd,omitempty"`     // Send; the 2016 spelling
	IFrameCmd      string          `xml:"IFrameCmd,omitempty"`    // Send; the 2022 spelling
	DragZoomIn     *DragZoom       `xml:"DragZoomIn,omitempty"`
	DragZoomOut    *DragZoom       `xml:"DragZoomOut,omitempty"`
	HomePosition   *HomePosition   `xml:"HomePosition,omitempty"`
	PTZPreciseCtrl *PTZPreciseCtrl `xml:"PTZPreciseCtrl,omitempty"` // 2022
	DeviceUpgrade  *DeviceUpgrade  `xml:"DeviceUpgrade,omitempty"`  // 2022
	FormatSDCard   string          `xml:"FormatSDCard,omitempty"`   // 2022: card number
	TargetTrack    string          `xml:"TargetTrack,omitempty"`    // 2022: Auto, Manual, Stop
	DeviceID2      string          `xml:"DeviceID2,omitempty"`      // 2022: with TargetTrack
	TargetArea     *DragZoom       `xml:"TargetArea,omitempty"`     // 2022: with TargetTrack Manual
	Info           *ControlInfo    `xml:"Info,omitempty"`
	Extra          []AnyElement    `xml:",any"`
}

// PTZCmdParams names what a preset or cruise PTZCmd creates (2022).
type PTZCmdParams struct {
	PresetName      string       `xml:"PresetName,omitempty"`
	CruiseTrackName string       `xml:"CruiseTrackName,omitempty"`
	Extra           []AnyElement `xml:",any"`
}

// DragZoom is a rectangle drawn on the playback window, in window pixels: the window's
// size and the rectangle's centre and size.
type DragZoom struct {
	Length    string       `xml:"Length"`
	Width     string       `xml:"Width"`
	MidPointX string       `xml:"MidPointX"`
	MidPointY string       `xml:"MidPointY"`
	LengthX   string       `xml:"LengthX"`
	LengthY   string       `xml:"LengthY"`
	Extra     []AnyElement `xml:",any"`
}

// PTZPreciseCtrl moves the camera to absolute angles (degrees) and zoom (2022).
type PTZPreciseCtrl struct {
	Pan   string       `xml:"Pan,omitempty"`
	Tilt  string       `xml:"Tilt,omitempty"`
	Zoom  string       `xml:"Zoom,omitempty"`
	Extra []AnyElement `xml:",any"`
}

// DeviceUpgrade orders a firmware upgrade from FileURL (2022); the device reports the
// outcome with DeviceUpgradeResult and the same SessionID.
type DeviceUpgrade struct {
	Firmware     string       `xml:"Firmware"`
	FileURL      string       `xml:"FileURL"`
	Manufacturer string       `xml:"Manufacturer"`
	SessionID    string       `xml:"SessionID"`
	Extra        []AnyElement `xml:",any"`
}

// ControlInfo is the Info block of DeviceControl: the control priority of a PTZ command,
// or the alarm to reset with AlarmCmd.
type ControlInfo struct {
	ControlPriority string       `xml:"ControlPriority,omitempty"`
	AlarmMethod     string       `xml:"AlarmMethod,omitempty"`
	AlarmType       string       `xml:"AlarmType,omitempty"`
	Extra           []AnyElement `xml:",any"`
}

// DeviceConfig sets configuration blocks. Blocks gbproxy only forwards are kept as trees.
type DeviceConfig struct {
	Base
	BasicParam          *BasicParam     `xml:"BasicParam,omitempty"`
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
