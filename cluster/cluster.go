// Package cluster is the shared state of a gbproxy cluster, kept in etcd:
// node membership under leases, which node owns each device, the channel
// index (channel -> device), one elected node per upper platform, and the
// managed set (upper platforms, allowed devices and shares set at run time;
// managed.go).
//
// Reads (Nodes, DeviceOwner, ChannelOwner, Place, Leader) come from a local
// cache kept by one etcd watch: hot paths never wait on etcd. Writes happen
// on registration, unregistration, catalog change and, coalesced, load
// change; never per keepalive or packet. They are made by one writer
// goroutine from this node's own desired state (the devices it claimed, the
// channels it published), batched into transactions and retried while etcd
// is away. That desired state is also what is written again under a new
// lease when the old one expired, so a restarted or partitioned etcd loses
// nothing that a live node holds.
//
// Every key this node writes is attached to its lease (the managed set
// excepted: it outlives the nodes): a node that stops
// renewing (killed, partitioned) disappears with its devices, channels and
// election candidacies within the TTL.
package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/gbproxy/gbproxy/metrics"
)

// Key layout; every value this node writes carries its lease.
const (
	prefix         = "/gbproxy/"
	nodesPrefix    = prefix + "nodes/"    // nodes/<node> -> Node JSON
	devicesPrefix  = prefix + "devices/"  // devices/<device> -> owning node ID
	channelsPrefix = prefix + "channels/" // channels/<device>/<channel> -> ChannelRecord JSON
	electionPrefix = prefix + "election/" // election/<platform>/<lease hex> -> node ID (concurrency.Election)
)

// Defaults of the zero Config fields.
const (
	DefaultTTL          = 10 * time.Second
	DefaultLoadInterval = 2 * time.Second
	DefaultStartTimeout = 5 * time.Second
	// MinTTL: etcd refuses shorter leases with its default election timeout.
	MinTTL = 2 * time.Second
)

// maxTxnOps is etcd's default --max-txn-ops.
const maxTxnOps = 128

// Config says how this node joins the cluster.
type Config struct {
	Endpoints []string // etcd client URLs or host:port
	NodeID    string
	Advertise string // this node's lower-side SIP address, ip:port
	// Upper is this node's upper-side SIP address as the other nodes reach
	// it (requests of an upper platform forwarded to the owning node), and
	// API its admin API address (cluster-wide lists); both ip:port.
	Upper, API string
	TTL        time.Duration // lease TTL, whole seconds (rounded up); 0 = DefaultTTL
	// LoadInterval is the shortest time between two writes of this node's
	// record for load changes; 0 = DefaultLoadInterval.
	LoadInterval time.Duration
	// StartTimeout is how long Open waits for etcd before it returns and
	// serves from an empty cache while joining in the background; 0 =
	// DefaultStartTimeout.
	StartTimeout time.Duration
	Metrics      *metrics.Registry // nil: no metrics
	// TLS, when set, is used toward every endpoint (https:// ones get the
	// system roots without it); the client certificate in it is what etcd's
	// --client-cert-auth checks.
	TLS *tls.Config
	// Username and Password authenticate to etcd's RBAC; never logged.
	Username, Password string
}

func (cfg *Config) check() error {
	if len(cfg.Endpoints) == 0 {
		return errors.New("cluster: no etcd endpoints")
	}
	if cfg.NodeID == "" {
		return errors.New("cluster: node_id is required")
	}
	if (cfg.Username == "") != (cfg.Password == "") {
		return errors.New("cluster: username and password go together")
	}
	if _, _, err := net.SplitHostPort(cfg.Advertise); err != nil {
		return fmt.Errorf("cluster: advertise %q is not host:port", cfg.Advertise)
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < MinTTL {
		return fmt.Errorf("cluster: node_ttl %s is below %s", cfg.TTL, MinTTL)
	}
	if cfg.LoadInterval <= 0 {
		cfg.LoadInterval = DefaultLoadInterval
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	return nil
}

func (cfg *Config) ttlSeconds() int64 { return int64((cfg.TTL + time.Second - 1) / time.Second) }

// Node is one member's record.
type Node struct {
	ID        string   `json:"id"`
	Advertise string   `json:"advertise"`
	Upper     string   `json:"upper,omitempty"`
	API       string   `json:"api,omitempty"`
	Devices   int      `json:"devices"`
	Streams   int      `json:"streams"`
	Platforms []string `json:"platforms,omitempty"` // upper platforms it registers to (leads)
	// Wants are the subscriptions its upper platforms hold (wants.go).
	Wants     []Want    `json:"wants,omitempty"`
	StartedAt time.Time `json:"started_at"`
}

// ChannelRecord is one channel in the cluster-wide catalog: the catalog
// item's fields an upper is told about, plus where the channel lives.
type ChannelRecord struct {
	ID              string `json:"id"`
	DeviceID        string `json:"device"`         // set by SetChannels
	Node            string `json:"node,omitempty"` // owning node, set by the cache
	Name            string `json:"name,omitempty"`
	Manufacturer    string `json:"manufacturer,omitempty"`
	Model           string `json:"model,omitempty"`
	Owner           string `json:"owner,omitempty"`
	CivilCode       string `json:"civil_code,omitempty"`
	Block           string `json:"block,omitempty"`
	Address         string `json:"address,omitempty"`
	Parental        string `json:"parental,omitempty"`
	ParentID        string `json:"parent,omitempty"`
	BusinessGroupID string `json:"business_group,omitempty"`
	SafetyWay       string `json:"safety_way,omitempty"`
	RegisterWay     string `json:"register_way,omitempty"`
	Secrecy         string `json:"secrecy,omitempty"`
	Status          string `json:"status,omitempty"`
	Longitude       string `json:"longitude,omitempty"`
	Latitude        string `json:"latitude,omitempty"`
	// Info is opaque to this package: the owner may carry the rest of its
	// catalog item (the camera attribute block) for the node that answers
	// an upper's catalog query.
	Info []byte `json:"info,omitempty"`
}

// Cluster is one node's handle on the shared state. Safe for concurrent use.
type Cluster struct {
	cfg Config
	log zerolog.Logger
	cli atomic.Pointer[clientv3.Client] // set once by connect, before the loops start

	errMu   sync.Mutex
	lastErr error // etcd's last refusal, for the start-up warning

	ctx     context.Context // cancelled last in Close
	cancel  context.CancelFunc
	closing chan struct{}
	stopCtx context.Context // cancelled when Close starts: ends Lead loops
	stop    context.CancelFunc
	once    sync.Once
	wg      sync.WaitGroup // background loops
	leads   sync.WaitGroup // Lead loops
	kick    chan struct{}  // wakes the writer
	rewatch chan struct{}  // makes the watcher reload
	ready   chan struct{}  // closed when joined and loaded the first time
	readyMu sync.Once

	writes, errs atomic.Uint64
	up           atomic.Bool

	sessMu   sync.Mutex
	sess     *concurrency.Session
	sessWait chan struct{} // closed when sess becomes non-nil

	mu         sync.RWMutex
	self       Node
	leading    map[string]bool
	leadLoops  map[string]chan struct{} // platform -> closed when its Lead loop ended
	cache      cache
	loaded     bool
	pending    map[string]int // node -> devices Place sent there since its record reached us
	onLost     []func(deviceID string)
	onChanged  []func()
	onManaged  []func(ManagedChange)
	onChannels []func([]ChannelChange)
	desired

	sign signer // the shared secret and the signatures seen (sign.go)
}

// Open joins the cluster: it grants this node's lease, writes its record,
// loads and watches the shared state. When etcd does not answer within
// cfg.StartTimeout (or ctx ends first) Open still returns the Cluster: it
// serves from an empty cache, EtcdUp reports false, and it keeps joining in
// the background. Errors are for a bad Config only.
func Open(ctx context.Context, cfg Config, log zerolog.Logger) (*Cluster, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	c := &Cluster{
		cfg: cfg, log: log.With().Str("node", cfg.NodeID).Logger(),
		closing:   make(chan struct{}),
		kick:      make(chan struct{}, 1),
		rewatch:   make(chan struct{}, 1),
		ready:     make(chan struct{}),
		sessWait:  make(chan struct{}),
		self:      Node{ID: cfg.NodeID, Advertise: cfg.Advertise, Upper: cfg.Upper, API: cfg.API, StartedAt: time.Now().UTC().Truncate(time.Second)},
		leading:   map[string]bool{},
		leadLoops: map[string]chan struct{}{},
		cache:     newCache(),
		pending:   map[string]int{},
		desired:   newDesired(),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.stopCtx, c.stop = context.WithCancel(context.Background())
	c.registerMetrics()
	c.wg.Add(1)
	go c.connect(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          2 * time.Second,
		DialKeepAliveTime:    cfg.TTL / 3,
		DialKeepAliveTimeout: cfg.TTL / 3,
		TLS:                  cfg.TLS,
		Username:             cfg.Username,
		Password:             cfg.Password,
		Context:              c.ctx,
		Logger:               zap.NewNop(), // failures are logged once, by us, in zerolog
	})

	wait := time.NewTimer(cfg.StartTimeout)
	defer wait.Stop()
	select {
	case <-c.ready:
	case <-wait.C:
		c.log.Warn().Err(c.lastError()).AnErr("tls", c.tlsProblem(ctx)).Strs("etcd", cfg.Endpoints).Dur("waited", cfg.StartTimeout).Msg("cluster: etcd unreachable at start; serving from an empty cache and joining in the background")
	case <-ctx.Done():
	}
	return c, nil
}

// connect makes the etcd client and then starts the loops that use it. With
// Username set clientv3.New authenticates, so it fails while etcd is away or
// refuses the password: retried with backoff, a new refusal logged once.
func (c *Cluster) connect(ecfg clientv3.Config) {
	defer c.wg.Done()
	var bo backoff
	var last string
	for {
		cli, err := clientv3.New(ecfg)
		if err == nil {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.isClosing() {
				cli.Close()
				return
			}
			c.cli.Store(cli)
			c.wg.Add(4)
			go c.sessionLoop()
			go c.watchLoop()
			go c.writeLoop()
			go c.probeLoop()
			return
		}
		c.fail("connect", err)
		if msg := err.Error(); msg != last && !c.isClosing() {
			last = msg
			c.log.Warn().Err(err).Strs("etcd", c.cfg.Endpoints).Str("user", c.cfg.Username).Msg("cluster: cannot open the etcd client (unreachable, or cluster.username/password refused); retrying")
		}
		if !c.sleep(bo.next()) {
			return
		}
	}
}

// client is the etcd client; nil until connect made it (the loops start
// after).
func (c *Cluster) client() *clientv3.Client { return c.cli.Load() }

var errNotConnected = errors.New("etcd client not open yet (etcd unreachable, or it refused our TLS or credentials)")

// kv is the client for a request made outside the loops.
func (c *Cluster) kv() (*clientv3.Client, error) {
	if cli := c.client(); cli != nil {
		return cli, nil
	}
	return nil, errNotConnected
}

func (c *Cluster) lastError() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.lastErr
}

func (c *Cluster) registerMetrics() {
	r := c.cfg.Metrics
	if r == nil {
		return
	}
	r.Gauge("gbproxy_cluster_etcd_up", "1 while etcd answers this node, 0 while it serves from its cache.", func() float64 {
		if c.up.Load() {
			return 1
		}
		return 0
	})
	r.Describe("gbproxy_cluster_etcd_errors_total", "Failed etcd requests (lease, read, write).")
	r.Describe("gbproxy_cluster_etcd_writes_total", "etcd write requests (puts, deletes, transactions, revokes) made by this node.")
	r.Gauge("gbproxy_cluster_nodes", "Cluster members this node sees alive.", func() float64 { return float64(len(c.Nodes())) })
}

// Close leaves the cluster: Lead loops end (their run contexts are
// cancelled and Close waits for run to return), then the lease is revoked so
// the other nodes see this node, its devices, channels and candidacies gone
// at once.
func (c *Cluster) Close() error {
	c.once.Do(func() {
		c.mu.Lock() // no Lead starts past this point
		close(c.closing)
		c.mu.Unlock()
		c.stop()
		leads := make(chan struct{})
		go func() { c.leads.Wait(); close(leads) }()
		select {
		case <-leads:
		case <-time.After(c.opTimeout()):
			// A campaign stuck on an unreachable etcd ends when the client closes.
		}
		if s := c.session(); s != nil {
			s.Orphan() // revoked here with a deadline of our own
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if _, err := c.client().Revoke(ctx, s.Lease()); err != nil {
				c.log.Warn().Err(err).Msg("cluster: revoke lease on close; the other nodes see us gone within node_ttl")
			} else {
				c.wrote(1)
			}
			cancel()
		}
		c.cancel()
		c.closeClient()
		<-leads
		c.wg.Wait()
		c.log.Info().Msg("cluster: left")
	})
	return nil
}

// Self is this node's record as it is now.
func (c *Cluster) Self() Node {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return cloneNode(c.self)
}

// Nodes are the members alive (present under a lease), sorted by ID. This
// node is always among them, whatever etcd says.
func (c *Cluster) Nodes() []Node {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.nodesLocked()
}

func (c *Cluster) nodesLocked() []Node {
	out := make([]Node, 0, len(c.cache.nodes)+1)
	for id, n := range c.cache.nodes {
		if id != c.self.ID {
			out = append(out, cloneNode(n))
		}
	}
	out = append(out, cloneNode(c.self))
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func cloneNode(n Node) Node {
	n.Platforms = slices.Clone(n.Platforms)
	n.Wants = slices.Clone(n.Wants)
	return n
}

// OnNodesChanged registers fn, called (from the watch goroutine, so it must
// not block) when a member joins, leaves or changes its record.
func (c *Cluster) OnNodesChanged(fn func()) {
	c.mu.Lock()
	c.onChanged = append(c.onChanged, fn)
	c.mu.Unlock()
}

// OnDeviceLost registers fn, called (from the watch goroutine, so it must not
// block) when a device this node claimed was claimed since by another node:
// the device registered there, and this node should drop its registration.
func (c *Cluster) OnDeviceLost(fn func(deviceID string)) {
	c.mu.Lock()
	c.onLost = append(c.onLost, fn)
	c.mu.Unlock()
}

// SetLoad publishes this node's load. The record is written only when the
// numbers changed, at most once per LoadInterval.
func (c *Cluster) SetLoad(devices, streams int) {
	c.mu.Lock()
	changed := c.self.Devices != devices || c.self.Streams != streams
	c.self.Devices, c.self.Streams = devices, streams
	if changed {
		c.nodeDirty = true
	}
	c.mu.Unlock()
	if changed {
		c.wake()
	}
}

// DeviceOwner is the node holding device id, from the cache; this node's own
// claims answer at once, before they reach etcd.
func (c *Cluster) DeviceOwner(id string) (nodeID string, ok bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.ownerLocked(id)
}

func (c *Cluster) ownerLocked(id string) (string, bool) {
	if _, mine := c.mine[id]; mine {
		return c.self.ID, true
	}
	o, ok := c.cache.owners[id]
	return o.node, ok
}

// ChannelOwner is the device of a channel in the cluster-wide index and the
// node holding that device.
func (c *Cluster) ChannelOwner(channelID string) (deviceID, nodeID string, ok bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if dev, mine := c.myChanDev[channelID]; mine {
		return dev, c.self.ID, true
	}
	dev, ok := c.cache.channelDevice[channelID]
	if !ok {
		return "", "", false
	}
	if node, owned := c.ownerLocked(dev); owned {
		return dev, node, true
	}
	return dev, c.cache.channels[dev][channelID].rec.Node, true
}

// Channels is the cluster-wide catalog, sorted by device then channel: this
// node's own channels as it published them (whether or not etcd has them
// yet), the others' from the cache.
func (c *Cluster) Channels() []ChannelRecord {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []ChannelRecord
	for dev, chs := range c.cache.channels {
		if _, mine := c.myChans[dev]; !mine {
			for _, e := range chs {
				out = append(out, e.rec)
			}
		}
	}
	for _, chs := range c.myChans {
		for _, e := range chs {
			out = append(out, e.rec)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].DeviceID != out[j].DeviceID {
			return out[i].DeviceID < out[j].DeviceID
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Leader is the node registered to upper platform platformID, from the cache.
func (c *Cluster) Leader(platformID string) (nodeID string, ok bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var best candidate
	for _, cand := range c.cache.elections[platformID] {
		if !ok || cand.createRev < best.createRev {
			best, ok = cand, true
		}
	}
	return best.node, ok
}

// EtcdUp reports whether etcd answered this node's last probe.
func (c *Cluster) EtcdUp() bool { return c.up.Load() }

// Writes counts the etcd write requests this node made (puts, deletes,
// transactions, lease revokes; not lease keepalives): the bench divides it
// by registrations.
func (c *Cluster) Writes() uint64 { return c.writes.Load() }

// Errors counts failed etcd requests.
func (c *Cluster) Errors() uint64 { return c.errs.Load() }

func (c *Cluster) wrote(n int) {
	c.writes.Add(uint64(n))
	c.cfg.Metrics.Add("gbproxy_cluster_etcd_writes_total", int64(n))
}

// fail counts a failed etcd request; it is logged at debug only: the probe
// logs etcd going away and coming back once.
func (c *Cluster) fail(what string, err error) {
	if c.isClosing() {
		return
	}
	c.errs.Add(1)
	c.cfg.Metrics.Inc("gbproxy_cluster_etcd_errors_total")
	c.errMu.Lock()
	c.lastErr = err
	c.errMu.Unlock()
	c.log.Debug().Err(err).Str("op", what).Msg("cluster: etcd request failed")
}

func (c *Cluster) setUp(up bool, err error) {
	if c.up.Swap(up) == up || c.isClosing() {
		return
	}
	if up {
		c.log.Info().Strs("etcd", c.cfg.Endpoints).Msg("cluster: etcd reachable")
	} else {
		c.log.Warn().Err(err).Strs("etcd", c.cfg.Endpoints).Msg("cluster: etcd unreachable; serving from the cache")
	}
}

// closeClient closes the etcd client if connect made one; connect makes
// none once closing is set.
func (c *Cluster) closeClient() {
	c.mu.Lock()
	cli := c.client()
	c.mu.Unlock()
	if cli != nil {
		cli.Close()
	}
}

func (c *Cluster) isClosing() bool {
	select {
	case <-c.closing:
		return true
	default:
		return false
	}
}

// sleep waits d or until Close; false when closing.
func (c *Cluster) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.closing:
		return false
	}
}

func (c *Cluster) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// backoff doubles from 100 ms to 2 s between retries.
type backoff struct{ d time.Duration }

func (b *backoff) next() time.Duration {
	b.d = min(max(2*b.d, 100*time.Millisecond), 2*time.Second)
	return b.d
}

func leaseKey(l clientv3.LeaseID) string { return strconv.FormatInt(int64(l), 16) }
