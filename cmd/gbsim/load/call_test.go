package load

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRunCallsDirect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const n = 2000
	res, err := RunCalls(ctx, CallConfig{Direct: true, DeviceID: testDeviceID, UpperID: testUpperID, Calls: n, Concurrency: 64, DeviceTrying: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("direct: %+v", res)
	if res.Setups != n || res.Completed != n || res.Failed != 0 || len(res.FailReasons) != 0 || res.DeviceInvites != n || len(res.DeviceProblems) != 0 {
		t.Fatalf("got %+v, want %d set up and completed, each INVITE reaching the device, no failures", res, n)
	}
	if res.P50 <= 0 || res.P99 < res.P50 || res.P99 > res.Elapsed || res.Rate != float64(n)/res.Elapsed.Seconds() {
		t.Errorf("implausible figures: %+v", res)
	}
}

func TestCallLoadDirectHoldAndHangUp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l, err := NewCallLoad(CallConfig{Direct: true, DeviceID: testDeviceID, UpperID: testUpperID, Channels: 300, Concurrency: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	held, err := l.RunPlan(ctx, CallPlan{Calls: 300, Concurrency: 16, Hold: true})
	if err != nil {
		t.Fatal(err)
	}
	if held.Held != 300 || held.Setups != 300 || held.Failed != 0 || held.DeviceOpen != 300 || l.DeviceDialogs() != 300 {
		t.Fatalf("hold: %+v, want 300 held and open at the device", held)
	}
	if _, err := l.RunPlan(ctx, CallPlan{Calls: 1, Concurrency: 1}); err == nil || !strings.Contains(err.Error(), "HangUp") {
		t.Fatalf("a run while calls are held: %v, want an error naming HangUp", err)
	}
	hung, err := l.HangUp(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if hung.Completed != 300 || hung.Failed != 0 || hung.DeviceByes != 300 || hung.DeviceOpen != 0 || hung.P50 <= 0 {
		t.Fatalf("hang up: %+v, want 300 BYEs answered and the device's dialogs all ended", hung)
	}
	// Then the load runs again, re-using channels least recently used first.
	if res, err := l.RunPlan(ctx, CallPlan{Calls: 500, Concurrency: 8, Channels: 8}); err != nil || res.Completed != 500 {
		t.Fatalf("after HangUp: %+v, %v", res, err)
	}
}

// fakeB2BUA stands in for gbproxy's live-video bridge: it challenges the
// device's REGISTER, asks for its catalog, registers itself to the upper,
// and turns each INVITE from the upper into its own INVITE to the device
// (new Call-ID, its own y=), answering the upper with the upper's y= once
// the device has answered. It drops the first INVITE (the upper must
// re-send it) and sends its first 200 OK twice (the upper must ACK again).
type fakeB2BUA struct {
	t            *testing.T
	lower, upper *net.UDPConn
	upperAddr    *net.UDPAddr
	refuse       bool // answer every INVITE 486
	wrongSSRC    bool // answer the upper a y= of our own

	mu          sync.Mutex
	device      *net.UDPAddr
	authorized  bool
	catalogMsgs int
	sumNum      string
	items       map[string]bool
	calls       map[string]*fakeBridgedCall // by upper Call-ID
	byLower     map[string]*fakeBridgedCall
	dropped     bool
	doubled     bool
	acks        map[string]int // upper Call-ID → ACKs
	errorAcks   int            // ACKs of our error answers
	byes        map[string]int // upper Call-ID → BYEs (re-sent when our 200 is late)
	deviceByeOK int            // 200s to our BYEs from the device
	offers      []string       // our offers to the device
}

type fakeBridgedCall struct {
	invite                []byte // the upper's
	channel, ssrc         string
	lowerCallID, lowerTag string
	lowerContact          string
	answered              bool
}

func startFakeB2BUA(t *testing.T, upperAddr string) *fakeB2BUA {
	ua, err := net.ResolveUDPAddr("udp", upperAddr)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeB2BUA{t: t, lower: loopbackUDP(t), upper: loopbackUDP(t), upperAddr: ua, items: map[string]bool{},
		calls: map[string]*fakeBridgedCall{}, byLower: map[string]*fakeBridgedCall{}, acks: map[string]int{}, byes: map[string]int{}}
	serveFake(t, &f.mu, f.lower, f.upper, f.fromDevice, f.fromUpper)
	(&fakeRelay{upper: f.upper, upperAddr: ua}).register("")
	return f
}

func (f *fakeB2BUA) fromDevice(msg message, from *net.UDPAddr) {
	m := peekMANSCDP(msg.body)
	switch {
	case msg.status != 0:
		f.deviceAnswer(msg)
	case msg.method == "REGISTER" && msg.header("Authorization") == "":
		f.lower.WriteToUDP(appendReply(nil, msg.raw, "401 Unauthorized", `WWW-Authenticate: Digest realm="`+testDomain+`", nonce="n-`+testDeviceID+`", opaque="op", algorithm=MD5`+"\r\n"), from)
	case msg.method == "REGISTER":
		f.authorized = (&fakeRegistrar{}).validDigest(msg, testDeviceID)
		f.device = from
		f.lower.WriteToUDP(appendReply(nil, msg.raw, "200 OK", "Expires: 3600\r\n"), from)
		query := `<?xml version="1.0"?><Query><CmdType>Catalog</CmdType><SN>9</SN><DeviceID>` + testDeviceID + `</DeviceID></Query>`
		down := newTemplate(testServerID, testDomain, testDeviceID, testDomain, f.lower.LocalAddr().String(), "b2b-down-")
		f.lower.WriteToUDP(down.appendMessage(nil, 0, []byte(query)), from)
	case m.is(rootResponse, cmdCatalog):
		f.lower.WriteToUDP(appendReply(nil, msg.raw, "200 OK", ""), from)
		f.catalogMsgs++
		f.sumNum = xmlText(msg.body, "SumNum")
		for _, item := range strings.Split(string(msg.body), "<Item>")[1:] {
			f.items[xmlText([]byte(item), "DeviceID")] = true
		}
	default:
		f.lower.WriteToUDP(appendReply(nil, msg.raw, "200 OK", ""), from)
	}
}

// deviceAnswer takes the device's answers to our INVITEs and BYEs.
func (f *fakeB2BUA) deviceAnswer(msg message) {
	c := f.byLower[msg.callID]
	if c == nil || msg.status < 200 {
		return
	}
	if msg.cseq == 2 {
		if msg.status == 200 {
			f.deviceByeOK++
		}
		return
	}
	c.lowerTag = headerParam(msg.header("To"), "tag")
	c.lowerContact = contactURI(msg.header("Contact"))
	f.lower.WriteToUDP(f.lowerRequest(c, "ACK", 1), f.device)
	if c.answered {
		return
	}
	c.answered = true
	dev := readSDP(msg.body)
	ssrc := c.ssrc
	if f.wrongSSRC {
		ssrc = "0999999999"
	}
	sdp := appendAnswerSDP(nil, testServerID, "127.0.0.1", 30000+dev.port%1000, ssrc)
	answer := appendReplyBody(nil, c.invite, "200 OK", "Contact: <sip:"+testServerID+"@"+f.upper.LocalAddr().String()+">\r\nContent-Type: application/sdp\r\n", sdp)
	f.upper.WriteToUDP(answer, f.upperAddr)
	if !f.doubled {
		f.doubled = true
		f.upper.WriteToUDP(answer, f.upperAddr)
	}
}

func (f *fakeB2BUA) lowerRequest(c *fakeBridgedCall, method string, cseq int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK%s%s\r\n", method, c.lowerContact, f.lower.LocalAddr(), c.lowerCallID, method)
	fmt.Fprintf(&b, "From: <sip:%s@%s>;tag=b2b\r\nTo: <sip:%s@%s>;tag=%s\r\nCall-ID: %s\r\nCSeq: %d %s\r\nContent-Length: 0\r\n\r\n",
		testServerID, testDomain, c.channel, testDomain, c.lowerTag, c.lowerCallID, cseq, method)
	return b.Bytes()
}

func (f *fakeB2BUA) fromUpper(msg message, from *net.UDPAddr) {
	switch {
	case msg.status == 401:
		(&fakeRelay{upper: f.upper, upperAddr: f.upperAddr}).register(`Digest username="` + testServerID + `", realm="r", nonce="n", uri="sip:u", response="0"`)
	case msg.status != 0:
	case msg.method == "INVITE":
		f.invite(msg, from)
	case msg.method == "ACK":
		if strings.HasSuffix(msg.header("Via"), "-"+branchInvite) {
			f.errorAcks++
		} else {
			f.acks[msg.callID]++
		}
	case msg.method == "BYE":
		f.byes[msg.callID]++
		f.upper.WriteToUDP(appendReply(nil, msg.raw, "200 OK", ""), from)
		if c := f.calls[msg.callID]; c != nil {
			delete(f.calls, msg.callID)
			f.lower.WriteToUDP(f.lowerRequest(c, "BYE", 2), f.device)
		}
	}
}

func (f *fakeB2BUA) invite(msg message, from *net.UDPAddr) {
	if !f.dropped {
		f.dropped = true
		return
	}
	f.upper.WriteToUDP(appendReply(nil, msg.raw, "100 Trying", ""), from)
	if f.refuse {
		f.upper.WriteToUDP(appendReply(nil, msg.raw, "486 Busy Here", ""), from)
		return
	}
	if f.calls[msg.callID] != nil {
		return // re-sent: the device is being called
	}
	offer := readSDP(msg.body)
	c := &fakeBridgedCall{invite: msg.raw, channel: requestUser(msg.raw), ssrc: offer.ssrc,
		lowerCallID: "low-" + msg.callID, lowerContact: "sip:" + requestUser(msg.raw) + "@" + f.device.String()}
	f.calls[msg.callID] = c
	f.byLower[c.lowerCallID] = c
	ours := fmt.Sprintf("0200%06d", len(f.byLower))
	sdp := string(appendOfferSDP(nil, testServerID, "127.0.0.1", 20000+2*len(f.byLower), ours))
	f.offers = append(f.offers, sdp)
	var b bytes.Buffer
	fmt.Fprintf(&b, "INVITE sip:%s@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK%s\r\n", c.channel, f.device, f.lower.LocalAddr(), c.lowerCallID)
	fmt.Fprintf(&b, "From: <sip:%s@%s>;tag=b2b\r\nTo: <sip:%s@%s>\r\nCall-ID: %s\r\nCSeq: 1 INVITE\r\n", testServerID, testDomain, c.channel, testDomain, c.lowerCallID)
	fmt.Fprintf(&b, "Contact: <sip:%s@%s>\r\nSubject: %s:%s,%s:0\r\nContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s",
		testServerID, f.lower.LocalAddr(), c.channel, ours, testServerID, len(sdp), sdp)
	f.lower.WriteToUDP(b.Bytes(), f.device)
}

// settle waits up to 5 s for cond, checked under f.mu: the fake takes the
// load's last messages after the load has counted them.
func (f *fakeB2BUA) settle(cond func() bool) {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		f.mu.Lock()
		ok := cond()
		f.mu.Unlock()
		if ok {
			return
		}
	}
}

func newTestCallLoad(t *testing.T, channels int) (*CallLoad, *fakeB2BUA, context.Context) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	l, err := NewCallLoad(CallConfig{ProxyID: testServerID, Domain: testDomain, DeviceID: testDeviceID, Password: testPassword,
		UpperID: testUpperID, Channels: channels, Timeout: 3 * time.Second, KeepaliveInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	if _, err := l.RunPlan(ctx, CallPlan{Calls: 1, Concurrency: 1}); err == nil || !strings.Contains(err.Error(), "SetProxy") {
		t.Fatalf("Run without the proxy's addresses: %v, want an error naming SetProxy", err)
	}
	f := startFakeB2BUA(t, l.UpperAddr())
	if err := l.SetProxy(f.lower.LocalAddr().String(), f.upper.LocalAddr().String()); err != nil {
		t.Fatal(err)
	}
	if err := l.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	return l, f, ctx
}

func TestCallLoadThroughB2BUA(t *testing.T) {
	const channels, calls = 40, 300
	l, f, ctx := newTestCallLoad(t, channels)
	res, err := l.RunPlan(ctx, CallPlan{Calls: calls, Concurrency: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("through the fake B2BUA: %+v", res)
	if res.Setups != calls || res.Completed != calls || res.Failed != 0 || res.DeviceInvites != calls || len(res.DeviceProblems) != 0 {
		t.Fatalf("got %+v, want %d calls set up and ended, each reaching the device, no problems", res, calls)
	}
	if res.Retransmits < 1 || res.Elapsed < timerT1 {
		t.Errorf("the dropped INVITE was not re-sent after %v: %+v", timerT1, res)
	}

	held, err := l.RunPlan(ctx, CallPlan{Calls: channels, Concurrency: 8, Hold: true})
	if err != nil || held.Held != channels || held.Setups != channels {
		t.Fatalf("hold: %+v, %v", held, err)
	}
	hung, err := l.HangUp(ctx)
	if err != nil || hung.Completed != channels || hung.Failed != 0 {
		t.Fatalf("hang up: %+v, %v", hung, err)
	}
	f.settle(func() bool { return l.DeviceDialogs() == 0 && f.deviceByeOK == calls+channels })
	if n := l.DeviceDialogs(); n != 0 {
		t.Errorf("%d device dialogs still up after the fake's BYEs", n)
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.authorized {
		t.Error("the device's REGISTER did not carry valid digest credentials")
	}
	if want := (channels + catalogPerMessage - 1) / catalogPerMessage; f.catalogMsgs != want || f.sumNum != strconv.Itoa(channels) || len(f.items) != channels {
		t.Errorf("catalog: %d MESSAGEs, SumNum %s, %d distinct items; want %d, %d, %d", f.catalogMsgs, f.sumNum, len(f.items), want, channels, channels)
	}
	for _, id := range l.ChannelIDs() {
		if !f.items[id] {
			t.Errorf("channel %s not in the catalog", id)
		}
	}
	if len(f.byes) != calls+channels || f.deviceByeOK != calls+channels {
		t.Errorf("BYEs from the upper for %d calls, %d answered by the device; want %d", len(f.byes), f.deviceByeOK, calls+channels)
	}
	twice := 0
	for _, n := range f.acks {
		if n >= 2 {
			twice++
		}
	}
	if len(f.acks) != calls+channels || twice != 1 {
		t.Errorf("ACKs for %d calls, %d ACKed twice; want %d calls, the one whose 200 OK came twice", len(f.acks), twice, calls+channels)
	}
	if !strings.Contains(f.offers[0], "a=recvonly") {
		t.Errorf("the upper's offer as relayed:\n%s", f.offers[0])
	}
}

func TestCallLoadCountsFailures(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		l, f, ctx := newTestCallLoad(t, 4)
		f.mu.Lock()
		f.refuse = true
		f.mu.Unlock()
		res, err := l.RunPlan(ctx, CallPlan{Calls: 6, Concurrency: 2})
		if err != nil {
			t.Fatal(err)
		}
		if res.Setups != 0 || res.Failed != 6 || res.FailReasons["INVITE: 486 Busy Here"] != 6 {
			t.Fatalf("got %+v, want 6 calls refused 486", res)
		}
		f.settle(func() bool { return f.errorAcks >= 6 })
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.errorAcks < 6 {
			t.Errorf("%d ACKs of the 486s, want 6", f.errorAcks)
		}
	})
	t.Run("wrong SSRC", func(t *testing.T) {
		l, f, ctx := newTestCallLoad(t, 5)
		f.mu.Lock()
		f.wrongSSRC = true
		f.mu.Unlock()
		res, err := l.RunPlan(ctx, CallPlan{Calls: 5, Concurrency: 2, Hold: true})
		if err != nil {
			t.Fatal(err)
		}
		if res.Setups != 0 || res.Held != 0 || res.Failed != 5 || res.FailReasons[`SDP answer y="0999999999", not the offer's`] != 5 {
			t.Fatalf("got %+v, want 5 failed on the SDP answer's y=", res)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if len(f.byes) != 5 {
			t.Errorf("BYEs for %d calls, want the 5 calls with a bad answer ended", len(f.byes))
		}
	})
	t.Run("timeouts", func(t *testing.T) {
		l, err := NewCallLoad(CallConfig{Direct: true, DeviceID: testDeviceID, UpperID: testUpperID, Channels: 3, Timeout: 700 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		l.device.ep.conn.Close() // nobody answers
		res, err := l.RunPlan(context.Background(), CallPlan{Calls: 3, Concurrency: 3})
		if err != nil {
			t.Fatal(err)
		}
		if res.Failed != 3 || res.FailReasons["timeout: no final answer to INVITE"] != 3 || res.Retransmits != 3 {
			t.Fatalf("got %+v, want 3 timeouts, each INVITE re-sent once (at 500 ms, before the 700 ms timeout)", res)
		}
	})
}

func TestCallConfigRejected(t *testing.T) {
	ok := CallConfig{Direct: true, DeviceID: testDeviceID, UpperID: testUpperID, Channels: 10}
	for _, mutate := range []func(*CallConfig){
		func(c *CallConfig) { c.DeviceID = "123" },
		func(c *CallConfig) { c.UpperID = "4401000000200000000x" },
		func(c *CallConfig) { c.Direct, c.ProxyID = false, "" },
		func(c *CallConfig) { c.Calls, c.Concurrency = 5, 11 }, // more in flight than channels
		func(c *CallConfig) { c.Calls, c.Hold = 11, true },     // more held than channels
		func(c *CallConfig) { c.Channels = 10_000_000 },        // 7-digit serials
		func(c *CallConfig) { c.UpperListen = "256.0.0.1:0" },  // no such address
		func(c *CallConfig) { c.Calls, c.Concurrency = -1, 1 }, // no calls
	} {
		cfg := ok
		mutate(&cfg)
		if l, err := NewCallLoad(cfg); err == nil {
			l.Close()
			t.Errorf("NewCallLoad(%+v) accepted a bad config", cfg)
		}
	}
	l, err := NewCallLoad(ok)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, p := range []CallPlan{{Calls: 0, Concurrency: 1}, {Calls: 1, Concurrency: 0}, {Calls: 1, Concurrency: 1, Channels: 11},
		{Calls: 5, Concurrency: 3, Channels: 2}, {Calls: 3, Concurrency: 1, Channels: 2, Hold: true}} {
		if _, err := l.RunPlan(context.Background(), p); err == nil {
			t.Errorf("RunPlan(%+v) accepted a bad plan", p)
		}
	}
}

func TestCallMessages(t *testing.T) {
	tmpl := newCallTemplate(testUpperID, "4401000000", "3402000000", "127.0.0.1:5060", "127.0.0.1", "gbc-x-1-")
	const channel = "34020000001310000001"
	sdp := appendOfferSDP(nil, testUpperID, "127.0.0.1", 40002, "0100000001")
	wantSDP := "v=0\r\no=" + testUpperID + " 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		"m=video 40002 RTP/AVP 96 98 97\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\na=rtpmap:98 H264/90000\r\na=rtpmap:97 MPEG4/90000\r\ny=0100000001\r\n"
	if string(sdp) != wantSDP {
		t.Fatalf("offer:\n%s\nwant:\n%s", sdp, wantSDP)
	}
	raw := tmpl.appendInvite(nil, 7, channel, "0100000001", sdp)
	want := "INVITE sip:" + channel + "@3402000000 SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bKgbc-x-1-7-i\r\n" +
		"From: <sip:" + testUpperID + "@4401000000>;tag=f7\r\n" +
		"To: <sip:" + channel + "@3402000000>\r\n" +
		"Call-ID: gbc-x-1-7\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nUser-Agent: gbsim-load\r\n" +
		"Contact: <sip:" + testUpperID + "@127.0.0.1:5060>\r\nSubject: " + channel + ":0100000001," + testUpperID + ":0\r\n" +
		"Content-Type: APPLICATION/SDP\r\nContent-Length: " + strconv.Itoa(len(wantSDP)) + "\r\n\r\n" + wantSDP
	if string(raw) != want {
		t.Fatalf("INVITE:\n%s\nwant:\n%s", raw, want)
	}
	h, err := scan(raw)
	if err != nil || string(h.method) != "INVITE" || h.cseq != 1 || requestUser(raw) != channel {
		t.Fatalf("scan: %+v, %v", h, err)
	}
	if n, ok := tmpl.number(h.callID); !ok || n != 7 {
		t.Errorf("number(%q) = %d, %v", h.callID, n, ok)
	}
	if f := readSDP(h.body); !f.video || f.port != 40002 || f.ip != "127.0.0.1" || f.direction != "recvonly" || f.ssrc != "0100000001" {
		t.Errorf("readSDP(offer) = %+v", f)
	}

	answer := appendReplyBody(nil, raw, "200 OK", "Contact: <sip:"+channel+"@127.0.0.1:6000;transport=udp>\r\nContent-Type: application/sdp\r\n",
		appendAnswerSDP(nil, channel, "127.0.0.2", 40010, "0100000001"))
	msg, err := parse(answer)
	if err != nil {
		t.Fatal(err)
	}
	if msg.status != 200 || headerParam(msg.header("To"), "tag") != "gbsimload" || contactURI(msg.header("Contact")) != "sip:"+channel+"@127.0.0.1:6000;transport=udp" {
		t.Errorf("answer:\n%s", answer)
	}
	if f := readSDP(msg.body); f.port != 40010 || f.ip != "127.0.0.2" || f.direction != "sendonly" || f.ssrc != "0100000001" {
		t.Errorf("readSDP(answer) = %+v", f)
	}
	if got := msg.header("Content-Length"); got != strconv.Itoa(len(msg.body)) {
		t.Errorf("Content-Length %s for a %d-byte body", got, len(msg.body))
	}

	bye := string(tmpl.appendInDialog(nil, "BYE", "sip:"+channel+"@127.0.0.1:6000", channel, 7, branchBye, "gbsimload", 2))
	wantBye := "BYE sip:" + channel + "@127.0.0.1:6000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bKgbc-x-1-7-b\r\n" +
		"From: <sip:" + testUpperID + "@4401000000>;tag=f7\r\nTo: <sip:" + channel + "@3402000000>;tag=gbsimload\r\n" +
		"Call-ID: gbc-x-1-7\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nUser-Agent: gbsim-load\r\nContent-Length: 0\r\n\r\n"
	if bye != wantBye {
		t.Errorf("BYE:\n%s\nwant:\n%s", bye, wantBye)
	}
	if headerParam("<sip:a@b>;TAG=x;lr", "tag") != "x" || headerParam("<sip:a@b>", "tag") != "" || contactURI("sip:a@b;expires=3") != "sip:a@b" || uriUser("tel:1") != "" {
		t.Error("header helpers")
	}

	cat := catalogResponseItems(Config{ServerID: testServerID, Domain: testDomain}, "127.0.0.1:1", testDeviceID, "5", 40,
		[]string{channelID(testDeviceID, 0), channelID(testDeviceID, 1)}, "cat-x-0")
	cm, err := parse(cat)
	if err != nil {
		t.Fatal(err)
	}
	if cm.callID != "cat-x-0" || xmlText(cm.body, "SumNum") != "40" || !bytes.Contains(cm.body, []byte(`<DeviceList Num="2">`)) ||
		strings.Count(string(cm.body), "<Item>") != 2 || channelID(testDeviceID, 1) != "34020000001310000002" {
		t.Errorf("catalog part:\n%s", cat)
	}
}
