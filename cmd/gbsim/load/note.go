package load

import (
	"time"

	"github.com/gbproxy/gbproxy/cmd/gbsim/gbnote"
)

// appendNoteHeaders appends "\r\nDate: …\r\nNote: …" (GB/T 28181 signalling digest) for a message
// with these From, To and Call-ID values, which may alias dst, and this body. After the first
// messages have grown the buffer, it allocates nothing.
func appendNoteHeaders(dst []byte, s *gbnote.Signer, from, to, callID, body []byte) []byte {
	dst = append(dst, "\r\nDate: "...)
	start := len(dst)
	dst = time.Now().AppendFormat(dst, gbnote.DateLayout)
	date := dst[start:]
	dst = append(dst, "\r\nNote: "...)
	return s.AppendNoteOf(dst, from, to, callID, date, body)
}

// noteLines is the Date and Note header lines, each ending in CRLF, for the paths that are not hot.
func noteLines(s *gbnote.Signer, from, to, callID string, body []byte) string {
	date := gbnote.Date(time.Now())
	return "Date: " + date + "\r\nNote: " + s.Note(from, to, callID, date, body) + "\r\n"
}
