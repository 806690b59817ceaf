package main

import (
	"regexp"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
)

func TestDeviceRegistersAndCatalogIsStored(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			p := startProxy(t, "", "")
			id := "34020000001320000001"
			d := newDevice(t, p, id, transport, 3, nil)
			if err := d.Start(ctxTimeout(t, 5*time.Second)); err != nil {
				t.Fatalf("register through 401/200: %v", err)
			}
			if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}$`).MatchString(d.LastRegisterDate()) {
				t.Errorf("200 OK Date %q is not yyyy-MM-ddTHH:mm:ss.SSS", d.LastRegisterDate())
			}
			dev, ok := p.device(id)
			if !ok || !dev.Online || dev.Transport != map[string]string{"udp": "UDP", "tcp": "TCP"}[transport] {
				t.Fatalf("API device = %+v, %v", dev, ok)
			}
			if dev.Remote != d.LocalAddr() {
				t.Errorf("remote %s, device is at %s", dev.Remote, d.LocalAddr())
			}
			eventually(t, 3*time.Second, "3 channels with Chinese names", func() bool {
				chans := p.channels(id)
				return len(chans) == 3 && chans[0].Name == "测试摄像机1号" && chans[0].Status == "ON"
			})
			q, err := d.WaitRequest(ctxTimeout(t, time.Second), "MESSAGE", "Catalog")
			if err != nil {
				t.Fatal(err)
			}
			if transport == "tcp" && !q.OnRegConn {
				t.Error("Catalog query to a TCP device did not come down the device's own connection")
			}
		})
	}
}

func TestWrongPasswordIsForbidden(t *testing.T) {
	p := startProxy(t, "", "")
	d := newDevice(t, p, "34020000001320000002", "udp", 0, func(c *sim.DeviceConfig) { c.Password = "wrong" })
	res, err := d.Register(ctxTimeout(t, 5*time.Second), 3600)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 403 {
		t.Fatalf("wrong password answered %d, want 403", res.StatusCode)
	}
	if _, ok := p.device("34020000001320000002"); ok {
		t.Fatal("device with a wrong password was recorded")
	}
}

func TestUnknownDeviceRefusedWhenNotAllowed(t *testing.T) {
	p := startProxy(t, "", `
lower:
  listen: "127.0.0.1:0"
  allow_unknown: false
  devices: [{id: "34020000001320000003", password: "own-secret"}]
`)
	unknown := newDevice(t, p, "34020000001320000004", "udp", 0, nil)
	res, err := unknown.Register(ctxTimeout(t, 5*time.Second), 3600)
	if err != nil || res.StatusCode != 403 {
		t.Fatalf("unknown device: %v %v, want 403", res, err)
	}
	listed := newDevice(t, p, "34020000001320000003", "udp", 0, func(c *sim.DeviceConfig) { c.Password = "own-secret" })
	if err := listed.Start(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatalf("listed device with its own password: %v", err)
	}
}

func TestShortExpiryAndUnregister(t *testing.T) {
	p := startProxy(t, "", "")
	id := "34020000001320000005"
	d := newDevice(t, p, id, "udp", 0, nil)
	res, err := d.Register(ctxTimeout(t, 5*time.Second), 10)
	if err != nil || res.StatusCode != 423 || res.GetHeader("Min-Expires") == nil {
		t.Fatalf("expires 10: %v %v, want 423 with Min-Expires", res, err)
	}
	res, err = d.Register(ctxTimeout(t, 5*time.Second), 7200)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("register: %v %v", res, err)
	}
	if h := res.GetHeader("Expires"); h == nil || h.Value() != "3600" {
		t.Errorf("granted Expires %v, want capped 3600", h)
	}
	res, err = d.Register(ctxTimeout(t, 5*time.Second), 0)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("unregister: %v %v", res, err)
	}
	if dev, _ := p.device(id); dev.Online {
		t.Fatal("device still online after Expires: 0")
	}
}

func TestKeepaliveTimeoutTurnsDeviceAndChannelsOff(t *testing.T) {
	p := startProxy(t, "", "")
	id := "34020000001320000006"
	d := newDevice(t, p, id, "udp", 2, nil)
	if err := d.Start(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "channels stored", func() bool { return len(p.channels(id)) == 2 })
	// Keepalives flowing keep it online past the timeout (2 × 300 ms).
	time.Sleep(900 * time.Millisecond)
	if dev, _ := p.device(id); !dev.Online || dev.LastKeepalive == nil {
		t.Fatalf("device with keepalives went offline: %+v", dev)
	}
	d.SetKeepalive(false)
	eventually(t, 3*time.Second, "device offline after missed keepalives", func() bool {
		dev, _ := p.device(id)
		return !dev.Online
	})
	for _, c := range p.channels(id) {
		if c.Status != "OFF" {
			t.Errorf("channel %s is %s while its device is offline", c.ID, c.Status)
		}
	}
	d.SetKeepalive(true)
	eventually(t, 3*time.Second, "device back online with keepalives", func() bool {
		dev, _ := p.device(id)
		return dev.Online
	})
}

func TestTCPConnectionCloseTakesDeviceOffline(t *testing.T) {
	p := startProxy(t, "", `
lower:
  listen: "127.0.0.1:0"
  keepalive_interval: 60s
`)
	id := "34020000001320000007"
	d := newDevice(t, p, id, "tcp", 1, nil)
	if err := d.Start(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	d.Close()
	eventually(t, 5*time.Second, "TCP device offline after its connection closed", func() bool {
		dev, _ := p.device(id)
		return !dev.Online
	})
}

func TestRestartKeepsDevicesAndChannels(t *testing.T) {
	dir := t.TempDir()
	p := startProxy(t, dir, "")
	udpID, tcpID := "34020000001320000008", "34020000001320000009"
	du := newDevice(t, p, udpID, "udp", 2, nil)
	dt := newDevice(t, p, tcpID, "tcp", 1, nil)
	for _, d := range []*sim.Device{du, dt} {
		if err := d.Start(ctxTimeout(t, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 3*time.Second, "catalogs stored", func() bool {
		return len(p.channels(udpID)) == 2 && len(p.channels(tcpID)) == 1
	})
	du.SetKeepalive(false)
	dt.Close()
	p.stop()

	p2 := startProxy(t, dir, "")
	u, ok := p2.device(udpID)
	if !ok || !u.Online {
		t.Errorf("UDP device with a valid registration should be online after restart: %+v %v", u, ok)
	}
	tc, ok := p2.device(tcpID)
	if !ok || tc.Online {
		t.Errorf("TCP device should be known and offline after restart: %+v %v", tc, ok)
	}
	if n := len(p2.channels(udpID)); n != 2 {
		t.Errorf("UDP device channels after restart: %d, want 2", n)
	}
	if chans := p2.channels(tcpID); len(chans) != 1 || chans[0].Status != "OFF" {
		t.Errorf("TCP device channels after restart: %+v, want 1 OFF", chans)
	}
}
