package cascade

import (
	"bytes"
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
	"github.com/gbproxy/gbproxy/configs"
	"github.com/gbproxy/gbproxy/endpoint"
	"github.com/gbproxy/gbproxy/security"
)

// fromUpper is a MESSAGE from the configured upper platform.
func (e *handlerEnv) fromUpper(body []byte, headers ...sip.Header) *sip.Request {
	return e.request(sip.MESSAGE, envUpperID, e.upper, body, headers...)
}

// answerTo waits for our MESSAGE to the upper answering cmdType with SN sn.
func (e *handlerEnv) answerTo(t *testing.T, cmdType string, sn int64) *sip.Request {
	t.Helper()
	return e.upper.await(t, cmdType+" response SN "+strconv.FormatInt(sn, 10), func(r *sip.Request) bool {
		hdr, err := manscdp.Peek(r.Body())
		return r.Method == sip.MESSAGE && err == nil && hdr.Root == manscdp.RootResponse && hdr.CmdType == cmdType && hdr.SN == sn
	})
}

// A Catalog query to the proxy's ID is answered 200, then the catalog shared
// with that upper goes to it in MESSAGEs: its SN, our ID, SumNum, in the
// upper's charset.
func TestUpperCatalogQuery(t *testing.T) {
	e := newHandlerEnv(t, nil)
	e.withCamera(t)
	req := e.fromUpper(setDeviceID(testdata(t, "catalog_query.xml"), envProxyID)) // SN 471
	if v := e.admitUpper(req); v.Code != 0 || !v.Known {
		t.Fatalf("upper guard: %+v, want admitted as known", v)
	}
	if res := e.upperMessage(req); res.StatusCode != sip.StatusOK {
		t.Fatalf("answered %d %s, want 200", res.StatusCode, res.Reason)
	}
	msg := e.answerTo(t, "Catalog", 471)
	if fromUser(msg) != envProxyID || toUser(msg) != envUpperID {
		t.Errorf("catalog MESSAGE from %s to %s, want from %s to %s", fromUser(msg), toUser(msg), envProxyID, envUpperID)
	}
	if !bytes.Contains(msg.Body(), []byte(`encoding="GB2312"`)) {
		t.Errorf("catalog not in the upper's charset (GB2312):\n%s", msg.Body())
	}
	var got manscdp.CatalogResponse
	if err := manscdp.Decode(msg.Body(), &got); err != nil {
		t.Fatal(err)
	}
	if got.DeviceID != envProxyID || got.SumNum != 1 || got.DeviceList.Num != 1 || len(got.DeviceList.Items) != 1 {
		t.Fatalf("catalog DeviceID %s SumNum %d Num %d items %d, want %s 1 1 1", got.DeviceID, got.SumNum, got.DeviceList.Num, len(got.DeviceList.Items), envProxyID)
	}
	if it := got.DeviceList.Items[0]; it.DeviceID != envCamera || it.Name != "Camera 01" || it.ParentID != envProxyID {
		t.Errorf("item %s %q under %s, want %s \"Camera 01\" under the proxy", it.DeviceID, it.Name, it.ParentID, envCamera)
	}
	eventually(t, "catalog transfer finished in /api/v1/platforms", func() bool {
		last := e.c.Platforms()[0].LastCatalog
		return last != nil && !last.Finished.IsZero() && last.SN == 471 && last.Sent == 1 && last.Failed == 0
	})
}

// Queries to the proxy's own ID are answered by the proxy: DeviceInfo and
// DeviceStatus with what it is, other queries with Result ERROR.
func TestUpperQueriesToProxy(t *testing.T) {
	e := newHandlerEnv(t, nil)
	e.withCamera(t)
	for _, tc := range []struct {
		sample, cmdType string
		want            map[string]string
	}{
		{"deviceinfo_query.xml", "DeviceInfo", map[string]string{"Result": "OK", "DeviceType": "SIP Server", "Manufacturer": "gbproxy", "Channel": "1"}},
		{"devicestatus_query.xml", "DeviceStatus", map[string]string{"Result": "OK", "Online": "ONLINE", "Status": "OK"}},
		{"recordinfo_query.xml", "RecordInfo", map[string]string{"Result": "ERROR"}},
	} {
		body := setDeviceID(testdata(t, tc.sample), envProxyID)
		hdr, err := manscdp.Peek(body)
		if err != nil {
			t.Fatal(err)
		}
		if res := e.upperMessage(e.fromUpper(body)); res.StatusCode != sip.StatusOK {
			t.Fatalf("%s: answered %d %s, want 200", tc.cmdType, res.StatusCode, res.Reason)
		}
		var m manscdp.Message
		if err := manscdp.Decode(e.answerTo(t, tc.cmdType, hdr.SN).Body(), &m); err != nil {
			t.Fatal(err)
		}
		if m.Text("DeviceID") != envProxyID {
			t.Errorf("%s answered for %s, want %s", tc.cmdType, m.Text("DeviceID"), envProxyID)
		}
		for k, v := range tc.want {
			if m.Text(k) != v {
				t.Errorf("%s: %s %q, want %q", tc.cmdType, k, m.Text(k), v)
			}
		}
	}
}

// A query for a shared channel goes to its device with our SN (the route is
// pending), one hop less and our Monitor-User-Identity; the device's 200 is
// the upper's 200, and the device's answer reaches the upper with the
// upper's SN.
func TestUpperQueryRoutedToDevice(t *testing.T) {
	e := newHandlerEnv(t, nil)
	e.withCamera(t)
	query := testdata(t, "devicestatus_query.xml") // SN 1708, DeviceID: the camera's channel
	if res := e.upperMessage(e.fromUpper(query)); res.StatusCode != sip.StatusOK {
		t.Fatalf("answered %d %s, want 200", res.StatusCode, res.Reason)
	}
	routed := e.device.await(t, "routed DeviceStatus query", func(r *sip.Request) bool {
		return isMANSCDP(r, manscdp.RootQuery, "DeviceStatus")
	})
	hdr := peek(t, routed)
	if hdr.SN == 1708 || hdr.DeviceID != envCamera || toUser(routed) != envCamera {
		t.Errorf("routed query SN %d for %s to %s: want our own SN, for and to %s", hdr.SN, hdr.DeviceID, toUser(routed), envCamera)
	}
	if mf := routed.MaxForwards(); mf == nil || mf.Val() != 69 {
		t.Errorf("Max-Forwards %v, want 69", mf)
	}
	if got, want := endpoint.HeaderValue(routed, security.MonitorUserIdentityHeader), envProxyID+"-"+envUpperID; got != want {
		t.Errorf("Monitor-User-Identity %q, want %q", got, want)
	}

	answer := setSN(testdata(t, "devicestatus_response.xml"), hdr.SN)
	if res := e.lowerMessage(e.request(sip.MESSAGE, envCamera, e.device, answer)); res.StatusCode != sip.StatusOK {
		t.Fatalf("device's answer answered %d", res.StatusCode)
	}
	var m manscdp.Message
	if err := manscdp.Decode(e.answerTo(t, "DeviceStatus", 1708).Body(), &m); err != nil {
		t.Fatal(err)
	}
	if m.Text("DeviceID") != envCamera || m.Text("Online") != "ONLINE" {
		t.Errorf("answer to the upper: DeviceID %q Online %q", m.Text("DeviceID"), m.Text("Online"))
	}
}

// What a routed query's device leg can't do is the upper's answer: the
// device's refusal passed up, 404 for what the upper is not shared, 483
// when hops run out, 480 for a device offline.
func TestUpperQueryRoutingRefusals(t *testing.T) {
	e := newHandlerEnv(t, nil)
	e.withCamera(t)
	query := testdata(t, "devicestatus_query.xml")
	check := func(name string, req *sip.Request, code int, reason string) {
		t.Helper()
		if res := e.upperMessage(req); res.StatusCode != code || (reason != "" && res.Reason != reason) {
			t.Errorf("%s: answered %d %s, want %d %s", name, res.StatusCode, res.Reason, code, reason)
		}
	}
	e.device.answerWith(sip.StatusBusyHere)
	check("device refuses", e.fromUpper(query), sip.StatusBusyHere, "")
	e.device.answerWith(sip.StatusOK)
	check("not shared", e.fromUpper(setDeviceID(query, "62010201001310009999")), sip.StatusNotFound, "Not Found (not shared with this platform)")
	one := sip.MaxForwardsHeader(1)
	check("no hops left", e.fromUpper(query, &one), sip.StatusTooManyHops, "Too Many Hops")
	if res := e.registerAs(envCamera, envCameraPW, 0); res.StatusCode != sip.StatusOK {
		t.Fatalf("unregister: %d", res.StatusCode)
	}
	check("device offline", e.fromUpper(query), sip.StatusTemporarilyUnavailable, "Temporarily Unavailable (device offline)")
}

// Requests from a platform that is not configured are refused, by the guard
// and by the handlers.
func TestUnknownUpperRefused(t *testing.T) {
	e := newHandlerEnv(t, nil)
	const stranger = "44010000002000000099"
	body := setDeviceID(testdata(t, "catalog_query.xml"), envProxyID)
	msg := e.request(sip.MESSAGE, stranger, e.upper, body)
	if v := e.admitUpper(msg); v.Code != sip.StatusForbidden || v.Label != refusedUnknownPlatform {
		t.Errorf("upper guard: %+v, want 403 %s", v, refusedUnknownPlatform)
	}
	for name, res := range map[string]*sip.Response{
		"MESSAGE":   e.upperMessage(msg),
		"SUBSCRIBE": e.upperSubscribe(e.request(sip.SUBSCRIBE, stranger, e.upper, body, sip.NewHeader("Expires", "600"))),
	} {
		if res.StatusCode != sip.StatusForbidden || res.Reason != "Forbidden (unknown platform)" {
			t.Errorf("%s: answered %d %s, want 403 Forbidden (unknown platform)", name, res.StatusCode, res.Reason)
		}
	}
}

// A MESSAGE or SUBSCRIBE whose body is no MANSCDP gets 400; a SUBSCRIBE
// to a kind one cannot subscribe to gets 489 Bad Event.
func TestUpperMalformedBody(t *testing.T) {
	e := newHandlerEnv(t, nil)
	for name, body := range malformedBodies(t, "catalog_query.xml") {
		if res := e.upperMessage(e.fromUpper(body)); res.StatusCode != sip.StatusBadRequest || res.Reason != "Bad Request (MANSCDP body)" {
			t.Errorf("MESSAGE %s: answered %d %s, want 400 Bad Request (MANSCDP body)", name, res.StatusCode, res.Reason)
		}
		if res := e.upperSubscribe(e.request(sip.SUBSCRIBE, envUpperID, e.upper, body, sip.NewHeader("Expires", "600"))); res.StatusCode != sip.StatusBadRequest {
			t.Errorf("SUBSCRIBE %s: answered %d %s, want 400", name, res.StatusCode, res.Reason)
		}
	}
	if res := e.upperSubscribe(e.request(sip.SUBSCRIBE, envUpperID, e.upper, setDeviceID(testdata(t, "deviceinfo_query.xml"), envProxyID))); res.StatusCode != 489 {
		t.Errorf("SUBSCRIBE to DeviceInfo: answered %d, want 489", res.StatusCode)
	}
}

// subscribeCatalog subscribes the upper to our whole catalog (Expires
// 3600) and returns the SUBSCRIBE and its answer; the subscription ends
// with the test.
func (e *handlerEnv) subscribeCatalog(t *testing.T) (*sip.Request, *sip.Response) {
	t.Helper()
	req := e.request(sip.SUBSCRIBE, envUpperID, e.upper, setDeviceID(testdata(t, "catalog_query.xml"), envProxyID),
		sip.NewHeader("Expires", "3600"), sip.NewHeader("Event", "Catalog;id=1"))
	res := e.upperSubscribe(req)
	if res.StatusCode != sip.StatusOK {
		t.Fatalf("SUBSCRIBE answered %d %s", res.StatusCode, res.Reason)
	}
	t.Cleanup(func() { e.upperSubscribe(e.inDialog(req, res, 0)) })
	return req, res
}

// inDialog is the next SUBSCRIBE of the dialog first/answer opened.
func (e *handlerEnv) inDialog(first *sip.Request, answer *sip.Response, expires int) *sip.Request {
	cseq := first.CSeq().SeqNo + 1
	return e.request(sip.SUBSCRIBE, envUpperID, e.upper, first.Body(),
		first.CallID(), first.From(), answer.To(),
		&sip.CSeqHeader{SeqNo: cseq, MethodName: sip.SUBSCRIBE},
		sip.NewHeader("Expires", strconv.Itoa(expires)), sip.NewHeader("Event", "Catalog;id=1"))
}

// A Catalog SUBSCRIBE is granted at most upper.subscribe_expires_max, in a
// dialog of ours (To tag, Contact), with Event echoed and a Response body;
// refreshed in the dialog; ended by Expires 0.
func TestUpperSubscribeCatalog(t *testing.T) {
	e := newHandlerEnv(t, nil)
	req, res := e.subscribeCatalog(t)
	if got := header(res, "Expires"); got != strconv.Itoa(envSubMax) {
		t.Errorf("Expires %q, want %d (subscribe_expires_max)", got, envSubMax)
	}
	if tag, _ := res.To().Params.Get("tag"); tag == "" {
		t.Error("200 without a To tag: no dialog")
	}
	if res.Contact() == nil || header(res, "Event") != "Catalog;id=1" {
		t.Errorf("Contact %v Event %q, want a Contact and the Event echoed", res.Contact(), header(res, "Event"))
	}
	var body manscdp.Message
	if err := manscdp.Decode(res.Body(), &body); err != nil || body.Text("Result") != "OK" || body.Text("SN") != "471" {
		t.Errorf("200 body (%v): Result %q SN %q, want OK 471", err, body.Text("Result"), body.Text("SN"))
	}
	subs := e.upperSubscriptions()
	if len(subs) != 1 || subs[0].Kind != "Catalog" || subs[0].Platform != envUpperID ||
		!subs[0].ExpiresAt.Equal(e.clock.Now().Add(envSubMax*time.Second)) {
		t.Fatalf("subscriptions %+v, want one Catalog of %s for %d s", subs, envUpperID, envSubMax)
	}

	e.clock.advance(time.Minute)
	if res := e.upperSubscribe(e.inDialog(req, res, 300)); res.StatusCode != sip.StatusOK || header(res, "Expires") != "300" {
		t.Fatalf("refresh answered %d Expires %q, want 200 with 300", res.StatusCode, header(res, "Expires"))
	}
	if subs := e.upperSubscriptions(); len(subs) != 1 || !subs[0].ExpiresAt.Equal(e.clock.Now().Add(300*time.Second)) {
		t.Fatalf("after refresh: %+v", subs)
	}

	if res := e.upperSubscribe(e.inDialog(req, res, 0)); res.StatusCode != sip.StatusOK || header(res, "Expires") != "0" {
		t.Fatalf("unsubscribe answered %d Expires %q, want 200 with 0", res.StatusCode, header(res, "Expires"))
	}
	if subs := e.upperSubscriptions(); len(subs) != 0 {
		t.Fatalf("subscriptions after unsubscribing: %+v", subs)
	}
	if res := e.upperSubscribe(e.inDialog(req, res, 300)); res.StatusCode != sip.StatusCallTransactionDoesNotExists {
		t.Fatalf("refresh of an ended subscription answered %d, want 481", res.StatusCode)
	}
}

// A SUBSCRIBE for an ID the upper is not shared gets 404.
func TestUpperSubscribeUnsharedTarget(t *testing.T) {
	e := newHandlerEnv(t, nil)
	res := e.upperSubscribe(e.request(sip.SUBSCRIBE, envUpperID, e.upper, testdata(t, "catalog_query.xml"), sip.NewHeader("Expires", "600")))
	if res.StatusCode != sip.StatusNotFound {
		t.Fatalf("answered %d %s, want 404", res.StatusCode, res.Reason)
	}
	if subs := e.upperSubscriptions(); len(subs) != 0 {
		t.Fatalf("subscriptions: %+v", subs)
	}
}

func (e *handlerEnv) upperSubscriptions() []SubscriptionState {
	upper, _ := e.c.Subscriptions()
	return upper
}

// A routed query its device accepts but never answers gets the upper a
// Result ERROR after lower.query_timeout, with its SN and the ID it asked.
func TestUpperRoutedQueryTimesOut(t *testing.T) {
	e := newHandlerEnv(t, func(c *configs.Config) { c.Lower.QueryTimeout = 100 * time.Millisecond })
	e.withCamera(t)
	if res := e.upperMessage(e.fromUpper(testdata(t, "deviceinfo_query.xml"))); res.StatusCode != sip.StatusOK { // SN 1708
		t.Fatalf("answered %d %s", res.StatusCode, res.Reason)
	}
	var m manscdp.Message
	if err := manscdp.Decode(e.answerTo(t, "DeviceInfo", 1708).Body(), &m); err != nil {
		t.Fatal(err)
	}
	if m.Text("Result") != "ERROR" || m.Text("DeviceID") != envCamera || m.Text("Reason") == "" {
		t.Errorf("after the timeout: Result %q DeviceID %q Reason %q, want ERROR for %s with a reason", m.Text("Result"), m.Text("DeviceID"), m.Text("Reason"), envCamera)
	}
}

// A multi-part answer (RecordInfo) keeps its route until SumNum items have
// come: each part reaches the upper with the upper's SN.
func TestUpperRoutedMultiPartAnswer(t *testing.T) {
	e := newHandlerEnv(t, nil)
	e.withCamera(t)
	query := setDeviceID(testdata(t, "recordinfo_query.xml"), envCamera) // SN 10000
	if res := e.upperMessage(e.fromUpper(query)); res.StatusCode != sip.StatusOK {
		t.Fatalf("answered %d %s", res.StatusCode, res.Reason)
	}
	sn := peek(t, e.device.await(t, "routed RecordInfo", func(r *sip.Request) bool { return isMANSCDP(r, manscdp.RootQuery, "RecordInfo") })).SN
	part := setDeviceID(setSN(testdata(t, "recordinfo_response.xml"), sn), envCamera)
	part = setElement(part, "SumNum", "2")
	for i, file := range []string{"part-1", "part-2"} {
		body := setElement(part, "FilePath", file)
		if res := e.lowerMessage(e.request(sip.MESSAGE, envCamera, e.device, body)); res.StatusCode != sip.StatusOK {
			t.Fatalf("part %d answered %d", i+1, res.StatusCode)
		}
		e.upper.await(t, "RecordInfo "+file, func(r *sip.Request) bool {
			hdr, err := manscdp.Peek(r.Body())
			return err == nil && hdr.CmdType == "RecordInfo" && hdr.SN == 10000 && bytes.Contains(r.Body(), []byte(file))
		})
	}
}

// A Response from the upper (its side of an exchange we started, such as
// an alarm acknowledgement) is taken with 200 and routed nowhere.
func TestUpperResponseTaken(t *testing.T) {
	e := newHandlerEnv(t, nil)
	e.withCamera(t)
	body := setDeviceID(testdata(t, "devicestatus_response.xml"), envCamera)
	if res := e.upperMessage(e.fromUpper(body)); res.StatusCode != sip.StatusOK {
		t.Fatalf("answered %d %s, want 200", res.StatusCode, res.Reason)
	}
	// Routing is synchronous: a routed request would have reached the device.
	if got := e.device.matching(func(r *sip.Request) bool { return isMANSCDP(r, manscdp.RootResponse, "DeviceStatus") }); len(got) != 0 {
		t.Fatalf("an upper's Response was sent to the device")
	}
}
