package sim

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// SDP is what the simulators read from a GB/T 28181 session description (RFC 4566 with the GB
// additions y= for the SSRC and f= for the media format). Only the first m= section is read.
type SDP struct {
	Raw       string
	Origin    string // o= username: the sender's ID
	OriginIP  string // o= address
	Session   string // s=: Play, Playback, Download or Talk
	URI       string // u=, e.g. "34020000001320000001:0"
	IP        string // c= address (session or media level)
	Media     string // m= media: video or audio
	Port      int    // m= port
	Proto     string // m= proto: RTP/AVP (UDP) or TCP/RTP/AVP
	Formats   []string
	RTPMap    map[string]string // payload type -> encoding, e.g. "96" -> "PS/90000"
	Direction string            // sendonly, recvonly, sendrecv or inactive
	// Setup is a=setup (RFC 4145): active, passive or actpass; empty for UDP.
	Setup      string
	Connection string // a=connection: new or existing
	SSRC       string // y=: 10 decimal digits
	Format     string // f=
	// Start and Stop are t= (seconds since 1970 in GB/T 28181; 0 0 for live video).
	Start, Stop int64
	// DownloadSpeed is a=downloadspeed of a Download offer (0 when absent); FileSize a=filesize of
	// its answer.
	DownloadSpeed int
	FileSize      int64
}

// TCP reports whether the media go over TCP (RFC 4571).
func (s SDP) TCP() bool { return strings.EqualFold(s.Proto, "TCP/RTP/AVP") }

// Addr returns the media address c=:m= as ip:port.
func (s SDP) Addr() string { return net.JoinHostPort(s.IP, strconv.Itoa(s.Port)) }

// ParseSDP reads a GB/T 28181 SDP leniently: unknown lines are ignored, but c=, m= and, for TCP,
// a=setup must be present and well formed.
func ParseSDP(body []byte) (SDP, error) {
	s := SDP{Raw: string(body), RTPMap: make(map[string]string)}
	inMedia := false
	for _, line := range strings.Split(string(body), "\n") {
		line = strings.TrimRight(line, "\r ")
		if len(line) < 2 || line[1] != '=' {
			continue
		}
		v := line[2:]
		switch line[0] {
		case 'o':
			f := strings.Fields(v)
			if len(f) >= 6 {
				s.Origin, s.OriginIP = f[0], f[5]
			}
		case 's':
			s.Session = strings.TrimSpace(v)
		case 'u':
			s.URI = strings.TrimSpace(v)
		case 't':
			if f := strings.Fields(v); len(f) == 2 {
				s.Start, _ = strconv.ParseInt(f[0], 10, 64)
				s.Stop, _ = strconv.ParseInt(f[1], 10, 64)
			}
		case 'c':
			f := strings.Fields(v)
			if len(f) < 3 {
				return s, fmt.Errorf("sdp: bad c= line %q", line)
			}
			if inMedia || s.IP == "" {
				s.IP = strings.SplitN(f[2], "/", 2)[0]
			}
		case 'm':
			if inMedia {
				continue // a second media section: not used by GB live video
			}
			f := strings.Fields(v)
			if len(f) < 3 {
				return s, fmt.Errorf("sdp: bad m= line %q", line)
			}
			port, err := strconv.Atoi(strings.SplitN(f[1], "/", 2)[0])
			if err != nil || port < 0 || port > 65535 {
				return s, fmt.Errorf("sdp: bad port in m= line %q", line)
			}
			s.Media, s.Port, s.Proto, s.Formats = f[0], port, f[2], f[3:]
			inMedia = true
		case 'a':
			name, val, _ := strings.Cut(v, ":")
			switch name {
			case "sendonly", "recvonly", "sendrecv", "inactive":
				s.Direction = name
			case "setup":
				s.Setup = strings.ToLower(strings.TrimSpace(val))
			case "connection":
				s.Connection = strings.TrimSpace(val)
			case "downloadspeed":
				s.DownloadSpeed, _ = strconv.Atoi(strings.TrimSpace(val))
			case "filesize":
				s.FileSize, _ = strconv.ParseInt(strings.TrimSpace(val), 10, 64)
			case "rtpmap":
				pt, enc, _ := strings.Cut(val, " ")
				s.RTPMap[pt] = strings.TrimSpace(enc)
			}
		case 'y':
			s.SSRC = strings.TrimSpace(v)
		case 'f':
			s.Format = strings.TrimSpace(v)
		}
	}
	switch {
	case s.Media == "":
		return s, errors.New("sdp: no m= line")
	case s.IP == "" || net.ParseIP(s.IP) == nil:
		return s, fmt.Errorf("sdp: no usable c= address (%q)", s.IP)
	case s.TCP() && s.Setup != "active" && s.Setup != "passive":
		return s, fmt.Errorf("sdp: TCP media with a=setup %q: want active or passive", s.Setup)
	case !s.TCP() && !strings.EqualFold(s.Proto, "RTP/AVP"):
		return s, fmt.Errorf("sdp: media proto %q: want RTP/AVP or TCP/RTP/AVP", s.Proto)
	}
	return s, nil
}

// parseSSRC reads a y= value: decimal digits, truncated to 32 bits as GB peers do for values
// above 4294967295.
func parseSSRC(y string) (uint32, error) {
	n, err := strconv.ParseUint(y, 10, 64)
	if err != nil || len(y) == 0 || len(y) > 10 {
		return 0, fmt.Errorf("SSRC %q: want up to 10 decimal digits", y)
	}
	return uint32(n), nil
}

// sdpLines joins lines with CRLF, the SDP line ending.
func sdpLines(lines ...string) []byte {
	return []byte(strings.Join(lines, "\r\n") + "\r\n")
}

// transportOf names the media transport as seen from the side that answers an offer: "udp", or
// "tcp-active" when the offerer is passive (the answerer dials), "tcp-passive" when the offerer is
// active (the answerer listens).
func transportOf(offer SDP) string {
	switch {
	case !offer.TCP():
		return "udp"
	case offer.Setup == "passive":
		return "tcp-active"
	default:
		return "tcp-passive"
	}
}
