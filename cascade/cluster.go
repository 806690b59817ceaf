package cascade

import "github.com/gbproxy/gbproxy/cluster"

// UseCluster makes this node one of a gbproxy cluster sharing state in
// etcd (nil, the default, is a single node). Call it before Start.
func (c *Cascade) UseCluster(cl *cluster.Cluster) {
	c.cluster = cl
	c.publishToCluster()
}
