package cascade

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
	"github.com/gbproxy/gbproxy/cluster"
	"github.com/gbproxy/gbproxy/directory"
	"github.com/gbproxy/gbproxy/endpoint"
)

// Voice broadcast (GB/T 28181-2016 §9.12) and snapshots (2022 §9.14) cross
// the proxy as a request routed down whose follow-up comes back later from
// the device: the device's INVITE to the broadcast's SourceID, the device's
// UploadSnapShotFinished. The tables here remember, for a while, whom that
// follow-up belongs to.

const (
	// broadcastWait is how long after the Notify a device may INVITE the
	// voice source: devices do it at once after their Response.
	broadcastWait = time.Minute
	// snapshotWait is how long an UploadSnapShotFinished still finds the
	// upper that ordered it: up to 10 pictures, seconds apart, uploaded over
	// a slow link.
	snapshotWait = 10 * time.Minute
)

type pendingBroadcast struct {
	upper     *upperClient
	targetID  string
	channelID string
	until     time.Time
}

type pendingSnapshot struct {
	upper *upperClient
	until time.Time
}

// followUps holds what routed requests leave behind for the device's
// follow-up. Entries are dropped when taken or, lazily, once expired.
type followUps struct {
	mu         sync.Mutex
	broadcasts map[string]pendingBroadcast // device ID + "/" + SourceID
	snapshots  map[string]pendingSnapshot  // SessionID
}

func newFollowUps() *followUps {
	return &followUps{broadcasts: map[string]pendingBroadcast{}, snapshots: map[string]pendingSnapshot{}}
}

func (f *followUps) purgeLocked(now time.Time) {
	for k, b := range f.broadcasts {
		if now.After(b.until) {
			delete(f.broadcasts, k)
		}
	}
	for k, s := range f.snapshots {
		if now.After(s.until) {
			delete(f.snapshots, k)
		}
	}
}

func broadcastKey(deviceID, sourceID string) string { return deviceID + "/" + sourceID }

// routeBroadcast carries an upper's Notify Broadcast to the device that owns
// its TargetID: our SN, the local target, SourceID unchanged (the device
// calls it back here). The device's Response returns through the route
// table with the upper's SN and IDs.
func (up *upperSide) routeBroadcast(u *upperClient, req *sip.Request, tx sip.ServerTransaction, hdr manscdp.Header) {
	r := &routed{up: up, u: u, req: req, tx: tx, cmdType: hdr.CmdType, sn: hdr.SN}
	var n manscdp.BroadcastNotify
	if err := manscdp.Decode(req.Body(), &n); err != nil || n.SourceID == "" || n.TargetID == "" {
		r.with(u.log.Warn()).Err(err).Msg("Broadcast without readable SourceID and TargetID answered 400")
		r.answer("bad_request", sip.StatusBadRequest, "Bad Request (Broadcast needs SourceID and TargetID)")
		return
	}
	r.targetID = n.TargetID
	v := u.view()
	// A target on another node: the owner routes it and notes the
	// broadcast, as its device calls it back there.
	if up.forwardToOwner(r, v) {
		return
	}
	if !r.target(v) {
		return
	}
	sn := nextSN()
	n.SN, n.TargetID = sn, r.local
	body, err := manscdp.Encode(manscdp.RootNotify, &n, manscdp.CharsetGB2312)
	if err != nil {
		r.with(u.log.Warn()).Err(err).Msg("Broadcast could not be encoded for the device; answered 400")
		r.answer("bad_request", sip.StatusBadRequest, "Bad Request (MANSCDP body)")
		return
	}
	up.routes.add(&routedQuery{sn: sn, origSN: hdr.SN, upper: u, view: v, deviceID: r.dev.ID,
		targetID: r.targetID, cmdType: manscdp.CmdBroadcast})
	key := broadcastKey(r.dev.ID, n.SourceID)
	up.follow.mu.Lock()
	up.follow.purgeLocked(up.now())
	up.follow.broadcasts[key] = pendingBroadcast{upper: u, targetID: r.targetID, channelID: r.local, until: up.now().Add(broadcastWait)}
	up.follow.mu.Unlock()
	r.send(body, func() {
		up.routes.remove(sn)
		up.follow.mu.Lock()
		delete(up.follow.broadcasts, key)
		up.follow.mu.Unlock()
	})
}

// TakeBroadcast hands over, once, the broadcast from sourceID pending for
// device deviceID, with where the INVITE to sourceID goes (our connection
// to the upper platform, opened when needed).
func (c *Cascade) TakeBroadcast(ctx context.Context, deviceID, sourceID string) (directory.Broadcast, error) {
	return c.upper.takeBroadcast(ctx, deviceID, sourceID)
}

func (up *upperSide) takeBroadcast(ctx context.Context, deviceID, sourceID string) (directory.Broadcast, error) {
	key := broadcastKey(deviceID, sourceID)
	up.follow.mu.Lock()
	up.follow.purgeLocked(up.now())
	p, ok := up.follow.broadcasts[key]
	delete(up.follow.broadcasts, key)
	up.follow.mu.Unlock()
	if !ok {
		return directory.Broadcast{}, directory.ErrNoBroadcast
	}
	bc := directory.Broadcast{UpperID: p.upper.id, SourceID: sourceID, TargetID: p.targetID, ChannelID: p.channelID}
	domain := p.upper.cfg().Domain
	if len(sourceID) >= 10 {
		domain = sourceID[:10]
	}
	bc.To = sip.Uri{Scheme: "sip", User: sourceID, Host: domain}
	// In a cluster the platform takes calls only from the node registered
	// to it: the INVITE goes there (signed), which passes it on.
	leader, relay, err := p.upper.relayVia()
	switch {
	case relay && err != nil:
		return directory.Broadcast{}, err
	case relay:
		host, port := endpoint.SplitHostPort(leader.Upper)
		bc.Peer, bc.Through = endpoint.Peer{Transport: "UDP", Addr: leader.Upper}, leader.ID
		bc.URI = sip.Uri{Scheme: "sip", User: sourceID, Host: host, Port: port}
		return bc, nil
	}
	bc.Peer, bc.URI, err = p.upper.callTarget(ctx, sourceID)
	return bc, err
}

// callTarget is where an INVITE to user of u's platform goes: our
// connection to it (opened when needed) and the Request-URI.
func (u *upperClient) callTarget(ctx context.Context, user string) (endpoint.Peer, sip.Uri, error) {
	t := u.target()
	peer, err := u.peer(ctx, t)
	if err != nil {
		return peer, sip.Uri{}, err
	}
	host, port := endpoint.SplitHostPort(t.addr)
	return peer, sip.Uri{Scheme: "sip", User: user, Host: host, Port: port}, nil
}

// ToUpper is where an INVITE another node passes through us to an upper
// platform goes on (see directory.Directory).
func (c *Cascade) ToUpper(ctx context.Context, req *sip.Request) (directory.UpperRoute, error) {
	return c.upper.passToUpper(ctx, req)
}

// passToUpper takes only what a node sends From our own ID (the owner of the
// device that took up a broadcast) to a platform this node is registered
// to: never passed on again.
func (up *upperSide) passToUpper(ctx context.Context, req *sip.Request) (directory.UpperRoute, error) {
	h := req.GetHeader(directory.ToUpperHeader)
	if up.cluster == nil || h == nil || !cluster.Signed(req) || fromUser(req) != up.cfg.ID {
		return directory.UpperRoute{}, directory.ErrUnknownPlatform
	}
	u := up.upperByID(strings.TrimSpace(h.Value()))
	if u == nil {
		return directory.UpperRoute{}, directory.ErrUnknownPlatform
	}
	if _, relay, _ := u.relayVia(); relay || !u.state().Registered {
		return directory.UpperRoute{}, errors.New("this cluster node is not registered to upper platform " + u.id + " now")
	}
	node := cluster.SignedBy(req)
	n, ok := up.node(node)
	if !ok || n.Upper == "" {
		return directory.UpperRoute{}, errors.New("cluster node " + node + " is gone or announces no upper address")
	}
	peer, uri, err := u.callTarget(ctx, req.Recipient.User)
	if err != nil {
		return directory.UpperRoute{}, err
	}
	return directory.UpperRoute{UpperID: u.id, Peer: peer, URI: uri, Node: node, NodeAddr: n.Upper, Gone: up.gone.of(node)}, nil
}

// noteSnapshot remembers which upper ordered the snapshots of a routed
// DeviceConfig SnapShotConfig, by its SessionID.
func (up *upperSide) noteSnapshot(u *upperClient, m *manscdp.Message) {
	id := m.Text("SnapShotConfig/SessionID")
	if id == "" {
		return
	}
	up.follow.mu.Lock()
	defer up.follow.mu.Unlock()
	up.follow.purgeLocked(up.now())
	up.follow.snapshots[id] = pendingSnapshot{upper: u, until: up.now().Add(snapshotWait)}
}

// snapshotFinished relays a device's UploadSnapShotFinished up, SessionID
// kept and IDs mapped: to the upper that ordered it, or (order unknown, e.g.
// after a restart) to every upper that sees the channel.
func (up *upperSide) snapshotFinished(deviceID string, hdr manscdp.Header, body []byte, identity sip.Header) {
	var n manscdp.UploadSnapShotFinished
	if err := manscdp.Decode(body, &n); err != nil {
		up.log.Warn().Err(err).Str("device_id", deviceID).Msg("unreadable UploadSnapShotFinished dropped")
		return
	}
	log := up.log.With().Str("device_id", deviceID).Str("channel_id", hdr.DeviceID).Str("session_id", n.SessionID).Logger()
	up.follow.mu.Lock()
	p, ordered := up.follow.snapshots[n.SessionID]
	up.follow.mu.Unlock()
	sent := 0
	for _, u := range up.upperList() {
		v := u.view()
		if (ordered && u != p.upper) || !up.registry.sharesID(v, hdr.DeviceID) {
			continue
		}
		out, err := manscdp.Rewrite(body, nextSN(), func(id string) (string, bool) { return v.up(id), true }, u.charset())
		if err != nil {
			u.log.Warn().Err(err).Str("device_id", deviceID).Msg("UploadSnapShotFinished could not be rewritten for the upper platform; dropped")
			continue
		}
		sent++
		up.tasks.spawn(func() {
			if err := u.message(out, identity); err != nil {
				u.log.Warn().Err(err).Str("device_id", deviceID).Str("session_id", n.SessionID).Msg("upper platform did not take UploadSnapShotFinished")
			}
		})
	}
	log.Info().Bool("ordered_here", ordered).Int("uppers", sent).Msg("snapshot upload finished; relayed up")
}
