package sim

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/gbproxy/gbproxy/cmd/gbsim/sim/media"
)

// Recordings (GB/T 28181 §9.8 playback, §9.9 download): the device records every channel all the
// time, so any asked range t=<start> <end> can be played. The clip is streamed with the PS
// timestamps (SCR and PTS) giving the position in the range at 90 kHz, so a receiver can read where
// the playback is; the RTP timestamp follows the wall clock, paused or not. INFO with MANSRTSP
// (Annex B) seeks (PLAY Range: npt=<s>-), changes the pace (Scale: x) and pauses (PAUSE); at the end
// of the range the device sends MediaStatus NotifyType 121 in the dialog and stops sending.

// defaultRecordingLength is the range played when t= gives none (stop not after start).
const defaultRecordingLength = time.Hour

// RecordingState is where a playback or download is.
type RecordingState struct {
	Position  time.Duration // from the start of the asked range
	Length    time.Duration // of the asked range
	Scale     float64       // position seconds per wall-clock second
	Paused    bool
	EndOfFile bool // the end was reached and MediaStatus 121 sent
	Infos     int  // MANSRTSP requests answered 200
}

// recording is the control state of one playback or download call.
type recording struct {
	mu      sync.Mutex
	state   RecordingState
	seek    time.Duration // -1: none pending
	changed chan struct{} // closed and replaced on every control change
}

func (r *recording) notify() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// recordingKind is "Playback" or "Download" for such an offer, else "".
func recordingKind(offer SDP) string {
	for _, k := range []string{"Playback", "Download"} {
		if strings.EqualFold(offer.Session, k) {
			return k
		}
	}
	return ""
}

func recordingLength(offer SDP) time.Duration {
	if offer.Stop > offer.Start {
		return time.Duration(offer.Stop-offer.Start) * time.Second
	}
	return defaultRecordingLength
}

// recordingFileSize is a=filesize of a download: the range at 2 Mbit/s, as RecordInfo reports.
func recordingFileSize(offer SDP) int64 {
	return int64(recordingLength(offer)/time.Second) * 256 << 10
}

// recordingOf returns the control state of a recording call, made on first use.
func (d *Device) recordingOf(c *deviceCall) *recording {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c.rec == nil {
		scale := 1.0
		if recordingKind(c.info.Offer) == "Download" && c.info.Offer.DownloadSpeed > 0 {
			scale = float64(c.info.Offer.DownloadSpeed)
		}
		c.rec = &recording{state: RecordingState{Length: recordingLength(c.info.Offer), Scale: scale}, seek: -1,
			changed: make(chan struct{})}
	}
	return c.rec
}

// Recording returns the state of the playback or download with this Call-ID.
func (d *Device) Recording(callID string) (RecordingState, bool) {
	d.mu.Lock()
	c, ok := d.calls[callID]
	d.mu.Unlock()
	if !ok || recordingKind(c.info.Offer) == "" {
		return RecordingState{}, false
	}
	r := d.recordingOf(c)
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state, true
}

// runRecording streams the recording through s until its end, ctx's end or a send failure.
func (d *Device) runRecording(ctx context.Context, c *deviceCall, s media.Sender, pc media.PacketizerConfig) error {
	r := d.recordingOf(c)
	rate := d.cfg.FrameRate
	pc.FrameRate = rate
	mux, err := media.NewMuxer(media.MuxerConfig{})
	if err != nil {
		return err
	}
	pkz, err := media.NewPacketizer(pc)
	if err != nil {
		return err
	}
	interval := time.Second / time.Duration(rate)
	start, ts0 := time.Now(), randomUint32()
	next := start
	timer := time.NewTimer(0)
	defer timer.Stop()
	frame := 0
	for {
		r.mu.Lock()
		if r.seek >= 0 {
			r.state.Position, r.seek, frame = r.seek, -1, 0 // a key frame first
		}
		st, changed := r.state, r.changed
		r.mu.Unlock()
		if st.Paused {
			select {
			case <-changed:
				next = time.Now()
				continue
			case <-ctx.Done():
				return nil
			}
		}
		if st.Position >= st.Length || st.Position < 0 {
			r.mu.Lock()
			r.state.EndOfFile = true
			r.mu.Unlock()
			d.streamChange.notify()
			d.log.Info("end of recording reached", "call_id", c.info.CallID, "position", st.Position)
			sctx, cancel := context.WithTimeout(ctx, d.requestTimeout())
			defer cancel()
			return d.sendMediaStatus(sctx, c, "121")
		}
		if wait := time.Until(next); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return nil
			case <-timer.C:
				continue // a PAUSE or seek may have come meanwhile
			}
		}
		f := d.frames[frame%len(d.frames)]
		frame++
		pkz.SetTimestamp(ts0 + uint32(time.Since(start)*media.ClockRate/time.Second))
		ps := mux.Mux(f.Data, f.Key, uint64(st.Position*media.ClockRate/time.Second))
		for _, pkt := range pkz.Packetize(ps) {
			if err := s.Send(pkt); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("send RTP to %s: %w", s.RemoteAddr(), err)
			}
			d.mu.Lock()
			c.info.Packets++
			c.info.Bytes += len(pkt) - 12
			d.mu.Unlock()
		}
		d.streamChange.notify()
		r.mu.Lock()
		if r.seek < 0 {
			r.state.Position += time.Duration(float64(interval) * r.state.Scale)
		}
		r.mu.Unlock()
		next = next.Add(interval)
	}
}

type mediaStatusNotify struct {
	XMLName    xml.Name `xml:"Notify"`
	CmdType    string   `xml:"CmdType"`
	SN         int      `xml:"SN"`
	DeviceID   string   `xml:"DeviceID"`
	NotifyType string   `xml:"NotifyType"`
}

// sendMediaStatus sends a MediaStatus MESSAGE inside the call's dialog and expects a 2xx.
func (d *Device) sendMediaStatus(ctx context.Context, c *deviceCall, notifyType string) error {
	body, err := encodeBody(mediaStatusNotify{CmdType: "MediaStatus", SN: d.nextSN(), DeviceID: c.info.ChannelID, NotifyType: notifyType}, d.cfg.Charset)
	if err != nil {
		return err
	}
	c.byeMu.Lock()
	req := c.dlg.newRequest(sip.MESSAGE, c.dest, d.transport)
	c.byeMu.Unlock()
	req.AppendHeader(d.contact())
	setMANSCDPBody(req, body)
	d.mu.Lock()
	client := d.client
	d.mu.Unlock()
	res, err := client.Do(ctx, req)
	if err != nil {
		return fmt.Errorf("MediaStatus %s (Call-ID %s): %w", notifyType, c.info.CallID, err)
	}
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("MediaStatus %s (Call-ID %s): %w", notifyType, c.info.CallID, &StatusError{Method: "MESSAGE", Status: res.StatusCode, Reason: res.Reason})
	}
	return nil
}

// MANSRTSP is one playback control request (GB/T 28181 Annex B).
type MANSRTSP struct {
	Method string // PLAY, PAUSE or TEARDOWN
	CSeq   int
	// Range is the npt= start of a PLAY ("" for none or "now": resume where paused).
	Range string
	Scale string // "" when absent
}

// ParseMANSRTSP reads a MANSRTSP request: "<METHOD> RTSP/1.0", then headers.
func ParseMANSRTSP(body []byte) (MANSRTSP, error) {
	lines := strings.Split(strings.ReplaceAll(string(body), "\r\n", "\n"), "\n")
	f := strings.Fields(lines[0])
	if len(f) != 2 || !strings.HasPrefix(strings.ToUpper(f[1]), "RTSP/") {
		return MANSRTSP{}, fmt.Errorf("mansrtsp: bad request line %q", clipText(lines[0]))
	}
	m := MANSRTSP{Method: strings.ToUpper(f[0])}
	for _, ln := range lines[1:] {
		name, val, ok := strings.Cut(ln, ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "cseq":
			m.CSeq, _ = strconv.Atoi(val)
		case "range":
			v, ok := strings.CutPrefix(strings.ToLower(val), "npt=")
			if !ok {
				return m, fmt.Errorf("mansrtsp: Range %q: want npt=", clipText(val))
			}
			m.Range, _, _ = strings.Cut(v, "-")
			if m.Range == "now" {
				m.Range = ""
			}
		case "scale":
			m.Scale = val
		}
	}
	return m, nil
}

func clipText(s string) string { return s[:min(len(s), 64)] }

// onInfo answers a MANSRTSP INFO in a playback or download dialog; others get 481.
func (d *Device) onInfo(req *sip.Request, tx sip.ServerTransaction) {
	reply := func(code int, reason string, body []byte) {
		res := sip.NewResponseFromRequest(req, code, reason, body)
		if body != nil {
			ct := sip.ContentTypeHeader("Application/MANSRTSP")
			res.AppendHeader(&ct)
		}
		respond(d.log, tx, res)
	}
	var c *deviceCall
	if req.CallID() != nil {
		d.mu.Lock()
		c = d.calls[req.CallID().Value()]
		if c != nil && (c.info.Ended || c.info.Status != sip.StatusOK || toTag(req) != c.dlg.localTag) {
			c = nil
		}
		d.mu.Unlock()
	}
	if c == nil || recordingKind(c.info.Offer) == "" {
		reply(sip.StatusCallTransactionDoesNotExists, "Call Does Not Exist", nil)
		return
	}
	m, err := ParseMANSRTSP(req.Body())
	if err != nil {
		d.log.Warn("unreadable MANSRTSP", "call_id", c.info.CallID, "error", err)
		reply(sip.StatusBadRequest, "Bad MANSRTSP", nil)
		return
	}
	status, err := d.control(c, m)
	rtsp := fmt.Sprintf("RTSP/1.0 %d %s\r\nCSeq: %d\r\n\r\n", status, rtspReason(status), m.CSeq)
	if err != nil {
		d.log.Warn("MANSRTSP refused", "call_id", c.info.CallID, "method", m.Method, "error", err)
	} else {
		d.log.Info("MANSRTSP applied", "call_id", c.info.CallID, "method", m.Method, "range", m.Range, "scale", m.Scale)
	}
	reply(sip.StatusOK, "OK", []byte(rtsp))
	d.streamChange.notify()
}

func rtspReason(status int) string {
	switch status {
	case 200:
		return "OK"
	case 457:
		return "Invalid Range"
	case 501:
		return "Not Implemented"
	}
	return "Bad Request"
}

// control applies one MANSRTSP request and returns its RTSP status.
func (d *Device) control(c *deviceCall, m MANSRTSP) (int, error) {
	r := d.recordingOf(c)
	switch m.Method {
	case "PLAY", "PAUSE":
	case "TEARDOWN":
		d.stopMedia(c)
		return 200, nil
	default:
		return 501, fmt.Errorf("method %q", m.Method)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if m.Method == "PAUSE" {
		r.state.Paused = true
		r.state.Infos++
		r.notify()
		return 200, nil
	}
	if m.Range != "" {
		sec, err := strconv.ParseFloat(m.Range, 64)
		pos := time.Duration(sec * float64(time.Second))
		if err != nil || pos < 0 || pos > r.state.Length {
			return 457, fmt.Errorf("range %q outside 0-%v", m.Range, r.state.Length)
		}
		r.seek = pos
	}
	if m.Scale != "" {
		x, err := strconv.ParseFloat(m.Scale, 64)
		if err != nil || x == 0 || x < -8 || x > 8 {
			return 400, errors.New("scale " + m.Scale + ": want 0.25 to 8 or negative")
		}
		r.state.Scale = x
	}
	r.state.Paused = false
	r.state.Infos++
	r.notify()
	return 200, nil
}
