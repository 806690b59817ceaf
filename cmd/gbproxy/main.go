// Command gbproxy is the GB/T 28181 cascade proxy. This file only reads
// flags, loads the configuration and handles signals; app.go wires the parts.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gbproxy/gbproxy/cascade"
	"github.com/gbproxy/gbproxy/configs"
	"github.com/gbproxy/gbproxy/endpoint"
)

func main() {
	configPath := flag.String("config", "", "YAML config file (default: the embedded configs/default.yaml)")
	checkPath := flag.String("check-config", "", "validate this config file and exit")
	flag.Parse()

	if *checkPath != "" {
		if _, err := configs.Load(*checkPath); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Println("config OK:", *checkPath)
		return
	}
	cfg, err := configs.Load(*configPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	log := newLogger(cfg.Log, os.Stderr)
	endpoint.RouteLibraryLogs(log)
	a, err := start(cfg, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gbproxy:", err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	s := a.serveSignals(*configPath, sig)
	a.log.Info().Str("signal", s.String()).Msg("shutting down: unregistering from upper platforms")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.stop(ctx); err != nil {
		a.log.Error().Err(err).Msg("shutdown incomplete")
		os.Exit(1)
	}
}

// serveSignals reloads the config file on SIGHUP and returns the first
// other signal: the one that asks gbproxy to stop.
func (a *app) serveSignals(configPath string, sig <-chan os.Signal) os.Signal {
	for s := range sig {
		if s != syscall.SIGHUP {
			return s
		}
		a.reload(configPath)
	}
	return nil
}

// reload re-reads the config file with the loader of the start and
// applies the difference of upper.platforms and lower.devices to the
// running set (the cascade logs each change). A file that does not load
// changes nothing.
func (a *app) reload(configPath string) {
	log := a.log.With().Str("config", configPath).Logger()
	next, err := configs.Load(configPath)
	if err != nil {
		log.Error().Err(err).Msg("SIGHUP: config not reloaded, nothing changed")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := a.cascade.ApplyFile(ctx, next)
	switch {
	case errors.Is(err, cascade.ErrClosed):
		return
	case err != nil:
		log.Error().Err(err).Msg("SIGHUP: some changes could not be applied; the others were")
	}
	if keys := configs.RestartKeys(a.cfg, next); len(keys) > 0 {
		log.Warn().Strs("keys", keys).Msg("SIGHUP: these changed keys take effect only after a restart")
	}
	log.Info().Int("changes", n).Msg("SIGHUP: config reloaded")
}
