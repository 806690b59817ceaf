package cascade

import (
	"context"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
	"github.com/gbproxy/gbproxy/cluster"
	"github.com/gbproxy/gbproxy/endpoint"
	"github.com/gbproxy/gbproxy/security"
)

// Alarm, MobilePosition and PTZPosition subscriptions in a cluster. An
// upper platform subscribes at the node registered to it; the device may
// live on another node. The node holding the subscriptions publishes what
// they want (platform, kind, device or every device; cluster.SetWants, in
// its node record), the owning node counts those wants with its own when
// it keeps its per-(device, kind) subscriptions to its devices, and sends
// what its device reports to each node that wants it as a signed
// cluster-internal MESSAGE (reportHeader; To: the reporting device). That
// node fans it out, through each platform's share, as NOTIFYs in the
// subscription dialogs it holds (upperSubs.forward), as for its own
// devices. The alarm MESSAGE an upper gets besides (GB/T 28181 §9.4) is
// relayed to the registering node separately (upperClient.message), so
// each of the two reaches the upper once.
//
// Wants rather than forwarding the SUBSCRIBE to the owner: a subscription
// to everything spans every node and outlives devices moving between them,
// the dialog stays with the node the upper talks to, and a node's wants go
// with its lease when it dies.

// reportHeader marks a device's report sent by its node to the node
// holding subscriptions to it; the value is the report's CmdType.
const reportHeader = "X-GBProxy-Report"

// demand is what an upper subscription asks of the devices: device "" is
// every device view v sees.
type demand struct {
	v            *shareView
	kind, device string
}

// remoteDemands are the other nodes' published wants, seen through our
// own view of each platform (every node carries the same platforms).
func (up *upperSide) remoteDemands() []demand {
	cl := up.cluster
	if cl == nil {
		return nil
	}
	self := cl.Self().ID
	var out []demand
	for _, n := range cl.Nodes() {
		if n.ID == self {
			continue
		}
		for _, w := range n.Wants {
			if u := up.upperByID(w.Platform); u != nil && w.Kind != "Catalog" {
				out = append(out, demand{v: u.view(), kind: w.Kind, device: w.Device})
			}
		}
	}
	return out
}

// publishWants tells the cluster what this node's upper subscriptions
// want; the cluster writes only changes.
func (s *upperSubs) publishWants() {
	cl := s.up.cluster
	if cl == nil {
		return
	}
	s.mu.Lock()
	wants := make([]cluster.Want, 0, len(s.uppers))
	for _, sub := range s.uppers {
		if sub.kind != "Catalog" {
			wants = append(wants, cluster.Want{Platform: sub.upper.id, Kind: sub.kind, Device: sub.ownerID})
		}
	}
	s.mu.Unlock()
	cl.SetWants(wants)
}

// reportToNodes sends a report of one of this node's devices to every
// other node whose upper subscriptions want it, once per node.
func (up *upperSide) reportToNodes(kind, deviceID, id string, body []byte, identity sip.Header) {
	cl := up.cluster
	if cl == nil {
		return
	}
	self := cl.Self().ID
	for _, n := range cl.Nodes() {
		if n.ID == self || n.Upper == "" || !up.wantedBy(n, kind, deviceID, id) {
			continue
		}
		up.tasks.spawn(func() { up.sendReport(n, kind, deviceID, body, identity) })
	}
}

// wantedBy: one of node n's subscriptions wants device deviceID's report
// about id.
func (up *upperSide) wantedBy(n cluster.Node, kind, deviceID, id string) bool {
	for _, w := range n.Wants {
		if w.Kind != kind {
			continue
		}
		if w.Device == deviceID {
			return true
		}
		if u := up.upperByID(w.Platform); w.Device == "" && u != nil && up.registry.sharesID(u.view(), id) {
			return true
		}
	}
	return false
}

func (up *upperSide) sendReport(n cluster.Node, kind, deviceID string, body []byte, identity sip.Header) {
	host, port := endpoint.SplitHostPort(n.Upper)
	req := up.ep.NewRequest(sip.MESSAGE, sip.Uri{Scheme: "sip", User: deviceID, Host: host, Port: port},
		endpoint.Peer{Transport: "UDP", Addr: n.Upper},
		sip.Uri{Scheme: "sip", User: up.cfg.ID, Host: up.cfg.Domain},
		sip.Uri{Scheme: "sip", User: deviceID, Host: up.cfg.Domain})
	req.AppendHeader(sip.NewHeader(reportHeader, kind))
	req.AppendHeader(sip.NewHeader("Content-Type", contentTypeMANSCDP))
	req.SetBody(body)
	if identity != nil {
		req.AppendHeader(sip.HeaderClone(identity))
	}
	ctx, cancel := context.WithTimeout(up.ctx, requestTimeout)
	defer cancel()
	res, err := up.ep.Do(ctx, req)
	if err == nil && !res.IsSuccess() {
		err = &statusError{res}
	}
	if err != nil {
		up.log.Warn().Err(err).Str("node", n.ID).Str("kind", kind).Str("device_id", deviceID).
			Msg("cluster node holding subscriptions to the device did not take its report; its subscribers miss it")
	}
}

// reportFromNode takes a report another node sends for our subscribers
// (the guard verified its signature); false when req is not one.
func (up *upperSide) reportFromNode(req *sip.Request, tx sip.ServerTransaction) bool {
	h := req.GetHeader(reportHeader)
	if up.cluster == nil || h == nil || !cluster.Signed(req) {
		return false
	}
	hdr, err := manscdp.Peek(req.Body())
	if err != nil || hdr.CmdType != h.Value() || hdr.CmdType == "Catalog" || !subscriptionKinds[hdr.CmdType] {
		up.log.Warn().Err(err).Str("kind", h.Value()).Str("call_id", callIDOf(req)).Msg("report from another cluster node unreadable or of no subscription kind; answered 400")
		up.ep.Respond(tx, req, sip.StatusBadRequest, "Bad Request (report)", nil)
		return true
	}
	up.ep.Respond(tx, req, sip.StatusOK, "OK", nil)
	var identity sip.Header
	if id := req.GetHeader(security.MonitorUserIdentityHeader); id != nil {
		identity = sip.HeaderClone(id)
	}
	up.subs.forward(hdr.CmdType, toUser(req), hdr.DeviceID, req.Body(), identity)
	return true
}

// sharesReport: the upper behind v sees id, of device deviceID, held here
// or, in a cluster, on another node.
func (up *upperSide) sharesReport(v *shareView, deviceID, id string) bool {
	if up.registry.sharesID(v, id) {
		return true
	}
	if up.cluster == nil {
		return false
	}
	if id == deviceID {
		return v.sharesDevice(deviceID)
	}
	c := up.indexChannel(deviceID, id)
	return c != nil && up.sharesRemote(v, c, up.indexChannel)
}

// resolveRemote is, for an upper's subscription, the local ID and the
// device of a target held by another node; ok false when there is none.
func (up *upperSide) resolveRemote(v *shareView, id string) (local, deviceID string, ok bool) {
	if local, ok = v.down(id); !ok {
		return "", "", false
	}
	rem, ok := up.remoteTarget(v, local)
	return local, rem.deviceID, ok
}
