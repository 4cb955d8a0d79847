package connection

// KernelRoute is the kernel's count for a route it forwards (nftables):
// the proxy never sees those connections, so they are not in the other
// fields of Metrics.
type KernelRoute struct {
	// Rules is the number of nftables rules of the route.
	Rules int
	// Connections counts new connections (and UDP flows) forwarded.
	Connections uint64
	// Packets and Bytes count the forwarded traffic, both directions.
	Packets, Bytes uint64
	// Dropped counts packets dropped by the route's IP lists and maxRate.
	Dropped uint64
}
