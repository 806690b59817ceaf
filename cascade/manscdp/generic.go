package manscdp

import (
	"encoding/xml"
	"strings"
)

// AnyElement is an element kept as a tree: unknown children of typed messages, and the
// whole body of a Message. Names are kept as written, a namespace prefix included
// ("a:b"), and XMLName.Space stays empty. Comments and processing instructions are not
// kept.
type AnyElement struct {
	XMLName  xml.Name
	Attrs    []xml.Attr   `xml:",any,attr"`
	Text     string       `xml:",chardata"`
	Children []AnyElement `xml:",any"`
}

// UnmarshalXML drops the indentation between child elements, which would otherwise all be
// collected into Text and re-encoded in front of the children, and the default namespace
// that an xmlns attribute (kept in Attrs) puts in XMLName.Space.
func (e *AnyElement) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	type plain AnyElement // without this method, so DecodeElement does not recurse here
	if err := d.DecodeElement((*plain)(e), &start); err != nil {
		return err
	}
	e.XMLName.Space = ""
	if len(e.Children) > 0 && isXMLSpace(e.Text) {
		e.Text = ""
	}
	return nil
}

// Find returns the first descendant at path, element names separated by "/" and matched
// case-insensitively ("DeviceList/Item/DeviceID"), or nil.
func (e *AnyElement) Find(path string) *AnyElement { return find(e.Children, path) }

// Message is any MANSCDP body as a tree, for forwarding commands that have no typed
// message: decode, rewrite DeviceID and SN with SetText, encode. Attributes and text of
// the root element itself are not kept (MANSCDP roots have none).
type Message struct {
	XMLName  xml.Name
	Children []AnyElement `xml:",any"`
}

// Find returns the first element at path below the root, as AnyElement.Find does.
func (m *Message) Find(path string) *AnyElement { return find(m.Children, path) }

// Text returns the text of the first element at path without surrounding whitespace, or
// "" if there is no such element.
func (m *Message) Text(path string) string {
	if e := m.Find(path); e != nil {
		return trimXMLSpace(e.Text)
	}
	return ""
}

// SetText sets the text of the first element at path, appending the missing elements of
// the path when there is none.
func (m *Message) SetText(path, value string) {
	children := &m.Children
	names := strings.Split(path, "/")
	for i, name := range names {
		e := findChild(*children, name)
		if e == nil {
			*children = append(*children, AnyElement{XMLName: xml.Name{Local: name}})
			e = &(*children)[len(*children)-1]
		}
		if i == len(names)-1 {
			e.Text = value
			return
		}
		children = &e.Children
	}
}

// Header returns the message's root, CmdType, SN and DeviceID as Peek would.
func (m *Message) Header() (Header, error) {
	h := Header{
		Root:     rootName([]byte(m.XMLName.Local)),
		CmdType:  m.Text("CmdType"),
		DeviceID: m.Text("DeviceID"),
	}
	if h.CmdType == "" {
		return Header{}, ErrNoCmdType
	}
	sn, err := parseSN([]byte(m.Text("SN")))
	if err != nil {
		return Header{}, err
	}
	h.SN = sn
	return h, nil
}

func find(children []AnyElement, path string) *AnyElement {
	var e *AnyElement
	for name := range strings.SplitSeq(path, "/") {
		if e = findChild(children, name); e == nil {
			return nil
		}
		children = e.Children
	}
	return e
}

func findChild(children []AnyElement, name string) *AnyElement {
	for i := range children {
		if strings.EqualFold(children[i].XMLName.Local, name) {
			return &children[i]
		}
	}
	return nil
}
