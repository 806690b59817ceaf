// Command gbsim runs GB/T 28181 simulators against gbproxy or any GB28181 platform:
//
//	gbsim device --server 127.0.0.1:5060 --server-id 34020000002000000001 --id 34020000001320000001 --transport tcp --channels 4
//	gbsim device --id 34020000002000000003 --tree-groups 3 --tree-channels 10 --alarm-every 30s   # a lower platform
//	gbsim upper --listen 127.0.0.1:15060 --id 34020000002000000002 --password 12345678 --query-catalog-every 30s
//	gbsim upper --subscribe catalog,alarm                                 # subscribe to every lower that registers
//	gbsim upper --query RecordInfo --device 34020000001310000001         # one query, print the answers, exit
//	gbsim upper --play 34020000001310000001 --transport tcp-passive --out live.ps --duration 10s  # live video to a file
//	gbsim upper --playback 34020000001310000001 --from 2026-01-01T08:00:00 --to 2026-01-01T09:00:00 --control 2s:seek=600,4s:scale=2,6s:pause,7s:play
//	gbsim upper --download 34020000001310000001 --from 2026-01-01T08:00:00 --to 2026-01-01T08:00:20 --speed 4 --out clip.ps
//	gbsim upper --broadcast 34020000001370000001 --voice-source 34020000001360000001 --duration 5s  # voice broadcast, a 440 Hz tone
//	gbsim device --voice-out voice.pcma                                  # answer broadcasts, keep the audio (A-law, 8 kHz)
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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim"
	"github.com/gbproxy/gbproxy/cmd/gbsim/sim/media"
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
	fs.StringVar(&cfg.Transport, "transport", "udp", "udp, tcp or tls (tcp, tls: one persistent connection, no listening socket)")
	var tlsOpts tlsFlags
	tlsOpts.register(fs, "--transport tls: PEM CA that signs the server's certificate")
	fs.StringVar(&tlsOpts.serverName, "tls-server-name", "", "--transport tls: name the server's certificate must carry (default: --server's host)")
	fs.StringVar(&cfg.LocalAddr, "local", "127.0.0.1:0", "local address")
	fs.StringVar(&cfg.Username, "username", "", "digest username (default: --id)")
	fs.StringVar(&cfg.Password, "password", "12345678", "digest password")
	fs.IntVar(&cfg.Expires, "expires", 3600, "registration expiry, seconds")
	fs.DurationVar(&cfg.KeepaliveInterval, "keepalive", 60*time.Second, "keepalive interval; negative disables keepalives")
	fs.DurationVar(&cfg.RetryInterval, "retry", 60*time.Second, "wait before registering again after a failure")
	channels := fs.Int("channels", 4, "number of cameras in the catalog (without --tree-groups)")
	treeGroups := fs.Int("tree-groups", 0, "act as a lower platform: a catalog tree with this many virtual organisations")
	treeChannels := fs.Int("tree-channels", 4, "cameras per virtual organisation of the tree")
	civilCode := fs.String("civil-code", "", "civil code of the tree, 2 to 8 digits (default: first 6 digits of --id)")
	fs.IntVar(&cfg.CatalogPerMessage, "catalog-per-message", 1, "catalog items per Response MESSAGE")
	fs.DurationVar(&cfg.CatalogInterval, "catalog-interval", 0, "pause between catalog Response MESSAGEs")
	fs.IntVar(&cfg.RecordsPerQuery, "records", 5, "recordings a RecordInfo query finds per channel (negative: none)")
	fs.IntVar(&cfg.RecordsPerMessage, "records-per-message", 2, "RecordList items per Response MESSAGE")
	alarmEvery := fs.Duration("alarm-every", 0, "send an alarm on the first camera this often (0: never)")
	noAnswer := fs.String("no-answer", "", "comma-separated CmdTypes accepted with 200 but never answered (timeout tests)")
	reject := fs.String("reject", "", "comma-separated CmdType=status pairs answered with that SIP status, e.g. DeviceStatus=403")
	fs.StringVar(&cfg.GBVersion, "gb-ver", "", "X-GB-Ver header of REGISTER: 2.0 (2016) or 3.0 (2022); empty sends none")
	fs.StringVar(&cfg.Charset, "charset", sim.CharsetGB2312,
		"answer charset: gb2312, utf-8, or utf-8-as-gb2312 (declares GB2312, sends UTF-8)")
	fs.StringVar(&cfg.Manufacturer, "manufacturer", "gbsim", "DeviceInfo and catalog manufacturer")
	fs.StringVar(&cfg.Model, "model", "IPC-SIM", "DeviceInfo and catalog model")
	fs.StringVar(&cfg.Firmware, "firmware", "1.0", "DeviceInfo firmware")
	video := fs.String("video", "", "H.264 Annex-B file streamed on INVITE, looped (default: a built-in 2 s 320x240 clip)")
	fs.IntVar(&cfg.FrameRate, "fps", 25, "frame rate the video is paced at")
	fs.BoolVar(&cfg.StreamOnce, "stream-once", false, "send the video once, then keep the call up without media")
	fs.StringVar(&cfg.MediaIP, "media-ip", "", "IP announced in SDP and bound for media (default: the address registered from)")
	fs.IntVar(&cfg.InviteStatus, "invite-status", 0, "answer every INVITE with this error status (e.g. 486, 500) instead of 200")
	fs.DurationVar(&cfg.InviteDelay, "invite-delay", 0, "wait this long before answering an INVITE (room for a CANCEL)")
	fs.BoolVar(&cfg.TimestampMS, "ts-ms", false, "quirk: step RTP timestamps in milliseconds (40 a frame) instead of 90 kHz")
	fs.BoolVar(&cfg.SendFromOtherPort, "send-from-other-port", false, "quirk: send UDP media from a port other than the one in SDP")
	fs.IntVar(&cfg.TCPMaxRTPPacket, "tcp-max-rtp", 1400, "largest RTP packet over TCP, header included (up to 65535)")
	voiceOut := fs.String("voice-out", "", "append the audio of every voice broadcast received (RTP payloads: PCMA, 8 kHz) to this file when it ends")
	verbose := fs.Bool("v", false, "debug logs, SIP stack included")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *video != "" {
		data, err := os.ReadFile(*video)
		if err != nil {
			return fmt.Errorf("--video: %w", err)
		}
		cfg.Video = data
	}
	if *channels < 0 || *treeGroups < 0 || *treeChannels < 0 {
		return errors.New("--channels, --tree-groups and --tree-channels must not be negative")
	}
	var err error
	if cfg.Reject, err = parseReject(*reject); err != nil {
		return err
	}
	cfg.NoAnswer = make(map[string]bool)
	for _, cmd := range splitList(*noAnswer) {
		cfg.NoAnswer[cmd] = true
	}
	if cfg.Transport == "tls" {
		if cfg.TLS, err = tlsOpts.client(); err != nil {
			return err
		}
	}
	cfg.MaxRecordedPayload = -1 // a long-running device keeps no copy of what it streamed
	log := newLogger(*verbose)
	cfg.Logger = log
	if *treeGroups > 0 {
		cfg.Channels = sim.MakeTree(cfg.ID, *civilCode, *treeGroups, *treeChannels)
	} else {
		cfg.Channels = sim.MakeChannels(cfg.ID, *channels)
	}
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
		"local", d.LocalAddr(), "server_date", d.LastRegisterDate(), "catalog_entries", len(cfg.Channels))
	if *alarmEvery > 0 {
		sendAlarms(ctx, d, firstCamera(cfg.ID, cfg.Channels), *alarmEvery, log)
	}
	voices := recordVoices(ctx, d, *voiceOut, log)
	<-ctx.Done()
	voices.Wait()

	unregCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if res, err := d.Register(unregCtx, 0); err != nil {
		log.Warn("unregister failed", "error", err)
	} else {
		log.Info("unregistered", "status", res.StatusCode)
	}
	return nil
}

// recordVoices reports each voice broadcast the device takes up and, with out set, appends its
// audio to out when it ends (or at Ctrl-C). Wait for the returned group before closing d.
func recordVoices(ctx context.Context, d *sim.Device, out string, log *slog.Logger) *sync.WaitGroup {
	var wg sync.WaitGroup
	var mu sync.Mutex // one broadcast written at a time
	wg.Go(func() {
		for {
			v, err := d.WaitVoice(ctx)
			if err != nil {
				return
			}
			log.Info("voice broadcast up", "source", v.SourceID, "target", v.TargetID, "ssrc", fmt.Sprintf("%010d", v.SSRC),
				"formats", strings.Join(v.Answer.Formats, " "), "server_media", v.Answer.Addr())
			wg.Go(func() {
				select {
				case <-v.Ended():
				case <-ctx.Done():
				}
				rx := v.Receiver()
				st, payload := rx.Stats(), rx.Payload()
				ssrcOK := true
				for _, p := range rx.Packets() {
					ssrcOK = ssrcOK && p.SSRC == v.SSRC
				}
				log.Info("voice broadcast ended", "source", v.SourceID, "packets", st.Packets, "bytes", len(payload), "all_under_our_ssrc", ssrcOK)
				if out == "" || len(payload) == 0 {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
				if err == nil {
					_, err = f.Write(payload)
					err = errors.Join(err, f.Close())
				}
				if err != nil {
					log.Error("--voice-out not written", "file", out, "error", err)
					return
				}
				log.Info("voice written; play it with: ffplay -f alaw -ar 8000 -ch_layout mono "+out, "file", out, "bytes", len(payload))
			})
		}
	})
	return &wg
}

// splitList splits a comma-separated flag value, dropping empty entries.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func parseReject(s string) (map[string]int, error) {
	out := make(map[string]int)
	for _, pair := range splitList(s) {
		cmd, code, ok := strings.Cut(pair, "=")
		n, err := strconv.Atoi(code)
		if !ok || err != nil || n < 300 || n > 699 {
			return nil, fmt.Errorf("--reject %q: want CmdType=status with a status from 300 to 699", pair)
		}
		out[cmd] = n
	}
	return out, nil
}

// firstCamera is the first catalog entry that is a camera (type 131 or 132), else the device itself.
func firstCamera(deviceID string, chans []sim.Channel) string {
	for _, ch := range chans {
		if len(ch.ID) == 20 && (ch.ID[10:13] == "131" || ch.ID[10:13] == "132") {
			return ch.ID
		}
	}
	return deviceID
}

// sendAlarms sends an alarm every period until ctx ends, logging whether the upper acknowledged it.
func sendAlarms(ctx context.Context, d *sim.Device, channelID string, period time.Duration, log *slog.Logger) {
	go func() {
		ticker := time.NewTicker(period)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
			actx, cancel := context.WithTimeout(ctx, min(period, 10*time.Second))
			sn, err := d.SendAlarm(actx, sim.AlarmConfig{ChannelID: channelID, Priority: 1, Method: 5, Type: 2, Description: "视频动检"})
			if err == nil {
				_, err = d.WaitAlarmAck(actx, sn)
			}
			cancel()
			if err != nil {
				log.Warn("alarm not acknowledged", "channel", channelID, "sn", sn, "error", err)
			} else {
				log.Info("alarm acknowledged", "channel", channelID, "sn", sn)
			}
		}
	}()
}

func runUpper(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("gbsim upper", flag.ContinueOnError)
	var cfg sim.UpperConfig
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:15060", "UDP and TCP listen address")
	fs.StringVar(&cfg.TLSListen, "tls-listen", "", "also accept SIP over TLS here (needs --tls-cert and --tls-key)")
	var tlsOpts tlsFlags
	tlsOpts.register(fs, "--tls-listen: PEM CA whose client certificates are required (default: none asked)")
	fs.StringVar(&cfg.ID, "id", "34020000002000000002", "platform's 20-digit ID")
	fs.StringVar(&cfg.Domain, "domain", "", "SIP domain and digest realm (default: first 10 digits of --id)")
	fs.StringVar(&cfg.Password, "password", "12345678", "password every lower must use")
	fs.IntVar(&cfg.Expires, "expires", 3600, "longest registration expiry granted, seconds")
	fs.StringVar(&cfg.Redirect, "redirect", "", "answer REGISTER with 302 to ID@host:port (registration redirect)")
	fs.DurationVar(&cfg.QuietPeriod, "quiet", time.Second, "--query: stop waiting when no further Response came for this long")
	queryEvery := fs.Duration("query-catalog-every", 0, "query each registered lower's catalog this often and print it (0: never)")
	subscribe := fs.String("subscribe", "", "comma-separated events to subscribe to at every lower that registers: catalog, alarm, mobileposition, ptzposition")
	subExpires := fs.Int("subscribe-expires", 3600, "subscription expiry asked for, seconds")
	query := fs.String("query", "", "send one command of this CmdType (e.g. RecordInfo, DeviceInfo, PresetQuery), print the answers and exit")
	root := fs.String("root", "Query", "--query: root element, Query or Control")
	device := fs.String("device", "", "--query: DeviceID the command is about (default: the lower)")
	lower := fs.String("lower", "", "--query, --play: lower to send it to (default: the first that registers)")
	play := fs.String("play", "", "play this channel's live video (INVITE s=Play), write the stream to --out and exit")
	var playOpts sim.PlayOptions
	fs.StringVar(&playOpts.Transport, "transport", "udp", "--play: media transport: udp, tcp-passive (the upper listens) or tcp-active (the upper dials)")
	out := fs.String("out", "", "--play: write the received PS stream (RTP payloads) to this file")
	duration := fs.Duration("duration", 10*time.Second, "--play: how long to receive before hanging up")
	fs.StringVar(&playOpts.SSRC, "ssrc", "", "--play: y= SSRC offered, 10 digits (default: generated)")
	fs.BoolVar(&playOpts.NoSSRC, "no-ssrc", false, "--play: offer no y= line")
	fs.DurationVar(&playOpts.ListenLate, "listen-late", 0, "--play tcp-passive: open the media listener only this long after the 200 OK")
	fs.BoolVar(&playOpts.RetransmitInvite, "retransmit-invite", false, "--play: ignore the first 200 OK and send the same INVITE again")
	var fields fieldFlag
	fs.Var(&fields, "field", "--query: extra element Name=Value, repeatable; a Value starting with < is sent as raw XML\n(RecordInfo gets today's StartTime and EndTime unless given)")
	timeout := fs.Duration("timeout", 30*time.Second, "--query, --play: how long to wait for a lower and its answers")
	playback := fs.String("playback", "", "play this channel's recording (INVITE s=Playback) from --from to --to, like --play")
	download := fs.String("download", "", "download this channel's recording (INVITE s=Download) from --from to --to at --speed, like --play")
	from := fs.String("from", "", "--playback, --download: start of the recording, 2006-01-02T15:04:05 local time (default: an hour ago)")
	to := fs.String("to", "", "--playback, --download: end of the recording (default: --from + 10 minutes)")
	speed := fs.Int("speed", 4, "--download: a=downloadspeed")
	control := fs.String("control", "", "--playback: MANSRTSP steps, after:what, e.g. 2s:seek=600,4s:scale=2,6s:pause,7s:play,9s:teardown")
	broadcast := fs.String("broadcast", "", "voice broadcast to this TargetID (an audio output or device): Notify, answer the lower's INVITE,\nsend a 440 Hz PCMA tone for --duration, hang up and exit")
	voiceSource := fs.String("voice-source", "", "--broadcast: SourceID of our voice input (default: --id with type 136, e.g. 34020000001360000001)")
	verbose := fs.Bool("v", false, "debug logs, SIP stack included")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cmdTypes, err := subscriptionTypes(*subscribe)
	if err != nil {
		return err
	}
	if cfg.TLSListen != "" {
		if cfg.TLS, err = tlsOpts.server(); err != nil {
			return err
		}
	}
	cfg.Logger = newLogger(*verbose)
	u, err := sim.NewUpper(cfg)
	if err != nil {
		return err
	}
	defer u.Close()
	if *query != "" {
		return runQuery(ctx, u, *timeout, *lower, *root, *query, *device, fields)
	}
	if *play != "" {
		return runPlay(ctx, u, *timeout, *lower, *play, playOpts, *duration, *out, nil)
	}
	if *broadcast != "" {
		return runBroadcast(ctx, u, *timeout, *lower, *broadcast, cmpOr(*voiceSource, cfg.ID[:10]+"136"+cfg.ID[13:]), *duration)
	}
	if *playback != "" || *download != "" {
		return runRecording(ctx, u, *timeout, *lower, *playback, *download, *from, *to, *speed, *control, playOpts, *duration, *out)
	}
	var catalogTick <-chan time.Time
	if *queryEvery > 0 {
		ticker := time.NewTicker(*queryEvery)
		defer ticker.Stop()
		catalogTick = ticker.C
	}
	lowerTick := time.NewTicker(time.Second)
	defer lowerTick.Stop()
	subscribed := make(map[string]bool) // lower ID and CmdType
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-catalogTick:
			for _, l := range u.Lowers() {
				if l.Registered {
					printCatalog(ctx, u, l.ID, *queryEvery, cfg.Logger)
				}
			}
		case <-lowerTick.C:
			for _, l := range u.Lowers() {
				for _, cmdType := range cmdTypes {
					if key := l.ID + "/" + cmdType; l.Registered && !subscribed[key] {
						subscribed[key] = subscribeAndPrint(ctx, u, l.ID, cmdType, *subExpires, cfg.Logger)
					}
				}
			}
		}
	}
}

// runBroadcast sends Notify Broadcast, waits for the lower's INVITE to sourceID, sends a tone for
// duration (20 ms packets), hangs up and reports.
func runBroadcast(ctx context.Context, u *sim.Upper, timeout time.Duration, lowerID, targetID, sourceID string, duration time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	lowerID, err := waitLower(wctx, u, lowerID)
	if err != nil {
		return err
	}
	ans, err := u.Broadcast(wctx, lowerID, sourceID, targetID)
	if err != nil {
		return err
	}
	fmt.Printf("Notify Broadcast %s -> %s at %s (SN %d): SIP %d %s\n", sourceID, targetID, lowerID, ans.SN, ans.Status, ans.Reason)
	for _, b := range ans.Bodies {
		fmt.Printf("Response Broadcast: DeviceID %s Result %s\n", b.DeviceID, b.Result)
	}
	if ans.Status/100 != 2 || len(ans.Bodies) == 0 || ans.Bodies[0].Result != "OK" {
		return errors.New("the broadcast was not accepted")
	}
	src, err := u.WaitVoiceSource(wctx)
	if err != nil {
		return fmt.Errorf("no INVITE to %s: %w", sourceID, err)
	}
	fmt.Printf("INVITE to %s answered: sending to %s (%s), y=%s, for %v\n", src.SourceID, src.Offer.Addr(), src.Offer.Direction, src.Offer.SSRC, duration)
	tone := sim.PCMATone(440, 8000) // one second, looped
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	end := time.After(duration)
	packets := 0
send:
	for {
		select {
		case <-ctx.Done():
			break send
		case <-end:
			break send
		case <-src.Ended():
			fmt.Println("the lower hung up")
			break send
		case <-tick.C:
			at := packets % 50 * 160
			if err := src.Send(tone[at : at+160]); err != nil {
				return fmt.Errorf("audio: %w", err)
			}
			packets++
		}
	}
	fmt.Printf("sent %d RTP packets (PCMA, 160 bytes each)\n", packets)
	select {
	case <-src.Ended():
	default:
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second) // the BYE goes out even if ctx has ended
		defer cancel()
		if err := src.Bye(bctx); err != nil {
			return err
		}
		fmt.Println("hung up")
	}
	return nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// fieldFlag collects repeated --field Name=Value flags.
type fieldFlag []sim.Field

func (f *fieldFlag) String() string { return fmt.Sprint(*f) }

func (f *fieldFlag) Set(s string) error {
	name, value, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return fmt.Errorf("want Name=Value, got %q", s)
	}
	*f = append(*f, sim.Field{Name: name, Value: value, Raw: strings.HasPrefix(value, "<")})
	return nil
}

func subscriptionTypes(list string) ([]string, error) {
	names := map[string]string{"catalog": "Catalog", "alarm": "Alarm", "mobileposition": "MobilePosition", "ptzposition": "PTZPosition"}
	var out []string
	for _, v := range splitList(list) {
		cmdType, ok := names[strings.ToLower(v)]
		if !ok {
			return nil, fmt.Errorf("--subscribe %q: want catalog, alarm, mobileposition or ptzposition", v)
		}
		out = append(out, cmdType)
	}
	return out, nil
}

// runQuery waits for the lower to register, sends one command and prints every Response.
func runQuery(ctx context.Context, u *sim.Upper, timeout time.Duration, lowerID, root, cmdType, deviceID string, fields []sim.Field) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	lowerID, err := waitLower(ctx, u, lowerID)
	if err != nil {
		return err
	}
	if cmdType == "RecordInfo" && !hasField(fields, "StartTime") {
		now := time.Now()
		day := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.Local)
		fields = append(fields, sim.Field{Name: "StartTime", Value: day.Format("2006-01-02T15:04:05")},
			sim.Field{Name: "EndTime", Value: now.Format("2006-01-02T15:04:05")})
	}
	ans, err := u.Request(ctx, lowerID, root, cmdType, deviceID, fields...)
	fmt.Printf("%s %s to %s (SN %d): SIP %d %s, %d Responses, %d items, complete=%v\n",
		root, cmdType, lowerID, ans.SN, ans.Status, ans.Reason, len(ans.Bodies), ans.Items(), ans.Complete)
	for i, b := range ans.Bodies {
		fmt.Printf("--- Response %d: DeviceID %s Result %q SumNum %d items %d\n%s\n", i+1, b.DeviceID, b.Result, b.SumNum, b.Items, b.Raw)
	}
	return err
}

// runPlay waits for the lower, plays the channel for duration (or until the lower hangs up or
// Ctrl-C), hangs up and writes the received program stream to out.
// With start set, it makes the call instead of a live Play (a playback or a download).
func runPlay(ctx context.Context, u *sim.Upper, timeout time.Duration, lowerID, channelID string, opts sim.PlayOptions, duration time.Duration, out string,
	start func(ctx context.Context, lowerID string) (*sim.Play, error)) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	lowerID, err := waitLower(wctx, u, lowerID)
	if err != nil {
		return err
	}
	if start == nil {
		start = func(ctx context.Context, lowerID string) (*sim.Play, error) {
			return u.Play(ctx, lowerID, channelID, opts)
		}
	}
	p, err := start(wctx, lowerID)
	if err != nil {
		return err
	}
	defer p.Close()
	fmt.Printf("playing %s at %s (Call-ID %s): %s, SSRC offered %q answered %q, media %s setup %q\n",
		channelID, lowerID, p.CallID(), opts.Transport, p.SSRC, p.Answer.SSRC, p.Answer.Addr(), p.Answer.Setup)
	timer := time.NewTimer(duration)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	case <-p.Ended():
		if p.EndedBy() == "bye-received" {
			fmt.Println("the lower hung up")
		}
	}
	select {
	case <-p.Ended():
	default:
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second) // the BYE goes out even if ctx has ended
		if err := p.Bye(bctx); err != nil {
			fmt.Fprintln(os.Stderr, "gbsim: BYE:", err)
		}
		cancel()
	}
	st := p.Receiver().Stats()
	payload := p.Payload()
	fmt.Printf("received %d RTP packets, %d payload bytes from %v\n", st.Packets, st.Bytes, st.Sources)
	if pk := p.Packets(); len(pk) > 0 {
		fmt.Printf("RTP SSRC %d (%010d), payload type %d\n", pk[0].SSRC, pk[0].SSRC, pk[0].PayloadType)
	}
	if dm, err := media.Demux(payload); err != nil {
		fmt.Printf("PS check failed: %v\n", err)
	} else {
		var types []string
		for id, typ := range dm.StreamTypes {
			types = append(types, fmt.Sprintf("0x%02X=0x%02X", id, typ))
		}
		fmt.Printf("PS: %d pack headers, %d system headers, %d PSMs (stream_id=stream_type %s), %d video bytes\n",
			dm.Packs, dm.SystemHeaders, dm.PSMs, strings.Join(types, " "), len(dm.Video))
	}
	if st.Err != nil {
		fmt.Fprintln(os.Stderr, "gbsim: media:", st.Err)
	}
	if out != "" {
		if err := os.WriteFile(out, payload, 0o600); err != nil {
			return err
		}
		fmt.Printf("wrote %s (try: ffprobe %s)\n", out, out)
	}
	if st.Packets == 0 {
		return errors.New("no media received")
	}
	return nil
}

func hasField(fields []sim.Field, name string) bool {
	for _, f := range fields {
		if f.Name == name {
			return true
		}
	}
	return false
}

// waitLower waits for lowerID to register, or for any lower when it is empty, and returns its ID.
func waitLower(ctx context.Context, u *sim.Upper, lowerID string) (string, error) {
	if lowerID != "" {
		_, err := u.WaitRegistered(ctx, lowerID)
		return lowerID, err
	}
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	for {
		for _, l := range u.Lowers() {
			if l.Registered {
				return l.ID, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no lower registered at %s: %w", u.Addr(), ctx.Err())
		case <-ticker.C:
		}
	}
}

// subscribeAndPrint subscribes and prints the NOTIFYs as they come, refreshing at two thirds of the
// granted expiry. It reports whether the subscription was made.
func subscribeAndPrint(ctx context.Context, u *sim.Upper, lowerID, cmdType string, expires int, log *slog.Logger) bool {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	sub, err := u.Subscribe(sctx, lowerID, cmdType, "", expires)
	cancel()
	if err != nil {
		log.Warn("subscription failed; retrying", "lower", lowerID, "cmd_type", cmdType, "error", err)
		return false
	}
	log.Info("subscribed", "lower", lowerID, "cmd_type", cmdType, "expires", sub.Expires())
	go func() {
		for {
			n, err := sub.WaitNotify(ctx, nil)
			if err != nil {
				return
			}
			fmt.Printf("--- NOTIFY %s from %s (SN %d):\n%s\n", n.CmdType, lowerID, n.SN, n.Body)
		}
	}()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(max(sub.Expires(), 3)) * time.Second * 2 / 3):
			}
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := sub.Refresh(rctx, expires)
			cancel()
			if err != nil {
				log.Warn("subscription refresh failed", "lower", lowerID, "cmd_type", cmdType, "error", err)
			}
		}
	}()
	return true
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

// runRecording plays back or downloads a recording as runPlay does, sends the --control MANSRTSP
// steps on schedule and reports the position (PS timestamp) after each, and any MediaStatus.
func runRecording(ctx context.Context, u *sim.Upper, timeout time.Duration, lowerID, playback, download, from, to string, speed int, control string,
	opts sim.PlayOptions, duration time.Duration, out string) error {
	const layout = "2006-01-02T15:04:05"
	start, end := time.Now().Add(-time.Hour).Truncate(time.Second), time.Time{}
	var err error
	if from != "" {
		if start, err = time.ParseInLocation(layout, from, time.Local); err != nil {
			return fmt.Errorf("--from: %w", err)
		}
	}
	end = start.Add(10 * time.Minute)
	if to != "" {
		if end, err = time.ParseInLocation(layout, to, time.Local); err != nil {
			return fmt.Errorf("--to: %w", err)
		}
	}
	steps, err := parseControl(control)
	if err != nil {
		return err
	}
	channelID := playback
	if download != "" {
		channelID = playback + download
	}
	return runPlay(ctx, u, timeout, lowerID, channelID, opts, duration, out, func(ctx context.Context, lowerID string) (*sim.Play, error) {
		var p *sim.Play
		var err error
		if download != "" {
			p, err = u.Download(ctx, lowerID, download, start, end, speed, opts)
		} else {
			p, err = u.Playback(ctx, lowerID, playback, start, end, opts)
		}
		if err != nil {
			return nil, err
		}
		fmt.Printf("%s of %s from %s to %s: a=filesize:%d\n", p.Answer.Session, channelID, start.Format(layout), end.Format(layout), p.Answer.FileSize)
		go func() {
			if ms, err := p.WaitMediaStatus(ctx); err == nil {
				fmt.Printf("MediaStatus in the dialog: %s; hanging up\n", strings.Join(strings.Fields(string(ms.Body)), " "))
				bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second) // the BYE goes out even if ctx has ended
				_ = p.Bye(bctx)
				cancel()
			}
		}()
		go func() {
			began := time.Now()
			for i, st := range steps {
				select {
				case <-time.After(time.Until(began.Add(st.after))):
				case <-p.Ended():
					return
				}
				status, body, err := p.Info(ctx, st.body(i+1))
				pos := p.Positions()
				at := 0.0
				if len(pos) > 0 {
					at = float64(pos[len(pos)-1].PTS) / 90000
				}
				fmt.Printf("%v %s: INFO answered %d %q (err %v); position %.1f s\n", st.after, st.what, status, strings.TrimSpace(body), err, at)
			}
		}()
		return p, nil
	})
}

// controlStep is one --control step: after this long, send this MANSRTSP request.
type controlStep struct {
	after time.Duration
	what  string
	body  func(cseq int) string
}

func parseControl(s string) ([]controlStep, error) {
	var steps []controlStep
	for _, item := range splitList(s) {
		after, what, ok := strings.Cut(item, ":")
		d, err := time.ParseDuration(after)
		if !ok || err != nil {
			return nil, fmt.Errorf("--control %q: want <duration>:<seek=S|scale=X|pause|play|teardown>", item)
		}
		name, arg, _ := strings.Cut(what, "=")
		st := controlStep{after: d, what: what}
		switch name {
		case "seek", "scale":
			x, err := strconv.ParseFloat(arg, 64)
			if err != nil {
				return nil, fmt.Errorf("--control %q: %s needs a number", item, name)
			}
			if name == "seek" {
				st.body = func(cseq int) string { return sim.RTSPSeek(cseq, x) }
			} else {
				st.body = func(cseq int) string { return sim.RTSPScale(cseq, x) }
			}
		case "pause":
			st.body = sim.RTSPPause
		case "play":
			st.body = sim.RTSPPlay
		case "teardown":
			st.body = sim.RTSPTeardown
		default:
			return nil, fmt.Errorf("--control %q: unknown step %q", item, name)
		}
		steps = append(steps, st)
	}
	return steps, nil
}
