// Package b2bua bridges live-video calls across the cascade: every INVITE
// from an upper platform for a shared channel becomes a new INVITE of ours
// to the device that owns it, with its own Call-ID, tags and SSRC, and the
// relay carries the media between the two legs. One device stream feeds
// every upper watching the same channel; the device call ends with its last
// receiver.
//
// Teardown comes from either side (BYE, CANCEL), from the device going
// offline, from a media leg failing, from no media for media.no_media_timeout,
// or from the API; every path ends in endCall/endStream, which free ports,
// SSRCs and table entries.
package b2bua

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"

	"github.com/gbproxy/gbproxy/configs"
	"github.com/gbproxy/gbproxy/directory"
	"github.com/gbproxy/gbproxy/endpoint"
	"github.com/gbproxy/gbproxy/metrics"
	"github.com/gbproxy/gbproxy/relay"
)

// Options wire a B2BUA.
type Options struct {
	Config    *configs.Config
	Lower     *endpoint.Endpoint // devices side
	Upper     *endpoint.Endpoint // upper platforms side
	Directory directory.Directory
	Relay     *relay.Relay
	Logger    zerolog.Logger
	Metrics   *metrics.Registry
}

// B2BUA holds the live calls. Safe for concurrent use.
type B2BUA struct {
	cfg          *configs.Config
	log          zerolog.Logger
	metrics      *metrics.Registry
	lower, upper *endpoint.Endpoint
	dir          directory.Directory
	relay        *relay.Relay
	ssrc         *ssrcPool
	lowerBind    string
	upperBind    string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	calls   map[string]*call      // upper dialog: Call-ID + ";" + upper's tag
	streams map[string]*stream    // local channel ID -> its device stream
	byLower map[string]*stream    // device leg Call-ID -> stream
	voice   *voiceTable           // voice broadcasts, under their own lock
	fwd     map[string]*forwarded // calls passed on to other cluster nodes, by Call-ID
	closed  bool
}

// New registers the INVITE dialog handlers on both endpoints (before they
// serve).
func New(o Options) *B2BUA {
	ctx, cancel := context.WithCancel(context.Background())
	b := &B2BUA{
		cfg: o.Config, log: o.Logger.With().Str("component", "b2bua").Logger(), metrics: o.Metrics,
		lower: o.Lower, upper: o.Upper, dir: o.Directory, relay: o.Relay,
		ssrc:      newSSRCPool(o.Config.Domain),
		lowerBind: bindIP(o.Config.Lower.MediaIP, o.Lower.Addr()),
		upperBind: bindIP(o.Config.Upper.MediaIP, o.Upper.Addr()),
		ctx:       ctx, cancel: cancel,
		calls: map[string]*call{}, streams: map[string]*stream{}, byLower: map[string]*stream{}, fwd: map[string]*forwarded{},
		voice: newVoiceTable(o.Directory),
	}
	b.upper.Handle(sip.INVITE, b.handleInvite)
	b.upper.Handle(sip.ACK, b.handleAck)
	b.upper.Handle(sip.BYE, b.handleUpperBye)
	b.upper.Handle(sip.CANCEL, noTransaction(b.upper))
	b.upper.Handle(sip.INFO, b.handleUpperInfo)
	b.lower.Handle(sip.BYE, b.handleLowerBye)
	b.lower.Handle(sip.INVITE, b.handleDeviceInvite)
	b.lower.Handle(sip.ACK, b.handleDeviceAck)
	b.describeMetrics()
	return b
}

// bindIP is the media bind address of a side: its media_ip, or the IP its
// SIP listens on.
func bindIP(mediaIP, sipAddr string) string {
	if mediaIP != "" {
		return mediaIP
	}
	host, _, _ := net.SplitHostPort(sipAddr)
	return host
}

// announce is the address put in SDP toward peer: the configured external
// address, the bind address, or (bound to all interfaces) the one the
// kernel routes toward the peer from.
func announce(external, bind string, ep *endpoint.Endpoint, peer string) string {
	switch {
	case external != "":
		return external
	case bind != "" && !net.ParseIP(bind).IsUnspecified():
		return bind
	}
	return ep.HostFor(peer)
}

// noTransaction answers a request that matched no transaction or dialog.
func noTransaction(ep *endpoint.Endpoint) endpoint.Handler {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		ep.Respond(tx, req, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist", nil)
	}
}

func (b *B2BUA) describeMetrics() {
	m := b.metrics
	m.Describe("gbproxy_calls_total", "Live INVITEs from upper platforms by platform and result.")
	m.Describe("gbproxy_call_ends_total", "Live calls ended, by reason.")
	m.Describe("gbproxy_broadcasts_total", "Voice broadcast INVITEs from devices by result.")
	m.Histogram("gbproxy_invite_setup_seconds", "Live INVITEs from upper platforms: time from the INVITE to our final answer, by platform and result (ok: 200, failed: an error answer; cancelled INVITEs are not counted).", metrics.LatencyBuckets)
	m.Describe("gbproxy_media_connections_refused_total", "TCP media connections refused on an upper's TCP-passive leg (not from the upper's address or outside media_allow), by platform.")
	m.Gauge("gbproxy_sessions", "Established live sessions this node relays (upper platform legs answered 200) now: those /api/v1/sessions?local=true lists with this node (calls forwarded to another cluster node are gbproxy_forwarded_sessions).", func() float64 {
		sessions, _, _ := b.Counts()
		return float64(sessions)
	})
	m.Gauge("gbproxy_forwarded_sessions", "Calls this node forwarded to the cluster node holding the channel, answered and not ended: listed in /api/v1/sessions with that node, not counted in gbproxy_sessions (the owner counts them, so the sum over the nodes counts each session once).", func() float64 {
		return float64(len(b.forwardedList(func(f *forwarded) bool { return f.answeredOK() })))
	})
	m.Gauge("gbproxy_device_streams", "Device streams (device legs) now; several sessions may share one.", func() float64 {
		_, streams, _ := b.Counts()
		return float64(streams)
	})
	m.Gauge("gbproxy_relay_ports_in_use", "RTP relay ports taken.", func() float64 { return float64(b.relay.PortsInUse()) })
}

// Session is one live session as the API shows it (keep the field names).
type Session struct {
	CallID         string    `json:"call_id"`
	ChannelID      string    `json:"channel_id"`
	UpperID        string    `json:"upper_id"`
	Kind           string    `json:"kind"`
	UpperTransport string    `json:"upper_transport"`
	LowerTransport string    `json:"lower_transport"`
	SSRCUpper      string    `json:"ssrc_upper"`
	SSRCLower      string    `json:"ssrc_lower"`
	Packets        uint64    `json:"packets"`
	Bytes          uint64    `json:"bytes"`
	Lost           uint64    `json:"lost"`
	StartedAt      time.Time `json:"started_at"`
	// Beyond the contract: what the operator needs to find a call.
	DeviceID       string    `json:"device_id"`
	UpperChannelID string    `json:"upper_channel_id"`
	LowerCallID    string    `json:"lower_call_id"`
	LastPacketAt   time.Time `json:"last_packet_at,omitzero"`
	// Node is, in a cluster, the node relaying the session's media. A call
	// this node forwarded to the channel's owner names the owner (it has
	// no counters here: the owner relays the media).
	Node string `json:"node,omitempty"`
}

// Sessions lists the established live sessions: those this node relays,
// then (in a cluster) the calls it forwarded to other nodes, with Node set.
func (b *B2BUA) Sessions() []Session {
	b.mu.Lock()
	calls := make([]*call, 0, len(b.calls))
	for _, c := range b.calls {
		if c.live() {
			calls = append(calls, c)
		}
	}
	b.mu.Unlock()
	out := make([]Session, 0, len(calls))
	for _, c := range calls {
		st := c.st
		in := st.src.Stats().In
		sent := c.sink.Stats().Out
		out = append(out, Session{
			CallID: c.callID, ChannelID: st.channelID, UpperID: c.upperID, Kind: sessionLabel(st.kind),
			UpperTransport: c.sink.Transport().String(), LowerTransport: st.src.Transport().String(),
			SSRCUpper: formatSSRC(c.ssrc), SSRCLower: st.ssrcLower,
			Packets: sent.Packets, Bytes: sent.Bytes, Lost: in.Lost, StartedAt: c.started,
			DeviceID: st.deviceID, UpperChannelID: c.targetID, LowerCallID: st.callID, LastPacketAt: in.Last,
		})
	}
	out = append(out, b.broadcastSessions()...)
	return append(out, b.forwardedSessions()...)
}

// ErrNoSession: no live session has that Call-ID.
var ErrNoSession = errors.New("no live session with this Call-ID")

// Hangup ends the session with the upper's Call-ID callID on both legs.
func (b *B2BUA) Hangup(callID string) error {
	b.mu.Lock()
	var found *call
	for _, c := range b.calls {
		if c.callID == callID && c.live() {
			found = c
			break
		}
	}
	b.mu.Unlock()
	if found == nil && b.hangupBroadcast(callID) {
		return nil
	}
	if found == nil {
		fwd := b.forwardedList(func(f *forwarded) bool { return f.callID == callID && f.answeredOK() })
		if len(fwd) == 0 {
			return ErrNoSession
		}
		b.endForward(fwd[0], "ended through the API", true, true)
		return nil
	}
	b.endCall(found, "ended through the API", true)
	return nil
}

// DeviceOffline ends every stream of a device that went offline: the
// uppers get BYE, the device a best-effort BYE (a keepalive timeout does
// not prove it stopped streaming).
func (b *B2BUA) DeviceOffline(deviceID, reason string) {
	b.mu.Lock()
	var gone []*stream
	for _, st := range b.byLower { // live, playback and download
		if st.deviceID == deviceID {
			gone = append(gone, st)
		}
	}
	b.mu.Unlock()
	// Not on the caller's goroutine: the BYEs may wait for peers that are
	// gone, and the cascade's keepalive monitor must not.
	for _, st := range gone {
		b.goOrRun(func() { b.endStream(st, "device offline: "+reason, true) })
	}
	b.endBroadcasts(deviceID, "device offline: "+reason, b.goOrRun)
}

// UpperLost ends the sessions of an upper platform whose signalling was
// lost (its dialogs went with it): both legs freed, the device BYE'd when
// no other receiver remains, and a best-effort BYE to the upper.
func (b *B2BUA) UpperLost(platformID, reason string) {
	b.mu.Lock()
	var gone []*call
	for _, c := range b.calls {
		if c.upperID == platformID && c.established {
			gone = append(gone, c)
		}
	}
	b.mu.Unlock()
	// Not on the caller's goroutine: the cascade's registration loop must
	// not wait for BYEs to a peer that is gone.
	for _, c := range gone {
		b.goOrRun(func() { b.endCall(c, "upper platform signalling lost: "+reason, true) })
	}
	b.endForwards(func(f *forwarded) bool { return f.upperID == platformID }, "upper platform signalling lost: "+reason, b.goOrRun)
}

// Close ends every call on both sides (BYEs bounded by ctx) and stops.
func (b *B2BUA) Close(ctx context.Context) {
	b.mu.Lock()
	b.closed = true
	calls := make([]*call, 0, len(b.calls))
	for _, c := range b.calls {
		if c.established { // the others fail when b.ctx ends
			calls = append(calls, c)
		}
	}
	b.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.endCall(c, "proxy shutting down", true)
		}()
	}
	b.endForwards(func(*forwarded) bool { return true }, "proxy shutting down", func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	})
	b.endBroadcasts("", "proxy shutting down", func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	})
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	b.cancel()
	b.wg.Wait()
}

// goTracked runs f on a goroutine that Close waits for, unless Close has
// begun: then it reports false and f does not run (Close ends every call
// itself). The check and the Add share b.mu with Close's closed flag, so the
// WaitGroup never grows from zero while Close waits on it.
func (b *B2BUA) goTracked(f func()) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		f()
	}()
	return true
}

// goOrRun is goTracked for work that must happen anyway (ending a call):
// once Close has begun it runs on the caller's goroutine.
func (b *B2BUA) goOrRun(f func()) {
	if !b.goTracked(f) {
		f()
	}
}

// Counts reports established sessions (those Sessions lists), device
// streams and SSRCs in use.
func (b *B2BUA) Counts() (sessions, streams, ssrcs int) {
	b.mu.Lock()
	for _, c := range b.calls {
		if c.live() {
			sessions++
		}
	}
	streams = len(b.byLower)
	b.mu.Unlock()
	return sessions, streams, b.ssrc.size()
}

// platformLabel is a metric label for an upper's claimed ID: the ID when
// it is configured, else "unknown" (label values never come from the wire).
func (b *B2BUA) platformLabel(id string) string {
	if _, ok := b.dir.MediaAllow(id); ok {
		return id
	}
	return "unknown"
}

// mediaAllow is where upper platform id lets us send its media.
func (b *B2BUA) mediaAllow(id string) []netip.Prefix {
	allow, _ := b.dir.MediaAllow(id)
	return allow
}

// resultLabel is a metric label for a final status: the codes we answer
// with ourselves, else the class ("4xx") of a code relayed from a device.
func resultLabel(code int) string {
	if _, ok := phrases[code]; ok || code == sip.StatusRequestTerminated {
		return strconv.Itoa(code)
	}
	return strconv.Itoa(min(max(code/100, 1), 6)) + "xx"
}

// statusError is a final answer for the upper: code, reason phrase, and
// the detail the operator needs (logged, and put in the phrase).
type statusError struct {
	code   int
	phrase string
	detail string
}

func (e *statusError) Error() string { return e.detail }

var phrases = map[int]string{
	400: "Bad Request", 403: "Forbidden", 404: "Not Found", 408: "Request Timeout",
	480: "Temporarily Unavailable", 483: "Too Many Hops", 488: "Not Acceptable Here",
	500: "Server Internal Error", 502: "Bad Gateway", 503: "Service Unavailable",
}

func failWith(code int, detail string) *statusError {
	return &statusError{code: code, phrase: phrases[code], detail: detail}
}

// phraseSafe keeps a detail that goes into a reason phrase on one line.
var phraseSafe = strings.NewReplacer("\r", " ", "\n", " ")
