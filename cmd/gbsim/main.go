// Command gbsim runs GB/T 28181 simulators against gbproxy or any GB28181 platform:
//
//	gbsim device --server 127.0.0.1:5060 --server-id 34020000002000000001 --id 34020000001320000001 --transport tcp --channels 4
//	gbsim upper --listen 127.0.0.1:15060 --id 34020000002000000002 --password 12345678 --query-catalog-every 30s
//
// Run "gbsim <subcommand> -h" for every flag.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
)

const usage = `usage: gbsim <subcommand> [flags]

subcommands:
  device   simulate an IPC/NVR that registers to a SIP server (the proxy's lower side)
  upper    simulate an upper platform the proxy registers to

Run "gbsim <subcommand> -h" for its flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "device":
		err = runDevice(ctx, args)
	case "upper":
		err = runUpper(ctx, args)
	// case "load": reserved for the load generator (many devices at once), to be added here.
	case "help", "-h", "--help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "gbsim: unknown subcommand %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gbsim:", err)
		os.Exit(1)
	}
}

func newLogger(verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log) // sipgo logs some connection events through the default logger
	return log
}

func runDevice(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("gbsim device", flag.ContinueOnError)
	var cfg sim.DeviceConfig
	fs.StringVar(&cfg.Server, "server", "127.0.0.1:5060", "SIP server host:port (the proxy's lower listen address)")
	fs.StringVar(&cfg.ServerID, "server-id", "34020000002000000001", "SIP server's 20-digit ID")
	fs.StringVar(&cfg.Domain, "domain", "", "SIP domain (default: first 10 digits of --server-id)")
	fs.StringVar(&cfg.ID, "id", "34020000001320000001", "device's 20-digit ID")
	fs.StringVar(&cfg.Transport, "transport", "udp", "udp or tcp (tcp: one persistent connection, no listening socket)")
	fs.StringVar(&cfg.LocalAddr, "local", "127.0.0.1:0", "local address")
	fs.StringVar(&cfg.Username, "username", "", "digest username (default: --id)")
	fs.StringVar(&cfg.Password, "password", "12345678", "digest password")
	fs.IntVar(&cfg.Expires, "expires", 3600, "registration expiry, seconds")
	fs.DurationVar(&cfg.KeepaliveInterval, "keepalive", 60*time.Second, "keepalive interval; negative disables keepalives")
	fs.DurationVar(&cfg.RetryInterval, "retry", 60*time.Second, "wait before registering again after a failure")
	channels := fs.Int("channels", 4, "number of cameras in the catalog")
	fs.IntVar(&cfg.CatalogPerMessage, "catalog-per-message", 1, "catalog items per Response MESSAGE")
	fs.DurationVar(&cfg.CatalogInterval, "catalog-interval", 0, "pause between catalog Response MESSAGEs")
	fs.StringVar(&cfg.Charset, "charset", sim.CharsetGB2312,
		"answer charset: gb2312, utf-8, or utf-8-as-gb2312 (declares GB2312, sends UTF-8)")
	fs.StringVar(&cfg.Manufacturer, "manufacturer", "gbsim", "DeviceInfo and catalog manufacturer")
	fs.StringVar(&cfg.Model, "model", "IPC-SIM", "DeviceInfo and catalog model")
	fs.StringVar(&cfg.Firmware, "firmware", "1.0", "DeviceInfo firmware")
	verbose := fs.Bool("v", false, "debug logs, SIP stack included")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *channels < 0 {
		return errors.New("--channels must not be negative")
	}
	log := newLogger(*verbose)
	cfg.Logger = log
	cfg.Channels = sim.MakeChannels(cfg.ID, *channels)
	d, err := sim.NewDevice(cfg)
	if err != nil {
		return err
	}
	defer d.Close()

	for {
		err := d.Start(ctx)
		if err == nil {
			break
		}
		log.Error("registration failed", "error", err, "retry_in", cfg.RetryInterval)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(cfg.RetryInterval):
		}
	}
	log.Info("device running; Ctrl-C unregisters and exits", "id", cfg.ID, "server", cfg.Server,
		"local", d.LocalAddr(), "server_date", d.LastRegisterDate())
	<-ctx.Done()

	unregCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if res, err := d.Register(unregCtx, 0); err != nil {
		log.Warn("unregister failed", "error", err)
	} else {
		log.Info("unregistered", "status", res.StatusCode)
	}
	return nil
}

func runUpper(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("gbsim upper", flag.ContinueOnError)
	var cfg sim.UpperConfig
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:15060", "UDP and TCP listen address")
	fs.StringVar(&cfg.ID, "id", "34020000002000000002", "platform's 20-digit ID")
	fs.StringVar(&cfg.Domain, "domain", "", "SIP domain and digest realm (default: first 10 digits of --id)")
	fs.StringVar(&cfg.Password, "password", "12345678", "password every lower must use")
	fs.IntVar(&cfg.Expires, "expires", 3600, "longest registration expiry granted, seconds")
	fs.StringVar(&cfg.Redirect, "redirect", "", "answer REGISTER with 302 to ID@host:port (registration redirect)")
	queryEvery := fs.Duration("query-catalog-every", 0, "query each registered lower's catalog this often and print it (0: never)")
	verbose := fs.Bool("v", false, "debug logs, SIP stack included")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg.Logger = newLogger(*verbose)
	u, err := sim.NewUpper(cfg)
	if err != nil {
		return err
	}
	defer u.Close()
	if *queryEvery <= 0 {
		<-ctx.Done()
		return nil
	}
	ticker := time.NewTicker(*queryEvery)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			for _, l := range u.Lowers() {
				if l.Registered {
					printCatalog(ctx, u, l.ID, *queryEvery, cfg.Logger)
				}
			}
		}
	}
}

func printCatalog(ctx context.Context, u *sim.Upper, lowerID string, timeout time.Duration, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	items, sum, err := u.QueryCatalog(ctx, lowerID)
	if err != nil {
		log.Warn("catalog query incomplete", "lower", lowerID, "error", err)
	}
	fmt.Printf("catalog of %s: %d of %d items\n", lowerID, len(items), sum)
	w := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(w, "  DEVICE ID\tSTATUS\tNAME\tPARENT\tMANUFACTURER")
	for _, it := range items {
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\n", it.DeviceID, it.Status, it.Name, it.ParentID, it.Manufacturer)
	}
	_ = w.Flush()
}
