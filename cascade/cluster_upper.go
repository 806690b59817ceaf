package cascade

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
	"github.com/gbproxy/gbproxy/cluster"
	"github.com/gbproxy/gbproxy/directory"
	"github.com/gbproxy/gbproxy/endpoint"
	"github.com/gbproxy/gbproxy/security"
)

// The upper side in a cluster. Toward an upper platform the nodes are one
// platform: one node at a time (elected per platform) registers and keeps
// alive, answers the catalog with every node's channels, and forwards what
// is for a channel on another node to that node's upper side, From the
// platform's ID, so the owner serves it with its usual handlers. What the
// owner sends the platform afterwards (routed answers, alarms) goes back
// through the registering node: the platform only talks to the node
// registered to it. Requests between nodes carry a signature of the
// cluster's shared secret (cluster.Sign), which the upper guard checks
// instead of the platform's address and Note.

// refusedClusterSignature labels a request refused for its cluster signature.
const refusedClusterSignature = "cluster_signature"

// admitInternal is the upper guard's verdict on a request claiming to come
// from another node: from that live member's host, validly signed, once.
func (up *upperSide) admitInternal(req *sip.Request) endpoint.Verdict {
	node, err := up.cluster.Verify(req)
	if err != nil {
		up.log.Warn().Err(err).Str("node", node).Str("remote", req.Source()).Str("method", string(req.Method)).
			Str("call_id", callIDOf(req)).Msg("request claiming to come from another cluster node refused")
		return refusal(sip.StatusForbidden, "Forbidden (cluster signature)", refusedClusterSignature,
			"check that every node uses the same etcd and that clocks agree within "+cluster.SignatureWindow.String())
	}
	return endpoint.Verdict{Known: true}
}

// signInternal signs a request leaving for another node's upper side (the
// upper endpoint's Outgoing hook, last).
func (up *upperSide) signInternal(req *sip.Request) {
	cl := up.cluster
	if cl == nil || !cl.IsMemberUpper(req.Destination()) {
		return
	}
	if err := cl.Sign(req); err != nil {
		up.log.Error().Err(err).Str("to", req.Destination()).Str("method", string(req.Method)).Msg("could not sign a request to another cluster node; it will refuse it")
	}
}

// runElected runs the registration loop while this node is elected to
// register to the platform; it returns once the client stopped.
func (u *upperClient) runElected(cl *cluster.Cluster) {
	defer u.up.wg.Done()
	defer close(u.done)
	cl.Lead(u.ctx, u.id, u.lead)
	<-u.ctx.Done()
	u.leadMu.Lock()
	u.leadStopped = true
	end := u.leadEnd
	u.leadMu.Unlock()
	if end != nil {
		<-end
	}
}

// lead is one term as the registering node. When it ends with the client
// still running, leadership went elsewhere (our lease expired): the loop
// stops without Expires: 0, which would cut off the node registering now.
func (u *upperClient) lead(ctx context.Context) {
	u.leadMu.Lock()
	if u.leadStopped {
		u.leadMu.Unlock()
		return
	}
	end := make(chan struct{})
	u.leadEnd = end
	u.leadMu.Unlock()
	defer close(end)
	u.log.Info().Msg("this node registers to the upper platform for the cluster")
	u.run(ctx)
	if u.ctx.Err() != nil {
		return
	}
	u.mu.Lock()
	u.st.Registered, u.st.LastError = false, ""
	u.redirect = nil
	u.mu.Unlock()
	u.closeConn()
	u.log.Warn().Msg("no longer the cluster's registering node for this upper platform; stopped without unregistering, another node registers it")
}

// mayUnregister: on a single node always; in a cluster only the last live
// node sends Expires: 0 on its way out, otherwise the node elected next
// registers over our binding without a gap.
func (u *upperClient) mayUnregister() bool {
	cl := u.up.cluster
	return cl == nil || len(cl.Nodes()) <= 1
}

// registeredBy is the node registering to u's platform for the cluster.
func (up *upperSide) registeredBy(u *upperClient) string {
	if up.cluster == nil {
		return ""
	}
	id, _ := up.cluster.Leader(u.id)
	return id
}

// reachable: MESSAGEs to the platform can go now, from here or through the
// node registered to it.
func (u *upperClient) reachable() bool {
	if u.state().Registered {
		return true
	}
	_, relay, err := u.relayVia()
	return relay && err == nil
}

// relayVia says whether MESSAGEs to u's platform must go through the node
// registered to it (another node than this one) and which one.
func (u *upperClient) relayVia() (leader cluster.Node, relay bool, err error) {
	cl := u.up.cluster
	if cl == nil {
		return leader, false, nil
	}
	id, ok := cl.Leader(u.id)
	if !ok {
		return leader, true, errors.New("no cluster node is registered to this upper platform now")
	}
	if id == cl.Self().ID {
		return leader, false, nil
	}
	n, ok := u.up.node(id)
	if !ok || n.Upper == "" {
		return n, true, fmt.Errorf("cluster node %s, registered to this upper platform, is gone or announces no upper address", id)
	}
	return n, true, nil
}

func (up *upperSide) node(id string) (cluster.Node, bool) {
	for _, n := range up.cluster.Nodes() {
		if n.ID == id {
			return n, true
		}
	}
	return cluster.Node{}, false
}

// relayUp hands a MESSAGE for u's platform to the node registered to it,
// From our own ID (which the platform does not send), To the platform; the
// leader sends it on (relayedUp) and answers with the platform's outcome.
func (u *upperClient) relayUp(ctx context.Context, leader cluster.Node, body []byte, headers []sip.Header) error {
	host, port := endpoint.SplitHostPort(leader.Upper)
	req := u.up.ep.NewRequest(sip.MESSAGE, sip.Uri{Scheme: "sip", User: u.id, Host: host, Port: port},
		endpoint.Peer{Transport: "UDP", Addr: leader.Upper},
		sip.Uri{Scheme: "sip", User: u.up.cfg.ID, Host: u.up.cfg.Domain},
		sip.Uri{Scheme: "sip", User: u.id, Host: u.cfg().Domain})
	req.AppendHeader(sip.NewHeader("Content-Type", contentTypeMANSCDP))
	req.SetBody(body)
	setHeaders(req, headers)
	res, err := u.up.ep.Do(ctx, req)
	if err == nil && !res.IsSuccess() {
		err = &statusError{res}
	}
	if err != nil {
		return fmt.Errorf("through cluster node %s: %w", leader.ID, err)
	}
	return nil
}

// relayedUp takes a MESSAGE another node relays to an upper platform we are
// registered to (the guard verified its signature) and sends it on; false
// when req is not one.
func (up *upperSide) relayedUp(req *sip.Request, tx sip.ServerTransaction) bool {
	if up.cluster == nil || !cluster.Signed(req) || fromUser(req) != up.cfg.ID {
		return false
	}
	u := up.upperByID(toUser(req))
	if u == nil {
		up.ep.Respond(tx, req, sip.StatusNotFound, "Not Found (no such upper platform)", nil)
		return true
	}
	var headers []sip.Header
	if h := req.GetHeader(security.MonitorUserIdentityHeader); h != nil {
		headers = append(headers, sip.HeaderClone(h))
	}
	ctx, cancel := context.WithTimeout(up.ctx, requestTimeout)
	defer cancel()
	// Never relayed again: two nodes disagreeing about the leader must not
	// pass it back and forth.
	err := u.messageDirect(ctx, req.Body(), headers...)
	var st *statusError
	switch {
	case err == nil:
		up.ep.Respond(tx, req, sip.StatusOK, "OK", nil)
	case errors.As(err, &st):
		up.ep.Respond(tx, req, st.res.StatusCode, st.res.Reason, nil)
	default:
		u.log.Warn().Err(err).Str("call_id", callIDOf(req)).Msg("MESSAGE relayed by another cluster node not taken by the upper platform")
		up.ep.Respond(tx, req, sip.StatusRequestTimeout, "Request Timeout (upper platform did not answer)", nil)
	}
	return true
}

// OnForwardedDialogMessage sets what takes, in a cluster, a MESSAGE inside
// the dialog of a call this node forwarded to another node (the owner's
// MediaStatus for the upper, GB/T 28181 §9.8): f reports whether it was
// one of its calls and answered it. Call it before Start.
func (c *Cascade) OnForwardedDialogMessage(f func(*sip.Request, sip.ServerTransaction) bool) {
	c.upper.forwardedMessage = f
}

// inForwardedCall hands an in-dialog MESSAGE to the forwarded calls.
func (up *upperSide) inForwardedCall(req *sip.Request, tx sip.ServerTransaction) bool {
	return up.cluster != nil && up.forwardedMessage != nil && req.To().Params.Has("tag") && up.forwardedMessage(req, tx)
}

// remote is a target of an upper's request that lives on another node.
type remote struct {
	deviceID string
	node     cluster.Node
}

// remoteTarget finds who serves local (an ID the upper addressed, mapped)
// when it is not online here but another live node holds it and v shares
// it.
func (up *upperSide) remoteTarget(v *shareView, local string) (remote, bool) {
	cl := up.cluster
	if cl == nil {
		return remote{}, false
	}
	dev, nodeID, isChannel := cl.ChannelOwner(local)
	if !isChannel {
		var ok bool
		if nodeID, ok = cl.DeviceOwner(local); !ok {
			return remote{}, false
		}
		dev = local
	}
	if nodeID == cl.Self().ID {
		return remote{}, false
	}
	if d, ok := up.registry.Device(dev); ok && d.Online {
		return remote{}, false
	}
	if isChannel {
		if c := up.indexChannel(dev, local); c == nil || !up.sharesRemote(v, c, up.indexChannel) {
			return remote{}, false
		}
	} else if !v.sharesDevice(dev) {
		return remote{}, false
	}
	n, ok := up.node(nodeID)
	if !ok || n.Upper == "" {
		return remote{}, false
	}
	return remote{deviceID: dev, node: n}, true
}

// sharesRemote reports whether v sees channel c of another node, looking
// up (in the cluster's index) only the groups above it, its ParentID
// chain, as sharesChannel walks them.
func (up *upperSide) sharesRemote(v *shareView, c *Channel, lookup func(dev, id string) *Channel) bool {
	chain := map[string]*Channel{c.ID: c}
	for cur, depth := c, 0; depth < 16; depth++ { // sharesChannel's bound
		pid := lastPathElement(cur.Item.ParentID)
		if pid == "" || chain[pid] != nil {
			break
		}
		if cur = lookup(c.DeviceID, pid); cur == nil {
			break
		}
		chain[pid] = cur
	}
	return v.sharesChannel(c, chain)
}

// indexChannel is a channel of the cluster's index, nil when absent.
func (up *upperSide) indexChannel(dev, id string) *Channel {
	if rec, ok := up.cluster.Channel(dev, id); ok {
		return channelOf(rec)
	}
	return nil
}

// forwardToOwner passes an upper's query or control for a channel on
// another node to that node, and its SIP answer back; false when the
// target is not elsewhere (or req was itself forwarded: it is served here
// or refused, never forwarded again).
func (up *upperSide) forwardToOwner(r *routed, v *shareView) bool {
	if up.cluster == nil || cluster.Signed(r.req) {
		return false
	}
	local, ok := v.down(r.targetID)
	if !ok {
		return false
	}
	rem, ok := up.remoteTarget(v, local)
	if !ok {
		return false
	}
	host, port := endpoint.SplitHostPort(rem.node.Upper)
	fwd := up.ep.Forward(r.req, sip.Uri{Scheme: "sip", User: r.targetID, Host: host, Port: port},
		endpoint.Peer{Transport: "UDP", Addr: rem.node.Upper})
	ctx, cancel := context.WithTimeout(up.ctx, requestTimeout)
	defer cancel()
	res, err := up.ep.Do(ctx, fwd)
	if err != nil {
		r.with(r.u.log.Warn()).Err(err).Str("node", rem.node.ID).Msg("cluster node holding the device did not answer a forwarded request; answered 408")
		r.answer("node_timeout", sip.StatusRequestTimeout, "Request Timeout (cluster node did not answer)")
		return true
	}
	r.answer("forwarded", res.StatusCode, res.Reason)
	return true
}

// remoteCallee is the directory's answer for a channel on another node.
func (up *upperSide) remoteCallee(v *shareView, id string) (*directory.RemoteError, bool) {
	local, ok := v.down(id)
	if !ok {
		return nil, false
	}
	rem, ok := up.remoteTarget(v, local)
	if !ok {
		return nil, false
	}
	return &directory.RemoteError{Node: rem.node.ID, Addr: rem.node.Upper, Gone: up.gone.of(rem.node.ID),
		ChannelID: local, DeviceID: rem.deviceID}, true
}

// nodeWatch hands out, per node, a channel closed when the node leaves the
// cluster (forwarded calls end with it).
type nodeWatch struct {
	mu    sync.Mutex
	gone  map[string]chan struct{}
	nodes func() []cluster.Node
}

func (w *nodeWatch) of(node string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gone == nil {
		w.gone = map[string]chan struct{}{}
	}
	ch := w.gone[node]
	if ch == nil {
		ch = make(chan struct{})
		w.gone[node] = ch
	}
	return ch
}

// changed closes the channels of nodes no longer members.
func (w *nodeWatch) changed() {
	live := map[string]bool{}
	for _, n := range w.nodes() {
		live[n.ID] = true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, ch := range w.gone {
		if !live[id] {
			close(ch)
			delete(w.gone, id)
		}
	}
}

// startCluster hooks the upper side to membership and catalog changes.
func (up *upperSide) startCluster() {
	if up.cluster == nil {
		return
	}
	up.gone.nodes = up.cluster.Nodes
	up.cluster.OnNodesChanged(up.gone.changed)
	up.cluster.OnNodesChanged(up.devices.pokeSubscriptions) // other nodes' wants
	up.remoteOff = map[string]bool{}
	up.cluster.OnChannelsChanged(up.remoteChannelsChanged)
}

// Catalog subscriptions in a cluster. The registry reports this node's own
// channels (channelEvents); the cluster's index reports the other nodes'
// (remoteChannelsChanged), turned into GB/T 28181 events:
//   - a record that appears: ADD, or its status when the upper was told
//     it went OFF (the device went offline and came back, maybe elsewhere)
//     or it was ours before (the device moved away from this node);
//   - a record that changes: its status when that changed, else UPDATE
//     (a move between two other nodes alone is nothing);
//   - a record that goes: DEL when its device is still held (the channel
//     left the catalog), else OFF (the device went offline or its node
//     died; its channels come back when it registers again).
// Records of this node's devices are left to the registry, and the
// registry's events of a device the cluster now places on another node are
// dropped (it moved away: it is not offline for the upper), so no change is
// told twice.

// remoteChannelsChanged runs on the cluster's watch goroutine, in order;
// enqueueing NOTIFYs does not block.
func (up *upperSide) remoteChannelsChanged(changes []cluster.ChannelChange) {
	cl := up.cluster
	self := cl.Self().ID
	var evs []ChannelEvent
	gone := map[[2]string]*Channel{} // records this batch removed, for share lookups
	for _, ch := range changes {
		rec := ch.New
		if rec == nil {
			rec = ch.Old
		}
		if node, ok := cl.DeviceOwner(rec.DeviceID); ok && node == self || rec.Node == self && ch.New != nil {
			delete(up.remoteOff, rec.ID)
			continue
		}
		c := channelOf(*rec)
		event := ""
		switch {
		case ch.New == nil && ch.Old.Node == self:
		case ch.New == nil:
			gone[[2]string{rec.DeviceID, rec.ID}] = c
			if _, held := cl.DeviceOwner(rec.DeviceID); held {
				event = "DEL"
				delete(up.remoteOff, rec.ID)
			} else {
				event = "OFF"
				up.remoteOff[rec.ID] = true
			}
		case ch.Old == nil && !up.remoteOff[rec.ID]:
			event = "ADD"
		case ch.Old == nil || ch.Old.Node == self || recStatus(*ch.Old) != recStatus(*ch.New):
			event = recStatus(*ch.New)
			delete(up.remoteOff, rec.ID)
		case !sameListing(*ch.Old, *ch.New):
			event = "UPDATE"
		}
		if event != "" {
			c.Item.Status = recStatus(*rec)
			evs = append(evs, ChannelEvent{DeviceID: rec.DeviceID, Item: c.Item, Event: event})
		}
	}
	lookup := func(dev, id string) *Channel {
		if c := up.indexChannel(dev, id); c != nil {
			return c
		}
		return gone[[2]string{dev, id}]
	}
	up.subs.catalogEvents(evs, func(v *shareView, evs []ChannelEvent) []manscdp.CatalogItem {
		return up.remoteEventsFor(v, evs, lookup)
	})
}

// recStatus is a record's status as an event names it.
func recStatus(r cluster.ChannelRecord) string { return strings.ToUpper(cmpOr(r.Status, "ON")) }

// sameListing: a and b differ in nothing an upper's catalog shows but their
// status and node.
func sameListing(a, b cluster.ChannelRecord) bool {
	a.Status, a.Node, b.Status, b.Node = "", "", "", ""
	return reflect.DeepEqual(a, b)
}

// localEvents drops, in a cluster, the registry's events of devices the
// cluster now places on another node (see above).
func (up *upperSide) localEvents(evs []ChannelEvent) []ChannelEvent {
	cl := up.cluster
	if cl == nil {
		return evs
	}
	self := cl.Self().ID
	return slices.DeleteFunc(evs, func(ev ChannelEvent) bool {
		node, ok := cl.DeviceOwner(ev.DeviceID)
		return ok && node != self
	})
}

// remoteEventsFor filters and maps other nodes' channel events for one
// upper, as the registry's eventsFor does for ours; lookup finds a
// channel's groups.
func (up *upperSide) remoteEventsFor(v *shareView, evs []ChannelEvent, lookup func(dev, id string) *Channel) []manscdp.CatalogItem {
	var out []manscdp.CatalogItem
	for _, ev := range evs {
		c := &Channel{ID: ev.Item.DeviceID, DeviceID: ev.DeviceID, Item: ev.Item}
		if !up.sharesRemote(v, c, lookup) {
			continue
		}
		switch ev.Event {
		case "ADD", "UPDATE":
			visible := map[string]*Channel{}
			for _, id := range []string{lastPathElement(c.Item.ParentID), c.Item.BusinessGroupID, infoGroup(c.Item)} {
				if p := lookup(c.DeviceID, id); id != "" && p != nil && up.sharesRemote(v, p, lookup) {
					visible[id] = p
				}
			}
			r := up.registry
			r.mu.RLock()
			it := r.upperItemLocked(v, c, visible)
			r.mu.RUnlock()
			it.Status, it.Event = ev.Item.Status, ev.Event
			out = append(out, it)
		default:
			out = append(out, manscdp.CatalogItem{DeviceID: v.up(c.ID), Event: ev.Event})
		}
	}
	return out
}

func infoGroup(it manscdp.CatalogItem) string {
	if it.Info != nil {
		return it.Info.BusinessGroupID
	}
	return ""
}

// catalogFor is the catalog upper v sees: this node's channels and, in a
// cluster, the other nodes' channels through the same share rules. A device
// online here is served from here whatever the index says.
func (up *upperSide) catalogFor(v *shareView) []manscdp.CatalogItem {
	items := up.registry.catalogFor(v)
	cl := up.cluster
	if cl == nil {
		return items
	}
	self := cl.Self().ID
	have := make(map[string]bool, len(items))
	for _, it := range items {
		have[it.DeviceID] = true
	}
	byDevice := map[string]map[string]*Channel{}
	status := map[string]string{}
	for _, rec := range cl.Channels() {
		if rec.Node == self || rec.Node == "" {
			continue
		}
		if d, ok := up.registry.Device(rec.DeviceID); ok && d.Online {
			continue
		}
		chs := byDevice[rec.DeviceID]
		if chs == nil {
			chs = map[string]*Channel{}
			byDevice[rec.DeviceID] = chs
		}
		chs[rec.ID] = channelOf(rec)
		status[rec.ID] = rec.Status
	}
	r := up.registry
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, chs := range byDevice {
		visible := map[string]*Channel{}
		for id, c := range chs {
			if v.sharesChannel(c, chs) && !have[v.up(id)] {
				visible[id] = c
			}
		}
		for id, c := range visible {
			it := r.upperItemLocked(v, c, visible)
			it.Status = cmpOr(status[id], "ON")
			items = append(items, it)
		}
	}
	sort.Slice(items, func(i, j int) bool { return items[i].DeviceID < items[j].DeviceID })
	return items
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// channelOf is a cluster channel record as a channel of the registry.
func channelOf(rec cluster.ChannelRecord) *Channel {
	it := manscdp.CatalogItem{
		DeviceID: rec.ID, Name: rec.Name, Manufacturer: rec.Manufacturer, Model: rec.Model, Owner: rec.Owner,
		CivilCode: rec.CivilCode, Block: rec.Block, Address: rec.Address, Parental: rec.Parental,
		ParentID: rec.ParentID, BusinessGroupID: rec.BusinessGroupID, SafetyWay: rec.SafetyWay,
		RegisterWay: rec.RegisterWay, Secrecy: rec.Secrecy, Status: rec.Status,
		Longitude: rec.Longitude, Latitude: rec.Latitude,
	}
	if len(rec.Info) > 0 {
		var info manscdp.CatalogItemInfo
		if json.Unmarshal(rec.Info, &info) == nil {
			it.Info = &info
		}
	}
	return &Channel{ID: rec.ID, DeviceID: rec.DeviceID, Item: it}
}
