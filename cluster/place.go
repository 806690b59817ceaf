package cluster

// StreamWeight is how many registered devices one relayed stream weighs in
// Place: a node relays some hundreds of 4 Mbit/s streams but holds ten
// thousands of devices (a keepalive a minute each), so streams dominate
// once a node relays a few.
const StreamWeight = 20

// Place is the node device deviceID should register at, for the redirect
// registrar: its current owner while that node is alive (sticky), else the
// least loaded node by devices + StreamWeight*streams, counting the devices
// Place sent to each node since its record last reached us; ties go to the
// lowest node ID. The caller answers 302 unless it is Self.
func (c *Cluster) Place(deviceID string) Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	nodes := c.nodesLocked()
	if owner, ok := c.ownerLocked(deviceID); ok {
		for _, n := range nodes {
			if n.ID == owner {
				return n
			}
		}
	}
	n := leastLoaded(nodes, c.pending)
	if n.ID != c.self.ID { // our own count is current
		c.pending[n.ID]++
	}
	return n
}

// leastLoaded picks the node with the lowest load (pending: devices sent to
// a node that its record does not count yet); nodes is sorted by ID, so the
// first of equals wins.
func leastLoaded(nodes []Node, pending map[string]int) Node {
	var best Node
	bestLoad := -1
	for _, n := range nodes {
		load := n.Devices + pending[n.ID] + StreamWeight*n.Streams
		if bestLoad < 0 || load < bestLoad {
			best, bestLoad = n, load
		}
	}
	return best
}
