package connection

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// floodAddr alternates 127.0.0.0/8 and fc00::/7 so both families flood.
func floodAddr(i int) netip.Addr {
	if i%2 == 0 {
		return v4(i/2 + 1000)
	}
	return v6(i)
}

// TestFloodDistinctIPsBounded: 100,000 distinct client addresses keep the
// per-IP table within MaxTrackedIPs, never evict IPs holding connections,
// and prune to zero once everything is closed and the windows expired.
func TestFloodDistinctIPsBounded(t *testing.T) {
	const capIPs, flood = 1000, 100000
	clk := newFakeClock()
	m := newTestManager(t, Config{MaxTrackedIPs: capIPs, Now: clk.Now})

	var held []*Record
	for i := range 10 { // long-lived clients that must survive the flood
		held = append(held, mustOpen(t, m, v4(i)))
	}
	maxSeen := 0
	for i := range flood {
		if i%1000 == 0 {
			clk.Advance(time.Millisecond) // keep LRU order meaningful
		}
		r, err := m.Open(ap(floodAddr(i), 1), 443, newCloser())
		if err != nil {
			t.Fatalf("flood open %d: %v", i, err)
		}
		m.Close(r)
		maxSeen = max(maxSeen, m.TrackedIPs())
	}
	if maxSeen > capIPs {
		t.Fatalf("TrackedIPs peaked at %d, cap %d", maxSeen, capIPs)
	}
	if maxSeen < capIPs {
		t.Fatalf("TrackedIPs peaked at %d: history was dropped before reaching the cap %d", maxSeen, capIPs)
	}
	for i := range held {
		if n := m.IPActive(v4(i)); n != 1 {
			t.Fatalf("held IP %s: IPActive=%d, want 1 (evicted while active?)", v4(i), n)
		}
	}
	// The most recent flood IPs keep their history (LRU), the oldest do not.
	if !m.tracked(floodAddr(flood-1)) || m.tracked(floodAddr(0)) {
		t.Errorf("eviction not LRU: newest tracked=%v oldest tracked=%v",
			m.tracked(floodAddr(flood-1)), m.tracked(floodAddr(0)))
	}

	for _, r := range held {
		m.Close(r)
	}
	clk.Advance(time.Minute)
	m.prune()
	if n := m.TrackedIPs(); n == 0 {
		t.Fatal("pruned entries whose rate window still counts")
	}
	clk.Advance(time.Minute + time.Millisecond)
	m.prune()
	if n := m.TrackedIPs(); n != 0 {
		t.Fatalf("TrackedIPs = %d after windows expired, want 0", n)
	}
	checkZero(t, m)
}

// TestFloodRejectedAttemptsBounded: refused attempts (global cap full)
// create rate entries too; they must also respect the cap.
func TestFloodRejectedAttemptsBounded(t *testing.T) {
	m := newTestManager(t, Config{MaxConnections: 1, MaxTrackedIPs: 100})
	r := mustOpen(t, m, v4(0))
	for i := 1; i <= 20000; i++ {
		if _, err := m.Open(ap(floodAddr(i), 1), 80, newCloser()); !isReason(err, ReasonGlobalLimit) {
			t.Fatalf("attempt %d: %v, want global-limit", i, err)
		}
		if n := m.TrackedIPs(); n > 100 {
			t.Fatalf("TrackedIPs = %d > 100 after %d attempts", n, i)
		}
	}
	if got := m.Snapshot().Rejected[ReasonGlobalLimit]; got != 20000 {
		t.Errorf("Rejected[global] = %d", got)
	}
	m.Close(r)
}

// TestFloodConcurrentBounded floods from several goroutines (eviction
// across shards under -race).
func TestFloodConcurrentBounded(t *testing.T) {
	const capIPs = 500
	m := newTestManager(t, Config{MaxTrackedIPs: capIPs})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 5000 {
				r, err := m.Open(ap(floodAddr(g*5000+i), 1), 80, newCloser())
				if err != nil {
					t.Error(err)
					return
				}
				m.Close(r)
			}
		})
	}
	wg.Wait()
	if n := m.TrackedIPs(); n > capIPs {
		t.Fatalf("TrackedIPs = %d, cap %d", n, capIPs)
	}
}

// TestNoRateLimitKeepsNoIdleState: without a rate limit there is no
// history to keep, so closed IPs are dropped at once.
func TestNoRateLimitKeepsNoIdleState(t *testing.T) {
	m := newTestManager(t, Config{ConnectionRateLimitPerMinute: -1})
	for i := range 1000 {
		m.Close(mustOpen(t, m, floodAddr(i)))
	}
	if n := m.TrackedIPs(); n != 0 {
		t.Fatalf("TrackedIPs = %d, want 0", n)
	}
}

// TestRunPrunes: Run's sweeper prunes expired per-IP state (fake clock
// for the window, real ticker for the sweeps).
func TestRunPrunes(t *testing.T) {
	clk := newFakeClock()
	m := newTestManager(t, Config{InactivityTimeout: 40 * time.Millisecond, Now: clk.Now})
	for i := range 100 {
		m.Close(mustOpen(t, m, floodAddr(i)))
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { m.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()
	waitSweeps(t, m, 2)
	if n := m.TrackedIPs(); n != 100 {
		t.Fatalf("TrackedIPs = %d before expiry, want 100", n)
	}
	clk.Advance(2 * time.Minute)
	waitSweeps(t, m, 2)
	if n := m.TrackedIPs(); n != 0 {
		t.Fatalf("TrackedIPs = %d after expiry, want 0", n)
	}
}

// tracked reports whether a has a per-IP entry (test helper).
func (m *Manager) tracked(a netip.Addr) bool {
	a = m.ipKey(a)
	s := m.ips.shardFor(a)
	s.Lock()
	defer s.Unlock()
	ok := s.Get(a) != nil
	return ok
}

// TestPruneOrder: pruning removes exactly the entries whose window expired,
// including IPs that were touched again later (they must move to the back of
// the idle list, or pruning would stop early / drop live history).
func TestPruneOrder(t *testing.T) {
	clk := newFakeClock()
	m := newTestManager(t, Config{ConnectionRateLimitPerMinute: 1, Now: clk.Now})
	for i := range 1000 { // old generation at t=0
		m.Close(mustOpen(t, m, floodAddr(i)))
	}
	clk.Advance(90 * time.Second)
	for i := 1000; i < 2000; i++ { // new generation at t=90s
		m.Close(mustOpen(t, m, floodAddr(i)))
	}
	for i := range 100 { // re-touch 100 old IPs with a refused attempt
		if _, err := m.Open(ap(floodAddr(i), 1), 80, newCloser()); err != nil && !isReason(err, ReasonRateLimit) {
			t.Fatal(err)
		}
	}
	clk.Advance(31 * time.Second) // t=121s: untouched old entries expired
	m.prune()
	if n := m.TrackedIPs(); n != 1100 {
		t.Fatalf("TrackedIPs = %d, want 1100 (1000 new + 100 re-touched)", n)
	}
	for i := range 100 {
		if !m.tracked(floodAddr(i)) {
			t.Fatalf("re-touched %s was pruned", floodAddr(i))
		}
	}
}
