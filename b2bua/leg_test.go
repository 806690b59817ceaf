package b2bua

import (
	"strconv"
	"testing"

	"github.com/gbproxy/gbproxy/b2bua/sdp"
	"github.com/gbproxy/gbproxy/relay"
)

// upperLeg reads a=setup as the upper's role (RFC 4145): passive means it
// listens and we dial; active, actpass or nothing means we listen.
func TestUpperLegFromOffer(t *testing.T) {
	offer := func(proto, setup, c string, port int) string {
		s := "v=0\r\no=u 0 0 IN IP4 " + c + "\r\ns=Play\r\nc=IN IP4 " + c + "\r\nt=0 0\r\nm=video "
		s += strconv.Itoa(port) + " " + proto + " 96\r\na=recvonly\r\n"
		if setup != "" {
			s += "a=setup:" + setup + "\r\n"
		}
		return s + "y=0100000001\r\n"
	}
	for _, c := range []struct {
		name    string
		body    string
		want    relay.Transport
		setup   string
		wantErr bool
	}{
		{"udp", offer("RTP/AVP", "", "10.0.0.5", 5000), relay.UDP, "", false},
		{"udp port 0", offer("RTP/AVP", "", "10.0.0.5", 0), 0, "", true},
		{"udp unspecified", offer("RTP/AVP", "", "0.0.0.0", 5000), 0, "", true},
		{"upper listens", offer("TCP/RTP/AVP", "passive", "10.0.0.5", 5000), relay.TCPActive, "active", false},
		{"upper listens nowhere", offer("TCP/RTP/AVP", "passive", "0.0.0.0", 5000), 0, "", true},
		{"upper dials", offer("TCP/RTP/AVP", "active", "10.0.0.5", 9), relay.TCPPassive, "passive", false},
		{"either", offer("TCP/RTP/AVP", "actpass", "10.0.0.5", 5000), relay.TCPPassive, "passive", false},
		{"no setup", offer("RTP/AVP/TCP", "", "10.0.0.5", 5000), relay.TCPPassive, "passive", false},
	} {
		s, err := sdp.Parse([]byte(c.body))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		leg, err := upperLeg(s, s.FirstMedia("video"))
		if (err != nil) != c.wantErr {
			t.Errorf("%s: err %v, want error %v", c.name, err, c.wantErr)
			continue
		}
		if err == nil && (leg.transport != c.want || leg.setup != c.setup) {
			t.Errorf("%s: %v with a=setup:%q, want %v with %q", c.name, leg.transport, leg.setup, c.want, c.setup)
		}
	}
}
