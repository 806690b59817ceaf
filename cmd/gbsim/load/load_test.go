package load

import (
	"context"
	"crypto/md5"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testServerID = "34020000002000000001"
	testDomain   = "3402000000"
	testPassword = "12345678"
)

// fakeRegistrar checks digest credentials for real, drops the first REGISTER
// it sees (to force a retransmission), and after each 200 OK sends a Catalog
// query to the device, recording the 200 and the Catalog Response it gets back.
type fakeRegistrar struct {
	t    *testing.T
	conn *net.UDPConn

	mu         sync.Mutex
	dropped    bool
	registered map[string]bool
	queryOK    map[string]bool   // device ID → 200 to our query had a To tag
	catalogs   map[string]string // device ID → Catalog Response body
}

func startFakeRegistrar(t *testing.T) *fakeRegistrar {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRegistrar{t: t, conn: conn, registered: map[string]bool{}, queryOK: map[string]bool{}, catalogs: map[string]string{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.serve()
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return f
}

func (f *fakeRegistrar) serve() {
	buf := make([]byte, 65536)
	for {
		n, from, err := f.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		msg, err := parse(buf[:n])
		if err != nil {
			f.t.Errorf("load generator sent an unparsable message: %v\n%s", err, buf[:n])
			continue
		}
		f.handle(msg, from)
	}
}

func (f *fakeRegistrar) handle(msg message, from *net.UDPAddr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := strings.TrimPrefix(strings.SplitN(msg.header("From"), "@", 2)[0], "<sip:")
	switch {
	case msg.status == 200 && strings.HasPrefix(msg.callID, "query-"):
		f.queryOK[strings.TrimPrefix(msg.callID, "query-")] = strings.Contains(msg.header("To"), ";tag=")
	case msg.method == "MESSAGE":
		f.catalogs[id] = string(msg.body)
		f.reply(msg, from, "200 OK", "")
	case msg.method != "REGISTER":
	case !f.dropped:
		f.dropped = true
	case msg.header("Authorization") == "":
		f.reply(msg, from, "401 Unauthorized", `WWW-Authenticate: Digest realm="`+testDomain+`", nonce="n-`+id+`", opaque="op", algorithm=MD5`)
	case !f.validDigest(msg, id):
		f.reply(msg, from, "403 Forbidden", "")
	default:
		f.reply(msg, from, "200 OK", "")
		if !f.registered[id] {
			f.registered[id] = true
			f.sendQuery(id, from)
		}
	}
}

func (f *fakeRegistrar) validDigest(msg message, id string) bool {
	h := func(s string) string { return fmt.Sprintf("%x", md5.Sum([]byte(s))) }
	uri := "sip:" + testServerID + "@" + testDomain
	want := h(h(id+":"+testDomain+":"+testPassword) + ":n-" + id + ":" + h("REGISTER:"+uri))
	auth := msg.header("Authorization")
	return strings.Contains(auth, `response="`+want+`"`) && strings.Contains(auth, `uri="`+uri+`"`) &&
		strings.Contains(auth, `opaque="op"`) && strings.Contains(auth, `username="`+id+`"`)
}

func (f *fakeRegistrar) reply(req message, to *net.UDPAddr, status, extra string) {
	var b strings.Builder
	b.WriteString("SIP/2.0 " + status + "\r\n")
	for _, name := range []string{"Via", "From", "To", "Call-ID", "CSeq"} {
		b.WriteString(name + ": " + req.header(name) + "\r\n")
	}
	if extra != "" {
		b.WriteString(extra + "\r\n")
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	f.conn.WriteToUDP([]byte(b.String()), to)
}

func (f *fakeRegistrar) sendQuery(id string, to *net.UDPAddr) {
	body := `<?xml version="1.0" encoding="GB2312"?>` + "\r\n<Query>\r\n<CmdType>Catalog</CmdType>\r\n<SN>7</SN>\r\n<DeviceID>" + id + "</DeviceID>\r\n</Query>\r\n"
	msg := fmt.Sprintf("MESSAGE sip:%s@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bKq%s\r\nFrom: <sip:%s@%s>;tag=srv\r\nTo: <sip:%s@%s>\r\n"+
		"i: query-%s\r\nCSeq: 1 MESSAGE\r\nContent-Type: Application/MANSCDP+xml\r\nContent-Length: %d\r\n\r\n%s",
		id, to, f.conn.LocalAddr(), id, testServerID, testDomain, id, testDomain, id, len(body), body)
	f.conn.WriteToUDP([]byte(msg), to)
}

func TestRunRegistersAnswersCatalogAndRetransmits(t *testing.T) {
	f := startFakeRegistrar(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const devices = 20
	res, err := Run(ctx, Config{Server: f.conn.LocalAddr().String(), ServerID: testServerID, Domain: testDomain,
		Password: testPassword, Devices: devices, Concurrency: 8, Sockets: 4})
	if err != nil {
		t.Fatal(err)
	}
	if res.Registered != devices || res.Failed != 0 || res.CatalogAnswered != devices {
		t.Fatalf("got %+v, want %d registered and catalog answers, none failed", res, devices)
	}
	if res.Retransmits < 1 {
		t.Errorf("the dropped first REGISTER was not retransmitted: %+v", res)
	}
	if res.Rate <= 0 || res.Elapsed <= 0 {
		t.Errorf("no rate measured: %+v", res)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	id := "34020000001320000007"
	if !f.queryOK[id] {
		t.Errorf("device %s did not answer the Catalog query with a tagged 200 OK (answers: %v)", id, f.queryOK)
	}
	body := f.catalogs[id]
	for _, want := range []string{"<SN>7</SN>", "<SumNum>1</SumNum>", "<DeviceID>34020000001310000007</DeviceID>", "<ParentID>" + id + "</ParentID>"} {
		if !strings.Contains(body, want) {
			t.Errorf("Catalog Response of %s lacks %s:\n%s", id, want, body)
		}
	}
}

func TestRunCountsRejectedDevices(t *testing.T) {
	f := startFakeRegistrar(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := Run(ctx, Config{Server: f.conn.LocalAddr().String(), ServerID: testServerID, Domain: testDomain,
		Password: "wrong", Devices: 3, Sockets: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Registered != 0 || res.Failed != 3 || res.FailReasons["403 Forbidden"] != 3 {
		t.Fatalf("got %+v, want 3 devices failed with 403 Forbidden", res)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Server: "127.0.0.1:5060", ServerID: testServerID, Domain: testDomain, IDPrefix: "123"},
		{Server: "127.0.0.1:5060", ServerID: testServerID, Domain: testDomain, Devices: 100001},
		{ServerID: testServerID, Domain: testDomain},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("Run(%+v) accepted a bad config", cfg)
		}
	}
}

func TestDigestParams(t *testing.T) {
	for challenge, want := range map[string][3]string{
		`Digest realm="3402000000", nonce="abc", opaque="x,y", algorithm=MD5`: {"3402000000", "abc", "x,y"},
		`Digest algorithm=MD5,nonce="n1",realm="r"`:                           {"r", "n1", ""},
		`Basic realm="r"`:            {},
		`Digest nonce="unterminated`: {"", "unterminated", ""},
	} {
		realm, nonce, opaque := digestParams(challenge)
		if got := [3]string{realm, nonce, opaque}; got != want {
			t.Errorf("digestParams(%q) = %q, want %q", challenge, got, want)
		}
	}
}

func TestParseRejectsGarbage(t *testing.T) {
	for _, raw := range []string{"", "SIP/2.0 abc OK\r\n\r\n", "SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\n", "REGISTER\r\n\r\n", "no headers end"} {
		if _, err := parse([]byte(raw)); err == nil {
			t.Errorf("parse(%q) accepted it", raw)
		}
	}
}
