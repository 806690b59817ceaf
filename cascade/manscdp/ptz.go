package manscdp

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// PTZCmd is the front-end device control instruction of GB/T 28181-2016 A.3, carried in
// DeviceControl's <PTZCmd> as 8 bytes written in 16 hex digits:
//
//	byte 1  A5H
//	byte 2  high nibble: version (0); low nibble: (byte 1 high + byte 1 low + byte 2 high) % 16
//	byte 3  address, low 8 bits
//	byte 4  instruction
//	byte 5  data 1
//	byte 6  data 2
//	byte 7  high nibble: data 3; low nibble: address, high 4 bits
//	byte 8  (byte 1 + … + byte 7) % 256
//
// The standard identifies the target by <DeviceID> and leaves the address unused; widely
// deployed platforms write 1 (DefaultPTZAddress), which the constructors copy.
type PTZCmd struct {
	Instruction byte
	Data1       byte
	Data2       byte
	Data3       byte   // 4 bits
	Address     uint16 // 12 bits
}

// DefaultPTZAddress is the address the constructors set.
const DefaultPTZAddress = 1

const (
	ptzFirstByte = 0xA5
	ptzVersion   = 0
	maxPTZData3  = 0x0F
	max12Bits    = 0xFFF // address, cruise speed and dwell, scan speed
)

// PTZDirection is a set of the motion bits of a PTZ instruction (A.3.2). Of each pair
// (right/left, down/up, zoom in/out) at most one may be set.
type PTZDirection byte

const (
	PTZRight   PTZDirection = 0x01
	PTZLeft    PTZDirection = 0x02
	PTZDown    PTZDirection = 0x04
	PTZUp      PTZDirection = 0x08
	PTZZoomIn  PTZDirection = 0x10 // tele
	PTZZoomOut PTZDirection = 0x20 // wide
)

// FIOp is a set of the bits of a focus/iris instruction (A.3.3), 0100xxxx. Of each pair
// at most one may be set; none stops focus and iris.
type FIOp byte

const (
	FocusFar  FIOp = 0x01
	FocusNear FIOp = 0x02
	IrisOpen  FIOp = 0x04
	IrisClose FIOp = 0x08
)

const fiInstruction = 0x40

// PresetOp is a preset instruction (A.3.4); data 2 is the preset number, 1 to 255.
type PresetOp byte

const (
	PresetSet    PresetOp = 0x81
	PresetCall   PresetOp = 0x82
	PresetDelete PresetOp = 0x83
)

// CruiseOp is a cruise instruction (A.3.5); data 1 is the cruise group.
type CruiseOp byte

const (
	CruiseAddPoint    CruiseOp = 0x84 // data 2: preset, 1 to 255
	CruiseDeletePoint CruiseOp = 0x85 // data 2: preset; 0 deletes the whole cruise
	CruiseSetSpeed    CruiseOp = 0x86 // 12-bit speed: data 2 low 8 bits, data 3 high 4
	CruiseSetDwell    CruiseOp = 0x87 // 12-bit seconds: data 2 low 8 bits, data 3 high 4
	CruiseStart       CruiseOp = 0x88 // stopped by PTZStop
)

// ScanOp is an automatic scan instruction (A.3.6); data 1 is the scan group.
type ScanOp byte

const (
	ScanStart    ScanOp = iota // 89H, data 2 = 0; stopped by PTZStop
	ScanSetLeft                // 89H, data 2 = 1: the current position is the left edge
	ScanSetRight               // 89H, data 2 = 2: the current position is the right edge
	ScanSetSpeed               // 8AH, 12-bit speed: data 2 low 8 bits, data 3 high 4
)

const (
	scanInstruction      = 0x89
	scanSpeedInstruction = 0x8A
	auxOnInstruction     = 0x8C // data 1: switch number (1 is the wiper)
	auxOffInstruction    = 0x8D
)

// PTZMove starts (or, with dir 0, stops) pan, tilt and zoom motion. Pan and tilt speeds
// run 0–255, zoom speed 0–15.
func PTZMove(dir PTZDirection, panSpeed, tiltSpeed, zoomSpeed byte) (PTZCmd, error) {
	if dir >= fiInstruction {
		return PTZCmd{}, fmt.Errorf("manscdp: PTZ direction %#x has bits outside 0x3F", byte(dir))
	}
	return checked(PTZCmd{Instruction: byte(dir), Data1: panSpeed, Data2: tiltSpeed, Data3: zoomSpeed, Address: DefaultPTZAddress})
}

// PTZStop stops pan, tilt, zoom, cruise and scan.
func PTZStop() PTZCmd { return PTZCmd{Address: DefaultPTZAddress} }

// FocusIris starts (or, with op 0, stops) focus and iris motion at the given speeds, 0–255.
func FocusIris(op FIOp, focusSpeed, irisSpeed byte) (PTZCmd, error) {
	if op > 0x0F {
		return PTZCmd{}, fmt.Errorf("manscdp: focus/iris operation %#x has bits outside 0x0F", byte(op))
	}
	return checked(PTZCmd{Instruction: fiInstruction | byte(op), Data1: focusSpeed, Data2: irisSpeed, Address: DefaultPTZAddress})
}

// Preset sets, calls or deletes preset n, 1 to 255.
func Preset(op PresetOp, n byte) (PTZCmd, error) {
	if op < PresetSet || op > PresetDelete {
		return PTZCmd{}, fmt.Errorf("manscdp: %#x is not a preset instruction", byte(op))
	}
	return checked(PTZCmd{Instruction: byte(op), Data2: n, Address: DefaultPTZAddress})
}

// Cruise builds a cruise instruction for group: value is the preset for CruiseAddPoint and
// CruiseDeletePoint, the speed for CruiseSetSpeed, the dwell seconds for CruiseSetDwell
// (both 0–4095), and 0 for CruiseStart.
func Cruise(op CruiseOp, group byte, value uint16) (PTZCmd, error) {
	switch op {
	case CruiseAddPoint, CruiseDeletePoint, CruiseStart:
		if value > 0xFF || (op == CruiseStart && value != 0) {
			return PTZCmd{}, fmt.Errorf("manscdp: value %d out of range for cruise instruction %#x", value, byte(op))
		}
	case CruiseSetSpeed, CruiseSetDwell:
		if value > max12Bits {
			return PTZCmd{}, fmt.Errorf("manscdp: cruise speed or dwell %d exceeds 4095", value)
		}
	default:
		return PTZCmd{}, fmt.Errorf("manscdp: %#x is not a cruise instruction", byte(op))
	}
	return checked(PTZCmd{Instruction: byte(op), Data1: group, Data2: byte(value), Data3: byte(value >> 8), Address: DefaultPTZAddress})
}

// Scan builds an automatic scan instruction for group; speed (0–4095) is used by
// ScanSetSpeed only and must be 0 otherwise.
func Scan(op ScanOp, group byte, speed uint16) (PTZCmd, error) {
	switch {
	case op > ScanSetSpeed:
		return PTZCmd{}, fmt.Errorf("manscdp: unknown scan operation %d", op)
	case op == ScanSetSpeed && speed > max12Bits:
		return PTZCmd{}, fmt.Errorf("manscdp: scan speed %d exceeds 4095", speed)
	case op != ScanSetSpeed && speed != 0:
		return PTZCmd{}, errors.New("manscdp: a scan speed is only sent with ScanSetSpeed")
	case op == ScanSetSpeed:
		return checked(PTZCmd{Instruction: scanSpeedInstruction, Data1: group, Data2: byte(speed), Data3: byte(speed >> 8), Address: DefaultPTZAddress})
	}
	return checked(PTZCmd{Instruction: scanInstruction, Data1: group, Data2: byte(op), Address: DefaultPTZAddress})
}

// AuxSwitch turns auxiliary switch n on or off; switch 1 is the wiper.
func AuxSwitch(n byte, on bool) PTZCmd {
	c := PTZCmd{Instruction: auxOffInstruction, Data1: n, Address: DefaultPTZAddress}
	if on {
		c.Instruction = auxOnInstruction
	}
	return c
}

func checked(c PTZCmd) (PTZCmd, error) {
	if err := c.Validate(); err != nil {
		return PTZCmd{}, err
	}
	return c, nil
}

// Validate checks the ranges of the fields and that the instruction is one the standard
// defines, with a consistent combination of bits and a valid preset number.
func (c PTZCmd) Validate() error {
	if c.Data3 > maxPTZData3 {
		return fmt.Errorf("manscdp: PTZ data 3 (zoom speed or high bits) %d exceeds 15", c.Data3)
	}
	if c.Address > max12Bits {
		return fmt.Errorf("manscdp: PTZ address %#x exceeds 12 bits", c.Address)
	}
	in := c.Instruction
	switch {
	case in < fiInstruction:
		return checkPairs("PTZ", in, ptzPairs)
	case in < 0x50:
		return checkPairs("focus/iris", in, fiPairs)
	}
	switch in {
	case byte(PresetSet), byte(PresetCall), byte(PresetDelete), byte(CruiseAddPoint):
		if c.Data2 == 0 {
			return fmt.Errorf("manscdp: instruction %#x needs a preset number 1-255, got 0", in)
		}
	case byte(CruiseDeletePoint), byte(CruiseSetSpeed), byte(CruiseSetDwell), byte(CruiseStart),
		scanSpeedInstruction, auxOnInstruction, auxOffInstruction:
	case scanInstruction:
		if c.Data2 > byte(ScanSetRight) {
			return fmt.Errorf("manscdp: scan instruction sub-code %d is not 0 (start), 1 (left edge) or 2 (right edge)", c.Data2)
		}
	default:
		return fmt.Errorf("manscdp: PTZ instruction %#x is not defined by GB/T 28181", in)
	}
	return nil
}

// bitPair is two instruction bits of which at most one may be set.
type bitPair struct {
	mask byte
	name string
}

var (
	ptzPairs = []bitPair{{0x30, "zoom in and out"}, {0x0C, "up and down"}, {0x03, "right and left"}}
	fiPairs  = []bitPair{{0x0C, "iris close and open"}, {0x03, "focus near and far"}}
)

func checkPairs(kind string, instruction byte, pairs []bitPair) error {
	for _, p := range pairs {
		if instruction&p.mask == p.mask {
			return fmt.Errorf("manscdp: %s instruction %#x sets both %s", kind, instruction, p.name)
		}
	}
	return nil
}

// Bytes returns the 8 bytes of the command. Data 3 and the address are cut to their 4 and
// 12 bits; Validate reports values that do not fit.
func (c PTZCmd) Bytes() [8]byte {
	b := [8]byte{ptzFirstByte, 0, byte(c.Address), c.Instruction, c.Data1, c.Data2,
		c.Data3<<4 | byte(c.Address>>8)&0x0F, 0}
	b[1] = ptzVersion<<4 | (ptzFirstByte>>4+ptzFirstByte&0x0F+ptzVersion)%16
	for _, v := range b[:7] {
		b[7] += v
	}
	return b
}

// String returns the command as the 16 upper-case hex digits of <PTZCmd>.
func (c PTZCmd) String() string {
	b := c.Bytes()
	return strings.ToUpper(hex.EncodeToString(b[:]))
}

// ParsePTZCmd reads the text of a <PTZCmd> element: 16 hex digits (either case, surrounding
// whitespace ignored) with A5H first, version 0, both check values right and an
// instruction that passes Validate. When only Validate fails, the error wraps
// ErrPTZUndefined and the command is returned as well.
func ParsePTZCmd(s string) (PTZCmd, error) {
	text := strings.TrimSpace(s)
	if len(text) != 16 {
		return PTZCmd{}, fmt.Errorf("manscdp: PTZCmd %q is %d characters long, not 16 hex digits", s, len(text))
	}
	var b [8]byte
	if _, err := hex.Decode(b[:], []byte(text)); err != nil {
		return PTZCmd{}, fmt.Errorf("manscdp: PTZCmd %q is not hexadecimal", s)
	}
	if b[0] != ptzFirstByte {
		return PTZCmd{}, fmt.Errorf("manscdp: PTZCmd %q starts with %02X, not A5", s, b[0])
	}
	if b[1]>>4 != ptzVersion {
		return PTZCmd{}, fmt.Errorf("manscdp: PTZCmd %q has version %d; only version 0 (GB/T 28181-2016 and -2022) is known", s, b[1]>>4)
	}
	c := PTZCmd{Instruction: b[3], Data1: b[4], Data2: b[5], Data3: b[6] >> 4, Address: uint16(b[6]&0x0F)<<8 | uint16(b[2])}
	want := c.Bytes()
	if b[1] != want[1] {
		return PTZCmd{}, fmt.Errorf("manscdp: PTZCmd %q: byte 2 is %02X, its check nibble must make it %02X", s, b[1], want[1])
	}
	if b[7] != want[7] {
		return PTZCmd{}, fmt.Errorf("manscdp: PTZCmd %q: checksum byte is %02X, the sum of bytes 1-7 is %02X", s, b[7], want[7])
	}
	if err := c.Validate(); err != nil {
		// Well-formed but not a GB/T 28181 instruction: vendors extend the set,
		// so the command is returned too and a relay may pass it on.
		return c, fmt.Errorf("manscdp: PTZCmd %q: %w: %w", s, ErrPTZUndefined, err)
	}
	return c, nil
}

// ErrPTZUndefined marks a PTZCmd that is well formed (length, A5H, checksums)
// but whose instruction or data the standard does not define.
var ErrPTZUndefined = errors.New("instruction not defined by GB/T 28181")

// Describe returns a short human-readable form of the command for logs.
func (c PTZCmd) Describe() string {
	in := c.Instruction
	var what string
	switch {
	case in == 0:
		what = "stop"
	case in < fiInstruction:
		what = fmt.Sprintf("move %s pan=%d tilt=%d zoom=%d",
			bitNames(in, "right", "left", "down", "up", "zoom-in", "zoom-out"), c.Data1, c.Data2, c.Data3)
	case in == fiInstruction:
		what = "focus/iris stop"
	case in < 0x50:
		what = fmt.Sprintf("%s focus=%d iris=%d", bitNames(in&0x0F, "focus-far", "focus-near", "iris-open", "iris-close"), c.Data1, c.Data2)
	case PresetOp(in) == PresetSet:
		what = fmt.Sprintf("preset set %d", c.Data2)
	case PresetOp(in) == PresetCall:
		what = fmt.Sprintf("preset call %d", c.Data2)
	case PresetOp(in) == PresetDelete:
		what = fmt.Sprintf("preset delete %d", c.Data2)
	case CruiseOp(in) == CruiseAddPoint:
		what = fmt.Sprintf("cruise %d add preset %d", c.Data1, c.Data2)
	case CruiseOp(in) == CruiseDeletePoint:
		what = fmt.Sprintf("cruise %d delete preset %d", c.Data1, c.Data2)
	case CruiseOp(in) == CruiseSetSpeed:
		what = fmt.Sprintf("cruise %d speed %d", c.Data1, c.twelveBits())
	case CruiseOp(in) == CruiseSetDwell:
		what = fmt.Sprintf("cruise %d dwell %ds", c.Data1, c.twelveBits())
	case CruiseOp(in) == CruiseStart:
		what = fmt.Sprintf("cruise %d start", c.Data1)
	case in == scanInstruction:
		what = fmt.Sprintf("scan %d %s", c.Data1, [...]string{"start", "set left edge", "set right edge", "sub-code 3+"}[min(c.Data2, 3)])
	case in == scanSpeedInstruction:
		what = fmt.Sprintf("scan %d speed %d", c.Data1, c.twelveBits())
	case in == auxOnInstruction:
		what = fmt.Sprintf("aux switch %d on", c.Data1)
	case in == auxOffInstruction:
		what = fmt.Sprintf("aux switch %d off", c.Data1)
	default:
		what = fmt.Sprintf("unknown instruction %#x data=%d,%d,%d", in, c.Data1, c.Data2, c.Data3)
	}
	return fmt.Sprintf("%s addr=%d", what, c.Address)
}

func (c PTZCmd) twelveBits() int { return int(c.Data3)<<8 | int(c.Data2) }

// bitNames joins the names of the set bits, names[i] naming bit i.
func bitNames(bits byte, names ...string) string {
	var set []string
	for i, name := range names {
		if bits&(1<<i) != 0 {
			set = append(set, name)
		}
	}
	return strings.Join(set, "+")
}
