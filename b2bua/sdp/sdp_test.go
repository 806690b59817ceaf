package sdp

import (
	"bytes"
	"net/netip"
	"reflect"
	"regexp"
	"strings"
	"testing"

	pion "github.com/pion/sdp/v3"
)

// Samples from the GB/T 28181 notes (shared/seeds/000_db30924816719358.txt),
// written as in the document (LF endings, "# ..." annotations, trailing
// spaces); stripAnnotations removes the annotations.
const (
	seedOffer = `v=0
o=xxx 0 0 IN IP4 192.168.0.107
s=Play
c=IN IP4 192.168.0.107
t=0 0
m=video 36000 RTP/AVP 96 98 97   # 36000为SIP服务数据接收端口
a=recvonly
a=rtpmap:96 PS/90000
a=rtpmap:98 H264/90000
a=rtpmap:97 MPEG4/90000
y=0100000001
`
	seedAnswerUDP = `v=0
o=34020000001310000002 0 0 IN IP4 192.168.0.111
s=Play
i=VCam Live Video
c=IN IP4 192.168.0.111
t=0 0
m=video 9712 RTP/AVP 96     # 9712为设备端数据发送端口
a=sendonly
a=rtpmap:96 PS/90000
a=streamprofile:0
y=0100000001
f=v/0/0/0/0/0a/0/0/0
`
	seedOfferTCPPassive = `v=0
o=xxx 0 0 IN IP4 192.168.0.107
s=Play
c=IN IP4 192.168.0.107
t=0 0
m=video 36000 TCP/RTP/AVP 96 98 97 
a=recvonly
a=rtpmap:96 PS/90000
a=rtpmap:98 H264/90000
a=rtpmap:97 MPEG4/90000
a=setup:passive
y=0100000001

`
	seedAnswerTCPPassive = `v=0
o=xxx 0 0 IN IP4 192.168.0.111
s=Play
i=VCam Live Video
c=IN IP4 192.168.0.111
t=0 0
m=video 9724 TCP/RTP/AVP 96    # 9724为设备端数据发送端口
a=sendonly
a=rtpmap:96 PS/90000           # 流数据为PS封装
a=streamprofile:0
a=setup:active                 # 设备为主动发送方
a=connection:new
y=0100000001
f=v/0/0/0/0/0a/0/0/0
`
	seedOfferTCPActive = `v=0
o=xxx 0 0 IN IP4 192.168.0.107
s=Play
c=IN IP4 192.168.0.107
t=0 0
m=video 38000 TCP/RTP/AVP 96 98 97 
a=recvonly
a=rtpmap:96 PS/90000
a=rtpmap:98 H264/90000
a=rtpmap:97 MPEG4/90000
a=setup:active
y=0100000001
`
	seedAnswerTCPActive = `v=0
o=xxx 0 0 IN IP4 192.168.0.111
s=Play
i=VCam Live Video
c=IN IP4 192.168.0.111
t=0 0
m=video 9704 TCP/RTP/AVP 96    # 9704为设备端监听
a=sendonly
a=rtpmap:96 PS/90000           # 流数据为PS封装
a=streamprofile:0
a=setup:passive                # 设备为被动接收方
a=connection:new
y=0100000001
f=v/0/0/0/0/0a/0/0/0
`
	seedMediaServerAnswer = `v=0
o=xxx 2243 2243 IN IP4 192.168.0.111
s=Play
c=IN IP4 192.168.0.111
t=0 0
m=video 15060 RTP/AVP 96
a=sendonly
a=rtpmap:96 PS/90000
a=filesize:0
y=0100000001
`
	seedDownload = `v=0
o=xxx 0 0 IN IP4 192.168.0.107
s=Download
c=IN IP4 192.168.0.107
t=1697955233 1697958114      # 下载的文件开始时间和结束时间
m=video 36000 RTP/AVP 96 98 97
a=recvonly
a=rtpmap:96 PS/90000
a=rtpmap:98 H264/90000
a=rtpmap:97 MPEG4/90000
a=downloadspeed:8            # 8倍速下载
y=001
`
)

var annotation = regexp.MustCompile(`(?m)[ \t]+#.*$`)

func stripAnnotations(s string) string { return annotation.ReplaceAllString(s, "") }

var seeds = []struct{ name, sdp string }{
	{"offer", seedOffer},
	{"answer-udp", seedAnswerUDP},
	{"offer-tcp-passive", seedOfferTCPPassive},
	{"answer-tcp-passive", seedAnswerTCPPassive},
	{"offer-tcp-active", seedOfferTCPActive},
	{"answer-tcp-active", seedAnswerTCPActive},
	{"media-server-answer", seedMediaServerAnswer},
	{"download", seedDownload},
}

var offerRtpmaps = []Attribute{
	{"rtpmap", "96 PS/90000"}, {"rtpmap", "98 H264/90000"}, {"rtpmap", "97 MPEG4/90000"},
}

func attrs(lists ...[]Attribute) []Attribute {
	var out []Attribute
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

func mustParse(t testing.TB, s string) *Session {
	t.Helper()
	sess, err := Parse([]byte(s))
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, s)
	}
	return sess
}

func TestSeedSamples(t *testing.T) {
	offerOrigin := Origin{"xxx", "0", "0", "192.168.0.107"}
	answerMedia := func(port int, proto string, extra ...Attribute) Media {
		return Media{Kind: "video", Port: port, Proto: proto, Formats: []string{"96"},
			Attributes: attrs([]Attribute{{"sendonly", ""}, {"rtpmap", "96 PS/90000"}, {"streamprofile", "0"}}, extra)}
	}
	offerMedia := func(port int, proto string, extra ...Attribute) Media {
		return Media{Kind: "video", Port: port, Proto: proto, Formats: []string{"96", "98", "97"},
			Attributes: attrs([]Attribute{{"recvonly", ""}}, offerRtpmaps, extra)}
	}
	want := map[string]*Session{
		"offer": {
			Origin: offerOrigin, Name: "Play", ConnectionIP: "192.168.0.107",
			Media: []Media{offerMedia(36000, "RTP/AVP")}, SSRC: "0100000001",
		},
		"answer-udp": {
			Origin: Origin{"34020000001310000002", "0", "0", "192.168.0.111"}, Name: "Play",
			Info: "VCam Live Video", ConnectionIP: "192.168.0.111",
			Media: []Media{answerMedia(9712, "RTP/AVP")}, SSRC: "0100000001", Format: "v/0/0/0/0/0a/0/0/0",
		},
		"offer-tcp-passive": {
			Origin: offerOrigin, Name: "Play", ConnectionIP: "192.168.0.107",
			Media: []Media{offerMedia(36000, "TCP/RTP/AVP", Attribute{"setup", "passive"})}, SSRC: "0100000001",
		},
		"answer-tcp-passive": {
			Origin: Origin{"xxx", "0", "0", "192.168.0.111"}, Name: "Play",
			Info: "VCam Live Video", ConnectionIP: "192.168.0.111",
			Media: []Media{answerMedia(9724, "TCP/RTP/AVP", Attribute{"setup", "active"}, Attribute{"connection", "new"})},
			SSRC:  "0100000001", Format: "v/0/0/0/0/0a/0/0/0",
		},
		"offer-tcp-active": {
			Origin: offerOrigin, Name: "Play", ConnectionIP: "192.168.0.107",
			Media: []Media{offerMedia(38000, "TCP/RTP/AVP", Attribute{"setup", "active"})}, SSRC: "0100000001",
		},
		"answer-tcp-active": {
			Origin: Origin{"xxx", "0", "0", "192.168.0.111"}, Name: "Play",
			Info: "VCam Live Video", ConnectionIP: "192.168.0.111",
			Media: []Media{answerMedia(9704, "TCP/RTP/AVP", Attribute{"setup", "passive"}, Attribute{"connection", "new"})},
			SSRC:  "0100000001", Format: "v/0/0/0/0/0a/0/0/0",
		},
		"media-server-answer": {
			Origin: Origin{"xxx", "2243", "2243", "192.168.0.111"}, Name: "Play", ConnectionIP: "192.168.0.111",
			Media: []Media{{Kind: "video", Port: 15060, Proto: "RTP/AVP", Formats: []string{"96"},
				Attributes: []Attribute{{"sendonly", ""}, {"rtpmap", "96 PS/90000"}, {"filesize", "0"}}}},
			SSRC: "0100000001",
		},
		"download": {
			Origin: offerOrigin, Name: "Download", ConnectionIP: "192.168.0.107",
			StartTime: 1697955233, StopTime: 1697958114,
			Media: []Media{offerMedia(36000, "RTP/AVP", Attribute{"downloadspeed", "8"})}, SSRC: "001",
		},
	}
	for _, sd := range seeds {
		t.Run(sd.name, func(t *testing.T) {
			got := mustParse(t, stripAnnotations(sd.sdp))
			if w := want[sd.name]; !reflect.DeepEqual(got, w) {
				t.Fatalf("got  %+v\nwant %+v", got, w)
			}
			again := mustParse(t, string(got.Marshal()))
			if !reflect.DeepEqual(got, again) {
				t.Fatalf("round trip differs:\n%+v\n%+v", got, again)
			}
		})
	}
}

func TestSeedAccessors(t *testing.T) {
	cases := []struct {
		sdp             string
		tcp             bool
		setup, dir      string
		addr            string
		connectionIsNew bool
	}{
		{seedOffer, false, "", "recvonly", "192.168.0.107:36000", false},
		{seedAnswerUDP, false, "", "sendonly", "192.168.0.111:9712", false},
		{seedOfferTCPPassive, true, "passive", "recvonly", "192.168.0.107:36000", false},
		{seedAnswerTCPPassive, true, "active", "sendonly", "192.168.0.111:9724", true},
		{seedOfferTCPActive, true, "active", "recvonly", "192.168.0.107:38000", false},
		{seedAnswerTCPActive, true, "passive", "sendonly", "192.168.0.111:9704", true},
	}
	for _, c := range cases {
		s := mustParse(t, stripAnnotations(c.sdp))
		m := s.FirstMedia("video")
		if m == nil {
			t.Fatal("no video media")
		}
		if s.FirstMedia("audio") != nil {
			t.Error("unexpected audio media")
		}
		if m.TCP() != c.tcp || m.Setup() != c.setup || m.Direction() != c.dir {
			t.Errorf("TCP=%v Setup=%q Direction=%q, want %v %q %q", m.TCP(), m.Setup(), m.Direction(), c.tcp, c.setup, c.dir)
		}
		ap, err := s.Addr(m)
		if err != nil || ap != netip.MustParseAddrPort(c.addr) {
			t.Errorf("Addr = %v, %v; want %s", ap, err, c.addr)
		}
		v, ok := m.Attr("connection")
		if ok != c.connectionIsNew || (ok && v != "new") {
			t.Errorf("connection attr = %q %v", v, ok)
		}
	}
}

// canonicalTCP is written in Marshal's order and must survive byte-identical.
const canonicalTCP = "v=0\r\n" +
	"o=34020000002000000001 0 0 IN IP4 10.0.0.5\r\n" +
	"s=Playback\r\n" +
	"u=34020000001320000001:0\r\n" +
	"c=IN IP4 10.0.0.5\r\n" +
	"t=1697955233 1697958114\r\n" +
	"m=video 30000 TCP/RTP/AVP 96 98 97\r\n" +
	"a=recvonly\r\n" +
	"a=rtpmap:96 PS/90000\r\n" +
	"a=rtpmap:98 H264/90000\r\n" +
	"a=rtpmap:97 MPEG4/90000\r\n" +
	"a=setup:passive\r\n" +
	"a=connection:new\r\n" +
	"y=0100000001\r\n" +
	"f=v/2/4/25/1/4000a/1/8/1\r\n"

func TestCanonicalTCPByteIdentical(t *testing.T) {
	s := mustParse(t, canonicalTCP)
	if got := string(s.Marshal()); got != canonicalTCP {
		t.Fatalf("not byte-identical:\n%q\n%q", got, canonicalTCP)
	}
	if s.URI != "34020000001320000001:0" || s.SSRC != "0100000001" || s.Format != "v/2/4/25/1/4000a/1/8/1" {
		t.Errorf("GB lines: %q %q %q", s.URI, s.SSRC, s.Format)
	}
	// Cross-check against pion: without the GB lines, pion's own
	// Unmarshal+Marshal gives the same bytes as ours.
	var plain []string
	for _, l := range strings.SplitAfter(canonicalTCP, "\r\n") {
		if !strings.HasPrefix(l, "u=") && !strings.HasPrefix(l, "y=") && !strings.HasPrefix(l, "f=") {
			plain = append(plain, l)
		}
	}
	var pd pion.SessionDescription
	if err := pd.UnmarshalString(strings.Join(plain, "")); err != nil {
		t.Fatal(err)
	}
	pb, err := pd.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	s.URI, s.SSRC, s.Format = "", "", ""
	if !bytes.Equal(pb, s.Marshal()) {
		t.Fatalf("pion and Marshal differ:\n%q\n%q", pb, s.Marshal())
	}
}

func TestMarshalLayout(t *testing.T) {
	s := &Session{
		Origin: Origin{Username: "34020000002000000001", Address: "2001:db8::1"},
		Name:   "Talk", URI: "channel:0", Info: "voice",
		Media: []Media{{Kind: "audio", Port: 0, Proto: "RTP/AVP", Formats: []string{"8"},
			ConnectionIP: "2001:db8::1", Attributes: []Attribute{{"sendrecv", ""}}}},
		SSRC: "0100000002", Format: "v/////a/1/8/1",
	}
	want := "v=0\r\no=34020000002000000001 0 0 IN IP6 2001:db8::1\r\ns=Talk\r\ni=voice\r\nu=channel:0\r\n" +
		"t=0 0\r\nm=audio 0 RTP/AVP 8\r\nc=IN IP6 2001:db8::1\r\na=sendrecv\r\ny=0100000002\r\nf=v/////a/1/8/1\r\n"
	if got := string(s.Marshal()); got != want {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
	back := mustParse(t, want)
	s.Origin.SessionID, s.Origin.SessionVersion = "0", "0"
	if !reflect.DeepEqual(s, back) {
		t.Fatalf("%+v\n%+v", s, back)
	}
}

func TestLenient(t *testing.T) {
	base := stripAnnotations(seedAnswerTCPPassive)
	want := mustParse(t, base)
	same := map[string]string{
		"crlf":            strings.ReplaceAll(base, "\n", "\r\n"),
		"mixed":           strings.Replace(strings.ReplaceAll(base, "a=", "\r\na="), "s=Play\n", "s=Play\r\n", 1),
		"lone-cr":         strings.ReplaceAll(base, "\n", "\r"),
		"trailing-spaces": strings.ReplaceAll(base, "\n", " \t \n"),
		"blank-lines":     "\n\n" + strings.ReplaceAll(base, "\n", "\n\n") + "\n \n",
		"leading-indent":  strings.ReplaceAll(base, "\n", "\n  "),
		"y-first":         "y=0100000001\n" + strings.Replace(base, "y=0100000001\n", "", 1),
		"y-before-m": strings.Replace(strings.Replace(base, "y=0100000001\n", "", 1),
			"m=video", "y=0100000001\nm=video", 1),
		"y-between-a": strings.Replace(strings.Replace(base, "y=0100000001\n", "", 1),
			"a=streamprofile", "y=0100000001\na=streamprofile", 1),
		"f-before-y": strings.Replace(strings.Replace(base, "f=v/0/0/0/0/0a/0/0/0\n", "", 1),
			"y=", "f=v/0/0/0/0/0a/0/0/0\ny=", 1),
		"y-spaces":       strings.Replace(base, "y=0100000001", "y=  0100000001  ", 1),
		"f-spaces":       strings.Replace(base, "f=v/", "f= v/", 1),
		"reordered-sess": strings.Replace(base, "s=Play\ni=VCam Live Video\nc=IN IP4 192.168.0.111\nt=0 0\n", "t=0 0\nc=IN IP4 192.168.0.111\ns=Play\ni=VCam Live Video\n", 1),
		"dropped-lines": strings.Replace(strings.Replace(base, "t=0 0\n", "e=x@y\nb=AS:2048\nt=0 0\nr=7d 1h 0 25h\nz=0 0\nk=clear:x\n", 1),
			"a=sendonly", "i=cam\nb=XX:1\nk=prompt\nx=unknown\na=sendonly", 1),
		"lowercase-c":  strings.ReplaceAll(base, "c=IN IP4", "c=in ip4"),
		"port-range":   strings.Replace(base, "m=video 9724 ", "m=video 9724/2 ", 1),
		"extra-fmt-ws": strings.Replace(base, "TCP/RTP/AVP 96", "TCP/RTP/AVP \t 96  ", 1),
	}
	for name, in := range same {
		t.Run(name, func(t *testing.T) {
			if in == base {
				t.Fatal("test input unchanged")
			}
			got := mustParse(t, in)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got  %+v\nwant %+v", got, want)
			}
		})
	}

	t.Run("missing-t", func(t *testing.T) {
		s := mustParse(t, strings.Replace(base, "t=0 0\n", "", 1))
		if s.StartTime != 0 || s.StopTime != 0 {
			t.Fatal(s.StartTime, s.StopTime)
		}
		if !bytes.Contains(s.Marshal(), []byte("\r\nt=0 0\r\n")) {
			t.Fatal("Marshal lacks t=")
		}
	})
	t.Run("session-attr-kept", func(t *testing.T) {
		in := strings.Replace(base, "t=0 0\n", "t=0 0\na=tool:x\n", 1)
		s := mustParse(t, in)
		out := string(s.Marshal())
		if !strings.Contains(out, "t=0 0\r\na=tool:x\r\nm=video") {
			t.Fatalf("session attribute lost:\n%s", out)
		}
		if len(s.Media[0].Attributes) != len(want.Media[0].Attributes) {
			t.Fatal("session attribute moved into media")
		}
	})
	t.Run("no-rtpmap-and-x", func(t *testing.T) {
		in := "v=0\no=34020000001320000001 0 0 IN IP4 10.1.1.1\ns=Talk\nc=IN IP4 x\nt=0 0\n" +
			"m=audio 8000 RTP/AVP 8 40\nc=IN IP4 x\na=sendrecv\ny=0100000001\nf=v/////a/1/8/1\n"
		s := mustParse(t, in)
		m := s.FirstMedia("audio")
		if m == nil || !reflect.DeepEqual(m.Formats, []string{"8", "40"}) || m.ConnectionIP != "x" || s.ConnectionIP != "x" {
			t.Fatalf("%+v", s)
		}
		if m.Direction() != "sendrecv" {
			t.Fatal(m.Direction())
		}
		if _, err := s.Addr(m); err == nil || !strings.Contains(err.Error(), "not an IP") {
			t.Fatalf("Addr of x: %v", err)
		}
	})
	t.Run("protos", func(t *testing.T) {
		for proto, tcp := range map[string]bool{"RTP/AVP": false, "rtp/avp": false, "TCP/RTP/AVP": true,
			"tcp/rtp/avp": true, "RTP/AVP/TCP": true, "Rtp/Avp/Tcp": true, "UDP/RTP/AVP": false} {
			s := mustParse(t, "v=0\no=a 0 0 IN IP4 1.2.3.4\ns=Play\nm=video 0 "+proto+" 96\n")
			if m := s.Media[0]; m.Proto != proto || m.TCP() != tcp || m.Port != 0 {
				t.Errorf("%s: %+v TCP=%v", proto, m, m.TCP())
			}
			if _, err := s.Addr(&s.Media[0]); err == nil {
				t.Errorf("%s: Addr without c= succeeded", proto)
			}
		}
	})
	t.Run("other-kind-no-formats", func(t *testing.T) {
		s := mustParse(t, "v=0\no=a 0 0 IN IP4 1.2.3.4\ns=X\nm=image 9 udptl\nm=video 1 RTP/AVP\n")
		if len(s.Media) != 2 || s.Media[0].Kind != "image" || s.Media[0].Proto != "udptl" || s.Media[0].Formats != nil {
			t.Fatalf("%+v", s.Media)
		}
		if got := string(s.Marshal()); !strings.Contains(got, "m=image 9 udptl\r\nm=video 1 RTP/AVP\r\n") {
			t.Fatalf("%q", got)
		}
	})
	t.Run("playback-u", func(t *testing.T) {
		for _, u := range []string{"34020000001320000001:0", "channel:0", "34020000001320000001:3"} {
			s := mustParse(t, "v=0\no=a 0 0 IN IP4 1.2.3.4\ns=Playback\nu="+u+"\nc=IN IP4 1.2.3.4\nt=1 2\nm=video 5 RTP/AVP 96\ny=1100000001\n")
			if s.URI != u || s.StartTime != 1 || s.StopTime != 2 || s.SSRC != "1100000001" {
				t.Fatalf("%+v", s)
			}
			if !bytes.Contains(s.Marshal(), []byte("s=Playback\r\nu="+u+"\r\nc=")) {
				t.Fatalf("%q", s.Marshal())
			}
		}
	})
	t.Run("odd-attributes", func(t *testing.T) {
		s := mustParse(t, "v=0\no=a\ns=Play\nm=video 1 RTP/AVP 96\na= recvonly\na=setup :passive\na=:x\na=x :\na=k:v:w\n")
		want := []Attribute{{"recvonly", ""}, {"setup", "passive"}, {"", "x"}, {"x", ""}, {"k", "v:w"}}
		if m := s.Media[0]; !reflect.DeepEqual(m.Attributes, want) || m.Direction() != "recvonly" || m.Setup() != "passive" {
			t.Fatalf("%+v", m.Attributes)
		}
	})
	t.Run("short-origin", func(t *testing.T) {
		s := mustParse(t, "v=0\no=dev\ns=Play\n")
		if s.Origin != (Origin{"dev", "0", "0", "0.0.0.0"}) {
			t.Fatalf("%+v", s.Origin)
		}
	})
	t.Run("media-c-overrides", func(t *testing.T) {
		s := mustParse(t, "v=0\no=a 0 0 IN IP4 1.2.3.4\ns=Play\nc=IN IP4 1.2.3.4\nt=0 0\nm=video 5 RTP/AVP 96\nc=IN IP6 ::1\nm=audio 6 RTP/AVP 8\n")
		if ap, err := s.Addr(&s.Media[0]); err != nil || ap.String() != "[::1]:5" {
			t.Fatal(ap, err)
		}
		if ap, err := s.Addr(s.FirstMedia("audio")); err != nil || ap.String() != "1.2.3.4:6" {
			t.Fatal(ap, err)
		}
	})
	t.Run("multicast-ttl", func(t *testing.T) {
		s := mustParse(t, "v=0\no=a 0 0 IN IP4 1.2.3.4\ns=Play\nc=IN IP4 239.1.1.1/127\nm=video 5 RTP/AVP 96\n")
		if ap, err := s.Addr(&s.Media[0]); err != nil || ap.String() != "239.1.1.1:5" {
			t.Fatal(ap, err)
		}
	})
}

func TestErrors(t *testing.T) {
	cases := map[string]struct{ in, msg string }{
		"empty":        {"", "empty"},
		"blank":        {" \r\n\n\t\n", "empty"},
		"prose":        {"hello world", "not an SDP line"},
		"xml":          {`<?xml version="1.0"?><Query/>`, "not an SDP line"},
		"binary":       {"\x00\x01\x02=\xff", "not an SDP line"},
		"no-v":         {"o=a 0 0 IN IP4 1.2.3.4\ns=Play\n", "must start with v="},
		"only-y":       {"y=0100000001\n", "no v="},
		"v1":           {"v=1\no=a 0 0 IN IP4 1.2.3.4\ns=Play\n", "unsupported version"},
		"two-v":        {"v=0\nv=0\no=a 0 0 IN IP4 1.2.3.4\ns=Play\n", "second v="},
		"no-o":         {"v=0\ns=Play\nt=0 0\n", "no o="},
		"empty-o":      {"v=0\no=\ns=Play\n", "empty o="},
		"no-s":         {"v=0\no=a 0 0 IN IP4 1.2.3.4\nt=0 0\n", "no s="},
		"m-no-port":    {"v=0\no=a 0 0 IN IP4 1.2.3.4\ns=Play\nm=video\n", "without port"},
		"m-empty":      {"v=0\no=a 0 0 IN IP4 1.2.3.4\ns=Play\nm=\n", "empty m="},
		"m-no-proto":   {"v=0\no=a 0 0 IN IP4 1.2.3.4\ns=Play\nm=video 9000\n", "without transport"},
		"m-bad-port":   {"v=0\no=a 0 0 IN IP4 1.2.3.4\ns=Play\nm=video abc RTP/AVP 96\n", "bad port"},
		"m-big-port":   {"v=0\no=a 0 0 IN IP4 1.2.3.4\ns=Play\nm=video 70000 RTP/AVP 96\n", "bad port"},
		"m-neg-port":   {"v=0\no=a 0 0 IN IP4 1.2.3.4\ns=Play\nm=video -1 RTP/AVP 96\n", "bad port"},
		"bad-t":        {"v=0\no=a 0 0 IN IP4 1.2.3.4\ns=Play\nt=now 0\n", "bad t= start"},
		"bad-t-stop":   {"v=0\no=a 0 0 IN IP4 1.2.3.4\ns=Play\nt=0 -1\n", "bad t= stop"},
		"bad-c":        {"v=0\no=a 0 0 IN IP4 1.2.3.4\ns=Play\nc=1.2.3.4\n", "malformed c="},
		"bad-c-net":    {"v=0\no=a 0 0 IN IP4 1.2.3.4\ns=Play\nc=XX IP4 1.2.3.4\n", "network type"},
		"bad-media-c":  {"v=0\no=a 0 0 IN IP4 1.2.3.4\ns=Play\nm=video 1 RTP/AVP\nc=IN\n", "line 5: malformed c="},
		"sip-message":  {"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n\r\nv=0\r\n", "line 1: not an SDP line"},
		"line-numbers": {"v=0\r\no=a 0 0 IN IP4 1.2.3.4\r\ns=Play\r\nm=video x RTP/AVP\r\n", "line 4:"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			s, err := Parse([]byte(c.in))
			if err == nil {
				t.Fatalf("no error, got %+v", s)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("error %q does not mention %q", err, c.msg)
			}
		})
	}
	t.Run("too-large", func(t *testing.T) {
		big := stripAnnotations(seedOffer) + strings.Repeat("a=x\n", 64<<10/4)
		if _, err := Parse([]byte(big)); err == nil || !strings.Contains(err.Error(), "larger than") {
			t.Fatal(err)
		}
		// Just under the limit is fine.
		ok := stripAnnotations(seedOffer)
		ok += strings.Repeat("a=x\n", (64<<10-len(ok))/4)
		if _, err := Parse([]byte(ok)); err != nil {
			t.Fatal(err)
		}
	})
}

func TestAttrHelpers(t *testing.T) {
	s := mustParse(t, stripAnnotations(seedOfferTCPPassive))
	m := s.FirstMedia("VIDEO")
	if v, ok := m.Attr("rtpmap"); !ok || v != "96 PS/90000" {
		t.Fatal(v, ok)
	}
	if _, ok := m.Attr("nope"); ok {
		t.Fatal("found missing attribute")
	}
	m.SetAttr("setup", "active")
	m.SetAttr("connection", "new")
	if m.Setup() != "active" || m.Attributes[len(m.Attributes)-1] != (Attribute{"connection", "new"}) {
		t.Fatalf("%+v", m.Attributes)
	}
	m.DelAttr("rtpmap")
	m.DelAttr("recvonly")
	m.SetAttr("sendonly", "")
	want := []Attribute{{"setup", "active"}, {"connection", "new"}, {"sendonly", ""}}
	if !reflect.DeepEqual(m.Attributes, want) {
		t.Fatalf("%+v", m.Attributes)
	}
	// Changes through FirstMedia stick in the session.
	if !bytes.Contains(s.Marshal(), []byte("a=setup:active\r\na=connection:new\r\na=sendonly\r\ny=")) {
		t.Fatalf("%s", s.Marshal())
	}
	for _, k := range []string{"setup", "connection", "sendonly"} {
		m.DelAttr(k)
	}
	if m.Attributes != nil || m.Direction() != "" || m.Setup() != "" {
		t.Fatalf("%+v", m.Attributes)
	}
	m.SetAttr("Setup", " ActPass ")
	m.SetAttr("INACTIVE", "")
	if m.Setup() != "actpass" || m.Direction() != "inactive" {
		t.Fatal(m.Setup(), m.Direction())
	}
	if _, err := s.Addr(nil); err == nil {
		t.Fatal("Addr(nil) succeeded")
	}
	m.Port = 70000
	if _, err := s.Addr(m); err == nil {
		t.Fatal("port out of range accepted")
	}
}

func FuzzParse(f *testing.F) {
	for _, sd := range seeds {
		f.Add([]byte(sd.sdp))
		f.Add([]byte(stripAnnotations(sd.sdp)))
	}
	f.Add([]byte(canonicalTCP))
	f.Add([]byte("v=0\ro=a\rs=\ru=channel:0\rm=x 0 y\ra=:\ra=\rc=IN IP6\r"))
	f.Add([]byte("v=0\no=a 1 2 IN IP6\ns= x\ni=\nc=in ip4 x/1/2\nt=1\na=k:v:w\nm=audio 0/1 tcp/rtp/avp 8 40\nc=IN IP4 ::1\ny= 1 \nf=\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(b)
		if err != nil {
			return
		}
		out := s.Marshal()
		s2, err := Parse(out)
		if err != nil {
			t.Fatalf("re-parse of Marshal output failed: %v\ninput %q\noutput %q", err, b, out)
		}
		if !reflect.DeepEqual(s, s2) {
			t.Fatalf("round trip differs\ninput %q\noutput %q\n%+v\n%+v", b, out, s, s2)
		}
		if out2 := s2.Marshal(); !bytes.Equal(out, out2) {
			t.Fatalf("Marshal not stable\n%q\n%q", out, out2)
		}
		for i := range s.Media {
			m := &s.Media[i]
			_, _ = s.Addr(m)
			_ = m.TCP()
			_ = m.Setup()
			_ = m.Direction()
		}
	})
}

func BenchmarkParseMarshal(b *testing.B) {
	in := []byte(strings.ReplaceAll(stripAnnotations(seedAnswerTCPPassive), "\n", "\r\n"))
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		s, err := Parse(in)
		if err != nil {
			b.Fatal(err)
		}
		_ = s.Marshal()
	}
}
