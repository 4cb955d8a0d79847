package connection

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"sync/atomic"
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
// RouteLimits.MaxConnectionsPerIP and RouteLimits.RatePerMinute. It has the
// same memory discipline as ipTable: entries holding connections are never
// evicted, idle entries are kept only while their rate window matters and
// at most max of them overall (LRU within a shard). It keeps no record
// lists: records point at their entry, and nothing walks active entries.
type routeIPTable struct {
	seed    maphash.Seed
	shards  [routeIPShardCount]routeIPShard
	tracked atomic.Int64 // entries across all shards
	max     int64        // 0 => unlimited
	cursor  atomic.Uint32
}

type routeIPShard struct {
	mu   sync.Mutex
	m    map[routeIPKey]*routeIPEntry
	idle routeIPList // entries without connections, least recently touched first
	_    [64]byte    // keep neighbouring shards' mutexes off one cache line
}

// routeIPEntry is guarded by its shard's mutex.
type routeIPEntry struct {
	key         routeIPKey
	active      int // records assigned to the route from this IP
	win         slidingWindow
	lastTouch   int64
	keepHistory bool // the route has a rate limit: keep the entry while idle
	idle        bool // on the shard's idle list
	prev, next  *routeIPEntry
}

func newRouteIPTable(maxTracked int64) *routeIPTable {
	t := &routeIPTable{seed: maphash.MakeSeed(), max: maxTracked}
	for i := range t.shards {
		t.shards[i].m = make(map[routeIPKey]*routeIPEntry)
	}
	return t
}

// shardFor hashes with a random seed so clients cannot aim at one shard.
func (t *routeIPTable) shardFor(k routeIPKey) *routeIPShard {
	return &t.shards[maphash.Comparable(t.seed, k)&(routeIPShardCount-1)]
}

// getOrCreate returns the entry for k, creating it at now if missing.
// Caller holds s.mu. overCap reports that the table went over its cap and
// s had nothing to evict, so the caller must call evictElsewhere after
// unlocking.
func (t *routeIPTable) getOrCreate(s *routeIPShard, k routeIPKey, now int64) (e *routeIPEntry, overCap bool) {
	if e = s.m[k]; e != nil {
		return e, false
	}
	e = &routeIPEntry{key: k, lastTouch: now}
	e.win.start = now
	s.m[k] = e
	if n := t.tracked.Add(1); t.max > 0 && n > t.max {
		// e is on no list yet, so it cannot be its own victim.
		overCap = !t.evictOldest(s)
	}
	return e, overCap
}

// settle files an entry after its active count changed: entries with
// connections stay off the idle list, idle ones go to its back or, when no
// rate history is needed, leave the table. Caller holds s.mu.
func (t *routeIPTable) settle(s *routeIPShard, e *routeIPEntry) {
	if e.idle {
		s.idle.remove(e)
	}
	switch {
	case e.active > 0:
	case e.keepHistory:
		s.idle.pushBack(e)
	default:
		t.remove(s, e)
	}
}

// release drops one connection from e, which lives in shard s.
func (t *routeIPTable) release(e *routeIPEntry, now int64) {
	s := t.shardFor(e.key)
	s.mu.Lock()
	e.active--
	if e.active == 0 {
		e.lastTouch = now
	}
	t.settle(s, e)
	s.mu.Unlock()
}

func (t *routeIPTable) evictOldest(s *routeIPShard) bool {
	e := s.idle.head
	if e == nil {
		return false
	}
	t.remove(s, e)
	return true
}

// remove deletes an entry without connections. Caller holds s.mu.
func (t *routeIPTable) remove(s *routeIPShard, e *routeIPEntry) {
	if e.idle {
		s.idle.remove(e)
	}
	delete(s.m, e.key)
	t.tracked.Add(-1)
}

// evictElsewhere evicts idle entries from other shards until the table is
// back under its cap. Called without any shard lock held.
func (t *routeIPTable) evictElsewhere() {
	start := t.cursor.Add(1)
	for i := uint32(0); i < routeIPShardCount && t.tracked.Load() > t.max; i++ {
		s := &t.shards[(start+i)&(routeIPShardCount-1)]
		s.mu.Lock()
		for t.tracked.Load() > t.max && t.evictOldest(s) {
		}
		s.mu.Unlock()
	}
}

// prune drops idle entries untouched for at least ttl; the idle list is in
// lastTouch order, so the cost is proportional to what is pruned.
func (t *routeIPTable) prune(now, ttl int64) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for e := s.idle.head; e != nil && now-e.lastTouch >= ttl; e = s.idle.head {
			t.remove(s, e)
		}
		s.mu.Unlock()
	}
}

// routeIPList is an intrusive doubly linked list of idle entries.
type routeIPList struct{ head, tail *routeIPEntry }

func (l *routeIPList) pushBack(e *routeIPEntry) {
	e.idle, e.prev, e.next = true, l.tail, nil
	if l.tail != nil {
		l.tail.next = e
	} else {
		l.head = e
	}
	l.tail = e
}

func (l *routeIPList) remove(e *routeIPEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		l.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		l.tail = e.prev
	}
	e.idle, e.prev, e.next = false, nil, nil
}
