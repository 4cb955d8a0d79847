package connection

import (
	"net/netip"

	"github.com/gosmartproxy/smartproxy/internal/keytable"
)

// routeIPShardCount spreads the per-route per-IP map over independent
// mutexes, like ipShardCount does for the global per-IP table.
const routeIPShardCount = 64

// routeIPKey identifies the state of one client IP on one route.
type routeIPKey struct {
	route string
	addr  netip.Addr
}

// routeIPTable holds the per-route per-IP state behind
// RouteLimits.MaxConnectionsPerIP and RouteLimits.RatePerMinute, with the
// same memory discipline as ipTable (see keytable.Table): entries holding
// connections are never evicted, idle entries are kept only while their
// rate window matters and at most max of them overall. It keeps no record
// lists: records point at their entry.
type routeIPTable struct {
	*keytable.Table[routeIPKey, routeIPState]
}

type (
	routeIPShard = keytable.Shard[routeIPKey, routeIPState]
	routeIPEntry = keytable.Entry[routeIPKey, routeIPState]
)

// routeIPState is guarded by its shard's mutex.
type routeIPState struct {
	active      int // records assigned to the route from this IP
	win         slidingWindow
	keepHistory bool // the route has a rate limit: keep the entry while idle
}

func newRouteIPTable(maxTracked int64) routeIPTable {
	return routeIPTable{keytable.New[routeIPKey, routeIPState](routeIPShardCount, maxTracked, nil)}
}

// settleRouteIP files an entry after its active count changed at now:
// entries with connections are active, idle ones go to the back of the idle
// list or, when no rate history is needed, leave the table. Caller holds
// s's lock.
func settleRouteIP(s *routeIPShard, e *routeIPEntry, now int64) {
	switch {
	case e.Value.active > 0:
		s.SetActive(e)
	case e.Value.keepHistory:
		s.SetIdle(e, now)
	default:
		s.Remove(e)
	}
}

// release drops one connection from e.
func (t routeIPTable) release(e *routeIPEntry, now int64) {
	s := t.Shard(e.Key())
	s.Lock()
	e.Value.active--
	settleRouteIP(s, e, now)
	s.Unlock()
}
