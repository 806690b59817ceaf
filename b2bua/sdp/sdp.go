// Package sdp parses and marshals GB/T 28181 SDP bodies.
//
// GB/T 28181 extends SDP with lines that RFC 4566 parsers reject: "y=" (the
// SSRC, ten decimal digits), "f=" (media parameters) and a "u=" whose value is
// "<channel id>:<type>" rather than a URI. Real devices also send LF-only or
// mixed line endings, trailing spaces, blank lines, y=/f= in odd places, no
// t= line, and so on.
//
// Parse works in two steps. A lenient pre-pass splits the body into lines,
// takes out y=, f= and u= (keeping their values), drops line types the GB
// profile has no use for, puts the session-level lines in RFC 4566 order and
// fills in what pion's strict grammar requires (t=0 0 when missing, neutral
// stand-ins for the o= fields and the m= media/proto tokens, which pion
// restricts to IANA names and numeric IDs). The normalised body is then
// parsed by github.com/pion/sdp/v3, and the Session is built from pion's
// result plus the values kept aside.
//
// Marshal writes lines in the order pion would (v o s i u c t a, then per
// media m c a) and appends y= and f= last. It is written here rather than via
// pion's Marshal because pion's Origin holds numeric IDs and would rewrite
// GB's string IDs; the output is byte-identical to pion's for the same lines.
package sdp

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	pion "github.com/pion/sdp/v3"
)

// maxSize is the largest body Parse accepts.
const maxSize = 64 << 10

// Session is a GB/T 28181 SDP body.
type Session struct {
	Origin       Origin // o=
	Name         string // s=: Play, Playback, Download, Talk
	Info         string // i=, "" if absent
	URI          string // u= raw value, e.g. "34020000001320000001:0", "" if absent
	ConnectionIP string // session-level c= address ("" if none)
	StartTime    uint64 // t= start (0 for live)
	StopTime     uint64 // t= stop
	Media        []Media
	SSRC         string // y= raw value (10 decimal digits normally), "" if absent
	Format       string // f= raw value, "" if absent

	// attrs holds session-level a= lines (rare in GB); kept so that Marshal
	// reproduces them.
	attrs []Attribute
}

// Origin is the o= line. The network type is always IN; the address type is
// derived from Address when marshalling.
type Origin struct {
	Username       string
	SessionID      string
	SessionVersion string
	Address        string
}

// Media is one m= section.
type Media struct {
	Kind         string      // "video" | "audio" | other
	Port         int         // 0..65535
	Proto        string      // as written: "RTP/AVP", "TCP/RTP/AVP", "RTP/AVP/TCP", ...
	Formats      []string    // payload types as written
	ConnectionIP string      // media-level c= ("" if none)
	Attributes   []Attribute // every a= line in order (rtpmap, direction, setup, connection, others)
}

// Attribute is one a= line: "a=setup:passive" -> {setup, passive};
// "a=recvonly" -> {recvonly, ""}.
type Attribute struct{ Key, Value string }

var (
	errEmpty    = errors.New("sdp: empty body")
	errTooLarge = fmt.Errorf("sdp: body larger than %d bytes", maxSize)
)

type mediaTok struct {
	kind, proto string
	port        int
	fmts        []string
	conn        string
	hasConn     bool
	attrs       []string // raw a= values
}

// Parse parses a GB/T 28181 SDP body leniently. It never panics; on failure
// the error says which line was wrong.
func Parse(b []byte) (*Session, error) {
	if len(b) > maxSize {
		return nil, errTooLarge
	}
	text := string(b)

	s := &Session{}
	var (
		lineNo        int
		seenV, seenO  bool
		seenS, seenT  bool
		seenI, seenC  bool
		seenY, seenF  bool
		name, info    string
		conn          string
		tStart, tStop uint64
		sessAttrs     []string
		media         []*mediaTok
		nonBlank      bool
	)

	for rest := text; rest != ""; {
		var ln string
		if i := strings.IndexAny(rest, "\r\n"); i >= 0 {
			j := i + 1
			if rest[i] == '\r' && j < len(rest) && rest[j] == '\n' {
				j++ // CRLF is one line break; a lone CR is one too
			}
			ln, rest = rest[:i], rest[j:]
		} else {
			ln, rest = rest, ""
		}
		lineNo++
		ln = strings.Trim(ln, " \t")
		if ln == "" {
			continue
		}
		nonBlank = true
		if len(ln) < 2 || ln[1] != '=' {
			return nil, fmt.Errorf("sdp: line %d: not an SDP line: %q", lineNo, clip(ln))
		}
		typ, val := ln[0], ln[2:]

		// GB lines pion cannot parse: anywhere, first one wins.
		switch typ {
		case 'y':
			if !seenY {
				seenY, s.SSRC = true, strings.TrimSpace(val)
			}
			continue
		case 'f':
			if !seenF {
				seenF, s.Format = true, strings.TrimSpace(val)
			}
			continue
		case 'u':
			if s.URI == "" {
				s.URI = strings.TrimSpace(val)
			}
			continue
		}

		if !seenV {
			if typ != 'v' {
				return nil, fmt.Errorf("sdp: line %d: body must start with v=, got %q", lineNo, clip(ln))
			}
			if strings.TrimSpace(val) != "0" {
				return nil, fmt.Errorf("sdp: line %d: unsupported version %q", lineNo, clip(val))
			}
			seenV = true
			continue
		}

		if typ == 'm' {
			m, err := parseMediaLine(val)
			if err != nil {
				return nil, fmt.Errorf("sdp: line %d: %w", lineNo, err)
			}
			media = append(media, m)
			continue
		}

		if len(media) > 0 { // media level
			m := media[len(media)-1]
			switch typ {
			case 'c':
				if !m.hasConn {
					addr, err := parseConn(val)
					if err != nil {
						return nil, fmt.Errorf("sdp: line %d: %w", lineNo, err)
					}
					m.conn, m.hasConn = addr, true
				}
			case 'a':
				m.attrs = append(m.attrs, val)
			}
			// i=, b=, k= and misplaced session lines are dropped.
			continue
		}

		switch typ { // session level
		case 'v':
			return nil, fmt.Errorf("sdp: line %d: second v= line", lineNo)
		case 'o':
			if !seenO {
				o, err := parseOrigin(val)
				if err != nil {
					return nil, fmt.Errorf("sdp: line %d: %w", lineNo, err)
				}
				s.Origin, seenO = o, true
			}
		case 's':
			if !seenS {
				name, seenS = val, true
			}
		case 'i':
			if !seenI {
				info, seenI = val, true
			}
		case 'c':
			if !seenC {
				addr, err := parseConn(val)
				if err != nil {
					return nil, fmt.Errorf("sdp: line %d: %w", lineNo, err)
				}
				conn, seenC = addr, true
			}
		case 't':
			if !seenT {
				f := strings.Fields(val)
				var err error
				if len(f) > 0 {
					if tStart, err = strconv.ParseUint(f[0], 10, 64); err != nil {
						return nil, fmt.Errorf("sdp: line %d: bad t= start time %q", lineNo, clip(f[0]))
					}
				}
				if len(f) > 1 {
					if tStop, err = strconv.ParseUint(f[1], 10, 64); err != nil {
						return nil, fmt.Errorf("sdp: line %d: bad t= stop time %q", lineNo, clip(f[1]))
					}
				}
				seenT = true
			}
		case 'a':
			sessAttrs = append(sessAttrs, val)
		}
		// e=, p=, b=, r=, z=, k= and unknown types are dropped.
	}

	switch {
	case !nonBlank:
		return nil, errEmpty
	case !seenV:
		return nil, errors.New("sdp: no v= line")
	case !seenO:
		return nil, errors.New("sdp: no o= line")
	case !seenS:
		return nil, errors.New("sdp: no s= line")
	}

	// Normalised body for pion, in its grammar's order.
	var nb strings.Builder
	nb.Grow(len(text) + 64)
	nb.WriteString("v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=")
	nb.WriteString(name)
	nb.WriteString("\r\n")
	if seenI {
		nb.WriteString("i=")
		nb.WriteString(info)
		nb.WriteString("\r\n")
	}
	if seenC {
		writeConn(&nb, conn)
	}
	nb.WriteString("t=")
	nb.WriteString(strconv.FormatUint(tStart, 10))
	nb.WriteByte(' ')
	nb.WriteString(strconv.FormatUint(tStop, 10))
	nb.WriteString("\r\n")
	for _, a := range sessAttrs {
		nb.WriteString("a=")
		nb.WriteString(a)
		nb.WriteString("\r\n")
	}
	for _, m := range media {
		nb.WriteString("m=video ")
		nb.WriteString(strconv.Itoa(m.port))
		nb.WriteString(" RTP/AVP")
		for _, f := range m.fmts {
			nb.WriteByte(' ')
			nb.WriteString(f)
		}
		nb.WriteString("\r\n")
		if m.hasConn {
			writeConn(&nb, m.conn)
		}
		for _, a := range m.attrs {
			nb.WriteString("a=")
			nb.WriteString(a)
			nb.WriteString("\r\n")
		}
	}

	var pd pion.SessionDescription
	if err := pd.UnmarshalString(nb.String()); err != nil {
		return nil, fmt.Errorf("sdp: normalised body rejected: %w", err)
	}
	if len(pd.MediaDescriptions) != len(media) || len(pd.TimeDescriptions) == 0 {
		return nil, errors.New("sdp: normalised body lost lines")
	}

	s.Name = string(pd.SessionName)
	if pd.SessionInformation != nil {
		s.Info = string(*pd.SessionInformation)
	}
	s.ConnectionIP = connAddr(pd.ConnectionInformation)
	s.StartTime = pd.TimeDescriptions[0].Timing.StartTime
	s.StopTime = pd.TimeDescriptions[0].Timing.StopTime
	s.attrs = convAttrs(pd.Attributes)
	if len(media) > 0 {
		s.Media = make([]Media, len(media))
		for i, pm := range pd.MediaDescriptions {
			m := &s.Media[i]
			m.Kind = media[i].kind
			m.Proto = media[i].proto
			m.Port = pm.MediaName.Port.Value
			if len(pm.MediaName.Formats) > 0 {
				m.Formats = pm.MediaName.Formats
			}
			m.ConnectionIP = connAddr(pm.ConnectionInformation)
			m.Attributes = convAttrs(pm.Attributes)
		}
	}
	return s, nil
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

func parseMediaLine(val string) (*mediaTok, error) {
	f := strings.Fields(val)
	switch len(f) {
	case 0:
		return nil, errors.New("empty m= line")
	case 1:
		return nil, fmt.Errorf("m= line without port: %q", clip(val))
	case 2:
		return nil, fmt.Errorf("m= line without transport protocol: %q", clip(val))
	}
	p := f[1]
	if i := strings.IndexByte(p, '/'); i >= 0 { // "<port>/<number of ports>"
		p = p[:i]
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("m= line with bad port %q", clip(f[1]))
	}
	m := &mediaTok{kind: f[0], port: port, proto: f[2]}
	if len(f) > 3 {
		m.fmts = f[3:]
	}
	return m, nil
}

func parseOrigin(val string) (Origin, error) {
	f := strings.Fields(val)
	if len(f) == 0 {
		return Origin{}, errors.New("empty o= line")
	}
	o := Origin{Username: f[0], SessionID: "0", SessionVersion: "0", Address: "0.0.0.0"}
	if len(f) > 1 {
		o.SessionID = f[1]
	}
	if len(f) > 2 {
		o.SessionVersion = f[2]
	}
	switch {
	case len(f) > 5:
		o.Address = f[5]
	case len(f) > 4 && strings.EqualFold(f[4], "IP6"):
		o.Address = "::"
	}
	return o, nil
}

// parseConn returns the address of "IN IP4 <addr>"; a c= line without an
// address yields "".
func parseConn(val string) (string, error) {
	f := strings.Fields(val)
	if len(f) < 2 {
		return "", fmt.Errorf("malformed c= line %q", clip(val))
	}
	if !strings.EqualFold(f[0], "IN") {
		return "", fmt.Errorf("c= line with unsupported network type %q", clip(f[0]))
	}
	if len(f) < 3 {
		return "", nil
	}
	return f[2], nil
}

func writeConn(b *strings.Builder, addr string) {
	if addr == "" {
		b.WriteString("c=IN IP4\r\n")
		return
	}
	b.WriteString("c=IN ")
	b.WriteString(addrType(addr))
	b.WriteByte(' ')
	b.WriteString(addr)
	b.WriteString("\r\n")
}

func addrType(addr string) string {
	if strings.IndexByte(addr, ':') >= 0 {
		return "IP6"
	}
	return "IP4"
}

func connAddr(c *pion.ConnectionInformation) string {
	if c == nil || c.Address == nil {
		return ""
	}
	return c.Address.Address
}

func convAttrs(in []pion.Attribute) []Attribute {
	if len(in) == 0 {
		return nil
	}
	out := make([]Attribute, len(in))
	for i, a := range in {
		out[i] = normAttr(a)
	}
	return out
}

// normAttr splits at the first ':' (pion keeps "a=:x" whole as the key) and
// trims spaces around the key, so that what Marshal writes parses back the
// same ("a=x :" would otherwise keep a trailing space that the line trim
// removes on the next parse).
func normAttr(a pion.Attribute) Attribute {
	key, val := a.Key, a.Value
	if val == "" {
		if i := strings.IndexByte(key, ':'); i >= 0 {
			key, val = key[:i], key[i+1:]
		}
	}
	return Attribute{Key: strings.TrimSpace(key), Value: val}
}

// Marshal writes the session with CRLF line endings: v o s i u c t a, then
// for each media m c a, then y= and f= last. Empty Origin fields are written
// as "-", "0", "0" and "0.0.0.0".
func (s *Session) Marshal() []byte {
	b := make([]byte, 0, s.marshalSize())
	b = append(b, "v=0\r\no="...)
	b = append(b, orDefault(s.Origin.Username, "-")...)
	b = append(b, ' ')
	b = append(b, orDefault(s.Origin.SessionID, "0")...)
	b = append(b, ' ')
	b = append(b, orDefault(s.Origin.SessionVersion, "0")...)
	addr := orDefault(s.Origin.Address, "0.0.0.0")
	b = append(b, " IN "...)
	b = append(b, addrType(addr)...)
	b = append(b, ' ')
	b = append(b, addr...)
	b = append(b, "\r\ns="...)
	b = append(b, s.Name...)
	b = append(b, "\r\n"...)
	if s.Info != "" {
		b = appendLine(b, "i=", s.Info)
	}
	if s.URI != "" {
		b = appendLine(b, "u=", s.URI)
	}
	if s.ConnectionIP != "" {
		b = appendConn(b, s.ConnectionIP)
	}
	b = append(b, "t="...)
	b = strconv.AppendUint(b, s.StartTime, 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, s.StopTime, 10)
	b = append(b, "\r\n"...)
	b = appendAttrs(b, s.attrs)
	for i := range s.Media {
		m := &s.Media[i]
		b = append(b, "m="...)
		b = append(b, m.Kind...)
		b = append(b, ' ')
		b = strconv.AppendInt(b, int64(m.Port), 10)
		b = append(b, ' ')
		b = append(b, m.Proto...)
		for _, f := range m.Formats {
			b = append(b, ' ')
			b = append(b, f...)
		}
		b = append(b, "\r\n"...)
		if m.ConnectionIP != "" {
			b = appendConn(b, m.ConnectionIP)
		}
		b = appendAttrs(b, m.Attributes)
	}
	if s.SSRC != "" {
		b = appendLine(b, "y=", s.SSRC)
	}
	if s.Format != "" {
		b = appendLine(b, "f=", s.Format)
	}
	return b
}

func (s *Session) marshalSize() int {
	n := 128 + len(s.Origin.Username) + len(s.Origin.SessionID) + len(s.Origin.SessionVersion) +
		len(s.Origin.Address) + len(s.Name) + len(s.Info) + len(s.URI) + len(s.ConnectionIP) +
		len(s.SSRC) + len(s.Format)
	for _, a := range s.attrs {
		n += 5 + len(a.Key) + len(a.Value)
	}
	for i := range s.Media {
		m := &s.Media[i]
		n += 32 + len(m.Kind) + len(m.Proto) + len(m.ConnectionIP)
		for _, f := range m.Formats {
			n += 1 + len(f)
		}
		for _, a := range m.Attributes {
			n += 5 + len(a.Key) + len(a.Value)
		}
	}
	return n
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}

func appendLine(b []byte, key, val string) []byte {
	b = append(b, key...)
	b = append(b, val...)
	return append(b, "\r\n"...)
}

func appendConn(b []byte, addr string) []byte {
	b = append(b, "c=IN "...)
	b = append(b, addrType(addr)...)
	b = append(b, ' ')
	b = append(b, addr...)
	return append(b, "\r\n"...)
}

func appendAttrs(b []byte, attrs []Attribute) []byte {
	for _, a := range attrs {
		b = append(b, "a="...)
		b = append(b, a.Key...)
		if a.Value != "" {
			b = append(b, ':')
			b = append(b, a.Value...)
		}
		b = append(b, "\r\n"...)
	}
	return b
}

// Addr returns the media's transport address: the media-level c= address,
// else the session-level one, with m.Port. A multicast "/ttl" suffix is
// ignored.
func (s *Session) Addr(m *Media) (netip.AddrPort, error) {
	if m == nil {
		return netip.AddrPort{}, errors.New("sdp: nil media")
	}
	a := m.ConnectionIP
	if a == "" {
		a = s.ConnectionIP
	}
	if a == "" {
		return netip.AddrPort{}, errors.New("sdp: no c= address for media")
	}
	if i := strings.IndexByte(a, '/'); i >= 0 {
		a = a[:i]
	}
	ip, err := netip.ParseAddr(a)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("sdp: c= address %q is not an IP address", clip(a))
	}
	if m.Port < 0 || m.Port > 65535 {
		return netip.AddrPort{}, fmt.Errorf("sdp: port %d out of range", m.Port)
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(m.Port)), nil
}

// FirstMedia returns the first media of the given kind (case-insensitive),
// or nil. The pointer refers into s.Media, so changes stick.
func (s *Session) FirstMedia(kind string) *Media {
	for i := range s.Media {
		if strings.EqualFold(s.Media[i].Kind, kind) {
			return &s.Media[i]
		}
	}
	return nil
}

// TCP reports whether the transport protocol mentions TCP (any case).
func (m *Media) TCP() bool {
	for i := 0; i+3 <= len(m.Proto); i++ {
		if strings.EqualFold(m.Proto[i:i+3], "TCP") {
			return true
		}
	}
	return false
}

// Setup returns the lower-cased value of a=setup ("active", "passive",
// "actpass"), or "".
func (m *Media) Setup() string {
	v, _ := m.Attr("setup")
	return strings.ToLower(strings.TrimSpace(v))
}

// Direction returns sendonly, recvonly, sendrecv or inactive from the first
// direction attribute, or "" if there is none.
func (m *Media) Direction() string {
	for _, a := range m.Attributes {
		k := strings.TrimSpace(a.Key)
		for _, d := range [...]string{"sendonly", "recvonly", "sendrecv", "inactive"} {
			if strings.EqualFold(k, d) {
				return d
			}
		}
	}
	return ""
}

// Attr returns the value of the first attribute with the key (compared
// case-insensitively).
func (m *Media) Attr(key string) (string, bool) {
	for _, a := range m.Attributes {
		if strings.EqualFold(a.Key, key) {
			return a.Value, true
		}
	}
	return "", false
}

// SetAttr replaces the first attribute with the key, or appends one.
func (m *Media) SetAttr(key, value string) {
	for i := range m.Attributes {
		if strings.EqualFold(m.Attributes[i].Key, key) {
			m.Attributes[i] = Attribute{Key: key, Value: value}
			return
		}
	}
	m.Attributes = append(m.Attributes, Attribute{Key: key, Value: value})
}

// DelAttr removes every attribute with the key.
func (m *Media) DelAttr(key string) {
	out := m.Attributes[:0]
	for _, a := range m.Attributes {
		if !strings.EqualFold(a.Key, key) {
			out = append(out, a)
		}
	}
	clear(m.Attributes[len(out):])
	if len(out) == 0 {
		out = nil
	}
	m.Attributes = out
}
