package smartproxy

import (
	"context"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/stretchr/testify/require"
)

// Floods of the whole proxy: many clients at once, checking that what the
// proxy keeps per client stays bounded. The longest test of the package;
// its file sorts before most others so it starts early among the parallel
// tests rather than running alone at the end.

// TestSecurityFloodDistinctIPs: connections from many distinct loopback
// addresses against a route with per-IP limits. Every one is served, the
// per-IP and per-route per-IP tables stay within MaxTrackedIPs, and both
// are pruned to zero once the rate windows have passed. 100,000
// connections (about 5 s, 10 s with -race on 2 cores); 2,000 with -short.
func TestSecurityFloodDistinctIPs(t *testing.T) {
	t.Parallel()
	n := 100000
	if testing.Short() {
		n = 2000
	}
	const capIPs = 1000
	clk := &stepClock{now: time.Now()}
	mgr, err := connection.NewManager(connection.Config{
		MaxTrackedIPs: capIPs, MaxConnectionsPerIP: -1, ConnectionRateLimitPerMinute: 100, Now: clk.Now,
	})
	require.NoError(t, err)
	sec := &RouteSecurity{MaxConnectionsPerIP: 2, ConnectionRateLimitPerMinute: 5}
	lp := newListenerPool(t)
	port := lp.port(t)
	route := SocketHandlerRoute("flood", Ports(port), nil, func(_ context.Context, c net.Conn, _ *RouteContext) error {
		_, err := io.WriteString(c, "ok")
		return err
	})
	route.Security = sec
	p := startTestProxy(t, lp, Options{
		Routes:      []Route{route},
		Connections: mgr,
	})

	var next atomic.Int64
	var served, peakIPs, peakRouteIPs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range 16 {
		wg.Go(func() {
			buf := make([]byte, 8)
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				src := net.IPv4(127, byte(1+i>>16), byte(i>>8), byte(i))
				d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: src}}
				c, err := d.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
				if err != nil {
					t.Errorf("dial from %v: %v", src, err)
					return
				}
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				m, _ := io.ReadFull(c, buf[:2])
				_ = c.Close()
				if m == 2 {
					served.Add(1)
				}
				if i%500 == 0 {
					s := p.Metrics()
					peakIPs.Store(max(peakIPs.Load(), int64(s.TrackedIPs)))
					peakRouteIPs.Store(max(peakRouteIPs.Load(), int64(s.TrackedRouteIPs)))
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d connections from distinct addresses in %v; peak tracked IPs %d, route IPs %d",
		n, time.Since(start), peakIPs.Load(), peakRouteIPs.Load())
	require.Equal(t, int64(n), served.Load())
	requireNoRecords(t, p)
	s := p.Metrics()
	// Entries holding a connection may exceed the cap briefly (never
	// evicted); 16 clients hold at most 16.
	require.LessOrEqual(t, s.TrackedIPs, capIPs)
	require.LessOrEqual(t, s.TrackedRouteIPs, capIPs)
	require.LessOrEqual(t, peakIPs.Load(), int64(capIPs+16), "the per-IP table stayed bounded during the flood")
	require.LessOrEqual(t, peakRouteIPs.Load(), int64(capIPs+16))
	require.Equal(t, min(n, capIPs), s.TrackedRouteIPs, "history is kept up to the cap")

	// The per-route rate limit holds: the 6th connection of one client in
	// a minute is closed without being served.
	for i := range 6 {
		c := dialFrom(t, "127.250.0.1", port)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(c)
		require.Equal(t, i < 5, string(b) == "ok", "connection %d", i)
	}
	require.Equal(t, uint64(1), p.Metrics().Rejected[connection.ReasonRouteRateLimit])

	// Once the rate windows are over, the manager's sweeper prunes both tables.
	clk.Advance(3 * time.Minute)
	require.Eventually(t, func() bool {
		s := p.Metrics()
		return s.TrackedIPs == 0 && s.TrackedRouteIPs == 0
	}, 5*time.Second, 20*time.Millisecond)
}
