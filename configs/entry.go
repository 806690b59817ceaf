package configs

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
)

// decodeHook turns the config file's strings into typed values: the file
// loader and the entry decoders share it.
var decodeHook = mapstructure.ComposeDecodeHookFunc(
	mapstructure.StringToTimeDurationHookFunc(),
	mapstructure.StringToSliceHookFunc(","),
)

// ParsePlatform decodes one upper.platforms[] entry written with the config
// file's keys (an API body, a stored entry), fills the defaults Load fills
// and validates it as Load does. Errors name the field: "address: ...".
func (c *Config) ParsePlatform(raw map[string]any) (PlatformConfig, error) {
	var p PlatformConfig
	if err := decodeEntry(raw, &p); err != nil {
		return p, err
	}
	c.platformDefaults(&p)
	if errs := c.checkPlatform("", p); len(errs) > 0 {
		return p, errors.New(strings.Join(errs, "; "))
	}
	return p, nil
}

// ParseDevice is ParsePlatform for a lower.devices[] entry.
func (c *Config) ParseDevice(raw map[string]any) (DeviceConfig, error) {
	var d DeviceConfig
	if err := decodeEntry(raw, &d); err != nil {
		return d, err
	}
	deviceDefaults(&d)
	var errs []string
	c.checkDevice(func(k, format string, a ...any) { errs = append(errs, k+": "+fmt.Sprintf(format, a...)) }, "", d)
	if len(errs) > 0 {
		return d, errors.New(strings.Join(errs, "; "))
	}
	return d, nil
}

// decodeEntry decodes raw into out as Load decodes the file; an unknown
// key is an error naming it.
func decodeEntry(raw map[string]any, out any) error {
	var md mapstructure.Metadata
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Result: out, Metadata: &md, WeaklyTypedInput: true, DecodeHook: decodeHook,
	})
	if err != nil {
		return err
	}
	if err := dec.Decode(raw); err != nil {
		var de *mapstructure.DecodeError
		if errors.As(err, &de) {
			return fmt.Errorf("%s: %w", de.Name(), de.Unwrap())
		}
		return err
	}
	if len(md.Unused) > 0 {
		slices.Sort(md.Unused)
		return fmt.Errorf("%s: unknown key", md.Unused[0])
	}
	return nil
}

// EntryMap is an entry (PlatformConfig, DeviceConfig) with the config
// file's keys and durations as strings ("60s"): what ParsePlatform and
// ParseDevice read back.
func EntryMap(entry any) map[string]any {
	m := map[string]any{}
	_ = mapstructure.Decode(entry, &m) // a struct of ours into a map: cannot fail
	durationsAsStrings(m)
	return m
}

func durationsAsStrings(m map[string]any) {
	for k, v := range m {
		switch v := v.(type) {
		case time.Duration:
			m[k] = v.String()
		case map[string]any:
			durationsAsStrings(v)
		}
	}
}

// ChangedKeys lists the config-file names (dotted: "tls.ca") of the keys
// whose values differ between a and b, two values of one config type.
// Values never appear: the list is fit for logs whatever the secrets.
func ChangedKeys(a, b any) []string {
	var out []string
	diffMaps("", EntryMap(a), EntryMap(b), &out)
	slices.Sort(out)
	return out
}

func diffMaps(prefix string, a, b map[string]any, out *[]string) {
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	for k := range keys {
		am, aMap := a[k].(map[string]any)
		bm, bMap := b[k].(map[string]any)
		switch {
		case aMap && bMap:
			diffMaps(field(prefix, k), am, bm, out)
		case !sameValue(a[k], b[k]):
			*out = append(*out, field(prefix, k))
		}
	}
}

// sameValue is reflect.DeepEqual with nil and empty lists and maps equal
// (a file that omits a list and a body that sends [] say the same).
func sameValue(a, b any) bool {
	if reflect.DeepEqual(a, b) {
		return true
	}
	return isEmpty(a) && isEmpty(b)
}

func isEmpty(v any) bool {
	r := reflect.ValueOf(v)
	switch r.Kind() {
	case reflect.Invalid:
		return true
	case reflect.Slice, reflect.Map:
		return r.Len() == 0
	case reflect.Pointer:
		return r.IsNil()
	}
	return false
}

// RestartKeys lists the keys that differ between two configurations
// besides upper.platforms and lower.devices: what a reload cannot apply.
func RestartKeys(old, next *Config) []string {
	a, b := *old, *next
	a.Upper.Platforms, b.Upper.Platforms = nil, nil
	a.Lower.Devices, b.Lower.Devices = nil, nil
	return ChangedKeys(a, b)
}
