package media

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/pion/rtp"
)

// RTP defaults for PS over RTP as GB/T 28181 §C.2 has it.
const (
	PayloadTypePS      = 96
	ClockRate          = 90000
	DefaultMaxRTPSize  = 1400  // whole RTP packet, header included
	MaxRTPSizeTCP      = 65535 // RFC 4571 length field
	rtpHeaderLen       = 12
	minRTPPayloadBytes = 1
)

// PacketizerConfig configures a Packetizer. Zero values take the documented defaults.
type PacketizerConfig struct {
	SSRC        uint32
	PayloadType uint8 // default 96 (PS)
	// MaxPacketSize bounds a whole RTP packet, 12-byte header included: default 1400, at most 65535
	// (some devices send 30+ KB packets over TCP).
	MaxPacketSize int
	FrameRate     int // frames per second; default 25
	// TimestampMS steps the timestamp in milliseconds (40 a frame at 25 fps) instead of the 90 kHz
	// clock, as a widely used device simulator does.
	TimestampMS bool
	// FirstSequence and FirstTimestamp start the counters (default 0; devices start at random values).
	FirstSequence  uint16
	FirstTimestamp uint32
}

// Packetizer cuts one frame's payload into RTP packets (RFC 3550): same timestamp for a frame,
// sequence numbers consecutive across frames, marker bit on a frame's last packet.
type Packetizer struct {
	cfg  PacketizerConfig
	seq  uint16
	ts   uint32
	step uint32
}

// NewPacketizer returns a packetizer with cfg's defaults applied.
func NewPacketizer(cfg PacketizerConfig) (*Packetizer, error) {
	if cfg.PayloadType == 0 {
		cfg.PayloadType = PayloadTypePS
	}
	if cfg.PayloadType > 127 {
		return nil, fmt.Errorf("rtp: payload type %d does not fit 7 bits", cfg.PayloadType)
	}
	if cfg.MaxPacketSize == 0 {
		cfg.MaxPacketSize = DefaultMaxRTPSize
	}
	if cfg.MaxPacketSize < rtpHeaderLen+minRTPPayloadBytes || cfg.MaxPacketSize > MaxRTPSizeTCP {
		return nil, fmt.Errorf("rtp: MaxPacketSize %d: want %d to %d", cfg.MaxPacketSize, rtpHeaderLen+1, MaxRTPSizeTCP)
	}
	if cfg.FrameRate <= 0 {
		cfg.FrameRate = DefaultFrameRate
	}
	step := uint32(ClockRate / cfg.FrameRate)
	if cfg.TimestampMS {
		step = uint32(1000 / cfg.FrameRate)
	}
	return &Packetizer{cfg: cfg, seq: cfg.FirstSequence, ts: cfg.FirstTimestamp, step: step}, nil
}

// Packetize returns the RTP packets of the next frame and advances the timestamp by one frame.
func (p *Packetizer) Packetize(payload []byte) [][]byte {
	maxPayload := p.cfg.MaxPacketSize - rtpHeaderLen
	var out [][]byte
	for first := true; first || len(payload) > 0; first = false {
		chunk := payload[:min(len(payload), maxPayload)]
		payload = payload[len(chunk):]
		pkt := rtp.Packet{Header: rtp.Header{
			Version: 2, PayloadType: p.cfg.PayloadType, SequenceNumber: p.seq, Timestamp: p.ts,
			SSRC: p.cfg.SSRC, Marker: len(payload) == 0,
		}, Payload: chunk}
		b, _ := pkt.Marshal() // cannot fail: no extensions, no padding
		out = append(out, b)
		p.seq++
	}
	p.ts += p.step
	return out
}

// SetTimestamp sets the timestamp of the next frame: a sender whose clock ran on while it sent
// nothing (a paused playback) resumes at the clock's value.
func (p *Packetizer) SetTimestamp(ts uint32) { p.ts = ts }

// Timestamp returns the timestamp the next frame will carry.
func (p *Packetizer) Timestamp() uint32 { return p.ts }

// PacketInfo describes one received RTP packet.
type PacketInfo struct {
	SSRC        uint32
	Sequence    uint16
	Timestamp   uint32
	Marker      bool
	PayloadType uint8
	PayloadLen  int
}

// ParseRTP parses an RTP packet (RFC 3550 §5.1), CSRCs, extension and padding included, and returns
// its header fields and payload.
func ParseRTP(b []byte) (PacketInfo, []byte, error) {
	var pkt rtp.Packet
	if err := pkt.Unmarshal(b); err != nil {
		return PacketInfo{}, nil, fmt.Errorf("rtp: %w", err)
	}
	if pkt.Version != 2 {
		return PacketInfo{}, nil, fmt.Errorf("rtp: version %d, want 2", pkt.Version)
	}
	return PacketInfo{SSRC: pkt.SSRC, Sequence: pkt.SequenceNumber, Timestamp: pkt.Timestamp, Marker: pkt.Marker,
		PayloadType: pkt.PayloadType, PayloadLen: len(pkt.Payload)}, pkt.Payload, nil
}

// Reassemble groups RTP packets, in order, into frames: a frame ends at a packet with the marker
// bit, or where the timestamp changes. It fails on a packet that does not parse or a sequence gap.
func Reassemble(packets [][]byte) ([][]byte, error) {
	var frames [][]byte
	var cur []byte
	var last PacketInfo
	open := false
	for i, b := range packets {
		info, payload, err := ParseRTP(b)
		if err != nil {
			return frames, fmt.Errorf("packet %d: %w", i, err)
		}
		if i > 0 && info.Sequence != last.Sequence+1 {
			return frames, fmt.Errorf("packet %d: sequence %d after %d", i, info.Sequence, last.Sequence)
		}
		if open && info.Timestamp != last.Timestamp {
			frames = append(frames, cur)
			cur = nil
		}
		cur = append(cur, payload...)
		open = true
		if info.Marker {
			frames = append(frames, cur)
			cur, open = nil, false
		}
		last = info
	}
	if open {
		frames = append(frames, cur)
	}
	return frames, nil
}

// WriteFramed writes one RTP packet with the RFC 4571 two-byte big-endian length prefix, in a
// single Write so that concurrent writers cannot interleave.
func WriteFramed(w io.Writer, pkt []byte) error {
	if len(pkt) > MaxRTPSizeTCP {
		return fmt.Errorf("rfc4571: packet of %d bytes exceeds 65535", len(pkt))
	}
	buf := make([]byte, 2+len(pkt))
	binary.BigEndian.PutUint16(buf, uint16(len(pkt)))
	copy(buf[2:], pkt)
	_, err := w.Write(buf)
	return err
}

// ReadFramed reads one RFC 4571 frame into buf (which must hold 65535 bytes to read any frame) and
// returns the packet. A zero-length frame is returned as an empty packet.
func ReadFramed(r io.Reader, buf []byte) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n > len(buf) {
		return nil, fmt.Errorf("rfc4571: frame of %d bytes exceeds the %d-byte buffer", n, len(buf))
	}
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf[:n], nil
}
