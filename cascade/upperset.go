package cascade

import (
	"context"
	"slices"

	"github.com/gbproxy/gbproxy/configs"
)

// upperSet is the running upper clients, immutable: a change swaps in a
// new one, so the per-request readers take no lock.
type upperSet struct {
	list []*upperClient // in the order they were added
	byID map[string]*upperClient
}

func newUpperSet(list []*upperClient) *upperSet {
	s := &upperSet{list: list, byID: make(map[string]*upperClient, len(list))}
	for _, u := range list {
		s.byID[u.id] = u
	}
	return s
}

// replaced is s with u in place of the client of the same ID, or added.
func (s *upperSet) replaced(u *upperClient) *upperSet {
	list := slices.Clone(s.list)
	if i := slices.IndexFunc(list, func(o *upperClient) bool { return o.id == u.id }); i >= 0 {
		list[i] = u
	} else {
		list = append(list, u)
	}
	return newUpperSet(list)
}

func (s *upperSet) without(id string) *upperSet {
	return newUpperSet(slices.DeleteFunc(slices.Clone(s.list), func(u *upperClient) bool { return u.id == id }))
}

func (up *upperSide) upperList() []*upperClient { return up.uppers.Load().list }

func (up *upperSide) upperByID(id string) *upperClient { return up.uppers.Load().byID[id] }

// shareOf is what platform p sees: a share set through the API wins over
// its entry's.
func (up *upperSide) shareOf(p configs.PlatformConfig) configs.ShareConfig {
	if saved, ok := up.savedShare(p.ID); ok {
		return saved
	}
	return p.Share
}

// put makes a client of platform p the running one of its ID, started
// when the side runs. The caller retires the client it replaces.
func (up *upperSide) put(p configs.PlatformConfig) error {
	u, err := newUpperClient(up, p, up.shareOf(p))
	if err != nil {
		return err
	}
	up.uppers.Store(up.uppers.Load().replaced(u))
	if up.started.Load() {
		u.start()
	}
	return nil
}

// start runs every client's registration loop.
func (up *upperSide) start() {
	up.startCluster()
	up.started.Store(true)
	for _, u := range up.upperList() {
		u.start()
	}
}

// remove takes platform id out of the running set and retires its client.
func (up *upperSide) remove(ctx context.Context, u *upperClient, reason string) {
	up.uppers.Store(up.uppers.Load().without(u.id))
	up.retire(ctx, u, reason)
	up.store.Delete(bucketPlatforms, u.id)
	up.store.Delete(bucketShares, u.id)
}

// retire ends an upper client no longer in the set: its loop stops, it
// unregisters (the node registered to it, in a cluster), and what hung on its registration ends with it.
func (up *upperSide) retire(ctx context.Context, u *upperClient, reason string) {
	u.stop()
	u.expire(ctx)
	u.closeConn()
	up.subs.dropPlatform(u)
	up.routes.dropPlatform(u)
	for _, f := range up.upperLostHooks {
		f(u.id, reason)
	}
}
