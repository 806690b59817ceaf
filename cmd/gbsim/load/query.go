package load

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/gbnote"
)

// QueryConfig describes a routed-query load: a fake device below the proxy,
// a fake upper platform above it, and DeviceStatus queries from the one to
// the other.
type QueryConfig struct {
	Lower       string        // proxy's lower-side SIP address (UDP), where the device registers and answers
	Upper       string        // proxy's upper-side SIP address (UDP), where queries are sent
	ProxyID     string        // proxy's 20-digit SIP ID
	Domain      string        // proxy's SIP domain and digest realm (default: first 10 digits of ProxyID, or of DeviceID when Direct)
	DeviceID    string        // the fake device's 20-digit ID
	Password    string        // the device's digest password at the proxy
	UpperID     string        // the fake upper platform's 20-digit ID, as in the proxy's upper.platforms
	UpperListen string        // UDP address of the fake upper (default 127.0.0.1:0); the device binds the same IP
	TargetID    string        // DeviceID the upper asks for, as it sees it (default DeviceID)
	Queries     int           // DeviceStatus queries per Run
	Concurrency int           // queries in flight at once (default 64)
	Timeout     time.Duration // a query not complete this long after it was sent fails (default 5 s)
	// Direct leaves the proxy out: the upper queries the device's socket and
	// the device answers the upper's, so a run measures the generator alone.
	Direct bool
	// Note signs the upper's queries and the device's Responses and Catalog
	// answers with Date and Note, one seed for both sides (configure the
	// proxy's upper platform and device with it). Require is not checked:
	// both sides take the proxy's requests, signed or not, unread.
	Note gbnote.Config
}

// QueryResult summarises one Run.
type QueryResult struct {
	Completed   int            // queries whose 2xx and Response (right SN and DeviceID) both arrived
	Failed      int            // the rest, including any not sent because ctx ended
	FailReasons map[string]int // why, e.g. "timeout: no Response MESSAGE" or "404 Not Found"
	Elapsed     time.Duration  // first query sent to last query ended
	Rate        float64        // Completed per second of Elapsed
	P50, P99    time.Duration  // query sent to its Response received, completed queries only
	Retransmits int            // queries and Responses re-sent on timer E
	WrongSN     int            // Responses whose SN was never sent or whose DeviceID is not TargetID
}

const (
	// socketReaders read each socket in parallel: enough for two cores.
	socketReaders = 2
	sweepInterval = 20 * time.Millisecond
	// socketBuffer absorbs bursts of a full window of queries; the kernel
	// may grant less (net.core.rmem_max).
	socketBuffer = 4 << 20
)

// QueryLoad is a fake upper platform and a fake device. The upper listens
// from NewQueryLoad on, so the proxy can be configured with UpperAddr and
// started before Run.
type QueryLoad struct {
	cfg    QueryConfig
	note   *gbnote.Signer // nil: no signing
	token  string         // makes Call-IDs and branches unique across loads and runs
	upper  *fakeUpper
	device *fakeDevice
	cancel context.CancelFunc
	wg     sync.WaitGroup

	runMu      sync.Mutex // one Run at a time
	runs       int
	registered bool // the device, at the proxy
}

// RunQueries is NewQueryLoad, Run and Close: for Direct runs, or a proxy
// already configured with cfg.UpperListen as its upper platform.
func RunQueries(ctx context.Context, cfg QueryConfig) (QueryResult, error) {
	q, err := NewQueryLoad(cfg)
	if err != nil {
		return QueryResult{}, err
	}
	defer q.Close()
	return q.Run(ctx)
}

// NewQueryLoad opens the upper's and the device's sockets and starts
// answering on them. cfg.Lower and cfg.Upper may be left empty until
// SetProxy, for a proxy that picks its ports when it starts.
func NewQueryLoad(cfg QueryConfig) (*QueryLoad, error) {
	cfg, err := withQueryDefaults(cfg)
	if err != nil {
		return nil, err
	}
	note, err := gbnote.New(cfg.Note)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	s, err := openSides(cfg.UpperListen, cfg.UpperID, Config{ServerID: cfg.ProxyID, Domain: cfg.Domain, Password: cfg.Password, note: note})
	if err != nil {
		return nil, err
	}
	upperConn, token, r, ep := s.upper.conn, s.token, s.r, s.ep
	q := &QueryLoad{cfg: cfg, note: note, token: token, cancel: s.cancel, upper: s.upper,
		device: &fakeDevice{r: r, ep: ep, pending: map[int64]*pendingResponse{},
			seen: map[uint64]struct{}{}, seenBefore: map[uint64]struct{}{}, seed: maphash.MakeSeed()},
	}
	// Responses go to the upper when direct, else to the proxy's lower side.
	toID, toDomain := cfg.ProxyID, cfg.Domain
	if cfg.Direct {
		toID, toDomain = cfg.UpperID, cfg.UpperID[:10]
		q.device.dest = upperConn.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	q.device.tmpl = newTemplate(cfg.DeviceID, cfg.Domain, toID, toDomain, ep.local, "gbr-"+token+"-")
	q.device.tmpl.note = note
	if err := q.SetProxy(cfg.Lower, cfg.Upper); err != nil {
		q.Close()
		return nil, err
	}
	q.start()
	return q, nil
}

// sides are the sockets both loads open: the fake upper platform's, and a
// device endpoint on the same IP whose runner registers it at the proxy.
type sides struct {
	upper  *fakeUpper
	r      *runner
	ep     *endpoint
	token  string // makes Call-IDs and branches unique across loads and runs
	cancel context.CancelFunc
}

// openSides binds the upper on upperListen and the device on the same IP;
// reg names the proxy (ServerID, Domain) and the device's Password.
func openSides(upperListen, upperID string, reg Config) (sides, error) {
	upperAddr, err := net.ResolveUDPAddr("udp", upperListen)
	if err != nil {
		return sides{}, fmt.Errorf("load: resolve UpperListen %q: %w", upperListen, err)
	}
	upperConn, err := net.ListenUDP("udp", upperAddr)
	if err != nil {
		return sides{}, fmt.Errorf("load: open the fake upper platform's socket on %s: %w (check UpperListen)", upperListen, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	token := strconv.FormatInt(time.Now().UnixNano(), 36)
	reg.LocalIP = upperAddr.IP.String()
	r := &runner{ctx: ctx, failReasons: map[string]int{}, cfg: reg}
	ep, err := listen(r.cfg.LocalIP, nil, r)
	if err != nil {
		cancel()
		upperConn.Close()
		return sides{}, err
	}
	return sides{r: r, ep: ep, token: token, cancel: cancel,
		upper: &fakeUpper{conn: upperConn, domain: upperID[:10], nonce: token, registered: make(chan struct{})}}, nil
}

// resolveUDP parses ip:port, or resolves a host name.
func resolveUDP(addr, what string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return ap, nil
	}
	resolved, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("load: resolve %s %q: %w", what, addr, err)
	}
	return resolved.AddrPort(), nil
}

func withQueryDefaults(cfg QueryConfig) (QueryConfig, error) {
	if cfg.UpperListen == "" {
		cfg.UpperListen = "127.0.0.1:0"
	}
	if cfg.TargetID == "" {
		cfg.TargetID = cfg.DeviceID
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 64
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Direct && cfg.ProxyID == "" {
		cfg.ProxyID = cfg.UpperID // only named in the device's registrar config, which Direct never uses
	}
	if cfg.Domain == "" && isGBID(cfg.ProxyID) {
		cfg.Domain = cfg.ProxyID[:10]
	}
	for name, id := range map[string]string{"DeviceID": cfg.DeviceID, "UpperID": cfg.UpperID, "ProxyID": cfg.ProxyID, "TargetID": cfg.TargetID} {
		if !isGBID(id) {
			return cfg, fmt.Errorf("load: %s %q must be a 20-digit GB/T 28181 ID", name, id)
		}
	}
	if cfg.Queries <= 0 {
		return cfg, fmt.Errorf("load: Queries %d: ask for at least one", cfg.Queries)
	}
	return cfg, nil
}

func isGBID(id string) bool {
	if len(id) != 20 {
		return false
	}
	for _, c := range []byte(id) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// UpperAddr is the fake upper platform's address, for the proxy's
// upper.platforms entry (id cfg.UpperID, transport udp).
func (q *QueryLoad) UpperAddr() string { return q.upper.conn.LocalAddr().String() }

// SetProxy names the proxy's lower- and upper-side addresses, for a proxy
// started after NewQueryLoad. Call it before Run, not during one.
func (q *QueryLoad) SetProxy(lower, upper string) error {
	q.runMu.Lock()
	defer q.runMu.Unlock()
	q.cfg.Lower, q.cfg.Upper = lower, upper
	if q.cfg.Direct || lower == "" {
		return nil
	}
	addr, err := resolveUDP(lower, "the proxy's lower address")
	if err != nil {
		return err
	}
	d := q.device
	d.mu.Lock()
	d.dest = addr
	d.mu.Unlock()
	d.ep.mu.Lock()
	d.ep.server = net.UDPAddrFromAddrPort(addr)
	d.ep.mu.Unlock()
	return nil
}

func (q *QueryLoad) start() {
	ctx := q.device.r.ctx
	for range socketReaders {
		reply, rd := make([]byte, 0, 1024), newDeviceReader()
		readDatagrams(&q.wg, q.upper.conn, func(b []byte, from netip.AddrPort) { reply = q.upper.handle(b, from, reply) })
		readDatagrams(&q.wg, q.device.ep.conn, func(b []byte, from netip.AddrPort) { q.device.handle(b, from, rd) })
	}
	q.upper.conn.SetReadBuffer(socketBuffer)
	q.device.ep.conn.SetReadBuffer(socketBuffer)
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		tick := time.NewTicker(sweepInterval)
		defer tick.Stop()
		lastForget := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				q.device.sweep(now)
				if run := q.upper.run.Load(); run != nil {
					run.sweep(q.upper.conn, now)
				}
				if now.Sub(lastForget) >= dedupPeriod {
					q.device.forgetOldQueries()
					lastForget = now
				}
			}
		}
	}()
}

// WaitRegistered waits until the proxy has registered to the fake upper.
func (q *QueryLoad) WaitRegistered(ctx context.Context) error {
	return q.upper.waitRegistered(ctx, q.cfg.UpperID)
}

// Run registers the device to the proxy (once), waits for the proxy to
// register upward, then sends cfg.Queries queries. Failed queries are
// counted in the result; the error is for setup failures and ctx ending.
func (q *QueryLoad) Run(ctx context.Context) (QueryResult, error) {
	q.runMu.Lock()
	defer q.runMu.Unlock()
	cfg := q.cfg
	var dest netip.AddrPort
	var tmpl messageTemplate
	q.runs++
	callPrefix := "gbq-" + q.token + "-" + strconv.Itoa(q.runs) + "-"
	upperLocal := q.UpperAddr()
	if cfg.Direct {
		dest = q.device.ep.conn.LocalAddr().(*net.UDPAddr).AddrPort()
		tmpl = newTemplate(cfg.UpperID, cfg.UpperID[:10], cfg.DeviceID, cfg.Domain, upperLocal, callPrefix)
	} else {
		if err := q.connect(ctx); err != nil {
			return QueryResult{}, err
		}
		upper, err := net.ResolveUDPAddr("udp", cfg.Upper)
		if err != nil {
			return QueryResult{}, fmt.Errorf("load: resolve the proxy's upper address %q: %w", cfg.Upper, err)
		}
		dest = upper.AddrPort()
		tmpl = newTemplate(cfg.UpperID, cfg.UpperID[:10], cfg.ProxyID, cfg.Domain, upperLocal, callPrefix)
	}
	tmpl.note = q.note
	run := newQueryRun(tmpl, cfg.TargetID, dest, cfg)
	q.upper.run.Store(run)
	defer q.upper.run.Store(nil)
	responsesBefore := q.device.retransmits.Load()

	start := time.Now()
	body := make([]byte, 0, 512)
	err := func() error {
		for sn := int64(1); sn <= int64(cfg.Queries); sn++ {
			select {
			case pq := <-run.free:
				body = appendDeviceStatusQuery(body[:0], sn, cfg.TargetID)
				run.send(q.upper.conn, pq, sn, body)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		for range cfg.Concurrency { // every query ended, by answer or timeout
			select {
			case <-run.free:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}()

	run.mu.Lock()
	defer run.mu.Unlock()
	res := QueryResult{
		Completed:   len(run.latencies),
		FailReasons: run.failReasons,
		Retransmits: run.retransmits + int(q.device.retransmits.Load()-responsesBefore),
		WrongSN:     run.wrongSN,
	}
	res.Failed = cfg.Queries - res.Completed
	if unended := res.Failed - sum(run.failReasons); unended > 0 {
		res.FailReasons["not ended (cancelled)"] = unended
	}
	if !run.lastDone.IsZero() {
		res.Elapsed = run.lastDone.Sub(start)
	}
	if res.Elapsed > 0 {
		res.Rate = float64(res.Completed) / res.Elapsed.Seconds()
	}
	if n := len(run.latencies); n > 0 {
		slices.Sort(run.latencies)
		res.P50, res.P99 = run.latencies[n/2], run.latencies[n*99/100]
	}
	return res, err
}

// connect registers the device to the proxy, once, and waits for the
// proxy's own registration upward.
func (q *QueryLoad) connect(ctx context.Context) error {
	cfg := q.cfg
	if cfg.Lower == "" || cfg.Upper == "" {
		return errors.New("load: the proxy's Lower and Upper addresses are not set (QueryConfig or SetProxy)")
	}
	if !q.registered {
		d := q.device
		dev := device{id: cfg.DeviceID, callID: "gbreg-" + q.token, tag: q.token}
		if err := d.r.registerAs(ctx, d.ep, dev); err != nil {
			return fmt.Errorf("load: register device %s at the proxy's lower side %s: %w (check Password and the proxy's lower.password)", cfg.DeviceID, cfg.Lower, err)
		}
		q.registered = true
	}
	return q.WaitRegistered(ctx)
}

// Close stops answering and closes the sockets.
func (q *QueryLoad) Close() {
	q.cancel()
	q.upper.conn.Close()
	q.device.ep.conn.Close()
	q.wg.Wait()
}

// readDatagrams reads conn on a goroutine of wg until it is closed, handing
// each datagram to handle (which may keep no reference to it).
func readDatagrams(wg *sync.WaitGroup, conn *net.UDPConn, handle func(b []byte, from netip.AddrPort)) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err == nil {
				handle(buf[:n], from)
			}
		}
	}()
}
