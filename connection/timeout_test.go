package connection

import (
	"context"
	"sync"
	"testing"
	"time"
)

// startRun runs m.Run until the test ends.
func startRun(t *testing.T, m *Manager) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { m.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// waitSweeps blocks until Run has completed n more sweeps.
func waitSweeps(t *testing.T, m *Manager, n uint64) {
	t.Helper()
	target := m.sweeps.Load() + n
	deadline := time.Now().Add(5 * time.Second)
	for m.sweeps.Load() < target {
		if time.Now().After(deadline) {
			t.Fatalf("Run did not sweep %d times within 5s", n)
		}
		time.Sleep(time.Millisecond)
	}
}

func openWithCloser(t *testing.T, m *Manager, i int) (*Record, *testCloser) {
	t.Helper()
	c := newCloser()
	r, err := m.Open(ap(v4(i), 1000), 80, c)
	if err != nil {
		t.Fatal(err)
	}
	return r, c
}

// TestInactivityRealRun uses the real clock and Run: an idle record is
// killed through its closer, one kept busy with Touch/AddIn is not.
func TestInactivityRealRun(t *testing.T) {
	// 200ms leaves the busy goroutine (touching every 10ms) ample slack on a
	// loaded machine.
	const timeout = 200 * time.Millisecond
	m := newTestManager(t, Config{InactivityTimeout: timeout, MaxLifetime: -1})
	opened := time.Now()
	idle, idleC := openWithCloser(t, m, 1)
	busy, busyC := openWithCloser(t, m, 2)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tk := time.NewTicker(10 * time.Millisecond)
		defer tk.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tk.C:
				if i%2 == 0 {
					busy.Touch()
				} else {
					busy.AddIn(1)
				}
			}
		}
	})
	startRun(t, m)
	idleC.wait(t, 5*time.Second)
	if el := time.Since(opened); el < timeout {
		t.Errorf("idle record killed after %v, before its %v timeout", el, timeout)
	}
	time.Sleep(3 * timeout) // three more timeouts' worth for busy
	close(stop)
	wg.Wait()
	if n := busyC.calls.Load(); n != 0 {
		t.Errorf("busy record's closer called %d times", n)
	}
	if got := m.Snapshot().Closed[ReasonInactivity]; got != 1 {
		t.Errorf("Closed[inactivity] = %d, want 1", got)
	}
	// The killed record stays until its owner closes it.
	if m.Active() != 2 {
		t.Errorf("Active = %d, want 2 until owners Close", m.Active())
	}
	m.Close(idle)
	m.Close(busy)
	checkZero(t, m)
}

// TestLifetimeRealRun: a busy record is still killed at MaxLifetime.
func TestLifetimeRealRun(t *testing.T) {
	m := newTestManager(t, Config{MaxLifetime: 150 * time.Millisecond})
	r, c := openWithCloser(t, m, 1)
	c.onClose = func() { m.Close(r) } // owner reacts to the kill, as a proxy would
	startRun(t, m)
	deadline := time.After(3 * time.Second)
	for c.calls.Load() == 0 {
		select {
		case <-deadline:
			t.Fatal("lifetime did not close the record")
		case <-time.After(5 * time.Millisecond):
			r.AddOut(10)
		}
	}
	// The sweep counts the kill once the closer returned (Record.kill): the closer's call may
	// be seen first.
	for m.Snapshot().Closed[ReasonLifetime] == 0 {
		select {
		case <-deadline:
			t.Fatal("the kill was not counted")
		case <-time.After(time.Millisecond):
		}
	}
	if got := m.Snapshot().Closed; got[ReasonLifetime] != 1 || got[ReasonInactivity] != 0 {
		t.Errorf("Closed = %v, want lifetime:1 only", got)
	}
	checkZero(t, m)
}

// TestTimeoutTreatments checks each keep-alive treatment against a fake
// clock by calling the sweeper directly, so the boundaries are exact.
func TestTimeoutTreatments(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		idleFor   time.Duration // idle time before the first sweep
		wantAfter bool          // closed after idleFor?
		moreIdle  time.Duration // then idle this much longer
		wantEnd   bool
		reason    Reason
	}{
		{"standard below", Config{InactivityTimeout: time.Minute}, 59 * time.Second, false, 1 * time.Second, true, ReasonInactivity},
		{"extended x3", Config{InactivityTimeout: time.Minute, KeepAliveTreatment: KeepAliveExtended,
			KeepAliveInactivityMultiplier: 3}, 2 * time.Minute, false, time.Minute, true, ReasonInactivity},
		{"extended default x6", Config{InactivityTimeout: time.Minute, KeepAliveTreatment: KeepAliveExtended},
			5*time.Minute + 59*time.Second, false, time.Second, true, ReasonInactivity},
		{"immortal", Config{InactivityTimeout: time.Minute, KeepAliveTreatment: KeepAliveImmortal, MaxLifetime: -1},
			time.Hour, false, 1000 * time.Hour, false, ""},
		{"immortal still has lifetime", Config{KeepAliveTreatment: KeepAliveImmortal, MaxLifetime: time.Hour},
			59 * time.Minute, false, time.Minute, true, ReasonLifetime},
		{"TS default 4h inactivity", Config{},
			4*time.Hour - time.Second, false, time.Second, true, ReasonInactivity},
		{"disabled inactivity", Config{InactivityTimeout: -1, MaxLifetime: -1}, 1000 * time.Hour, false, time.Hour, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			tt.cfg.Now = clk.Now
			m := newTestManager(t, tt.cfg)
			r, c := openWithCloser(t, m, 1)
			clk.Advance(tt.idleFor)
			m.sweep()
			if got := c.calls.Load() == 1; got != tt.wantAfter {
				t.Fatalf("after %v idle: closed=%v, want %v", tt.idleFor, got, tt.wantAfter)
			}
			clk.Advance(tt.moreIdle)
			m.sweep()
			m.sweep() // a second sweep must not call the closer again
			if n := c.calls.Load(); (n == 1) != tt.wantEnd || n > 1 {
				t.Fatalf("after %v more: closer calls=%d, want closed=%v (at most once)", tt.moreIdle, n, tt.wantEnd)
			}
			if tt.wantEnd && m.Snapshot().Closed[tt.reason] != 1 {
				t.Errorf("Closed = %v, want %s:1", m.Snapshot().Closed, tt.reason)
			}
			m.Close(r)
		})
	}
}

// TestActivityPostponesTimeout: activity resets the inactivity clock but
// not the lifetime clock.
func TestActivityPostponesTimeout(t *testing.T) {
	clk := newFakeClock()
	m := newTestManager(t, Config{InactivityTimeout: time.Minute, MaxLifetime: 10 * time.Minute, Now: clk.Now})
	r, c := openWithCloser(t, m, 1)
	for i := range 9 {
		clk.Advance(50 * time.Second)
		switch i % 3 {
		case 0:
			r.Touch()
		case 1:
			r.AddIn(5)
		case 2:
			r.AddOut(5)
		}
		m.sweep()
	}
	if n := c.calls.Load(); n != 0 {
		t.Fatalf("active record killed (%d calls) at 450s", n)
	}
	if got, want := r.Info().LastActivity, clk.Now(); !got.Equal(want) {
		t.Errorf("LastActivity = %v, want %v", got, want)
	}
	clk.Advance(150 * time.Second) // 600s total
	r.Touch()
	m.sweep()
	if c.calls.Load() != 1 || m.Snapshot().Closed[ReasonLifetime] != 1 {
		t.Fatalf("lifetime not enforced: calls=%d closed=%v", c.calls.Load(), m.Snapshot().Closed)
	}
	m.Close(r)
}

// TestCloseAll kills every record once, counts shutdown, and leaves
// removal to the owners; closers may call Close re-entrantly.
func TestCloseAll(t *testing.T) {
	m := newTestManager(t, Config{})
	var closers []*testCloser
	var recs []*Record
	for i := range 20 {
		r, c := openWithCloser(t, m, i)
		if i%2 == 0 {
			c.onClose = func() { m.Close(r) }
		}
		recs, closers = append(recs, r), append(closers, c)
	}
	m.Close(recs[1]) // already closed by its owner: must not be killed
	m.CloseAll()
	m.CloseAll()
	for i, c := range closers {
		want := int32(1)
		if i == 1 {
			want = 0
		}
		if n := c.calls.Load(); n != want {
			t.Errorf("record %d closer calls = %d, want %d", i, n, want)
		}
	}
	if got := m.Snapshot().Closed[ReasonShutdown]; got != 19 {
		t.Errorf("Closed[shutdown] = %d, want 19", got)
	}
	if m.Active() != 9 { // odd ones except #1 wait for their owners
		t.Errorf("Active = %d, want 9", m.Active())
	}
	for _, r := range recs {
		m.Close(r)
	}
	checkZero(t, m)
}
