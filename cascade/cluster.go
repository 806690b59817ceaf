package cascade

import (
	"cmp"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cascade/manscdp"
	"github.com/gbproxy/gbproxy/cluster"
	"github.com/gbproxy/gbproxy/endpoint"
)

// UseCluster makes this node one of a gbproxy cluster sharing state in
// etcd (nil, the default, is a single node). Call it before Start.
func (c *Cascade) UseCluster(cl *cluster.Cluster) {
	c.cluster = cl
	if cl != nil {
		cl.OnDeviceLost(c.lower.deviceMovedAway)
		c.useManagedCluster(cl)
	}
}

// CountStreams sets how this node's relayed streams are counted in the
// load it publishes to the cluster (the redirect registrar balances on
// devices and streams). Call it before Start.
func (c *Cascade) CountStreams(f func() int) { c.lower.streams = f }

// Device ownership in the cluster (lower side). A device is claimed on
// every successful REGISTER (a no-op, no write, while it is already ours)
// and after a keepalive revived it; it is released, and its channels
// withdrawn, whenever it goes offline here for any reason: unregistered,
// registration expired, keepalive timeout, connection closed, removed from
// the allowed devices. After a keepalive timeout this node no longer serves
// the device: releasing lets the redirect registrar place it on any live
// node when it registers again. Keepalives write nothing.

// clusterOnline claims device id for this node; fresh (a new registration
// or one revived) also publishes its channels and the node's load.
func (l *lowerSide) clusterOnline(id string, fresh bool) {
	if l.cluster == nil {
		return
	}
	l.cluster.ClaimDevice(id)
	if fresh {
		l.publishChannels(id)
		l.publishLoad()
	}
}

// clusterOffline releases a device that went offline here.
func (l *lowerSide) clusterOffline(id string) {
	if l.cluster == nil {
		return
	}
	l.cluster.ReleaseDevice(id)
	l.cluster.SetChannels(id, nil)
	l.publishLoad()
}

// publishChannels writes device id's catalog to the cluster's channel
// index while the device is online here.
func (l *lowerSide) publishChannels(id string) {
	if l.cluster == nil {
		return
	}
	items, online := l.registry.deviceItems(id)
	if !online {
		return
	}
	recs := make([]cluster.ChannelRecord, len(items))
	for i, it := range items {
		recs[i] = channelRecord(it)
	}
	l.cluster.SetChannels(id, recs)
}

// publishLoad tells the cluster this node's devices online and streams; the
// cluster writes only changes, at most once per its load interval.
func (l *lowerSide) publishLoad() {
	if l.cluster == nil {
		return
	}
	_, online := l.registry.Counts()
	streams := 0
	if l.streams != nil {
		streams = l.streams()
	}
	l.cluster.SetLoad(online, streams)
}

// deviceMovedAway runs (on the cluster's watch goroutine, so it only starts
// a task) when device id registered at another node: its registration here
// ends and it goes offline, its sessions here end with it.
func (l *lowerSide) deviceMovedAway(id string) {
	l.tasks.spawn(func() {
		node, ok := l.cluster.DeviceOwner(id)
		if !ok || node == l.cluster.Self().ID {
			return // it came back here meanwhile
		}
		l.registry.unregister(id, l.now())
		l.deviceOffline(id, "moved to node "+node)
	})
}

// channelRecord is a catalog item as the cluster's channel index holds it;
// the camera attribute block travels JSON-encoded in Info.
func channelRecord(it manscdp.CatalogItem) cluster.ChannelRecord {
	r := cluster.ChannelRecord{ID: it.DeviceID, Name: it.Name, Manufacturer: it.Manufacturer, Model: it.Model,
		Owner: it.Owner, CivilCode: it.CivilCode, Block: it.Block, Address: it.Address, Parental: it.Parental,
		ParentID: it.ParentID, BusinessGroupID: it.BusinessGroupID, SafetyWay: it.SafetyWay, RegisterWay: it.RegisterWay,
		Secrecy: it.Secrecy, Status: it.Status, Longitude: it.Longitude, Latitude: it.Latitude}
	if it.Info != nil {
		r.Info, _ = json.Marshal(it.Info) // strings only: cannot fail
	}
	return r
}

// redirectGrace is how long after our 302 a device that registers here
// again, without having registered where we sent it, is taken for one that
// does not follow redirects and is served here. A device that follows
// comes back only when its node stops answering: minutes later (keepalive
// timeouts), and with that node gone from the cluster.
const redirectGrace = 2 * time.Minute

// redirects remembers where the redirect registrar sent each device.
type redirects struct {
	mu    sync.Mutex
	sent  map[string]redirect
	swept time.Time
}

type redirect struct {
	node string
	at   time.Time
}

// redirectTo decides, for a REGISTER that authenticated, whether to answer
// 302 and to which node. A device is served here when its Request-URI
// names this node's advertised address (a 302 sent it here: GB/T
// 28181-2022 has it register to sip:server-ID@address of the Contact; the
// nodes' views of each other's load lag, so the target must not redirect
// again), when Place picks this node, or when it ignored a recent 302 (see
// redirectGrace).
func (l *lowerSide) redirectTo(req *sip.Request, id string, now time.Time) (cluster.Node, bool) {
	cl := l.cluster
	if cl == nil || !l.cfg.Cluster.Redirect {
		return cluster.Node{}, false
	}
	me := cl.Self()
	if sameAddr(req.Recipient, me.Advertise) {
		return me, false
	}
	self := me.ID
	n := cl.Place(id)
	l.redirects.mu.Lock()
	defer l.redirects.mu.Unlock()
	if l.redirects.sent == nil {
		l.redirects.sent = map[string]redirect{}
	}
	if now.Sub(l.redirects.swept) > redirectGrace {
		l.redirects.swept = now
		for dev, r := range l.redirects.sent {
			if now.Sub(r.at) > redirectGrace {
				delete(l.redirects.sent, dev)
			}
		}
	}
	if n.ID == self {
		delete(l.redirects.sent, id)
		return n, false
	}
	if prev, ok := l.redirects.sent[id]; ok && prev.node == n.ID && now.Sub(prev.at) <= redirectGrace {
		if _, owned := cl.DeviceOwner(id); !owned {
			delete(l.redirects.sent, id)
			l.log.Warn().Str("device_id", id).Str("node", n.ID).Msg("device registered here again instead of following our 302; serving it here")
			return n, false
		}
	}
	l.redirects.sent[id] = redirect{node: n.ID, at: now}
	return n, true
}

// sameAddr: uri's host and port (5060 when absent) are addr's.
func sameAddr(uri sip.Uri, addr string) bool {
	host, port := endpoint.SplitHostPort(addr)
	return strings.EqualFold(uri.Host, host) && cmp.Or(uri.Port, 5060) == port
}

// redirectVerdict is the 302 (GB/T 28181-2022 registration redirect) to
// node n: Contact sip:<our ID>@<n's advertised address>, with Expires.
func (l *lowerSide) redirectVerdict(req *sip.Request, id string, n cluster.Node) endpoint.Verdict {
	host, port := endpoint.SplitHostPort(n.Advertise)
	contact := &sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: l.cfg.ID, Host: host, Port: port}}
	expires := min(max(requestedExpires(req), l.cfg.Lower.RegisterExpiresMin), l.cfg.Lower.RegisterExpiresMax)
	l.registerResult("redirected")
	l.log.Info().Str("device_id", id).Str("node", n.ID).Str("contact", n.Advertise).Str("remote", req.Source()).Msg("device redirected to another node")
	v := endpoint.Refuse(sip.StatusMovedTemporarily, "Moved Temporarily", contact, sip.NewHeader("Expires", strconv.Itoa(expires)))
	v.Routine = true
	return v
}
