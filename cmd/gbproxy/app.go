package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/cascade"
	"github.com/gbproxy/gbproxy/cascade/metrics"
	"github.com/gbproxy/gbproxy/cascade/store"
	"github.com/gbproxy/gbproxy/configs"
)

// app is a running gbproxy.
type app struct {
	cfg     *configs.Config
	log     zerolog.Logger
	store   *store.Store
	metrics *metrics.Registry
	cascade *cascade.Cascade
	http    *http.Server
	httpLn  net.Listener
}

func newLogger(c configs.LogConfig, w io.Writer) zerolog.Logger {
	if c.Format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "2006-01-02T15:04:05.000"}
	}
	zerolog.TimeFieldFormat = "2006-01-02T15:04:05.000Z07:00"
	level, err := zerolog.ParseLevel(c.Level)
	if err != nil {
		level = zerolog.InfoLevel
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
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
	a.httpLn, err = net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		a.cascade.Close(context.Background())
		a.store.Close()
		return nil, fmt.Errorf("admin API: listen %s: %w", cfg.HTTP.Listen, err)
	}
	a.http = &http.Server{Handler: a.routes(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := a.http.Serve(a.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("admin API stopped")
		}
	}()
	a.cascade.Start()
	log.Info().Str("id", cfg.ID).Str("lower", a.cascade.LowerAddr()).Str("upper", a.cascade.UpperAddr()).
		Str("api", a.httpLn.Addr().String()).Str("store", cfg.Store.Path).Msg("gbproxy started")
	return a, nil
}

// stop unregisters upward, closes SIP and the API, and flushes the store.
func (a *app) stop(ctx context.Context) error {
	a.http.Shutdown(ctx)
	a.cascade.Close(ctx)
	err := a.store.Close()
	if err == nil {
		a.log.Info().Msg("gbproxy stopped; store closed cleanly")
	}
	return err
}
