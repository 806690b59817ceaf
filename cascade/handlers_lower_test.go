package cascade

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"golang.org/x/text/encoding/simplifiedchinese"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
	"github.com/gbproxy/gbproxy/configs"
	"github.com/gbproxy/gbproxy/endpoint"
	"github.com/gbproxy/gbproxy/security"
)

// A REGISTER without credentials gets a stateless 401 with a digest
// challenge in our realm, in the configured algorithm, and registers nothing.
func TestRegisterWithoutCredentialsIsChallenged(t *testing.T) {
	for _, alg := range []string{"MD5", "SHA-256"} {
		t.Run(alg, func(t *testing.T) {
			e := newHandlerEnv(t, func(c *configs.Config) { c.Lower.AuthAlgorithm = alg })
			res := e.register(e.registerRequest(envCamera, 1, 3600, ""))
			if res.StatusCode != sip.StatusUnauthorized || res.Reason != "Unauthorized" {
				t.Fatalf("answered %d %s, want 401 Unauthorized", res.StatusCode, res.Reason)
			}
			ch, err := digest.ParseChallenge(header(res, "WWW-Authenticate"))
			if err != nil {
				t.Fatalf("WWW-Authenticate %q: %v", header(res, "WWW-Authenticate"), err)
			}
			if ch.Realm != envDomain || ch.Nonce == "" || ch.Algorithm != alg {
				t.Fatalf("challenge realm %q nonce %q algorithm %q, want realm %q, a nonce, algorithm %s", ch.Realm, ch.Nonce, ch.Algorithm, envDomain, alg)
			}
			if _, ok := e.deviceRecord(envCamera); ok {
				t.Fatal("a challenged REGISTER left a device record")
			}
		})
	}
}

// The right digest registers the device: 200 with Date (time sync) and the
// granted Expires, the device online at the address it registered from,
// and a Catalog query sent to it.
func TestRegisterWithCredentials(t *testing.T) {
	for _, tc := range []struct {
		name      string
		requested int
		granted   int
	}{
		{"within bounds", 600, 600},
		{"capped by register_expires_max", 7200, 1800},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newHandlerEnv(t, nil)
			now := e.clock.Now()
			res := e.registerAs(envCamera, envCameraPW, tc.requested)
			if res.StatusCode != sip.StatusOK {
				t.Fatalf("answered %d %s, want 200", res.StatusCode, res.Reason)
			}
			if got := header(res, "Expires"); got != strconv.Itoa(tc.granted) {
				t.Errorf("Expires %q, want %d", got, tc.granted)
			}
			if got, want := header(res, "Date"), now.Format("2006-01-02T15:04:05.000"); got != want {
				t.Errorf("Date %q, want %q (GB/T 28181 time sync: local time with milliseconds)", got, want)
			}
			d, ok := e.deviceRecord(envCamera)
			switch {
			case !ok || !d.Online:
				t.Fatalf("device not online after 200: %+v", d)
			case d.Transport != "UDP" || d.Remote != e.device.addr():
				t.Errorf("device at %s %s, want UDP %s", d.Transport, d.Remote, e.device.addr())
			case d.Expires != tc.granted || !d.ExpiresAt.Equal(now.Add(time.Duration(tc.granted)*time.Second)):
				t.Errorf("device expires %d at %s, want %d s from %s", d.Expires, d.ExpiresAt, tc.granted, now)
			case d.UserAgent != "IP Camera":
				t.Errorf("User-Agent %q not kept", d.UserAgent)
			}
			q := e.device.await(t, "Catalog query", func(r *sip.Request) bool { return isMANSCDP(r, manscdp.RootQuery, "Catalog") })
			if hdr := peek(t, q); hdr.DeviceID != envCamera || toUser(q) != envCamera {
				t.Errorf("Catalog query for %s to %s, want %s", hdr.DeviceID, toUser(q), envCamera)
			}
			if strings.Contains(e.logs.String(), envCameraPW) {
				t.Error("the device's password is in the log")
			}
		})
	}
}

// Refusals of the registrar, each with the code and reason a device's
// operator reads.
func TestRegisterRefusals(t *testing.T) {
	e := newHandlerEnv(t, nil)
	wrongTarget := e.registerRequest(envCamera, 1, 3600, "")
	wrongTarget.Recipient.User = "34020000002000000099"
	badID := e.registerRequest("camera-1", 1, 3600, "")
	for _, tc := range []struct {
		name   string
		res    *sip.Response
		code   int
		reason string
	}{
		{"wrong password", e.registerAs(envCamera, "guess", 3600), sip.StatusForbidden, "Forbidden (wrong credentials)"},
		{"another device's password", e.registerAs(envNVR, envCameraPW, 3600), sip.StatusForbidden, "Forbidden (wrong credentials)"},
		{"device not in lower.devices", e.register(e.registerRequest(envStranger, 1, 3600, "")), sip.StatusForbidden, "Forbidden (unknown device)"},
		{"for another SIP server", e.register(wrongTarget), sip.StatusForbidden, "Forbidden (not this SIP server)"},
		{"From without a device ID", e.register(badID), sip.StatusBadRequest, "Bad Request (From must carry an 18-20 digit device ID)"},
		{"expiry below register_expires_min", e.registerAs(envCamera, envCameraPW, 30), sip.StatusIntervalToBrief, "Interval Too Brief"},
	} {
		if tc.res.StatusCode != tc.code || tc.res.Reason != tc.reason {
			t.Errorf("%s: answered %d %s, want %d %s", tc.name, tc.res.StatusCode, tc.res.Reason, tc.code, tc.reason)
		}
		if tc.code == sip.StatusIntervalToBrief && header(tc.res, "Min-Expires") != "60" {
			t.Errorf("%s: Min-Expires %q, want 60", tc.name, header(tc.res, "Min-Expires"))
		}
	}
	for _, id := range []string{envCamera, envNVR, envStranger} {
		if d, ok := e.deviceRecord(id); ok && d.Online {
			t.Errorf("device %s online after refused REGISTERs", id)
		}
	}
	if strings.Contains(e.logs.String(), envCameraPW) {
		t.Error("a password is in the log")
	}
}

// After security.lockout.max_failures wrong attempts from one address, even
// the right password is refused from there.
func TestRegisterLockout(t *testing.T) {
	e := newHandlerEnv(t, func(c *configs.Config) { c.Security.Lockout.MaxFailures = 2 })
	for range 2 {
		if res := e.registerAs(envCamera, "guess", 3600); res.StatusCode != sip.StatusForbidden {
			t.Fatalf("wrong password answered %d", res.StatusCode)
		}
	}
	if res := e.registerAs(envCamera, envCameraPW, 3600); res.StatusCode != sip.StatusForbidden || res.Reason != "Forbidden (locked out)" {
		t.Fatalf("right password after the lockout answered %d %s, want 403 Forbidden (locked out)", res.StatusCode, res.Reason)
	}
}

// With lower.allow_unknown any device ID registers with lower.password.
func TestRegisterUnknownDeviceAllowed(t *testing.T) {
	e := newHandlerEnv(t, func(c *configs.Config) { c.Lower.AllowUnknown = true })
	if res := e.registerAs(envStranger, envLowerPW, 3600); res.StatusCode != sip.StatusOK {
		t.Fatalf("answered %d %s, want 200", res.StatusCode, res.Reason)
	}
	if d, ok := e.deviceRecord(envStranger); !ok || !d.Online {
		t.Fatal("device not online")
	}
}

// Expires: 0 ends the registration: 200 with Expires 0, the device offline
// (the B2BUA's hooks told), its keepalives refused afterwards.
func TestRegisterExpiresZeroUnregisters(t *testing.T) {
	e := newHandlerEnv(t, nil)
	var offline []string
	e.c.OnDeviceOffline(func(id, reason string) { offline = append(offline, id+": "+reason) })
	e.online(envCamera, envCameraPW)
	res := e.registerAs(envCamera, envCameraPW, 0)
	if res.StatusCode != sip.StatusOK || header(res, "Expires") != "0" {
		t.Fatalf("answered %d %s Expires %q, want 200 with Expires 0", res.StatusCode, res.Reason, header(res, "Expires"))
	}
	if d, _ := e.deviceRecord(envCamera); d.Online {
		t.Fatal("device still online after Expires: 0")
	}
	if len(offline) != 1 || offline[0] != envCamera+": unregistered" {
		t.Fatalf("offline hooks ran with %q, want one %q", offline, envCamera+": unregistered")
	}
	if res := e.lowerMessage(e.keepalive(envCamera)); res.StatusCode != sip.StatusForbidden {
		t.Fatalf("keepalive after unregistering answered %d, want 403", res.StatusCode)
	}
}

func (e *handlerEnv) keepalive(id string) *sip.Request {
	return e.request(sip.MESSAGE, id, e.device, setDeviceID(testdata(e.t, "keepalive.xml"), id))
}

// A keepalive from a registered device is answered 200 and is its latest
// sign of life; the lower guard admits it as a known peer.
func TestKeepaliveFromRegisteredDevice(t *testing.T) {
	e := newHandlerEnv(t, nil)
	e.online(envNVR, envLowerPW)
	e.clock.advance(45 * time.Second)
	req := e.keepalive(envNVR)
	if v := e.admitLower(req); v.Code != 0 || !v.Known {
		t.Fatalf("lower guard: %+v, want admitted as known", v)
	}
	if res := e.lowerMessage(req); res.StatusCode != sip.StatusOK {
		t.Fatalf("answered %d %s, want 200", res.StatusCode, res.Reason)
	}
	if d, _ := e.deviceRecord(envNVR); !d.LastKeepalive.Equal(e.clock.Now()) {
		t.Fatalf("last keepalive %s, want %s", d.LastKeepalive, e.clock.Now())
	}
}

// A keepalive from a device we don't know, or whose registration ran out,
// gets 403: the device registers again. The guard refuses it first; the
// handler still refuses it (bind_source off lets it through).
func TestKeepaliveFromUnregisteredDevice(t *testing.T) {
	e := newHandlerEnv(t, nil)
	e.online(envNVR, envLowerPW)
	stranger := e.keepalive(envStranger)
	if v := e.admitLower(stranger); v.Code != sip.StatusForbidden || v.Label != refusedNotRegistered {
		t.Errorf("lower guard: %+v, want 403 %s", v, refusedNotRegistered)
	}
	if res := e.lowerMessage(stranger); res.StatusCode != sip.StatusForbidden || res.Reason != "Forbidden (not registered)" {
		t.Errorf("unknown device: answered %d %s, want 403 Forbidden (not registered)", res.StatusCode, res.Reason)
	}
	if _, ok := e.deviceRecord(envStranger); ok {
		t.Error("a keepalive created a device record")
	}
	e.clock.advance(3601 * time.Second)
	if res := e.lowerMessage(e.keepalive(envNVR)); res.StatusCode != sip.StatusForbidden {
		t.Errorf("expired registration: answered %d, want 403", res.StatusCode)
	}
}

// A body that is no MANSCDP is answered 400, whoever sends it.
func TestLowerMalformedBody(t *testing.T) {
	e := newHandlerEnv(t, nil)
	e.online(envNVR, envLowerPW)
	for name, body := range malformedBodies(t, "keepalive.xml") {
		for method, h := range map[sip.RequestMethod]func(*sip.Request) *sip.Response{sip.MESSAGE: e.lowerMessage, sip.NOTIFY: e.lowerNotify} {
			res := h(e.request(method, envNVR, e.device, body))
			if res.StatusCode != sip.StatusBadRequest || res.Reason != "Bad Request (MANSCDP body)" {
				t.Errorf("%s %s: answered %d %s, want 400 Bad Request (MANSCDP body)", method, name, res.StatusCode, res.Reason)
			}
		}
	}
}

// malformedBodies are a sample cut short inside its CmdType, and a body
// that is no XML. (Peek stops once it has CmdType, SN and DeviceID: a body
// cut after those passes, by design.)
func malformedBodies(t *testing.T, sample string) map[string][]byte {
	b := testdata(t, sample)
	cut := bytes.Index(b, []byte("<CmdType>")) + len("<CmdType>") + 3
	return map[string][]byte{"cut inside CmdType": b[:cut], "not XML": []byte("Keepalive OK")}
}

// catalogPart is catalog_response.xml as one MESSAGE of an answer of sumNum
// items, carrying one item: id named name.
func catalogPart(t *testing.T, sn int64, sumNum int, id, name string) []byte {
	body := setSN(testdata(t, "catalog_response.xml"), sn)
	body = setElement(body, "SumNum", strconv.Itoa(sumNum))
	item := bytes.Index(body, []byte("<Item>"))
	return append(body[:item:item], setElement(setElement(body[item:], "DeviceID", id), "Name", name)...)
}

// A device's Catalog answer is stored once complete (SumNum reached), in
// UTF-8 whatever charset it came in.
func TestCatalogResponseStoresChannels(t *testing.T) {
	gb2312 := func(t *testing.T, b []byte) []byte {
		out, err := simplifiedchinese.GBK.NewEncoder().Bytes(b)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	t.Run("sample", func(t *testing.T) {
		e := newHandlerEnv(t, nil)
		e.online(envCamera, envCameraPW)
		res := e.lowerMessage(e.request(sip.MESSAGE, envCamera, e.device, testdata(t, "catalog_response.xml")))
		if res.StatusCode != sip.StatusOK {
			t.Fatalf("answered %d %s", res.StatusCode, res.Reason)
		}
		ch, ok := e.channel(envCamera) // the camera lists itself as its one channel
		if !ok || ch.DeviceID != envCamera || ch.Item.Name != "Camera 01" || ch.Status != "ON" {
			t.Fatalf("channel %s: %v %+v", envCamera, ok, ch)
		}
	})
	t.Run("GB2312 in two MESSAGEs", func(t *testing.T) {
		e := newHandlerEnv(t, nil)
		e.online(envCamera, envCameraPW)
		const gate, yard = "62010201001310000001", "62010201001310000002"
		e.lowerMessage(e.request(sip.MESSAGE, envCamera, e.device, gb2312(t, catalogPart(t, 9, 2, gate, "大门"))))
		if _, ok := e.channel(gate); ok {
			t.Fatal("half an answer stored: SumNum 2, one item received")
		}
		e.lowerMessage(e.request(sip.MESSAGE, envCamera, e.device, gb2312(t, catalogPart(t, 9, 2, yard, "后院"))))
		for id, name := range map[string]string{gate: "大门", yard: "后院"} {
			if ch, ok := e.channel(id); !ok || ch.Item.Name != name || ch.DeviceID != envCamera {
				t.Errorf("channel %s: %v, name %q, want %q of %s", id, ok, ch.Item.Name, name, envCamera)
			}
		}
	})
}

// A device's catalog NOTIFY changes the stored channels at once, and an
// upper subscribed to the catalog hears of it.
func TestCatalogNotifyFromDevice(t *testing.T) {
	e := newHandlerEnv(t, nil)
	e.online(envCamera, envCameraPW)
	e.lowerMessage(e.request(sip.MESSAGE, envCamera, e.device, testdata(t, "catalog_response.xml")))
	e.subscribeCatalog(t)

	const added = "62010201001310000003"
	body := testdata(t, "catalog_response.xml")
	body = bytes.Replace(body, []byte("Response>"), []byte("Notify>"), 2)
	body = bytes.Replace(body, []byte("<Status>ON</Status>"), []byte("<Status>ON</Status>\n<Event>OFF</Event>"), 1)
	body = bytes.Replace(body, []byte("</DeviceList>"), []byte("<Item><DeviceID>"+added+"</DeviceID><Name>new</Name><ParentID>"+envCamera+"</ParentID><Status>ON</Status><Event>ADD</Event></Item>\n</DeviceList>"), 1)
	body = setElement(setElement(body, "SumNum", "2"), "SN", "77")
	if res := e.lowerNotify(e.request(sip.NOTIFY, envCamera, e.device, body)); res.StatusCode != sip.StatusOK {
		t.Fatalf("answered %d %s", res.StatusCode, res.Reason)
	}
	if ch, _ := e.channel(envCamera); ch.Status != "OFF" || ch.Item.Name != "Camera 01" {
		t.Errorf("channel after OFF: status %q name %q, want OFF and the name kept", ch.Status, ch.Item.Name)
	}
	if ch, ok := e.channel(added); !ok || ch.Status != "ON" {
		t.Errorf("added channel: %v status %q", ok, ch.Status)
	}
	n := e.upper.await(t, "catalog NOTIFY", func(r *sip.Request) bool {
		return r.Method == sip.NOTIFY && isMANSCDP(r, manscdp.RootNotify, "Catalog") && bytes.Contains(r.Body(), []byte(added))
	})
	var got manscdp.CatalogNotify
	if err := manscdp.Decode(n.Body(), &got); err != nil {
		t.Fatal(err)
	}
	events := map[string]string{}
	for _, it := range got.DeviceList.Items {
		events[it.DeviceID] = it.Event
	}
	if events[envCamera] != "OFF" || events[added] != "ADD" {
		t.Errorf("NOTIFY to the upper carries events %v, want %s OFF and %s ADD", events, envCamera, added)
	}
	if got := endpoint.HeaderValue(n, "Event"); got != "Catalog;id=1" {
		t.Errorf("NOTIFY Event %q, want the SUBSCRIBE's Catalog;id=1 (RFC 6665: id included)", got)
	}
}

// Digest credentials must name the device the From names: another
// device's username is refused even with the right password.
func TestRegisterCredentialsMustNameTheDevice(t *testing.T) {
	e := newHandlerEnv(t, nil)
	req := e.registerRequest(envCamera, 1, 3600, "")
	res := e.register(req)
	auth, err := security.Authorize(header(res, "WWW-Authenticate"), "REGISTER", req.Recipient.String(), envNVR, security.Secret{Password: envCameraPW})
	if err != nil {
		t.Fatal(err)
	}
	if res := e.register(e.registerRequest(envCamera, 2, 3600, auth)); res.StatusCode != sip.StatusForbidden {
		t.Fatalf("credentials of another ID answered %d, want 403", res.StatusCode)
	}
}

// An alarm MESSAGE is answered 200, then acknowledged (GB/T 28181 §9.4) with
// a Response of the same SN and Result OK.
func TestAlarmFromDeviceAcknowledged(t *testing.T) {
	e := newHandlerEnv(t, nil)
	e.withCamera(t)
	alarm := testdata(t, "alarm_notify.xml") // SN 2, an alarm input's ID
	if res := e.lowerMessage(e.request(sip.MESSAGE, envCamera, e.device, alarm)); res.StatusCode != sip.StatusOK {
		t.Fatalf("answered %d %s", res.StatusCode, res.Reason)
	}
	ack := e.device.await(t, "alarm acknowledgement", func(r *sip.Request) bool { return isMANSCDP(r, manscdp.RootResponse, "Alarm") })
	var m manscdp.Message
	if err := manscdp.Decode(ack.Body(), &m); err != nil {
		t.Fatal(err)
	}
	if m.Text("SN") != "2" || m.Text("DeviceID") != "34020000001340000001" || m.Text("Result") != "OK" || toUser(ack) != envCamera {
		t.Errorf("acknowledgement to %s: SN %q DeviceID %q Result %q", toUser(ack), m.Text("SN"), m.Text("DeviceID"), m.Text("Result"))
	}
}
