package media

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// StreamConfig describes a live stream as a GB/T 28181 camera sends it: H.264 frames muxed into
// PS, packetized into RTP, paced at the frame rate.
type StreamConfig struct {
	Frames     []Frame // access units, from SplitAccessUnits; must not be empty
	FrameRate  int     // default 25
	Loop       bool    // start over after the last frame; false sends the frames once
	Muxer      MuxerConfig
	Packetizer PacketizerConfig // its FrameRate is taken from FrameRate
	// FirstPTS is the PS presentation time of the first frame (90 kHz).
	FirstPTS uint64
}

// Stream sends cfg's frames through s at the frame rate until ctx ends or, without Loop, the last
// frame is sent. onPacket, when not nil, is called with each RTP packet and its payload after it was
// sent. It returns nil when the frames ran out, ctx.Err() when ctx ended, or the send error.
func Stream(ctx context.Context, cfg StreamConfig, s Sender, onPacket func(pkt, payload []byte)) error {
	if len(cfg.Frames) == 0 {
		return errors.New("stream: no frames")
	}
	if cfg.FrameRate <= 0 {
		cfg.FrameRate = DefaultFrameRate
	}
	cfg.Packetizer.FrameRate = cfg.FrameRate
	mux, err := NewMuxer(cfg.Muxer)
	if err != nil {
		return err
	}
	pkz, err := NewPacketizer(cfg.Packetizer)
	if err != nil {
		return err
	}
	interval := time.Second / time.Duration(cfg.FrameRate)
	ptsStep := uint64(ClockRate / cfg.FrameRate)
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for n := 0; ; n++ {
		i := n % len(cfg.Frames)
		if n > 0 && i == 0 && !cfg.Loop {
			return nil
		}
		if wait := time.Until(start.Add(time.Duration(n) * interval)); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return ctx.Err()
		}
		f := cfg.Frames[i]
		ps := mux.Mux(f.Data, f.Key, cfg.FirstPTS+uint64(n)*ptsStep)
		for _, pkt := range pkz.Packetize(ps) {
			if err := s.Send(pkt); err != nil {
				return fmt.Errorf("send RTP to %s: %w", s.RemoteAddr(), err)
			}
			if onPacket != nil {
				onPacket(pkt, pkt[rtpHeaderLen:])
			}
		}
	}
}
