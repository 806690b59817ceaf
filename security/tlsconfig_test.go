package security

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gbproxy/gbproxy/configs"
	"github.com/gbproxy/gbproxy/security/testpki"
)

func TestLoadServerTLS(t *testing.T) {
	dir := t.TempDir()
	f := testpki.New(t).Write(t, dir)

	cfg, err := LoadServerTLS(configs.TLSServerConfig{Cert: f.ServerCert, Key: f.ServerKey})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS12 || len(cfg.Certificates) != 1 || cfg.ClientAuth != tls.NoClientCert {
		t.Errorf("plain server config: min %x, %d certs, client auth %v", cfg.MinVersion, len(cfg.Certificates), cfg.ClientAuth)
	}
	cfg, err = LoadServerTLS(configs.TLSServerConfig{Cert: f.ServerCert, Key: f.ServerKey, ClientCA: f.CA, RequireClientCert: true})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ClientAuth != tls.RequireAndVerifyClientCert || cfg.ClientCAs == nil {
		t.Errorf("mutual TLS: client auth %v, CAs %v", cfg.ClientAuth, cfg.ClientCAs)
	}
	cfg, err = LoadServerTLS(configs.TLSServerConfig{Cert: f.ServerCert, Key: f.ServerKey, ClientCA: f.CA})
	if err != nil || cfg.ClientAuth != tls.VerifyClientCertIfGiven {
		t.Errorf("optional client certificate: %v, %v", cfg.ClientAuth, err)
	}
}

func TestLoadClientTLS(t *testing.T) {
	f := testpki.New(t).Write(t, t.TempDir())
	cfg, err := LoadClientTLS(configs.TLSClientConfig{CA: f.CA, Cert: f.ClientCert, Key: f.ClientKey}, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ServerName != "127.0.0.1" || cfg.RootCAs == nil || len(cfg.Certificates) != 1 || cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("client config: name %q, roots %v, %d certs", cfg.ServerName, cfg.RootCAs, len(cfg.Certificates))
	}
	cfg, err = LoadClientTLS(configs.TLSClientConfig{ServerName: "sip.example"}, "127.0.0.1")
	if err != nil || cfg.ServerName != "sip.example" || cfg.RootCAs != nil {
		t.Errorf("server_name wins, system roots when no CA: %q %v %v", cfg.ServerName, cfg.RootCAs, err)
	}
}

// Each error names the file and what is wrong, so the operator can fix it.
func TestLoadTLSErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	f := testpki.New(t).Write(t, dir)
	other := testpki.New(t).Write(t, t.TempDir())
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	cases := []struct {
		name string
		load func() error
		want []string
	}{
		{"missing cert", func() error {
			_, err := LoadServerTLS(configs.TLSServerConfig{Cert: missing, Key: f.ServerKey})
			return err
		}, []string{missing, "no such file"}},
		{"garbage cert", func() error {
			_, err := LoadServerTLS(configs.TLSServerConfig{Cert: garbage, Key: f.ServerKey})
			return err
		}, []string{garbage, "PEM"}},
		{"key of another certificate", func() error {
			_, err := LoadServerTLS(configs.TLSServerConfig{Cert: f.ServerCert, Key: other.ServerKey})
			return err
		}, []string{f.ServerCert, other.ServerKey, "the certificate's"}},
		{"garbage client CA", func() error {
			_, err := LoadServerTLS(configs.TLSServerConfig{Cert: f.ServerCert, Key: f.ServerKey, ClientCA: garbage, RequireClientCert: true})
			return err
		}, []string{garbage, "no PEM certificate"}},
		{"require without CA", func() error {
			_, err := LoadServerTLS(configs.TLSServerConfig{Cert: f.ServerCert, Key: f.ServerKey, RequireClientCert: true})
			return err
		}, []string{"client_ca"}},
		{"missing upper CA", func() error {
			_, err := LoadClientTLS(configs.TLSClientConfig{CA: missing}, "127.0.0.1")
			return err
		}, []string{missing}},
		{"client cert without key", func() error {
			_, err := LoadClientTLS(configs.TLSClientConfig{Cert: f.ClientCert}, "127.0.0.1")
			return err
		}, []string{"cert and key go together"}},
	}
	for _, c := range cases {
		err := c.load()
		if err == nil {
			t.Errorf("%s: loaded", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", c.name, err, w)
			}
		}
	}
}
