package main

import (
	"cmp"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/gbproxy/gbproxy/cluster/etcdtest"
)

// clusterRig is a real etcd and gbproxy nodes run as processes of their
// own (a node can be SIGKILLed), all on 127.0.0.1, sharing id and domain.
type clusterRig struct {
	t         testing.TB
	etcd      *etcdtest.Server
	bin       string
	platforms string // upper.platforms YAML flow list, the same on every node
	logLevel  string // the nodes' log.level; info unless set before startNode
	// stay turns the redirect registrar off: devices stay on the node they
	// register to (tests that place devices on given nodes).
	stay bool
	// clusterKeys are more cluster keys (YAML flow "key: value" pairs).
	clusterKeys string
	nodes       map[string]proxyProcess
}

// newClusterRig starts etcd (the test is skipped without an etcd binary,
// unless GBPROXY_REQUIRE_ETCD=1) and builds gbproxy; platforms is the
// upper.platforms YAML list every node gets ("" for none).
func newClusterRig(t testing.TB, platforms string) *clusterRig {
	t.Helper()
	if platforms == "" {
		platforms = "[]"
	}
	return &clusterRig{t: t, etcd: etcdtest.Start(t), bin: buildProxy(t), platforms: platforms, nodes: map[string]proxyProcess{}}
}

// startNode runs node id: its lower side advertised at its own lower
// address, node_ttl 2 s, redirect on unless r.stay; lowerKeys are more lower keys
// (YAML flow "key: value" pairs).
func (r *clusterRig) startNode(id string, lowerKeys ...string) proxyProcess {
	r.t.Helper()
	p := launchProxy(r.t, r.bin, func(lower, upper, httpAddr, dir string) string {
		extra := ""
		for _, k := range lowerKeys {
			extra += ", " + k
		}
		return fmt.Sprintf(`id: %q
domain: %q
lower: {listen: %q, password: %q, keepalive_interval: 60s%s}
upper: {listen: %q, platforms: %s}
store: {path: %q}
http: {listen: %q}
log: {level: %s}
cluster: {etcd: [%q], node_id: %q, advertise: %q, node_ttl: 2s, redirect: %t%s}
`, proxyID, proxyDomain, lower, devicePass, extra, upper, r.platforms, filepath.Join(dir, "gbproxy.db"), httpAddr, cmp.Or(r.logLevel, "info"),
			r.etcd.Endpoint(), id, lower, !r.stay, r.clusterKeys)
	})
	r.nodes[id] = p
	return p
}
