// Command gbproxy is the GB/T 28181 cascade proxy. This file only reads
// flags, loads the configuration and handles signals; app.go wires the parts.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

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
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	s := <-sig
	a.log.Info().Str("signal", s.String()).Msg("shutting down: unregistering from upper platforms")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.stop(ctx); err != nil {
		a.log.Error().Err(err).Msg("shutdown incomplete")
		os.Exit(1)
	}
}
