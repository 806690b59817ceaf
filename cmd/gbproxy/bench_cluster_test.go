package main

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkClusterRegistration registers benchDevices simulated devices to
// one node, then to a three-node cluster (etcd on this machine) through one
// node, the redirector, which answers 302 for about two devices in three:
// those count the whole redirect flow (401, 302, then 401 and 200 at their
// node). It reports both rates from the same run and the etcd writes per
// registration (every node's /api/v1/cluster writes, before and after).
// Run it with `make bench`; it is skipped without etcd.
func BenchmarkClusterRegistration(b *testing.B) {
	oneAddressForAll(b)
	rig := newClusterRig(b, "")
	rig.logLevel = "warn"
	single := startProxyProcess(b, rig.bin, "")
	one := runLoad(b, single.lower, benchDevices)
	single.kill()

	nodes := []proxyProcess{rig.startNode("a"), rig.startNode("b"), rig.startNode("c")}
	views := func() (writes uint64, devices map[string]int) {
		devices = map[string]int{}
		for _, p := range nodes {
			var v clusterView
			getJSON(b, p.http, "/api/v1/cluster", &v)
			writes += v.Writes
			for _, n := range v.Nodes {
				if n.ID == v.Node {
					devices[n.ID] = n.Devices
				}
			}
		}
		return writes, devices
	}
	eventually(b, 10*time.Second, "three members", func() bool {
		var v clusterView
		getJSON(b, nodes[0].http, "/api/v1/cluster", &v)
		return len(v.Nodes) == 3
	})
	before, _ := views()
	res := runLoad(b, nodes[0].lower, benchDevices)
	var after uint64
	var spread map[string]int
	eventually(b, 30*time.Second, "every node counts its devices and its writes settle", func() bool {
		w, d := views()
		settled := w == after && d["a"]+d["b"]+d["c"] == res.Registered
		after, spread = w, d
		if !settled {
			time.Sleep(time.Second) // the load record is written at most every 2 s
		}
		return settled
	})
	perReg := float64(after-before) / float64(max(res.Registered, 1))

	b.ReportMetric(res.Rate, "cluster-reg/s")
	b.ReportMetric(one.Rate, "single-reg/s")
	b.ReportMetric(res.Rate/one.Rate, "ratio")
	b.ReportMetric(perReg, "etcd-writes/reg")
	b.ReportMetric(0, "ns/op") // one op is the whole run
	summary := fmt.Sprintf("cluster registration: %d/%d devices through one redirector of 3 nodes in %v = %.0f reg/s "+
		"(%d redirected, spread %v; %d failed %v) against one node %.0f reg/s (ratio %.2f); etcd writes %d = %.2f per registration",
		res.Registered, benchDevices, res.Elapsed.Round(time.Millisecond), res.Rate, res.Redirected, spread, res.Failed, res.FailReasons,
		one.Rate, res.Rate/one.Rate, after-before, perReg)
	b.Log(summary)
	fmt.Println(summary)
	if res.Failed > 0 || one.Failed > 0 {
		b.Errorf("registrations failed: cluster %d (%v), single node %d (%v)", res.Failed, res.FailReasons, one.Failed, one.FailReasons)
	}
}
