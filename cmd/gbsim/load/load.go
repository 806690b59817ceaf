// Package load is a fast GB/T 28181 registration load generator. It speaks SIP
// over raw UDP sockets from text templates, independently of gbproxy's own SIP
// stack, so a benchmark measures the proxy and not a shared library. It parses
// only what it needs: status code, Call-ID, CSeq and the digest challenge.
package load

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/gbnote"
)

// Config describes one load run.
type Config struct {
	Server      string // registrar address, host:port (UDP)
	ServerID    string // registrar's 20-digit SIP ID, used in the Request-URI
	Domain      string // SIP domain and expected digest realm
	Password    string // digest password of every device
	Devices     int    // devices to register
	Concurrency int    // registrations in flight at once (default 256)
	Sockets     int    // UDP sockets the devices are spread over (default 64)
	LocalIP     string // address to bind and advertise (default 127.0.0.1)
	IDPrefix    string // 15 digits; device n is IDPrefix + n as 5 digits (default 340200000013200)
	// Note signs the Catalog Responses with Date and Note (GB/T 28181 signalling digest); REGISTER
	// is never signed. Require is not checked: requests from the registrar are answered unread.
	Note gbnote.Config

	note *gbnote.Signer // built from Note by withDefaults
}

// Result summarises a run.
type Result struct {
	Registered      int            // devices that got 200 OK
	Failed          int            // devices that did not
	FailReasons     map[string]int // why devices failed, e.g. "timeout" or "403 Forbidden"
	Retransmits     int            // REGISTERs and Catalog Responses re-sent after a 500 ms silence
	CatalogAnswered int            // Catalog queries answered with a one-item Response that the registrar acknowledged
	// Redirected counts devices that a 302 sent to another SIP server (GB/T 28181-2022 registration
	// redirect); they registered there, with digest, and count in Registered when that succeeded.
	Redirected int
	Elapsed    time.Duration // first REGISTER to last registration outcome
	Rate       float64       // Registered per second of Elapsed
}

const (
	retransmitAfter = 500 * time.Millisecond
	maxRetransmits  = 6 // then the device counts as failed ("timeout")
	maxChallenges   = 3 // 401s accepted per device (stale nonces re-challenge)
	maxRedirects    = 3 // 302s followed per device
	// catalogQuiet ends the run once no Catalog query arrived for this long,
	// so a registrar that never asks does not hold the run up.
	catalogQuiet = time.Second
	userAgent    = "gbsim-load"
)

// Run registers cfg.Devices devices and answers the registrar's Catalog
// queries until all are answered or the registrar goes quiet. Failed
// registrations are counted in Result; the error is for setup failures only.
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg, err := withDefaults(cfg)
	if err != nil {
		return Result{}, err
	}
	server, err := net.ResolveUDPAddr("udp", cfg.Server)
	if err != nil {
		return Result{}, fmt.Errorf("load: resolve server %q: %w", cfg.Server, err)
	}
	r := &runner{cfg: cfg, ctx: ctx, failReasons: map[string]int{}}
	for range cfg.Sockets {
		ep, err := listen(cfg.LocalIP, server, r)
		if err != nil {
			r.close()
			return Result{}, err
		}
		r.endpoints = append(r.endpoints, ep)
	}
	defer r.close()
	for _, ep := range r.endpoints {
		go ep.readLoop()
	}

	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				n := int(next.Add(1) - 1)
				if n >= cfg.Devices {
					return
				}
				r.record(r.register(ctx, r.endpoints[n%len(r.endpoints)], n))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	r.awaitCatalogs(ctx)

	r.mu.Lock()
	defer r.mu.Unlock()
	res := Result{
		Registered:      r.registered,
		Failed:          cfg.Devices - r.registered,
		FailReasons:     r.failReasons,
		Retransmits:     int(r.retransmits.Load()),
		CatalogAnswered: int(r.catalogs.Load()),
		Redirected:      int(r.redirected.Load()),
		Elapsed:         elapsed,
	}
	if unstarted := res.Failed - sum(r.failReasons); unstarted > 0 {
		res.FailReasons["not started (cancelled)"] = unstarted
	}
	if elapsed > 0 {
		res.Rate = float64(res.Registered) / elapsed.Seconds()
	}
	return res, ctx.Err()
}

func withDefaults(cfg Config) (Config, error) {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 256
	}
	if cfg.Sockets <= 0 {
		cfg.Sockets = 64
	}
	if cfg.LocalIP == "" {
		cfg.LocalIP = "127.0.0.1"
	}
	if cfg.IDPrefix == "" {
		cfg.IDPrefix = "340200000013200"
	}
	switch {
	case len(cfg.IDPrefix) != 15:
		return cfg, fmt.Errorf("load: IDPrefix %q must be 15 digits (device IDs are IDPrefix + a 5-digit counter)", cfg.IDPrefix)
	case cfg.Devices < 0 || cfg.Devices > 100000:
		return cfg, fmt.Errorf("load: Devices %d out of range 0..100000 (the counter has 5 digits)", cfg.Devices)
	case cfg.Server == "" || cfg.ServerID == "" || cfg.Domain == "":
		return cfg, errors.New("load: Server, ServerID and Domain are required")
	}
	var err error
	if cfg.note, err = gbnote.New(cfg.Note); err != nil {
		return cfg, fmt.Errorf("load: %w", err)
	}
	return cfg, nil
}

func sum(m map[string]int) int {
	total := 0
	for _, v := range m {
		total += v
	}
	return total
}

type runner struct {
	cfg            Config
	ctx            context.Context // the run's; bounds Catalog Responses sent from read loops
	endpoints      []*endpoint
	retransmits    atomic.Int64
	catalogs       atomic.Int64 // Catalog Responses the registrar acknowledged
	redirected     atomic.Int64 // devices a 302 sent elsewhere
	catalogPending atomic.Int64 // Catalog Responses still being sent
	lastQuery      atomic.Int64 // unix nanoseconds of the latest Catalog query

	mu          sync.Mutex
	registered  int
	failReasons map[string]int
}

func (r *runner) record(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		r.registered++
		return
	}
	r.failReasons[err.Error()]++
}

func (r *runner) close() {
	for _, ep := range r.endpoints {
		ep.conn.Close()
	}
}

// awaitCatalogs waits for the Catalog queries that follow registrations.
func (r *runner) awaitCatalogs(ctx context.Context) {
	quietSince := time.Now()
	for ctx.Err() == nil {
		r.mu.Lock()
		registered := r.registered
		r.mu.Unlock()
		if last := r.lastQuery.Load(); last > quietSince.UnixNano() {
			quietSince = time.Unix(0, last)
		}
		if r.catalogPending.Load() == 0 && (int(r.catalogs.Load()) >= registered || time.Since(quietSince) > catalogQuiet) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// register runs device n through REGISTER → 401 → REGISTER with
// Authorization → 200 OK, following a 302 to the SIP server its Contact
// names (the same exchange again there, Request-URI the Contact's URI).
func (r *runner) register(ctx context.Context, ep *endpoint, n int) error {
	return r.registerAs(ctx, ep, device{id: fmt.Sprintf("%s%05d", r.cfg.IDPrefix, n), callID: fmt.Sprintf("reg-%d-%s", n, ep.local), tag: "t" + strconv.Itoa(n)})
}

func (r *runner) registerAs(ctx context.Context, ep *endpoint, d device) error {
	cfg := r.cfg
	requestURI := "sip:" + cfg.ServerID + "@" + cfg.Domain
	dest, auth := ep.server, ""
	for cseq, challenges, redirects := 1, 0, 0; ; cseq++ {
		msg := registerRequest(cfg, requestURI, ep.local, d, cseq, auth)
		res, err := r.transactTo(ctx, ep, dest, d.callID, cseq, msg)
		if err != nil {
			return err
		}
		switch {
		case res.status == 200:
			return nil
		case res.status == 401 && challenges < maxChallenges && res.nonce != "":
			challenges++
			auth = authorization(d.id, cfg.Password, requestURI, res)
		case res.status == 302 && redirects < maxRedirects:
			uri, addr, err := redirectTarget(res.contact)
			if err != nil {
				return err
			}
			if redirects == 0 {
				r.redirected.Add(1)
			}
			redirects++
			requestURI, dest, auth, challenges = uri, addr, "", 0
		default:
			return fmt.Errorf("%d %s", res.status, res.reason)
		}
	}
}

type device struct{ id, callID, tag string }

// redirectTarget reads a 302's Contact, <sip:ID@host:port>: the Request-URI
// and the address to register at.
func redirectTarget(contact string) (string, *net.UDPAddr, error) {
	uri := strings.TrimSpace(contact)
	if i := strings.IndexByte(uri, '<'); i >= 0 {
		uri = uri[i+1:]
		uri, _, _ = strings.Cut(uri, ">")
	}
	uri, _, _ = strings.Cut(uri, ";")
	_, hostport, ok := strings.Cut(strings.TrimPrefix(uri, "sip:"), "@")
	if !ok || !strings.HasPrefix(uri, "sip:") {
		return "", nil, fmt.Errorf("302 with Contact %q, want <sip:ID@host:port>", contact)
	}
	addr, err := net.ResolveUDPAddr("udp", hostport)
	if err != nil {
		return "", nil, fmt.Errorf("302 Contact %q: %w", contact, err)
	}
	return uri, addr, nil
}

// transact sends a request to the registrar and waits for its final response.
func (r *runner) transact(ctx context.Context, ep *endpoint, callID string, cseq int, msg []byte) (response, error) {
	return r.transactTo(ctx, ep, ep.server, callID, cseq, msg)
}

// transactTo sends a request to dest and waits for its final response,
// re-sending it after each retransmitAfter of silence (RFC 3261 Timer E,
// without back-off).
func (r *runner) transactTo(ctx context.Context, ep *endpoint, dest *net.UDPAddr, callID string, cseq int, msg []byte) (response, error) {
	ch := make(chan response, 4)
	ep.mu.Lock()
	ep.waiting[callID] = ch
	ep.mu.Unlock()
	defer func() {
		ep.mu.Lock()
		delete(ep.waiting, callID)
		ep.mu.Unlock()
	}()
	if _, err := ep.conn.WriteToUDP(msg, dest); err != nil {
		return response{}, fmt.Errorf("send request: %w", err)
	}
	timer := time.NewTimer(retransmitAfter)
	defer timer.Stop()
	for resent := 0; ; {
		select {
		case res := <-ch:
			// Provisional answers and late answers to an earlier CSeq are skipped.
			if res.cseq == cseq && res.status >= 200 {
				return res, nil
			}
		case <-timer.C:
			if resent == maxRetransmits {
				return response{}, errors.New("timeout")
			}
			resent++
			r.retransmits.Add(1)
			if _, err := ep.conn.WriteToUDP(msg, dest); err != nil {
				return response{}, fmt.Errorf("send request: %w", err)
			}
			timer.Reset(retransmitAfter)
		case <-ctx.Done():
			return response{}, errors.New("cancelled")
		}
	}
}

// authorization answers a digest challenge: MD5, no qop (GB/T 28181 §9.1).
func authorization(user, password, uri string, ch response) string {
	ha1 := md5hex(user + ":" + ch.realm + ":" + password)
	ha2 := md5hex("REGISTER:" + uri)
	s := fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", algorithm=MD5`,
		user, ch.realm, ch.nonce, uri, md5hex(ha1+":"+ch.nonce+":"+ha2))
	if ch.opaque != "" {
		s += `, opaque="` + ch.opaque + `"`
	}
	return s
}

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}
