package manscdp

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding/simplifiedchinese"
)

// Rewrite and Convert edit bodies as bytes, without decoding the document, because the
// proxy forwards thousands of them a second and must keep whatever it does not change
// byte for byte.
//
// Scanning the raw bytes for markup is sound in every supported charset. Markup is ASCII.
// UTF-8 uses only bytes 0x80 and above inside multi-byte characters. GB2312 uses
// 0xA1–0xFE for both bytes of a character; GBK's lead byte is 0x81–0xFE and its trail
// byte 0x40–0x7E or 0x80–0xFE; GB18030's four-byte characters have the digits 0x30–0x39
// as second and fourth byte and 0x81–0xFE as first and third. So no byte of a Chinese
// character is below 0x30, nor is 0x3A–0x3F: '<' (0x3C), '>', '/', '!', '?', '-', '=',
// '&', quotes and whitespace always are what they look like. ']' (0x5D) and ASCII letters
// can be GBK trail bytes; names are only read right after a real '<', and the end of a
// CDATA section is searched character by character in GB bodies (indexGB). This holds
// for valid GB18030; in invalid sequences golang.org/x/text's decoder, which Decode and
// Convert use, may take a lead byte and the next three bytes for one character even when
// the second is one of ":;<=>?", so a malformed GB body can read differently decoded.

// idElements are the elements whose text Rewrite passes through mapID, at any depth.
var idElements = [...][]byte{[]byte("DeviceID"), []byte("ParentID"), []byte("BusinessGroupID")}

// Rewrite returns a copy of body for forwarding: when sn >= 0 the text of the root's SN
// child becomes sn (an SN is added after CmdType if there is none); the text of every
// DeviceID, ParentID and BusinessGroupID element, at any depth, becomes mapID(text) where
// mapID reports ok (mapID may be nil); and the body is converted to cs as Convert does, or
// left in its charset when cs is "". Element names match case-insensitively, IDs are
// passed to mapID trimmed, with entities resolved, in UTF-8. An ID element with child
// elements is left alone. Everything else stays byte-identical. Malformed markup, a root
// element that is not closed and an unsupported charset are errors.
func Rewrite(body []byte, sn int64, mapID func(id string) (string, bool), cs Charset) ([]byte, error) {
	if cs != "" {
		var err error
		if cs, err = ParseCharset(string(cs)); err != nil {
			return nil, err
		}
	}
	doc, gb, _, err := convert(body, cs)
	if err != nil {
		return nil, err
	}
	return rewriteElements(doc, sn, mapID, gb)
}

// Convert returns a copy of body in charset cs. A body whose characters are already in cs
// keeps its bytes; only an encoding declaration naming another charset is corrected (an
// ASCII body is in every charset, so only its declaration can change). Otherwise the body
// is transcoded and its declaration's encoding set to cs, or a declaration added. A body
// that changes loses any BOM and whitespace before its declaration. The body's charset is
// decided as Decode decides it (see the package documentation).
func Convert(body []byte, cs Charset) ([]byte, error) {
	cs, err := ParseCharset(string(cs))
	if err != nil {
		return nil, err
	}
	out, _, changed, err := convert(body, cs)
	if err != nil {
		return nil, err
	}
	if !changed {
		return bytes.Clone(body), nil
	}
	return out, nil
}

// convert implements Convert for a parsed charset, or detects the charset only when cs is
// "". It returns body itself when nothing changes, and whether the result is GB-encoded.
func convert(body []byte, cs Charset) (out []byte, gb, changed bool, err error) {
	rest := bytes.TrimLeft(bytes.TrimPrefix(bytes.TrimLeft(body, " \t\r\n"), utf8BOM), " \t\r\n")
	start, name, ok := findRoot(rest)
	if !ok {
		return nil, false, false, errors.New("manscdp: body has no XML root element")
	}
	doc := cutAfterRoot(rest, start, name)
	isUTF8, ascii := utf8.Valid(doc), isASCII(doc)
	label := declaredEncoding(doc)
	declared, labelErr := ParseCharset(label)
	if !isUTF8 && label != "" && labelErr != nil {
		return nil, false, false, fmt.Errorf("manscdp: body is not UTF-8 and declares encoding %q; only GB2312/GBK/GB18030 and UTF-8 are supported", label)
	}
	actual := CharsetUTF8
	if !isUTF8 {
		actual = CharsetGB2312
	}
	switch {
	case cs == "":
		return body, actual == CharsetGB2312, false, nil
	case ascii || actual == cs:
		if label == "" || (labelErr == nil && declared == cs) {
			return body, cs == CharsetGB2312, false, nil
		}
		decl := parseDeclaration(rest)
		return slices.Concat(rest[:decl.encStart], []byte(cs.label()), rest[decl.encEnd:]), cs == CharsetGB2312, true, nil
	}
	// All of rest, not just doc: doc ends at the last end tag named like the root, which
	// in a body with mismatched tags is not where the elements end.
	out, err = transcode(rest, actual, cs)
	return out, cs == CharsetGB2312, true, err
}

// transcode converts a body without BOM or leading whitespace from charset from to
// charset to, setting or adding the declaration's encoding.
func transcode(body []byte, from, to Charset) ([]byte, error) {
	decl := parseDeclaration(body)
	var head []byte
	switch {
	case decl.end == 0:
		head = []byte(to.declaration())
	case decl.encStart >= 0:
		head = slices.Concat(body[:decl.encStart], []byte(to.label()), body[decl.encEnd:decl.end])
	default:
		head = slices.Concat(body[:decl.versionEnd], []byte(` encoding="`+to.label()+`"`), body[decl.versionEnd:decl.end])
	}
	var converted []byte
	var err error
	if from == CharsetGB2312 {
		// The GB18030 decoder replaces invalid sequences with U+FFFD instead of failing.
		converted, err = simplifiedchinese.GB18030.NewDecoder().Bytes(body[decl.end:])
	} else {
		// Invalid UTF-8 is encoded as U+FFFD, which GB18030 has.
		converted, err = simplifiedchinese.GB18030.NewEncoder().Bytes(body[decl.end:])
	}
	if err != nil {
		return nil, fmt.Errorf("manscdp: convert body from %s to %s: %w", from, to, err)
	}
	return append(head, converted...), nil
}

// label is the name Encode and Convert write in the declaration.
func (cs Charset) label() string {
	if cs == CharsetUTF8 {
		return "UTF-8"
	}
	return "GB2312"
}

// rewriter copies src to out lazily: replace appends what lies between the last edit and
// the next one, then the replacement.
type rewriter struct {
	src  []byte
	out  []byte
	last int // src offset up to which out is complete
	gb   bool
}

func (r *rewriter) flush(to int) {
	r.out = append(r.out, r.src[r.last:to]...)
	r.last = to
}

func (r *rewriter) replace(from, to int, with []byte) {
	r.flush(from)
	r.out = append(r.out, with...)
	r.last = to
}

var errNotClosed = errors.New("manscdp: root element is not closed (truncated body?)")

// rewriteElements does Rewrite's element edits on a body in its final charset.
func rewriteElements(src []byte, sn int64, mapID func(string) (string, bool), gb bool) ([]byte, error) {
	rootStart, _, ok := findRoot(src)
	if !ok {
		return nil, errors.New("manscdp: body has no XML root element")
	}
	r := rewriter{src: src, out: make([]byte, 0, len(src)+32), gb: gb}
	var snText []byte
	if sn >= 0 {
		snText = strconv.AppendInt(nil, sn, 10)
	}
	snFound, snInsert, cmdTypeSeen := false, 0, false
	snContent := -1 // start of a root-level SN's content that is replaced at its end tag
	pos, depth := rootStart, 0
	for {
		lt := bytes.IndexByte(src[pos:], '<')
		if lt < 0 {
			return nil, errNotClosed
		}
		pos += lt
		rest := src[pos:]
		if len(rest) > 1 && rest[1] == '/' {
			name := elementName(rest[2:])
			after := rest[2+len(name):]
			for len(after) > 0 && isSpaceByte(after[0]) {
				after = after[1:]
			}
			if len(after) == 0 {
				return nil, errNotClosed
			}
			if len(name) == 0 || after[0] != '>' {
				return nil, fmt.Errorf("manscdp: malformed end tag at byte %d", pos)
			}
			depth--
			if depth == 1 && snContent >= 0 {
				r.replace(snContent, pos, snText)
				snContent = -1
			}
			pos += len(rest) - len(after) + 1
			if depth == 1 && !cmdTypeSeen && bytes.EqualFold(name, []byte("CmdType")) {
				cmdTypeSeen = true
				r.flush(pos)
				snInsert = len(r.out)
			}
			if depth == 0 {
				break
			}
			continue
		}
		if len(rest) > 1 && (rest[1] == '!' || rest[1] == '?') {
			n := r.skipMarkup(rest)
			if n <= 0 {
				return nil, fmt.Errorf("manscdp: unterminated comment, CDATA section or declaration at byte %d", pos)
			}
			pos += n
			continue
		}
		name := elementName(rest[1:])
		if len(name) == 0 {
			return nil, fmt.Errorf("manscdp: '<' without an element name at byte %d", pos)
		}
		gt, selfClosing := tagEnd(rest[1+len(name):])
		if gt < 0 {
			return nil, fmt.Errorf("manscdp: tag <%s> is not terminated", name)
		}
		if bytes.IndexByte(rest[1+len(name):1+len(name)+gt], '<') >= 0 {
			return nil, fmt.Errorf("manscdp: '<' inside tag <%s>", name)
		}
		tagStart, content := pos, pos+1+len(name)+gt+1
		pos = content
		if depth == 0 { // the root element
			if selfClosing {
				return nil, ErrNoCmdType
			}
			depth = 1
			r.flush(pos)
			snInsert = len(r.out)
			continue
		}
		childDepth := depth + 1
		if !selfClosing {
			depth = childDepth
		}
		switch {
		case snContent >= 0: // inside an SN whose whole content is replaced
		case childDepth == 2 && snText != nil && bytes.EqualFold(name, []byte("SN")):
			snFound = true
			if selfClosing {
				r.replace(tagStart, content, slices.Concat([]byte("<"), name, []byte(">"), snText, []byte("</"), name, []byte(">")))
			} else if _, end, simple := r.elementText(content); simple {
				r.replace(content, end, snText)
				pos = end
			} else {
				snContent = content
			}
		case !selfClosing && mapID != nil && isIDElement(name):
			text, end, simple := r.elementText(content)
			if !simple {
				break
			}
			pos = end
			if id := string(text); id != "" {
				if mapped, ok := mapID(id); ok && mapped != id {
					r.flush(content)
					r.appendText(mapped)
					r.last = end
				}
			}
		}
	}
	if snText != nil && !snFound {
		r.flush(pos)
		r.out = slices.Insert(r.out, snInsert, slices.Concat([]byte("<SN>"), snText, []byte("</SN>"))...)
	}
	r.flush(len(src))
	return r.out, nil
}

func isIDElement(name []byte) bool {
	for _, id := range idElements {
		if bytes.EqualFold(name, id) {
			return true
		}
	}
	return false
}

// skipMarkup is skipNonElement with a GB-aware search for the end of CDATA sections.
func (r *rewriter) skipMarkup(b []byte) int {
	const open, end = "<![CDATA[", "]]>"
	if r.gb && bytes.HasPrefix(b, []byte(open)) {
		i := indexGB(b[len(open):], end)
		if i < 0 {
			return -1
		}
		return len(open) + i + len(end)
	}
	return skipNonElement(b)
}

// indexGB is bytes.Index for GB18030-encoded b that does not match inside a character.
func indexGB(b []byte, sep string) int {
	for i := 0; i < len(b); i += gbCharLen(b[i:]) {
		if b[i] < utf8.RuneSelf && bytes.HasPrefix(b[i:], []byte(sep)) {
			return i
		}
	}
	return -1
}

// gbCharLen returns the length of the GB18030 character b starts with; a byte that does
// not start a valid multi-byte character counts alone.
func gbCharLen(b []byte) int {
	lead := func(c byte) bool { return 0x81 <= c && c <= 0xFE }
	digit := func(c byte) bool { return '0' <= c && c <= '9' }
	switch {
	case len(b) < 2 || !lead(b[0]):
		return 1
	case 0x40 <= b[1] && b[1] <= 0xFE && b[1] != 0x7F:
		return 2
	case len(b) >= 4 && digit(b[1]) && lead(b[2]) && digit(b[3]):
		return 4
	}
	return 1
}

// elementText reads the content of an element from source offset start: text, entity
// references, CDATA sections and comments up to its end tag. It returns the text trimmed
// and in UTF-8, the offset of the end tag, and false if the element has child elements or
// its content is not terminated.
func (r *rewriter) elementText(start int) (text []byte, end int, simple bool) {
	b := r.src[start:]
	// The usual case: plain text directly followed by the end tag.
	if lt := bytes.IndexByte(b, '<'); lt >= 0 && lt+1 < len(b) && b[lt+1] == '/' && bytes.IndexByte(b[:lt], '&') < 0 {
		return r.utf8Text(trimXMLSpace(b[:lt])), start + lt, true
	}
	var buf []byte
	for i := 0; ; {
		lt := bytes.IndexByte(b[i:], '<')
		if lt < 0 {
			return nil, 0, false
		}
		buf = appendUnescaped(buf, r.utf8Text(b[i:i+lt]))
		i += lt
		switch rest := b[i:]; {
		case bytes.HasPrefix(rest, []byte("</")):
			return trimXMLSpace(buf), start + i, true
		case bytes.HasPrefix(rest, []byte("<![CDATA[")):
			n := r.skipMarkup(rest)
			if n < 0 {
				return nil, 0, false
			}
			buf = append(buf, r.utf8Text(rest[len("<![CDATA["):n-len("]]>")])...)
			i += n
		case bytes.HasPrefix(rest, []byte("<!--")), bytes.HasPrefix(rest, []byte("<?")):
			n := skipNonElement(rest)
			if n < 0 {
				return nil, 0, false
			}
			i += n
		default:
			return nil, 0, false
		}
	}
}

// utf8Text returns text, decoded from GB18030 if the body is GB-encoded.
func (r *rewriter) utf8Text(text []byte) []byte {
	if !r.gb || isASCII(text) {
		return text
	}
	out, err := simplifiedchinese.GB18030.NewDecoder().Bytes(text)
	if err != nil {
		return text
	}
	return out
}

// appendText appends s to the output as element content in the body's charset.
func (r *rewriter) appendText(s string) {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if r.gb && !isASCII([]byte(s)) {
		// GB18030 encodes every character, so this cannot fail on valid UTF-8.
		if gb, err := simplifiedchinese.GB18030.NewEncoder().String(s); err == nil {
			s = gb
		}
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '&':
			r.out = append(r.out, "&amp;"...)
		case '<':
			r.out = append(r.out, "&lt;"...)
		case '>':
			r.out = append(r.out, "&gt;"...)
		default:
			r.out = append(r.out, c)
		}
	}
}

// appendUnescaped appends text with the predefined entities and character references
// resolved; other references are kept as written, as Decode keeps them.
func appendUnescaped(dst, text []byte) []byte {
	for {
		amp := bytes.IndexByte(text, '&')
		if amp < 0 {
			return append(dst, text...)
		}
		dst = append(dst, text[:amp]...)
		text = text[amp:]
		semi := bytes.IndexByte(text, ';')
		if semi < 0 {
			return append(dst, text...)
		}
		if r, ok := entity(string(text[1:semi])); ok {
			dst = utf8.AppendRune(dst, r)
		} else {
			dst = append(dst, text[:semi+1]...)
		}
		text = text[semi+1:]
	}
}

func entity(name string) (rune, bool) {
	switch name {
	case "lt":
		return '<', true
	case "gt":
		return '>', true
	case "amp":
		return '&', true
	case "apos":
		return '\'', true
	case "quot":
		return '"', true
	}
	if len(name) < 2 || name[0] != '#' {
		return 0, false
	}
	base, digits := 10, name[1:]
	if digits[0] == 'x' {
		base, digits = 16, digits[1:]
	}
	n, err := strconv.ParseUint(digits, base, 32)
	if err != nil || !utf8.ValidRune(rune(n)) {
		return 0, false
	}
	return rune(n), true
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
