package connection

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"sync/atomic"
)

// ipShardCount spreads the per-IP map over independent mutexes so parallel
// accepts from different clients rarely contend. Power of two for masking.
const ipShardCount = 64

// ipTable holds per-IP state: concurrent count, rate window and the open
// records of that IP. Entries live in exactly one of their shard's two
// intrusive lists: active (has open records; walked by the sweeper) or idle
// (only rate history; LRU order, front = least recently touched).
type ipTable struct {
	seed    maphash.Seed
	shards  [ipShardCount]ipShard
	tracked atomic.Int64 // entries across all shards
	max     int64        // 0 => unlimited
	cursor  atomic.Uint32
}

type ipShard struct {
	mu     sync.Mutex
	m      map[netip.Addr]*ipEntry
	active entryList
	idle   entryList
	_      [64]byte // keep neighbouring shards' mutexes off one cache line
}

// ipEntry is the state of one client IP; guarded by its shard's mutex.
type ipEntry struct {
	addr       netip.Addr
	active     int // open records
	win        slidingWindow
	lastTouch  int64 // last Open attempt or last Close; orders the idle list
	records    recordList
	prev, next *ipEntry
	list       *entryList // which list the entry is on
}

func newIPTable(maxTracked int64) *ipTable {
	t := &ipTable{seed: maphash.MakeSeed(), max: maxTracked}
	for i := range t.shards {
		t.shards[i].m = make(map[netip.Addr]*ipEntry)
	}
	return t
}

// shardFor hashes with a random seed so clients cannot aim at one shard.
func (t *ipTable) shardFor(a netip.Addr) *ipShard {
	b := a.As16()
	return &t.shards[maphash.Bytes(t.seed, b[:])&(ipShardCount-1)]
}

// getOrCreate returns the entry for a, creating it at now if missing.
// Caller holds s.mu. It reports whether the table went over its cap and
// nothing in s could be evicted, so the caller must call evictElsewhere
// after unlocking.
func (t *ipTable) getOrCreate(s *ipShard, a netip.Addr, now int64) (e *ipEntry, overCap bool) {
	if e = s.m[a]; e != nil {
		return e, false
	}
	e = &ipEntry{addr: a, lastTouch: now}
	e.win.start = now
	s.m[a] = e
	if n := t.tracked.Add(1); t.max > 0 && n > t.max {
		// Evict before e joins a list, so e itself is never the victim.
		overCap = !t.evictOldest(s)
	}
	return e, overCap
}

// evictOldest removes the least recently touched idle entry of s. Caller
// holds s.mu.
func (t *ipTable) evictOldest(s *ipShard) bool {
	e := s.idle.head
	if e == nil {
		return false
	}
	t.remove(s, e)
	return true
}

// remove deletes an entry without open records. Caller holds s.mu.
func (t *ipTable) remove(s *ipShard, e *ipEntry) {
	if e.list != nil {
		e.list.remove(e)
	}
	delete(s.m, e.addr)
	t.tracked.Add(-1)
}

// evictElsewhere evicts idle entries from other shards, round-robin, until
// the table is back under its cap or no shard has an idle entry. Called
// without any shard lock held, so lock order never matters.
func (t *ipTable) evictElsewhere() {
	start := t.cursor.Add(1)
	for i := uint32(0); i < ipShardCount && t.tracked.Load() > t.max; i++ {
		s := &t.shards[(start+i)&(ipShardCount-1)]
		s.mu.Lock()
		for t.tracked.Load() > t.max && t.evictOldest(s) {
		}
		s.mu.Unlock()
	}
}

// setIdle moves e (which has no open records) to the back of the idle list,
// or drops it when rate history is not needed. Caller holds s.mu.
func (t *ipTable) setIdle(s *ipShard, e *ipEntry, keepHistory bool) {
	if !keepHistory {
		t.remove(s, e)
		return
	}
	if e.list != nil {
		e.list.remove(e)
	}
	s.idle.pushBack(e)
}

// setActive moves e to the active list. Caller holds s.mu.
func (t *ipTable) setActive(s *ipShard, e *ipEntry) {
	if e.list == &s.active {
		return
	}
	if e.list != nil {
		e.list.remove(e)
	}
	s.active.pushBack(e)
}

// prune drops idle entries untouched for at least ttl before now. The idle
// list is in lastTouch order, so each shard stops at its first live entry:
// the cost is proportional to what is pruned, not to the table size.
func (t *ipTable) prune(now, ttl int64) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for e := s.idle.head; e != nil && now-e.lastTouch >= ttl; e = s.idle.head {
			t.remove(s, e)
		}
		s.mu.Unlock()
	}
}

// entryList is an intrusive doubly linked list of entries.
type entryList struct{ head, tail *ipEntry }

func (l *entryList) pushBack(e *ipEntry) {
	e.list, e.prev, e.next = l, l.tail, nil
	if l.tail != nil {
		l.tail.next = e
	} else {
		l.head = e
	}
	l.tail = e
}

func (l *entryList) remove(e *ipEntry) {
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
	e.prev, e.next, e.list = nil, nil, nil
}

// recordList is an intrusive doubly linked list of an entry's open records,
// so Open/Close need only the IP shard lock and no separate record table.
type recordList struct{ head *Record }

func (l *recordList) push(r *Record) {
	r.prev, r.next = nil, l.head
	if l.head != nil {
		l.head.prev = r
	}
	l.head = r
}

func (l *recordList) remove(r *Record) {
	if r.prev != nil {
		r.prev.next = r.next
	} else {
		l.head = r.next
	}
	if r.next != nil {
		r.next.prev = r.prev
	}
	r.prev, r.next = nil, nil
}

// forEachRecord calls fn for every open record while holding each shard's
// lock in turn; fn must not call back into the manager.
func (t *ipTable) forEachRecord(fn func(*Record)) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for e := s.active.head; e != nil; e = e.next {
			for r := e.records.head; r != nil; r = r.next {
				fn(r)
			}
		}
		s.mu.Unlock()
	}
}

// forEachActiveIP calls fn for every IP with open records (see forEachRecord).
func (t *ipTable) forEachActiveIP(fn func(netip.Addr, int)) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for e := s.active.head; e != nil; e = e.next {
			fn(e.addr, e.active)
		}
		s.mu.Unlock()
	}
}
