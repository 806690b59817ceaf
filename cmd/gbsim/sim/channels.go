package sim

import (
	"fmt"
	"strconv"
)

// Channel is one catalog entry of a device or lower platform: a camera, or a directory node of a
// platform's tree (civil code, business group, virtual organisation).
type Channel struct {
	ID, Name string
	Status   string // "ON" or "OFF"; directory nodes have none
	ParentID string // default: the device ID
	// BusinessGroupID is the business group (type 215) a virtual organisation or camera belongs to.
	BusinessGroupID string
	// CivilCode is the administrative division; cameras default to the first 6 digits of the domain.
	CivilCode string
	Parental  int // 1 when the entry has children
}

// GB/T 28181 device type codes, digits 11-13 of a 20-digit ID (appendix D).
const (
	typeCamera        = "131"
	typeBusinessGroup = "215"
	typeVirtualOrg    = "216"
	maxSerial         = 999999 // digits 15-20
)

// typeCode returns the type digits of a 20-digit ID, empty for other IDs.
func typeCode(id string) string {
	if len(id) != 20 {
		return ""
	}
	return id[10:13]
}

// isDirectory reports whether a catalog entry is a directory rather than a device: a civil code
// (2, 4, 6 or 8 digits), a business group or a virtual organisation.
func isDirectory(id string) bool {
	t := typeCode(id)
	return len(id) <= 8 || t == typeBusinessGroup || t == typeVirtualOrg
}

// MakeChannels builds n online cameras (type code 131) under deviceID, named in Chinese so that
// charset handling is exercised. Channel IDs are unique across devices whose IDs differ in their
// last two digits (those digits lead the channel serial), as real channel IDs are unique network-wide;
// up to 99,999 channels a device.
func MakeChannels(deviceID string, n int) []Channel {
	prefix := defaultDomain(deviceID)
	for len(prefix) < 10 {
		prefix += "0"
	}
	base := 0
	if len(deviceID) >= 2 {
		base, _ = strconv.Atoi(deviceID[len(deviceID)-2:])
	}
	chans := make([]Channel, n)
	for i := range chans {
		chans[i] = Channel{
			ID:       fmt.Sprintf("%s%s%07d", prefix, typeCamera, (base*100000+i+1)%10000000),
			Name:     fmt.Sprintf("测试摄像机%d号", i+1),
			Status:   "ON",
			ParentID: deviceID,
		}
	}
	return chans
}

// MakeTree builds the catalog tree of a lower platform as GB/T 28181 organises it: a civil-code
// node, one business group (type 215) under the platform, groups virtual organisations (type 216)
// under the business group, and channelsPerGroup online cameras (type 131) under each virtual
// organisation, with BusinessGroupID and CivilCode set. civilCode has 2, 4, 6 or 8 digits (province,
// city, district, grass-roots unit); other input is cut to the longest such prefix of its leading
// digits, and empty input takes the first 6 digits of platformID. IDs run out at 999,999 cameras.
func MakeTree(platformID, civilCode string, groups, channelsPerGroup int) []Channel {
	civil := normaliseCivilCode(civilCode, platformID)
	center := civil
	for len(center) < 8 {
		center += "0"
	}
	// center code (8), industry 00, type (3), network 0 (monitoring network), serial (6)
	id := func(typ string, n int) string { return fmt.Sprintf("%s00%s0%06d", center, typ, n) }
	groups = min(max(groups, 0), maxSerial)
	channelsPerGroup = max(channelsPerGroup, 0)
	if groups > 0 {
		channelsPerGroup = min(channelsPerGroup, maxSerial/groups)
	}
	bg := id(typeBusinessGroup, 1)
	tree := make([]Channel, 0, 2+groups*(1+channelsPerGroup))
	tree = append(tree,
		Channel{ID: civil, Name: "行政区划" + civil, ParentID: platformID, Parental: 1},
		Channel{ID: bg, Name: "业务分组", ParentID: platformID, CivilCode: civil, Parental: 1},
	)
	for g := 1; g <= groups; g++ {
		vo := id(typeVirtualOrg, g)
		tree = append(tree, Channel{ID: vo, Name: fmt.Sprintf("虚拟组织%d", g), ParentID: bg,
			BusinessGroupID: bg, CivilCode: civil, Parental: 1})
		for c := 1; c <= channelsPerGroup; c++ {
			n := (g-1)*channelsPerGroup + c
			tree = append(tree, Channel{ID: id(typeCamera, n), Name: fmt.Sprintf("虚拟组织%d摄像机%d号", g, c),
				Status: "ON", ParentID: vo, BusinessGroupID: bg, CivilCode: civil})
		}
	}
	return tree
}

// normaliseCivilCode returns the civil code prefix of s, else of platformID's first 6 digits, else
// "34" (a province code, so the tree stays valid whatever the input).
func normaliseCivilCode(s, platformID string) string {
	if c := civilPrefix(s); c != "" {
		return c
	}
	if c := civilPrefix(platformID[:min(6, len(platformID))]); c != "" {
		return c
	}
	return "34"
}

// civilPrefix keeps the longest even-length prefix, at most 8 digits, of s's leading digits.
func civilPrefix(s string) string {
	n := 0
	for n < len(s) && n < 8 && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	return s[:n-n%2]
}
