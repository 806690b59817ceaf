package load

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"
)

// CallConfig describes a session-setup load: a fake device below the proxy
// that announces Channels channels and answers INVITEs for them, and a fake
// upper platform above it that calls them (live play, GB/T 28181 §9.2).
type CallConfig struct {
	Lower       string // proxy's lower-side SIP address (UDP), where the device registers
	Upper       string // proxy's upper-side SIP address (UDP), where INVITEs are sent
	ProxyID     string // proxy's 20-digit SIP ID
	Domain      string // proxy's SIP domain and digest realm, the host of the upper's Request-URIs (default: first 10 digits of ProxyID, or of DeviceID when Direct)
	DeviceID    string // the fake device's 20-digit ID; its channels are DeviceID[:10] + "131" + a 7-digit serial
	Password    string // the device's digest password at the proxy
	UpperID     string // the fake upper platform's 20-digit ID, as in the proxy's upper.platforms
	UpperListen string // UDP address of the fake upper (default 127.0.0.1:0); the device binds the same IP
	// Channels the device announces in its Catalog (default Concurrency).
	// A run uses one channel per call slot (Hold: one per call), so no two
	// calls in flight share a channel — the proxy would share its device
	// stream between them.
	Channels    int
	Calls       int           // calls per Run (0: RunPlan only)
	Concurrency int           // calls in flight at once (default 64)
	Hold        bool          // Run leaves established calls up (no BYE) until HangUp
	Timeout     time.Duration // an INVITE or BYE without a final answer this long fails (default 10 s)
	// DeviceTrying has the device send 100 Trying before its 200 OK.
	DeviceTrying bool
	// KeepaliveInterval: the device's keepalives to the proxy (0: none).
	KeepaliveInterval time.Duration
	// Direct leaves the proxy out: the upper calls the device's socket, so
	// a run measures the generator alone.
	Direct bool
}

// CallResult summarises one Run or HangUp.
type CallResult struct {
	// Setups counts INVITEs answered 200 OK with a usable SDP answer (video
	// port, address, the offer's y=) and ACKed.
	Setups int
	// Completed counts calls ended by a 2xx to our BYE (HangUp: BYEs).
	Completed int
	// Held counts established calls left up for HangUp (Hold runs).
	Held        int
	Failed      int            // the rest, including any not ended because ctx ended
	FailReasons map[string]int // why, e.g. "INVITE: 404 Not Found", "timeout: no answer to BYE"
	// Elapsed is the first INVITE (BYE) sent to the last call ended, or
	// established when held.
	Elapsed time.Duration
	// Rate is Setups per second of Elapsed (HangUp: Completed per second).
	Rate float64
	// P50 and P99: INVITE sent to its 200 OK, good setups only (HangUp:
	// BYE sent to its 2xx).
	P50, P99 time.Duration
	// Retransmits counts INVITEs and BYEs re-sent on timers A/E and the
	// device's 200 OKs re-sent for want of an ACK.
	Retransmits int
	// EndedByPeer counts calls the other side ended with a BYE of its own
	// after its 200 OK (held, or crossing ours).
	EndedByPeer int
	// DeviceInvites and DeviceByes are the new INVITEs and the BYEs the
	// device took during the run; DeviceOpen its dialogs still up at its end.
	DeviceInvites, DeviceByes, DeviceOpen int
	// DeviceProblems is what the device found wrong since it started: in the
	// INVITEs it got, or the proxy's answers to its Catalog and keepalives.
	DeviceProblems map[string]int
}

// CallLoad is a fake upper platform and a fake device. The upper listens
// from NewCallLoad on, so the proxy can be configured with UpperAddr and
// started before Run.
type CallLoad struct {
	cfg    CallConfig
	token  string
	upper  *fakeUpper
	device *callDevice
	cancel context.CancelFunc
	wg     sync.WaitGroup

	runMu      sync.Mutex // one Run or HangUp at a time
	runs       int
	registered bool
	heldRun    *callRun // the Hold run whose calls are up
}

// RunCalls is NewCallLoad, Run and Close: for Direct runs, or a proxy
// already configured with cfg.UpperListen as its upper platform.
func RunCalls(ctx context.Context, cfg CallConfig) (CallResult, error) {
	l, err := NewCallLoad(cfg)
	if err != nil {
		return CallResult{}, err
	}
	defer l.Close()
	return l.Run(ctx)
}

// NewCallLoad opens the upper's and the device's sockets and starts
// answering on them. cfg.Lower and cfg.Upper may be left empty until
// SetProxy.
func NewCallLoad(cfg CallConfig) (*CallLoad, error) {
	cfg, err := withCallDefaults(cfg)
	if err != nil {
		return nil, err
	}
	s, err := openSides(cfg.UpperListen, cfg.UpperID, Config{ServerID: cfg.ProxyID, Domain: cfg.Domain, Password: cfg.Password})
	if err != nil {
		return nil, err
	}
	l := &CallLoad{cfg: cfg, token: s.token, cancel: s.cancel, upper: s.upper,
		device: newCallDevice(s.r, s.ep, cfg.DeviceID, cfg.Channels, cfg.DeviceTrying)}
	if err := l.SetProxy(cfg.Lower, cfg.Upper); err != nil {
		l.Close()
		return nil, err
	}
	l.start()
	return l, nil
}

func withCallDefaults(cfg CallConfig) (CallConfig, error) {
	if cfg.UpperListen == "" {
		cfg.UpperListen = "127.0.0.1:0"
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 64
	}
	if cfg.Channels <= 0 {
		cfg.Channels = cfg.Concurrency
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Direct && cfg.ProxyID == "" {
		cfg.ProxyID = cfg.UpperID // only named in the device's registrar config, which Direct never uses
	}
	if cfg.Domain == "" && cfg.Direct && isGBID(cfg.DeviceID) {
		cfg.Domain = cfg.DeviceID[:10]
	}
	if cfg.Domain == "" && isGBID(cfg.ProxyID) {
		cfg.Domain = cfg.ProxyID[:10]
	}
	for name, id := range map[string]string{"DeviceID": cfg.DeviceID, "UpperID": cfg.UpperID, "ProxyID": cfg.ProxyID} {
		if !isGBID(id) {
			return cfg, fmt.Errorf("load: %s %q must be a 20-digit GB/T 28181 ID", name, id)
		}
	}
	if cfg.Channels > 9_999_999 {
		return cfg, fmt.Errorf("load: Channels %d: at most 9,999,999 (7-digit serials)", cfg.Channels)
	}
	if cfg.Calls == 0 {
		return cfg, nil // RunPlan says how many
	}
	_, err := cfg.plan().check(cfg)
	return cfg, err
}

// CallPlan is what one run does.
type CallPlan struct {
	Calls       int  // calls to make
	Concurrency int  // in flight at once
	Hold        bool // leave established calls up until HangUp
	// Channels limits the run to the device's first Channels channels
	// (default all of them). A call takes the channel idle longest, so with
	// Channels == Concurrency a channel is called again as soon as its call
	// ended; Hold runs use channel n for call n.
	Channels int
}

func (cfg CallConfig) plan() CallPlan {
	return CallPlan{Calls: cfg.Calls, Concurrency: cfg.Concurrency, Hold: cfg.Hold}
}

// check fills in Channels and refuses a plan that would put two calls in
// flight on one channel.
func (p CallPlan) check(cfg CallConfig) (CallPlan, error) {
	if p.Channels == 0 {
		p.Channels = cfg.Channels
	}
	switch {
	case p.Calls <= 0:
		return p, fmt.Errorf("load: Calls %d: ask for at least one", p.Calls)
	case p.Concurrency <= 0:
		return p, fmt.Errorf("load: Concurrency %d: at least one call in flight", p.Concurrency)
	case p.Channels > cfg.Channels:
		return p, fmt.Errorf("load: a plan on %d channels, the device has %d (CallConfig.Channels)", p.Channels, cfg.Channels)
	case p.Hold && p.Calls > p.Channels:
		return p, fmt.Errorf("load: %d held calls need as many channels, the plan has %d (Channels)", p.Calls, p.Channels)
	case !p.Hold && p.Concurrency > p.Channels:
		return p, fmt.Errorf("load: %d calls in flight need as many channels, the plan has %d (Channels)", p.Concurrency, p.Channels)
	}
	return p, nil
}

// UpperAddr is the fake upper platform's address, for the proxy's
// upper.platforms entry (id cfg.UpperID, transport udp).
func (l *CallLoad) UpperAddr() string { return l.upper.conn.LocalAddr().String() }

// ChannelIDs are the channels the device announces, in order.
func (l *CallLoad) ChannelIDs() []string { return slices.Clone(l.device.channels) }

// DeviceDialogs is the number of device dialogs between INVITE and BYE.
func (l *CallLoad) DeviceDialogs() int { return l.device.open() }

// SetProxy names the proxy's lower- and upper-side addresses, for a proxy
// started after NewCallLoad. Call it before Run, not during one.
func (l *CallLoad) SetProxy(lower, upper string) error {
	l.runMu.Lock()
	defer l.runMu.Unlock()
	l.cfg.Lower, l.cfg.Upper = lower, upper
	if l.cfg.Direct || lower == "" {
		return nil
	}
	addr, err := resolveUDP(lower, "the proxy's lower address")
	if err != nil {
		return err
	}
	ep := l.device.ep
	ep.mu.Lock()
	ep.server = net.UDPAddrFromAddrPort(addr)
	ep.mu.Unlock()
	return nil
}

func (l *CallLoad) start() {
	ctx := l.device.r.ctx
	for range socketReaders {
		upReply, devReply := make([]byte, 0, 1024), make([]byte, 0, 1024)
		readDatagrams(&l.wg, l.upper.conn, func(b []byte, from netip.AddrPort) { upReply = l.upper.handle(b, from, upReply) })
		readDatagrams(&l.wg, l.device.ep.conn, func(b []byte, from netip.AddrPort) { devReply = l.device.handle(b, from, devReply) })
	}
	l.upper.conn.SetReadBuffer(socketBuffer)
	l.device.ep.conn.SetReadBuffer(socketBuffer)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		tick := time.NewTicker(sweepInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				l.device.sweep(now)
				if run := l.upper.calls.Load(); run != nil {
					run.sweep(now)
				}
			}
		}
	}()
}

// WaitRegistered waits until the proxy has registered to the fake upper.
func (l *CallLoad) WaitRegistered(ctx context.Context) error {
	return l.upper.waitRegistered(ctx, l.cfg.UpperID)
}

// Run is RunPlan with the config's Calls, Concurrency and Hold.
func (l *CallLoad) Run(ctx context.Context) (CallResult, error) {
	return l.RunPlan(ctx, l.cfg.plan())
}

// RunPlan registers the device to the proxy and waits for its catalog to be
// taken (once), waits for the proxy to register upward, then makes
// p.Calls calls, p.Concurrency in flight: INVITE, 200 OK, ACK, then
// (unless p.Hold) BYE and its 200 OK. Held calls stay up until HangUp.
// Failed calls are counted in the result; the error is for setup failures
// and ctx ending.
func (l *CallLoad) RunPlan(ctx context.Context, p CallPlan) (CallResult, error) {
	l.runMu.Lock()
	defer l.runMu.Unlock()
	cfg := l.cfg
	p, err := p.check(cfg)
	if err != nil {
		return CallResult{}, err
	}
	calls, concurrency, hold := p.Calls, p.Concurrency, p.Hold
	if l.heldRun != nil && l.heldRun.heldCount() > 0 {
		return CallResult{}, errors.New("load: calls of a Hold run are still up: HangUp first")
	}
	l.runs++
	callPrefix := "gbc-" + l.token + "-" + strconv.Itoa(l.runs) + "-"
	upperLocal := l.UpperAddr()
	upperIP := l.device.r.cfg.LocalIP
	tmpl := newCallTemplate(cfg.UpperID, cfg.UpperID[:10], cfg.Domain, upperLocal, upperIP, callPrefix)
	var dest string
	if cfg.Direct {
		dest = l.device.ep.conn.LocalAddr().String()
	} else {
		if err := l.connect(ctx); err != nil {
			return CallResult{}, err
		}
		dest = cfg.Upper
	}
	destAddr, err := resolveUDP(dest, "the INVITEs' destination")
	if err != nil {
		return CallResult{}, err
	}
	run := newCallRun(tmpl, destAddr, l.upper.conn, cfg.Timeout, hold, l.device.channels[:p.Channels], concurrency, calls)
	l.upper.calls.Store(run)
	if hold {
		l.heldRun = run
	}
	before := l.deviceCounts()

	start := time.Now()
	err = func() error {
		for n := int64(1); n <= int64(calls); n++ {
			select {
			case <-run.free:
			case <-ctx.Done():
				return ctx.Err()
			}
			var channel string
			if hold {
				channel = run.channels[n-1]
			} else {
				channel = <-run.idle // never waits: fewer calls are in flight than channels
			}
			run.invite(n, channel)
		}
		return run.drain(ctx)
	}()
	res := l.result(run, start, calls, before)
	if !hold {
		l.upper.calls.Store(nil)
	}
	return res, err
}

// drain waits until every token is back: every call ended (or was
// established, held), by answer or timeout.
func (r *callRun) drain(ctx context.Context) error {
	for range cap(r.free) {
		select {
		case <-r.free:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// HangUp sends BYE to every call a Hold run left up, Concurrency at a
// time, and waits for the answers. Completed counts the 2xx answers; P50
// and P99 are BYE to answer.
func (l *CallLoad) HangUp(ctx context.Context) (CallResult, error) {
	l.runMu.Lock()
	defer l.runMu.Unlock()
	run := l.heldRun
	if run == nil {
		return CallResult{}, nil
	}
	calls := run.heldCalls()
	slices.SortFunc(calls, func(a, b *upperCall) int { return int(a.n - b.n) })
	concurrency := min(l.cfg.Concurrency, max(len(calls), 1))
	before := l.deviceCounts()
	run.mu.Lock()
	run.reset(concurrency, len(calls))
	run.byeLatency = true
	run.mu.Unlock()
	start := time.Now()
	err := func() error {
		for _, c := range calls {
			select {
			case <-run.free:
			case <-ctx.Done():
				return ctx.Err()
			}
			run.hangUp(c)
		}
		return run.drain(ctx)
	}()
	res := l.result(run, start, len(calls), before)
	res.Rate = 0
	if res.Elapsed > 0 {
		res.Rate = float64(res.Completed) / res.Elapsed.Seconds()
	}
	if run.heldCount() == 0 {
		l.heldRun = nil
		l.upper.calls.CompareAndSwap(run, nil)
	}
	return res, err
}

type deviceCounts struct{ invites, byes, resent int64 }

func (l *CallLoad) deviceCounts() deviceCounts {
	d := l.device
	return deviceCounts{d.invites.Load(), d.byes.Load(), d.resent.Load()}
}

// result is the tally of run since start, for expected calls.
func (l *CallLoad) result(run *callRun, start time.Time, expected int, before deviceCounts) CallResult {
	after := l.deviceCounts()
	run.mu.Lock()
	defer run.mu.Unlock()
	t := &run.tally
	res := CallResult{
		Setups: t.setups, Completed: t.completed, FailReasons: t.failReasons, EndedByPeer: t.endedByPeer,
		Retransmits:    t.retransmits + int(after.resent-before.resent),
		DeviceInvites:  int(after.invites - before.invites),
		DeviceByes:     int(after.byes - before.byes),
		DeviceOpen:     l.device.open(),
		DeviceProblems: l.device.problemsCopy(),
	}
	if run.hold && !run.byeLatency {
		res.Held = len(run.held)
	}
	res.Failed = expected - res.Completed - res.Held
	if unended := res.Failed - sum(t.failReasons); unended > 0 {
		res.FailReasons["not ended (cancelled)"] = unended
	}
	if !t.lastDone.IsZero() {
		res.Elapsed = t.lastDone.Sub(start)
	}
	if res.Elapsed > 0 {
		res.Rate = float64(res.Setups) / res.Elapsed.Seconds()
	}
	if n := len(t.latencies); n > 0 {
		slices.Sort(t.latencies)
		res.P50, res.P99 = t.latencies[n/2], t.latencies[n*99/100]
	}
	return res
}

// Connect registers the device and has its catalog taken (once), and waits
// for the proxy's registration upward: what a first Run does before its
// calls, for a caller that wants the proxy ready (and measured) first.
func (l *CallLoad) Connect(ctx context.Context) error {
	l.runMu.Lock()
	defer l.runMu.Unlock()
	if l.cfg.Direct {
		return nil
	}
	return l.connect(ctx)
}

// connect registers the device to the proxy and waits for its catalog to
// be taken (once), then for the proxy's own registration upward.
func (l *CallLoad) connect(ctx context.Context) error {
	cfg := l.cfg
	if cfg.Lower == "" || cfg.Upper == "" {
		return errors.New("load: the proxy's Lower and Upper addresses are not set (CallConfig or SetProxy)")
	}
	if !l.registered {
		d := l.device
		dev := device{id: cfg.DeviceID, callID: "gbcreg-" + l.token, tag: l.token}
		if err := d.r.registerAs(ctx, d.ep, dev); err != nil {
			return fmt.Errorf("load: register device %s at the proxy's lower side %s: %w (check Password and the proxy's lower.password)", cfg.DeviceID, cfg.Lower, err)
		}
		l.registered = true
		if cfg.KeepaliveInterval > 0 {
			tmpl := newTemplate(cfg.DeviceID, cfg.Domain, cfg.ProxyID, cfg.Domain, d.ep.local, "gbka-"+l.token+"-")
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				d.keepalives(d.r.ctx, cfg.KeepaliveInterval, tmpl)
			}()
		}
	}
	select {
	case <-l.device.catalogDone:
	case <-ctx.Done():
		return fmt.Errorf("load: the proxy did not take device %s's %d-channel catalog: %w (device problems: %v)",
			cfg.DeviceID, cfg.Channels, ctx.Err(), l.device.problemsCopy())
	}
	return l.WaitRegistered(ctx)
}

// Close stops answering and closes the sockets; held calls are left as
// they are (the proxy ends them when it finds its upper gone).
func (l *CallLoad) Close() {
	l.cancel()
	l.upper.conn.Close()
	l.device.ep.conn.Close()
	l.wg.Wait()
}

// DeviceProblemsSeen is what the device has found wrong so far: in the
// INVITEs it got, or in the proxy's answers to its Catalog and keepalives.
func (l *CallLoad) DeviceProblemsSeen() map[string]int { return l.device.problemsCopy() }
