package cluster

import (
	"context"
	"maps"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

func (c *Cluster) session() *concurrency.Session {
	c.sessMu.Lock()
	defer c.sessMu.Unlock()
	return c.sess
}

// waitSession returns the current session, waiting for one; nil when ctx ends.
func (c *Cluster) waitSession(ctx context.Context) *concurrency.Session {
	for {
		c.sessMu.Lock()
		s, wait := c.sess, c.sessWait
		c.sessMu.Unlock()
		if s != nil {
			return s
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil
		}
	}
}

func (c *Cluster) setSession(s *concurrency.Session) {
	c.sessMu.Lock()
	defer c.sessMu.Unlock()
	c.sess = s
	if s != nil {
		close(c.sessWait)
	} else {
		c.sessWait = make(chan struct{})
	}
}

// sessionLoop holds this node's lease: it grants one, and when it is lost
// (etcd unreachable past the TTL, or restarted without it) grants another
// and has everything this node holds written again under it.
func (c *Cluster) sessionLoop() {
	defer c.wg.Done()
	var bo backoff
	var old clientv3.LeaseID
	for {
		ctx, cancel := context.WithTimeout(c.ctx, c.opTimeout())
		grant, err := c.client().Grant(ctx, c.cfg.ttlSeconds())
		cancel()
		var s *concurrency.Session
		if err == nil {
			// The session keeps the lease alive until c.ctx ends (Close).
			s, err = concurrency.NewSession(c.client(), concurrency.WithLease(grant.ID), concurrency.WithContext(c.ctx))
		}
		if err != nil {
			c.fail("grant lease", err)
			if !c.sleep(bo.next()) {
				return
			}
			continue
		}
		bo = backoff{}
		c.mu.Lock()
		c.resync, c.nodeDirty = true, true
		if old != 0 {
			c.oldLease = old
		}
		loaded := c.loaded
		c.mu.Unlock()
		c.setSession(s)
		c.setUp(true, nil)
		c.log.Info().Str("lease", leaseKey(s.Lease())).Dur("ttl", c.cfg.TTL).Msg("cluster: joined")
		c.loadSecret()
		c.wake()
		select { // etcd may have been replaced: read everything again
		case c.rewatch <- struct{}{}:
		default:
		}
		if loaded {
			c.markReady()
		}
		select {
		case <-s.Done():
		case <-c.closing:
			return
		}
		c.setSession(nil)
		if c.isClosing() {
			return
		}
		c.log.Warn().Str("lease", leaseKey(s.Lease())).Msg("cluster: lease lost; joining again with a new one")
		old = s.Lease()
	}
}

// probeLoop reads this node's record periodically (a read; nothing is
// written) so that etcd going away and coming back is logged and measured
// even while nothing else talks to it.
func (c *Cluster) probeLoop() {
	defer c.wg.Done()
	every := min(max(c.cfg.TTL/5, 200*time.Millisecond), 2*time.Second)
	for c.sleep(every) {
		ctx, cancel := context.WithTimeout(c.ctx, max(every, time.Second))
		_, err := c.client().Get(ctx, nodesPrefix+c.cfg.NodeID)
		cancel()
		if err != nil {
			c.fail("probe", err)
		}
		c.setUp(err == nil, err)
	}
}

// Lead campaigns, in the background, to be the node that registers to upper
// platform platformID: once elected it calls run with a context cancelled
// when leadership is lost (the lease expired: etcd unreachable past the TTL),
// when ctx ends or on Close; then it campaigns again. run must return
// promptly once its context is cancelled. Until ctx ends, this node stays a
// candidate; another takes over within the TTL of its death. After Close,
// Lead does nothing.
func (c *Cluster) Lead(ctx context.Context, platformID string, run func(ctx context.Context)) {
	c.mu.Lock()
	if c.isClosing() {
		c.mu.Unlock()
		return
	}
	c.leads.Add(1)
	// One loop per platform at a time: a platform replaced on this node
	// (moved, or removed and added again) campaigns under the same key
	// (one per lease), so the new loop waits for the old one's resignation.
	prev := c.leadLoops[platformID]
	done := make(chan struct{})
	c.leadLoops[platformID] = done
	c.mu.Unlock()
	go func() {
		defer c.leads.Done()
		defer func() {
			c.mu.Lock()
			if c.leadLoops[platformID] == done {
				delete(c.leadLoops, platformID)
			}
			c.mu.Unlock()
			close(done)
		}()
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stop := context.AfterFunc(c.stopCtx, cancel)
		defer stop()
		if prev != nil {
			select {
			case <-prev:
			case <-ctx.Done():
				return
			}
		}
		var bo backoff
		for ctx.Err() == nil {
			s := c.waitSession(ctx)
			if s == nil {
				return
			}
			ran, err := c.leadOnce(ctx, s, platformID, run)
			if err != nil {
				c.fail("campaign", err)
			}
			if err != nil || ran {
				// A failed campaign, or run returned on its own: don't spin.
				t := time.NewTimer(bo.next())
				select {
				case <-t.C:
				case <-ctx.Done():
				}
				t.Stop()
			} else {
				bo = backoff{}
			}
		}
	}()
}

// leadOnce campaigns once and runs run while elected. ran: run returned
// with leadership intact.
func (c *Cluster) leadOnce(ctx context.Context, s *concurrency.Session, platform string, run func(context.Context)) (ran bool, err error) {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.Done():
			cancel()
		case <-lctx.Done():
		}
	}()
	e := concurrency.NewElection(s, electionPrefix+platform)
	if err := e.Campaign(lctx, c.cfg.NodeID); err != nil {
		if lctx.Err() != nil {
			return false, nil // lease lost or stopping: not a failure of its own
		}
		return false, err
	}
	c.wrote(1)
	c.setLeading(platform, true)
	c.log.Info().Str("platform", platform).Msg("cluster: elected to register to the upper platform")
	run(lctx)
	ran = lctx.Err() == nil
	c.setLeading(platform, false)
	select {
	case <-s.Done():
	default: // resign so that another node takes over at once
		rctx, rcancel := context.WithTimeout(context.Background(), c.opTimeout())
		if err := e.Resign(rctx); err == nil {
			c.wrote(1)
		}
		rcancel()
	}
	c.log.Info().Str("platform", platform).Msg("cluster: leadership of the upper platform ended")
	return ran, nil
}

func (c *Cluster) setLeading(platform string, on bool) {
	c.mu.Lock()
	if on {
		c.leading[platform] = true
	} else {
		delete(c.leading, platform)
	}
	c.self.Platforms = slices.Sorted(maps.Keys(c.leading))
	c.nodeDirty = true
	c.mu.Unlock()
	c.wake()
}
