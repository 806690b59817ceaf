// Package sim holds GB/T 28181 simulators used to test gbproxy over real sockets: Device (an IPC/NVR
// that registers to the proxy) and Upper (an upper platform the proxy registers to). They are written
// from the standard on purpose, sharing no code with the proxy, so they do not share its mistakes.
package sim

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

const userAgent = "gbsim"

// gbDateLayout is the Date header format GB/T 28181 uses for time synchronisation.
const gbDateLayout = "2006-01-02T15:04:05.000"

// Received is one request the peer sent to a simulator.
type Received struct {
	Method  string
	CmdType string // MANSCDP CmdType, empty when the body is not MANSCDP
	SN      int    // MANSCDP SN, 0 when absent
	Body    []byte // decoded to UTF-8; the XML declaration is left as sent
	Source  string // remote host:port the request came from
	// Transport is "UDP" or "TCP".
	Transport string
	// OnRegConn is true when a request arrived on the TCP connection the device registered over.
	OnRegConn bool
	At        time.Time
	Request   *sip.Request // the request as parsed, raw body included, for header checks
}

// newReceived records req; it also returns the MANSCDP header, zero when the body is not MANSCDP.
func newReceived(req *sip.Request, onRegConn bool) (Received, cmdHeader) {
	body := toUTF8(req.Body())
	r := Received{
		Method:    req.Method.String(),
		Body:      body,
		Source:    req.Source(),
		Transport: req.Transport(),
		OnRegConn: onRegConn,
		At:        time.Now(),
		Request:   req.Clone(),
	}
	var h cmdHeader
	if len(body) == 0 || decodeBody(body, &h) != nil {
		return r, cmdHeader{}
	}
	r.CmdType, r.SN = h.CmdType, h.SN
	return r, h
}

// signal lets goroutines wait for "something changed" without polling.
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

// changed returns a channel that is closed at the next notify.
func (s *signal) changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *signal) notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}

// journal records received requests in arrival order.
type journal struct {
	mu     sync.Mutex
	items  []Received
	taken  []bool // handed out by wait already
	update signal
}

func (j *journal) add(r Received) {
	j.mu.Lock()
	j.items = append(j.items, r)
	j.taken = append(j.taken, false)
	j.mu.Unlock()
	j.update.notify()
}

func (j *journal) all() []Received {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]Received(nil), j.items...)
}

// wait returns the oldest request matching method (and cmdType when not empty) that no earlier wait
// returned, waiting for one to arrive. Requests received before the call count, so a test can send
// first and wait afterwards.
func (j *journal) wait(ctx context.Context, method, cmdType string) (Received, error) {
	for {
		changed := j.update.changed()
		j.mu.Lock()
		for i, r := range j.items {
			if j.taken[i] || !strings.EqualFold(r.Method, method) {
				continue
			}
			if cmdType != "" && !strings.EqualFold(r.CmdType, cmdType) {
				continue
			}
			j.taken[i] = true
			j.mu.Unlock()
			return r, nil
		}
		j.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return Received{}, fmt.Errorf("no %s %s request received: %w", method, cmdType, ctx.Err())
		}
	}
}

// newStack builds a sipgo user agent and server that log through log.
func newStack(log *slog.Logger) (*sipgo.UserAgent, *sipgo.Server, error) {
	ua, err := sipgo.NewUA(
		sipgo.WithUserAgent(userAgent),
		sipgo.WithUserAgentTransactionLayerOptions(
			sip.WithTransactionLayerLogger(log),
			sip.WithTransactionLayerUnhandledResponseHandler(func(r *sip.Response) {
				log.Debug("response matches no transaction (late retransmission?)", "response", r.Short())
			}),
		),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(log)),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("create SIP user agent: %w", err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(log))
	if err != nil {
		_ = ua.Close()
		return nil, nil, fmt.Errorf("create SIP server: %w", err)
	}
	return ua, srv, nil
}

// serveUDP serves conn in the background. The listener is put in sipgo's connection pool first:
// sipgo adds it only once Serve runs, and a request sent before that would try to bind the port again.
func serveUDP(ua *sipgo.UserAgent, srv *sipgo.Server, conn net.PacketConn, wg *sync.WaitGroup) {
	addr := conn.LocalAddr().String()
	ua.TransportLayer().Pool("udp").Add(addr, &sip.UDPConnection{PacketConn: conn, PacketAddr: addr, Listener: true})
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = srv.ServeUDP(conn)
	}()
}

// respond answers a server transaction, logging failures: the peer's retransmission is the only recovery.
func respond(log *slog.Logger, tx sip.ServerTransaction, res *sip.Response) {
	if err := tx.Respond(res); err != nil {
		log.Warn("send SIP response failed", "status", res.StatusCode, "error", err)
	}
}

// newMessage builds a MANSCDP MESSAGE from one GB party to another, sent to dest over transport.
func newMessage(from, to sip.Uri, dest, transport string, body []byte) *sip.Request {
	req := sip.NewRequest(sip.MESSAGE, to)
	req.SetDestination(dest)
	req.SetTransport(transport)
	fromHdr := &sip.FromHeader{Address: from, Params: sip.NewParams()}
	fromHdr.Params.Add("tag", randomHex(5))
	req.AppendHeader(fromHdr)
	req.AppendHeader(&sip.ToHeader{Address: to})
	ct := sip.ContentTypeHeader(contentTypeMANSCDP)
	req.AppendHeader(&ct)
	req.AppendHeader(sip.NewHeader("User-Agent", userAgent))
	req.SetBody(body)
	return req
}

// headerGetter is what requests and responses share for header lookup.
type headerGetter interface {
	GetHeader(name string) sip.Header
	Contact() *sip.ContactHeader
}

// headerInt returns the integer value of a header, or def when it is absent or malformed.
func headerInt(m headerGetter, name string, def int) int {
	h := m.GetHeader(name)
	if h == nil {
		return def
	}
	n, err := strconv.Atoi(strings.TrimSpace(h.Value()))
	if err != nil {
		return def
	}
	return n
}

// expiresOf reads a REGISTER expiry: the Expires header, else Contact's expires parameter, else def.
func expiresOf(m headerGetter, def int) int {
	if n := headerInt(m, "Expires", -1); n >= 0 {
		return n
	}
	if c := m.Contact(); c != nil {
		if n, err := strconv.Atoi(c.Params.GetOr("expires", "")); err == nil && n >= 0 {
			return n
		}
	}
	return def
}

// defaultDomain is the SIP domain GB/T 28181 derives from an ID: its first 10 digits.
func defaultDomain(id string) string {
	if len(id) >= 10 {
		return id[:10]
	}
	return id
}

func transportName(t string) (string, error) {
	switch strings.ToLower(t) {
	case "", "udp":
		return "UDP", nil
	case "tcp":
		return "TCP", nil
	}
	return "", fmt.Errorf("transport %q not supported: use udp or tcp", t)
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
