// Package sim holds GB/T 28181 simulators used to test gbproxy over real sockets: Device (an IPC/NVR,
// or a lower platform with a catalog tree, that registers to the proxy, answers queries and controls,
// raises alarms and serves subscriptions) and Upper (an upper platform the proxy registers to, which
// sends any query or control, acknowledges alarms and subscribes). Both do live video (INVITE s=Play):
// Device answers and streams an H.264 clip as a GB program stream over RTP (UDP, TCP active or passive),
// Upper.Play asks for it and records what arrives; package media holds the codec and transport
// pieces. They are written from the standard
// on purpose, sharing no code with the proxy, so they do not share its mistakes.
package sim

import (
	"context"
	"crypto/tls"
	"errors"
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

// headerGBVersion carries the protocol version in GB/T 28181-2022 (2.0 = 2016, 3.0 = 2022).
const headerGBVersion = "X-GB-Ver"

// gbDateLayout is the Date header format GB/T 28181 uses for time synchronisation.
const gbDateLayout = "2006-01-02T15:04:05.000"

// Received is one request the peer sent to a simulator.
type Received struct {
	Method   string
	Root     string // MANSCDP root element (Query, Control, Notify or Response), empty when not MANSCDP
	CmdType  string // MANSCDP CmdType, empty when the body is not MANSCDP
	SN       int    // MANSCDP SN, 0 when absent
	DeviceID string // MANSCDP DeviceID, empty when absent
	Body     []byte // decoded to UTF-8; the XML declaration is left as sent
	Source   string // remote host:port the request came from
	// Transport is "UDP", "TCP" or "TLS".
	Transport string
	// OnRegConn is true when a request arrived on the TCP/TLS connection the device registered over.
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
	r.Root, r.CmdType, r.SN, r.DeviceID = h.Root(), h.CmdType, h.SN, h.DeviceID
	return r, h
}

// waitRequest waits in j for a request with this method and, when cmdType is not empty, MANSCDP CmdType.
func waitRequest(ctx context.Context, j *journal[Received], method, cmdType string) (Received, error) {
	return j.wait(ctx, strings.TrimSpace(method+" "+cmdType)+" request", func(r Received) bool {
		return strings.EqualFold(r.Method, method) && (cmdType == "" || strings.EqualFold(r.CmdType, cmdType))
	})
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

// journal records events (requests, controls, notifications) in arrival order.
type journal[T any] struct {
	mu     sync.Mutex
	items  []T
	taken  []bool // handed out by wait already
	update signal
}

func (j *journal[T]) add(v T) {
	j.mu.Lock()
	j.items = append(j.items, v)
	j.taken = append(j.taken, false)
	j.mu.Unlock()
	j.update.notify()
}

func (j *journal[T]) all() []T {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]T(nil), j.items...)
}

// wait returns the oldest item matching match that no earlier wait returned, waiting for one to
// arrive. Items recorded before the call count, so a test can act first and wait afterwards.
// what names the awaited item in the error.
func (j *journal[T]) wait(ctx context.Context, what string, match func(T) bool) (T, error) {
	for {
		changed := j.update.changed()
		j.mu.Lock()
		for i, v := range j.items {
			if !j.taken[i] && match(v) {
				j.taken[i] = true
				j.mu.Unlock()
				return v, nil
			}
		}
		j.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			var zero T
			return zero, fmt.Errorf("no %s received: %w", what, ctx.Err())
		}
	}
}

// newStack builds a sipgo user agent and server that log through log; tlsConf (nil: none) is what
// sipgo dials TLS connections with.
func newStack(log *slog.Logger, tlsConf *tls.Config) (*sipgo.UserAgent, *sipgo.Server, error) {
	ua, err := sipgo.NewUA(
		sipgo.WithUserAgent(userAgent),
		sipgo.WithUserAgenTLSConfig(tlsConf),
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
	sock := &sip.UDPConnection{PacketConn: conn, PacketAddr: addr, Listener: true}
	pool := ua.TransportLayer().Pool("udp")
	pool.Add(addr, sock)
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = srv.ServeUDP(&pinnedConn{PacketConn: conn, pool: pool, sock: sock})
	}()
}

// pinnedConn is the UDP socket as sipgo's read loop sees it. sipgo answers a request on the pooled
// connection of its sender, looked up on the goroutine it handles the request on, which may run
// after the socket closed; by then the loop has left and removed the pool entries it made, and
// finding none, sipgo would open a new UDP socket (and a reader for it) that nobody ever closes.
// So before each read, the entries the loop made (the previous sender's, the socket's own address)
// are pointed at sock, the same socket pooled under a connection the loop does not own and so
// does not remove: a late request is answered on the closed socket, which fails and is logged.
type pinnedConn struct {
	net.PacketConn
	pool   *sip.ConnectionPool
	sock   *sip.UDPConnection
	last   net.Addr // the sender of the previous datagram; the read loop is the only caller
	pinned bool     // the socket's own entry, which Serve replaces before its first read
}

func (c *pinnedConn) ReadFrom(b []byte) (int, net.Addr, error) {
	if !c.pinned {
		c.pool.Add(c.sock.PacketAddr, c.sock)
		c.pinned = true
	}
	if c.last != nil {
		c.pool.Add(c.last.String(), c.sock)
	}
	n, addr, err := c.PacketConn.ReadFrom(b)
	c.last = addr
	return n, addr, err
}

// closeStack closes ua as ua.Close does, its UDP pool aside: clearing that pool would drop the
// entries pinnedConn keeps for requests still being handled (see there). The UDP socket itself is
// the caller's to close; sipgo never closes a listener.
func closeStack(ua *sipgo.UserAgent) error {
	ua.TransactionLayer().Close()
	tp := ua.TransportLayer()
	var err error
	for _, network := range []string{"tcp", "tls", "ws", "wss"} {
		err = errors.Join(err, tp.Pool(network).Clear())
	}
	return err
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
	setMANSCDPBody(req, body)
	return req
}

func setMANSCDPBody(m sip.Message, body []byte) {
	ct := sip.ContentTypeHeader(contentTypeMANSCDP)
	m.AppendHeader(&ct)
	m.AppendHeader(sip.NewHeader("User-Agent", userAgent))
	m.SetBody(body)
}

// dialog is what the requests of one SIP dialog share (RFC 3261 §12), seen from our side.
type dialog struct {
	callID              string
	local, remote       sip.Uri // From and To of the requests we send
	localTag, remoteTag string  // remoteTag is empty until the peer's first answer
	target              sip.Uri // the peer's Contact: Request-URI of the requests we send
	cseq                uint32  // CSeq of the last request we sent
}

// newRequest builds the next request of the dialog, sent to dest over transport, with the next CSeq.
// The caller serialises calls.
func (dl *dialog) newRequest(method sip.RequestMethod, dest, transport string) *sip.Request {
	req := sip.NewRequest(method, dl.target)
	req.SetDestination(dest)
	req.SetTransport(transport)
	from := &sip.FromHeader{Address: dl.local, Params: sip.NewParams()}
	from.Params.Add("tag", dl.localTag)
	req.AppendHeader(from)
	to := &sip.ToHeader{Address: dl.remote, Params: sip.NewParams()}
	if dl.remoteTag != "" {
		to.Params.Add("tag", dl.remoteTag)
	}
	req.AppendHeader(to)
	callID := sip.CallIDHeader(dl.callID)
	req.AppendHeader(&callID)
	dl.cseq++
	req.AppendHeader(&sip.CSeqHeader{SeqNo: dl.cseq, MethodName: method})
	return req
}

// contactURI is the Contact of a GB party with this ID reachable at hostPort.
func contactURI(id, hostPort string) sip.Uri {
	host, portStr, err := net.SplitHostPort(hostPort)
	if err != nil {
		return sip.Uri{Scheme: "sip", User: id, Host: hostPort}
	}
	port, _ := strconv.Atoi(portStr)
	return sip.Uri{Scheme: "sip", User: id, Host: host, Port: port}
}

// dialogHeaders is what requests and responses share for dialog identification.
type dialogHeaders interface {
	From() *sip.FromHeader
	To() *sip.ToHeader
}

// fromTag returns the From tag, empty when absent.
func fromTag(m dialogHeaders) string {
	if f := m.From(); f != nil {
		return f.Params.GetOr("tag", "")
	}
	return ""
}

// toTag returns the To tag, empty when absent.
func toTag(m dialogHeaders) string {
	if t := m.To(); t != nil {
		return t.Params.GetOr("tag", "")
	}
	return ""
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
	case "tls":
		return "TLS", nil
	}
	return "", fmt.Errorf("transport %q not supported: use udp, tcp or tls", t)
}

// connOriented reports whether requests to a peer on transport travel down its connection (TCP, TLS).
func connOriented(transport string) bool { return transport == "TCP" || transport == "TLS" }

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
