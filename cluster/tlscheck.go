package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// tlsProblem dials the first TLS endpoint itself to say why etcd is not
// answering: clientv3 reports a refused handshake as a bare deadline. nil
// when there is no TLS endpoint or the handshake is fine.
func (c *Cluster) tlsProblem(ctx context.Context) error {
	addr := ""
	for _, ep := range c.cfg.Endpoints {
		scheme, a, found := strings.Cut(ep, "://")
		if !found {
			scheme, a = "", ep
		}
		if scheme == "https" || (c.cfg.TLS != nil && scheme != "http") {
			addr = a
			break
		}
	}
	if addr == "" {
		return nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.cfg.TLS != nil {
		cfg = c.cfg.TLS.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(addr)
	}
	cfg.NextProtos = []string{"h2"}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("TLS to %s: %w", addr, err)
	}
	defer conn.Close()
	// A client certificate etcd refuses is told after the handshake
	// (TLS 1.3): the alert comes where its HTTP/2 settings would.
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	var b [1]byte
	if _, err := conn.Read(b[:]); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		return fmt.Errorf("TLS to %s: %w", addr, err)
	}
	return nil
}
