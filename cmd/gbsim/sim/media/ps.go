package media

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// MPEG-2 program stream start codes (ISO/IEC 13818-1 Table 2-18 and §2.5.3).
const (
	StreamIDPackHeader   = 0xBA
	StreamIDSystemHeader = 0xBB
	StreamIDPSM          = 0xBC
	StreamIDPadding      = 0xBE
	StreamIDVideo        = 0xE0 // the first video stream, where GB/T 28181 puts H.264 and H.265
	StreamIDAudio        = 0xC0 // the first audio stream, where GB/T 28181 puts G.711 and AAC
	programEndCode       = 0xB9
)

// Stream types of the program stream map as GB/T 28181 §C.2 uses them (ISO/IEC 13818-1 Table 2-29).
const (
	StreamTypeH264  = 0x1B
	StreamTypeH265  = 0x24
	StreamTypeAAC   = 0x0F
	StreamTypeG711A = 0x90
	StreamTypeSVAC  = 0x80
)

// MaxPESPayload is the most elementary-stream bytes one video PES packet with a PTS can carry:
// PES_packet_length is 16 bits and counts the 3 header bytes and the 5-byte PTS.
const MaxPESPayload = 0xFFFF - 3 - 5

// MuxerConfig configures a Muxer. Zero values take the documented defaults.
type MuxerConfig struct {
	// MuxRate is program_mux_rate in units of 50 bytes/s; default 20000 (8 Mbit/s).
	MuxRate uint32
	// PackStuffing is the number of stuffing bytes (0 to 7) after each pack header; default 0.
	PackStuffing int
	// MaxPESPayload caps the elementary-stream bytes of one PES packet; a larger frame is split over
	// several PES packets. Default and maximum MaxPESPayload.
	MaxPESPayload int
	// StreamType is the video stream_type announced in the PSM; default StreamTypeH264.
	StreamType uint8
}

// Muxer writes H.264 access units as a GB/T 28181 program stream: a pack header before every frame,
// a system header and a program stream map before every key frame, video in PES packets of stream
// 0xE0 with a 90 kHz PTS (SCR equal to the PTS).
type Muxer struct {
	cfg        MuxerConfig
	psmVersion uint8
}

// NewMuxer returns a muxer with cfg's defaults applied.
func NewMuxer(cfg MuxerConfig) (*Muxer, error) {
	if cfg.MuxRate == 0 {
		cfg.MuxRate = 20000
	}
	if cfg.MuxRate >= 1<<22 {
		return nil, fmt.Errorf("ps: MuxRate %d does not fit 22 bits", cfg.MuxRate)
	}
	if cfg.PackStuffing < 0 || cfg.PackStuffing > 7 {
		return nil, fmt.Errorf("ps: PackStuffing %d: want 0 to 7", cfg.PackStuffing)
	}
	if cfg.MaxPESPayload <= 0 || cfg.MaxPESPayload > MaxPESPayload {
		cfg.MaxPESPayload = MaxPESPayload
	}
	if cfg.StreamType == 0 {
		cfg.StreamType = StreamTypeH264
	}
	return &Muxer{cfg: cfg}, nil
}

// Mux returns the program stream bytes of one access unit presented at pts (90 kHz clock, 33 bits).
func (m *Muxer) Mux(frame []byte, key bool, pts uint64) []byte {
	pts &= 1<<33 - 1
	n := len(frame)/m.cfg.MaxPESPayload + 1
	out := make([]byte, 0, 14+m.cfg.PackStuffing+18+24+len(frame)+n*14)
	out = m.appendPackHeader(out, pts)
	if key {
		out = m.appendSystemHeader(out)
		out = m.appendPSM(out)
	}
	first := true
	for len(frame) > 0 || first {
		chunk := frame[:min(len(frame), m.cfg.MaxPESPayload)]
		frame = frame[len(chunk):]
		out = appendVideoPES(out, chunk, pts, first)
		first = false
	}
	return out
}

// appendPackHeader writes an MPEG-2 pack header (ISO/IEC 13818-1 §2.5.3.3) with SCR = scr·300.
func (m *Muxer) appendPackHeader(b []byte, scr uint64) []byte {
	const ext = 0 // SCR_extension: the 27 MHz remainder
	b = append(b, 0, 0, 1, StreamIDPackHeader,
		0x40|byte(scr>>30&7)<<3|0x04|byte(scr>>28&3),
		byte(scr>>20),
		byte(scr>>15&0x1f)<<3|0x04|byte(scr>>13&3),
		byte(scr>>5),
		byte(scr&0x1f)<<3|0x04|byte(ext>>7&3),
		byte(ext&0x7f)<<1|1,
		byte(m.cfg.MuxRate>>14),
		byte(m.cfg.MuxRate>>6),
		byte(m.cfg.MuxRate&0x3f)<<2|0x03,
		0xf8|byte(m.cfg.PackStuffing),
	)
	for range m.cfg.PackStuffing {
		b = append(b, 0xff)
	}
	return b
}

// appendSystemHeader writes a system header (§2.5.3.5) announcing one video stream 0xE0.
func (m *Muxer) appendSystemHeader(b []byte) []byte {
	rate := m.cfg.MuxRate // rate_bound ≥ every program_mux_rate in the stream
	b = append(b, 0, 0, 1, StreamIDSystemHeader, 0, 9,
		0x80|byte(rate>>15),
		byte(rate>>7),
		byte(rate&0x7f)<<1|1,
		0x00,             // audio_bound 0 (6 bits), fixed_flag 0, CSPS_flag 0
		0x80|0x40|0x20|1, // audio and video locked, marker, video_bound 1
		0x7f,             // packet_rate_restriction_flag 0, reserved
		StreamIDVideo,
		0xc0|0x20|byte(1024>>8), // '11', P-STD_buffer_bound_scale 1 (1024-byte units), size 1024 (1 MiB)
		byte(1024&0xff),
	)
	return b
}

// appendPSM writes a program stream map (§2.5.4) with one elementary stream: the video in 0xE0.
func (m *Muxer) appendPSM(b []byte) []byte {
	start := len(b)
	const esMapLen = 4
	length := 6 + esMapLen + 4 // bytes after program_stream_map_length
	b = append(b, 0, 0, 1, StreamIDPSM, byte(length>>8), byte(length),
		0x80|0x60|m.psmVersion&0x1f, // current_next_indicator 1, reserved, version
		0xff,                        // reserved, marker
		0, 0,                        // program_stream_info_length
		0, esMapLen,
		m.cfg.StreamType, StreamIDVideo, 0, 0, // elementary_stream_info_length 0
	)
	return binary.BigEndian.AppendUint32(b, CRC32MPEG2(b[start:]))
}

// appendVideoPES writes one PES packet of stream 0xE0 (§2.4.3.6); the first of a frame carries the
// PTS and sets data_alignment_indicator.
func appendVideoPES(b, payload []byte, pts uint64, first bool) []byte {
	hdrData := 0
	flags1, flags2 := byte(0x80), byte(0x00) // '10', nothing set
	if first {
		hdrData = 5
		flags1 |= 0x04 // data_alignment_indicator
		flags2 = 0x80  // PTS only
	}
	length := 3 + hdrData + len(payload)
	b = append(b, 0, 0, 1, StreamIDVideo, byte(length>>8), byte(length), flags1, flags2, byte(hdrData))
	if first {
		b = append(b,
			0x20|byte(pts>>30&7)<<1|1,
			byte(pts>>22),
			byte(pts>>15&0x7f)<<1|1,
			byte(pts>>7),
			byte(pts&0x7f)<<1|1,
		)
	}
	return append(b, payload...)
}

// CRC32MPEG2 is the CRC of ISO/IEC 13818-1 Annex A: polynomial 0x04C11DB7, initial value
// 0xFFFFFFFF, no reflection, no final XOR. Over a section including its CRC_32 field it is 0.
func CRC32MPEG2(data []byte) uint32 {
	crc := uint32(0xffffffff)
	for _, v := range data {
		crc ^= uint32(v) << 24
		for range 8 {
			if crc&0x80000000 != 0 {
				crc = crc<<1 ^ 0x04c11db7
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// Demuxed is what Demux found in a program stream.
type Demuxed struct {
	Packs         int // pack headers
	SystemHeaders int
	PSMs          int
	// StreamTypes maps elementary_stream_id to stream_type, from the last PSM.
	StreamTypes map[uint8]uint8
	PESPackets  map[uint8]int // PES packets per stream_id
	// Video is the elementary stream of PES 0xE0, payloads concatenated.
	Video []byte
	// PTS lists the PTS of each PES 0xE0 packet that carries one.
	PTS []uint64
	// Skipped counts bytes skipped while looking for a start code (0 in a well-formed stream).
	Skipped int
}

// Demux parses a program stream: pack headers (MPEG-2 only), system headers, program stream maps
// (whose CRC it checks) and PES packets, collecting the elementary stream of 0xE0. It fails on
// malformed or truncated structures; junk between packets is skipped and counted.
func Demux(ps []byte) (*Demuxed, error) {
	d := &Demuxed{StreamTypes: make(map[uint8]uint8), PESPackets: make(map[uint8]int)}
	for i := 0; i < len(ps); {
		if i+4 > len(ps) || ps[i] != 0 || ps[i+1] != 0 || ps[i+2] != 1 {
			i++
			d.Skipped++
			continue
		}
		id := ps[i+3]
		switch {
		case id == StreamIDPackHeader:
			n, err := parsePackHeader(ps[i:])
			if err != nil {
				return d, fmt.Errorf("ps: pack header at %d: %w", i, err)
			}
			d.Packs++
			i += n
		case id == programEndCode:
			i += 4
		case id >= StreamIDSystemHeader: // system header, PSM, PES and the other stream_ids
			if i+6 > len(ps) {
				return d, fmt.Errorf("ps: packet 0x%02X at %d truncated", id, i)
			}
			n := 6 + int(binary.BigEndian.Uint16(ps[i+4:]))
			if i+n > len(ps) {
				return d, fmt.Errorf("ps: packet 0x%02X at %d: length %d past the end (%d bytes left)", id, i, n, len(ps)-i)
			}
			pkt := ps[i : i+n]
			var err error
			switch {
			case id == StreamIDSystemHeader:
				d.SystemHeaders++
			case id == StreamIDPSM:
				err = d.parsePSM(pkt)
				d.PSMs++
			default:
				err = d.parsePES(pkt)
			}
			if err != nil {
				return d, fmt.Errorf("ps: packet 0x%02X at %d: %w", id, i, err)
			}
			i += n
		default:
			i++
			d.Skipped++
		}
	}
	return d, nil
}

// parsePackHeader checks an MPEG-2 pack header and returns its length, stuffing included.
func parsePackHeader(b []byte) (int, error) {
	if len(b) < 14 {
		return 0, errors.New("truncated")
	}
	if b[4]>>6 != 1 {
		return 0, errors.New("not an MPEG-2 pack header ('01' bits missing)")
	}
	if b[4]&0x04 == 0 || b[6]&0x04 == 0 || b[8]&0x04 == 0 || b[9]&1 == 0 || b[12]&3 != 3 {
		return 0, errors.New("marker bit not set")
	}
	n := 14 + int(b[13]&7)
	if len(b) < n {
		return 0, errors.New("stuffing truncated")
	}
	return n, nil
}

// SCR returns the system_clock_reference_base of a pack header starting at b.
func SCR(b []byte) (uint64, error) {
	if _, err := parsePackHeader(b); err != nil {
		return 0, err
	}
	return uint64(b[4]>>3&7)<<30 | uint64(b[4]&3)<<28 | uint64(b[5])<<20 | uint64(b[6]>>3)<<15 |
		uint64(b[6]&3)<<13 | uint64(b[7])<<5 | uint64(b[8]>>3), nil
}

func (d *Demuxed) parsePSM(pkt []byte) error {
	if len(pkt) < 16 {
		return errors.New("PSM too short")
	}
	if crc := CRC32MPEG2(pkt); crc != 0 {
		return fmt.Errorf("PSM CRC_32 mismatch (residue %08x)", crc)
	}
	infoLen := int(binary.BigEndian.Uint16(pkt[8:]))
	p := 10 + infoLen
	if p+2 > len(pkt)-4 {
		return errors.New("program_stream_info_length past the end")
	}
	esLen := int(binary.BigEndian.Uint16(pkt[p:]))
	p += 2
	end := p + esLen
	if end > len(pkt)-4 {
		return errors.New("elementary_stream_map_length past the end")
	}
	clear(d.StreamTypes)
	for p+4 <= end {
		d.StreamTypes[pkt[p+1]] = pkt[p]
		p += 4 + int(binary.BigEndian.Uint16(pkt[p+2:]))
	}
	if p != end {
		return errors.New("elementary stream map entries overrun its length")
	}
	return nil
}

func (d *Demuxed) parsePES(pkt []byte) error {
	id := pkt[3]
	d.PESPackets[id]++
	if id == StreamIDPadding || id == 0xBF { // padding and private_stream_2 have no PES header
		return nil
	}
	if len(pkt) < 9 || pkt[6]>>6 != 2 {
		return errors.New("PES header is not MPEG-2 ('10' bits missing)")
	}
	hdr := 9 + int(pkt[8])
	if hdr > len(pkt) {
		return errors.New("PES_header_data_length past the end")
	}
	if id != StreamIDVideo {
		return nil
	}
	if pkt[7]&0x80 != 0 {
		if pkt[8] < 5 {
			return errors.New("PTS flag set but header too short")
		}
		b := pkt[9:14]
		if b[0]&1 == 0 || b[2]&1 == 0 || b[4]&1 == 0 {
			return errors.New("PTS marker bit not set")
		}
		d.PTS = append(d.PTS, uint64(b[0]>>1&7)<<30|uint64(b[1])<<22|uint64(b[2]>>1)<<15|uint64(b[3])<<7|uint64(b[4]>>1))
	}
	d.Video = append(d.Video, pkt[hdr:]...)
	return nil
}
