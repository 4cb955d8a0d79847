package connection

import (
	"fmt"
	"net/netip"
	"time"
)

// RouteLimits are a route's admission limits, enforced by
// [Manager.AssignRouteLimits]. A value <= 0 means unlimited.
type RouteLimits struct {
	// MaxConnections caps the route's concurrent connections.
	MaxConnections int
	// MaxConnectionsPerIP caps one client IP's concurrent connections on
	// the route.
	MaxConnectionsPerIP int
	// RatePerMinute caps one client IP's new connections to the route in a
	// sliding minute: a record is charged to a route at most once for its
	// life (up to maxChargedRoutes routes per record), however often it
	// moves between routes. Refused attempts count too, as for the global
	// rate limit, so a client hammering at the limit stays refused; a
	// refused record is charged again on its next attempt at that route.
	RatePerMinute int
}

const (
	// chargedInline is how many charged routes a record remembers without
	// allocating; two covers a keep-alive connection alternating between
	// two routes.
	chargedInline = 2
	// maxChargedRoutes bounds the routes a record remembers. A record
	// moving among more routes is charged again for each route it could
	// not remember (failing closed: never admitted without a charge).
	maxChargedRoutes = 16
)

// chargedRoutes is the small set of routes a record was charged to for
// RouteLimits.RatePerMinute. Route names are never empty, so "" marks a
// free inline slot.
type chargedRoutes struct {
	inline [chargedInline]string
	more   []string // only once inline is full; len <= maxChargedRoutes-chargedInline
}

func (c *chargedRoutes) has(route string) bool {
	for _, r := range c.inline {
		if r == route {
			return true
		}
	}
	for _, r := range c.more {
		if r == route {
			return true
		}
	}
	return false
}

// add remembers route, unless the set is full; route must not be in it.
func (c *chargedRoutes) add(route string) {
	for i, r := range c.inline {
		if r == "" {
			c.inline[i] = route
			return
		}
	}
	if len(c.more) < maxChargedRoutes-chargedInline {
		c.more = append(c.more, route)
	}
}

// AssignRouteLimits attaches the route name and domain (may be "") to r and
// enforces lim, atomically with respect to every other assignment and
// Close: the per-IP and route counters can never overshoot under
// concurrency. Unless r was already charged to the route's rate (see
// RouteLimits.RatePerMinute), the attempt is counted in the IP's route rate
// window first; then the checks run in this order (as in Open): the route
// cap per IP, the route rate per IP (skipped when r was already charged to
// the route), the route cap.
// Assigning r again to the same route only updates the domain; assigning
// it to another route moves it (the old route's slots are released only on
// success): the concurrent caps count r toward the route it was last
// assigned to, while the rate charges it to each route once. On error r is
// unchanged (its route and charges) and still open; a refusal is a
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
		charge := lim.RatePerMinute > 0 && !r.charged.has(route)
		var err error
		if rip, err = m.admitRouteIP(route, addr, now, lim, charge); err != nil {
			return err
		}
		if charge {
			r.charged.add(route)
		}
	} else if err := m.admitRoute(route, addr, lim.MaxConnections); err != nil {
		return err
	}
	if old != nil {
		m.leaveRoute(old, now)
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
// of the route's cap; the rate is counted and checked only when charge is
// set. It holds the entry's shard lock throughout so that
// the per-IP count and the route count move together (lock order: shard,
// then routeMu; nothing takes them the other way round).
func (m *Manager) admitRouteIP(route string, addr netip.Addr, now int64, lim RouteLimits, charge bool) (*routeIPEntry, error) {
	k := routeIPKey{route: route, addr: m.ipKey(addr)}
	s := m.rips.Shard(k)
	s.Lock()
	e := s.Get(k)
	if e == nil {
		e = s.Create(k)
		e.Value.win.start = now
	}
	st := &e.Value
	st.keepHistory = lim.RatePerMinute > 0
	rateExceeded := charge && st.win.hit(now, int64(rateWindow)) > float64(lim.RatePerMinute)
	var err error
	switch {
	case lim.MaxConnectionsPerIP > 0 && st.active >= lim.MaxConnectionsPerIP:
		m.counts[idxRouteIP].Add(1)
		err = &LimitError{Reason: ReasonRouteIPLimit, IP: addr, Route: route, Limit: lim.MaxConnectionsPerIP}
	case rateExceeded:
		m.counts[idxRouteRate].Add(1)
		err = &LimitError{Reason: ReasonRouteRateLimit, IP: addr, Route: route, Limit: lim.RatePerMinute,
			RetryAfter: time.Duration(st.win.retryAfter(now, int64(rateWindow), lim.RatePerMinute))}
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
