// Package keytable holds per-key state (client IPs, route and IP pairs,
// rate-limit keys) in a sharded map whose memory stays bounded under floods
// of distinct keys: idle entries are evicted least recently used first over
// a cap and pruned after a horizon, entries in use never are. It is shared
// by the connection manager and the HTTP rate limiter; internal because it
// is a building block, not an API.
package keytable

import (
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
)

// Table is a concurrent map from keys to per-key state whose memory stays
// bounded under floods of distinct keys (client IPs, route and IP pairs, rate
// limit keys). It is the mechanism shared by the Manager's per-IP and
// per-route per-IP tables and by the HTTP rate limiter; the
// policy (what counts as a user of an entry, how long history matters, what
// to do over a cap) stays with them.
//
// # Sharding
//
// Keys are spread over a power-of-two number of shards, each a map behind
// its own mutex, by a hash seeded at random per table so that clients cannot
// aim all their keys at one shard.
//
// # Entry states
//
// An entry is always in one of three states, chosen by its owner while
// holding the shard lock:
//
//   - new: just returned by [Shard.Create] and on no list. The owner must
//     file it (SetActive, SetIdle or Remove) before unlocking the shard.
//   - active ([Shard.SetActive]): it has users (say, open connections).
//     It is never evicted nor pruned; [Table.ForEachActive] walks it.
//   - idle ([Shard.SetIdle]): only history is left. Idle entries of a
//     shard form an intrusive LRU list ordered by the time they last went
//     idle, which is what eviction and pruning consume from the front.
//
// # Bounds
//
// A table built with maxEntries > 0 holds about that many entries: when
// Create pushes the count over it, the least recently idled entry of the
// same shard is evicted; if that shard has none, [Shard.Unlock] evicts
// idle entries shard by shard, starting from a rotating shard, after
// releasing the lock (so locks are only ever held one at a time). The cap is
// enforced on Create only, and active entries are never evicted, so the
// count can exceed it while more than maxEntries entries are active.
// Per-shard caps are left to the owner ([Shard.Len] and
// [Shard.EvictOldest]). [Table.Prune] and [Shard.Prune] drop idle
// entries that have been idle for at least a horizon; as the idle list is in
// idle-time order they stop at the first younger entry, so their cost is
// proportional to what they drop, not to the table size.
//
// Times are int64 in whatever unit and epoch the owner uses consistently
// (the Manager's clock offsets, Unix nanoseconds); the table only compares
// their differences with the prune horizon. Times at or below
// math.MinInt64+1 are taken as math.MinInt64+2: those two values encode the
// entry states, which keeps entries free of a list pointer.
type Table[K comparable, V any] struct {
	hash   func(maphash.Seed, K) uint64
	seed   maphash.Seed
	mask   uint64
	max    int64 // 0 => unlimited
	shards []Shard[K, V]
	_      [64]byte // keep the read-only fields above off the counters' cache line

	tracked atomic.Int64 // entries across all shards
	cursor  atomic.Uint32
}

// Shard is one shard of a [Table]. Except for Lock, its methods must
// be called with the shard locked, and entries passed to them must belong
// to it.
type Shard[K comparable, V any] struct {
	mu      sync.Mutex
	t       *Table[K, V]
	m       map[K]*Entry[K, V]
	active  keyList[K, V]
	idle    keyList[K, V] // front = least recently idled
	overCap bool          // a Create found nothing to evict here; see Unlock
	_       [64]byte      // keep neighbouring shards' mutexes off one cache line
}

// Entry is the state kept for one key. Value belongs to the table's owner
// and is guarded by the entry's shard mutex, like the entry's links.
type Entry[K comparable, V any] struct {
	Value      V
	key        K
	idleSince  int64 // idle: time of the last SetIdle; else stateNew or stateActive
	prev, next *Entry[K, V]
}

// Values of Entry.idleSince that are not times but the entry's state.
const (
	stateNew    = math.MinInt64     // on no list
	stateActive = math.MinInt64 + 1 // on the shard's active list
	minIdleTime = stateActive + 1
)

// New returns an empty table of shards shards (a power of two),
// capped at maxEntries entries (<= 0: unlimited; see the type's
// documentation for what the cap does). hash maps a key to a shard given the table's random
// seed; nil means [maphash.Comparable]. A hash that ignores the seed is fine
// for keys that are themselves seeded hashes.
func New[K comparable, V any](shards int, maxEntries int64, hash func(maphash.Seed, K) uint64) *Table[K, V] {
	if shards <= 0 || shards&(shards-1) != 0 {
		panic("connection: Table shard count must be a power of two")
	}
	if hash == nil {
		hash = maphash.Comparable[K]
	}
	t := &Table[K, V]{
		hash:   hash,
		seed:   maphash.MakeSeed(),
		mask:   uint64(shards - 1),
		max:    max(maxEntries, 0),
		shards: make([]Shard[K, V], shards),
	}
	for i := range t.shards {
		t.shards[i].t = t
		t.shards[i].m = make(map[K]*Entry[K, V])
	}
	return t
}

// Shard returns the shard that holds k, unlocked.
func (t *Table[K, V]) Shard(k K) *Shard[K, V] {
	return &t.shards[t.hash(t.seed, k)&t.mask]
}

// Len returns the number of entries across all shards.
func (t *Table[K, V]) Len() int { return int(t.tracked.Load()) }

// Prune drops, shard by shard, the idle entries idle for at least horizon
// before now.
func (t *Table[K, V]) Prune(now, horizon int64) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		s.Prune(now, horizon)
		s.mu.Unlock()
	}
}

// ForEachActive calls fn for every active entry, holding each shard's lock
// in turn, in shard order and within a shard in the order the entries became
// active. fn must not lock a shard of t.
func (t *Table[K, V]) ForEachActive(fn func(*Entry[K, V])) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for e := s.active.head; e != nil; e = e.next {
			fn(e)
		}
		s.mu.Unlock()
	}
}

// evictElsewhere evicts idle entries shard by shard, starting at a rotating
// shard, until the table is back under its cap or no shard has an idle
// entry. Called without any shard lock held, so lock order never matters.
func (t *Table[K, V]) evictElsewhere() {
	start := uint64(t.cursor.Add(1))
	for i := uint64(0); i <= t.mask && t.tracked.Load() > t.max; i++ {
		s := &t.shards[(start+i)&t.mask]
		s.mu.Lock()
		for t.tracked.Load() > t.max && s.EvictOldest() {
		}
		s.mu.Unlock()
	}
}

// Lock locks the shard.
func (s *Shard[K, V]) Lock() { s.mu.Lock() }

// Unlock unlocks the shard. If a Create under this lock took the table over
// its cap and the shard had no idle entry to give up, it then evicts idle
// entries from the shards in turn (this one included: the new entry, if
// filed as idle, may go too) until the table is back at its cap.
func (s *Shard[K, V]) Unlock() {
	over := s.overCap
	s.overCap = false
	s.mu.Unlock()
	if over {
		s.t.evictElsewhere()
	}
}

// Len returns the number of entries in the shard.
func (s *Shard[K, V]) Len() int { return len(s.m) }

// Get returns the entry for k, or nil.
func (s *Shard[K, V]) Get(k K) *Entry[K, V] { return s.m[k] }

// Create adds a new entry for k, which must not be in the table, and returns
// it with a zero Value. If that takes the table over its cap, the least
// recently idled entry of the shard is evicted (never the new one, which is
// on no list yet). The caller must file the new entry before unlocking.
func (s *Shard[K, V]) Create(k K) *Entry[K, V] {
	e := &Entry[K, V]{key: k, idleSince: stateNew}
	s.m[k] = e
	if n := s.t.tracked.Add(1); s.t.max > 0 && n > s.t.max && !s.EvictOldest() {
		s.overCap = true
	}
	return e
}

// SetActive marks e as having users: off the idle list, never evicted. An
// entry already active keeps its place in the active order.
func (s *Shard[K, V]) SetActive(e *Entry[K, V]) {
	if e.idleSince == stateActive {
		return
	}
	s.unlink(e)
	e.idleSince = stateActive
	s.active.pushBack(e)
}

// SetIdle marks e as idle since now and moves it to the back of the idle
// list (most recently used), whatever its state was.
func (s *Shard[K, V]) SetIdle(e *Entry[K, V], now int64) {
	if s.idle.tail != e { // else it is at the back already
		s.unlink(e)
		s.idle.pushBack(e)
	}
	e.idleSince = max(now, minIdleTime)
}

// Remove deletes e from the table.
func (s *Shard[K, V]) Remove(e *Entry[K, V]) {
	s.unlink(e)
	e.idleSince = stateNew
	delete(s.m, e.key)
	s.t.tracked.Add(-1)
}

// unlink takes e off whichever list its state says it is on.
func (s *Shard[K, V]) unlink(e *Entry[K, V]) {
	switch e.idleSince {
	case stateNew:
	case stateActive:
		s.active.remove(e)
	default:
		s.idle.remove(e)
	}
}

// EvictOldest removes the least recently idled entry of the shard and
// reports whether there was one.
func (s *Shard[K, V]) EvictOldest() bool {
	e := s.idle.head
	if e == nil {
		return false
	}
	s.Remove(e)
	return true
}

// Prune drops the shard's entries idle for at least horizon before now.
func (s *Shard[K, V]) Prune(now, horizon int64) {
	for e := s.idle.head; e != nil && now-e.idleSince >= horizon; e = s.idle.head {
		s.Remove(e)
	}
}

// Key returns the entry's key.
func (e *Entry[K, V]) Key() K { return e.key }

// keyList is an intrusive doubly linked list of entries.
type keyList[K comparable, V any] struct{ head, tail *Entry[K, V] }

func (l *keyList[K, V]) pushBack(e *Entry[K, V]) {
	e.prev, e.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = e
	} else {
		l.head = e
	}
	l.tail = e
}

func (l *keyList[K, V]) remove(e *Entry[K, V]) {
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
	e.prev, e.next = nil, nil
}
