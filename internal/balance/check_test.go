package balance

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHealthCheckerThresholds(t *testing.T) {
	h := &addrHealth{addr: "x:1"}
	c := &checker{key: CheckKey{Config: CheckConfig{UnhealthyAfter: 3, HealthyAfter: 2}}, h: h, up: true}
	steps := []struct {
		ok      bool
		flipped bool
		up      bool
	}{
		{false, false, true}, {false, false, true}, {true, false, true}, // a success resets the count
		{false, false, true}, {false, false, true}, {false, true, false}, // third in a row: down
		{false, false, false}, {true, false, false}, {false, false, false}, // a failure resets the successes
		{true, false, false}, {true, true, true}, {true, false, true},
	}
	for i, s := range steps {
		require.Equal(t, s.flipped, c.record(s.ok), "step %d", i)
		require.Equal(t, s.up, c.up, "step %d", i)
		require.Equal(t, s.up, h.downVotes.Load() == 0, "step %d", i)
	}
}

func TestCheckConfigDefaults(t *testing.T) {
	require.Equal(t, CheckConfig{Path: "/h", Interval: 10 * time.Second, Timeout: 2 * time.Second, UnhealthyAfter: 3, HealthyAfter: 2},
		CheckConfig{Path: "/h"}.WithDefaults())
	c := CheckConfig{Interval: time.Second, Timeout: time.Millisecond, UnhealthyAfter: 1, HealthyAfter: 5}
	require.Equal(t, c, c.WithDefaults())
}

// A plan asks for each check once: the TLS config of the first request
// of a key is the one used.
func TestPlanSharesEqualChecks(t *testing.T) {
	var plan Plan
	k := CheckKey{Addr: "a:1", Config: CheckConfig{Path: "/h"}, TLS: CheckPassthrough}
	calls := 0
	conf := func() *tls.Config { calls++; return &tls.Config{ServerName: "first"} }
	plan.Check(k, conf)
	plan.Check(k, conf)
	require.Equal(t, 1, calls)
	plan.Check(CheckKey{Addr: "a:1", Config: CheckConfig{Path: "/h"}}, func() *tls.Config { return nil })
	require.Len(t, plan.checks, 2, "another TLS mode is another checker")
	require.Equal(t, "first", plan.checks[k].ServerName)
}

// Sync starts the checkers a plan asks for, and a later plan without them
// stops them and withdraws their verdicts; pins keep idle addresses
// listed until a plan drops them.
func TestSyncStartsAndStopsCheckers(t *testing.T) {
	dials := make(chan string, 100)
	reg := NewHealth(testHealth().log, func(ctx context.Context, addr string) (net.Conn, error) {
		dials <- addr
		return nil, errors.New("refused")
	})
	cfg := CheckConfig{Interval: 5 * time.Millisecond, Timeout: time.Second, UnhealthyAfter: 2, HealthyAfter: 1}
	var plan Plan
	plan.Pin("a:1")
	plan.Pin("b:1")
	plan.Check(CheckKey{Addr: "a:1", Config: cfg}, func() *tls.Config { return nil })
	reg.Sync(&plan)
	require.Equal(t, 1, reg.Checkers())
	require.Equal(t, "a:1", <-dials)
	require.Eventually(t, func() bool { return !statusOf(reg, "a:1").HealthCheckUp }, 2*time.Second, time.Millisecond)
	st := statusOf(reg, "a:1")
	require.True(t, st.HealthChecked)
	require.False(t, st.Up)
	require.Zero(t, st.ConsecutiveFailures, "probes are not connects")
	require.True(t, statusOf(reg, "b:1").Up)
	_, ok := Pick(First{}, &Pool{Hosts: []string{"a", "b"}, Port: "1"}, reg)
	require.True(t, ok)
	a, _ := Pick(First{}, &Pool{Hosts: []string{"a", "b"}, Port: "1"}, reg)
	require.Equal(t, "b:1", a, "a checker's verdict takes the address out")

	var next Plan
	next.Pin("b:1")
	reg.Sync(&next)
	require.Zero(t, reg.Checkers())
	st = statusOf(reg, "a:1")
	require.Equal(t, Status{Addr: "a:1", Up: true, HealthCheckUp: true}, st, "a:1 is forgotten")
	require.Len(t, reg.Status(), 1)

	reg.Sync(&plan)
	require.Equal(t, 1, reg.Checkers())
	reg.Stop()
	require.Zero(t, reg.Checkers())
}

// statusOf is addr's Status, or what an unknown address reports.
func statusOf(reg *Health, addr string) Status {
	for _, s := range reg.Status() {
		if s.Addr == addr {
			return s
		}
	}
	return Status{Addr: addr, Up: true, HealthCheckUp: true}
}
