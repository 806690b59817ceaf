package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
)

// tlsFlags are the PEM files a simulator's SIP over TLS uses.
type tlsFlags struct {
	ca, cert, key, serverName string
}

func (f *tlsFlags) register(fs *flag.FlagSet, caHelp string) {
	fs.StringVar(&f.ca, "tls-ca", "", caHelp)
	fs.StringVar(&f.cert, "tls-cert", "", "PEM certificate presented over TLS")
	fs.StringVar(&f.key, "tls-key", "", "PEM private key of --tls-cert")
}

// client is a device's configuration: trust --tls-ca, present --tls-cert
// when given.
func (f *tlsFlags) client() (*tls.Config, error) {
	if f.ca == "" {
		return nil, errors.New("--transport tls needs --tls-ca (the CA that signs the server's certificate)")
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.serverName}
	var err error
	if c.RootCAs, err = certPool(f.ca); err != nil {
		return nil, err
	}
	if f.cert != "" || f.key != "" {
		cert, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert %s / --tls-key %s: %w", f.cert, f.key, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// server is an upper's configuration: present --tls-cert and, with
// --tls-ca, require client certificates it signed.
func (f *tlsFlags) server() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(f.cert, f.key)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %s / --tls-key %s: %w", f.cert, f.key, err)
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if f.ca != "" {
		if c.ClientCAs, err = certPool(f.ca); err != nil {
			return nil, err
		}
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c, nil
}

func certPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in the file", file)
	}
	return pool, nil
}
