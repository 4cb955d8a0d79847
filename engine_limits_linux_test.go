//go:build linux

package smartproxy

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy/connection"
)

// MaxConnectionLifetime ends an engine connection that is still busy: the manager's sweeper
// kills it through the loop, and the reason is counted.
func TestEngineMaxLifetime(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "127.0.0.1:0", echo)
	p, port := startEngineProxy(t, Options{MaxConnectionLifetime: 300 * time.Millisecond}, func(port int) []Route {
		return []Route{plainRoute("life", port, be.addr())}
	})
	c := dial(t, port)
	start := time.Now()
	for i := 0; time.Since(start) < 5*time.Second; i++ {
		require.NoError(t, c.SetDeadline(time.Now().Add(time.Second)))
		if _, err := c.Write([]byte("x")); err != nil {
			break
		}
		buf := make([]byte, 1)
		if _, err := c.Read(buf); err != nil {
			break
		}
		time.Sleep(20 * time.Millisecond) // busy: never idle long enough for inactivity
	}
	el := time.Since(start)
	require.Greater(t, el, 200*time.Millisecond)
	require.Less(t, el, 3*time.Second, "the connection outlived MaxConnectionLifetime")
	requireNoRecords(t, p)
	require.Eventually(t, func() bool { return p.Metrics().Closed[connection.ReasonLifetime] == 1 },
		2*time.Second, 5*time.Millisecond, "closed: %v", p.Metrics().Closed)
}

// CloseAll (the manager's kill of every connection, as Stop uses it) closes open engine
// connections at once, counted as shutdown.
func TestEngineCloseAll(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "127.0.0.1:0", echo)
	p, port := startEngineProxy(t, Options{}, func(port int) []Route { return []Route{plainRoute("all", port, be.addr())} })
	var conns []*net.TCPConn
	for i := range 3 {
		c := dial(t, port)
		require.Equal(t, strconv.Itoa(i), roundTrip(t, c, strconv.Itoa(i)))
		conns = append(conns, c)
	}
	p.conns.CloseAll()
	for _, c := range conns {
		el, _ := awaitClose(t, c, 2*time.Second)
		require.Less(t, el, time.Second)
	}
	requireNoRecords(t, p)
	require.EqualValues(t, 3, p.Metrics().Closed[connection.ReasonShutdown])
}

// The engine keeps per-connection metrics current while a connection is open: the record's
// byte counts, route and client, as the admin API lists them.
func TestEngineRecordBytes(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "127.0.0.1:0", echo)
	p, port := startEngineProxy(t, Options{}, func(port int) []Route { return []Route{plainRoute("rec", port, be.addr())} })
	c := dial(t, port)
	require.Equal(t, "hello", roundTrip(t, c, "hello"))
	require.Equal(t, "abc", roundTrip(t, c, "abc"))
	// Eventually: the goroutine path counts a chunk after its write returned, and the echo
	// can reach the client first (SMARTPROXY_TEST_ENGINE=goroutines saw 5 of 8).
	var recs []connection.RecordInfo
	require.Eventually(t, func() bool {
		recs = p.conns.(*connection.Manager).Records()
		return len(recs) == 1 && recs[0].BytesIn == 8 && recs[0].BytesOut == 8
	}, 2*time.Second, time.Millisecond, "records %+v", recs)
	require.Equal(t, "rec", recs[0].Route)
	require.Equal(t, port, recs[0].LocalPort)
	require.Equal(t, c.LocalAddr().(*net.TCPAddr).AddrPort(), recs[0].Client)
	require.NoError(t, c.Close())
	requireNoRecords(t, p)
}

// UpdateRoutes without the port stops its loops accepting: new connections are refused, the
// open one carries on to its end, and then the loops are gone (the suite's leak check).
func TestEngineUpdateRoutesRemovesPort(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "127.0.0.1:0", echo)
	p, port := startEngineProxy(t, Options{}, func(port int) []Route { return []Route{plainRoute("gone", port, be.addr())} })
	open := dial(t, port)
	require.Equal(t, "x", roundTrip(t, open, "x"))
	other := closedPort(t)
	require.NoError(t, p.UpdateRoutes([]Route{plainRoute("other", other, be.addr())}))
	require.False(t, servedByEngine(p, port))
	_, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	require.Error(t, err, "the removed port still accepts")
	require.Equal(t, "y", roundTrip(t, open, "y"))
	require.NoError(t, open.Close())
	requireNoRecords(t, p)
	require.NoError(t, p.Stop(context.Background()))
}

// Idle engine connections hold no goroutine (the loops serve them all); parking, the
// goroutine path's way to the same end, is not used.
func TestEngineIdleConnectionsHoldNoGoroutine(t *testing.T) {
	// Not parallel: goroutinesIn counts the goroutines of the whole process.
	be := startBackend(t, "127.0.0.1:0", echo)
	p, port := startEngineProxy(t, Options{IdleParkAfter: 20 * time.Millisecond}, func(port int) []Route {
		return []Route{plainRoute("idle", port, be.addr())}
	})
	count := func() int {
		return goroutinesIn("smartproxy.(*Proxy)") + goroutinesIn("forwarding.") + goroutinesIn("evloop.")
	}
	// Start's runner goroutines (the reject log, ticket rotation) start after it returns:
	// counted from when the count stops moving.
	before := count()
	require.Eventually(t, func() bool {
		b := count()
		time.Sleep(20 * time.Millisecond)
		before = count()
		return before == b
	}, 5*time.Second, time.Millisecond)
	const n = 20
	for i := range n {
		c := dial(t, port)
		require.Equal(t, strconv.Itoa(i), roundTrip(t, c, strconv.Itoa(i)))
	}
	require.EqualValues(t, n, p.Metrics().Active)
	time.Sleep(50 * time.Millisecond) // past IdleParkAfter: nothing may park either
	require.Equal(t, before, count(), "goroutines for idle engine connections")
	require.Zero(t, p.parker.Parked())
}
