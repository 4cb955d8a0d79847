package balance

import (
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestFailedBacksOffDoublingAndCapped(t *testing.T) {
	reg := testHealth()
	reg.BackoffBase, reg.BackoffMax = time.Minute, 4*time.Minute
	for i, want := range []time.Duration{1, 2, 4, 4, 4} {
		// Fake the end of the previous backoff, so the failure counts.
		reg.lookupOrZero("x:1").downUntil.Store(0)
		before := time.Now()
		reg.Failed("x:1", io.EOF)
		st := statusOf(reg, "x:1")
		require.Equal(t, i+1, st.ConsecutiveFailures)
		require.False(t, st.Up)
		require.WithinDuration(t, before.Add(want*time.Minute), st.DownUntil, time.Second, "failure %d", i+1)
	}
	// Failures during the backoff (connects in flight when it went down)
	// do not escalate it; cancelled connects are nobody's fault.
	reg.Failed("x:1", io.EOF)
	reg.Failed("y:1", fmt.Errorf("dial: %w", context.Canceled))
	require.Equal(t, 5, statusOf(reg, "x:1").ConsecutiveFailures)
	require.Len(t, reg.Status(), 1)

	reg.Succeeded("x:1")
	require.Empty(t, reg.Status(), "a recovered address nothing else holds is forgotten")
	reg.Succeeded("z:1") // unknown: nothing to do
	require.Empty(t, reg.Status())
}

func TestBackoffEndsByItself(t *testing.T) {
	reg := testHealth()
	reg.BackoffBase = 5 * time.Millisecond
	reg.Failed("x:1", io.EOF)
	_, ok := Pick(First{}, &Pool{Hosts: []string{"x"}, Port: "1"}, reg)
	require.False(t, ok)
	require.Eventually(t, func() bool {
		_, ok := Pick(First{}, &Pool{Hosts: []string{"x"}, Port: "1"}, reg)
		return ok
	}, time.Second, time.Millisecond)
	require.Equal(t, 1, statusOf(reg, "x:1").ConsecutiveFailures, "kept until a connect succeeds")
}

// Leases count active connections; releasing is idempotent and safe from
// many goroutines, a released lease can be taken again, and an address
// with nothing to say leaves the registry once its last lease is released.
func TestLeasesCountActiveConnections(t *testing.T) {
	reg := testHealth()
	var a, b Lease
	reg.Acquire(&a, "x:1")
	reg.Acquire(&b, "x:1")
	require.EqualValues(t, 2, statusOf(reg, "x:1").ActiveConnections)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(a.Release)
	}
	wg.Wait()
	require.EqualValues(t, 1, statusOf(reg, "x:1").ActiveConnections)
	reg.Acquire(&a, "x:1")
	require.EqualValues(t, 2, statusOf(reg, "x:1").ActiveConnections)
	a.Release()
	b.Release()
	require.Empty(t, reg.Status())

	var plan Plan
	plan.Pin("x:1")
	reg.Sync(&plan)
	reg.Acquire(&a, "x:1")
	a.Release()
	require.Equal(t, []Status{{Addr: "x:1", Up: true, HealthCheckUp: true}}, reg.Status(), "a pinned address stays")
	require.Zero(t, testing.AllocsPerRun(100, func() {
		reg.Acquire(&a, "x:1")
		a.Release()
	}))
}

// lookupOrZero returns addr's entry, creating it.
func (r *Health) lookupOrZero(addr string) *addrHealth {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.getLocked(addr)
}

// TestSucceededWhileOthersFail: Succeeded returns at once while no address is failing; an
// address must still recover when another recovered before it, and after the count went back
// to zero and up again.
func TestSucceededWhileOthersFail(t *testing.T) {
	reg := testHealth()
	reg.Failed("x:1", io.EOF)
	reg.Failed("y:1", io.EOF)
	reg.Succeeded("x:1")
	reg.Succeeded("x:1") // twice: counted once
	require.Equal(t, 1, statusOf(reg, "y:1").ConsecutiveFailures)
	reg.Succeeded("y:1")
	require.Empty(t, reg.Status())
	reg.Failed("y:1", io.EOF)
	reg.Succeeded("y:1")
	require.Empty(t, reg.Status(), "failing again after the count was zero")
	require.Zero(t, reg.failing.Load())
}
