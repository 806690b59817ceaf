// Package endpoint is one SIP network zone of gbproxy: a UDP socket and a TCP
// listener on the same address (and a TLS listener when configured),
// sipgo's transaction layer on top, and the rules gbproxy needs that sipgo
// leaves open:
//
//   - Requests to a peer that registered over TCP or TLS travel down that peer's own
//     connection (GB/T 28181 NAT rule). sipgo is never allowed to dial by
//     itself; connections are either accepted or dialled by Endpoint.Dial, so
//     every TCP connection's end is observed (OnConnClosed).
//   - UDP requests leave from the listen port, so a peer behind NAT sees the
//     same address it registered to.
//   - Via and Contact carry an address the peer can reach, even when the
//     listen address is 0.0.0.0.
//   - Every request is checked (SIP/2.0, CSeq, Options.Guard, Options.Limit)
//     before a handler runs; over UDP before sipgo sees it, so refusals are
//     answered statelessly and a flood of them keeps no state (guard.go).
//     Accepted TCP connections are capped and must be claimed (limits.go).
package endpoint

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/metrics"
)

// Product is the User-Agent gbproxy announces.
const Product = "gbproxy/0.1"

// GBVersion is the X-GB-Ver gbproxy announces (GB/T 28181-2022 §4.3: 1.0 for
// 2011, 2.0 for 2016, 3.0 for 2022) on every request and response.
const GBVersion = "3.0"

// GB/T 28181 peers send SIP over UDP well above sipgo's 1300-byte limit
// (RecordInfo and catalog answers; IP fragments them), and a relay must pass
// such answers on rather than fail. Our own catalog answers stay within
// 1300 bytes by choice.
// NVRs and lower platforms also put hundreds of catalog items in one MESSAGE
// over TCP, past sipgo's 64 KB message limit; 1 MB still bounds what a
// hostile peer can make us buffer.
func init() {
	sip.UDPMTUSize = int(sip.TransportBufferReadSize) + 200 // what sipgo reads
	sip.ParseMaxMessageLength = 1 << 20
}

// Options configure one zone.
type Options struct {
	Name         string // "lower" or "upper": logs and metric labels
	Listen       string // host:port for UDP and TCP
	Logger       zerolog.Logger
	Metrics      *metrics.Registry
	OnConnClosed func(remote string) // a TCP or TLS connection ended (remote ip:port)
	// TLSListen ("" = none) also accepts SIP over TLS there, with TLSConfig.
	TLSListen string
	TLSConfig *tls.Config
	// Guard admits incoming requests (nil: all pass).
	Guard Guard
	// Limit reports whether one more request from ip, a source that is not
	// a known peer (Verdict.Known), may be handled (nil: no limit). Over
	// the limit, requests are dropped without an answer.
	Limit func(ip string) bool
	// Caps on accepted TCP connections: per source IP (0: none) and in
	// total (0: a quarter of the open file limit, which Listen raises to
	// its hard limit).
	MaxConnsPerIP int
	MaxConns      int
	// IdleTimeout closes an accepted TCP connection not claimed (Claim, or
	// a request from a known peer) within it (0: never).
	IdleTimeout time.Duration
	// Outgoing, when set, sees every request just before it is sent
	// (signing: Date and Note; Monitor-User-Identity).
	Outgoing func(req *sip.Request)
}

// Handler serves one request. It must send a final response.
type Handler func(req *sip.Request, tx sip.ServerTransaction)

// Peer is where a request goes: transport ("UDP"/"TCP"/"TLS") and address.
// For TCP and TLS the address names a live connection (accepted or dialled).
type Peer struct {
	Transport string
	Addr      string
}

func (p Peer) String() string { return strings.ToLower(p.Transport) + ":" + p.Addr }

// Endpoint is a SIP zone. Safe for concurrent use.
type Endpoint struct {
	name    string
	log     zerolog.Logger
	metrics *metrics.Registry

	ua     *sipgo.UserAgent
	srv    *sipgo.Server
	client *sipgo.Client

	udp      net.PacketConn
	udpLaddr sip.Addr
	tcp      net.Listener
	dialed   *dialListener
	listenIP net.IP
	port     int

	// TLS: the listener (nil without tls_listen) and the connections DialTLS opens.
	tlsLn     net.Listener
	tlsDialed *dialListener
	tlsPort   int

	onConnClosed func(string)
	onOutgoing   func(*sip.Request)
	guard        Guard
	sources      SourceGuard // the Guard, when it can judge a source IP alone
	limit        func(string) bool
	parser       *sip.Parser
	drops        *dropLog
	conns        *connLimits

	hostMu    sync.Mutex
	hostCache map[string]string

	closeOnce sync.Once
	done      chan struct{}
}

// udpReadBuffer is the receive buffer asked for the SIP UDP socket, bytes.
const udpReadBuffer = 4 << 20

var errNoImplicitDial = errors.New("no open TCP connection to this peer (gbproxy only sends over connections the peer opened or gbproxy dialled for it)")

// listenPair binds UDP and TCP on the same port. With port 0 the kernel's
// UDP choice may already be taken for TCP (by an outgoing connection's
// ephemeral port): then it tries another.
func listenPair(name, addr string) (net.PacketConn, net.Listener, error) {
	_, port, _ := net.SplitHostPort(addr)
	for attempt := 0; ; attempt++ {
		udp, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("%s side: listen UDP %s: %w (is another process using the port?)", name, addr, err)
		}
		tcp, err := net.Listen("tcp", udp.LocalAddr().String())
		if err == nil {
			return udp, tcp, nil
		}
		udp.Close()
		if port != "0" || attempt == 10 {
			return nil, nil, fmt.Errorf("%s side: listen TCP %s: %w (is another process using the port?)", name, udp.LocalAddr(), err)
		}
	}
}

// Listen opens the zone's sockets; Serve starts serving them.
func Listen(opts Options) (*Endpoint, error) {
	e := &Endpoint{
		name:         opts.Name,
		log:          opts.Logger.With().Str("side", opts.Name).Logger(),
		metrics:      opts.Metrics,
		onConnClosed: opts.OnConnClosed,
		onOutgoing:   opts.Outgoing,
		guard:        opts.Guard,
		limit:        opts.Limit,
		parser:       sip.NewParser(),
		drops:        newDropLog(),
		hostCache:    map[string]string{},
		done:         make(chan struct{}),
	}
	e.sources, _ = opts.Guard.(SourceGuard)
	e.conns = newConnLimits(e, opts)
	udp, tcp, err := listenPair(opts.Name, opts.Listen)
	if err != nil {
		return nil, err
	}
	e.setReadBuffer(udp.(*net.UDPConn))
	ua := udp.LocalAddr().(*net.UDPAddr)
	e.udp, e.listenIP, e.port = udp, ua.IP, ua.Port
	e.udpLaddr = sip.Addr{IP: ua.IP, Port: ua.Port, Hostname: ua.IP.String()}
	e.tcp = &trackingListener{Listener: tcp, onClose: e.connClosed, limits: e.conns}
	e.dialed = newDialListener(tcp.Addr())
	e.tlsDialed = newDialListener(tcp.Addr())
	if opts.TLSListen != "" {
		if err := e.listenTLS(opts.TLSListen, opts.TLSConfig); err != nil {
			e.closeSockets()
			return nil, err
		}
	}

	slogger := libraryLogger(e.log)
	noDial := func(net.Addr) net.Dialer {
		return net.Dialer{ControlContext: func(context.Context, string, string, syscall.RawConn) error { return errNoImplicitDial }}
	}
	tcpTransport := &sip.TransportTCP{DialerCreate: noDial}
	tlsTransport := &sip.TransportTLS{TransportTCP: &sip.TransportTCP{DialerCreate: noDial}}
	e.ua, err = sipgo.NewUA(
		sipgo.WithUserAgent(Product),
		sipgo.WithUserAgentTransportLayerOptions(
			sip.WithTransportLayerLogger(slogger),
			sip.WithTransportLayerTransports(sip.TransportsConfig{TCP: tcpTransport, TLS: tlsTransport}),
		),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(slogger)),
	)
	if err != nil {
		e.closeSockets()
		return nil, err
	}
	if e.srv, err = sipgo.NewServer(e.ua, sipgo.WithServerLogger(slogger)); err != nil {
		e.closeSockets()
		return nil, err
	}
	if e.client, err = sipgo.NewClient(e.ua, sipgo.WithClientLogger(slogger)); err != nil {
		e.closeSockets()
		return nil, err
	}
	e.srv.OnNoRoute(func(req *sip.Request, tx sip.ServerTransaction) {
		e.serve(req, tx, func(req *sip.Request, tx sip.ServerTransaction) {
			e.Respond(tx, req, sip.StatusMethodNotAllowed, "Method Not Allowed", nil)
		})
	})
	if opts.Metrics != nil {
		opts.Metrics.Describe("gbproxy_sip_refused_total", "SIP requests and datagrams refused or dropped before any handler, by side and reason.")
		opts.Metrics.Describe("gbproxy_sip_conns_closed_total", "Accepted TCP connections closed by gbproxy (over a cap, idle without REGISTER) and failed accepts, by side and reason.")
	}
	return e, nil
}

// readLoop runs one of sipgo's read loops; it ends when Close closes the
// socket, and any other end leaves that transport deaf, which is logged.
func (e *Endpoint) readLoop(transport string, loop func() error) {
	err := loop()
	select {
	case <-e.done:
		return
	default:
	}
	e.log.Error().Err(err).Str("transport", transport).Msg("SIP read loop ended: this zone no longer receives on this transport; restart gbproxy")
}

// Serve starts reading both sockets. Register every handler first: sipgo's
// handler table is not safe to change while serving.
func (e *Endpoint) Serve() {
	go e.readLoop("UDP", func() error { return e.srv.ServeUDP(&udpGuard{PacketConn: e.udp, e: e}) })
	go e.readLoop("TCP", func() error { return e.srv.ServeTCP(e.tcp) })
	go e.readLoop("dialed TCP", func() error { return e.srv.ServeTCP(e.dialed) })
	go e.readLoop("dialed TLS", func() error { return e.srv.ServeTLS(e.tlsDialed) })
	if e.tlsLn != nil {
		go e.readLoop("TLS", func() error { return e.srv.ServeTLS(e.tlsLn) })
	}
	// Until sipgo has pooled the UDP socket, a request from the listen port
	// would make it open a second socket on the same port (sipgo #367).
	for !e.udpReady() {
		time.Sleep(time.Millisecond)
	}
	if e.tlsLn != nil {
		e.log.Info().Str("listen", e.Addr()).Str("tls_listen", e.TLSAddr()).Msg("SIP listening on UDP, TCP and TLS")
		return
	}
	e.log.Info().Str("listen", e.Addr()).Msg("SIP listening on UDP and TCP")
}

func maxLevel(a, b zerolog.Level) zerolog.Level {
	if a > b {
		return a
	}
	return b
}

func (e *Endpoint) udpReady() bool {
	c, err := e.ua.TransportLayer().GetConnection("udp", e.udpLaddr.String())
	if err != nil || c == nil {
		return false
	}
	c.TryClose()
	return true
}

// setReadBuffer enlarges the SIP UDP socket's receive buffer. One goroutine
// reads the socket: under a flood the default ~200 KB overflowed during its
// pauses and registered devices' keepalives were lost with the flood.
func (e *Endpoint) setReadBuffer(c *net.UDPConn) {
	_ = c.SetReadBuffer(udpReadBuffer)
	raw, err := c.SyscallConn()
	if err != nil {
		return
	}
	got := 0
	if err := raw.Control(func(fd uintptr) { got, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF) }); err != nil {
		return
	}
	if granted := got / 2; got > 0 && granted < udpReadBuffer { // Linux reports twice what it grants
		e.log.Warn().Int("bytes", granted).Int("wanted", udpReadBuffer).
			Msg("SIP UDP receive buffer capped by the kernel: under a flood devices' datagrams may be lost; raise net.core.rmem_max (sysctl -w net.core.rmem_max=4194304)")
	}
}

// Addr is the listen address (ip:port, UDP and TCP).
func (e *Endpoint) Addr() string { return e.udp.LocalAddr().String() }

// Port is the listen port.
func (e *Endpoint) Port() int { return e.port }

// Name is "lower" or "upper".
func (e *Endpoint) Name() string { return e.name }

// Handle routes method to h, for requests the endpoint admitted (see
// Guard). Panics inside h are recovered and answered 500.
func (e *Endpoint) Handle(method sip.RequestMethod, h Handler) {
	e.srv.OnRequest(method, func(req *sip.Request, tx sip.ServerTransaction) { e.serve(req, tx, h) })
}

func (e *Endpoint) countIn(req *sip.Request) {
	e.metrics.Inc("gbproxy_sip_messages_total", "side", e.name, "direction", "in", "method", methodLabel(req.Method), "status", "")
}

// Respond sends a final or provisional response built from req, with extra
// headers (replacing the copied ones of the same name, such as To). Errors
// are logged: a response that can't be sent has nowhere to go.
func (e *Endpoint) Respond(tx sip.ServerTransaction, req *sip.Request, code int, reason string, body []byte, headers ...sip.Header) {
	e.RespondWith(tx, req, e.NewResponse(req, code, reason, body, headers...))
}

// NewResponse builds the response Respond sends, for callers that keep it
// (to send the same answer again).
func (e *Endpoint) NewResponse(req *sip.Request, code int, reason string, body []byte, headers ...sip.Header) *sip.Response {
	res := sip.NewResponseFromRequest(req, code, reason, body)
	res.SipVersion = "SIP/2.0" // not the request's: a 505 names the version we speak
	res.AppendHeader(sip.NewHeader("User-Agent", Product))
	res.AppendHeader(sip.NewHeader("X-GB-Ver", GBVersion))
	for _, h := range headers {
		if res.GetHeader(h.Name()) != nil {
			res.ReplaceHeader(h)
		} else {
			res.AppendHeader(h)
		}
	}
	return res
}

// RespondWith sends res on tx (req is the request it answers).
func (e *Endpoint) RespondWith(tx sip.ServerTransaction, req *sip.Request, res *sip.Response) {
	e.metrics.Inc("gbproxy_sip_messages_total", "side", e.name, "direction", "out", "method", methodLabel(req.Method), "status", statusLabel(res.StatusCode))
	if err := tx.Respond(res); err != nil {
		e.log.Warn().Err(err).Str("method", clip(string(req.Method))).Str("call_id", clip(callID(req))).Int("status", res.StatusCode).
			Msg("could not send SIP response (peer gone?)")
	}
}

// SplitHostPort splits a host:port into a SIP URI's host and port (0 when
// addr has none).
func SplitHostPort(addr string) (string, int) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, 0
	}
	port, _ := strconv.Atoi(p)
	return host, port
}

// Contact is our Contact URI toward peer: sip:id@host:port, with
// ;transport=tcp or ;transport=tls on a connection so that a strict peer
// sends its in-dialog requests back over it rather than over UDP.
func (e *Endpoint) Contact(id string, peer Peer) sip.Uri {
	transport := strings.ToUpper(peer.Transport)
	u := sip.Uri{Scheme: "sip", User: id, Host: e.HostFor(peer.Addr), Port: e.portFor(transport)}
	if ConnOriented(transport) {
		u.UriParams = sip.NewParams()
		u.UriParams.Add("transport", strings.ToLower(transport))
	}
	return u
}

// PeerOf is where req came from: its transport and source address (for
// TCP and TLS, the connection).
func PeerOf(req *sip.Request) Peer {
	return Peer{Transport: strings.ToUpper(req.Transport()), Addr: req.Source()}
}

// portFor is the port we announce on transport: the TLS listener's for TLS
// when the zone has one (a dialled TLS connection has no port of its own to
// announce), else the UDP/TCP port.
func (e *Endpoint) portFor(transport string) int {
	if transport == "TLS" && e.tlsPort != 0 {
		return e.tlsPort
	}
	return e.port
}

// NewRequest builds a complete out-of-dialog request to peer: Via (ours,
// with rport), From with a fresh tag, To, Call-ID, CSeq 1, Max-Forwards,
// User-Agent and Contact.
func (e *Endpoint) NewRequest(method sip.RequestMethod, recipient sip.Uri, peer Peer, from, to sip.Uri) *sip.Request {
	req := sip.NewRequest(method, recipient)
	transport := strings.ToUpper(peer.Transport)
	req.SetTransport(transport)
	req.SetDestination(peer.Addr)
	req.AppendHeader(e.newVia(transport, peer.Addr))
	fromH := &sip.FromHeader{Address: from, Params: sip.NewParams()}
	fromH.Params.Add("tag", sip.GenerateTagN(16))
	req.AppendHeader(fromH)
	req.AppendHeader(&sip.ToHeader{Address: to, Params: sip.NewParams()})
	cid := sip.CallIDHeader(sip.GenerateTagN(24))
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: method})
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(&sip.ContactHeader{Address: e.Contact(from.User, Peer{Transport: transport, Addr: peer.Addr})})
	req.AppendHeader(sip.NewHeader("User-Agent", Product))
	req.AppendHeader(sip.NewHeader("X-GB-Ver", GBVersion))
	req.SetBody(nil) // Content-Length: 0 until a body is set
	if transport == "UDP" {
		e.udpLaddr.Copy(&req.Laddr)
	}
	return req
}

// Renew prepares req to be sent again as a new transaction: a fresh Via
// branch and the next CSeq (REGISTER refreshes, digest retries).
func (e *Endpoint) Renew(req *sip.Request) {
	req.RemoveHeader("Via")
	req.PrependHeader(e.newVia(req.Transport(), req.Destination()))
	if cseq := req.CSeq(); cseq != nil {
		cseq.SeqNo++
	}
}

func (e *Endpoint) newVia(transport, dest string) *sip.ViaHeader {
	via := &sip.ViaHeader{
		ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: transport,
		Host: e.HostFor(dest), Port: e.portFor(transport), Params: sip.NewParams(),
	}
	via.Params.Add("rport", "")
	via.Params.Add("branch", sip.GenerateBranch())
	return via
}

// HostFor is the address of ours that dest reaches us at: the listen IP, or
// when listening on all interfaces, the source address the kernel would pick
// toward dest.
func (e *Endpoint) HostFor(dest string) string {
	if !e.listenIP.IsUnspecified() {
		return e.listenIP.String()
	}
	host, _, err := net.SplitHostPort(dest)
	if err != nil {
		host = dest
	}
	e.hostMu.Lock()
	defer e.hostMu.Unlock()
	if h, ok := e.hostCache[host]; ok {
		return h
	}
	local := "127.0.0.1"
	// A connected UDP socket sends nothing; it only asks the routing table.
	if c, err := net.Dial("udp", net.JoinHostPort(host, "9")); err == nil {
		local = c.LocalAddr().(*net.UDPAddr).IP.String()
		c.Close()
	}
	if len(e.hostCache) > 4096 {
		clear(e.hostCache)
	}
	e.hostCache[host] = local
	return local
}

// Do sends req as a new client transaction and returns the final response.
func (e *Endpoint) Do(ctx context.Context, req *sip.Request) (*sip.Response, error) {
	tx, err := e.Transaction(ctx, req)
	if err != nil {
		return nil, err
	}
	defer tx.Terminate()
	for {
		res, err := e.NextResponse(ctx, req, tx)
		if err != nil || !res.IsProvisional() {
			return res, err
		}
	}
}

// Transaction sends req as a new client transaction, for callers that also
// need its provisional responses (INVITE); read them with NextResponse.
func (e *Endpoint) Transaction(ctx context.Context, req *sip.Request) (sip.ClientTransaction, error) {
	e.outgoing(req)
	e.metrics.Inc("gbproxy_sip_messages_total", "side", e.name, "direction", "out", "method", methodLabel(req.Method), "status", "")
	tx, err := e.client.TransactionRequest(ctx, req, noBuild)
	if err != nil {
		return nil, fmt.Errorf("send %s to %s: %w", req.Method, req.Destination(), err)
	}
	return tx, nil
}

// NextResponse waits for tx's next response to req; final ones are counted.
func (e *Endpoint) NextResponse(ctx context.Context, req *sip.Request, tx sip.ClientTransaction) (*sip.Response, error) {
	select {
	case res := <-tx.Responses():
		if !res.IsProvisional() {
			e.metrics.Inc("gbproxy_sip_messages_total", "side", e.name, "direction", "in", "method", methodLabel(req.Method), "status", statusLabel(res.StatusCode))
		}
		return res, nil
	case <-tx.Done():
		if err := tx.Err(); err != nil {
			return nil, fmt.Errorf("%s to %s: %w", req.Method, req.Destination(), err)
		}
		return nil, fmt.Errorf("%s to %s: transaction ended without response", req.Method, req.Destination())
	case <-ctx.Done():
		return nil, fmt.Errorf("%s to %s: no response: %w", req.Method, req.Destination(), ctx.Err())
	}
}

// WriteResponse sends res outside its transaction (2xx retransmissions to
// INVITE, RFC 3261 §13.3.1.4).
func (e *Endpoint) WriteResponse(res *sip.Response) error {
	return e.srv.WriteResponse(res)
}

// WriteRequest sends req without a transaction (ACK).
func (e *Endpoint) WriteRequest(req *sip.Request) error {
	e.outgoing(req)
	return e.client.WriteRequest(req, noBuild)
}

// outgoing runs the Outgoing hook once the request is final.
func (e *Endpoint) outgoing(req *sip.Request) {
	if e.onOutgoing != nil {
		e.onOutgoing(req)
	}
}

// noBuild stops sipgo from adding headers: our requests are complete.
func noBuild(*sipgo.Client, *sip.Request) error { return nil }

// Dial opens (or reuses) a persistent TCP connection to addr that sipgo then
// uses both ways: our requests go out on it and the peer's requests come in
// on it. Its end is reported through OnConnClosed.
func (e *Endpoint) Dial(ctx context.Context, addr string) (string, error) {
	if e.hasConn("tcp", addr) {
		return addr, nil
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("connect TCP %s: %w", addr, err)
	}
	return e.hand(ctx, "tcp", e.dialed, conn)
}

// hand gives a connection we dialled to sipgo's server loop for network
// (through l) and waits until sipgo has pooled it.
func (e *Endpoint) hand(ctx context.Context, network string, l *dialListener, conn net.Conn) (string, error) {
	tc := &trackedConn{Conn: conn, onClose: e.connClosed}
	if err := l.hand(ctx, tc); err != nil {
		tc.Close()
		return "", err
	}
	// sipgo pools the connection right after accepting it; a request sent
	// before that would make sipgo try (and fail) to dial by itself.
	remote := conn.RemoteAddr().String()
	for !e.hasConn(network, remote) {
		select {
		case <-ctx.Done():
			tc.Close()
			return "", ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return remote, nil
}

// CloseConn closes the TCP or TLS connection to remote, if any.
func (e *Endpoint) CloseConn(remote string) {
	e.withConn(remote, func(c sip.Connection) { c.Close() })
}

// HasConn reports whether a TCP or TLS connection to remote is open.
func (e *Endpoint) HasConn(remote string) bool {
	return e.withConn(remote, func(sip.Connection) {})
}

// withConn runs f on the connection to remote, TCP or TLS: remote is a
// peer's ip:port, which one open connection holds.
func (e *Endpoint) withConn(remote string, f func(sip.Connection)) bool {
	return e.withNetConn("tcp", remote, f) || e.withNetConn("tls", remote, f)
}

func (e *Endpoint) hasConn(network, remote string) bool {
	return e.withNetConn(network, remote, func(sip.Connection) {})
}

func (e *Endpoint) withNetConn(network, remote string, f func(sip.Connection)) bool {
	c, err := e.ua.TransportLayer().GetConnection(network, remote)
	if err != nil || c == nil {
		return false
	}
	defer c.TryClose() // GetConnection took a reference
	f(c)
	return true
}

func (e *Endpoint) connClosed(remote string) {
	select {
	case <-e.done:
		return
	default:
	}
	e.log.Debug().Str("remote", remote).Msg("TCP/TLS connection closed")
	if e.onConnClosed != nil {
		e.onConnClosed(remote)
	}
}

// Close stops serving and closes every socket and connection.
func (e *Endpoint) Close() error {
	e.closeOnce.Do(func() {
		close(e.done)
		e.dialed.Close()
		e.tlsDialed.Close()
		e.closeSockets()
		e.ua.Close()
	})
	return nil
}

func (e *Endpoint) closeSockets() {
	e.udp.Close()
	if e.tcp != nil {
		e.tcp.Close()
	}
	if e.tlsLn != nil {
		e.tlsLn.Close()
	}
}

// HeaderValue is the value of m's first header called name (any case), ""
// if none. Unlike sipgo's GetHeader it does not allocate for names sipgo
// has no constant for: it runs on every request (Monitor-User-Identity).
func HeaderValue(m interface{ Headers() []sip.Header }, name string) string {
	for _, h := range m.Headers() {
		if strings.EqualFold(h.Name(), name) {
			return h.Value()
		}
	}
	return ""
}

func callID(req *sip.Request) string {
	if h := req.CallID(); h != nil {
		return h.Value()
	}
	return ""
}
