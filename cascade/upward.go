package cascade

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
	"github.com/gbproxy/gbproxy/configs"
	"github.com/gbproxy/gbproxy/endpoint"
	"github.com/gbproxy/gbproxy/security"
)

// upperTarget is the server we register to: the configured platform, or the
// one a 302 sent us to.
type upperTarget struct {
	id   string
	addr string
}

// upperClient keeps gbproxy registered to one upper platform (GB/T 28181
// §9.1.2): digest REGISTER, refresh before expiry, keepalive MESSAGEs, retry
// after retry_interval, 302 redirects, one persistent TCP or TLS connection.
type upperClient struct {
	up   *upperSide
	id   string
	conf atomic.Pointer[platformConf] // swapped by a change that keeps the address
	log  zerolog.Logger

	// ctx ends this client alone (platform removed or replaced); done
	// closes when its loop has returned.
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}
	started  atomic.Bool
	renewNow chan struct{} // settings changed: register again at once

	callID  string // one registration Call-ID for the life of the process
	fromTag string

	connLost chan struct{}

	// lead tracks the registration loop run while this node is the
	// platform's elected registering node (cluster only): leadEnd is closed
	// when the running one returns; leadStopped once the client stopped.
	leadMu      sync.Mutex
	leadEnd     chan struct{}
	leadStopped bool

	share atomic.Pointer[shareView]
	// sources: where its requests may come from besides allow_from (the
	// upper guard).
	sources platformSources

	mu       sync.Mutex
	cseq     uint32
	st       PlatformState
	redirect *upperTarget
	remote   string // TCP/TLS peer address of our connection
	// lostAt/lostErr: a working registration was lost and not yet regained.
	lostAt  time.Time
	lostErr error
	// tls verifies the platform over transport tls (set once by newUpperClient).
	tls *tls.Config
}

// platformConf is one platform's settings with its networks parsed.
type platformConf struct {
	configs.PlatformConfig
	allowFrom  []netip.Prefix
	mediaAllow []netip.Prefix
}

func newPlatformConf(p configs.PlatformConfig) *platformConf {
	return &platformConf{PlatformConfig: p, allowFrom: prefixes(p.AllowFrom), mediaAllow: prefixes(p.MediaAllow)}
}

// prefixes parses CIDRs validated with the config.
func prefixes(cidrs []string) []netip.Prefix {
	var out []netip.Prefix
	for _, cidr := range cidrs {
		if pfx, err := netip.ParsePrefix(cidr); err == nil {
			out = append(out, pfx.Masked())
		}
	}
	return out
}

func (u *upperClient) cfg() *platformConf { return u.conf.Load() }

func (u *upperClient) view() *shareView { return u.share.Load() }

// charset is what this platform wants our MANSCDP bodies in.
func (u *upperClient) charset() manscdp.Charset {
	if u.cfg().Charset == "utf-8" {
		return manscdp.CharsetUTF8
	}
	return manscdp.CharsetGB2312
}

// newUpperClient prepares the client of one platform; start runs it.
func newUpperClient(up *upperSide, p configs.PlatformConfig, share configs.ShareConfig) (*upperClient, error) {
	u := &upperClient{
		up: up, id: p.ID,
		log:      up.log.With().Str("platform_id", p.ID).Str("platform", p.Address).Logger(),
		done:     make(chan struct{}),
		renewNow: make(chan struct{}, 1),
		callID:   sip.GenerateTagN(24),
		fromTag:  sip.GenerateTagN(16),
		connLost: make(chan struct{}, 1),
		st:       PlatformState{ID: p.ID, Address: p.Address, Transport: p.Transport, Charset: p.Charset},
	}
	tlsCfg, err := platformTLS(p)
	if err != nil {
		return nil, err
	}
	u.tls = tlsCfg
	u.ctx, u.cancel = context.WithCancel(up.ctx)
	u.conf.Store(newPlatformConf(p))
	u.share.Store(newShareView(share, p.ID))
	u.resolveSources(up.ctx)
	return u, nil
}

// platformTLS loads what verifies platform p over transport tls; nil for
// the other transports.
func platformTLS(p configs.PlatformConfig) (*tls.Config, error) {
	if p.Transport != "tls" {
		return nil, nil
	}
	host, _ := endpoint.SplitHostPort(p.Address)
	tlsCfg, err := security.LoadClientTLS(p.TLS, host)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return tlsCfg, nil
}

// start runs the registration loop until stop or the cascade's end; in a
// cluster, only while this node is elected to register to the platform.
func (u *upperClient) start() {
	u.started.Store(true)
	u.up.wg.Add(1)
	if cl := u.up.cluster; cl != nil {
		go u.runElected(cl)
		return
	}
	go func() {
		defer u.up.wg.Done()
		defer close(u.done)
		u.run(u.ctx)
	}()
}

// stop ends the loop and waits for it.
func (u *upperClient) stop() {
	u.cancel()
	if u.started.Load() {
		<-u.done
	}
}

// renew takes new settings of the same platform at the same address: the
// loop registers again at once with them, the registration's Call-ID kept.
func (u *upperClient) renew(p configs.PlatformConfig) {
	u.conf.Store(newPlatformConf(p))
	u.mu.Lock()
	u.st.Charset = p.Charset
	u.mu.Unlock()
	select {
	case u.renewNow <- struct{}{}:
	default:
	}
}

func (u *upperClient) state() PlatformState {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.st
}

func (u *upperClient) update(f func(*PlatformState)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	f(&u.st)
}

// run registers, keeps the registration alive, and starts over when it is
// lost, until ctx ends. A failed attempt waits retry_interval (GB/T 28181:
// not less than 60 s in production); losing a working registration
// re-registers at once.
func (u *upperClient) run(ctx context.Context) {
	if u.cfg().RetryInterval < time.Minute {
		u.log.Warn().Stringer("retry_interval", u.cfg().RetryInterval).Msg("retry_interval below the 60 s GB/T 28181 asks for; fine for tests, unkind to real platforms")
	}
	immediate := true
	for ctx.Err() == nil {
		if !immediate {
			select {
			case <-ctx.Done():
				return
			case <-u.renewNow:
			case <-time.After(u.cfg().RetryInterval):
			}
		}
		immediate = u.session(ctx)
	}
}

// session is one registration's life. It reports whether it got registered.
func (u *upperClient) session(ctx context.Context) bool {
	target := u.target()
	expires, err := u.register(ctx, target, u.cfg().Expires)
	var redirect *redirectError
	if errors.As(err, &redirect) {
		u.log.Info().Str("to", redirect.target.id+"@"+redirect.target.addr).Msg("upper platform redirected our registration (302)")
		u.mu.Lock()
		u.redirect = &redirect.target
		u.mu.Unlock()
		target = redirect.target
		expires, err = u.register(ctx, target, u.cfg().Expires)
	}
	if err != nil {
		u.failed(target, err)
		return false
	}
	u.registered(target, expires)

	keepalive := time.NewTicker(u.cfg().KeepaliveInterval)
	defer keepalive.Stop()
	refresh := time.NewTimer(refreshAfter(expires))
	defer refresh.Stop()
	misses := 0
	for {
		select {
		case <-ctx.Done():
			return true
		case <-u.renewNow:
			u.log.Info().Msg("settings of the upper platform changed; registering again with them")
			return true
		case <-u.connLost:
			u.lost(target, fmt.Errorf("%s connection to upper platform closed", strings.ToUpper(u.cfg().Transport)))
			return true
		case <-refresh.C:
			if expires, err = u.register(ctx, target, u.cfg().Expires); err != nil {
				u.failed(target, fmt.Errorf("refresh: %w", err))
				return true
			}
			u.registered(target, expires)
			refresh.Reset(refreshAfter(expires))
		case <-keepalive.C:
			err := u.keepalive(ctx, target)
			var rejected *statusError
			switch {
			case err == nil:
				misses = 0
			case errors.As(err, &rejected):
				// The upper no longer knows us (it restarted): register again now.
				u.lost(target, fmt.Errorf("keepalive rejected: %w", err))
				return true
			default:
				misses++
				u.up.metrics.Inc("gbproxy_keepalives_total", "side", "upper", "result", "timeout")
				u.log.Warn().Err(err).Int("missed", misses).Msg("keepalive to upper platform unanswered")
				if misses >= u.cfg().KeepaliveTimeoutCount {
					u.failed(target, fmt.Errorf("%d keepalives unanswered", misses))
					return true
				}
			}
		}
	}
}

// refreshAfter schedules the refresh well before expiry (GB/T 28181: refresh
// before the registration expires), leaving time for a retry.
func refreshAfter(expires int) time.Duration {
	d := secondsDuration(expires)
	return max(d-min(d/4, 5*time.Minute), time.Second)
}

func (u *upperClient) target() upperTarget {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.redirect != nil {
		return *u.redirect
	}
	return upperTarget{id: u.id, addr: u.cfg().Address}
}

// quickRecovery: a registration lost and regained within it is routine (the
// upper restarted or dropped our connection), not an error to investigate.
const quickRecovery = time.Second

func (u *upperClient) registered(t upperTarget, expires int) {
	now := u.up.now()
	u.mu.Lock()
	was := u.st.Registered
	u.st.Registered, u.st.LastError = true, ""
	u.st.Server = t.id + "@" + t.addr
	u.st.ExpiresAt = now.Add(secondsDuration(expires))
	u.st.Keepalive = now
	lostAt, lostErr := u.lostAt, u.lostErr
	u.lostAt, u.lostErr = time.Time{}, nil
	u.mu.Unlock()
	u.up.metrics.Inc("gbproxy_upper_registrations_total", "platform", u.id, "result", "ok")
	if !was {
		u.resolveSources(u.up.ctx)
		log := u.log.With().Str("server", t.id+"@"+t.addr).Int("expires", expires).Str("transport", u.cfg().Transport).Logger()
		switch gap := now.Sub(lostAt); {
		case lostErr == nil:
			log.Info().Msg("registered to upper platform")
		case gap <= quickRecovery:
			log.Info().AnErr("cause", lostErr).Stringer("after", gap).Msg("registration to upper platform lost and regained at once")
		default:
			log.Warn().AnErr("cause", lostErr).Stringer("after", gap).Msg("registration to upper platform regained")
		}
	}
	u.up.store.Put(bucketPlatforms, u.id, u.state())
}

// failed records a lost or refused registration. A redirected target that
// fails sends us back to the redirecting server (GB/T 28181-2022 §9.1.2.3).
func (u *upperClient) failed(t upperTarget, err error) {
	was := u.drop(err)
	u.mu.Lock()
	u.lostAt, u.lostErr = time.Time{}, nil // reported here
	u.mu.Unlock()
	u.up.metrics.Inc("gbproxy_upper_registrations_total", "platform", u.id, "result", "failed")
	ev := u.log.Warn()
	if was {
		ev = u.log.Error()
	}
	ev.Err(err).Str("server", t.id+"@"+t.addr).Bool("was_registered", was).
		Stringer("retry_in", u.cfg().RetryInterval).Msg("upper platform registration lost or refused; check address, ID and password of this platform")
	u.up.store.Put(bucketPlatforms, u.id, u.state())
}

// lost records a working registration that ended (connection closed,
// keepalive rejected after an upper restart); the caller registers again at
// once. Only registered() or failed() logs it, knowing how that went.
func (u *upperClient) lost(t upperTarget, err error) {
	if u.drop(err) {
		u.mu.Lock()
		u.lostAt, u.lostErr = u.up.now(), err
		u.mu.Unlock()
	}
	u.up.metrics.Inc("gbproxy_upper_registrations_total", "platform", u.id, "result", "failed")
	u.log.Debug().Err(err).Str("server", t.id+"@"+t.addr).Msg("upper platform registration lost; registering again")
	u.up.store.Put(bucketPlatforms, u.id, u.state())
}

// drop marks the registration gone, closes our connection and runs the
// upper-lost hooks once per registration; it reports whether it was
// registered (or was lost a moment ago and not regained).
func (u *upperClient) drop(err error) (was bool) {
	u.mu.Lock()
	registered := u.st.Registered
	was = registered || u.lostErr != nil
	u.st.Registered, u.st.LastError = false, err.Error()
	u.redirect = nil
	u.mu.Unlock()
	u.closeConn()
	select { // a close we caused ourselves must not end the next session
	case <-u.connLost:
	default:
	}
	if registered {
		for _, f := range u.up.upperLostHooks {
			f(u.id, err.Error())
		}
	}
	return was
}

// closeConn closes our TCP or TLS connection to the platform, if any.
func (u *upperClient) closeConn() {
	u.mu.Lock()
	remote := u.remote
	u.remote = ""
	u.mu.Unlock()
	if remote != "" {
		u.up.ep.CloseConn(remote)
	}
}

func (u *upperClient) connClosed(remote string) {
	u.mu.Lock()
	mine := remote == u.remote
	u.mu.Unlock()
	if mine {
		select {
		case u.connLost <- struct{}{}:
		default:
		}
	}
}

// peer opens our persistent TCP or TLS connection when needed.
func (u *upperClient) peer(ctx context.Context, t upperTarget) (endpoint.Peer, error) {
	var (
		remote string
		err    error
	)
	switch u.cfg().Transport {
	case "tcp":
		remote, err = u.up.ep.Dial(ctx, t.addr)
	case "tls":
		remote, err = u.up.ep.DialTLS(ctx, t.addr, u.tls)
	default:
		return endpoint.Peer{Transport: "UDP", Addr: t.addr}, nil
	}
	if err != nil {
		return endpoint.Peer{}, err
	}
	u.mu.Lock()
	u.remote = remote
	u.mu.Unlock()
	return endpoint.Peer{Transport: strings.ToUpper(u.cfg().Transport), Addr: remote}, nil
}

// newRequest builds a request to the upper platform t.
func (u *upperClient) newRequest(method sip.RequestMethod, t upperTarget, peer endpoint.Peer) *sip.Request {
	host, port := endpoint.SplitHostPort(t.addr)
	domain := u.cfg().Domain
	if t.id != u.id && len(t.id) >= 10 {
		domain = t.id[:10]
	}
	return u.up.ep.NewRequest(method,
		sip.Uri{Scheme: "sip", User: t.id, Host: host, Port: port},
		peer,
		sip.Uri{Scheme: "sip", User: u.up.cfg.ID, Host: u.up.cfg.Domain},
		sip.Uri{Scheme: "sip", User: t.id, Host: domain})
}

type redirectError struct{ target upperTarget }

func (e *redirectError) Error() string { return "redirected to " + e.target.id + "@" + e.target.addr }

type statusError struct{ res *sip.Response }

func (e *statusError) Error() string {
	return fmt.Sprintf("upper platform answered %d %s", e.res.StatusCode, e.res.Reason)
}

// register sends REGISTER (with digest when challenged) and returns the
// granted expiry.
func (u *upperClient) register(ctx context.Context, t upperTarget, expires int) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	peer, err := u.peer(ctx, t)
	if err != nil {
		return 0, err
	}
	req := u.newRequest(sip.REGISTER, t, peer)
	// One Call-ID and From tag across refreshes; CSeq keeps rising.
	cid := sip.CallIDHeader(u.callID) // typed, so that req.CallID() sees it
	req.ReplaceHeader(&cid)
	req.From().Params.Add("tag", u.fromTag)
	req.To().Address = req.From().Address
	u.mu.Lock()
	u.cseq++
	req.CSeq().SeqNo = u.cseq
	u.mu.Unlock()
	req.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(expires)))

	start := time.Now()
	res, err := u.doWithAuth(ctx, req)
	if err != nil {
		return 0, err
	}
	u.up.metrics.Observe("gbproxy_upper_registration_seconds", time.Since(start), "platform", u.id)
	u.mu.Lock()
	u.cseq = req.CSeq().SeqNo
	if h := res.GetHeader("X-GB-Ver"); h != nil {
		u.st.GBVersion = h.Value()
	}
	u.mu.Unlock()
	switch {
	case res.StatusCode == sip.StatusMovedTemporarily:
		ct := res.Contact()
		if ct == nil || ct.Address.Host == "" {
			return 0, errors.New("302 without a usable Contact")
		}
		port := ct.Address.Port
		if port == 0 {
			port = 5060
		}
		id := ct.Address.User
		if id == "" {
			id = t.id
		}
		return 0, &redirectError{upperTarget{id: id, addr: net.JoinHostPort(ct.Address.Host, strconv.Itoa(port))}}
	case res.StatusCode == sip.StatusIntervalToBrief && expires > 0:
		if h := res.GetHeader("Min-Expires"); h != nil {
			if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil && n > expires {
				return u.register(ctx, t, n)
			}
		}
		return 0, &statusError{res}
	case !res.IsSuccess():
		return 0, &statusError{res}
	}
	return grantedExpires(res, expires), nil
}

// doWithAuth sends req, answering one 401/407 challenge.
func (u *upperClient) doWithAuth(ctx context.Context, req *sip.Request) (*sip.Response, error) {
	res, err := u.up.ep.Do(ctx, req)
	if err != nil {
		return nil, err
	}
	if res.StatusCode != sip.StatusUnauthorized && res.StatusCode != sip.StatusProxyAuthRequired {
		return res, nil
	}
	chHeader, authHeader := "WWW-Authenticate", "Authorization"
	if res.StatusCode == sip.StatusProxyAuthRequired {
		chHeader, authHeader = "Proxy-Authenticate", "Proxy-Authorization"
	}
	ch := res.GetHeader(chHeader)
	if ch == nil {
		return nil, fmt.Errorf("%d without %s", res.StatusCode, chHeader)
	}
	auth, err := security.Authorize(ch.Value(), string(req.Method), req.Recipient.String(), u.cfg().Username, security.Secret{Password: u.cfg().Password, HA1: u.cfg().PasswordHA1})
	if err != nil {
		return nil, fmt.Errorf("answer digest challenge: %w", err)
	}
	u.up.ep.Renew(req)
	req.RemoveHeader(authHeader)
	req.AppendHeader(sip.NewHeader(authHeader, auth))
	res, err = u.up.ep.Do(ctx, req)
	if err != nil {
		return nil, err
	}
	if res.StatusCode == sip.StatusUnauthorized || res.StatusCode == sip.StatusProxyAuthRequired || res.StatusCode == sip.StatusForbidden {
		return nil, fmt.Errorf("credentials refused (%d %s): check upper.platforms[].username/password", res.StatusCode, res.Reason)
	}
	return res, nil
}

func grantedExpires(res *sip.Response, requested int) int {
	if h := res.GetHeader("Expires"); h != nil {
		if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil && n > 0 {
			return n
		}
	}
	if ct := res.Contact(); ct != nil {
		if v, ok := ct.Params.Get("expires"); ok {
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				return n
			}
		}
	}
	return requested
}

func (u *upperClient) keepalive(ctx context.Context, t upperTarget) error {
	ctx, cancel := context.WithTimeout(ctx, min(u.cfg().KeepaliveInterval, requestTimeout))
	defer cancel()
	body, err := manscdp.Encode("Notify", &manscdp.Keepalive{Base: manscdp.Base{CmdType: "Keepalive", SN: nextSN(), DeviceID: u.up.cfg.ID}, Status: "OK"}, manscdp.CharsetGB2312)
	if err != nil {
		return err
	}
	res, err := u.send(ctx, t, sip.MESSAGE, body)
	if err != nil {
		return err
	}
	if !res.IsSuccess() {
		return &statusError{res}
	}
	u.up.metrics.Inc("gbproxy_keepalives_total", "side", "upper", "result", "ok")
	u.mu.Lock()
	u.st.Keepalive = u.up.now()
	u.mu.Unlock()
	return nil
}

// message sends one MANSCDP MESSAGE to the platform's current server within
// requestTimeout; a non-2xx answer is an error.
func (u *upperClient) message(body []byte, headers ...sip.Header) error {
	ctx, cancel := context.WithTimeout(u.ctx, requestTimeout)
	defer cancel()
	if leader, relay, err := u.relayVia(); relay {
		if err != nil {
			return err
		}
		return u.relayUp(ctx, leader, body, headers)
	}
	return u.messageDirect(ctx, body, headers...)
}

// messageDirect sends a MESSAGE to the platform from this node.
func (u *upperClient) messageDirect(ctx context.Context, body []byte, headers ...sip.Header) error {
	res, err := u.send(ctx, u.target(), sip.MESSAGE, body, headers...)
	if err == nil && !res.IsSuccess() {
		err = &statusError{res}
	}
	return err
}

// send delivers a MANSCDP MESSAGE to the upper platform on our connection.
func (u *upperClient) send(ctx context.Context, t upperTarget, method sip.RequestMethod, body []byte, headers ...sip.Header) (*sip.Response, error) {
	peer, err := u.peer(ctx, t)
	if err != nil {
		return nil, err
	}
	req := u.newRequest(method, t, peer)
	if body != nil {
		req.AppendHeader(sip.NewHeader("Content-Type", contentTypeMANSCDP))
		req.SetBody(body)
	}
	setHeaders(req, headers)
	return u.up.ep.Do(ctx, req)
}

// unregister sends Expires: 0 on graceful shutdown (in a cluster, by the
// last node only: see mayUnregister).
func (u *upperClient) unregister(ctx context.Context) {
	if u.mayUnregister() {
		u.expire(ctx)
	}
}

// expire sends Expires: 0 when registered (in a cluster: this node is the
// one registering to the platform). A platform removed or moved leaves the
// whole cluster, so this is what retire does on every node.
func (u *upperClient) expire(ctx context.Context) {
	if !u.state().Registered {
		return
	}
	t := u.target()
	if _, err := u.register(ctx, t, 0); err != nil {
		u.log.Warn().Err(err).Msg("unregister from upper platform failed; it will notice by keepalive timeout")
		return
	}
	u.mu.Lock()
	u.st.Registered = false
	u.mu.Unlock()
	u.log.Info().Msg("unregistered from upper platform")
}

func secondsDuration(n int) time.Duration { return time.Duration(n) * time.Second }
