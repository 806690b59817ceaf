package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
	"github.com/gbproxy/gbproxy/security/testpki"
)

// SIP over TLS on both sides, with certificates made by the test: devices
// and lower platforms connect to lower.tls_listen (mutual TLS), the proxy
// registers to its upper over TLS. Media stays RTP.

// tlsProxyYAML: lower.tls_listen requiring client certificates from pki's
// CA; the upper platform at upperTLS over TLS, presenting our client
// certificate when withCert.
func tlsProxyYAML(f testpki.Files, upperTLS string, withCert bool) string {
	cert := ""
	if withCert {
		cert = fmt.Sprintf("cert: %q, key: %q, ", f.ClientCert, f.ClientKey)
	}
	return fmt.Sprintf(`
lower:
  listen: "127.0.0.1:0"
  keepalive_interval: 300ms
  keepalive_timeout_count: 3
  catalog_timeout: 2s
  tls_listen: "127.0.0.1:0"
  tls: {cert: %q, key: %q, client_ca: %q, require_client_cert: true}
upper:
  listen: "127.0.0.1:0"
  platforms:
    - id: %q
      address: %q
      transport: tls
      tls: {%sca: %q}
      password: %q
      keepalive_interval: 300ms
      retry_interval: 300ms
`, f.ServerCert, f.ServerKey, f.CA, upperID, upperTLS, cert, f.CA, upperPass)
}

// tlsUpper is an upper simulator that also listens TLS, requiring a client
// certificate from pki's CA.
func tlsUpper(t *testing.T, pki *testpki.PKI) *sim.Upper {
	return newUpper(t, "127.0.0.1:0", func(c *sim.UpperConfig) { c.TLS = pki.ServerConfig(true) })
}

func TestTLSDeviceAndUpperEndToEnd(t *testing.T) {
	t.Parallel()
	pki := testpki.New(t)
	files := pki.Write(t, t.TempDir())
	up := tlsUpper(t, pki)
	p := startProxy(t, "", tlsProxyYAML(files, up.TLSAddr(), true))
	if p.cascade.LowerTLSAddr() == "" {
		t.Fatal("no lower TLS listener")
	}
	ctx := ctxTimeout(t, 30*time.Second)

	// The device registers over TLS and its catalog arrives.
	d := newDevice(t, nil, liveDevice, "tls", 2, func(c *sim.DeviceConfig) {
		c.Server = p.cascade.LowerTLSAddr()
		c.TLS = pki.ClientConfig(true)
	})
	if err := d.Start(ctx); err != nil {
		t.Fatalf("register over TLS: %v", err)
	}
	dev, ok := p.device(liveDevice)
	if !ok || !dev.Online || dev.Transport != "TLS" || dev.Remote != d.LocalAddr() {
		t.Fatalf("API device = %+v (device at %s), want online over TLS", dev, d.LocalAddr())
	}
	eventually(t, 5*time.Second, "2 channels stored", func() bool { return len(p.channels(liveDevice)) == 2 })
	q, err := d.WaitRequest(ctx, "MESSAGE", "Catalog")
	if err != nil {
		t.Fatal(err)
	}
	if q.Transport != "TLS" || !q.OnRegConn {
		t.Errorf("catalog query came over %s (on the registration connection: %v), want down the device's TLS connection", q.Transport, q.OnRegConn)
	}
	if ct := q.Request.Contact(); ct == nil || !strings.Contains(ct.Address.String(), "transport=tls") {
		t.Errorf("Contact of our query to a TLS device: %v, want ;transport=tls", q.Request.Contact())
	}

	// The proxy registers upward over TLS and answers the upper's catalog query.
	lower, err := up.WaitRegistered(ctx, proxyID)
	if err != nil {
		t.Fatal(err)
	}
	if lower.Transport != "TLS" || !strings.Contains(lower.Contact, "transport=tls") {
		t.Errorf("upper saw our REGISTER over %s with Contact %s, want TLS and ;transport=tls", lower.Transport, lower.Contact)
	}
	items, sum, err := up.QueryCatalog(ctx, proxyID)
	if err != nil {
		t.Fatal(err)
	}
	if sum != 2 || len(items) != 2 {
		t.Fatalf("catalog over TLS: SumNum %d with %d items, want 2", sum, len(items))
	}

	// Live video: the upper's INVITE comes over TLS, the device's down its
	// TLS connection; the media is RTP over UDP.
	ch := sim.MakeChannels(liveDevice, 2)[0].ID
	play, err := up.Play(ctx, proxyID, ch, sim.PlayOptions{Transport: "udp", SSRC: "0100000001"})
	if err != nil {
		t.Fatal(err)
	}
	inv, err := d.WaitRequest(ctx, "INVITE", "")
	if err != nil {
		t.Fatal(err)
	}
	if inv.Transport != "TLS" || !inv.OnRegConn {
		t.Errorf("device got the INVITE over %s (on its registration connection: %v), want its TLS connection", inv.Transport, inv.OnRegConn)
	}
	if _, err := play.WaitBytes(ctx, clipBytes(t)); err != nil {
		t.Fatal(err)
	}
	st := d.Streams()[0]
	got := play.Payload()
	var sent []byte
	eventually(t, time.Second, "device's record to catch up", func() bool { sent = d.SentPayload(st.CallID); return len(sent) >= len(got) })
	if !bytes.Equal(got, sent[:len(got)]) {
		t.Fatalf("upper received %d bytes that differ from what the device sent", len(got))
	}
	if err := play.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WaitStream(ctx, func(s sim.StreamInfo) bool { return s.CallID == st.CallID && s.Ended }); err != nil {
		t.Fatal("device call not ended after the upper's BYE: ", err)
	}
	requireClean(t, p)

	// Losing the TLS connection takes the device offline, for that reason.
	d.Close()
	eventually(t, 5*time.Second, "device offline after its TLS connection closed", func() bool {
		dev, _ := p.device(liveDevice)
		return !dev.Online
	})
	if n := p.metrics.Value("gbproxy_device_offline_total", "reason", "connection closed"); n != 1 {
		t.Errorf("devices offline for their connection closing: %d, want 1", n)
	}
}

// Without the certificate lower.tls.client_ca signs, a device is refused
// in the TLS handshake and never registers; an upper that requires one
// refuses a proxy configured without it.
func TestTLSWithoutClientCertificateRefused(t *testing.T) {
	t.Parallel()
	pki := testpki.New(t)
	files := pki.Write(t, t.TempDir())
	up := tlsUpper(t, pki)
	p := startProxy(t, "", tlsProxyYAML(files, up.TLSAddr(), false))

	for name, mutate := range map[string]func(*sim.DeviceConfig){
		"no certificate": func(c *sim.DeviceConfig) { c.TLS = pki.ClientConfig(false) },
		"foreign certificate": func(c *sim.DeviceConfig) {
			c.TLS = testpki.New(t).ClientConfig(true)
			c.TLS.RootCAs = pki.Pool()
		},
	} {
		id := "34020000001320000077"
		d := newDevice(t, nil, id, "tls", 1, func(c *sim.DeviceConfig) {
			c.Server = p.cascade.LowerTLSAddr()
			mutate(c)
		})
		res, err := d.Register(ctxTimeout(t, 2*time.Second), 3600)
		if err == nil && res.StatusCode == 200 {
			t.Errorf("%s: registered over TLS", name)
		}
		if _, ok := p.device(id); ok {
			t.Errorf("%s: device recorded", name)
		}
		d.Close()
	}

	// Under TLS 1.3 our handshake completes before the upper's refusal: the
	// REGISTER then waits out its timeout (8 s).
	eventually(t, 20*time.Second, "upward registration failing", func() bool {
		pl := p.platform(upperID)
		return !pl.Registered && pl.LastError != ""
	})
	for _, r := range up.Requests() {
		t.Errorf("upper requiring a client certificate got %s from a proxy without one", r.Method)
	}
}
