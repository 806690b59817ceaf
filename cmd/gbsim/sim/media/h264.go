// Package media holds the media pieces of the GB/T 28181 simulators, written from the standards and
// sharing no code with the proxy: an H.264 Annex-B reader (ITU-T H.264 Annex B), an MPEG-2 program
// stream muxer and demuxer as GB/T 28181 cameras use it (ISO/IEC 13818-1 §2.5), RTP packetization
// (RFC 3550), RTP over TCP framing (RFC 4571) and UDP / TCP active / TCP passive (RFC 4145) senders
// and receivers.
package media

import (
	_ "embed"
	"errors"
)

// DefaultVideo is a 2 s H.264 Annex-B clip: 320x240, 25 fps, GOP 25, no B-frames (ffmpeg testsrc,
// libx264). Simulators stream it when given no video of their own.
//
//go:embed testdata/testsrc.h264
var DefaultVideo []byte

// DefaultFrameRate is the frame rate of DefaultVideo and the default of the senders.
const DefaultFrameRate = 25

// H.264 NAL unit types (ITU-T H.264 Table 7-1) used to find access units.
const (
	nalSlice = 1
	nalIDR   = 5
	nalSEI   = 6
	nalSPS   = 7
	nalPPS   = 8
	nalAUD   = 9
)

// Frame is one H.264 access unit in Annex-B form, start codes included.
type Frame struct {
	Data []byte
	// Key is true for an IDR access unit; in the streams this package reads, SPS and PPS precede it
	// in the same access unit.
	Key bool
	// NALTypes lists the nal_unit_type of each NAL unit, in order.
	NALTypes []uint8
}

// nalStart is the position of a NAL unit in a byte stream: where its start code begins and where
// its header byte is.
type nalStart struct{ code, header int }

// findNALs returns the NAL units of an Annex-B stream. A start code is 00 00 01, or 00 00 00 01 with
// the zero_byte counted as part of it.
func findNALs(data []byte) []nalStart {
	var out []nalStart
	for i := 0; i+3 <= len(data); {
		if data[i] != 0 || data[i+1] != 0 || data[i+2] != 1 {
			i++
			continue
		}
		code := i
		if i > 0 && data[i-1] == 0 {
			code = i - 1
		}
		if i+3 < len(data) {
			out = append(out, nalStart{code: code, header: i + 3})
		}
		i += 3
	}
	return out
}

// SplitAccessUnits splits an H.264 Annex-B byte stream into access units (ITU-T H.264 §7.4.1.2.3):
// a new one starts at an access unit delimiter, SPS, PPS or SEI that follows a slice, or at a slice
// whose first_mb_in_slice is 0 when the current unit already has a slice. Concatenating the Data of
// the frames gives back data exactly (bytes before the first start code go with the first frame).
func SplitAccessUnits(data []byte) ([]Frame, error) {
	nals := findNALs(data)
	if len(nals) == 0 {
		return nil, errors.New("h264: no NAL unit start code found: not an Annex-B stream")
	}
	var frames []Frame
	start := 0
	var cur Frame
	hasSlice := false
	flush := func(end int) {
		cur.Data = data[start:end]
		frames = append(frames, cur)
		start, cur, hasSlice = end, Frame{}, false
	}
	for _, n := range nals {
		typ := data[n.header] & 0x1f
		switch typ {
		case nalAUD, nalSPS, nalPPS, nalSEI, 14, 15, 16, 17, 18:
			if hasSlice {
				flush(n.code)
			}
		case nalSlice, 2, nalIDR:
			// first_mb_in_slice is the first ue(v) after the header: 0 is coded as a single 1 bit.
			firstMB0 := n.header+1 < len(data) && data[n.header+1]&0x80 != 0
			if hasSlice && firstMB0 {
				flush(n.code)
			}
			hasSlice = true
		}
		if typ == nalIDR {
			cur.Key = true
		}
		cur.NALTypes = append(cur.NALTypes, typ)
	}
	flush(len(data))
	if len(frames) > 0 && !hasAnySlice(frames[len(frames)-1]) && len(frames) > 1 {
		// Trailing parameter sets without a slice belong to no picture: keep them with the last frame.
		last := frames[len(frames)-1]
		prev := &frames[len(frames)-2]
		prev.Data = data[len(data)-len(last.Data)-len(prev.Data):]
		prev.NALTypes = append(prev.NALTypes, last.NALTypes...)
		frames = frames[:len(frames)-1]
	}
	return frames, nil
}

func hasAnySlice(f Frame) bool {
	for _, t := range f.NALTypes {
		if t == nalSlice || t == 2 || t == nalIDR {
			return true
		}
	}
	return false
}
