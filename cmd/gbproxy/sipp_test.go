package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// SIPp (Debian sip-tester) is a third-party SIP stack: if it agrees with us
// on digest, Date and keepalive, we are not merely agreeing with ourselves.
func requireSIPp(t *testing.T) string {
	path, err := exec.LookPath("sipp")
	if err != nil {
		if os.Getenv("GBPROXY_REQUIRE_SIPP") != "" {
			t.Fatal("sipp not installed (apt-get install sip-tester)")
		}
		t.Skip("sipp not installed (apt-get install sip-tester); .ci/run installs it")
	}
	return path
}

// freePort finds a port free for both UDP and TCP on 127.0.0.1.

func runSIPp(t *testing.T, sipp string, csv string, args ...string) *exec.Cmd {
	t.Helper()
	dir := t.TempDir()
	inf := filepath.Join(dir, "fields.csv")
	if err := os.WriteFile(inf, []byte("SEQUENTIAL\n"+csv+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args = append(args, "-inf", inf, "-i", "127.0.0.1", "-m", "1", "-nostdin", "-timeout", "15s",
		"-trace_err", "-error_file", filepath.Join(dir, "errors.log"))
	cmd := exec.Command(sipp, args...)
	cmd.Dir = dir
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "errors.log"))
			t.Logf("sipp errors:\n%s", b)
		}
	})
	return cmd
}

func TestSIPpDeviceRegistersToProxy(t *testing.T) {
	sipp := requireSIPp(t)
	scenario, _ := filepath.Abs("testdata/sipp/device.xml")
	for _, transport := range []string{"u1", "t1"} {
		t.Run(transport, func(t *testing.T) {
			p := startProxy(t, "", "")
			id := "34020000001320000031"
			cmd := runSIPp(t, sipp, id+";"+proxyID+";"+proxyDomain+";[authentication username="+id+" password="+devicePass+"]",
				p.lowerAddr(), "-sf", scenario, "-t", transport, "-p", strconv.Itoa(freePort(t)))
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("SIPp device scenario failed: %v\n%s", err, tail(out))
			}
			dev, ok := p.device(id)
			if !ok || dev.Online {
				t.Fatalf("after SIPp's REGISTER/keepalive/unregister the device should be known and offline: %+v %v", dev, ok)
			}
		})
	}
}

func TestSIPpUpperAcceptsProxyRegistration(t *testing.T) {
	sipp := requireSIPp(t)
	scenario, _ := filepath.Abs("testdata/sipp/upper.xml")
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			port := freePort(t)
			sippTransport := map[string]string{"udp": "u1", "tcp": "t1"}[transport]
			cmd := runSIPp(t, sipp, upperID[:10]+";"+proxyID+";"+upperPass,
				"-sf", scenario, "-t", sippTransport, "-p", strconv.Itoa(port))
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			time.Sleep(300 * time.Millisecond) // SIPp binds its port
			p := startProxy(t, "", upperPlatformYAML("127.0.0.1:"+strconv.Itoa(port), transport))
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("SIPp registrar refused our REGISTER (digest verified by SIPp): %v", err)
				}
			case <-time.After(15 * time.Second):
				cmd.Process.Kill()
				t.Fatal("SIPp registrar saw no REGISTER")
			}
			// SIPp leaves right after its 200 (closing TCP), so count the success.
			eventually(t, 3*time.Second, "a successful upward registration", func() bool {
				return p.metrics.Value("gbproxy_upper_registrations_total", "platform", upperID, "result", "ok") >= 1
			})
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			p.app.stop(ctx) // SIPp is gone: unregister fails quickly, shutdown still completes
		})
	}
}

func tail(b []byte) []byte {
	if len(b) > 2000 {
		return b[len(b)-2000:]
	}
	return b
}
