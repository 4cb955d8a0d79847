package connection

import (
	"fmt"
	"net/netip"
)

// RouteLimits are a route's admission limits, enforced by
// [Manager.AssignRouteLimits]. A value <= 0 means unlimited.
type RouteLimits struct {
	// MaxConnections caps the route's concurrent connections.
	MaxConnections int
	// MaxConnectionsPerIP caps one client IP's concurrent connections on
	// the route.
	MaxConnectionsPerIP int
	// RatePerMinute caps one client IP's route assignments in a sliding
	// minute. Refused attempts count too, as for the global rate limit, so
	// a client hammering at the limit stays refused.
	RatePerMinute int
}

// AssignRouteLimits attaches the route name and domain (may be "") to r and
// enforces lim, atomically with respect to every other assignment and
// Close: the per-IP and route counters can never overshoot under
// concurrency. The attempt is counted in the IP's route rate window first,
// then the checks run in this order (as in Open): the route cap per IP,
// the route rate per IP, the route cap.
// Assigning r again to the same route only updates the domain; assigning
// it to another route moves it (the old route's slots are released only on
// success). On error r is unchanged and still open; a refusal is a
// *LimitError with Reason ReasonRouteRateLimit, ReasonRouteIPLimit or
// ReasonRouteLimit. A client without a valid address is exempt from the
// per-IP limits, as in Open.
func (m *Manager) AssignRouteLimits(r *Record, route, domain string, lim RouteLimits) error {
	m.mustOwn(r)
	if route == "" {
		return fmt.Errorf("assign route to connection %d: %w", r.id, ErrEmptyRoute)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return fmt.Errorf("assign route %q to connection %d: %w", route, r.id, ErrClosed)
	}
	old := r.route.Load()
	if old != nil && old.route == route {
		r.route.Store(&routeInfo{route: route, domain: domain, rip: old.rip})
		return nil
	}
	addr := r.client.Addr()
	now := m.offset()
	var rip *routeIPEntry
	if addr.IsValid() && (lim.MaxConnectionsPerIP > 0 || lim.RatePerMinute > 0) {
		var err error
		if rip, err = m.admitRouteIP(route, addr, now, lim); err != nil {
			return err
		}
	} else if err := m.admitRoute(route, addr, lim.MaxConnections); err != nil {
		return err
	}
	if old != nil {
		m.routeMu.Lock()
		m.releaseRouteLocked(old.route)
		m.routeMu.Unlock()
		if old.rip != nil {
			m.rips.release(old.rip, now)
		}
	}
	r.route.Store(&routeInfo{route: route, domain: domain, rip: rip})
	return nil
}

// admitRoute takes a slot of the route's concurrent cap.
func (m *Manager) admitRoute(route string, addr netip.Addr, maxConns int) error {
	m.routeMu.Lock()
	defer m.routeMu.Unlock()
	if maxConns > 0 && m.routes[route] >= maxConns {
		m.counts[idxRoute].Add(1)
		return &LimitError{Reason: ReasonRouteLimit, IP: addr, Route: route, Limit: maxConns}
	}
	m.routes[route]++
	return nil
}

// admitRouteIP checks the per-IP limits of the route and then takes a slot
// of the route's cap, holding the entry's shard lock throughout so that
// the per-IP count and the route count move together (lock order: shard,
// then routeMu; nothing takes them the other way round).
func (m *Manager) admitRouteIP(route string, addr netip.Addr, now int64, lim RouteLimits) (*routeIPEntry, error) {
	k := routeIPKey{route: route, addr: addr}
	s := m.rips.Shard(k)
	s.Lock()
	e := s.Get(k)
	if e == nil {
		e = s.Create(k)
		e.Value.win.start = now
	}
	st := &e.Value
	st.keepHistory = lim.RatePerMinute > 0
	rateExceeded := st.keepHistory && st.win.hit(now, int64(rateWindow)) > float64(lim.RatePerMinute)
	var err error
	switch {
	case lim.MaxConnectionsPerIP > 0 && st.active >= lim.MaxConnectionsPerIP:
		m.counts[idxRouteIP].Add(1)
		err = &LimitError{Reason: ReasonRouteIPLimit, IP: addr, Route: route, Limit: lim.MaxConnectionsPerIP}
	case rateExceeded:
		m.counts[idxRouteRate].Add(1)
		err = &LimitError{Reason: ReasonRouteRateLimit, IP: addr, Route: route, Limit: lim.RatePerMinute}
	default:
		err = m.admitRoute(route, addr, lim.MaxConnections)
	}
	if err == nil {
		st.active++
	}
	settleRouteIP(s, e, now)
	s.Unlock() // also evicts from other shards if over the cap
	if err != nil {
		return nil, err
	}
	return e, nil
}
