package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/rs/zerolog"
)

const (
	// tcpReadBuf holds the largest RFC 4571 frame plus room to read ahead.
	tcpReadBuf = frameHeaderLen + 65535 + 16<<10
	// maxBadFrames consecutive non-RTP frames mean the stream is not RFC
	// 4571 framed (or lost its framing): the leg is closed.
	maxBadFrames = 16
)

// maxRefusalLogs bounds the log lines about refused media connections per
// leg; later ones are only counted (Stats.Refused).
const maxRefusalLogs = 3

// acceptFrom accepts the one media connection of a TCP-passive leg from an
// address admit takes, and closes the listener (the port stays reserved in
// the pool until the leg closes). Any other connection is reset at once,
// counted and logged (the first few), and the leg keeps waiting.
func (l *Leg) acceptFrom(ln *net.TCPListener, admit func(netip.Addr) error, onRefused func(netip.AddrPort)) (*net.TCPConn, error) {
	defer ln.Close()
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			return nil, err
		}
		from := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		if err := admit(from.Addr().Unmap()); err != nil {
			_ = c.SetLinger(0) // reset: no byte for the stranger, no TIME_WAIT for us
			c.Close()
			if n := l.refused.Add(1); n <= maxRefusalLogs {
				ev := l.log.Warn().Stringer("from", from).Str("reason", err.Error()).Uint64("refused", n)
				if n == maxRefusalLogs {
					ev = ev.Bool("further_refusals_only_counted", true)
				}
				ev.Msg("refused a media connection; still waiting for the peer")
			}
			if onRefused != nil {
				onRefused(from)
			}
			continue
		}
		l.log.Info().Stringer("peer", from).Msg("media connection accepted")
		return c, nil
	}
}

// dialRetry connects from local to dest, retrying until timeout: some peers
// open their listener only after they have answered the INVITE.
func dialRetry(ctx context.Context, local, dest netip.AddrPort, timeout time.Duration, log *zerolog.Logger) (*net.TCPConn, error) {
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(local), Control: reuseAddr}
	deadline := time.Now().Add(timeout)
	for attempt := 1; ; attempt++ {
		d.Deadline = deadline
		c, err := d.DialContext(ctx, network("tcp", local.Addr()), dest.String())
		if err == nil {
			log.Info().Stringer("peer", dest).Int("attempt", attempt).Msg("media connection established")
			return c.(*net.TCPConn), nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if time.Until(deadline) < connectRetryEvery {
			return nil, fmt.Errorf("relay: could not connect media to %s within %v (%d attempts, last error: %w); check that the peer listens on the port in its SDP", dest, timeout, attempt, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(connectRetryEvery):
		}
	}
}

// readFrames reads RFC 4571 frames from conn until it ends, and hands the
// valid RTP packets to deliver in batches. A frame split across reads waits
// for its rest; a non-RTP frame is dropped and counted; a zero length or a
// run of non-RTP frames ends the leg with an error.
func readFrames(conn *net.TCPConn, in *inbound, deliver func(*scratch, []pkt, int64)) error {
	buf := make([]byte, tcpReadBuf)
	w, bad := 0, 0
	for {
		n, rerr := conn.Read(buf[w:])
		w += n
		r := 0
		if n > 0 {
			now := time.Now().UnixNano()
			sc := getScratch()
			var ferr error
			for {
				size, complete, err := nextFrame(buf[r:w])
				if err != nil {
					ferr = fmt.Errorf("relay: %w from %s: the peer does not frame RTP over TCP with a 2-byte length (RFC 4571)", err, conn.RemoteAddr())
					break
				}
				if !complete {
					break
				}
				p, ok := in.admit(buf[r : r+size])
				r += size
				if !ok {
					if bad++; bad >= maxBadFrames {
						ferr = fmt.Errorf("relay: %d consecutive TCP frames from %s are not RTP: the stream is not RFC 4571 framed RTP (first bytes % x)", bad, conn.RemoteAddr(), buf[r-size:r-size+min(size, 8)])
						break
					}
					continue
				}
				bad = 0
				sc.pkts = append(sc.pkts, p)
				if len(sc.pkts) == maxPkts {
					deliver(sc, sc.pkts, now)
					sc.pkts = sc.pkts[:0]
				}
			}
			in.commit(now) // counts first, as for UDP: a reader of Stats never lags what was forwarded
			deliver(sc, sc.pkts, now)
			putScratch(sc)
			if ferr != nil {
				return ferr
			}
			w = copy(buf, buf[r:w])
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return fmt.Errorf("relay: peer %s closed the media connection", conn.RemoteAddr())
			}
			return rerr
		}
	}
}

func tcpWriteError(conn *net.TCPConn, err error) error {
	return fmt.Errorf("relay: sending media over TCP to %s failed: %w; the peer closed the connection or stopped reading", conn.RemoteAddr(), err)
}
