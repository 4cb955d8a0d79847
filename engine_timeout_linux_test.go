//go:build linux

package smartproxy

import (
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// blackHole makes addr a host whose connects never finish: a listening socket with a backlog
// of 0 whose accept queue one completed connection fills, so the kernel drops every further
// SYN (the client retries for minutes).
func blackHole(t *testing.T, addr string) {
	t.Helper()
	ap := netip.MustParseAddrPort(addr)
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { _ = syscall.Close(fd) })
	require.NoError(t, syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1))
	require.NoError(t, syscall.Bind(fd, &syscall.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}))
	require.NoError(t, syscall.Listen(fd, 0))
	filler, err := net.DialTimeout("tcp", addr, time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = filler.Close() })
	_, err = net.DialTimeout("tcp", addr, 100*time.Millisecond)
	require.Error(t, err, "the black hole answered")
}

// TestDialBudgetIsSharedAcrossHosts on the loop: a host that never answers a connect gets its
// share of ConnectTimeout (half, with two hosts), not all of it, so the next host is still
// tried in time; it is marked failed and skipped afterwards.
func TestEngineDialBudgetIsSharedAcrossHosts(t *testing.T) {
	t.Parallel()
	lns := samePortListeners(t, 2)
	hangAddr := lns[0].Addr().String()
	require.NoError(t, lns[0].Close())
	blackHole(t, hangAddr)
	serveBackend(t, lns[1], nameThenEcho("good"))
	p, port := startEngineProxy(t, Options{ConnectTimeout: time.Second}, func(port int) []Route {
		return []Route{lbRoute("bh", port, "", hangAddr, lns[1].Addr().String())}
	})
	start := time.Now()
	require.Equal(t, "good", who(t, port)) // the first pick is the black hole
	el := time.Since(start)
	// The loop checks deadlines every tick (an eighth of the shortest timeout), so the share
	// may end up to a tick late.
	require.Greater(t, el, 450*time.Millisecond, "the black hole got less than its share")
	require.Less(t, el, 950*time.Millisecond, "the black hole got more than its share")
	require.False(t, statusOf(t, p, hangAddr).Up)
	require.Equal(t, "good", who(t, port)) // now skipped: not dialed again
	require.EqualValues(t, 1, p.ops.targets.get(hangAddr).Load(), "connect failures of the black hole")
	requireNoRecords(t, p)
}

// With every host a black hole the connection ends once ConnectTimeout is spent in all,
// not after a whole ConnectTimeout per host.
func TestEngineDialBudgetEndsWithAllHostsDown(t *testing.T) {
	t.Parallel()
	lns := samePortListeners(t, 3)
	var addrs []string
	for _, ln := range lns {
		addrs = append(addrs, ln.Addr().String())
		require.NoError(t, ln.Close())
		blackHole(t, ln.Addr().String())
	}
	p, port := startEngineProxy(t, Options{ConnectTimeout: 600 * time.Millisecond}, func(port int) []Route {
		return []Route{lbRoute("all-down", port, "", addrs...)}
	})
	c := dial(t, port)
	el, got := awaitClose(t, c, 5*time.Second)
	require.Empty(t, got)
	require.Greater(t, el, 500*time.Millisecond)
	require.Less(t, el, 1200*time.Millisecond, "each host got the whole ConnectTimeout")
	requireNoRecords(t, p)
}
