// Package testpki makes a throw-away certificate authority for tests of SIP
// over TLS: a CA, a server certificate for 127.0.0.1 and a client
// certificate, generated in memory so no key is ever committed.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is one CA with a server and a client certificate it signed.
type PKI struct {
	CA     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	CAPEM  []byte
	Server tls.Certificate // CN gbproxy-test-server, IP SAN 127.0.0.1
	Client tls.Certificate // CN gbproxy-test-client
	// PEM forms, for files.
	ServerCertPEM, ServerKeyPEM, ClientCertPEM, ClientKeyPEM []byte
}

// Files are a PKI written to disk, as a config names them.
type Files struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
}

// New generates a fresh PKI; failures end the test.
func New(t testing.TB) *PKI {
	t.Helper()
	caKey := newKey(t)
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "gbproxy-test-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatalf("create CA certificate: %v", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse CA certificate: %v", err)
	}
	p := &PKI{CA: ca, caKey: caKey, CAPEM: pemBlock("CERTIFICATE", der)}
	p.Server, p.ServerCertPEM, p.ServerKeyPEM = p.issue(t, 2, "gbproxy-test-server", x509.ExtKeyUsageServerAuth)
	p.Client, p.ClientCertPEM, p.ClientKeyPEM = p.issue(t, 3, "gbproxy-test-client", x509.ExtKeyUsageClientAuth)
	return p
}

func (p *PKI) issue(t testing.TB, serial int64, cn string, usage x509.ExtKeyUsage) (tls.Certificate, []byte, []byte) {
	t.Helper()
	key := newKey(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	if usage == x509.ExtKeyUsageServerAuth {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.CA, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatalf("create %s certificate: %v", cn, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("marshal %s key: %v", cn, err)
	}
	certPEM, keyPEM := pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", keyDER)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("load %s key pair: %v", cn, err)
	}
	return cert, certPEM, keyPEM
}

// Pool is a cert pool holding the CA.
func (p *PKI) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.CA)
	return pool
}

// ServerConfig is a listener's configuration; with requireClient, clients
// must present a certificate signed by the CA.
func (p *PKI) ServerConfig(requireClient bool) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{p.Server}}
	if requireClient {
		c.ClientCAs, c.ClientAuth = p.Pool(), tls.RequireAndVerifyClientCert
	}
	return c
}

// ClientConfig trusts the CA; withCert also presents the client certificate.
func (p *PKI) ClientConfig(withCert bool) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: p.Pool()}
	if withCert {
		c.Certificates = []tls.Certificate{p.Client}
	}
	return c
}

// Write puts every certificate and key in dir as PEM files.
func (p *PKI) Write(t testing.TB, dir string) Files {
	t.Helper()
	f := Files{
		CA:         filepath.Join(dir, "ca.pem"),
		ServerCert: filepath.Join(dir, "server.pem"),
		ServerKey:  filepath.Join(dir, "server.key"),
		ClientCert: filepath.Join(dir, "client.pem"),
		ClientKey:  filepath.Join(dir, "client.key"),
	}
	for name, data := range map[string][]byte{
		f.CA: p.CAPEM, f.ServerCert: p.ServerCertPEM, f.ServerKey: p.ServerKeyPEM,
		f.ClientCert: p.ClientCertPEM, f.ClientKey: p.ClientKeyPEM,
	} {
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	return k
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
