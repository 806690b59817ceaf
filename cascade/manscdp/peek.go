package manscdp

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// Root elements of MANSCDP bodies.
const (
	RootQuery    = "Query"
	RootResponse = "Response"
	RootNotify   = "Notify"
	RootControl  = "Control"
)

// CmdType values gbproxy handles by name. Peek returns these strings without allocating.
const (
	CmdKeepalive      = "Keepalive"
	CmdCatalog        = "Catalog"
	CmdDeviceInfo     = "DeviceInfo"
	CmdDeviceStatus   = "DeviceStatus"
	CmdAlarm          = "Alarm"
	CmdRecordInfo     = "RecordInfo"
	CmdDeviceControl  = "DeviceControl"
	CmdDeviceConfig   = "DeviceConfig"
	CmdConfigDownload = "ConfigDownload"
	CmdPresetQuery    = "PresetQuery"
	CmdMobilePosition = "MobilePosition"
	CmdMediaStatus    = "MediaStatus"
	CmdBroadcast      = "Broadcast"

	// GB/T 28181-2022.
	CmdHomePositionQuery      = "HomePositionQuery"
	CmdCruiseTrackListQuery   = "CruiseTrackListQuery"
	CmdCruiseTrackQuery       = "CruiseTrackQuery"
	CmdPTZPosition            = "PTZPosition"
	CmdSDCardStatus           = "SDCardStatus"
	CmdUploadSnapShotFinished = "UploadSnapShotFinished"
	CmdDeviceUpgradeResult    = "DeviceUpgradeResult"
)

var knownCmdTypes = map[string]string{}

func init() {
	for _, c := range []string{CmdKeepalive, CmdCatalog, CmdDeviceInfo, CmdDeviceStatus, CmdAlarm,
		CmdRecordInfo, CmdDeviceControl, CmdDeviceConfig, CmdConfigDownload, CmdPresetQuery,
		CmdMobilePosition, CmdMediaStatus, CmdBroadcast, CmdHomePositionQuery, CmdCruiseTrackListQuery,
		CmdCruiseTrackQuery, CmdPTZPosition, CmdSDCardStatus, CmdUploadSnapShotFinished, CmdDeviceUpgradeResult} {
		knownCmdTypes[c] = c
	}
}

// ErrNoCmdType reports a body whose root element has no CmdType child.
var ErrNoCmdType = errors.New("manscdp: body has no CmdType element")

// Header is the cheap first look at any body: root element (Query|Response|Notify|Control),
// CmdType, SN and DeviceID. SN is 0 when the body has none.
type Header struct {
	Root     string
	CmdType  string
	SN       int64
	DeviceID string
}

const (
	fieldCmdType = 1 << iota
	fieldSN
	fieldDeviceID
	allFields = fieldCmdType | fieldSN | fieldDeviceID
)

// Peek reads the root element name and the CmdType, SN and DeviceID children of the root
// without decoding the document: it stops as soon as it has all three, so it does not
// notice malformed XML after them. The root name is returned in its standard spelling when
// it matches one case-insensitively. Bodies whose header values use entities, CDATA or
// non-ASCII characters take a slower path through Decode.
//
// Header values longer than maxHeaderValue are an error: IDs are 20 digits
// and CmdTypes short words, and a peer must not get kilobytes into our logs.
func Peek(body []byte) (Header, error) {
	h, err := peek(body)
	if err != nil {
		return h, err
	}
	for _, v := range [...]struct{ name, value string }{{"root element", h.Root}, {"CmdType", h.CmdType}, {"DeviceID", h.DeviceID}} {
		if len(v.value) > maxHeaderValue {
			return Header{}, fmt.Errorf("manscdp: %s is %d bytes long (at most %d)", v.name, len(v.value), maxHeaderValue)
		}
	}
	return h, nil
}

// maxHeaderValue bounds the root name, CmdType and DeviceID Peek returns.
const maxHeaderValue = 64

func peek(body []byte) (Header, error) {
	start, name, ok := findRoot(body)
	if !ok {
		return Header{}, errors.New("manscdp: body has no XML root element")
	}
	h := Header{Root: rootName(name)}
	pos := start + 1 + len(name)
	gt, selfClosing := tagEnd(body[pos:])
	if gt < 0 {
		return Header{}, fmt.Errorf("manscdp: root element <%s> is not terminated", h.Root)
	}
	if selfClosing {
		return Header{}, ErrNoCmdType
	}
	pos += gt + 1
	found := 0
	for depth := 1; found != allFields; {
		lt := bytes.IndexByte(body[pos:], '<')
		if lt < 0 {
			break
		}
		pos += lt
		rest := body[pos:]
		if len(rest) > 1 && rest[1] == '/' {
			depth--
			if depth == 0 {
				break
			}
			pos += 2
			continue
		}
		if n := skipNonElement(rest); n != 0 {
			if n < 0 {
				break
			}
			pos += n
			continue
		}
		child := elementName(rest[1:])
		gt, selfClosing := tagEnd(rest[1+len(child):])
		if gt < 0 {
			break
		}
		pos += 1 + len(child) + gt + 1
		if selfClosing {
			if depth == 1 {
				found |= headerField(child)
			}
			continue
		}
		if f := headerField(child); depth == 1 && f != 0 && found&f == 0 {
			textLen := bytes.IndexByte(body[pos:], '<')
			if textLen < 0 {
				break
			}
			text := trimXMLSpace(body[pos : pos+textLen])
			if !bytes.HasPrefix(body[pos+textLen:], []byte("</")) || !isPlainValue(text) {
				return peekSlow(body)
			}
			if err := h.set(f, text); err != nil {
				return Header{}, err
			}
			found |= f
		}
		depth++
	}
	if h.CmdType == "" {
		return Header{}, ErrNoCmdType
	}
	return h, nil
}

// peekSlow is Peek for bodies whose header values need real XML decoding.
func peekSlow(body []byte) (Header, error) {
	var m Message
	if err := Decode(body, &m); err != nil {
		return Header{}, err
	}
	return m.Header()
}

// tagEnd returns the offset of the '>' that ends the tag whose attributes b starts with,
// skipping quoted attribute values, and whether the tag is self-closing; -1 if unterminated.
func tagEnd(b []byte) (int, bool) {
	var quote byte
	for i, c := range b {
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '>':
			return i, i > 0 && b[i-1] == '/'
		}
	}
	return -1, false
}

func headerField(name []byte) int {
	switch {
	case bytes.EqualFold(name, []byte("CmdType")):
		return fieldCmdType
	case bytes.EqualFold(name, []byte("SN")):
		return fieldSN
	case bytes.EqualFold(name, []byte("DeviceID")):
		return fieldDeviceID
	}
	return 0
}

func (h *Header) set(field int, text []byte) error {
	switch field {
	case fieldCmdType:
		h.CmdType = internCmdType(text)
	case fieldDeviceID:
		h.DeviceID = string(text)
	case fieldSN:
		sn, err := parseSN(text)
		if err != nil {
			return err
		}
		h.SN = sn
	}
	return nil
}

func parseSN(text []byte) (int64, error) {
	if len(text) == 0 {
		return 0, nil
	}
	sn, err := strconv.ParseInt(string(text), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("manscdp: SN %q is not a decimal integer", text)
	}
	return sn, nil
}

// isPlainValue reports whether a header value can be used as it stands in the body:
// printable ASCII without entity references, the same in every supported charset.
func isPlainValue(text []byte) bool {
	for _, c := range text {
		if c <= ' ' || c >= 0x7f || c == '&' {
			return false
		}
	}
	return true
}

func internCmdType(text []byte) string {
	if s, ok := knownCmdTypes[string(text)]; ok {
		return s
	}
	return string(text)
}

// rootName returns the standard spelling of a root element name that matches one
// case-insensitively, else the name as sent.
func rootName(name []byte) string {
	for _, r := range [...]string{RootQuery, RootResponse, RootNotify, RootControl} {
		if bytes.EqualFold(name, []byte(r)) {
			return r
		}
	}
	return string(name)
}
