package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/gbproxy/gbproxy/b2bua"
)

// In a cluster, GET /api/v1/sessions is the cluster's: the node asked adds
// the other live nodes' own lists (?local=true, which does not recurse),
// each fetched from the node's API with this node's http.token within
// peerTimeout. A node that does not answer in time is left out and named in
// the skippedHeader; the list is then partial, and its sessions forwarded
// by this node are still listed (from here, without counters). A call
// forwarded by the registering node to the channel's owner is one session:
// the owner's entry (with the counters) is kept, the forwarder's dropped.

// peerTimeout bounds the whole fan-out of one request.
const peerTimeout = 2 * time.Second

// skippedHeader names the nodes whose sessions a cluster-wide list lacks,
// each with why.
const skippedHeader = "X-Cluster-Skipped"

// clusterSessions merges own (this node's, Node set) with the other nodes'.
func (a *app) clusterSessions(r *http.Request, own []b2bua.Session) ([]b2bua.Session, []string) {
	self := a.cluster.Self().ID
	ctx, cancel := context.WithTimeout(r.Context(), peerTimeout)
	defer cancel()
	q := url.Values{"local": {"true"}}
	for _, name := range []string{"device_id", "platform", "q"} {
		if v := r.URL.Query().Get(name); v != "" {
			q.Set(name, v)
		}
	}
	type answer struct {
		node     string
		sessions []b2bua.Session
		err      error
	}
	var (
		mu      sync.Mutex
		answers []answer
		wg      sync.WaitGroup
	)
	for _, n := range a.cluster.Nodes() {
		if n.ID == self {
			continue
		}
		wg.Go(func() {
			ss, err := a.peerSessions(ctx, n.API, q)
			mu.Lock()
			answers = append(answers, answer{n.ID, ss, err})
			mu.Unlock()
		})
	}
	wg.Wait()
	// reporter says which node listed each session: its own entry wins.
	type entry struct {
		s        b2bua.Session
		reporter string
	}
	merged := map[string]entry{}
	add := func(s b2bua.Session, reporter string) {
		k := sessionKey(s)
		if e, ok := merged[k]; ok && e.reporter == e.s.Node {
			return
		}
		merged[k] = entry{s, reporter}
	}
	for _, s := range own {
		add(s, self)
	}
	var skipped []string
	for _, an := range answers {
		if an.err != nil {
			a.log.Warn().Err(an.err).Str("node", an.node).Msg("cluster node's sessions left out of the cluster-wide list")
			skipped = append(skipped, an.node+" ("+an.err.Error()+")")
			continue
		}
		for _, s := range an.sessions {
			if s.Node == "" {
				s.Node = an.node
			}
			add(s, an.node)
		}
	}
	out := make([]b2bua.Session, 0, len(merged))
	for _, e := range merged {
		out = append(out, e.s)
	}
	return out, skipped
}

// peerSessions is another node's own session list.
func (a *app) peerSessions(ctx context.Context, api string, q url.Values) ([]b2bua.Session, error) {
	if api == "" {
		return nil, fmt.Errorf("it announces no API address")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+api+"/api/v1/sessions?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	if a.cfg.HTTP.Token != "" {
		req.Header.Set("Authorization", "Bearer "+a.cfg.HTTP.Token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("its API answered %s", res.Status)
	}
	var out []b2bua.Session
	if err := json.NewDecoder(io.LimitReader(res.Body, 64<<20)).Decode(&out); err != nil {
		return nil, fmt.Errorf("its session list is unreadable: %w", err)
	}
	return out, nil
}
