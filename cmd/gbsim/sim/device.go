package sim

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim/media"
)

// Timing defaults from GB/T 28181: 60 s heartbeat, offline after 3 missed, re-register no sooner than 60 s.
const (
	defaultKeepaliveInterval = 60 * time.Second
	defaultRetryInterval     = 60 * time.Second
	keepaliveMaxFailures     = 3
	// connCheckInterval is how often a TCP device with keepalives disabled checks its connection.
	connCheckInterval = time.Second
	// minRequestTimeout bounds how long a keepalive may wait for its answer when the interval is tiny.
	minRequestTimeout = 250 * time.Millisecond
	// maxRequestTimeout is RFC 3261 Timer F (64·T1): a transaction is over by then anyway.
	maxRequestTimeout = 32 * time.Second
)

// DeviceConfig describes a simulated IPC/NVR. Zero values take the documented defaults.
type DeviceConfig struct {
	ID       string // 20-digit device ID
	Domain   string // SIP domain; default: first 10 digits of ServerID
	ServerID string // the registrar's 20-digit ID
	Server   string // the registrar's host:port
	// Transport is "udp" (default), "tcp" or "tls". Over TCP and TLS the device keeps one connection
	// to Server and listens on no socket, so every request must come down that connection (GB/T 28181
	// NAT rule).
	Transport string
	// TLS is required with Transport "tls": RootCAs to verify the server by (its certificate must name
	// Server's IP, or ServerName) and, for a server that asks, the client certificate.
	TLS                *tls.Config
	LocalAddr          string // default "127.0.0.1:0"; over TCP a port of 0 lets the kernel choose
	Username, Password string // Username defaults to ID
	Expires            int    // requested registration expiry in seconds; default 3600
	// KeepaliveInterval defaults to 60 s; negative disables keepalives.
	KeepaliveInterval time.Duration
	// RetryInterval is the wait before registering again after a failure; default 60 s.
	RetryInterval time.Duration
	Channels      []Channel // catalog; see MakeChannels
	// Charset of answers: CharsetGB2312 (default), CharsetUTF8 or CharsetUTF8AsGB2312.
	Charset string
	// CatalogPerMessage is the number of items per Catalog Response MESSAGE; default 1, like most IPCs.
	// Over UDP sipgo refuses messages above 1300 bytes, which about two items with Chinese names reach.
	CatalogPerMessage int
	// CatalogInterval is a pause between Catalog Response MESSAGEs (some peers pause 50 ms).
	CatalogInterval time.Duration
	// RecordsPerQuery is how many recordings a RecordInfo query finds for a channel, spread over the
	// asked time range; default 5, negative for none.
	RecordsPerQuery int
	// RecordsPerMessage is the number of RecordList items per Response MESSAGE; default 2.
	RecordsPerMessage int
	// NoAnswer lists CmdTypes whose MESSAGE is accepted with 200 but never answered by a Response,
	// to test a peer's timeouts.
	NoAnswer map[string]bool
	// Reject maps a CmdType to the SIP status its MESSAGE or SUBSCRIBE is answered with instead of
	// 200 (e.g. 403, 500); the key "*" applies to every MANSCDP request.
	Reject map[string]int
	// SubscriptionMaxExpires caps the expiry granted to a SUBSCRIBE, seconds; default 3600.
	SubscriptionMaxExpires int
	// GBVersion is sent as the X-GB-Ver header of REGISTER ("2.0" for GB/T 28181-2016, "3.0" for
	// 2022); empty sends none, as 2016 devices do.
	GBVersion                     string
	Manufacturer, Model, Firmware string
	Logger                        *slog.Logger

	// Live video (INVITE s=Play, GB/T 28181 §9.2). The device answers for itself and any channel.

	// Video is the H.264 Annex-B stream sent, looped; default media.DefaultVideo (2 s, 320x240).
	Video []byte
	// FrameRate paces the video (frames per second); default 25.
	FrameRate int
	// StreamOnce sends the video once and then goes quiet, the call staying up.
	StreamOnce bool
	// MediaIP is the address announced in SDP and bound for media; default the address the
	// device registered from.
	MediaIP string
	// InviteStatus answers every INVITE with this final error status instead (e.g. 486, 500).
	InviteStatus int
	// InviteDelay delays the answer to an INVITE (after a 100 Trying), so that a CANCEL can arrive.
	InviteDelay time.Duration
	// TimestampMS steps RTP timestamps in milliseconds (40 a frame at 25 fps), a real device quirk.
	TimestampMS bool
	// SendFromOtherPort sends UDP media from a port other than the one announced (a NAT quirk).
	SendFromOtherPort bool
	// TCPMaxRTPPacket bounds RTP packets over TCP, header included: default 1400, at most 65535
	// (some devices send 30+ KB packets).
	TCPMaxRTPPacket int
	// UDPMaxRTPPacket bounds RTP packets over UDP, header included: default 1400 (many devices send
	// 1,412 bytes, some 1,472).
	UDPMaxRTPPacket int
	// MediaConnectRetry is how long the device retries dialling a TCP-passive peer; default 5 s.
	MediaConnectRetry time.Duration
	// MaxRecordedPayload caps the bytes SentPayload keeps per call; default 32 MiB, negative keeps none.
	MaxRecordedPayload int

	// Note signs what the device sends and, with Require, checks what it receives (see NoteConfig).
	Note NoteConfig

	// Voice broadcast (Notify Broadcast, then our INVITE to its SourceID).

	// VoiceOKsIgnored is how many 200 OKs to a voice INVITE are ignored, as if lost, before the
	// device acknowledges one (the server must re-send it).
	VoiceOKsIgnored int
	// VoiceNoAck never acknowledges the 200 OK to a voice INVITE (the server must give up and BYE).
	VoiceNoAck bool
}

// Device simulates an IPC/NVR registering to a GB/T 28181 server.
type Device struct {
	*guard    // Note and Monitor-User-Identity
	cfg       DeviceConfig
	transport string // "UDP", "TCP" or "TLS"
	log       *slog.Logger
	journal   journal[Received]
	controls  journal[Control]
	subChange signal // subscriptions changed
	keepalive atomic.Bool
	sn        atomic.Int64

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	regMu sync.Mutex // serialises REGISTER so CSeq grows in send order
	cseq  uint32

	mu         sync.Mutex // guards the fields below
	ua         *sipgo.UserAgent
	client     *sipgo.Client
	udpConn    net.PacketConn
	serverAddr string // Server resolved to ip:port, the key sipgo pools connections under
	// serverID and redirected: after a 302 the device registers to the SIP server the Contact
	// named (serverAddr then is its address) until that server fails it (GB/T 28181-2022 注册重定向).
	serverURIv sip.Uri // Request-URI: sip:ServerID@Domain, or after a 302 the Contact's URI
	redirected bool
	callID     string
	fromTag    string
	regLocal   string // local address the last successful REGISTER left from
	tryLocal   string // local address of the REGISTER in flight: the server may query us before its 200 reaches us
	registered bool
	granted    int // expiry granted by the last 200 OK
	lastDate   string
	running    bool
	closed     bool
	channels   []Channel
	duty       string // guard state of the alarm input: ONDUTY, OFFDUTY or ALARM
	home       homePosition
	subs       map[string]*deviceSub // active subscriptions by Call-ID

	frames       []media.Frame          // the video's access units
	calls        map[string]*deviceCall // INVITE dialogs by Call-ID, never forgotten
	callOrder    []string               // Call-IDs in arrival order
	ssrcSeq      int
	streamChange signal // a call or its counters changed
	voices       journal[*Voice]
	voiceCalls   map[string]*Voice // broadcast calls by Call-ID
}

// NewDevice validates cfg and applies defaults; nothing is opened until Start or Register.
func NewDevice(cfg DeviceConfig) (*Device, error) {
	if cfg.ID == "" || cfg.ServerID == "" || cfg.Server == "" {
		return nil, errors.New("device: ID, ServerID and Server are required")
	}
	transport, err := transportName(cfg.Transport)
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", cfg.ID, err)
	}
	if transport == "TLS" && cfg.TLS == nil {
		return nil, fmt.Errorf("device %s: transport tls needs TLS (at least RootCAs trusting the server)", cfg.ID)
	}
	switch cfg.Charset {
	case "":
		cfg.Charset = CharsetGB2312
	case CharsetGB2312, CharsetUTF8, CharsetUTF8AsGB2312:
	default:
		return nil, fmt.Errorf("device %s: charset %q not supported: use %s, %s or %s",
			cfg.ID, cfg.Charset, CharsetGB2312, CharsetUTF8, CharsetUTF8AsGB2312)
	}
	if cfg.CatalogPerMessage < 0 || cfg.Expires < 0 || cfg.RecordsPerMessage < 0 || cfg.SubscriptionMaxExpires < 0 {
		return nil, fmt.Errorf("device %s: CatalogPerMessage, RecordsPerMessage, SubscriptionMaxExpires and Expires must not be negative", cfg.ID)
	}
	if cfg.Domain == "" {
		cfg.Domain = defaultDomain(cfg.ServerID)
	}
	if cfg.LocalAddr == "" {
		cfg.LocalAddr = "127.0.0.1:0"
	}
	if cfg.Username == "" {
		cfg.Username = cfg.ID
	}
	if cfg.Expires == 0 {
		cfg.Expires = 3600
	}
	if cfg.KeepaliveInterval == 0 {
		cfg.KeepaliveInterval = defaultKeepaliveInterval
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = defaultRetryInterval
	}
	if cfg.CatalogPerMessage == 0 {
		cfg.CatalogPerMessage = 1
	}
	switch {
	case cfg.RecordsPerQuery == 0:
		cfg.RecordsPerQuery = 5
	case cfg.RecordsPerQuery < 0:
		cfg.RecordsPerQuery = 0
	}
	if cfg.RecordsPerMessage == 0 {
		cfg.RecordsPerMessage = 2
	}
	if cfg.SubscriptionMaxExpires == 0 {
		cfg.SubscriptionMaxExpires = 3600
	}
	// Copied so that the caller changing its maps or slice later cannot race with the handlers.
	cfg.NoAnswer = maps.Clone(cfg.NoAnswer)
	cfg.Reject = maps.Clone(cfg.Reject)
	if cfg.Manufacturer == "" {
		cfg.Manufacturer = "gbsim"
	}
	if cfg.Model == "" {
		cfg.Model = "IPC-SIM"
	}
	if cfg.Firmware == "" {
		cfg.Firmware = "1.0"
	}
	if cfg.Video == nil {
		cfg.Video = media.DefaultVideo
	}
	frames, err := media.SplitAccessUnits(cfg.Video)
	if err != nil {
		return nil, fmt.Errorf("device %s: video: %w", cfg.ID, err)
	}
	if cfg.FrameRate <= 0 {
		cfg.FrameRate = media.DefaultFrameRate
	}
	if cfg.TCPMaxRTPPacket < 0 || cfg.TCPMaxRTPPacket > media.MaxRTPSizeTCP {
		return nil, fmt.Errorf("device %s: TCPMaxRTPPacket %d: want up to %d", cfg.ID, cfg.TCPMaxRTPPacket, media.MaxRTPSizeTCP)
	}
	if cfg.InviteStatus != 0 && (cfg.InviteStatus < 300 || cfg.InviteStatus > 699) {
		return nil, fmt.Errorf("device %s: InviteStatus %d: want 300 to 699", cfg.ID, cfg.InviteStatus)
	}
	if cfg.MediaIP != "" && net.ParseIP(cfg.MediaIP) == nil {
		return nil, fmt.Errorf("device %s: MediaIP %q is not an IP address", cfg.ID, cfg.MediaIP)
	}
	if cfg.MaxRecordedPayload == 0 {
		cfg.MaxRecordedPayload = defaultMaxRecorded
	}
	log := cfg.Logger
	if log == nil {
		log = discardLogger()
	}
	g, err := newGuard(cfg.Note, log.With("device", cfg.ID))
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", cfg.ID, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Device{
		guard:      g,
		frames:     frames,
		calls:      make(map[string]*deviceCall),
		voiceCalls: make(map[string]*Voice),
		cfg:        cfg,
		transport:  transport,
		log:        log.With("device", cfg.ID),
		ctx:        ctx,
		cancel:     cancel,
		serverURIv: sip.Uri{Scheme: "sip", User: cfg.ServerID, Host: cfg.Domain},
		callID:     randomHex(8),
		fromTag:    randomHex(5),
		channels:   slices.Clone(cfg.Channels),
		duty:       "OFFDUTY",
		subs:       make(map[string]*deviceSub),
	}
	d.keepalive.Store(true)
	return d, nil
}

var errClosed = errors.New("simulator closed")

// open creates the SIP stack once: over UDP a listening socket that requests also leave from, over
// TCP and TLS nothing but a client (the connection is dialled by the first REGISTER).
func (d *Device) open() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errClosed
	}
	if d.ua != nil {
		return nil
	}
	server, err := resolveAddr(d.transport, d.cfg.Server)
	if err != nil {
		return fmt.Errorf("device %s: server address %q: %w", d.cfg.ID, d.cfg.Server, err)
	}
	ua, srv, err := newStack(d.log, d.cfg.TLS)
	if err != nil {
		return fmt.Errorf("device %s: %w", d.cfg.ID, err)
	}
	opts := []sipgo.ClientOption{sipgo.WithClientNAT(), sipgo.WithClientLogger(d.log)}
	var udpConn net.PacketConn
	if d.transport == "UDP" {
		udpConn, err = net.ListenPacket("udp", d.cfg.LocalAddr)
		if err != nil {
			_ = ua.Close()
			return fmt.Errorf("device %s: listen UDP on %s: %w (choose a free local address)", d.cfg.ID, d.cfg.LocalAddr, err)
		}
		opts = append(opts, sipgo.WithClientConnectionAddr(udpConn.LocalAddr().String()))
	} else if _, port, err := net.SplitHostPort(d.cfg.LocalAddr); err == nil && port != "0" {
		opts = append(opts, sipgo.WithClientConnectionAddr(d.cfg.LocalAddr))
	}
	client, err := sipgo.NewClient(ua, opts...)
	if err != nil {
		_ = ua.Close()
		if udpConn != nil {
			_ = udpConn.Close()
		}
		return fmt.Errorf("device %s: create SIP client: %w", d.cfg.ID, err)
	}
	d.guard.install(client, ua)
	srv.OnNoRoute(d.guard.wrap(d.onRequest))
	if udpConn != nil {
		serveUDP(ua, srv, udpConn, &d.wg)
	}
	d.ua, d.client, d.udpConn, d.serverAddr = ua, client, udpConn, server
	return nil
}

func resolveAddr(transport, addr string) (string, error) {
	if connOriented(transport) {
		a, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			return "", err
		}
		return a.String(), nil
	}
	a, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return "", err
	}
	return a.String(), nil
}

// Start registers (failing unless the final answer is 200) and then keeps the registration alive:
// keepalives, refreshes, and re-registration after 3 failed keepalives or a lost TCP connection.
// ctx bounds the first registration only; the device runs until Close. Call Close even when Start fails.
func (d *Device) Start(ctx context.Context) error {
	res, err := d.Register(ctx, d.cfg.Expires)
	if err != nil {
		return err
	}
	if res.StatusCode != sip.StatusOK {
		return fmt.Errorf("device %s: register to %s answered %d %s, want 200 (check the password and server ID)",
			d.cfg.ID, d.cfg.Server, res.StatusCode, res.Reason)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errClosed
	}
	if !d.running {
		d.running = true
		d.wg.Add(1)
		go d.run()
	}
	return nil
}

// prebuilt is a client option that leaves a request exactly as built.
func prebuilt(*sipgo.Client, *sip.Request) error { return nil }

// Register sends one REGISTER, answers a 401/407 challenge with digest credentials and returns the
// final response. expires 0 unregisters. Call-ID and From tag stay the same across calls; CSeq grows.
func (d *Device) Register(ctx context.Context, expires int) (*sip.Response, error) {
	if err := d.open(); err != nil {
		return nil, err
	}
	d.regMu.Lock()
	defer d.regMu.Unlock()
	res, local, err := d.attempt(ctx, expires)
	if expires > 0 {
		res, local, err = d.followRedirects(ctx, expires, res, local, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.registered = err == nil && res.StatusCode == sip.StatusOK && expires > 0
	if err != nil {
		return nil, fmt.Errorf("device %s: REGISTER to %s over %s: %w (is the server listening?)", d.cfg.ID, d.serverAddr, d.transport, err)
	}
	d.log.Info("register answered", "expires", expires, "status", res.StatusCode, "reason", res.Reason, "transport", d.transport)
	if res.StatusCode == sip.StatusOK {
		d.regLocal = local
		d.granted = expiresOf(res, expires)
		if h := res.GetHeader("Date"); h != nil {
			d.lastDate = h.Value()
		}
	}
	return res, nil
}

// maxRedirects bounds the 302s followed by one registration (a loop of redirect servers).
const maxRedirects = 3

// followRedirects runs the registration redirect of GB/T 28181-2022: a 302 sends the device to the
// SIP server its Contact names (sip:server-ID@ip:port), where it registers with digest as usual. When
// the server it was sent to does not answer or refuses the registration, it runs the redirect flow
// again at the server it was configured with. d.regMu must be held.
func (d *Device) followRedirects(ctx context.Context, expires int, res *sip.Response, local string, err error) (*sip.Response, string, error) {
	for hops := 0; hops < maxRedirects; hops++ {
		switch {
		case err == nil && res.StatusCode == sip.StatusMovedTemporarily:
			contact := res.Contact()
			if contact == nil || contact.Address.Host == "" {
				return res, local, errors.New("302 without a Contact naming the SIP server to register to")
			}
			addr := net.JoinHostPort(contact.Address.Host, strconv.Itoa(cmp.Or(contact.Address.Port, 5060)))
			d.log.Info("register redirected", "to", addr, "server_id", contact.Address.User)
			uri := sip.Uri{Scheme: "sip", User: cmp.Or(contact.Address.User, d.cfg.ServerID), Host: contact.Address.Host, Port: contact.Address.Port}
			if rerr := d.setServer(addr, uri, true); rerr != nil {
				return res, local, rerr
			}
		case d.isRedirected() && (err != nil || res.StatusCode != sip.StatusOK):
			d.log.Warn("the SIP server we were redirected to failed the registration; redirecting again at the configured server", "error", err, "status", statusCode(res))
			d.goHome()
		default:
			return res, local, err
		}
		res, local, err = d.attempt(ctx, expires)
	}
	return res, local, err
}

// attempt is one REGISTER exchange. At a server a 302 sent the device to it is bounded by a few
// keepalive intervals, so that a dead server is given up within them rather than Timer F's 32 s.
func (d *Device) attempt(ctx context.Context, expires int) (*sip.Response, string, error) {
	if d.isRedirected() && d.cfg.KeepaliveInterval > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, min(max(4*d.cfg.KeepaliveInterval, time.Second), maxRequestTimeout))
		defer cancel()
	}
	return d.register(ctx, expires)
}

func statusCode(res *sip.Response) int {
	if res == nil {
		return 0
	}
	return res.StatusCode
}

// setServer points the registration, keepalives and MESSAGEs at addr, with Request-URI uri.
func (d *Device) setServer(addr string, uri sip.Uri, redirected bool) error {
	server, err := resolveAddr(d.transport, addr)
	if err != nil {
		return fmt.Errorf("SIP server address %q: %w", addr, err)
	}
	d.mu.Lock()
	d.serverAddr, d.serverURIv, d.redirected, d.registered = server, uri, redirected, false
	d.mu.Unlock()
	return nil
}

// goHome points the device back at the SIP server it was configured with.
func (d *Device) goHome() {
	if err := d.setServer(d.cfg.Server, sip.Uri{Scheme: "sip", User: d.cfg.ServerID, Host: d.cfg.Domain}, false); err != nil {
		d.log.Warn("configured SIP server unresolvable", "error", err) // it resolved at open
	}
}

func (d *Device) isRedirected() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.redirected
}

// Server returns the address of the SIP server the device registers to now: the configured one,
// or the one a 302 sent it to.
func (d *Device) Server() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.serverAddr
}

// register does the REGISTER exchange and returns the final response and the local address used.
// d.regMu must be held.
func (d *Device) register(ctx context.Context, expires int) (*sip.Response, string, error) {
	d.mu.Lock()
	client, ua, dest := d.client, d.ua, d.serverAddr
	d.mu.Unlock()

	self := d.selfURI()
	req := sip.NewRequest(sip.REGISTER, d.serverURI())
	req.SetDestination(dest)
	req.SetTransport(d.transport)
	from := &sip.FromHeader{Address: self, Params: sip.NewParams()}
	from.Params.Add("tag", d.fromTag)
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: self})
	callID := sip.CallIDHeader(d.callID)
	req.AppendHeader(&callID)
	d.cseq++
	req.AppendHeader(&sip.CSeqHeader{SeqNo: d.cseq, MethodName: sip.REGISTER})
	exp := sip.ExpiresHeader(expires)
	req.AppendHeader(&exp)
	req.AppendHeader(sip.NewHeader("User-Agent", userAgent))
	if d.cfg.GBVersion != "" {
		req.AppendHeader(sip.NewHeader(headerGBVersion, d.cfg.GBVersion))
	}
	if err := sipgo.ClientRequestBuild(client, req); err != nil {
		return nil, "", fmt.Errorf("build request: %w", err)
	}
	// Take the connection now so Contact carries the real local port; over TCP this dials the server.
	conn, err := ua.TransportLayer().ClientRequestConnection(ctx, req)
	if err != nil {
		return nil, "", fmt.Errorf("connect: %w", err)
	}
	local := conn.LocalAddr().String()
	_, _ = conn.TryClose() // the pool keeps the connection; this only drops our reference
	host, portStr, err := net.SplitHostPort(local)
	if err != nil {
		return nil, "", fmt.Errorf("local address %q: %w", local, err)
	}
	port, _ := strconv.Atoi(portStr)
	req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: d.cfg.ID, Host: host, Port: port}})
	d.mu.Lock()
	d.tryLocal = local
	d.mu.Unlock()

	res, err := client.Do(ctx, req, prebuilt)
	if err == nil && (res.StatusCode == sip.StatusUnauthorized || res.StatusCode == sip.StatusProxyAuthRequired) {
		res, err = client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: d.cfg.Username, Password: d.cfg.Password})
	}
	d.cseq = req.CSeq().SeqNo
	return res, local, err
}

// Registered reports whether the last REGISTER got a 200 OK (and was not an unregistration).
func (d *Device) Registered() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.registered
}

// LastRegisterDate returns the Date header of the last 200 OK to REGISTER (GB/T 28181 time sync).
func (d *Device) LastRegisterDate() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastDate
}

// LocalAddr returns the local ip:port the last successful REGISTER left from (its Contact address).
func (d *Device) LocalAddr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.regLocal
}

// SetKeepalive pauses or resumes keepalives, e.g. to make the server time the device out.
func (d *Device) SetKeepalive(enabled bool) { d.keepalive.Store(enabled) }

// Requests returns every request the server sent, in arrival order.
func (d *Device) Requests() []Received { return d.journal.all() }

// WaitRequest returns the oldest request with this method (and CmdType, when not empty) that no
// earlier WaitRequest returned, waiting until one arrives or ctx ends.
func (d *Device) WaitRequest(ctx context.Context, method, cmdType string) (Received, error) {
	return waitRequest(ctx, &d.journal, method, cmdType)
}

// Close drops everything abruptly, without unregistering: the server sees a TCP connection close.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	ua, udpConn := d.ua, d.udpConn
	d.mu.Unlock()

	d.cancel()
	d.closeCalls()
	d.closeVoices()
	var err error
	if ua != nil {
		err = closeStack(ua)
	}
	if udpConn != nil {
		_ = udpConn.Close()
	}
	d.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func (d *Device) selfURI() sip.Uri {
	return sip.Uri{Scheme: "sip", User: d.cfg.ID, Host: d.cfg.Domain}
}

func (d *Device) serverURI() sip.Uri {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.serverURIv
}

// run keeps the registration alive until Close.
func (d *Device) run() {
	defer d.wg.Done()
	period := d.cfg.KeepaliveInterval
	if period < 0 {
		period = connCheckInterval
	}
	ticker := time.NewTicker(period)
	defer ticker.Stop()
	refresh := time.NewTimer(d.refreshDelay())
	defer refresh.Stop()
	failures := 0
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-refresh.C:
			refresh.Reset(d.reregister("refresh"))
		case <-ticker.C:
			if !d.Registered() {
				continue // the refresh timer holds the retry
			}
			if d.regConnLost() {
				failures = 0
				refresh.Reset(d.reregister("TCP connection lost"))
				continue
			}
			if d.cfg.KeepaliveInterval < 0 || !d.keepalive.Load() {
				continue
			}
			if err := d.sendKeepalive(); err != nil {
				failures++
				d.log.Warn("keepalive failed", "failures", failures, "error", err)
				if failures >= keepaliveMaxFailures {
					failures = 0
					if d.isRedirected() {
						// The server we were sent to is offline: the redirect flow starts over.
						d.goHome()
					}
					refresh.Reset(d.reregister("keepalives failed"))
				}
				continue
			}
			failures = 0
		}
	}
}

// refreshDelay refreshes at two thirds of the granted expiry, or retries after a failure.
func (d *Device) refreshDelay() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.registered || d.granted <= 0 {
		return d.cfg.RetryInterval
	}
	return time.Duration(d.granted) * time.Second * 2 / 3
}

// reregister registers again and returns when to do so next.
func (d *Device) reregister(why string) time.Duration {
	d.log.Info("registering again", "reason", why)
	res, err := d.Register(d.ctx, d.cfg.Expires)
	switch {
	case err != nil:
		d.log.Warn("register failed", "error", err, "retry_in", d.cfg.RetryInterval)
	case res.StatusCode != sip.StatusOK:
		d.log.Warn("register rejected", "status", res.StatusCode, "reason", res.Reason, "retry_in", d.cfg.RetryInterval)
	}
	return d.refreshDelay()
}

// regConnLost reports, for TCP and TLS, that the connection the device registered over is gone.
func (d *Device) regConnLost() bool {
	if !connOriented(d.transport) {
		return false
	}
	d.mu.Lock()
	server := d.serverAddr
	d.mu.Unlock()
	return !d.isRegConn(server)
}

// isRegConn reports whether sipgo's current TCP/TLS connection to remote is the one we registered over.
func (d *Device) isRegConn(remote string) bool {
	d.mu.Lock()
	ua, local, trying := d.ua, d.regLocal, d.tryLocal
	d.mu.Unlock()
	if ua == nil || (local == "" && trying == "") {
		return false
	}
	conn, err := ua.TransportLayer().GetConnection(d.transport, remote)
	if err != nil {
		return false
	}
	defer func() { _, _ = conn.TryClose() }()
	got := conn.LocalAddr().String()
	return got == local || got == trying
}

func (d *Device) requestTimeout() time.Duration {
	return min(max(d.cfg.KeepaliveInterval, minRequestTimeout), maxRequestTimeout)
}

func (d *Device) sendKeepalive() error {
	ctx, cancel := context.WithTimeout(d.ctx, d.requestTimeout())
	defer cancel()
	return d.sendMANSCDP(ctx, keepaliveNotify{CmdType: "Keepalive", SN: d.nextSN(), DeviceID: d.cfg.ID, Status: "OK"})
}

func (d *Device) nextSN() int { return int(d.sn.Add(1)) }

// sendMANSCDP sends v as a MESSAGE to the server and expects a 2xx.
func (d *Device) sendMANSCDP(ctx context.Context, v any) error {
	body, err := encodeBody(v, d.cfg.Charset)
	if err != nil {
		return err
	}
	d.mu.Lock()
	client, dest := d.client, d.serverAddr
	d.mu.Unlock()
	if client == nil {
		return errors.New("device not started: call Start or Register first")
	}
	req := newMessage(d.selfURI(), d.serverURI(), dest, d.transport, body)
	res, err := client.Do(ctx, req)
	if errors.Is(err, sip.ErrUDPMTUCongestion) {
		return fmt.Errorf("MESSAGE of %d bytes too large for UDP: lower CatalogPerMessage or RecordsPerMessage, or use TCP: %w", len(body), err)
	}
	if err != nil {
		return fmt.Errorf("MESSAGE to %s: %w", dest, err)
	}
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("MESSAGE to %s answered %d %s", dest, res.StatusCode, res.Reason)
	}
	return nil
}
