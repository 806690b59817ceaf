// Package configs holds gbproxy's embedded default configuration and the typed
// configuration every other package reads. Viper is used once, at load time:
// it is not safe for concurrent use, so the rest of the program only sees the
// immutable Config value.
package configs

import (
	"bytes"
	"cmp"
	_ "embed"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

//go:embed default.yaml
var Default []byte

// EnvPrefix prefixes every environment override: GBPROXY_LOWER_LISTEN.
const EnvPrefix = "GBPROXY"

type Config struct {
	ID       string         `mapstructure:"id"`
	Domain   string         `mapstructure:"domain"`
	Lower    LowerConfig    `mapstructure:"lower"`
	Upper    UpperConfig    `mapstructure:"upper"`
	Media    MediaConfig    `mapstructure:"media"`
	Store    StoreConfig    `mapstructure:"store"`
	HTTP     HTTPConfig     `mapstructure:"http"`
	Log      LogConfig      `mapstructure:"log"`
	Security SecurityConfig `mapstructure:"security"`
	Cluster  ClusterConfig  `mapstructure:"cluster"`
}

// ClusterConfig joins several gbproxy nodes, sharing id and domain, into one
// platform with their state in etcd. No etcd endpoints: a single node.
type ClusterConfig struct {
	Etcd   []string `mapstructure:"etcd"`
	NodeID string   `mapstructure:"node_id"`
	// Advertise is this node's lower-side SIP address as devices and the
	// other nodes reach it (the Contact of a redirect to this node).
	Advertise string `mapstructure:"advertise"`
	// NodeTTL: a node that stops renewing its etcd lease is gone after it.
	NodeTTL time.Duration `mapstructure:"node_ttl"`
	// Redirect answers device REGISTERs with 302 to the node that should hold them.
	Redirect bool `mapstructure:"redirect"`
	// TLS toward etcd (https:// endpoints): the CA of etcd's certificate
	// (system roots when empty) and the client certificate etcd's
	// --client-cert-auth asks for.
	TLS TLSClientConfig `mapstructure:"tls"`
	// Username and Password log in to etcd's RBAC (auth enable).
	Username string `mapstructure:"username"`
	Password string `mapstructure:"password" json:"-"`
}

// Enabled reports whether this node is part of a cluster.
func (c ClusterConfig) Enabled() bool { return len(c.Etcd) > 0 }

var nodeID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func (c ClusterConfig) validate(bad func(string, string, ...any)) {
	if c.NodeTTL < 2*time.Second {
		bad("cluster.node_ttl", "%s is below 2s (etcd's shortest lease)", c.NodeTTL)
	}
	if !c.Enabled() {
		if c.Redirect {
			bad("cluster.redirect", "needs cluster.etcd: a single node has nowhere to redirect to")
		}
		return
	}
	for i, ep := range c.Etcd {
		if strings.TrimSpace(ep) == "" {
			bad(fmt.Sprintf("cluster.etcd[%d]", i), "is empty; list etcd client endpoints such as http://10.0.0.5:2379")
		}
	}
	if !nodeID.MatchString(c.NodeID) {
		bad("cluster.node_id", "%q must be 1-64 letters, digits, '.', '_' or '-', unique in the cluster (required with cluster.etcd)", c.NodeID)
	}
	host, port, err := net.SplitHostPort(c.Advertise)
	ip := net.ParseIP(host)
	if n, perr := strconv.Atoi(port); err != nil || ip == nil || ip.IsUnspecified() || perr != nil || n < 1 || n > 65535 {
		bad("cluster.advertise", "%q is not the ip:port devices and the other nodes reach this node's lower side at (required with cluster.etcd)", c.Advertise)
	}
	c.validateSecurity(bad)
}

// validateSecurity checks how we reach etcd: one scheme for every endpoint
// (the etcd client dials them all with the first one's), TLS only where it
// is used, credentials in pairs.
func (c ClusterConfig) validateSecurity(bad func(string, string, ...any)) {
	schemes := map[string]bool{}
	for i, ep := range c.Etcd {
		scheme, _ := c.endpointScheme(ep)
		switch scheme {
		case "http", "https":
			schemes[scheme] = true
		default:
			bad(fmt.Sprintf("cluster.etcd[%d]", i), "%q: scheme %q is not http:// or https://", ep, scheme)
		}
	}
	if len(schemes) > 1 {
		bad("cluster.etcd", "mixes http:// and https:// endpoints; the etcd client uses one scheme for all: use https:// everywhere")
	}
	if c.TLS != (TLSClientConfig{}) && schemes["http"] {
		bad("cluster.tls", "is set but cluster.etcd has http:// endpoints, which never use TLS: write them https://")
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		bad("cluster.tls", "cert and key go together (set both or neither)")
	}
	if c.Username != "" && c.Password == "" {
		bad("cluster.password", "is required with cluster.username (etcd RBAC)")
	}
	if c.Password != "" && c.Username == "" {
		bad("cluster.username", "is required with cluster.password (etcd RBAC)")
	}
}

// endpointScheme is an endpoint's scheme and host: host:port without one is
// https when cluster.tls is set, as the etcd client treats it.
func (c ClusterConfig) endpointScheme(ep string) (scheme, host string) {
	scheme, hostPort, found := strings.Cut(strings.TrimSpace(ep), "://")
	if !found {
		scheme, hostPort = "http", ep
		if c.TLS != (TLSClientConfig{}) {
			scheme = "https"
		}
	}
	host, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		host = hostPort
	}
	return scheme, host
}

// UsesTLS reports whether etcd is reached over TLS (valid config: one
// scheme for all endpoints).
func (c ClusterConfig) UsesTLS() bool {
	for _, ep := range c.Etcd {
		if scheme, _ := c.endpointScheme(ep); scheme == "https" {
			return true
		}
	}
	return false
}

// plainEtcd lists the endpoints reached in the clear beyond loopback.
func (c ClusterConfig) plainEtcd() []string {
	var out []string
	for _, ep := range c.Etcd {
		scheme, host := c.endpointScheme(ep)
		if ip := net.ParseIP(host); scheme == "http" && host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			out = append(out, ep)
		}
	}
	return out
}

// SignallingConfig is the per-message signalling digest (GB/T 28181 SIP信令认证)
// toward one peer: every request we send it except REGISTER carries Date and
// Note; with require, its requests must carry a valid one.
type SignallingConfig struct {
	// SignallingDigest: off | send | require.
	SignallingDigest string `mapstructure:"signalling_digest" json:"signalling_digest,omitempty"`
	NoteSeed         string `mapstructure:"note_seed" json:"-"`
	// NoteAlgorithm: MD5 | SHA-256 | SM3.
	NoteAlgorithm string `mapstructure:"note_algorithm" json:"note_algorithm,omitempty"`
	// NoteEncoding: base64 (the standard) | hex (some vendors).
	NoteEncoding string `mapstructure:"note_encoding" json:"note_encoding,omitempty"`
}

// Signalling digest modes.
const (
	DigestOff     = "off"
	DigestSend    = "send"
	DigestRequire = "require"
)

// Sends reports whether requests to the peer are signed.
func (s SignallingConfig) Sends() bool {
	return s.SignallingDigest == DigestSend || s.SignallingDigest == DigestRequire
}

// Requires reports whether the peer's requests must carry a valid Note.
func (s SignallingConfig) Requires() bool { return s.SignallingDigest == DigestRequire }

// inherit fills empty fields from def (a device inherits lower's defaults).
func (s SignallingConfig) inherit(def SignallingConfig) SignallingConfig {
	if s.SignallingDigest == "" {
		s.SignallingDigest = def.SignallingDigest
	}
	if s.NoteSeed == "" {
		s.NoteSeed = def.NoteSeed
	}
	if s.NoteAlgorithm == "" {
		s.NoteAlgorithm = def.NoteAlgorithm
	}
	if s.NoteEncoding == "" {
		s.NoteEncoding = def.NoteEncoding
	}
	return s
}

// TLSServerConfig is a TLS listener's certificate and, for mutual TLS, the
// CA that signs client certificates.
type TLSServerConfig struct {
	Cert              string `mapstructure:"cert"`
	Key               string `mapstructure:"key"`
	ClientCA          string `mapstructure:"client_ca"`
	RequireClientCert bool   `mapstructure:"require_client_cert"`
}

// TLSClientConfig is how we connect to an upper platform over TLS: the CA
// that signs its certificate, our client certificate if it asks for one,
// and the name to verify (default: the address's host).
type TLSClientConfig struct {
	CA         string `mapstructure:"ca"`
	Cert       string `mapstructure:"cert"`
	Key        string `mapstructure:"key"`
	ServerName string `mapstructure:"server_name"`
}

// SecurityConfig holds the border-gateway settings shared by both sides.
type SecurityConfig struct {
	// GatewayID is our segment in Monitor-User-Identity ("" = id).
	GatewayID string `mapstructure:"gateway_id"`
	// MaxHops refuses (483) a request whose Monitor-User-Identity already
	// holds this many segments.
	MaxHops int `mapstructure:"max_hops"`
	// DateWindow is how far a signed request's Date may be from our clock.
	DateWindow time.Duration `mapstructure:"date_window"`
	// UnauthenticatedRate and UnauthenticatedBurst limit requests per source
	// IP that is neither a registered device nor a configured upper.
	UnauthenticatedRate  float64 `mapstructure:"unauthenticated_rate"`
	UnauthenticatedBurst int     `mapstructure:"unauthenticated_burst"`
	// TCPIdleTimeout closes TCP/TLS connections that have not authenticated
	// (REGISTER, or a configured upper) within it.
	TCPIdleTimeout time.Duration `mapstructure:"tcp_idle_timeout"`
	MaxConnsPerIP  int           `mapstructure:"max_conns_per_ip"`
	// MaxConns caps TCP/TLS connections per SIP zone; 0 = derived from the
	// process's file limit, leaving room for media and the API.
	MaxConns int           `mapstructure:"max_conns"`
	Lockout  LockoutConfig `mapstructure:"lockout"`
}

// LockoutConfig bounds digest guessing: per (ID, source IP), per source IP
// whatever the ID, and per ID across addresses, failures within Window lock
// for LockFor.
type LockoutConfig struct {
	MaxFailures      int           `mapstructure:"max_failures"`
	MaxFailuresPerIP int           `mapstructure:"max_failures_per_ip"`
	MaxFailuresPerID int           `mapstructure:"max_failures_per_id"`
	Window           time.Duration `mapstructure:"window"`
	LockFor          time.Duration `mapstructure:"lock_for"`
}

type LowerConfig struct {
	Listen   string `mapstructure:"listen"`
	MediaIP  string `mapstructure:"media_ip"`
	Password string `mapstructure:"password"`
	// PasswordHA1 replaces Password: the hex HA1 (MD5 or SHA-256 of
	// id:realm:password, matching auth_algorithm) so no plain secret is stored.
	PasswordHA1 string `mapstructure:"password_ha1"`
	// BindSource ties a registered device's requests to where it registered
	// from: ip (any port), ip-port, or off. TCP/TLS: always its connection.
	BindSource string `mapstructure:"bind_source"`
	// TLSListen ("" = none) accepts SIP over TLS with TLS.
	TLSListen             string          `mapstructure:"tls_listen"`
	TLS                   TLSServerConfig `mapstructure:"tls"`
	SignallingConfig      `mapstructure:",squash"`
	AllowUnknown          bool           `mapstructure:"allow_unknown"`
	Devices               []DeviceConfig `mapstructure:"devices"`
	AuthAlgorithm         string         `mapstructure:"auth_algorithm"`
	RegisterExpiresMin    int            `mapstructure:"register_expires_min"`
	RegisterExpiresMax    int            `mapstructure:"register_expires_max"`
	KeepaliveInterval     time.Duration  `mapstructure:"keepalive_interval"`
	KeepaliveTimeoutCount int            `mapstructure:"keepalive_timeout_count"`
	CatalogTimeout        time.Duration  `mapstructure:"catalog_timeout"`
	// CatalogRefreshInterval re-asks every online device for its catalog; 0 disables.
	CatalogRefreshInterval time.Duration `mapstructure:"catalog_refresh_interval"`
	// QueryTimeout bounds the wait for a device's MANSCDP answer to a routed
	// query; past it the upper gets a Result ERROR response.
	QueryTimeout     time.Duration `mapstructure:"query_timeout"`
	SubscribeExpires int           `mapstructure:"subscribe_expires"`
	// StreamMode is how the proxy receives media from devices, named from
	// the proxy's side: udp, tcp-passive (we listen, the device connects)
	// or tcp-active (we connect to the device). Devices may override it.
	StreamMode string `mapstructure:"stream_mode"`
	// MediaExternalIP is announced in SDP toward devices instead of the
	// bind address (NAT); "" announces media_ip.
	MediaExternalIP string `mapstructure:"media_external_ip"`
	// InviteTimeout bounds the wait for a device's final answer to our
	// INVITE; past it the INVITE is cancelled and the upper gets 408.
	InviteTimeout time.Duration `mapstructure:"invite_timeout"`
}

// DeviceConfig lists a device allowed to register, with its own password
// (empty: lower.password).
type DeviceConfig struct {
	ID          string `mapstructure:"id"`
	Password    string `mapstructure:"password"`
	PasswordHA1 string `mapstructure:"password_ha1"`
	// StreamMode overrides lower.stream_mode for this device ("" = inherit).
	StreamMode string `mapstructure:"stream_mode"`
	// Signalling digest settings; empty fields inherit lower's.
	SignallingConfig `mapstructure:",squash"`
}

type UpperConfig struct {
	Listen  string `mapstructure:"listen"`
	MediaIP string `mapstructure:"media_ip"`
	// MediaExternalIP is announced in SDP toward upper platforms instead of
	// the bind address (NAT); "" announces media_ip.
	MediaExternalIP string           `mapstructure:"media_external_ip"`
	Platforms       []PlatformConfig `mapstructure:"platforms"`
	// SubscribeExpiresMax caps the Expires an upper's SUBSCRIBE is granted.
	SubscribeExpiresMax int `mapstructure:"subscribe_expires_max"`
	// MaxSubscriptions caps subscriptions from all uppers together.
	MaxSubscriptions int `mapstructure:"max_subscriptions"`
}

// PlatformConfig is one upper platform gbproxy registers to as a lower platform.
type PlatformConfig struct {
	ID      string `mapstructure:"id"`
	Domain  string `mapstructure:"domain"`
	Address string `mapstructure:"address"`
	// Transport: udp | tcp | tls (tcp and tls keep one connection that
	// carries requests both ways).
	Transport string          `mapstructure:"transport"`
	TLS       TLSClientConfig `mapstructure:"tls"`
	Username  string          `mapstructure:"username"`
	Password  string          `mapstructure:"password"`
	// PasswordHA1 replaces Password when the platform's challenge uses the
	// same realm and algorithm the HA1 was made for.
	PasswordHA1           string        `mapstructure:"password_ha1"`
	Expires               int           `mapstructure:"expires"`
	KeepaliveInterval     time.Duration `mapstructure:"keepalive_interval"`
	KeepaliveTimeoutCount int           `mapstructure:"keepalive_timeout_count"`
	RetryInterval         time.Duration `mapstructure:"retry_interval"`
	// Charset of the MANSCDP bodies we send to this platform: gb2312 | utf-8.
	Charset string `mapstructure:"charset"`
	// CatalogItemsPerMessage: 0 = chosen by transport (UDP: as many as fit
	// 1300 bytes; TCP: 64).
	CatalogItemsPerMessage int `mapstructure:"catalog_items_per_message"`
	// CatalogRate caps catalog MESSAGEs per second to this platform; 0 = as
	// fast as it answers.
	CatalogRate float64     `mapstructure:"catalog_rate"`
	Share       ShareConfig `mapstructure:"share"`
	// MediaAllow, when not empty, lists the networks (CIDR) this platform's
	// SDP may send our media to; anything else is refused so that a forged
	// INVITE can't turn the proxy into a traffic reflector.
	MediaAllow []string `mapstructure:"media_allow"`
	// AllowFrom lists networks (CIDR) besides the address's host that this
	// platform's requests may come from (several signalling nodes).
	AllowFrom        []string `mapstructure:"allow_from"`
	SignallingConfig `mapstructure:",squash"`
}

// ShareConfig says what one upper platform sees and under which IDs.
type ShareConfig struct {
	// All shares every channel; nil means "true unless a list is given".
	All      *bool    `mapstructure:"all" json:"all"`
	Devices  []string `mapstructure:"devices" json:"devices"`   // every channel of these devices
	Channels []string `mapstructure:"channels" json:"channels"` // these channels
	Groups   []string `mapstructure:"groups" json:"groups"`     // everything below these catalog nodes
	// Map renames local IDs for this platform: local ID -> ID the upper sees.
	Map map[string]string `mapstructure:"map" json:"map"`
	// Names renames channels for this platform: local ID -> name.
	Names map[string]string `mapstructure:"names" json:"names"`
}

// SharesAll reports whether everything is shared.
func (s ShareConfig) SharesAll() bool {
	if s.All != nil {
		return *s.All
	}
	return len(s.Devices) == 0 && len(s.Channels) == 0 && len(s.Groups) == 0
}

// Validate checks IDs and that the mapping is one-to-one; key prefixes the
// names it reports (upper.platforms[0].share).
func (s ShareConfig) Validate(key, proxyID string) []string {
	var errs []string
	bad := func(k, format string, a ...any) { errs = append(errs, k+": "+fmt.Sprintf(format, a...)) }
	for name, list := range map[string][]string{"devices": s.Devices, "channels": s.Channels, "groups": s.Groups} {
		for i, id := range list {
			if !validLocalID(id) {
				bad(fmt.Sprintf("%s.%s[%d]", key, name, i), "%q is not an 18-20 digit ID", id)
			}
		}
	}
	seen := map[string]string{}
	for local, mapped := range s.Map {
		if !validLocalID(local) {
			bad(key+".map", "key %q is not an 18-20 digit ID", local)
		}
		if !ValidID(mapped) {
			bad(key+".map."+local, "%q is not a 20-digit ID", mapped)
		}
		if mapped == proxyID {
			bad(key+".map."+local, "%q is this proxy's own id", mapped)
		}
		if other, dup := seen[mapped]; dup {
			bad(key+".map."+local, "%q is also the mapping of %s: an upper ID must name one channel", mapped, other)
		}
		seen[mapped] = local
	}
	for local := range s.Names {
		if !validLocalID(local) {
			bad(key+".names", "key %q is not an 18-20 digit ID", local)
		}
	}
	sort.Strings(errs) // map order must not change the message
	return errs
}

// validLocalID accepts the 18-digit IDs some older devices still use.
func validLocalID(id string) bool { return len(id) >= 18 && len(id) <= 20 && allDigits(id) }

type MediaConfig struct {
	PortMin int `mapstructure:"port_min"`
	PortMax int `mapstructure:"port_max"`
	// NoMediaTimeout ends a live session on both sides when its device has
	// sent nothing for this long.
	NoMediaTimeout time.Duration `mapstructure:"no_media_timeout"`
	// EndOfFileGrace is how long a playback or download whose device
	// reported the end of the file waits for the upper's BYE before the
	// proxy ends it on both sides.
	EndOfFileGrace time.Duration `mapstructure:"end_of_file_grace"`
	// MaxUDPPacket is the largest RTP packet sent whole toward a UDP
	// receiver; larger packets that came over TCP are split. Packets that
	// came over UDP are never split.
	MaxUDPPacket int `mapstructure:"max_udp_packet"`
}

// StreamModes are the values of lower.stream_mode.
var StreamModes = []string{"udp", "tcp-passive", "tcp-active"}

// DeviceStreamMode is how media is received from a listed device.
func (c *Config) DeviceStreamMode(d DeviceConfig) string {
	return cmp.Or(d.StreamMode, c.Lower.StreamMode)
}

type StoreConfig struct {
	Path string `mapstructure:"path"`
}

type HTTPConfig struct {
	Listen string `mapstructure:"listen"`
	// Token is the bearer token the admin API requires; mandatory when
	// Listen is not a loopback address.
	Token string `mapstructure:"token"`
}

// DeviceSignalling is the signalling digest toward a listed device: its
// own settings over lower's.
func (c *Config) DeviceSignalling(d DeviceConfig) SignallingConfig {
	return d.SignallingConfig.inherit(c.Lower.SignallingConfig)
}

// GatewayID is our Monitor-User-Identity segment.
func (c *Config) GatewayID() string { return cmp.Or(c.Security.GatewayID, c.ID) }

type LogConfig struct {
	Level  string `mapstructure:"level"`
	Format string `mapstructure:"format"`
}

// Load reads the embedded default, merges the file at path over it (none when
// path is empty), applies GBPROXY_* environment overrides, fills per-platform
// defaults and validates. Unknown keys are errors: a typo must not silently
// fall back to a default.
func Load(path string) (*Config, error) {
	var file []byte
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		file = b
	}
	return Parse(file)
}

// Parse is Load for a YAML document already in memory (nil: defaults only).
func Parse(yaml []byte) (*Config, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(Default)); err != nil {
		return nil, fmt.Errorf("embedded default config: %w", err)
	}
	if len(yaml) > 0 {
		if err := checkLongNumbers(yaml); err != nil {
			return nil, err
		}
		if err := v.MergeConfig(bytes.NewReader(yaml)); err != nil {
			return nil, fmt.Errorf("config is not valid YAML: %w", err)
		}
	}
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()

	var cfg Config
	err := v.UnmarshalExact(&cfg, viper.DecodeHook(decodeHook))
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg.applyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func (c *Config) applyDefaults() {
	for i := range c.Upper.Platforms {
		c.platformDefaults(&c.Upper.Platforms[i])
	}
	c.Lower.AuthAlgorithm = strings.ToUpper(c.Lower.AuthAlgorithm)
	c.Lower.StreamMode = strings.ToLower(c.Lower.StreamMode)
	c.Lower.BindSource = strings.ToLower(c.Lower.BindSource)
	c.Lower.SignallingConfig = c.Lower.SignallingConfig.normalize()
	for i := range c.Lower.Devices {
		deviceDefaults(&c.Lower.Devices[i])
	}
}

// platformDefaults fills what an upper.platforms[] entry leaves out.
func (c *Config) platformDefaults(p *PlatformConfig) {
	if p.Transport == "" {
		p.Transport = "udp"
	}
	p.Transport = strings.ToLower(p.Transport)
	if p.Username == "" {
		p.Username = c.ID
	}
	if p.Domain == "" && len(p.ID) >= 10 {
		p.Domain = p.ID[:10]
	}
	if p.Expires == 0 {
		p.Expires = 3600
	}
	if p.KeepaliveInterval == 0 {
		p.KeepaliveInterval = 60 * time.Second
	}
	if p.KeepaliveTimeoutCount == 0 {
		p.KeepaliveTimeoutCount = 3
	}
	if p.RetryInterval == 0 {
		p.RetryInterval = 60 * time.Second
	}
	p.Charset = strings.ToLower(p.Charset)
	if p.Charset == "" {
		p.Charset = "gb2312"
	}
	p.SignallingConfig = p.SignallingConfig.normalize().inherit(SignallingConfig{
		SignallingDigest: DigestOff, NoteAlgorithm: "MD5", NoteEncoding: "base64"})
}

func deviceDefaults(d *DeviceConfig) {
	d.StreamMode = strings.ToLower(d.StreamMode)
	d.SignallingConfig = d.SignallingConfig.normalize()
}

// normalize spells modes in lower case and algorithms in upper case.
func (s SignallingConfig) normalize() SignallingConfig {
	s.SignallingDigest = strings.ToLower(s.SignallingDigest)
	s.NoteAlgorithm = strings.ToUpper(s.NoteAlgorithm)
	s.NoteEncoding = strings.ToLower(s.NoteEncoding)
	return s
}

// validate checks one peer's effective signalling settings.
func (s SignallingConfig) validate(bad func(string, string, ...any), key string) {
	switch s.SignallingDigest {
	case DigestOff, DigestSend, DigestRequire:
	default:
		bad(field(key, "signalling_digest"), "%q is not off, send or require", s.SignallingDigest)
	}
	if !slices.Contains(NoteAlgorithms, s.NoteAlgorithm) {
		bad(field(key, "note_algorithm"), "%q is not one of %s", s.NoteAlgorithm, strings.Join(NoteAlgorithms, ", "))
	}
	if s.NoteEncoding != "base64" && s.NoteEncoding != "hex" {
		bad(field(key, "note_encoding"), "%q is not base64 or hex", s.NoteEncoding)
	}
	if s.Sends() && s.NoteSeed == "" {
		bad(field(key, "note_seed"), "must be set when signalling_digest is %s (both sides need the same seed)", s.SignallingDigest)
	}
}

// NoteAlgorithms are the Note digest algorithms gbproxy computes.
var NoteAlgorithms = []string{"MD5", "SHA-256", "SM3"}

// BindSources are the values of lower.bind_source.
var BindSources = []string{"ip", "ip-port", "off"}

// checkHA1 accepts an HA1 of the length auth_algorithm produces.
func checkHA1(bad func(string, string, ...any), key, ha1, algorithm string) {
	if ha1 == "" {
		return
	}
	want := 32
	if algorithm == "SHA-256" {
		want = 64
	}
	if _, err := hex.DecodeString(ha1); err != nil || len(ha1) != want {
		bad(key, "must be the %d hex digits of the %s HA1 of id:realm:password (auth_algorithm is %s)", want, algorithm, algorithm)
	}
}

// checkCIDRs validates a list of networks.
func checkCIDRs(bad func(string, string, ...any), key string, list []string) {
	for j, cidr := range list {
		if _, err := netip.ParsePrefix(cidr); err != nil {
			bad(fmt.Sprintf("%s[%d]", key, j), "%q is not a CIDR network (e.g. 10.1.0.0/16)", cidr)
		}
	}
}

// IsLoopback reports whether a host:port listens on loopback only.
func IsLoopback(hostPort string) bool {
	host, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// DefaultPassword is the embedded default's lower.password.
const DefaultPassword = "12345678"

// Warnings lists the open doors of a valid configuration, for the log at
// start-up: runnable, but not for a border.
func (c *Config) Warnings() []string {
	var w []string
	if c.Lower.AllowUnknown && c.Lower.Password == DefaultPassword && c.Lower.PasswordHA1 == "" {
		w = append(w, "lower.allow_unknown is true with the default lower.password: any device that knows the default can register; list devices in lower.devices and set allow_unknown: false")
	}
	if !IsLoopback(c.HTTP.Listen) {
		w = append(w, "admin API listens on "+c.HTTP.Listen+", beyond loopback: keep http.token secret and firewall the port to the operators' network")
	}
	if plain := c.Cluster.plainEtcd(); len(plain) > 0 {
		w = append(w, "cluster.etcd "+strings.Join(plain, ", ")+" is plain http beyond loopback: device passwords, the cluster's signing secret, ownership (and cluster.password) travel in the clear; use https:// with cluster.tls and an etcd user")
	}
	return w
}

var (
	gbID = regexp.MustCompile(`^[0-9]{20}$`)
	// Some older devices carry 18-digit codes; the registrar takes them.
	deviceID = regexp.MustCompile(`^[0-9]{18,20}$`)
)

// ValidID reports whether id is a 20-digit GB/T 28181 code.
func ValidID(id string) bool { return gbID.MatchString(id) }

// ValidDeviceID reports whether id may name a device that registers to
// us: 18 to 20 digits.
func ValidDeviceID(id string) bool { return deviceID.MatchString(id) }

// Validate names the first bad key it finds.
func (c *Config) Validate() error {
	var errs []string
	bad := func(key, format string, a ...any) {
		errs = append(errs, key+": "+fmt.Sprintf(format, a...))
	}
	if !ValidID(c.ID) {
		bad("id", "%q is not a 20-digit GB/T 28181 ID", c.ID)
	}
	if len(c.Domain) != 10 || !allDigits(c.Domain) {
		bad("domain", "%q is not a 10-digit SIP domain", c.Domain)
	}
	checkHostPort(bad, "lower.listen", c.Lower.Listen)
	checkHostPort(bad, "upper.listen", c.Upper.Listen)
	checkIP(bad, "lower.media_ip", c.Lower.MediaIP)
	checkIP(bad, "upper.media_ip", c.Upper.MediaIP)
	checkIP(bad, "lower.media_external_ip", c.Lower.MediaExternalIP)
	checkIP(bad, "upper.media_external_ip", c.Upper.MediaExternalIP)
	checkStreamMode(bad, "lower.stream_mode", c.Lower.StreamMode, false)
	if c.Lower.InviteTimeout <= 0 {
		bad("lower.invite_timeout", "must be positive")
	}
	if c.Media.NoMediaTimeout <= 0 {
		bad("media.no_media_timeout", "must be positive")
	}
	if c.Media.EndOfFileGrace <= 0 {
		bad("media.end_of_file_grace", "must be positive")
	}
	if c.Media.MaxUDPPacket < 256 || c.Media.MaxUDPPacket > 65507 {
		bad("media.max_udp_packet", "%d is out of range; use 256-65507 (1472 fits a 1,500-byte Ethernet MTU, 1452 over IPv6)", c.Media.MaxUDPPacket)
	}
	if !slices.Contains(BindSources, c.Lower.BindSource) {
		bad("lower.bind_source", "%q is not one of %s", c.Lower.BindSource, strings.Join(BindSources, ", "))
	}
	checkHA1(bad, "lower.password_ha1", c.Lower.PasswordHA1, c.Lower.AuthAlgorithm)
	c.Lower.SignallingConfig.validate(bad, "lower")
	if c.Lower.TLSListen != "" {
		checkHostPort(bad, "lower.tls_listen", c.Lower.TLSListen)
		if c.Lower.TLS.Cert == "" || c.Lower.TLS.Key == "" {
			bad("lower.tls", "cert and key are required with lower.tls_listen")
		}
		if c.Lower.TLS.RequireClientCert && c.Lower.TLS.ClientCA == "" {
			bad("lower.tls.client_ca", "is required with require_client_cert")
		}
	}
	seen := map[string]bool{}
	for i, d := range c.Lower.Devices {
		key := fmt.Sprintf("lower.devices[%d]", i)
		if seen[d.ID] {
			bad(key+".id", "%q is listed twice", d.ID)
		}
		seen[d.ID] = true
		c.checkDevice(bad, key, d)
	}
	if c.Lower.AuthAlgorithm != "MD5" && c.Lower.AuthAlgorithm != "SHA-256" {
		bad("lower.auth_algorithm", "%q is not MD5 or SHA-256", c.Lower.AuthAlgorithm)
	}
	if c.Lower.RegisterExpiresMin < 1 {
		bad("lower.register_expires_min", "must be at least 1 second")
	}
	if c.Lower.RegisterExpiresMax < c.Lower.RegisterExpiresMin {
		bad("lower.register_expires_max", "%d is below lower.register_expires_min %d", c.Lower.RegisterExpiresMax, c.Lower.RegisterExpiresMin)
	}
	if c.Lower.KeepaliveInterval <= 0 {
		bad("lower.keepalive_interval", "must be positive")
	}
	if c.Lower.KeepaliveTimeoutCount < 1 {
		bad("lower.keepalive_timeout_count", "must be at least 1")
	}
	if c.Lower.CatalogTimeout <= 0 {
		bad("lower.catalog_timeout", "must be positive")
	}
	if c.Lower.CatalogRefreshInterval < 0 {
		bad("lower.catalog_refresh_interval", "must not be negative")
	}
	if c.Lower.QueryTimeout <= 0 {
		bad("lower.query_timeout", "must be positive")
	}
	if c.Lower.SubscribeExpires < 60 {
		bad("lower.subscribe_expires", "%d is below 60 seconds", c.Lower.SubscribeExpires)
	}
	seen = map[string]bool{}
	for i, p := range c.Upper.Platforms {
		key := fmt.Sprintf("upper.platforms[%d]", i)
		if seen[p.ID] {
			bad(key+".id", "%q is listed twice", p.ID)
		}
		seen[p.ID] = true
		errs = append(errs, c.checkPlatform(key, p)...)
	}
	if c.Media.PortMin < 1024 || c.Media.PortMax > 65535 || c.Media.PortMin > c.Media.PortMax {
		bad("media.port_min", "range %d-%d is not within 1024-65535", c.Media.PortMin, c.Media.PortMax)
	}
	if c.Store.Path == "" {
		bad("store.path", "must not be empty")
	}
	if c.Upper.SubscribeExpiresMax < 60 {
		bad("upper.subscribe_expires_max", "%d is below 60 seconds", c.Upper.SubscribeExpiresMax)
	}
	if c.Upper.MaxSubscriptions < 1 {
		bad("upper.max_subscriptions", "must be at least 1")
	}
	checkHostPort(bad, "http.listen", c.HTTP.Listen)
	if c.HTTP.Token == "" && !IsLoopback(c.HTTP.Listen) {
		bad("http.token", "is required when http.listen (%s) is not a loopback address: the admin API can end sessions and change shares", c.HTTP.Listen)
	}
	c.Security.validate(bad)
	c.Cluster.validate(bad)
	switch c.Log.Format {
	case "console", "json", "journald":
	default:
		bad("log.format", "%q is not console, json or journald", c.Log.Format)
	}
	switch c.Log.Level {
	case "trace", "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not trace, debug, info, warn or error", c.Log.Level)
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid config: %s", strings.Join(errs, "; "))
	}
	return nil
}

// checkDevice validates one lower.devices[] entry; key prefixes the names
// it reports ("" for none).
func (c *Config) checkDevice(bad func(string, string, ...any), key string, d DeviceConfig) {
	if !ValidDeviceID(d.ID) {
		bad(field(key, "id"), "%q is not an 18- to 20-digit device ID", d.ID)
	}
	checkStreamMode(bad, field(key, "stream_mode"), d.StreamMode, true)
	checkHA1(bad, field(key, "password_ha1"), d.PasswordHA1, c.Lower.AuthAlgorithm)
	c.DeviceSignalling(d).validate(bad, key)
}

// checkPlatform validates one upper.platforms[] entry; key prefixes the
// names it reports ("" for none).
func (c *Config) checkPlatform(key string, p PlatformConfig) []string {
	var errs []string
	bad := func(k, format string, a ...any) { errs = append(errs, k+": "+fmt.Sprintf(format, a...)) }
	if !ValidID(p.ID) {
		bad(field(key, "id"), "%q is not a 20-digit ID", p.ID)
	}
	if p.ID == c.ID {
		bad(field(key, "id"), "is this proxy's own id")
	}
	if _, _, err := net.SplitHostPort(p.Address); err != nil {
		bad(field(key, "address"), "%q is not host:port", p.Address)
	}
	if p.Transport != "udp" && p.Transport != "tcp" && p.Transport != "tls" {
		bad(field(key, "transport"), "%q is not udp, tcp or tls", p.Transport)
	}
	if (p.TLS.Cert == "") != (p.TLS.Key == "") {
		bad(field(key, "tls"), "cert and key go together")
	}
	if p.PasswordHA1 != "" {
		if _, err := hex.DecodeString(p.PasswordHA1); err != nil || (len(p.PasswordHA1) != 32 && len(p.PasswordHA1) != 64) {
			bad(field(key, "password_ha1"), "must be 32 (MD5) or 64 (SHA-256) hex digits")
		}
	}
	checkCIDRs(bad, field(key, "allow_from"), p.AllowFrom)
	p.SignallingConfig.validate(bad, key)
	if p.Expires < 60 {
		bad(field(key, "expires"), "%d is below 60 seconds", p.Expires)
	}
	if p.KeepaliveInterval < 0 {
		bad(field(key, "keepalive_interval"), "must not be negative")
	}
	if p.RetryInterval < 0 {
		bad(field(key, "retry_interval"), "must not be negative")
	}
	if p.KeepaliveTimeoutCount < 1 {
		bad(field(key, "keepalive_timeout_count"), "must be at least 1")
	}
	if p.Charset != "gb2312" && p.Charset != "utf-8" {
		bad(field(key, "charset"), "%q is not gb2312 or utf-8", p.Charset)
	}
	if p.CatalogItemsPerMessage < 0 {
		bad(field(key, "catalog_items_per_message"), "must not be negative")
	}
	if p.CatalogRate < 0 {
		bad(field(key, "catalog_rate"), "must not be negative")
	}
	checkCIDRs(bad, field(key, "media_allow"), p.MediaAllow)
	return append(errs, p.Share.Validate(field(key, "share"), c.ID)...)
}

// field is key.name, or name alone when key is "" (an API body is one entry).
func field(key, name string) string {
	if key == "" {
		return name
	}
	return key + "." + name
}

func (s SecurityConfig) validate(bad func(string, string, ...any)) {
	if s.GatewayID != "" && !ValidID(s.GatewayID) {
		bad("security.gateway_id", "%q is not a 20-digit ID", s.GatewayID)
	}
	if s.MaxHops < 1 {
		bad("security.max_hops", "must be at least 1")
	}
	if s.DateWindow <= 0 {
		bad("security.date_window", "must be positive")
	}
	if s.UnauthenticatedRate <= 0 || s.UnauthenticatedBurst < 1 {
		bad("security.unauthenticated_rate", "rate must be positive and unauthenticated_burst at least 1")
	}
	if s.TCPIdleTimeout <= 0 {
		bad("security.tcp_idle_timeout", "must be positive")
	}
	if s.MaxConnsPerIP < 1 || s.MaxConns < 0 {
		bad("security.max_conns_per_ip", "must be at least 1 (and max_conns not negative)")
	}
	l := s.Lockout
	if l.MaxFailures < 1 || l.MaxFailuresPerIP < 1 || l.MaxFailuresPerID < 1 || l.Window <= 0 || l.LockFor <= 0 {
		bad("security.lockout", "max_failures, max_failures_per_ip, max_failures_per_id, window and lock_for must be positive")
	}
}

// checkLongNumbers refuses unquoted 18-20 digit numbers: YAML reads them as
// floats, and an unquoted ID as a map key would silently lose its last
// digits.
func checkLongNumbers(doc []byte) error {
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil {
		return fmt.Errorf("config is not valid YAML: %w", err)
	}
	var walk func(n *yaml.Node) error
	walk = func(n *yaml.Node) error {
		if n.Kind == yaml.ScalarNode && (n.Tag == "!!int" || n.Tag == "!!float") && len(strings.TrimLeft(n.Value, "+-")) >= 16 {
			return fmt.Errorf("config line %d: %s must be quoted (\"%s\"): YAML reads long numbers as floats and loses digits", n.Line, n.Value, n.Value)
		}
		for _, c := range n.Content {
			if err := walk(c); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(&root)
}

func checkHostPort(bad func(string, string, ...any), key, v string) {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		bad(key, "%q is not host:port", v)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		bad(key, "port %q is not 0-65535", port)
	}
	if host != "" && net.ParseIP(host) == nil {
		bad(key, "host %q is not an IP address", host)
	}
}

func checkStreamMode(bad func(string, string, ...any), key, v string, emptyOK bool) {
	if (v == "" && emptyOK) || slices.Contains(StreamModes, v) {
		return
	}
	bad(key, "%q is not one of %s", v, strings.Join(StreamModes, ", "))
}

func checkIP(bad func(string, string, ...any), key, v string) {
	if v != "" && net.ParseIP(v) == nil {
		bad(key, "%q is not an IP address", v)
	}
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
