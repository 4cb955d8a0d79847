package connection

import (
	"net/netip"
)

// Inspection methods for the tests: they read one table entry or copy the
// whole state under its locks, which users get (counted, not listed)
// through Snapshot. Keeping them here keeps them out of the Manager's
// API while the tests can still look inside.

// RouteActive returns the number of open connections assigned to route.
func (m *Manager) RouteActive(route string) int {
	m.routeMu.Lock()
	defer m.routeMu.Unlock()
	return m.routes[route]
}

// IPActive returns the number of open connections from ip (unmapped
// first), that is from its /IPv6PrefixLen for an IPv6 address.
func (m *Manager) IPActive(ip netip.Addr) int {
	ip = m.ipKey(ip.Unmap())
	s := m.ips.shardFor(ip)
	s.Lock()
	defer s.Unlock()
	if e := s.Get(ip); e != nil {
		return e.Value.active
	}
	return 0
}

// TrackedIPs returns the number of per-IP entries held (active or keeping
// rate history); it shows the MaxTrackedIPs bound and pruning at work.
func (m *Manager) TrackedIPs() int { return m.ips.Len() }

// TrackedRouteIPs returns the number of per-route per-IP entries held (see
// RouteLimits); bounded by MaxTrackedIPs like TrackedIPs.
func (m *Manager) TrackedRouteIPs() int { return m.rips.Len() }
