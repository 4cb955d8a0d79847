package connection

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func assignErr(m *Manager, r *Record, route string, lim RouteLimits) error {
	return m.AssignRouteLimits(r, route, "", lim)
}

func TestRouteIPLimit(t *testing.T) {
	m := newTestManager(t, Config{MaxConnectionsPerIP: -1, ConnectionRateLimitPerMinute: -1})
	lim := RouteLimits{MaxConnectionsPerIP: 2}
	a, b := v4(1), v4(2)
	r1, r2, r3 := mustOpen(t, m, a), mustOpen(t, m, a), mustOpen(t, m, a)
	require.NoError(t, assignErr(m, r1, "web", lim))
	require.NoError(t, assignErr(m, r2, "web", lim))
	err := assignErr(m, r3, "web", lim)
	require.True(t, isReason(err, ReasonRouteIPLimit), "got %v", err)
	require.Contains(t, err.Error(), `route "web"`)
	require.Empty(t, r3.Route(), "a refused record keeps no route")

	// The cap is per route and per IP: another route and another IP are free.
	require.NoError(t, assignErr(m, r3, "other", lim))
	rb := mustOpen(t, m, b)
	require.NoError(t, assignErr(m, rb, "web", lim))

	// Closing frees the slot; the state goes away with the last connection
	// because the route keeps no rate history.
	m.Close(r1)
	r4 := mustOpen(t, m, a)
	require.NoError(t, assignErr(m, r4, "web", lim))
	for _, r := range []*Record{r2, r3, r4, rb} {
		m.Close(r)
	}
	require.Zero(t, m.TrackedRouteIPs())
	s := m.Snapshot()
	require.Equal(t, uint64(1), s.Rejected[ReasonRouteIPLimit])
	checkZero(t, m, a, b)
}

func TestRouteRateLimit(t *testing.T) {
	clk := newFakeClock()
	m := newTestManager(t, Config{MaxConnectionsPerIP: -1, ConnectionRateLimitPerMinute: -1, Now: clk.Now})
	lim := RouteLimits{RatePerMinute: 3}
	a := v4(7)
	for i := range 3 {
		r := mustOpen(t, m, a)
		require.NoError(t, assignErr(m, r, "api", lim), "attempt %d", i)
		m.Close(r)
	}
	r := mustOpen(t, m, a)
	err := assignErr(m, r, "api", lim)
	require.True(t, isReason(err, ReasonRouteRateLimit), "got %v", err)
	// Other routes and other IPs have their own budget.
	require.NoError(t, assignErr(m, r, "other", lim))
	m.Close(r)
	r = mustOpen(t, m, v4(8))
	require.NoError(t, assignErr(m, r, "api", lim))
	m.Close(r)

	// History is kept while it matters, then pruned.
	require.Equal(t, 3, m.TrackedRouteIPs())
	clk.Advance(2*time.Minute + time.Millisecond)
	r = mustOpen(t, m, a)
	require.NoError(t, assignErr(m, r, "api", lim), "window slid past")
	m.Close(r)
	clk.Advance(2*time.Minute + time.Millisecond)
	m.prune()
	require.Zero(t, m.TrackedRouteIPs())
	require.Equal(t, uint64(1), m.Snapshot().Rejected[ReasonRouteRateLimit])
	checkZero(t, m, a)
}

func TestRouteLimitsMoveAndReassign(t *testing.T) {
	m := newTestManager(t, Config{MaxConnectionsPerIP: -1, ConnectionRateLimitPerMinute: -1})
	lim := RouteLimits{MaxConnectionsPerIP: 1, MaxConnections: 5}
	a := v4(3)
	r1, r2 := mustOpen(t, m, a), mustOpen(t, m, a)
	require.NoError(t, assignErr(m, r1, "x", lim))
	// Same route again: only the domain changes, the slot is kept.
	require.NoError(t, m.AssignRouteLimits(r1, "x", "d.example", lim))
	require.Equal(t, "d.example", r1.Domain())
	require.Equal(t, 1, m.RouteActive("x"))
	// Moving r1 to y frees its slot on x.
	require.NoError(t, assignErr(m, r1, "y", lim))
	require.NoError(t, assignErr(m, r2, "x", lim))
	require.Equal(t, 1, m.RouteActive("x"))
	require.Equal(t, 1, m.RouteActive("y"))
	// A refused move leaves r2 where it was.
	r3 := mustOpen(t, m, a)
	require.NoError(t, assignErr(m, r3, "z", lim))
	require.True(t, isReason(assignErr(m, r3, "y", lim), ReasonRouteIPLimit))
	require.Equal(t, "z", r3.Route())
	for _, r := range []*Record{r1, r2, r3} {
		m.Close(r)
	}
	require.Zero(t, m.TrackedRouteIPs())
	checkZero(t, m, a)
}

func TestRouteLimitsRouteCapDoesNotLeakIPSlot(t *testing.T) {
	m := newTestManager(t, Config{MaxConnectionsPerIP: -1, ConnectionRateLimitPerMinute: -1})
	lim := RouteLimits{MaxConnections: 1, MaxConnectionsPerIP: 5}
	r1, r2 := mustOpen(t, m, v4(1)), mustOpen(t, m, v4(2))
	require.NoError(t, assignErr(m, r1, "x", lim))
	require.True(t, isReason(assignErr(m, r2, "x", lim), ReasonRouteLimit))
	m.Close(r1)
	m.Close(r2)
	require.Zero(t, m.TrackedRouteIPs(), "a route-cap refusal must not keep a per-IP slot")
	checkZero(t, m)
}

func TestRouteLimitsWithoutAddress(t *testing.T) {
	m := newTestManager(t, Config{})
	lim := RouteLimits{MaxConnectionsPerIP: 1, RatePerMinute: 1}
	var recs []*Record
	for range 5 {
		r, err := m.Open(netip.AddrPort{}, 80, newCloser())
		require.NoError(t, err)
		require.NoError(t, assignErr(m, r, "pipe", lim))
		recs = append(recs, r)
	}
	require.Zero(t, m.TrackedRouteIPs())
	for _, r := range recs {
		m.Close(r)
	}
}

// TestRouteLimitsConcurrent: many goroutines race for a per-IP cap of 3;
// at no time may more than 3 hold a slot, and the counters end at zero.
func TestRouteLimitsConcurrent(t *testing.T) {
	m := newTestManager(t, Config{MaxConnectionsPerIP: -1, ConnectionRateLimitPerMinute: -1})
	lim := RouteLimits{MaxConnectionsPerIP: 3, MaxConnections: 50}
	var holding, peak atomic.Int64
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 300 {
				r, err := m.Open(ap(v4(g%4), uint16(i+1)), 80, newCloser())
				if err != nil {
					t.Error(err)
					return
				}
				if assignErr(m, r, "hot", lim) == nil {
					n := holding.Add(1)
					for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
					}
					holding.Add(-1)
				}
				m.Close(r)
			}
		})
	}
	wg.Wait()
	require.LessOrEqual(t, peak.Load(), int64(12), "4 IPs x 3 slots")
	require.Zero(t, m.TrackedRouteIPs())
	checkZero(t, m)
}

// TestRouteLimitsFloodBounded: 100,000 distinct addresses on a rate-limited
// route keep the per-route table within MaxTrackedIPs and it prunes to zero.
func TestRouteLimitsFloodBounded(t *testing.T) {
	const capIPs, flood = 1000, 100000
	clk := newFakeClock()
	m := newTestManager(t, Config{MaxTrackedIPs: capIPs, ConnectionRateLimitPerMinute: -1, Now: clk.Now})
	lim := RouteLimits{MaxConnectionsPerIP: 2, RatePerMinute: 10}
	held := mustOpen(t, m, v4(0))
	require.NoError(t, assignErr(m, held, "r", lim))
	maxSeen := 0
	for i := range flood {
		if i%1000 == 0 {
			clk.Advance(time.Millisecond)
		}
		r, err := m.Open(ap(floodAddr(i), 1), 443, newCloser())
		require.NoError(t, err)
		require.NoError(t, assignErr(m, r, "r", lim))
		m.Close(r)
		maxSeen = max(maxSeen, m.TrackedRouteIPs())
	}
	require.Equal(t, capIPs, maxSeen, "bounded by the cap, and history kept up to it")
	require.Equal(t, 1, m.IPActive(v4(0)))
	require.Equal(t, 1, m.RouteActive("r"))
	m.Close(held)
	clk.Advance(2*time.Minute + time.Millisecond)
	m.prune()
	require.Zero(t, m.TrackedRouteIPs())
	s := m.Snapshot()
	require.Zero(t, s.TrackedRouteIPs)
	checkZero(t, m)
}

// TestRouteRateChargedOncePerRecord: a record moving A→B→A→B… (a keep-alive
// connection alternating routes) is charged to each route's rate once,
// while the concurrent counts follow its latest route.
func TestRouteRateChargedOncePerRecord(t *testing.T) {
	clk := newFakeClock()
	m := newTestManager(t, Config{MaxConnectionsPerIP: -1, ConnectionRateLimitPerMinute: -1, Now: clk.Now})
	lim := RouteLimits{RatePerMinute: 2, MaxConnectionsPerIP: 5}
	a := v4(9)
	r1 := mustOpen(t, m, a)
	for i := range 10 {
		route, other := "A", "B"
		if i%2 == 1 {
			route, other = "B", "A"
		}
		require.NoError(t, assignErr(m, r1, route, lim), "switch %d to %s", i, route)
		require.Equal(t, route, r1.Route())
		require.Equal(t, 1, m.RouteActive(route), "switch %d", i)
		require.Zero(t, m.RouteActive(other), "switch %d", i)
	}
	require.Zero(t, m.Snapshot().Rejected[ReasonRouteRateLimit])

	// Each route holds one charge from r1: one more new connection fits,
	// the next is refused.
	for _, route := range []string{"A", "B"} {
		r2 := mustOpen(t, m, a)
		require.NoError(t, assignErr(m, r2, route, lim), "second connection to %s", route)
		r3 := mustOpen(t, m, a)
		require.True(t, isReason(assignErr(m, r3, route, lim), ReasonRouteRateLimit), "third connection to %s", route)
		m.Close(r2)
		m.Close(r3)
	}
	// r1 was charged already: it still moves freely although both routes'
	// windows are now full.
	require.NoError(t, assignErr(m, r1, "A", lim))
	require.NoError(t, assignErr(m, r1, "B", lim))
	require.Equal(t, uint64(2), m.Snapshot().Rejected[ReasonRouteRateLimit])

	// The per-IP cap still moves with the record: with a cap of 1 on B,
	// r1 (on B) blocks another record from B but frees it by moving to A.
	capB := RouteLimits{RatePerMinute: 100, MaxConnectionsPerIP: 1}
	clk.Advance(2*time.Minute + time.Millisecond)
	r4 := mustOpen(t, m, a)
	require.True(t, isReason(assignErr(m, r4, "B", capB), ReasonRouteIPLimit))
	require.NoError(t, assignErr(m, r1, "A", capB))
	require.NoError(t, assignErr(m, r4, "B", capB))
	require.True(t, isReason(assignErr(m, r1, "B", capB), ReasonRouteIPLimit))
	require.Equal(t, "A", r1.Route(), "a refused move leaves the record where it was")
	m.Close(r1)
	m.Close(r4)
	clk.Advance(2*time.Minute + time.Millisecond)
	m.prune()
	require.Zero(t, m.TrackedRouteIPs())
	checkZero(t, m, a)
}

// TestRouteRateRefusedAttemptNotRemembered: a move refused by the rate
// leaves the record uncharged, so its next attempt is counted and checked
// again (a connection cannot get past the rate by retrying).
func TestRouteRateRefusedAttemptNotRemembered(t *testing.T) {
	clk := newFakeClock()
	m := newTestManager(t, Config{MaxConnectionsPerIP: -1, ConnectionRateLimitPerMinute: -1, Now: clk.Now})
	lim := RouteLimits{RatePerMinute: 1}
	a := v4(10)
	r1, r2 := mustOpen(t, m, a), mustOpen(t, m, a)
	require.NoError(t, assignErr(m, r1, "A", lim))
	require.NoError(t, assignErr(m, r2, "B", lim))
	for range 3 {
		require.True(t, isReason(assignErr(m, r2, "A", lim), ReasonRouteRateLimit))
		require.Equal(t, "B", r2.Route())
	}
	require.Equal(t, uint64(3), m.Snapshot().Rejected[ReasonRouteRateLimit])
	m.Close(r1)
	m.Close(r2)
	checkZero(t, m, a)
}

// TestRouteRateChargedSetBounded: a record remembers at most
// maxChargedRoutes routes; beyond that it is charged again (fail closed).
func TestRouteRateChargedSetBounded(t *testing.T) {
	clk := newFakeClock()
	m := newTestManager(t, Config{MaxConnectionsPerIP: -1, ConnectionRateLimitPerMinute: -1, Now: clk.Now})
	lim := RouteLimits{RatePerMinute: 1}
	a := v4(11)
	r := mustOpen(t, m, a)
	name := func(i int) string { return "route-" + string(rune('a'+i)) }
	for i := range maxChargedRoutes + 2 {
		require.NoError(t, assignErr(m, r, name(i), lim))
	}
	// Remembered routes are free to revisit; the ones past the bound are not.
	for i := range maxChargedRoutes {
		require.NoError(t, assignErr(m, r, name(i), lim), "route %d", i)
	}
	require.True(t, isReason(assignErr(m, r, name(maxChargedRoutes), lim), ReasonRouteRateLimit))
	require.Len(t, r.charged.more, maxChargedRoutes-chargedInline)
	m.Close(r)
	checkZero(t, m, a)
}

func TestChargedRoutesInlineNoAlloc(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		var c chargedRoutes
		for _, route := range []string{"A", "B"} {
			if !c.has(route) {
				c.add(route)
			}
		}
		if !c.has("A") || !c.has("B") || c.has("C") {
			t.Fatal("set lost a route")
		}
	})
	require.Zero(t, allocs)
}
