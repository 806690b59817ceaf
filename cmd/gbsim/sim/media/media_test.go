package media

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

func defaultFrames(t *testing.T) []Frame {
	t.Helper()
	frames, err := SplitAccessUnits(DefaultVideo)
	if err != nil {
		t.Fatal(err)
	}
	return frames
}

func TestSplitAccessUnits(t *testing.T) {
	frames := defaultFrames(t)
	if len(frames) != 50 {
		t.Fatalf("%d access units, want 50 (2 s at 25 fps)", len(frames))
	}
	var joined []byte
	var keys []int
	for i, f := range frames {
		joined = append(joined, f.Data...)
		if f.Key {
			keys = append(keys, i)
			// SPS and PPS come before the IDR slice in a key frame.
			sps, pps, idr := slices.Index(f.NALTypes, nalSPS), slices.Index(f.NALTypes, nalPPS), slices.Index(f.NALTypes, nalIDR)
			if sps < 0 || pps < 0 || !(sps < idr && pps < idr) {
				t.Errorf("key frame %d NAL types %v: want SPS and PPS before the IDR slice", i, f.NALTypes)
			}
		} else if !slices.Contains(f.NALTypes, nalSlice) {
			t.Errorf("frame %d NAL types %v: no slice", i, f.NALTypes)
		}
		if !bytes.HasPrefix(f.Data, []byte{0, 0, 0, 1}) && !bytes.HasPrefix(f.Data, []byte{0, 0, 1}) {
			t.Errorf("frame %d does not start with a start code: % x", i, f.Data[:4])
		}
	}
	if !slices.Equal(keys, []int{0, 25}) {
		t.Errorf("key frames at %v, want [0 25] (GOP 25)", keys)
	}
	if !bytes.Equal(joined, DefaultVideo) {
		t.Error("the access units do not add up to the input")
	}
	if _, err := SplitAccessUnits([]byte("no start code here")); err == nil {
		t.Error("a stream without start codes was accepted")
	}
}

func TestSplitAccessUnitsSlicesOfOnePicture(t *testing.T) {
	// Two slices of one picture (the second with first_mb_in_slice != 0), then a new picture.
	stream := []byte{
		0, 0, 0, 1, 0x67, 0x42, // SPS
		0, 0, 0, 1, 0x68, 0xce, // PPS
		0, 0, 0, 1, 0x65, 0x88, 0x01, // IDR, first_mb 0
		0, 0, 1, 0x65, 0x40, 0x02, // IDR, first_mb != 0 (ue "010" = 1)
		0, 0, 0, 1, 0x41, 0x9a, 0x03, // P, first_mb 0: new access unit
		0, 0, 0, 1, 0x09, 0xf0, // AUD: new access unit
		0, 0, 0, 1, 0x41, 0x9a, 0x04,
	}
	frames, err := SplitAccessUnits(stream)
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 3 {
		t.Fatalf("%d access units, want 3: %+v", len(frames), frames)
	}
	if !frames[0].Key || frames[1].Key || frames[2].Key {
		t.Errorf("key flags %v %v %v, want true false false", frames[0].Key, frames[1].Key, frames[2].Key)
	}
	if !slices.Equal(frames[0].NALTypes, []uint8{7, 8, 5, 5}) || !slices.Equal(frames[2].NALTypes, []uint8{9, 1}) {
		t.Errorf("NAL types %v / %v", frames[0].NALTypes, frames[2].NALTypes)
	}
}

func muxAll(t *testing.T, cfg MuxerConfig, frames []Frame) []byte {
	t.Helper()
	m, err := NewMuxer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var ps []byte
	for i, f := range frames {
		ps = append(ps, m.Mux(f.Data, f.Key, 90000+uint64(i)*3600)...)
	}
	return ps
}

func TestMuxDemuxRoundTrip(t *testing.T) {
	frames := defaultFrames(t)
	for _, tc := range []struct {
		name string
		cfg  MuxerConfig
	}{
		{"defaults", MuxerConfig{}},
		{"small PES and stuffing", MuxerConfig{MaxPESPayload: 700, PackStuffing: 6, MuxRate: 6106}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps := muxAll(t, tc.cfg, frames)
			d, err := Demux(ps)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(d.Video, DefaultVideo) {
				t.Fatalf("demuxed elementary stream (%d bytes) differs from the input (%d bytes)", len(d.Video), len(DefaultVideo))
			}
			if d.Packs != 50 || d.SystemHeaders != 2 || d.PSMs != 2 || d.Skipped != 0 {
				t.Errorf("packs %d system headers %d PSMs %d skipped %d, want 50 2 2 0", d.Packs, d.SystemHeaders, d.PSMs, d.Skipped)
			}
			if d.StreamTypes[StreamIDVideo] != StreamTypeH264 || len(d.StreamTypes) != 1 {
				t.Errorf("PSM stream types %v, want only 0xE0 -> 0x1B", d.StreamTypes)
			}
			if len(d.PTS) != 50 {
				t.Fatalf("%d PTS, want one per frame", len(d.PTS))
			}
			for i, pts := range d.PTS {
				if pts != 90000+uint64(i)*3600 {
					t.Fatalf("PTS %d = %d, want %d", i, pts, 90000+i*3600)
				}
			}
			if tc.cfg.MaxPESPayload > 0 {
				if d.PESPackets[StreamIDVideo] <= 50 {
					t.Errorf("%d video PES packets: frames larger than 700 bytes were not split", d.PESPackets[StreamIDVideo])
				}
			} else if d.PESPackets[StreamIDVideo] != 50 {
				t.Errorf("%d video PES packets, want 50", d.PESPackets[StreamIDVideo])
			}
		})
	}
}

func TestMuxLayout(t *testing.T) {
	m, err := NewMuxer(MuxerConfig{MuxRate: 0x2ABCDE, PackStuffing: 3})
	if err != nil {
		t.Fatal(err)
	}
	const pts = 1<<33 - 1 - 12345 // every PTS and SCR bit field used
	frame := bytes.Repeat([]byte{0xAB}, MaxPESPayload+10)
	ps := m.Mux(frame, true, pts)
	if !bytes.HasPrefix(ps, []byte{0, 0, 1, 0xBA}) {
		t.Fatalf("does not start with a pack header: % x", ps[:4])
	}
	scr, err := SCR(ps)
	if err != nil || scr != pts {
		t.Errorf("SCR %d (%v), want %d", scr, err, uint64(pts))
	}
	if rate := uint32(ps[10])<<14 | uint32(ps[11])<<6 | uint32(ps[12])>>2; rate != 0x2ABCDE {
		t.Errorf("program_mux_rate %#x, want 0x2ABCDE", rate)
	}
	if ps[13] != 0xF8|3 || !bytes.Equal(ps[14:17], []byte{0xFF, 0xFF, 0xFF}) {
		t.Errorf("stuffing % x", ps[13:17])
	}
	sys := ps[17:]
	if !bytes.HasPrefix(sys, []byte{0, 0, 1, 0xBB}) {
		t.Fatalf("no system header after the pack header: % x", sys[:4])
	}
	psm := sys[6+int(binary.BigEndian.Uint16(sys[4:])):]
	if !bytes.HasPrefix(psm, []byte{0, 0, 1, 0xBC}) {
		t.Fatalf("no PSM after the system header: % x", psm[:4])
	}
	psmLen := 6 + int(binary.BigEndian.Uint16(psm[4:]))
	if CRC32MPEG2(psm[:psmLen]) != 0 {
		t.Error("PSM CRC_32 wrong")
	}
	pes := psm[psmLen:]
	if !bytes.HasPrefix(pes, []byte{0, 0, 1, 0xE0}) {
		t.Fatalf("no PES 0xE0 after the PSM: % x", pes[:4])
	}
	if n := binary.BigEndian.Uint16(pes[4:]); n != 0xFFFF {
		t.Errorf("first PES_packet_length %d, want 65535 (frame larger than a PES)", n)
	}
	d, err := Demux(ps)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(d.Video, frame) || d.PESPackets[StreamIDVideo] != 2 || len(d.PTS) != 1 || d.PTS[0] != pts {
		t.Errorf("demuxed %d bytes in %d PES, PTS %v", len(d.Video), d.PESPackets[StreamIDVideo], d.PTS)
	}
	// A delta frame has a pack header but no system header or PSM.
	delta := m.Mux([]byte{0, 0, 0, 1, 0x41}, false, 0)
	if bytes.Contains(delta, []byte{0, 0, 1, 0xBB}) || bytes.Contains(delta, []byte{0, 0, 1, 0xBC}) {
		t.Error("delta frame carries a system header or PSM")
	}
}

func TestCRC32MPEG2(t *testing.T) {
	if got := CRC32MPEG2([]byte("123456789")); got != 0x0376E6E7 {
		t.Errorf("CRC-32/MPEG-2 check value %#08x, want 0x0376e6e7", got)
	}
}

func TestDemuxRejectsBadPSM(t *testing.T) {
	ps := muxAll(t, MuxerConfig{}, defaultFrames(t)[:1])
	i := bytes.Index(ps, []byte{0, 0, 1, 0xBC})
	ps[i+12] = StreamTypeH265 // stream type changed, CRC not
	if _, err := Demux(ps); err == nil {
		t.Error("a PSM with a wrong CRC was accepted")
	}
}

// TestFFprobeReadsMuxedPS checks the muxer against an independent demuxer.
func TestFFprobeReadsMuxedPS(t *testing.T) {
	ffprobe, err := exec.LookPath("ffprobe")
	if err != nil {
		if os.Getenv("GBPROXY_REQUIRE_FFMPEG") == "1" {
			t.Fatal("ffprobe not found and GBPROXY_REQUIRE_FFMPEG=1")
		}
		t.Skip("ffprobe not installed")
	}
	path := filepath.Join(t.TempDir(), "out.ps")
	if err := os.WriteFile(path, muxAll(t, MuxerConfig{MaxPESPayload: 4000}, defaultFrames(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(ffprobe, "-v", "error", "-f", "mpeg", "-count_frames", "-show_streams", "-of", "json", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe: %v\n%s", err, out)
	}
	var res struct {
		Streams []struct {
			CodecName     string `json:"codec_name"`
			Width, Height int
			ID            string `json:"id"`
			ReadFrames    string `json:"nb_read_frames"`
		}
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("ffprobe output: %v\n%s", err, out)
	}
	if len(res.Streams) != 1 {
		t.Fatalf("ffprobe found %d streams, want 1:\n%s", len(res.Streams), out)
	}
	s := res.Streams[0]
	if s.CodecName != "h264" || s.Width != 320 || s.Height != 240 || s.ID != "0x1e0" || s.ReadFrames != "50" {
		t.Errorf("ffprobe: %+v, want h264 320x240 in stream 0x1e0 with 50 frames", s)
	}
}

func TestPacketizeReassemble(t *testing.T) {
	m, _ := NewMuxer(MuxerConfig{})
	var psFrames [][]byte
	for i, f := range defaultFrames(t) {
		psFrames = append(psFrames, m.Mux(f.Data, f.Key, uint64(i)*3600))
	}
	psFrames = append(psFrames, bytes.Repeat([]byte{7}, 200_000)) // a frame larger than any packet
	for _, tc := range []struct {
		name    string
		cfg     PacketizerConfig
		tsStep  uint32
		maxSize int
	}{
		{"udp", PacketizerConfig{SSRC: 100000001, FirstSequence: 65530, FirstTimestamp: 1<<32 - 7200}, 3600, 1400},
		{"ms timestamps", PacketizerConfig{SSRC: 5, TimestampMS: true}, 40, 1400},
		{"tcp 64K", PacketizerConfig{SSRC: 7, MaxPacketSize: 65535}, 3600, 65535},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewPacketizer(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			var all [][]byte
			for i, f := range psFrames {
				pkts := p.Packetize(f)
				for j, pkt := range pkts {
					info, _, err := ParseRTP(pkt)
					if err != nil {
						t.Fatal(err)
					}
					if len(pkt) > tc.maxSize {
						t.Fatalf("packet of %d bytes, limit %d", len(pkt), tc.maxSize)
					}
					if info.Marker != (j == len(pkts)-1) {
						t.Fatalf("frame %d packet %d/%d: marker %v", i, j, len(pkts), info.Marker)
					}
					if want := tc.cfg.FirstTimestamp + uint32(i)*tc.tsStep; info.Timestamp != want {
						t.Fatalf("frame %d timestamp %d, want %d", i, info.Timestamp, want)
					}
					if info.SSRC != tc.cfg.SSRC || info.PayloadType != 96 {
						t.Fatalf("SSRC %d PT %d", info.SSRC, info.PayloadType)
					}
				}
				all = append(all, pkts...)
			}
			got, err := Reassemble(all)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(psFrames) {
				t.Fatalf("%d frames reassembled, want %d", len(got), len(psFrames))
			}
			for i := range got {
				if !bytes.Equal(got[i], psFrames[i]) {
					t.Fatalf("frame %d differs after reassembly", i)
				}
			}
		})
	}
	if _, err := NewPacketizer(PacketizerConfig{MaxPacketSize: 65536}); err == nil {
		t.Error("MaxPacketSize 65536 accepted")
	}
}

// countingWriter records the size of each Write.
type countingWriter struct {
	bytes.Buffer
	writes []int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes = append(w.writes, len(p))
	return w.Buffer.Write(p)
}

func TestFramingRoundTrip(t *testing.T) {
	var w countingWriter
	sizes := []int{0, 1, 1400, 32768, 65535}
	for _, n := range sizes {
		if err := WriteFramed(&w, bytes.Repeat([]byte{byte(n)}, n)); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(w.writes, []int{2, 3, 1402, 32770, 65537}) {
		t.Errorf("writes %v: want length and packet in one Write each", w.writes)
	}
	if err := WriteFramed(&w, make([]byte, 65536)); err == nil {
		t.Error("a 65536-byte packet was framed")
	}
	buf := make([]byte, MaxRTPSizeTCP)
	for _, n := range sizes {
		pkt, err := ReadFramed(&w, buf)
		if err != nil {
			t.Fatal(err)
		}
		if len(pkt) != n || (n > 0 && pkt[0] != byte(n)) {
			t.Fatalf("read %d bytes, want %d", len(pkt), n)
		}
	}
	if _, err := ReadFramed(bytes.NewReader([]byte{0, 5, 1, 2}), buf); err == nil {
		t.Error("a truncated frame was read")
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// streamThrough sends 10 frames through s at 250 fps and returns the payload sent.
func streamThrough(t *testing.T, ctx context.Context, s Sender, maxPkt int) []byte {
	t.Helper()
	var mu sync.Mutex
	var sent []byte
	cfg := StreamConfig{Frames: defaultFrames(t)[:10], FrameRate: 250, Packetizer: PacketizerConfig{SSRC: 1234, MaxPacketSize: maxPkt}}
	err := Stream(ctx, cfg, s, func(_, payload []byte) {
		mu.Lock()
		sent = append(sent, payload...)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	return sent
}

func checkReceived(t *testing.T, ctx context.Context, r *Receiver, sent []byte) {
	t.Helper()
	s, err := r.WaitBytes(ctx, len(sent))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.Payload(), sent) {
		t.Fatalf("received payload (%d bytes) differs from the sent one (%d bytes)", s.Bytes, len(sent))
	}
	pkts := r.Packets()
	for i, p := range pkts {
		if p.SSRC != 1234 || (i > 0 && p.Sequence != pkts[i-1].Sequence+1) {
			t.Fatalf("packet %d: %+v", i, p)
		}
	}
	d, err := Demux(r.Payload())
	if err != nil || d.Packs != 10 || d.PSMs != 1 {
		t.Fatalf("demux: %v, %d packs %d PSMs", err, d.Packs, d.PSMs)
	}
}

func TestUDPSendReceive(t *testing.T) {
	ctx := testCtx(t)
	r, err := ListenUDPReceiver("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewUDPSender(conn, r.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sent := streamThrough(t, ctx, s, 0)
	checkReceived(t, ctx, r, sent)
	if src := r.Stats().Sources; len(src) != 1 || src[0] != s.LocalAddr() {
		t.Errorf("sources %v, want [%s]", src, s.LocalAddr())
	}
}

func TestTCPSenderDialsLateListener(t *testing.T) {
	ctx := testCtx(t)
	// The receiver listens only after 300 ms: the sender's first connects are refused.
	r, err := ListenTCPReceiver("127.0.0.1:0", 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	start := time.Now()
	s, err := DialTCPSender(ctx, "", r.LocalAddr(), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if time.Since(start) < 250*time.Millisecond {
		t.Errorf("connected after %v, before the listener opened", time.Since(start))
	}
	checkReceived(t, ctx, r, streamThrough(t, ctx, s, 65535))
}

func TestTCPReceiverDialsSender(t *testing.T) {
	ctx := testCtx(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	r := DialTCPReceiver(ln.Addr().String(), 2*time.Second)
	defer r.Close()
	s, err := AcceptTCPSender(ctx, ln)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkReceived(t, ctx, r, streamThrough(t, ctx, s, 30000))
}

func TestDialGivesUp(t *testing.T) {
	port, err := ReservePort("tcp", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	r := DialTCPReceiver(net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 200*time.Millisecond)
	defer r.Close()
	if _, err := r.WaitPackets(testCtx(t), 1); err == nil {
		t.Error("waiting on a receiver whose dial failed returned no error")
	}
}
