//go:build linux

package smartproxy

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The loop's connections are accounted as the goroutine path's are: opened and closed per
// port, bytes and closes per route, connect failures per target, and an access log line
// naming the target; a refused connection (no route) is opened and closed too.
func TestEngineOpsAccounting(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "127.0.0.1:0", echo)
	_, bePort, _ := net.SplitHostPort(be.addr())
	refused := "127.0.0.2:" + bePort // nothing listens there (see TestEngineNextHostAfterRefusal)
	var buf syncBuffer
	opts := Options{AccessLog: &AccessLogOptions{Logger: slog.New(slog.NewJSONHandler(&buf, nil))}}
	p, port := startEngineProxy(t, opts, func(port int) []Route {
		r := NewRoute("two").Ports(port).ForwardTo(refused, be.addr()).Route()
		r.Match.ClientIP = []string{"127.0.0.1"}
		return []Route{r}
	})
	for range 2 { // one of them is offered the refused host first (round robin)
		c := dial(t, port)
		require.Equal(t, "hello", roundTrip(t, c, "hello"))
		require.NoError(t, c.Close())
	}
	other := dialFrom(t, "127.0.0.3", port) // no route for this client
	_, _ = awaitClose(t, other, 3*time.Second)
	requireNoRecords(t, p)

	ports := p.ops.ports.get(port)
	require.EqualValues(t, 3, ports.opened.Load())
	require.EqualValues(t, 3, ports.closed.Load())
	route := p.ops.routes.get("two")
	// The route's counters are settled after the record is gone: wait for them.
	require.Eventually(t, func() bool { return route.closed.Load() == 2 }, 3*time.Second, time.Millisecond,
		"route closes: %d", route.closed.Load())
	require.EqualValues(t, 10, route.bytesIn.Load())
	require.EqualValues(t, 10, route.bytesOut.Load())
	require.EqualValues(t, 1, p.ops.targets.get(refused).Load(), "the refused host's connect failure")

	require.NoError(t, p.Stop(context.Background())) // writes what is queued
	var lines []map[string]any
	for _, l := range accessLines(t, &buf) {
		if l["route"] == "two" {
			lines = append(lines, l)
		}
	}
	require.Len(t, lines, 2)
	for _, l := range lines {
		require.Equal(t, be.addr(), l["target"])
		require.EqualValues(t, 5, l["bytesIn"])
		require.EqualValues(t, 5, l["bytesOut"])
	}
}

// BenchmarkEngineConnectEcho is BenchmarkConnectEcho on event loops: connect, one byte
// there and back, close (the per-connection cost, accounting included).
func BenchmarkEngineConnectEcho(b *testing.B) {
	be := startBackend(b, "127.0.0.1:0", echo)
	port := closedPort(b)
	startTestProxy(b, nil, Options{Engine: EngineEventLoop, ListenAddress: "127.0.0.1", Routes: []Route{plainRoute("bench", port, be.addr())}})
	connectEchoLoop(b, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
}
