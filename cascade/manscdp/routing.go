package manscdp

import (
	"strconv"
	"strings"
)

// answeredControls are the DeviceControl commands whose receiver sends a Response MESSAGE.
// GB/T 28181-2022 9.3.2.1: after PTZ control, TeleBoot, IFrameCmd, DragZoomIn/Out,
// PTZPreciseCtrl, FormatSDCard and TargetTrack the target sends no answer.
var answeredControls = [...]string{"RecordCmd", "GuardCmd", "AlarmCmd", "HomePosition", "DeviceUpgrade"}

// ExpectsResponse reports whether the receiver of a body sent in a MESSAGE answers it with
// a Response MESSAGE of its own, besides the SIP 200: every Query does; a DeviceControl
// does when it carries RecordCmd, GuardCmd, AlarmCmd, HomePosition or DeviceUpgrade;
// DeviceConfig does; of the notifications, Alarm and Broadcast do. m is the decoded body,
// needed only for DeviceControl (a nil m then gives false). Names match case-insensitively.
func ExpectsResponse(root, cmdType string, m *Message) bool {
	switch rootName([]byte(root)) {
	case RootQuery:
		return true
	case RootControl:
		if strings.EqualFold(cmdType, CmdDeviceConfig) {
			return true
		}
		if !strings.EqualFold(cmdType, CmdDeviceControl) || m == nil {
			return false
		}
		for _, name := range answeredControls {
			if findChild(m.Children, name) != nil {
				return true
			}
		}
	case RootNotify:
		return strings.EqualFold(cmdType, CmdAlarm) || strings.EqualFold(cmdType, CmdBroadcast)
	}
	return false
}

type countedList struct{ list, item string }

// countedLists names, per CmdType, the list of answers that may be split across many
// MESSAGEs with the total in SumNum, and the name of the list's items.
var countedLists = map[string]countedList{
	CmdCatalog:              {"DeviceList", "Item"},
	CmdRecordInfo:           {"RecordList", "Item"},
	CmdPresetQuery:          {"PresetList", "Item"},
	CmdCruiseTrackListQuery: {"CruiseTrackList", "CruiseTrack"},
	CmdCruiseTrackQuery:     {"CruisePointList", "CruisePoint"},
	CmdSDCardStatus:         {"SDCardStatusInfo", "Item"},
}

func countedListOf(cmdType string) (countedList, bool) {
	if l, ok := countedLists[cmdType]; ok {
		return l, true
	}
	for name, l := range countedLists {
		if strings.EqualFold(name, cmdType) {
			return l, true
		}
	}
	return countedList{}, false
}

// MultiPart reports whether the answer to cmdType carries SumNum and may be split across
// several MESSAGEs: Catalog, RecordInfo, PresetQuery, CruiseTrackListQuery,
// CruiseTrackQuery and SDCardStatus. Use CountItems to tell when it is complete.
func MultiPart(cmdType string) bool {
	_, ok := countedListOf(cmdType)
	return ok
}

// CountItems reads SumNum from an answer to a MultiPart command and counts the items of
// its list in this MESSAGE; the answer is complete once the items of all its MESSAGEs
// reach sumNum. An answer without SumNum (some devices omit it in PresetQuery answers) is
// taken to come in one MESSAGE: sumNum is then the number of items. ok is false when m is
// not such an answer or its SumNum is not a number.
func CountItems(m *Message) (sumNum, items int, ok bool) {
	if m == nil {
		return 0, 0, false
	}
	l, found := countedListOf(m.Text("CmdType"))
	if !found {
		return 0, 0, false
	}
	if list := findChild(m.Children, l.list); list != nil {
		for i := range list.Children {
			if strings.EqualFold(list.Children[i].XMLName.Local, l.item) {
				items++
			}
		}
	}
	sum := findChild(m.Children, "SumNum")
	if sum == nil {
		return items, items, true
	}
	n, err := strconv.Atoi(trimXMLSpace(sum.Text))
	if err != nil || n < 0 {
		return 0, items, false
	}
	return n, items, true
}
