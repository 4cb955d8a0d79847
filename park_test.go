package smartproxy

import (
	"context"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy/connection"
)

// goroutinesIn counts goroutines whose stack contains fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}

// waitParked waits until the proxy's parker holds want directions.
func waitParked(t *testing.T, p *Proxy, want int) {
	t.Helper()
	require.Eventually(t, func() bool { return p.parker.Parked() == want }, 5*time.Second, 5*time.Millisecond,
		"parked %d, want %d", p.parker.Parked(), want)
}

// startParkingProxy starts a proxy forwarding a port to a backend run by
// handle, with opts (IdleParkAfter set by the caller) and the route added.
// It is pinned to EngineGoroutines: parking is the goroutine path's way to
// let an idle connection hold no goroutine and no buffer; event loops never
// give it either (TestEngineIdleConnectionsHoldNoGoroutine).
func startParkingProxy(t *testing.T, handle func(net.Conn), opts Options) (*Proxy, int) {
	t.Helper()
	opts.Engine = EngineGoroutines
	be := startBackend(t, "127.0.0.1:0", handle)
	lp := newListenerPool(t)
	port := lp.port(t)
	opts.Routes = []Route{plainRoute("r", port, be.addr())}
	return startTestProxy(t, lp, opts), port
}

// Idle forwarded connections keep no goroutine: neither the serving one
// nor the copying ones. Traffic resumes them, in order, and they park again.
func TestIdleForwardedConnectionsPark(t *testing.T) {
	// Not parallel: goroutinesIn counts the goroutines of the whole process.
	p, port := startParkingProxy(t, echo, Options{
		IdleParkAfter: 40 * time.Millisecond,
	})
	const n = 20
	serving := goroutinesIn("smartproxy.(*Proxy).serve")
	copying := goroutinesIn("forwarding.copy")
	conns := make([]*net.TCPConn, n)
	for i := range n {
		c := dial(t, port)
		conns[i] = c
		require.Equal(t, "hello", roundTrip(t, c, "hello"))
	}
	waitParked(t, p, 2*n)
	require.Equal(t, serving, goroutinesIn("smartproxy.(*Proxy).serve"), "serving goroutines left for parked connections")
	require.Equal(t, copying, goroutinesIn("forwarding.copy"), "copy goroutines left for parked connections")
	require.EqualValues(t, n, p.Metrics().Active)

	for round := range 2 {
		for i := range n {
			msg := strconv.Itoa(round*n + i)
			require.Equal(t, msg, roundTrip(t, conns[i], msg))
		}
		waitParked(t, p, 2*n)
	}
	for _, c := range conns {
		c.Close()
	}
	requireNoRecords(t, p)
	waitParked(t, p, 0)
}

// The connection manager's inactivity timeout closes a parked connection
// on time, and the records and the parker are left empty.
func TestParkedConnectionInactivityTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	p, port := startParkingProxy(t, echo, Options{
		InactivityTimeout: timeout,
		IdleParkAfter:     20 * time.Millisecond,
	})
	c := dial(t, port)
	start := time.Now()
	require.Equal(t, "x", roundTrip(t, c, "x"))
	waitParked(t, p, 2)
	awaitClose(t, c, 5*time.Second)
	require.Greater(t, time.Since(start), timeout*3/4)
	require.Less(t, time.Since(start), 4*timeout)
	requireNoRecords(t, p)
	waitParked(t, p, 0)
	require.EqualValues(t, 1, p.Metrics().Closed[connection.ReasonInactivity])
}

// Stop waits for parked connections like any other, and cuts them when
// its context ends; nothing is left behind (the test's goleak check).
func TestStopWithParkedConnections(t *testing.T) {
	t.Parallel()
	p, port := startParkingProxy(t, echo, Options{
		IdleParkAfter: 20 * time.Millisecond,
	})
	c := dial(t, port)
	require.Equal(t, "x", roundTrip(t, c, "x"))
	waitParked(t, p, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	require.ErrorIs(t, p.Stop(ctx), context.DeadlineExceeded)
	require.Less(t, time.Since(start), 2*time.Second)
	awaitClose(t, c, 2*time.Second)
	require.EqualValues(t, 0, p.Metrics().Active)
}

// A client that half-closes a parked connection still gets the backend's
// answer, and the connection ends cleanly.
func TestParkedConnectionHalfClose(t *testing.T) {
	t.Parallel()
	p, port := startParkingProxy(t, func(c net.Conn) {
		b, _ := io.ReadAll(c)
		_, _ = c.Write(append([]byte("got:"), b...))
	}, Options{
		IdleParkAfter: 20 * time.Millisecond,
	})
	c := dial(t, port)
	_, err := c.Write([]byte("abc"))
	require.NoError(t, err)
	waitParked(t, p, 2) // both idle: "abc" sits at the backend, which waits for EOF
	require.NoError(t, c.CloseWrite())
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	require.Equal(t, "got:abc", string(got))
	requireNoRecords(t, p)
}
