// Package manscdp encodes and decodes MANSCDP bodies (GB/T 28181 Annex A): the XML carried
// in MESSAGE, SUBSCRIBE and NOTIFY requests with Content-Type Application/MANSCDP+xml.
//
// Peek reads the root element, CmdType, SN and DeviceID without decoding the document, so
// routing a keepalive costs well under a microsecond and one allocation. Decode fills the typed messages of this
// package (or any struct shaped like them); Message decodes any body into a generic tree so
// that a command gbproxy does not model can be forwarded with only DeviceID and SN rewritten.
// Every typed message keeps unknown child elements in its Extra field, so vendor extensions
// survive decode and encode. A new CmdType is one more struct here: Decode, Encode and the
// element-name leniency work from the struct tags.
//
// For routing, Rewrite forwards a body with a new SN and mapped DeviceID, ParentID and
// BusinessGroupID values by editing the bytes, 20-30 times faster than decoding and
// re-encoding and leaving everything else as it was; Convert changes only the charset.
// ExpectsResponse, MultiPart and CountItems say whether a Response MESSAGE will follow and
// when a multi-message answer is complete. PTZCmd builds and checks the 8-byte PTZ
// instructions of Annex A.3.
//
// # Charset policy
//
// The standard says GB2312; devices send GB2312, GBK, GB18030 or UTF-8 and the XML
// declaration is not always honest. Decode and Peek therefore decide by content:
//
//   - A body that is valid UTF-8 is read as UTF-8, whatever it declares. Devices that declare
//     GB2312 and send UTF-8 exist; pure ASCII is the same in both.
//   - Any other body is read as GB18030, the superset of GB2312 and GBK, when it declares
//     GB2312, GBK, GB18030, UTF-8 (a device that lies the other way) or nothing.
//   - A body that is not valid UTF-8 and declares another charset is rejected.
//
// The price of the first rule: a GB body in which every non-ASCII byte sequence also happens
// to be valid UTF-8 is misread. That needs every Chinese character to fall in a small part of
// the GB2312 table, which is rare for real names but possible for one- or two-character ones.
//
// Encode writes the declaration itself, encoding="GB2312" or encoding="UTF-8", and encodes
// the whole body in that charset. GB2312 output is produced with the GB18030 encoder: a
// character outside GB2312 (rare Hanzi, emoji) comes out as its GB18030 bytes rather than an
// error, which GB18030- and GBK-aware peers read correctly and strict GB2312 peers show as
// two unknown characters.
//
// # Leniency
//
// Decode and Peek accept a leading BOM or whitespace, a declaration without encoding, CRLF
// line ends, comments, trailing NULs or garbage after the root element, a missing SN (0), and
// mismatched end tags. Element names are matched case-insensitively against the struct tags
// of the type being decoded (some devices send <Devicelist> or <item>), and Peek matches the
// root element and its CmdType, SN and DeviceID children case-insensitively. Values are kept
// as sent. Decode refuses documents nested deeper than MaxDepth elements; limiting the body
// size is the caller's job.
package manscdp
