package connection

import (
	"github.com/gosmartproxy/smartproxy/internal/keytable"

	"hash/maphash"
	"net/netip"
)

// ipShardCount spreads the per-IP map over independent mutexes so parallel
// accepts from different clients rarely contend.
const ipShardCount = 64

// ipTable holds per-IP state: concurrent count, rate window and the open
// records of that IP. IPs with open records are active entries (walked by
// the sweeper); IPs without keep only rate history, as idle entries, and
// only while ConnectionRateLimitPerMinute needs it (see keytable.Table).
type ipTable struct {
	*keytable.Table[netip.Addr, ipState]
}

type (
	ipShard = keytable.Shard[netip.Addr, ipState]
	ipEntry = keytable.Entry[netip.Addr, ipState]
)

// ipState is the state of one client IP; guarded by its shard's mutex.
type ipState struct {
	active  int // open records
	win     slidingWindow
	records recordList
}

func newIPTable(maxTracked int64) ipTable {
	return ipTable{keytable.New[netip.Addr, ipState](ipShardCount, maxTracked, hashAddr)}
}

// hashAddr hashes the 16-byte form of a (the zone, if any, is ignored:
// it only costs a shard collision).
func hashAddr(seed maphash.Seed, a netip.Addr) uint64 {
	b := a.As16()
	return maphash.Bytes(seed, b[:])
}

func (t ipTable) shardFor(a netip.Addr) *ipShard { return t.Shard(a) }

// getOrCreateIP returns the entry for a, creating it at now if missing.
// Caller holds s's lock.
func getOrCreateIP(s *ipShard, a netip.Addr, now int64) *ipEntry {
	e := s.Get(a)
	if e == nil {
		e = s.Create(a)
		e.Value.win.start = now
	}
	return e
}

// setIPIdle files e, which has no open records, as idle since now, or drops
// it when rate history is not needed. Caller holds s's lock.
func setIPIdle(s *ipShard, e *ipEntry, now int64, keepHistory bool) {
	if keepHistory {
		s.SetIdle(e, now)
	} else {
		s.Remove(e)
	}
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
func (t ipTable) forEachRecord(fn func(*Record)) {
	t.ForEachActive(func(e *ipEntry) {
		for r := e.Value.records.head; r != nil; r = r.next {
			fn(r)
		}
	})
}

// forEachActiveIP calls fn for every IP with open records (see forEachRecord).
func (t ipTable) forEachActiveIP(fn func(netip.Addr, int)) {
	t.ForEachActive(func(e *ipEntry) { fn(e.Key(), e.Value.active) })
}
