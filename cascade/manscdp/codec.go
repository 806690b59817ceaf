package manscdp

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"sync"

	"golang.org/x/text/encoding/simplifiedchinese"
)

// MaxDepth is the deepest element nesting Decode accepts. Real bodies nest about five
// levels; the limit keeps hostile input from exhausting the stack.
const MaxDepth = 64

// Decode decodes a body in any supported charset into v, a pointer to a typed message of
// this package, a struct shaped like one, or a Message. The root element's name is not
// checked: the same struct serves a Response and a Notify. Unknown children go to the
// struct's ",any" field if it has one and are dropped otherwise.
func Decode(body []byte, v any) error {
	doc, err := utf8Document(body)
	if err != nil {
		return err
	}
	raw := xml.NewDecoder(bytes.NewReader(doc))
	raw.Strict = false
	raw.CharsetReader = alreadyUTF8
	d := xml.NewTokenDecoder(&tokenFilter{src: raw, names: vocabularyOf(v)})
	d.Strict = false
	if err := d.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("manscdp: body has no XML root element")
		}
		return fmt.Errorf("manscdp: decode %T: %w", v, err)
	}
	return nil
}

// alreadyUTF8 satisfies encoding/xml for declared charsets: utf8Document has converted the
// body to UTF-8 already, whatever the declaration says.
func alreadyUTF8(_ string, r io.Reader) (io.Reader, error) { return r, nil }

// Encode writes the XML declaration for cs and v marshalled as the root element root
// (Query, Response, Notify or Control, matched case-insensitively), encoded in cs. The
// body is compact, without indentation, to keep MESSAGEs small for UDP.
func Encode(root string, v any, cs Charset) ([]byte, error) {
	name := rootName([]byte(root))
	switch name {
	case RootQuery, RootResponse, RootNotify, RootControl:
	default:
		return nil, fmt.Errorf("manscdp: root element %q is not Query, Response, Notify or Control", root)
	}
	cs, err := ParseCharset(string(cs))
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.WriteString(cs.declaration())
	if err := xml.NewEncoder(&buf).EncodeElement(v, xml.StartElement{Name: xml.Name{Local: name}}); err != nil {
		return nil, fmt.Errorf("manscdp: encode %T: %w", v, err)
	}
	if cs == CharsetUTF8 {
		return buf.Bytes(), nil
	}
	// GB18030 encodes every character: GB2312 ones as GB2312 bytes, the rest as GB18030.
	out, err := simplifiedchinese.GB18030.NewEncoder().Bytes(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("manscdp: encode %T as GB2312: %w", v, err)
	}
	return out, nil
}

// tokenFilter feeds raw tokens to the decoder, bounding the nesting depth, keeping
// namespace prefixes as part of the names (MANSCDP has no namespaces, and encoding/xml
// cannot re-encode prefixed names faithfully) and renaming elements whose names match the
// target type's element names only case-insensitively.
type tokenFilter struct {
	src   *xml.Decoder
	names map[string]string // exact or lower-case element name → name in the struct tags
	depth int
}

func (f *tokenFilter) Token() (xml.Token, error) {
	t, err := f.src.RawToken()
	switch el := t.(type) {
	case xml.StartElement:
		f.depth++
		if f.depth > MaxDepth {
			return nil, fmt.Errorf("elements nested deeper than %d", MaxDepth)
		}
		el.Name = xml.Name{Local: f.canonical(prefixed(el.Name))}
		for i := range el.Attr {
			el.Attr[i].Name = xml.Name{Local: prefixed(el.Attr[i].Name)}
		}
		return el, err
	case xml.EndElement:
		f.depth--
		el.Name = xml.Name{Local: f.canonical(prefixed(el.Name))}
		return el, err
	}
	return t, err
}

// prefixed returns a raw token's name as written: RawToken leaves the prefix in Space.
func prefixed(n xml.Name) string {
	if n.Space == "" {
		return n.Local
	}
	return n.Space + ":" + n.Local
}

func (f *tokenFilter) canonical(name string) string {
	if len(f.names) == 0 {
		return name
	}
	if c, ok := f.names[name]; ok {
		return c
	}
	var buf [64]byte
	if len(name) > len(buf) {
		return name
	}
	lower := buf[:len(name)]
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	if c, ok := f.names[string(lower)]; ok {
		return c
	}
	return name
}

var vocabularies sync.Map // reflect.Type → map[string]string

// vocabularyOf returns the element names that v's type decodes, keyed by themselves and by
// their lower-case form. Where two names differ only in case, lower-case input maps to the
// one declared first; exact matches are never renamed.
func vocabularyOf(v any) map[string]string {
	t := reflect.TypeOf(v)
	if names, ok := vocabularies.Load(t); ok {
		return names.(map[string]string)
	}
	declared := collectNames(t, nil, map[reflect.Type]bool{})
	names := make(map[string]string, 2*len(declared))
	for _, name := range declared {
		names[name] = name
	}
	for _, name := range declared {
		if lower := strings.ToLower(name); names[lower] == "" {
			names[lower] = name
		}
	}
	vocabularies.Store(t, names)
	return names
}

// collectNames appends the element names in t's struct tags, in declaration order.
func collectNames(t reflect.Type, names []string, seen map[reflect.Type]bool) []string {
	for t != nil && (t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct || seen[t] {
		return names
	}
	seen[t] = true
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("xml")
		if f.Name == "XMLName" || tag == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			names = collectNames(f.Type, names, seen)
			continue
		}
		if hasAnyOption(opts, "attr", "chardata", "cdata", "innerxml", "comment", "any") {
			continue
		}
		if name == "" {
			name = f.Name
		}
		names = append(names, strings.Split(name, ">")...)
		names = collectNames(f.Type, names, seen)
	}
	return names
}

func hasAnyOption(opts string, wanted ...string) bool {
	for opt := range strings.SplitSeq(opts, ",") {
		if slices.Contains(wanted, opt) {
			return true
		}
	}
	return false
}
