package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/b2bua"
	"github.com/gbproxy/gbproxy/cascade"
	"github.com/gbproxy/gbproxy/cluster"
	"github.com/gbproxy/gbproxy/configs"
	"github.com/gbproxy/gbproxy/metrics"
	"github.com/gbproxy/gbproxy/relay"
	"github.com/gbproxy/gbproxy/security"
	"github.com/gbproxy/gbproxy/store"
)

// app is a running gbproxy.
type app struct {
	cfg     *configs.Config
	log     zerolog.Logger
	store   *store.Store
	metrics *metrics.Registry
	cluster *cluster.Cluster // nil on a single node
	cascade *cascade.Cascade
	relay   *relay.Relay
	b2bua   *b2bua.B2BUA
	http    *http.Server
	httpLn  net.Listener
}

func newLogger(c configs.LogConfig, w io.Writer) zerolog.Logger {
	zerolog.TimeFieldFormat = "2006-01-02T15:04:05.000Z07:00"
	// Durations read as durations ("5s"): a bare 5000 is taken for seconds.
	zerolog.DurationFieldFormat = zerolog.DurationFormatString
	level, err := zerolog.ParseLevel(c.Level)
	if err != nil {
		level = zerolog.InfoLevel
	}
	switch c.Format {
	case "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "2006-01-02T15:04:05.000"}
	case "journald":
		// journald stamps each line itself, and reads the priority from the
		// prefix: no timestamp of ours.
		return zerolog.New(journaldWriter{w}).Level(level)
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}

// journaldWriter prefixes each JSON line with its syslog priority, "<3>" for
// an error (sd-daemon(3)): journald, reading a service's stderr, strips the
// prefix and files the line under that priority (journalctl -p warning).
// Unlike zerolog's journald package it needs no journal socket, so the same
// binary logs sensibly when run by hand.
type journaldWriter struct{ w io.Writer }

func (j journaldWriter) Write(p []byte) (int, error) {
	return j.WriteLevel(zerolog.NoLevel, p)
}

func (j journaldWriter) WriteLevel(l zerolog.Level, p []byte) (int, error) {
	prio := byte('5') // notice: zerolog's NoLevel, e.g. Log()
	switch l {
	case zerolog.TraceLevel, zerolog.DebugLevel:
		prio = '7'
	case zerolog.InfoLevel:
		prio = '6'
	case zerolog.WarnLevel:
		prio = '4'
	case zerolog.ErrorLevel:
		prio = '3'
	case zerolog.FatalLevel:
		prio = '2'
	case zerolog.PanicLevel:
		prio = '0'
	}
	// One write per line, so concurrent events never interleave.
	line := make([]byte, 0, len(p)+3)
	line = append(line, '<', prio, '>')
	if _, err := j.w.Write(append(line, p...)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// start opens the store, both SIP zones and the admin API.
func start(cfg *configs.Config, log zerolog.Logger) (*app, error) {
	a := &app{cfg: cfg, log: log, metrics: metrics.New()}
	var err error
	a.store, err = store.Open(cfg.Store.Path, store.Options{Logger: log})
	if err != nil {
		return nil, err
	}
	a.cascade, err = cascade.New(cfg, a.store, log, a.metrics)
	if err != nil {
		a.store.Close()
		return nil, err
	}
	a.relay, err = relay.New(relay.Config{
		PortMin: cfg.Media.PortMin, PortMax: cfg.Media.PortMax,
		IdleTimeout: cfg.Media.NoMediaTimeout, MaxUDPPayload: cfg.Media.MaxUDPPacket, Logger: log,
	})
	if err != nil {
		a.cascade.Close(context.Background())
		a.store.Close()
		return nil, err
	}
	a.b2bua = b2bua.New(b2bua.Options{
		Config: cfg, Lower: a.cascade.LowerEndpoint(), Upper: a.cascade.UpperEndpoint(),
		Directory: a.cascade, Relay: a.relay, Logger: log, Metrics: a.metrics,
	})
	a.cascade.OnDeviceOffline(a.b2bua.DeviceOffline)
	a.cascade.OnDeviceDialogMessage(a.b2bua.DeviceDialogMessage)
	a.cascade.OnUpperLost(a.b2bua.UpperLost)
	a.cascade.OnForwardedDialogMessage(a.b2bua.ForwardedMessage)
	a.httpLn, err = net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		a.b2bua.Close(context.Background())
		a.relay.Close()
		a.cascade.Close(context.Background())
		a.store.Close()
		return nil, fmt.Errorf("admin API: listen %s: %w", cfg.HTTP.Listen, err)
	}
	if cfg.Cluster.Enabled() {
		if a.cluster, err = joinCluster(cfg, a.cascade.UpperAddr(), a.httpLn.Addr().String(), log, a.metrics); err != nil {
			a.httpLn.Close()
			a.b2bua.Close(context.Background())
			a.relay.Close()
			a.cascade.Close(context.Background())
			a.store.Close()
			return nil, err
		}
		a.cascade.CountStreams(func() int { _, streams, _ := a.b2bua.Counts(); return streams })
		a.cascade.UseCluster(a.cluster)
	}
	a.http = &http.Server{Handler: a.routes(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := a.http.Serve(a.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("admin API stopped")
		}
	}()
	a.cascade.Start()
	for _, w := range cfg.Warnings() {
		log.Warn().Msg(w)
	}
	log.Info().Str("id", cfg.ID).Str("lower", a.cascade.LowerAddr()).Str("upper", a.cascade.UpperAddr()).
		Str("api", a.httpLn.Addr().String()).Str("store", cfg.Store.Path).Msg("gbproxy started")
	return a, nil
}

// stop ends live calls (BYE both ways), unregisters upward, closes SIP and
// the API, and flushes the store.
func (a *app) stop(ctx context.Context) error {
	if err := a.http.Shutdown(ctx); err != nil {
		a.log.Warn().Err(err).Msg("admin API: requests still running at shutdown were cut off")
	}
	a.b2bua.Close(ctx)
	a.relay.Close()
	a.cascade.Close(ctx)
	if a.cluster != nil {
		// After the cascade: revoking our lease drops our devices and
		// channels from the cluster at once.
		if err := a.cluster.Close(); err != nil {
			a.log.Warn().Err(err).Msg("leaving the cluster: etcd did not take our goodbye; the other nodes see us gone after cluster.node_ttl")
		}
	}
	err := a.store.Close()
	if err == nil {
		a.log.Info().Msg("gbproxy stopped; store closed cleanly")
	}
	return err
}

// joinCluster opens this node's membership in the cluster's etcd. The upper
// side and the API (bound at upperAddr and apiAddr) are announced at their
// own host, or at the advertised one when they listen on every address.
func joinCluster(cfg *configs.Config, upperAddr, apiAddr string, log zerolog.Logger, m *metrics.Registry) (*cluster.Cluster, error) {
	advHost, _, _ := net.SplitHostPort(cfg.Cluster.Advertise)
	reachable := func(addr string) string {
		host, port, _ := net.SplitHostPort(addr)
		if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
			host = advHost
		}
		return net.JoinHostPort(host, port)
	}
	var tlsCfg *tls.Config
	if cfg.Cluster.UsesTLS() {
		var err error
		// No default server name: the etcd client verifies each endpoint's host.
		if tlsCfg, err = security.LoadClientTLS(cfg.Cluster.TLS, ""); err != nil {
			return nil, fmt.Errorf("cluster.tls: %w", err)
		}
	}
	cl, err := cluster.Open(context.Background(), cluster.Config{
		Endpoints: cfg.Cluster.Etcd, NodeID: cfg.Cluster.NodeID, Advertise: cfg.Cluster.Advertise,
		Upper: reachable(upperAddr), API: reachable(apiAddr),
		TTL: cfg.Cluster.NodeTTL, Metrics: m,
		TLS: tlsCfg, Username: cfg.Cluster.Username, Password: cfg.Cluster.Password,
	}, log.With().Str("component", "cluster").Logger())
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	return cl, nil
}
