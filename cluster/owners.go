package cluster

// DeviceOwners maps every device held in the cluster to the node holding
// it: the other nodes' claims from the cache, this node's own at once (the
// cluster-wide device list of the admin API).
func (c *Cluster) DeviceOwners() map[string]string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[string]string, len(c.cache.owners)+len(c.mine))
	for id, o := range c.cache.owners {
		out[id] = o.node
	}
	for id := range c.mine {
		out[id] = c.self.ID
	}
	return out
}
