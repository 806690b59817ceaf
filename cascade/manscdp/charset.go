package manscdp

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding/simplifiedchinese"
)

// Charset is the character set of an encoded body.
type Charset string

const (
	CharsetGB2312 Charset = "gb2312"
	CharsetUTF8   Charset = "utf-8"
)

// ParseCharset maps a charset label (from configuration or an XML declaration) to the
// charset gbproxy writes: GB2312, GBK and GB18030 all become CharsetGB2312.
func ParseCharset(label string) (Charset, error) {
	switch strings.ToLower(strings.TrimSpace(label)) {
	case "gb2312", "gbk", "gb18030":
		return CharsetGB2312, nil
	case "utf-8", "utf8":
		return CharsetUTF8, nil
	}
	return "", fmt.Errorf("manscdp: unsupported charset %q: use gb2312 or utf-8", label)
}

var utf8BOM = []byte("\xef\xbb\xbf")

// declaration is the XML declaration Encode writes for a charset.
func (cs Charset) declaration() string {
	if cs == CharsetUTF8 {
		return `<?xml version="1.0" encoding="UTF-8"?>` + "\r\n"
	}
	return `<?xml version="1.0" encoding="GB2312"?>` + "\r\n"
}

// utf8Document returns the body without a leading BOM or whitespace and without anything
// after its root element, converted to UTF-8 according to the package's charset policy.
func utf8Document(body []byte) ([]byte, error) {
	doc := trimXMLSpace(bytes.TrimPrefix(bytes.TrimLeft(body, " \t\r\n"), utf8BOM))
	if start, name, ok := findRoot(doc); ok {
		doc = cutAfterRoot(doc, start, name)
	}
	if utf8.Valid(doc) {
		return doc, nil
	}
	if label := declaredEncoding(doc); label != "" {
		if _, err := ParseCharset(label); err != nil {
			return nil, fmt.Errorf("manscdp: body is not UTF-8 and declares encoding %q; only GB2312/GBK/GB18030 and UTF-8 are supported", label)
		}
	}
	// The GB18030 decoder replaces invalid sequences with U+FFFD instead of failing.
	out, err := simplifiedchinese.GB18030.NewDecoder().Bytes(doc)
	if err != nil {
		return nil, fmt.Errorf("manscdp: decode body as GB18030: %w", err)
	}
	return out, nil
}

// cutAfterRoot returns doc up to the end tag of the root element that starts at rootStart,
// so that trailing NULs or garbage neither fail the UTF-8 check nor get transcoded. Without
// an end tag (self-closing or truncated root) doc is returned whole.
func cutAfterRoot(doc []byte, rootStart int, name []byte) []byte {
	for end := len(doc); ; {
		i := bytes.LastIndex(doc[rootStart:end], name)
		if i < 2 {
			return doc
		}
		i += rootStart
		after := doc[i+len(name):]
		if doc[i-2] == '<' && doc[i-1] == '/' {
			if gt := bytes.IndexByte(after, '>'); gt >= 0 && isXMLSpace(after[:gt]) {
				return doc[:i+len(name)+gt+1]
			}
		}
		end = i
	}
}

// findRoot returns the offset of the root element's '<' and its name. It skips a BOM,
// text, the XML declaration, processing instructions, comments and a DOCTYPE.
func findRoot(b []byte) (start int, name []byte, ok bool) {
	for i := 0; i < len(b); {
		lt := bytes.IndexByte(b[i:], '<')
		if lt < 0 {
			return 0, nil, false
		}
		i += lt
		if n := skipNonElement(b[i:]); n != 0 {
			if n < 0 {
				return 0, nil, false
			}
			i += n
			continue
		}
		name := elementName(b[i+1:])
		if len(name) == 0 {
			return 0, nil, false
		}
		return i, name, true
	}
	return 0, nil, false
}

// skipNonElement returns the length of the comment, CDATA section, processing instruction
// or declaration that b starts with, 0 if b starts an element or end tag, and -1 if the
// markup is not terminated.
func skipNonElement(b []byte) int {
	var end string
	switch {
	case bytes.HasPrefix(b, []byte("<!--")):
		end = "-->"
	case bytes.HasPrefix(b, []byte("<![CDATA[")):
		end = "]]>"
	case bytes.HasPrefix(b, []byte("<?")):
		end = "?>"
	case bytes.HasPrefix(b, []byte("<!")):
		end = ">"
	default:
		return 0
	}
	i := bytes.Index(b[2:], []byte(end))
	if i < 0 {
		return -1
	}
	return 2 + i + len(end)
}

// elementName returns the tag name at the start of b (just after '<').
func elementName(b []byte) []byte {
	for i, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n', '>', '/', '<', '=', '"', '\'':
			return b[:i]
		}
	}
	return b
}

// declaredEncoding returns the encoding named by the XML declaration that doc starts with,
// or "" if there is none.
func declaredEncoding(doc []byte) string {
	d := parseDeclaration(doc)
	if d.encStart < 0 {
		return ""
	}
	return string(doc[d.encStart:d.encEnd])
}

// xmlDeclaration locates the parts of the XML declaration a document starts with.
type xmlDeclaration struct {
	end              int // offset just after "?>"; 0 without a declaration
	versionEnd       int // offset just after the version value's closing quote (or "<?xml")
	encStart, encEnd int // the encoding value without quotes; -1, -1 when there is none
}

func parseDeclaration(doc []byte) xmlDeclaration {
	d := xmlDeclaration{encStart: -1, encEnd: -1}
	const open = "<?xml"
	if !bytes.HasPrefix(doc, []byte(open)) {
		return d
	}
	end := bytes.Index(doc, []byte("?>"))
	if end < 0 {
		return d
	}
	d.end, d.versionEnd = end+2, len(open)
	if _, valueEnd, ok := pseudoAttribute(doc[:end], "version"); ok {
		d.versionEnd = valueEnd + 1
	}
	if start, valueEnd, ok := pseudoAttribute(doc[:end], "encoding"); ok {
		d.encStart, d.encEnd = start, valueEnd
	}
	return d
}

// pseudoAttribute returns the span of the quoted value of name="value" in decl.
func pseudoAttribute(decl []byte, name string) (start, end int, ok bool) {
	i := bytes.Index(decl, []byte(name))
	if i < 0 {
		return 0, 0, false
	}
	i += len(name)
	for i < len(decl) && isSpaceByte(decl[i]) {
		i++
	}
	if i == len(decl) || decl[i] != '=' {
		return 0, 0, false
	}
	for i++; i < len(decl) && isSpaceByte(decl[i]); i++ {
	}
	if i == len(decl) || (decl[i] != '"' && decl[i] != '\'') {
		return 0, 0, false
	}
	n := bytes.IndexByte(decl[i+1:], decl[i])
	if n < 0 {
		return 0, 0, false
	}
	return i + 1, i + 1 + n, true
}

func isXMLSpace[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		if !isSpaceByte(s[i]) {
			return false
		}
	}
	return true
}

func trimXMLSpace[T string | []byte](s T) T {
	start, end := 0, len(s)
	for start < end && isSpaceByte(s[start]) {
		start++
	}
	for end > start && isSpaceByte(s[end-1]) {
		end--
	}
	return s[start:end]
}

func isSpaceByte(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
