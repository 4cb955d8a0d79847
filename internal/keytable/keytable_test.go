package keytable

import (
	"hash/maphash"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// identityShard puts key k in shard k & mask, so tests choose shards.
func identityShard(_ maphash.Seed, k int) uint64 { return uint64(k) }

// ktCount is a test value.
type ktCount struct{ users int }

func newTestKeyTable(shards int, maxEntries int64) *Table[int, ktCount] {
	return New[int, ktCount](shards, maxEntries, identityShard)
}

// put creates k and files it as idle at now (users == 0) or active.
func put(t *Table[int, ktCount], k int, now int64, users int) *Entry[int, ktCount] {
	s := t.Shard(k)
	s.Lock()
	defer s.Unlock()
	e := s.Get(k)
	if e == nil {
		e = s.Create(k)
	}
	e.Value.users = users
	if users > 0 {
		s.SetActive(e)
	} else {
		s.SetIdle(e, now)
	}
	return e
}

func has(t *Table[int, ktCount], k int) bool {
	s := t.Shard(k)
	s.Lock()
	defer s.Unlock()
	return s.Get(k) != nil
}

func keysOf(t *Table[int, ktCount]) []int {
	var out []int
	for i := range t.shards {
		s := &t.shards[i]
		s.Lock()
		for k := range s.m {
			out = append(out, k)
		}
		s.Unlock()
	}
	return out
}

// TestKeyTableEvictsLeastRecentlyIdled: over the cap, the entry idle the
// longest goes first; touching an entry (SetIdle again) moves it to the
// back; the new entry is never its own victim.
func TestKeyTableEvictsLeastRecentlyIdled(t *testing.T) {
	tb := newTestKeyTable(1, 3)
	put(tb, 1, 10, 0)
	put(tb, 2, 20, 0)
	put(tb, 3, 30, 0)
	put(tb, 1, 40, 0) // 1 used again: order is now 2, 3, 1
	put(tb, 4, 50, 0)
	require.ElementsMatch(t, []int{1, 3, 4}, keysOf(tb))
	put(tb, 5, 60, 0)
	require.ElementsMatch(t, []int{1, 4, 5}, keysOf(tb))
	require.Equal(t, 3, tb.Len())

	// With a per-shard cap of 1 and explicit eviction (as the HTTP rate
	// limiter does), only the newest key survives.
	s := tb.Shard(0)
	s.Lock()
	for s.Len() >= 1 {
		require.True(t, s.EvictOldest())
	}
	require.False(t, s.EvictOldest(), "nothing left to evict")
	s.Unlock()
	require.Zero(t, tb.Len())
}

// TestKeyTableNeverEvictsActive: active entries are skipped by eviction,
// even if that leaves the table over its cap, and become evictable once
// idle. Eviction happens on Create only.
func TestKeyTableNeverEvictsActive(t *testing.T) {
	tb := newTestKeyTable(1, 2)
	put(tb, 1, 10, 1)
	put(tb, 2, 20, 1)
	put(tb, 3, 30, 1)
	require.Equal(t, 3, tb.Len(), "nothing idle to evict: over the cap")
	// A new idle entry is the only candidate once filed, so Unlock's
	// sweep evicts it at once.
	put(tb, 4, 40, 0)
	require.ElementsMatch(t, []int{1, 2, 3}, keysOf(tb))
	put(tb, 2, 50, 0) // 2 loses its users; no eviction without a Create
	require.Equal(t, 3, tb.Len())
	put(tb, 5, 60, 0) // evicts 2, the only idle entry before 5 is filed
	require.ElementsMatch(t, []int{1, 3, 5}, keysOf(tb))
	put(tb, 6, 70, 0) // evicts 5
	require.ElementsMatch(t, []int{1, 3, 6}, keysOf(tb))
}

// TestKeyTableEvictsFromOtherShards: when the shard that went over the cap
// has no idle entry, Unlock evicts from the others until back at the cap.
func TestKeyTableEvictsFromOtherShards(t *testing.T) {
	tb := newTestKeyTable(4, 4)
	put(tb, 1, 10, 0) // shard 1
	put(tb, 5, 20, 0) // shard 1
	put(tb, 2, 30, 0) // shard 2
	put(tb, 6, 40, 0) // shard 2
	require.Equal(t, 4, tb.Len())

	s := tb.Shard(0)
	s.Lock()
	e := s.Create(0) // shard 0 has nothing idle
	require.Equal(t, 5, tb.Len(), "eviction elsewhere waits for Unlock")
	s.SetActive(e)
	s.Unlock()
	require.Equal(t, 4, tb.Len())
	require.True(t, has(tb, 0))
	// Within the shard it picked, the oldest went.
	require.True(t, !has(tb, 1) && has(tb, 5) || !has(tb, 2) && has(tb, 6), "%v", keysOf(tb))
}

// TestKeyTableUnlimited: maxEntries <= 0 never evicts.
func TestKeyTableUnlimited(t *testing.T) {
	for _, m := range []int64{0, -1} {
		tb := newTestKeyTable(2, m)
		for i := range 1000 {
			put(tb, i, int64(i), 0)
		}
		require.Equal(t, 1000, tb.Len())
	}
}

// TestKeyTablePrune: entries idle for at least the horizon go, younger
// ones and active ones stay, and an entry idled again counts from then.
func TestKeyTablePrune(t *testing.T) {
	tb := newTestKeyTable(2, 0)
	for i := range 10 {
		put(tb, i, int64(i), 0) // idle since i
	}
	put(tb, 0, 20, 0) // used again at 20
	put(tb, 1, 5, 1)  // active
	tb.Prune(12, 5)   // drops idle since <= 7
	require.ElementsMatch(t, []int{0, 1, 8, 9}, keysOf(tb))
	require.Equal(t, 4, tb.Len())
	tb.Prune(100, 5)
	require.ElementsMatch(t, []int{1}, keysOf(tb), "active entries are never pruned")

	// Shard-level prune, as the HTTP rate limiter uses on insert.
	put(tb, 2, 0, 0)
	put(tb, 4, 10, 0)
	s := tb.Shard(0)
	s.Lock()
	s.Prune(10, 10)
	s.Unlock()
	require.ElementsMatch(t, []int{1, 4}, keysOf(tb))
}

// TestKeyTableRemoveAndActiveOrder: Remove works in every state;
// ForEachActive sees active entries in the order they became active, and
// SetActive on an active entry keeps its place.
func TestKeyTableRemoveAndActiveOrder(t *testing.T) {
	tb := newTestKeyTable(1, 0)
	for _, k := range []int{3, 1, 2} {
		put(tb, k, 0, 1)
	}
	put(tb, 1, 0, 2) // already active
	put(tb, 9, 0, 0)
	var seen []int
	tb.ForEachActive(func(e *Entry[int, ktCount]) { seen = append(seen, e.Key()) })
	require.Equal(t, []int{3, 1, 2}, seen)

	s := tb.Shard(0)
	s.Lock()
	s.Remove(s.Get(1)) // active
	s.Remove(s.Get(9)) // idle
	s.Remove(s.Create(7))
	s.Unlock()
	require.ElementsMatch(t, []int{2, 3}, keysOf(tb))
	require.Equal(t, 2, tb.Len())
}

func TestKeyTableDefaultHash(t *testing.T) {
	type key struct {
		s string
		n int
	}
	tb := New[key, int](8, 0, nil)
	for i := range 100 {
		s := tb.Shard(key{"k", i})
		s.Lock()
		s.SetIdle(s.Create(key{"k", i}), 0)
		s.Unlock()
	}
	for i := range 100 {
		s := tb.Shard(key{"k", i})
		s.Lock()
		require.NotNil(t, s.Get(key{"k", i}))
		s.Unlock()
	}
	used := 0
	for i := range tb.shards {
		if len(tb.shards[i].m) > 0 {
			used++
		}
	}
	require.Greater(t, used, 1, "keys spread over shards")
	require.Panics(t, func() { New[int, int](3, 0, nil) })
	require.Panics(t, func() { New[int, int](0, 0, nil) })
}

// TestKeyTableConcurrent hammers a small capped table from several
// goroutines (run with -race) and then checks its invariants: the count
// matches the maps, every entry is on exactly the list its state says,
// and pruning empties it.
func TestKeyTableConcurrent(t *testing.T) {
	const (
		shards, maxEntries = 8, 50
		workers, ops, keys = 8, 5000, 400
	)
	tb := New[int, ktCount](shards, maxEntries, nil)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			var held []*Entry[int, ktCount]
			for i := range ops {
				now := int64(i)
				switch op := rng.IntN(10); {
				case op < 6: // take a user
					k := rng.IntN(keys)
					s := tb.Shard(k)
					s.Lock()
					e := s.Get(k)
					if e == nil {
						e = s.Create(k)
					}
					e.Value.users++
					s.SetActive(e)
					s.Unlock()
					held = append(held, e)
				case op < 9 && len(held) > 0: // release one
					j := rng.IntN(len(held))
					e := held[j]
					held[j] = held[len(held)-1]
					held = held[:len(held)-1]
					s := tb.Shard(e.Key())
					s.Lock()
					if e.Value.users--; e.Value.users == 0 {
						if rng.IntN(4) == 0 {
							s.Remove(e)
						} else {
							s.SetIdle(e, now)
						}
					}
					s.Unlock()
				default:
					tb.Prune(now, 100)
				}
			}
			for _, e := range held {
				s := tb.Shard(e.Key())
				s.Lock()
				if e.Value.users--; e.Value.users == 0 {
					s.SetIdle(e, ops)
				}
				s.Unlock()
			}
		})
	}
	wg.Wait()

	total := 0
	for i := range tb.shards {
		s := &tb.shards[i]
		s.Lock()
		n := 0
		for e := s.idle.head; e != nil; e = e.next {
			require.Same(t, e, s.m[e.Key()])
			require.Zero(t, e.Value.users)
			n++
		}
		require.Nil(t, s.active.head, "nothing is held any more")
		require.Equal(t, len(s.m), n, "every entry is on the idle list")
		total += n
		s.Unlock()
	}
	require.Equal(t, total, tb.Len())
	tb.Prune(ops, 0)
	require.Zero(t, tb.Len())
}
