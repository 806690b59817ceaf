// Package configs holds gbproxy's embedded default configuration and the typed
// configuration every other package reads. Viper is used once, at load time:
// it is not safe for concurrent use, so the rest of the program only sees the
// immutable Config value.
package configs

import (
	"bytes"
	_ "embed"
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

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

//go:embed default.yaml
var Default []byte

// EnvPrefix prefixes every environment override: GBPROXY_LOWER_LISTEN.
const EnvPrefix = "GBPROXY"

type Config struct {
	ID     string      `mapstructure:"id"`
	Domain string      `mapstructure:"domain"`
	Lower  LowerConfig `mapstructure:"lower"`
	Upper  UpperConfig `mapstructure:"upper"`
	Media  MediaConfig `mapstructure:"media"`
	Store  StoreConfig `mapstructure:"store"`
	HTTP   HTTPConfig  `mapstructure:"http"`
	Log    LogConfig   `mapstructure:"log"`
}

type LowerConfig struct {
	Listen                string         `mapstructure:"listen"`
	MediaIP               string         `mapstructure:"media_ip"`
	Password              string         `mapstructure:"password"`
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
	ID       string `mapstructure:"id"`
	Password string `mapstructure:"password"`
	// StreamMode overrides lower.stream_mode for this device ("" = inherit).
	StreamMode string `mapstructure:"stream_mode"`
}

type UpperConfig struct {
	Listen  string `mapstructure:"listen"`
	MediaIP string `mapstructure:"media_ip"`
	// MediaExternalIP is announced in SDP toward upper platforms instead of
	// the bind address (NAT); "" announces media_ip.
	MediaExternalIP string           `mapstructure:"media_external_ip"`
	Platforms       []PlatformConfig `mapstructure:"platforms"`
}

// PlatformConfig is one upper platform gbproxy registers to as a lower platform.
type PlatformConfig struct {
	ID                    string        `mapstructure:"id"`
	Domain                string        `mapstructure:"domain"`
	Address               string        `mapstructure:"address"`
	Transport             string        `mapstructure:"transport"`
	Username              string        `mapstructure:"username"`
	Password              string        `mapstructure:"password"`
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
}

// StreamModes are the values of lower.stream_mode.
var StreamModes = []string{"udp", "tcp-passive", "tcp-active"}

// DeviceStreamMode is how media is received from device id.
func (c *Config) DeviceStreamMode(id string) string {
	for _, d := range c.Lower.Devices {
		if d.ID == id && d.StreamMode != "" {
			return d.StreamMode
		}
	}
	return c.Lower.StreamMode
}

type StoreConfig struct {
	Path string `mapstructure:"path"`
}

type HTTPConfig struct {
	Listen string `mapstructure:"listen"`
}

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
	err := v.UnmarshalExact(&cfg, viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		mapstructure.StringToTimeDurationHookFunc(),
		mapstructure.StringToSliceHookFunc(","),
	)))
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
		p := &c.Upper.Platforms[i]
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
	}
	c.Lower.AuthAlgorithm = strings.ToUpper(c.Lower.AuthAlgorithm)
	c.Lower.StreamMode = strings.ToLower(c.Lower.StreamMode)
	for i := range c.Lower.Devices {
		c.Lower.Devices[i].StreamMode = strings.ToLower(c.Lower.Devices[i].StreamMode)
	}
}

var gbID = regexp.MustCompile(`^[0-9]{20}$`)

// ValidID reports whether id is a 20-digit GB/T 28181 code.
func ValidID(id string) bool { return gbID.MatchString(id) }

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
	seen := map[string]bool{}
	for i, d := range c.Lower.Devices {
		key := fmt.Sprintf("lower.devices[%d].id", i)
		if !ValidID(d.ID) {
			bad(key, "%q is not a 20-digit ID", d.ID)
		}
		if seen[d.ID] {
			bad(key, "%q is listed twice", d.ID)
		}
		seen[d.ID] = true
		checkStreamMode(bad, fmt.Sprintf("lower.devices[%d].stream_mode", i), d.StreamMode, true)
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
		if !ValidID(p.ID) {
			bad(key+".id", "%q is not a 20-digit ID", p.ID)
		}
		if seen[p.ID] {
			bad(key+".id", "%q is listed twice", p.ID)
		}
		seen[p.ID] = true
		if p.ID == c.ID {
			bad(key+".id", "is this proxy's own id")
		}
		if _, _, err := net.SplitHostPort(p.Address); err != nil {
			bad(key+".address", "%q is not host:port", p.Address)
		}
		if p.Transport != "udp" && p.Transport != "tcp" {
			bad(key+".transport", "%q is not udp or tcp", p.Transport)
		}
		if p.Expires < 60 {
			bad(key+".expires", "%d is below 60 seconds", p.Expires)
		}
		if p.KeepaliveInterval < 0 || p.RetryInterval < 0 {
			bad(key, "keepalive_interval and retry_interval must not be negative")
		}
		if p.KeepaliveTimeoutCount < 1 {
			bad(key+".keepalive_timeout_count", "must be at least 1")
		}
		if p.Charset != "gb2312" && p.Charset != "utf-8" {
			bad(key+".charset", "%q is not gb2312 or utf-8", p.Charset)
		}
		if p.CatalogItemsPerMessage < 0 {
			bad(key+".catalog_items_per_message", "must not be negative")
		}
		if p.CatalogRate < 0 {
			bad(key+".catalog_rate", "must not be negative")
		}
		for j, cidr := range p.MediaAllow {
			if _, err := netip.ParsePrefix(cidr); err != nil {
				bad(fmt.Sprintf("%s.media_allow[%d]", key, j), "%q is not a CIDR network (e.g. 10.1.0.0/16)", cidr)
			}
		}
		errs = append(errs, p.Share.Validate(key+".share", c.ID)...)
	}
	if c.Media.PortMin < 1024 || c.Media.PortMax > 65535 || c.Media.PortMin > c.Media.PortMax {
		bad("media.port_min", "range %d-%d is not within 1024-65535", c.Media.PortMin, c.Media.PortMax)
	}
	if c.Store.Path == "" {
		bad("store.path", "must not be empty")
	}
	checkHostPort(bad, "http.listen", c.HTTP.Listen)
	switch c.Log.Format {
	case "console", "json":
	default:
		bad("log.format", "%q is not console or json", c.Log.Format)
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
