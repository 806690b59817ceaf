package sim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// nonceLifetime bounds how long a challenge may be answered (and reused for refreshes).
const nonceLifetime = 10 * time.Minute

// udpReadBuffer is the socket buffer asked for the UDP listener, bytes.
const udpReadBuffer = 4 << 20

// UpperConfig describes a simulated upper platform. Zero values take the documented defaults.
type UpperConfig struct {
	ID       string // 20-digit platform ID
	Domain   string // SIP domain and digest realm; default: first 10 digits of ID
	Password string // the one password every lower must use
	Listen   string // UDP and TCP on the same port; default "127.0.0.1:0"
	// TLS, when set, also accepts SIP over TLS on TLSListen (default "127.0.0.1:0") with this server
	// configuration (set ClientCAs and ClientAuth to require client certificates).
	TLS       *tls.Config
	TLSListen string
	// Redirect, as "ID@host:port", makes the registrar answer an authenticated REGISTER with
	// 302 and Contact <sip:ID@host:port> (GB/T 28181-2022 registration redirect).
	Redirect string
	Expires  int // cap on the granted expiry, seconds; default 3600
	// QuietPeriod is how long Request waits for a further Response before returning what it has;
	// default 500 ms.
	QuietPeriod time.Duration
	Logger      *slog.Logger
	// Note signs what the upper sends and, with Require, checks what it receives (see NoteConfig).
	Note NoteConfig
	// VoiceAnswerDelay rings (180) this long before answering a call to a voice source; a CANCEL
	// meanwhile is crossed by the 200 OK (sent before the 487), as when both are in flight at once.
	VoiceAnswerDelay time.Duration
}

// gbVersion is the X-GB-Ver the upper sends: GB/T 28181-2022.
const gbVersion = "3.0"

// LowerState is what the upper platform knows about one lower platform or device.
type LowerState struct {
	ID            string
	Domain        string // host part of the lower's From URI
	Transport     string // "UDP", "TCP" or "TLS", of its last REGISTER
	Source        string // ip:port its last REGISTER came from; requests go back there
	Contact       string
	Expires       int // granted expiry, seconds
	RegisteredAt  time.Time
	LastKeepalive time.Time
	Keepalives    int // keepalives answered with 200
	Registered    bool
	Registrations int    // successful REGISTERs with a non-zero expiry, refreshes included
	GBVersion     string // X-GB-Ver of its last REGISTER, empty when it sent none
}

// CatalogItem is one entry of a lower's catalog, or of a catalog notification, as received.
type CatalogItem struct {
	DeviceID, Name, Status, ParentID, Manufacturer, Model, CivilCode string
	BusinessGroupID                                                  string
	Parental                                                         int
	Event                                                            string // notifications only: ON, OFF, VLOST, DEFECT, ADD, DEL, UPDATE
}

func newCatalogItem(it catalogItem) CatalogItem {
	parental, _ := strconv.Atoi(it.Parental)
	return CatalogItem{
		DeviceID: it.DeviceID, Name: it.Name, Status: it.Status, ParentID: it.ParentID, Manufacturer: it.Manufacturer,
		Model: it.Model, CivilCode: it.CivilCode, BusinessGroupID: it.BusinessGroupID, Parental: parental, Event: it.Event,
	}
}

type nonceInfo struct {
	opaque string
	issued time.Time
}

// pendingQuery collects the Response bodies that carry the SN of one query.
type pendingQuery struct {
	cmdType string
	bodies  [][]byte // guarded by Upper.mu
	update  signal
}

// Upper simulates an upper platform: a digest registrar that answers keepalives and queries lowers.
type Upper struct {
	*guard         // Note and Monitor-User-Identity
	cfg            UpperConfig
	log            *slog.Logger
	redirect       *sip.Uri
	addr           string
	ua             *sipgo.UserAgent
	udpClient      *sipgo.Client // leaves from the listen port
	tcpClient      *sipgo.Client // finds accepted TCP and TLS connections by the lower's address
	udpConn        net.PacketConn
	tcpLn          net.Listener
	tlsLn          net.Listener // nil without UpperConfig.TLS
	wg             sync.WaitGroup
	keepaliveReply atomic.Bool
	sn             atomic.Int64
	journal        journal[Received]
	alarms         journal[Received]
	lowerChange    signal
	voiceJournal   journal[*VoiceSource]
	ctx            context.Context // cancelled by Close
	cancel         context.CancelFunc

	mu      sync.Mutex // guards the fields below
	lowers  map[string]*LowerState
	nonces  map[string]nonceInfo
	pending map[int]*pendingQuery
	subs    map[string]*Subscription // by Call-ID
	plays   map[string]*Play         // live-video calls by Call-ID
	voices  map[string]*VoiceSource  // calls to our voice sources by Call-ID
	closed  bool
	ssrcSeq atomic.Int64
}

// NewUpper starts listening on UDP and TCP (same port) and returns once both are open.
func NewUpper(cfg UpperConfig) (*Upper, error) {
	if cfg.ID == "" {
		return nil, errors.New("upper: ID is required")
	}
	if cfg.Domain == "" {
		cfg.Domain = defaultDomain(cfg.ID)
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Expires <= 0 {
		cfg.Expires = 3600
	}
	if cfg.QuietPeriod <= 0 {
		cfg.QuietPeriod = 500 * time.Millisecond
	}
	log := cfg.Logger
	if log == nil {
		log = discardLogger()
	}
	g, err := newGuard(cfg.Note, log.With("upper", cfg.ID))
	if err != nil {
		return nil, fmt.Errorf("upper %s: %w", cfg.ID, err)
	}
	u := &Upper{
		guard:   g,
		cfg:     cfg,
		log:     log.With("upper", cfg.ID),
		lowers:  make(map[string]*LowerState),
		nonces:  make(map[string]nonceInfo),
		pending: make(map[int]*pendingQuery),
		subs:    make(map[string]*Subscription),
		plays:   make(map[string]*Play),
		voices:  make(map[string]*VoiceSource),
	}
	u.ctx, u.cancel = context.WithCancel(context.Background())
	u.keepaliveReply.Store(true)
	u.sn.Store(time.Now().UnixMilli() % 100000) // distinct SNs across restarts, as a real platform has
	if cfg.Redirect != "" {
		target, err := parseRedirect(cfg.Redirect)
		if err != nil {
			return nil, fmt.Errorf("upper %s: %w", cfg.ID, err)
		}
		u.redirect = target
	}

	udpConn, tcpLn, err := listenPair(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("upper %s: listen on %s: %w (choose a free address)", cfg.ID, cfg.Listen, err)
	}
	ua, srv, err := newStack(u.log, nil) // the upper never dials: lowers connect to it
	if err != nil {
		_ = udpConn.Close()
		_ = tcpLn.Close()
		return nil, fmt.Errorf("upper %s: %w", cfg.ID, err)
	}
	if cfg.TLS != nil {
		if cfg.TLSListen == "" {
			cfg.TLSListen = "127.0.0.1:0"
		}
		if u.tlsLn, err = tls.Listen("tcp", cfg.TLSListen, cfg.TLS); err != nil {
			_ = ua.Close()
			_ = udpConn.Close()
			_ = tcpLn.Close()
			return nil, fmt.Errorf("upper %s: listen TLS on %s: %w (choose a free address)", cfg.ID, cfg.TLSListen, err)
		}
	}
	u.addr = udpConn.LocalAddr().String()
	// Large catalogs arrive as bursts of hundreds of MESSAGEs a second: a larger socket buffer keeps
	// the kernel from dropping them while handlers run (best effort; the kernel may cap it).
	if uc, ok := udpConn.(*net.UDPConn); ok {
		_ = uc.SetReadBuffer(udpReadBuffer)
	}
	// Only the UDP client binds the listen address: sipgo pools accepted TCP connections under the
	// local address too, so a bound TCP client could pick another lower's connection.
	u.udpClient, err = sipgo.NewClient(ua, sipgo.WithClientConnectionAddr(u.addr), sipgo.WithClientLogger(u.log))
	if err == nil {
		u.tcpClient, err = sipgo.NewClient(ua, sipgo.WithClientLogger(u.log))
	}
	if err != nil {
		_ = ua.Close()
		_ = udpConn.Close()
		_ = tcpLn.Close()
		if u.tlsLn != nil {
			_ = u.tlsLn.Close()
		}
		return nil, fmt.Errorf("upper %s: create SIP client: %w", cfg.ID, err)
	}
	u.ua, u.udpConn, u.tcpLn = ua, udpConn, tcpLn
	u.guard.install(u.udpClient, ua)
	u.guard.install(u.tcpClient, ua)
	srv.OnRegister(u.onRegister)
	srv.OnMessage(u.guard.wrap(u.onMessage))
	srv.OnNotify(u.guard.wrap(u.onNotify))
	srv.OnNoRoute(u.guard.wrap(u.onOther))
	serveUDP(ua, srv, udpConn, &u.wg)
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		_ = srv.ServeTCP(tcpLn)
	}()
	if u.tlsLn != nil {
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			_ = srv.ServeTLS(u.tlsLn)
		}()
	}
	u.log.Info("upper platform listening", "addr", u.addr, "tls_addr", u.TLSAddr(), "domain", cfg.Domain)
	return u, nil
}

func parseRedirect(s string) (*sip.Uri, error) {
	id, hostPort, ok := strings.Cut(s, "@")
	if !ok || id == "" {
		return nil, fmt.Errorf("redirect %q: want ID@host:port", s)
	}
	host, portStr, err := net.SplitHostPort(hostPort)
	if err != nil {
		return nil, fmt.Errorf("redirect %q: want ID@host:port: %w", s, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("redirect %q: bad port: %w", s, err)
	}
	return &sip.Uri{Scheme: "sip", User: id, Host: host, Port: port}, nil
}

// listenPair opens UDP and TCP on the same port; with port 0 it retries when the kernel's UDP pick
// is taken on TCP.
func listenPair(addr string) (net.PacketConn, net.Listener, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	for attempt := 0; ; attempt++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		_ = pc.Close()
		if port != "0" || attempt >= 10 {
			return nil, nil, err
		}
	}
}

// Addr returns the ip:port the upper listens on (UDP and TCP).
func (u *Upper) Addr() string { return u.addr }

// TLSAddr returns the ip:port the upper accepts SIP over TLS on, "" without UpperConfig.TLS.
func (u *Upper) TLSAddr() string {
	if u.tlsLn == nil {
		return ""
	}
	return u.tlsLn.Addr().String()
}

// SetKeepaliveReply turns answering keepalives on or off; off makes lowers see their keepalives time out.
func (u *Upper) SetKeepaliveReply(ok bool) { u.keepaliveReply.Store(ok) }

// Lower returns the state of one lower, and whether it ever registered.
func (u *Upper) Lower(id string) (LowerState, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	l, ok := u.lowers[id]
	if !ok {
		return LowerState{}, false
	}
	return *l, true
}

// Lowers returns the state of every lower seen, ordered by ID.
func (u *Upper) Lowers() []LowerState {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]LowerState, 0, len(u.lowers))
	for _, l := range u.lowers {
		out = append(out, *l)
	}
	slices.SortFunc(out, func(a, b LowerState) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// WaitRegistered waits until the lower is registered and returns its state.
func (u *Upper) WaitRegistered(ctx context.Context, id string) (LowerState, error) {
	return u.WaitLower(ctx, id, func(l LowerState) bool { return l.Registered })
}

// WaitLower waits until the lower's state satisfies cond and returns that state.
func (u *Upper) WaitLower(ctx context.Context, id string, cond func(LowerState) bool) (LowerState, error) {
	for {
		changed := u.lowerChange.changed()
		if l, ok := u.Lower(id); ok && cond(l) {
			return l, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			l, _ := u.Lower(id)
			return l, fmt.Errorf("lower %s: awaited state not reached (registered=%v, keepalives=%d): %w",
				id, l.Registered, l.Keepalives, ctx.Err())
		}
	}
}

// Requests returns every request lowers sent, REGISTER included, in arrival order.
func (u *Upper) Requests() []Received { return u.journal.all() }

// WaitRequest is Device.WaitRequest for requests lowers sent to the upper.
func (u *Upper) WaitRequest(ctx context.Context, method, cmdType string) (Received, error) {
	return waitRequest(ctx, &u.journal, method, cmdType)
}

// Close stops listening and closes every connection. A new Upper on the same address simulates a restart.
func (u *Upper) Close() error {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return nil
	}
	u.closed = true
	u.mu.Unlock()
	u.cancel()
	u.mu.Lock()
	plays := make([]*Play, 0, len(u.plays))
	for _, p := range u.plays {
		plays = append(plays, p)
	}
	u.mu.Unlock()
	for _, p := range plays {
		p.end("closed")
		p.release()
	}
	u.closeVoices()
	// Listeners first: a peer reconnecting while the stack shuts down must be
	// refused, not accepted on a connection nobody will ever serve or close.
	_ = u.tcpLn.Close()
	if u.tlsLn != nil {
		_ = u.tlsLn.Close()
	}
	_ = u.udpConn.Close()
	err := closeStack(u.ua)
	u.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func (u *Upper) selfURI() sip.Uri { return sip.Uri{Scheme: "sip", User: u.cfg.ID, Host: u.cfg.Domain} }

func (u *Upper) reply(req *sip.Request, tx sip.ServerTransaction, code int, reason string) {
	u.respond(tx, sip.NewResponseFromRequest(req, code, reason, nil))
}

// respond sends res with the upper's protocol version.
func (u *Upper) respond(tx sip.ServerTransaction, res *sip.Response) {
	res.AppendHeader(sip.NewHeader(headerGBVersion, gbVersion))
	respond(u.log, tx, res)
}

func (u *Upper) onRegister(req *sip.Request, tx sip.ServerTransaction) {
	rec, _ := newReceived(req, false)
	u.journal.add(rec)
	from := req.From()
	if from == nil || from.Address.User == "" {
		u.reply(req, tx, sip.StatusBadRequest, "Missing From User")
		return
	}
	lowerID := from.Address.User
	log := u.log.With("lower", lowerID, "source", req.Source(), "transport", req.Transport())
	if req.Recipient.User != u.cfg.ID {
		log.Warn("REGISTER for another platform ID refused", "request_uri", req.Recipient.String())
		u.reply(req, tx, sip.StatusForbidden, "Wrong Platform ID")
		return
	}
	authz := req.GetHeader("Authorization")
	if authz == nil {
		u.challenge(req, tx)
		return
	}
	cred, err := digest.ParseCredentials(authz.Value())
	if err != nil {
		log.Warn("unparsable Authorization", "error", err)
		u.reply(req, tx, sip.StatusBadRequest, "Bad Authorization")
		return
	}
	u.mu.Lock()
	n, known := u.nonces[cred.Nonce]
	u.mu.Unlock()
	if !known || time.Since(n.issued) > nonceLifetime {
		log.Info("unknown or stale nonce, challenging again")
		u.challenge(req, tx)
		return
	}
	switch {
	case cred.Realm != u.cfg.Domain:
		err = fmt.Errorf("realm %q, want %q", cred.Realm, u.cfg.Domain)
	case cred.Opaque != n.opaque:
		err = fmt.Errorf("opaque %q not returned unchanged", cred.Opaque)
	default:
		err = verifyDigest(cred, req.Method.String(), u.cfg.Password)
	}
	if err != nil {
		log.Warn("REGISTER authentication failed", "error", err)
		u.reply(req, tx, sip.StatusForbidden, "Forbidden")
		return
	}

	expires := min(expiresOf(req, 3600), u.cfg.Expires) // 3600 is RFC 3261's default
	if u.redirect != nil {
		res := sip.NewResponseFromRequest(req, sip.StatusMovedTemporarily, "Moved Temporarily", nil)
		res.AppendHeader(&sip.ContactHeader{Address: *u.redirect})
		exp := sip.ExpiresHeader(expires)
		res.AppendHeader(&exp)
		log.Info("REGISTER redirected", "to", u.redirect.String())
		u.respond(tx, res)
		return
	}
	u.recordRegistration(req, lowerID, from.Address.Host, expires)
	res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil)
	if c := req.Contact(); c != nil {
		res.AppendHeader(c.Clone())
	}
	exp := sip.ExpiresHeader(expires)
	res.AppendHeader(&exp)
	res.AppendHeader(sip.NewHeader("Date", time.Now().Format(gbDateLayout)))
	if expires == 0 {
		log.Info("lower unregistered")
	} else {
		log.Info("lower registered", "expires", expires)
	}
	u.respond(tx, res)
}

func (u *Upper) challenge(req *sip.Request, tx sip.ServerTransaction) {
	nonce, opaque := randomHex(16), randomHex(16)
	now := time.Now()
	u.mu.Lock()
	for k, n := range u.nonces {
		if now.Sub(n.issued) > nonceLifetime {
			delete(u.nonces, k)
		}
	}
	u.nonces[nonce] = nonceInfo{opaque: opaque, issued: now}
	u.mu.Unlock()
	res := sip.NewResponseFromRequest(req, sip.StatusUnauthorized, "Unauthorized", nil)
	res.AppendHeader(sip.NewHeader("WWW-Authenticate",
		fmt.Sprintf(`Digest realm="%s", nonce="%s", opaque="%s", algorithm=MD5`, u.cfg.Domain, nonce, opaque)))
	u.respond(tx, res)
}

func (u *Upper) recordRegistration(req *sip.Request, lowerID, domain string, expires int) {
	u.mu.Lock()
	l := u.lowers[lowerID]
	if l == nil {
		l = &LowerState{ID: lowerID}
		u.lowers[lowerID] = l
	}
	l.Domain = domain
	l.Transport = req.Transport()
	l.Source = req.Source()
	if c := req.Contact(); c != nil {
		l.Contact = c.Address.String()
	}
	l.Expires = expires
	l.GBVersion = ""
	if v := req.GetHeader(headerGBVersion); v != nil {
		l.GBVersion = v.Value()
	}
	l.Registered = expires > 0
	if l.Registered {
		l.RegisteredAt = time.Now()
		l.Registrations++
	}
	u.mu.Unlock()
	u.lowerChange.notify()
}

func (u *Upper) onMessage(req *sip.Request, tx sip.ServerTransaction) {
	rec, h := newReceived(req, false)
	u.journal.add(rec)
	switch {
	case h.Root() == "Notify" && h.CmdType == "Keepalive":
		u.onKeepalive(req, tx)
		return
	case h.Root() == "Notify" && h.CmdType == "Alarm":
		u.onAlarm(req, tx, rec)
		return
	}
	// Debug only: large catalogs are hundreds of MESSAGEs a second.
	u.log.Debug("MESSAGE received", "cmd_type", rec.CmdType, "sn", rec.SN, "source", rec.Source)
	// sipgo runs handlers concurrently: collect before answering, so that a lower sending its next
	// Response only after our 200 finds its items kept in order.
	if h.Root() == "Response" {
		u.mu.Lock()
		p := u.pending[h.SN]
		if p != nil && strings.EqualFold(p.cmdType, h.CmdType) {
			p.bodies = append(p.bodies, rec.Body)
		}
		u.mu.Unlock()
		if p != nil {
			p.update.notify()
		}
	}
	u.reply(req, tx, sip.StatusOK, "OK")
}

// onKeepalive answers 200 to registered lowers and 404 to unknown ones, so that a lower whose
// registration was lost (e.g. after an upper restart) learns it must register again.
func (u *Upper) onKeepalive(req *sip.Request, tx sip.ServerTransaction) {
	var lowerID string
	if from := req.From(); from != nil {
		lowerID = from.Address.User
	}
	if !u.keepaliveReply.Load() {
		u.log.Info("keepalive left unanswered on purpose", "lower", lowerID)
		return
	}
	u.mu.Lock()
	l := u.lowers[lowerID]
	registered := l != nil && l.Registered
	if registered {
		l.LastKeepalive = time.Now()
		l.Keepalives++
	}
	u.mu.Unlock()
	if !registered {
		u.log.Warn("keepalive from unregistered lower", "lower", lowerID, "source", req.Source())
		u.reply(req, tx, sip.StatusNotFound, "Not Registered")
		return
	}
	u.lowerChange.notify()
	u.log.Info("keepalive", "lower", lowerID, "source", req.Source())
	u.reply(req, tx, sip.StatusOK, "OK")
}

func (u *Upper) onOther(req *sip.Request, tx sip.ServerTransaction) {
	rec, _ := newReceived(req, false)
	u.journal.add(rec)
	u.log.Info("request received", "method", rec.Method, "source", rec.Source)
	switch {
	case req.IsAck(): // the upper answers no INVITE: an ACK is stray, nothing to do
	case req.Method == sip.BYE && req.CallID() != nil && u.onVoiceBye(req, tx):
	case req.Method == sip.BYE:
		u.onBye(req, tx)
	case req.Method == sip.CANCEL && req.CallID() != nil && u.onVoiceCancel(req, tx):
	case req.Method == sip.CANCEL:
		u.reply(req, tx, sip.StatusCallTransactionDoesNotExists, "Call Does Not Exist")
	case req.Method == sip.INVITE:
		u.onVoiceInvite(req, tx)
	default: // OPTIONS included: a lower checking the link gets 200
		u.reply(req, tx, sip.StatusOK, "OK")
	}
}
