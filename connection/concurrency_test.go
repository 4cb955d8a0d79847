package connection

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestCloseIdempotentConcurrent(t *testing.T) {
	m := newTestManager(t, Config{})
	for range 50 {
		r := mustOpen(t, m, v4(1))
		if err := m.AssignRoute(r, "web", "", 0); err != nil {
			t.Fatal(err)
		}
		var wins atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 16 {
			wg.Go(func() {
				<-start
				if m.Close(r) {
					wins.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		if n := wins.Load(); n != 1 {
			t.Fatalf("Close returned true %d times, want 1", n)
		}
		if m.Close(r) {
			t.Fatal("late Close returned true")
		}
	}
	checkZero(t, m, v4(1))
	if m.RouteActive("web") != 0 {
		t.Fatalf("RouteActive = %d", m.RouteActive("web"))
	}
}

// TestStorm runs 10,000 Open/AssignRoute/AddIn/Close cycles from 100
// goroutines over 64 IPs, racing with double Close, AssignRoute vs Close,
// CloseAll, Snapshot, Records and Run; every counter must end at zero.
func TestStorm(t *testing.T) {
	const goroutines, perG = 100, 100
	m := newTestManager(t, Config{
		MaxConnections: 50, MaxConnectionsPerIP: 2, ConnectionRateLimitPerMinute: -1,
		InactivityTimeout: 20 * time.Millisecond, MaxTrackedIPs: 32,
	})
	ctx, cancel := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	bg.Go(func() { m.Run(ctx) })
	bg.Go(func() {
		for ctx.Err() == nil {
			_ = m.Snapshot()
			_ = m.Records()
			m.CloseAll()
			time.Sleep(time.Millisecond)
		}
	})

	var admitted, refused atomic.Uint64
	var wg, strays sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range perG {
				ip := v4(g*7 + i%64)
				r, err := m.Open(ap(ip, uint16(i)), 80, newCloser())
				if err != nil {
					if _, ok := err.(*LimitError); !ok {
						t.Errorf("non-limit error: %v", err)
					}
					refused.Add(1)
					continue
				}
				admitted.Add(1)
				route := []string{"a", "b", "c"}[i%3]
				if i%5 == 0 { // AssignRoute racing with Close
					var w sync.WaitGroup
					w.Go(func() { _ = m.AssignRoute(r, route, "x", 10) })
					m.Close(r)
					w.Wait()
					continue
				}
				_ = m.AssignRoute(r, route, "x", 10)
				r.AddIn(10)
				r.AddOut(20)
				if i%7 == 0 {
					strays.Go(func() { m.Close(r) }) // racing double close
				}
				m.Close(r)
			}
		})
	}
	wg.Wait()
	strays.Wait()
	cancel()
	bg.Wait()

	if admitted.Load()+refused.Load() != goroutines*perG {
		t.Fatalf("accounted %d of %d", admitted.Load()+refused.Load(), goroutines*perG)
	}
	if admitted.Load() == 0 {
		t.Fatal("nothing admitted")
	}
	t.Logf("admitted %d, refused %d", admitted.Load(), refused.Load())
	s := m.Snapshot()
	if s.Total != admitted.Load() {
		t.Errorf("Total = %d, want %d", s.Total, admitted.Load())
	}
	openRejected := s.Rejected[ReasonGlobalLimit] + s.Rejected[ReasonIPLimit] + s.Rejected[ReasonRateLimit]
	if openRejected != refused.Load() {
		t.Errorf("Rejected = %v, callers saw %d Open refusals", s.Rejected, refused.Load())
	}
	for _, route := range []string{"a", "b", "c"} {
		if n := m.RouteActive(route); n != 0 {
			t.Errorf("RouteActive(%s) = %d", route, n)
		}
	}
	checkZero(t, m)
	if n := m.TrackedIPs(); n != 0 {
		t.Errorf("TrackedIPs = %d, want 0 without rate limit", n)
	}
}
