package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gbproxy/gbproxy/cluster/etcdtest"
	"github.com/gbproxy/gbproxy/security/testpki"
)

// A node joins an etcd that requires a client certificate and a password,
// from cluster.tls and cluster.username/password.
func TestClusterOverTLSWithAuth(t *testing.T) {
	etcd := etcdtest.StartWith(t, etcdtest.Options{PKI: testpki.New(t), User: "gbproxy", Password: "etcd-pw-5e2b"})
	f := etcd.TLSFiles()
	rig := &clusterRig{t: t, etcd: etcd, bin: buildProxy(t), platforms: "[]", nodes: map[string]proxyProcess{},
		clusterKeys: fmt.Sprintf(", tls: {ca: %q, cert: %q, key: %q}, username: gbproxy, password: etcd-pw-5e2b", f.CA, f.ClientCert, f.ClientKey)}
	n := rig.startNode("n1")
	eventually(t, 20*time.Second, "node joined over TLS with its password", func() bool {
		var v clusterJSON
		getJSON(t, n.http, "/api/v1/cluster", &v)
		return v.Clustered && v.EtcdUp && len(v.Nodes) == 1 && v.Nodes[0].ID == "n1"
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if resp, err := etcd.Client("gbproxy", "etcd-pw-5e2b").Get(ctx, "/gbproxy/nodes/n1"); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("node record not in etcd: %v", err)
	}
}
