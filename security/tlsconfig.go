package security

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/gbproxy/gbproxy/configs"
)

// LoadServerTLS builds the TLS configuration of a SIP listener (lower.tls):
// our certificate and, for mutual TLS, the CA client certificates must chain
// to. Errors name the file and what is wrong with it, for the operator.
func LoadServerTLS(c configs.TLSServerConfig) (*tls.Config, error) {
	if c.Cert == "" || c.Key == "" {
		return nil, errors.New("TLS server: cert and key files are required")
	}
	cert, err := loadKeyPair(c.Cert, c.Key)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if c.ClientCA != "" {
		if cfg.ClientCAs, err = loadCAs(c.ClientCA); err != nil {
			return nil, err
		}
		// Without require_client_cert a certificate is optional, but one
		// that is sent must chain to client_ca.
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	if c.RequireClientCert {
		if cfg.ClientCAs == nil {
			return nil, errors.New("TLS server: require_client_cert needs client_ca (the CA that signs the clients' certificates)")
		}
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// LoadClientTLS builds the configuration we connect to an upper platform
// with: the CA its certificate must chain to (system roots when empty), our
// client certificate when it asks for one, and the name verified in its
// certificate (server_name, else defaultServerName: the address's host).
func LoadClientTLS(c configs.TLSClientConfig, defaultServerName string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if cfg.ServerName == "" {
		cfg.ServerName = defaultServerName
	}
	if c.CA != "" {
		pool, err := loadCAs(c.CA)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if (c.Cert == "") != (c.Key == "") {
		return nil, errors.New("TLS client: cert and key go together (set both or neither)")
	}
	if c.Cert != "" {
		cert, err := loadKeyPair(c.Cert, c.Key)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func loadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("TLS certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("TLS key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("TLS certificate %s with key %s: %w (both must be PEM, and the key must be the certificate's)", certFile, keyFile, err)
	}
	return cert, nil
}

func loadCAs(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("TLS CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("TLS CA %s: no PEM certificate found in the file", file)
	}
	return pool, nil
}
