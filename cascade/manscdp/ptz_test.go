package manscdp

import (
	"fmt"
	"strings"
	"testing"
)

// Known-good commands, computed by hand from GB/T 28181-2016 A.3. Byte 2 is 0F for every
// one: version 0 in the high nibble, (A + 5 + 0) % 16 = F in the low one. With address 1,
// bytes 1-3 are A5 0F 01 and sum to B5; byte 8 is B5 + bytes 4-7, modulo 100H.
var ptzVectors = []struct {
	hex  string
	cmd  func() (PTZCmd, error)
	what string
}{
	// B5 + 0 = B5. (This is address 1, not 0: byte 3 is the address.)
	{"A50F0100000000B5", ok(PTZStop()), "stop addr=1"},
	// Address 0: A5 + 0F = B4.
	{"A50F0000000000B4", ok(PTZCmd{}), "stop addr=0"},
	// Address 123H: byte 3 = 23, byte 7 low nibble = 1; A5 + 0F + 23 + 01 = D8.
	{"A50F2300000001D8", ok(PTZCmd{Address: 0x123}), "stop addr=291"},
	// Up 08H, tilt speed in byte 6: B5 + 08 + FA = 1B7.
	{"A50F010800FA00B7", move(PTZUp, 0, 0xFA, 0), "move up pan=0 tilt=250 zoom=0 addr=1"},
	// Down 04H: B5 + 04 + FA = 1B3.
	{"A50F010400FA00B3", move(PTZDown, 0, 0xFA, 0), "move down pan=0 tilt=250 zoom=0 addr=1"},
	// Left 02H, pan speed in byte 5: B5 + 02 + FA = 1B1.
	{"A50F0102FA0000B1", move(PTZLeft, 0xFA, 0, 0), "move left pan=250 tilt=0 zoom=0 addr=1"},
	// Right 01H: B5 + 01 + FA = 1B0.
	{"A50F0101FA0000B0", move(PTZRight, 0xFA, 0, 0), "move right pan=250 tilt=0 zoom=0 addr=1"},
	// Left-up 0AH: B5 + 0A + FA + FA = 2B3.
	{"A50F010AFAFA00B3", move(PTZLeft|PTZUp, 0xFA, 0xFA, 0), "move left+up pan=250 tilt=250 zoom=0 addr=1"},
	// Left-down 06H: B5 + 06 + 1F4 = 2AF.
	{"A50F0106FAFA00AF", move(PTZLeft|PTZDown, 0xFA, 0xFA, 0), "move left+down pan=250 tilt=250 zoom=0 addr=1"},
	// Right-up 09H: B5 + 09 + 1F4 = 2B2.
	{"A50F0109FAFA00B2", move(PTZRight|PTZUp, 0xFA, 0xFA, 0), "move right+up pan=250 tilt=250 zoom=0 addr=1"},
	// Right-down 05H: B5 + 05 + 1F4 = 2AE.
	{"A50F0105FAFA00AE", move(PTZRight|PTZDown, 0xFA, 0xFA, 0), "move right+down pan=250 tilt=250 zoom=0 addr=1"},
	// Zoom in 10H, zoom speed A in byte 7's high nibble: B5 + 10 + A0 = 165.
	{"A50F01100000A065", move(PTZZoomIn, 0, 0, 0xA), "move zoom-in pan=0 tilt=0 zoom=10 addr=1"},
	// Zoom out 20H: B5 + 20 + A0 = 175.
	{"A50F01200000A075", move(PTZZoomOut, 0, 0, 0xA), "move zoom-out pan=0 tilt=0 zoom=10 addr=1"},
	// Right + up + zoom in = 19H, pan 20, tilt 30, zoom 3: B5 + 19 + 20 + 30 + 30 = 14E.
	{"A50F01192030304E", move(PTZRight|PTZUp|PTZZoomIn, 0x20, 0x30, 3), "move right+up+zoom-in pan=32 tilt=48 zoom=3 addr=1"},
	// Iris open 44H, iris speed in byte 6: B5 + 44 + FA = 1F3.
	{"A50F014400FA00F3", fi(IrisOpen, 0, 0xFA), "iris-open focus=0 iris=250 addr=1"},
	// Iris close 48H: B5 + 48 + FA = 1F7.
	{"A50F014800FA00F7", fi(IrisClose, 0, 0xFA), "iris-close focus=0 iris=250 addr=1"},
	// Focus far 41H, focus speed in byte 5: B5 + 41 + FA = 1F0.
	{"A50F0141FA0000F0", fi(FocusFar, 0xFA, 0), "focus-far focus=250 iris=0 addr=1"},
	// Focus near 42H: B5 + 42 + FA = 1F1.
	{"A50F0142FA0000F1", fi(FocusNear, 0xFA, 0), "focus-near focus=250 iris=0 addr=1"},
	// FI stop 40H: B5 + 40 = F5.
	{"A50F0140000000F5", fi(0, 0, 0), "focus/iris stop addr=1"},
	// Preset call 82H, preset 5 in byte 6: B5 + 82 + 05 = 13C.
	{"A50F01820005003C", preset(PresetCall, 5), "preset call 5 addr=1"},
	// Preset set 81H, preset 1: B5 + 81 + 01 = 137.
	{"A50F018100010037", preset(PresetSet, 1), "preset set 1 addr=1"},
	// Preset delete 83H, preset FF: B5 + 83 + FF = 237.
	{"A50F018300FF0037", preset(PresetDelete, 255), "preset delete 255 addr=1"},
	// Cruise add point 84H, group 1, preset 3: B5 + 84 + 01 + 03 = 13D.
	{"A50F01840103003D", cruise(CruiseAddPoint, 1, 3), "cruise 1 add preset 3 addr=1"},
	// Cruise delete the whole cruise 85H, group 1, preset 0: B5 + 85 + 01 = 13B.
	{"A50F01850100003B", cruise(CruiseDeletePoint, 1, 0), "cruise 1 delete preset 0 addr=1"},
	// Cruise speed 86H, group 1, speed 123H: byte 6 = 23, byte 7 = 10; B5 + 86 + 01 + 23 + 10 = 16F.
	{"A50F01860123106F", cruise(CruiseSetSpeed, 1, 0x123), "cruise 1 speed 291 addr=1"},
	// Cruise dwell 87H, group 2, FFFH s: byte 6 = FF, byte 7 = F0; B5 + 87 + 02 + FF + F0 = 32D.
	{"A50F018702FFF02D", cruise(CruiseSetDwell, 2, 0xFFF), "cruise 2 dwell 4095s addr=1"},
	// Cruise start 88H, group 1: B5 + 88 + 01 = 13E.
	{"A50F01880100003E", cruise(CruiseStart, 1, 0), "cruise 1 start addr=1"},
	// Scan 89H, group 0, start: B5 + 89 = 13E.
	{"A50F01890000003E", scan(ScanStart, 0, 0), "scan 0 start addr=1"},
	// Scan 89H, group 0, left edge 01: B5 + 89 + 01 = 13F.
	{"A50F01890001003F", scan(ScanSetLeft, 0, 0), "scan 0 set left edge addr=1"},
	// Scan 89H, group 3, right edge 02: B5 + 89 + 03 + 02 = 143.
	{"A50F018903020043", scan(ScanSetRight, 3, 0), "scan 3 set right edge addr=1"},
	// Scan speed 8AH, group 0, speed 200H: byte 6 = 00, byte 7 = 20; B5 + 8A + 20 = 15F.
	{"A50F018A0000205F", scan(ScanSetSpeed, 0, 0x200), "scan 0 speed 512 addr=1"},
	// Auxiliary switch 1 (wiper) on 8CH: B5 + 8C + 01 = 142.
	{"A50F018C01000042", ok(AuxSwitch(1, true)), "aux switch 1 on addr=1"},
	// Off 8DH: B5 + 8D + 01 = 143.
	{"A50F018D01000043", ok(AuxSwitch(1, false)), "aux switch 1 off addr=1"},
}

func ok(c PTZCmd) func() (PTZCmd, error) { return func() (PTZCmd, error) { return c, nil } }

func move(d PTZDirection, pan, tilt, zoom byte) func() (PTZCmd, error) {
	return func() (PTZCmd, error) { return PTZMove(d, pan, tilt, zoom) }
}

func fi(op FIOp, focus, iris byte) func() (PTZCmd, error) {
	return func() (PTZCmd, error) { return FocusIris(op, focus, iris) }
}

func preset(op PresetOp, n byte) func() (PTZCmd, error) {
	return func() (PTZCmd, error) { return Preset(op, n) }
}

func cruise(op CruiseOp, group byte, v uint16) func() (PTZCmd, error) {
	return func() (PTZCmd, error) { return Cruise(op, group, v) }
}

func scan(op ScanOp, group byte, speed uint16) func() (PTZCmd, error) {
	return func() (PTZCmd, error) { return Scan(op, group, speed) }
}

func TestPTZVectors(t *testing.T) {
	for _, v := range ptzVectors {
		c, err := v.cmd()
		if err != nil {
			t.Errorf("%s: constructor: %v", v.hex, err)
			continue
		}
		if got := c.String(); got != v.hex {
			t.Errorf("%+v.String() = %s, want %s", c, got, v.hex)
		}
		parsed, err := ParsePTZCmd(strings.ToLower(v.hex))
		if err != nil || parsed != c {
			t.Errorf("ParsePTZCmd(%s) = %+v, %v; want %+v", v.hex, parsed, err, c)
		}
		if got := c.Describe(); got != v.what {
			t.Errorf("%s.Describe() = %q, want %q", v.hex, got, v.what)
		}
	}
}

// The feature document's table. Each command is well formed; the one labelled 左 (left)
// is in fact the down command (04H) — the left one is A50F0102FA0000B1 above — and its
// 镜头聚焦/放焦 (focus) lines are focus far (41H) and focus near (42H).
func TestPTZSeedTable(t *testing.T) {
	seed := map[string]string{
		"A50F010800FA00B7": "move up", "A50F010400FA00B3": "move down", "A50F0101FA0000B0": "move right",
		"A50F010AFAFA00B3": "move left+up", "A50F0106FAFA00AF": "move left+down", "A50F0109FAFA00B2": "move right+up",
		"A50F0105FAFA00AE": "move right+down", "A50F0100000000B5": "stop", "A50F01100000A065": "move zoom-in",
		"A50F01200000A075": "move zoom-out", "A50F014400FA00F3": "iris-open", "A50F014800FA00F7": "iris-close",
		"A50F0141FA0000F0": "focus-far", "A50F0142FA0000F1": "focus-near",
	}
	for hex, want := range seed {
		c, err := ParsePTZCmd(hex)
		if err != nil {
			t.Errorf("ParsePTZCmd(%s): %v", hex, err)
			continue
		}
		if !strings.HasPrefix(c.Describe(), want+" ") {
			t.Errorf("%s is %q, want %q", hex, c.Describe(), want)
		}
	}
}

// withChecksums fills in byte 2's check nibble (for version 0) and byte 8 of a command
// given as 8 hex bytes, so that the tests below reach the check they are about.
func withChecksums(t *testing.T, hex string) string {
	t.Helper()
	var b [8]byte
	if _, err := fmt.Sscanf(hex, "%02X%02X%02X%02X%02X%02X%02X%02X", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &b[6], &b[7]); err != nil {
		t.Fatal(err)
	}
	b[1] = b[1]&0xF0 | (b[0]>>4+b[0]&0x0F+b[1]>>4)%16
	b[7] = 0
	for _, v := range b[:7] {
		b[7] += v
	}
	return fmt.Sprintf("%X", b[:])
}

func TestParsePTZCmdErrors(t *testing.T) {
	tests := map[string]string{
		"A50F0100000000B":                    "16 hex digits",
		"A50F0100000000B5A5":                 "16 hex digits",
		"A50F0100000000BG":                   "not hexadecimal",
		"A40F0100000000B4":                   "not A5",
		"A51F0100000000C5":                   "version 1",
		"A50E0100000000B4":                   "byte 2 is 0E",
		"A50F0100000000B6":                   "checksum byte is B6, the sum of bytes 1-7 is B5",
		withChecksums(t, "A50F010C00FAFA00"): "both up and down",
		withChecksums(t, "A50F0103FA000000"): "both right and left",
		withChecksums(t, "A50F013000000000"): "both zoom in and out",
		withChecksums(t, "A50F014C00000000"): "both iris close and open",
		withChecksums(t, "A50F014300000000"): "both focus near and far",
		withChecksums(t, "A50F015000000000"): "not defined",
		withChecksums(t, "A50F018B00000000"): "not defined",
		withChecksums(t, "A50F018E00000000"): "not defined",
		withChecksums(t, "A50F01FF00000000"): "not defined",
		withChecksums(t, "A50F018200000000"): "preset number 1-255, got 0",
		withChecksums(t, "A50F018401000000"): "preset number 1-255, got 0",
		withChecksums(t, "A50F018900030000"): "sub-code 3",
	}
	for in, want := range tests {
		_, err := ParsePTZCmd(in)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "manscdp: PTZCmd") {
			t.Errorf("ParsePTZCmd(%s) = %v, want an error containing %q", in, err, want)
		}
	}
	if c, err := ParsePTZCmd(" a50f0100000000b5\r\n"); err != nil || c != PTZStop() {
		t.Errorf("whitespace and lower case: %+v, %v", c, err)
	}
}

func TestPTZConstructorErrors(t *testing.T) {
	for name, cmd := range map[string]func() (PTZCmd, error){
		"left and right":     move(PTZLeft|PTZRight, 1, 1, 0),
		"direction 40H":      move(0x40, 0, 0, 0),
		"zoom speed 16":      move(PTZZoomIn, 0, 0, 16),
		"iris both":          fi(IrisOpen|IrisClose, 0, 1),
		"FI op 10H":          fi(0x10, 0, 0),
		"preset 0":           preset(PresetCall, 0),
		"not a preset op":    preset(0x84, 1),
		"cruise speed 4096":  cruise(CruiseSetSpeed, 1, 4096),
		"cruise preset 0":    cruise(CruiseAddPoint, 1, 0),
		"cruise preset 256":  cruise(CruiseAddPoint, 1, 256),
		"cruise start value": cruise(CruiseStart, 1, 5),
		"not a cruise op":    cruise(0x80, 1, 1),
		"scan speed 4096":    scan(ScanSetSpeed, 0, 4096),
		"speed with start":   scan(ScanStart, 0, 5),
		"unknown scan op":    scan(9, 0, 0),
	} {
		if c, err := cmd(); err == nil || c != (PTZCmd{}) {
			t.Errorf("%s: %+v, %v; want an error", name, c, err)
		}
	}
	if err := (PTZCmd{Data3: 16}).Validate(); err == nil {
		t.Error("Validate accepted data 3 = 16")
	}
	if err := (PTZCmd{Address: 0x1000}).Validate(); err == nil {
		t.Error("Validate accepted a 13-bit address")
	}
}

// Every valid command, whatever its instruction and data, survives String→ParsePTZCmd.
func TestPTZEveryInstructionRoundTrips(t *testing.T) {
	valid := 0
	for in := 0; in < 256; in++ {
		for _, d := range [][3]byte{{0, 0, 0}, {1, 2, 3}, {0xFF, 0xFF, 0x0F}} {
			c := PTZCmd{Instruction: byte(in), Data1: d[0], Data2: d[1], Data3: d[2], Address: 0xABC}
			if c.Validate() != nil {
				continue
			}
			valid++
			if got, err := ParsePTZCmd(c.String()); err != nil || got != c {
				t.Fatalf("%+v → %s → %+v, %v", c, c, got, err)
			}
		}
	}
	// PTZ: 3 states for each of 3 bit pairs = 27 codes; FI: 3 × 3 = 9; with all three data
	// sets that is 3 × 36. Presets (3 codes) and cruise add point need a preset number, so
	// data {0,0,0} fails: 4 × 2. Cruise 85H-88H, scan speed and the two auxiliary switch
	// codes take any data: 7 × 3. Scan 89H takes sub-codes 0 and 2 but not FFH: 2.
	if want := 3*36 + 4*2 + 7*3 + 2; valid != want {
		t.Errorf("%d valid commands, want %d", valid, want)
	}
}

func FuzzParsePTZCmd(f *testing.F) {
	for _, v := range ptzVectors {
		f.Add(v.hex)
		f.Add(strings.ToLower(v.hex))
	}
	f.Add("A50F010400FA00B3")
	f.Add(" A50F0100000000B5 ")
	f.Add("A50F0100000000B6")
	f.Add("A51F0100000000C5")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParsePTZCmd(s)
		if err != nil {
			return
		}
		if got, want := c.String(), strings.ToUpper(strings.TrimSpace(s)); got != want {
			t.Fatalf("ParsePTZCmd(%q).String() = %s", s, got)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("parsed command fails Validate: %v", err)
		}
		if c.Describe() == "" {
			t.Fatal("empty description")
		}
	})
}
