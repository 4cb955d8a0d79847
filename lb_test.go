package smartproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/balance"
	"github.com/stretchr/testify/require"
)

// Load-balancing tests over loopback: backends answer with their name, so
// each client connection shows which backend the proxy chose.

// A target's hosts share one port, so backends of one target listen on
// distinct loopback addresses (127.0.1.x) with the same port.

// samePortListeners listens on 127.0.1.1 … 127.0.1.n, all on one port.
func samePortListeners(t testing.TB, n int) []net.Listener {
	t.Helper()
	for range 20 {
		first, err := net.Listen("tcp", "127.0.1.1:0")
		require.NoError(t, err)
		port := first.Addr().(*net.TCPAddr).Port
		lns := []net.Listener{first}
		for i := 2; i <= n; i++ {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.1.%d:%d", i, port))
			if err != nil {
				break // the port is taken on that address: start over
			}
			lns = append(lns, ln)
		}
		if len(lns) == n {
			return lns
		}
		for _, ln := range lns {
			_ = ln.Close()
		}
	}
	t.Fatal("no port free on all loopback addresses")
	return nil
}

// nameThenEcho writes name and a newline, then echoes until EOF.
func nameThenEcho(name string) func(net.Conn) {
	return func(c net.Conn) {
		if _, err := io.WriteString(c, name+"\n"); err != nil {
			return
		}
		echo(c)
	}
}

// namedBackend serves nameThenEcho on addr.
func namedBackend(t testing.TB, addr, name string) *backend {
	t.Helper()
	return startBackend(t, addr, nameThenEcho(name))
}

// whoFrom connects from ip (empty: default) through the proxy port and
// returns the name of the backend that answered; the conn stays open
// (until the test ends) when keep is set.
func whoFrom(t testing.TB, ip string, port int, keep bool) string {
	t.Helper()
	c := dialFrom(t, ip, port)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(3*time.Second)))
	line, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err, "no answer through the proxy")
	require.NoError(t, c.SetReadDeadline(time.Time{}))
	if !keep {
		_ = c.Close()
	}
	return strings.TrimSuffix(line, "\n")
}

func who(t testing.TB, port int) string { return whoFrom(t, "", port, false) }

// lbRoute forwards port to addrs with algorithm algo.
func lbRoute(name string, port int, algo string, addrs ...string) Route {
	r := NewRoute(name).Ports(port).ForwardTo(addrs...).Route()
	r.Action.LoadBalancing = &LoadBalancing{Algorithm: Algorithm(algo)}
	return r
}

// threeBackends starts backends "a", "b" and "c" on one port.
func threeBackends(t testing.TB) (names []string, addrs []string, bs []*backend) {
	for i, ln := range samePortListeners(t, 3) {
		n := string(rune('a' + i))
		b := serveBackend(t, ln, nameThenEcho(n))
		names, addrs, bs = append(names, n), append(addrs, b.addr()), append(bs, b)
	}
	return names, addrs, bs
}

func statusOf(t testing.TB, p *Proxy, addr string) TargetStatus {
	t.Helper()
	for _, s := range p.TargetHealth() {
		if s.Addr == addr {
			return s
		}
	}
	return TargetStatus{Addr: addr, Up: true, HealthCheckUp: true}
}

func TestRoundRobinSpreadsEvenly(t *testing.T) {
	_, addrs, _ := threeBackends(t)
	lp := newListenerPool(t)
	port := lp.port(t)
	p := startTestProxy(t, lp, Options{Routes: []Route{lbRoute("rr", port, "round-robin", addrs...)}})
	got := map[string]int{}
	for range 30 {
		got[who(t, port)]++
	}
	require.Equal(t, map[string]int{"a": 10, "b": 10, "c": 10}, got)
	// The fixed targets of the running routes are listed, idle and up.
	hs := p.TargetHealth()
	require.Len(t, hs, 3)
	for _, s := range hs {
		require.True(t, s.Up, s.Addr)
		require.Zero(t, s.ConsecutiveFailures)
	}
	requireNoRecords(t, p)
}

func TestLeastConnectionsPrefersIdleBackend(t *testing.T) {
	_, addrs, bs := threeBackends(t)
	a, b := bs[0], bs[1]
	lp := newListenerPool(t)
	pinPort, lcPort := lp.port(t), lp.port(t)
	p := startTestProxy(t, lp, Options{Routes: []Route{
		// Active counts are per target address, across routes: this route
		// loads a with long connections.
		NewRoute("pin").Ports(pinPort).ForwardTo(a.addr()).Route(),
		lbRoute("lc", lcPort, "least-connections", addrs[:2]...),
	}})
	for range 3 {
		require.Equal(t, "a", whoFrom(t, "", pinPort, true))
	}
	for range 3 {
		require.Equal(t, "b", whoFrom(t, "", lcPort, true), "the idle backend must be preferred")
	}
	// 3 and 3: ties now alternate.
	got := map[string]int{}
	for range 2 {
		got[whoFrom(t, "", lcPort, true)]++
	}
	require.Equal(t, map[string]int{"a": 1, "b": 1}, got)
	require.EqualValues(t, 4, statusOf(t, p, a.addr()).ActiveConnections)
	require.EqualValues(t, 4, statusOf(t, p, b.addr()).ActiveConnections)

	// Short connections end their count: sequential ones alternate.
	got = map[string]int{}
	for range 4 {
		got[who(t, lcPort)]++
		require.Eventually(t, func() bool {
			return statusOf(t, p, a.addr()).ActiveConnections+statusOf(t, p, b.addr()).ActiveConnections == 8
		}, 2*time.Second, time.Millisecond)
	}
	require.Equal(t, map[string]int{"a": 2, "b": 2}, got)
}

func TestIPHashIsStablePerClient(t *testing.T) {
	names, addrs, bs := threeBackends(t)
	lp := newListenerPool(t)
	port := lp.port(t)
	p := newTestProxy(t, lp, Options{Routes: []Route{lbRoute("hash", port, "ip-hash", addrs...)}})
	p.health.BackoffBase = time.Minute // a closed backend stays out for the test
	require.NoError(t, p.Start(context.Background()))

	owner := map[string]string{} // client IP -> backend name
	spread := map[string]int{}
	for i := 2; i < 26; i++ {
		ip := fmt.Sprintf("127.0.0.%d", i)
		first := whoFrom(t, ip, port, false)
		for range 3 {
			require.Equal(t, first, whoFrom(t, ip, port, false), "client %s moved", ip)
		}
		owner[ip] = first
		spread[first]++
	}
	require.Len(t, spread, 3, "24 client IPs must reach all 3 backends: %v", spread)

	// Take a down: its clients move, each to one deterministic fallback;
	// everyone else stays where they were.
	bs[0].close()
	for ip, was := range owner {
		now := whoFrom(t, ip, port, false)
		if was != names[0] {
			require.Equal(t, was, now, "client %s of a live backend moved", ip)
			continue
		}
		require.NotEqual(t, names[0], now)
		require.Equal(t, now, whoFrom(t, ip, port, false), "fallback of %s is not stable", ip)
	}
	requireNoRecords(t, p)
}

func TestRandomPowerOfTwoCoversAll(t *testing.T) {
	_, addrs, _ := threeBackends(t)
	lp := newListenerPool(t)
	port := lp.port(t)
	startTestProxy(t, lp, Options{Routes: []Route{lbRoute("p2c", port, "random", addrs...)}})
	// Held connections: the two-choice rule keeps the load close to even.
	got := map[string]int{}
	for range 30 {
		got[whoFrom(t, "", port, true)]++
	}
	require.Len(t, got, 3, "%v", got)
	for n, c := range got {
		require.GreaterOrEqual(t, c, 6, "backend %s got %d of 30: %v", n, c, got)
	}
}

func TestFailoverRetriesAnotherBackend(t *testing.T) {
	names, addrs, bs := threeBackends(t)
	lp := newListenerPool(t)
	port := lp.port(t)
	p := newTestProxy(t, lp, Options{Routes: []Route{lbRoute("fo", port, "", addrs...)}})
	p.health.BackoffBase, p.health.BackoffMax = 200*time.Millisecond, 400*time.Millisecond
	require.NoError(t, p.Start(context.Background()))

	for range 6 {
		who(t, port)
	}
	bs[1].close() // b's listener goes away mid-test
	got := map[string]int{}
	for range 30 {
		got[who(t, port)]++ // no client may see a failure: the dial is retried
	}
	require.Zero(t, got[names[1]])
	require.Equal(t, 30, got["a"]+got["c"])
	st := statusOf(t, p, addrs[1])
	require.GreaterOrEqual(t, st.ConsecutiveFailures, 1)

	// b comes back on the same address: it is tried again after its
	// backoff and then takes its share again.
	namedBackend(t, addrs[1], "b-again")
	require.Eventually(t, func() bool { return who(t, port) == "b-again" }, 5*time.Second, 20*time.Millisecond)
	st = statusOf(t, p, addrs[1])
	require.True(t, st.Up)
	require.Zero(t, st.ConsecutiveFailures)
	require.True(t, st.DownUntil.IsZero())
	got = map[string]int{}
	for range 9 {
		got[who(t, port)]++
	}
	require.Equal(t, map[string]int{"a": 3, "b-again": 3, "c": 3}, got)
	requireNoRecords(t, p)
}

func TestAllTargetsDownClosesClientsAtOnce(t *testing.T) {
	lp := newListenerPool(t)
	port := lp.port(t)
	lns := samePortListeners(t, 2)
	dead1, dead2 := lns[0].Addr().String(), lns[1].Addr().String()
	_, _ = lns[0].Close(), lns[1].Close()
	p := startTestProxy(t, lp, Options{Routes: []Route{lbRoute("dead", port, "least-connections", dead1, dead2)}})
	for range 5 {
		el, got := awaitClose(t, dial(t, port), 2*time.Second)
		require.Empty(t, got)
		require.Less(t, el, time.Second)
	}
	for _, a := range []string{dead1, dead2} {
		st := statusOf(t, p, a)
		require.False(t, st.Up, a)
		require.Equal(t, 1, st.ConsecutiveFailures, "connects refused while backing off must not escalate")
		require.False(t, st.DownUntil.IsZero())
	}
	requireNoRecords(t, p)
	require.Zero(t, p.Metrics().Active)
}

func TestLoadBalancingValidation(t *testing.T) {
	bad := func(mut func(r *Route)) string {
		r := lbRoute("v", 80, "", "10.0.0.1:1")
		mut(&r)
		_, err := New(Options{Routes: []Route{r}})
		require.Error(t, err)
		return err.Error()
	}
	require.Contains(t, bad(func(r *Route) { r.Action.LoadBalancing.Algorithm = "fastest" }),
		`route "v": action.loadBalancing.algorithm: unknown algorithm "fastest"`)
	msg := bad(func(r *Route) {
		r.Action.LoadBalancing.HealthCheck = &HealthCheck{Interval: -1, Timeout: -5, UnhealthyThreshold: -1, HealthyThreshold: -2, Path: "health"}
	})
	for _, f := range []string{"interval", "timeout", "unhealthyThreshold", "healthyThreshold", "path"} {
		require.Contains(t, msg, `route "v": action.loadBalancing.healthCheck.`+f)
	}
	h := SocketHandlerRoute("sh", Ports(80), nil, EchoHandler())
	h.Action.LoadBalancing = &LoadBalancing{HealthCheck: &HealthCheck{}}
	_, err := New(Options{Routes: []Route{h}})
	require.ErrorContains(t, err, `route "sh": action.loadBalancing.healthCheck: needs a forward action`)

	// Valid blocks pass, with the defaults applied.
	r := lbRoute("ok", 80, "ip-hash", "10.0.0.1:1")
	r.Action.LoadBalancing.HealthCheck = &HealthCheck{Path: "/healthz"}
	routes, err := compileRoutes([]Route{r}, Defaults{})
	require.NoError(t, err)
	require.Equal(t, balance.CheckConfig{Path: "/healthz", Interval: 10 * time.Second, Timeout: 2 * time.Second, UnhealthyAfter: 3, HealthyAfter: 2}, *routes[0].state.lb.check)
	require.Equal(t, balance.IPHash{}, routes[0].state.lb.sel)
}

// A target that never answers a connect gets its share of ConnectTimeout,
// not all of it: the next host is still tried in time.
func TestDialBudgetIsSharedAcrossHosts(t *testing.T) {
	lns := samePortListeners(t, 2)
	hangAddr := lns[0].Addr().String()
	_ = lns[0].Close()
	serveBackend(t, lns[1], nameThenEcho("good"))
	var hung atomic.Int32
	dialer := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == hangAddr { // a black hole: no answer until the budget ends
			hung.Add(1)
			<-ctx.Done()
			return nil, ctx.Err()
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	lp := newListenerPool(t)
	port := lp.port(t)
	p := startTestProxy(t, lp, Options{
		Routes:         []Route{lbRoute("bh", port, "", hangAddr, lns[1].Addr().String())},
		Dial:           dialer,
		ConnectTimeout: time.Second,
	})
	start := time.Now()
	require.Equal(t, "good", who(t, port)) // the first pick is the black hole
	el := time.Since(start)
	require.EqualValues(t, 1, hung.Load())
	require.Greater(t, el, 450*time.Millisecond, "the black hole got less than its share")
	require.Less(t, el, 950*time.Millisecond, "the black hole got more than its share")
	require.False(t, statusOf(t, p, hangAddr).Up)
	require.Equal(t, "good", who(t, port)) // now skipped without a wait
	require.EqualValues(t, 1, hung.Load())
}
