package sim

import (
	"encoding/hex"
	"fmt"
)

// PTZ instruction codes (GB/T 28181 A.3.2, byte 4): direction bits, combinable (e.g. up|left).
const (
	PTZStop    byte = 0x00
	PTZRight   byte = 0x01
	PTZLeft    byte = 0x02
	PTZDown    byte = 0x04
	PTZUp      byte = 0x08
	PTZZoomIn  byte = 0x10
	PTZZoomOut byte = 0x20
)

const (
	ptzFirst    byte = 0xA5
	ptzVersion  byte = 0x0
	ptzCmdBytes      = 8
)

// PTZCmd builds the 8-byte PTZ command of GB/T 28181 A.3.1 as the 16 hex digits a PTZCmd element
// carries: A5H, version and first checksum, address (12 bits), instruction, data 1 (horizontal speed),
// data 2 (vertical speed), data 3 (zoom speed, 4 bits) and the sum checksum.
func PTZCmd(address uint16, instruction, horizontalSpeed, verticalSpeed, zoomSpeed byte) string {
	b := [ptzCmdBytes]byte{
		ptzFirst,
		ptzVersion<<4 | ((ptzFirst>>4)+(ptzFirst&0x0F)+ptzVersion)&0x0F,
		byte(address),
		instruction,
		horizontalSpeed,
		verticalSpeed,
		(zoomSpeed&0x0F)<<4 | byte(address>>8)&0x0F,
	}
	for _, v := range b[:7] {
		b[7] += v
	}
	return fmt.Sprintf("%X", b[:])
}

// CheckPTZCmd validates a PTZCmd value as A.3.1 defines it: 8 bytes in hex, first byte A5H, the low
// nibble of byte 2 the sum of byte 1's nibbles and the version modulo 16, byte 8 the sum of bytes
// 1 to 7 modulo 256.
func CheckPTZCmd(s string) error {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != ptzCmdBytes {
		return fmt.Errorf("PTZCmd %q: want 16 hex digits (8 bytes)", s)
	}
	if b[0] != ptzFirst {
		return fmt.Errorf("PTZCmd %q: first byte %02X, want A5", s, b[0])
	}
	version := b[1] >> 4
	if want := ((b[0] >> 4) + (b[0] & 0x0F) + version) & 0x0F; b[1]&0x0F != want {
		return fmt.Errorf("PTZCmd %q: byte 2 checksum %X, want %X", s, b[1]&0x0F, want)
	}
	var sum byte
	for _, v := range b[:7] {
		sum += v
	}
	if b[7] != sum {
		return fmt.Errorf("PTZCmd %q: checksum byte %02X, want %02X", s, b[7], sum)
	}
	return nil
}
