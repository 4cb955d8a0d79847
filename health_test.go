package smartproxy

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Active health-check tests: real checkers against loopback backends with
// 50 ms intervals.

// httpBackend is an HTTP server on loopback: GET /health answers with the
// current status, anything else with the backend's name.
type httpBackend struct {
	name   string
	addr   string
	status atomic.Int32
	probes atomic.Int64 // /health requests served
	fails  atomic.Int64 // of which answered with an error status
}

func startHTTPBackend(t testing.TB, ln net.Listener, name string) *httpBackend {
	t.Helper()
	hb := &httpBackend{name: name, addr: ln.Addr().String()}
	hb.status.Store(http.StatusOK)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			hb.probes.Add(1)
			s := int(hb.status.Load())
			if s >= 400 {
				hb.fails.Add(1)
			}
			w.WriteHeader(s)
			return
		}
		_, _ = io.WriteString(w, name)
	})}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); wg.Wait() })
	return hb
}

// getVia sends GET / through the proxy port on a fresh connection and
// returns the body (the backend's name).
func getVia(t testing.TB, port int) string {
	t.Helper()
	c := dial(t, port)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(3*time.Second)))
	_, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(body)
}

func checkedRoute(name string, port int, hc HealthCheck, addrs ...string) Route {
	r := NewRoute(name).Ports(port).ForwardTo(addrs...).Route()
	r.Action.LoadBalancing = &LoadBalancing{HealthCheck: &hc}
	return r
}

// requireCheckerGoroutines waits until n health-checker goroutines run.
// (A goroutine running on another thread shows no stack, and one that just
// closed its done channel may still be unwinding: hence the wait.)
func requireCheckerGoroutines(t testing.TB, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return checkerGoroutines() == n }, 2*time.Second, time.Millisecond,
		"want %d checker goroutines", n)
}

// checkerGoroutines counts health-checker goroutines by their stacks.
func checkerGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "balance.(*checker).run(")
}

func TestHTTPHealthCheckFlipsTargetDownAndUp(t *testing.T) {
	lns := samePortListeners(t, 2)
	a, b := startHTTPBackend(t, lns[0], "a"), startHTTPBackend(t, lns[1], "b")
	lp := newListenerPool(t)
	port := lp.port(t)
	hc := HealthCheck{Path: "/health", Interval: 50, Timeout: 500, UnhealthyThreshold: 3, HealthyThreshold: 2}
	p := startTestProxy(t, lp, Options{Routes: []Route{checkedRoute("web", port, hc, a.addr, b.addr)}})

	got := map[string]int{}
	for range 4 {
		got[getVia(t, port)]++
	}
	require.Equal(t, map[string]int{"a": 2, "b": 2}, got)

	// a's health path fails; its port still accepts, so only the active
	// check can take it out.
	failsBefore := a.fails.Load()
	a.status.Store(http.StatusInternalServerError)
	require.Eventually(t, func() bool { return !statusOf(t, p, a.addr).HealthCheckUp }, 5*time.Second, 5*time.Millisecond)
	require.GreaterOrEqual(t, a.fails.Load()-failsBefore, int64(3), "down before unhealthyThreshold failures")
	st := statusOf(t, p, a.addr)
	require.True(t, st.HealthChecked)
	require.False(t, st.Up)
	require.Zero(t, st.ConsecutiveFailures, "connects to a still succeed")
	for range 6 {
		require.Equal(t, "b", getVia(t, port))
	}

	// a recovers: up again only after healthyThreshold passing probes.
	probesBefore := a.probes.Load()
	a.status.Store(http.StatusNoContent)
	require.Eventually(t, func() bool { return statusOf(t, p, a.addr).Up }, 5*time.Second, 5*time.Millisecond)
	require.GreaterOrEqual(t, a.probes.Load()-probesBefore, int64(2), "up before healthyThreshold successes")
	got = map[string]int{}
	for range 4 {
		got[getVia(t, port)]++
	}
	require.Equal(t, map[string]int{"a": 2, "b": 2}, got)
	requireNoRecords(t, p)
}

func TestTCPHealthCheckNoticesStoppedBackend(t *testing.T) {
	lns := samePortListeners(t, 2)
	a, b := serveBackend(t, lns[0], nameThenEcho("a")), serveBackend(t, lns[1], nameThenEcho("b"))
	addrA := a.addr()
	lp := newListenerPool(t)
	port := lp.port(t)
	hc := HealthCheck{Interval: 50, Timeout: 500, UnhealthyThreshold: 2, HealthyThreshold: 1}
	p := startTestProxy(t, lp, Options{Routes: []Route{checkedRoute("tcp", port, hc, addrA, b.addr())}})
	require.True(t, statusOf(t, p, addrA).HealthChecked)

	a.close() // stops accepting; no client traffic, so no passive failure
	require.Eventually(t, func() bool { return !statusOf(t, p, addrA).HealthCheckUp }, 5*time.Second, 5*time.Millisecond)
	require.Zero(t, statusOf(t, p, addrA).ConsecutiveFailures)
	for range 4 {
		require.Equal(t, "b", who(t, port))
	}

	namedBackend(t, addrA, "a-again")
	require.Eventually(t, func() bool { return statusOf(t, p, addrA).Up }, 5*time.Second, 5*time.Millisecond)
	got := map[string]int{}
	for range 4 {
		got[who(t, port)]++
	}
	require.Equal(t, map[string]int{"a-again": 2, "b": 2}, got)
}

func TestHealthCheckersFollowRoutesAndStop(t *testing.T) {
	lns := samePortListeners(t, 2)
	a, b := startHTTPBackend(t, lns[0], "a"), startHTTPBackend(t, lns[1], "b")
	lp := newListenerPool(t)
	p1, p2, p3, p4 := lp.port(t), lp.port(t), lp.port(t), lp.port(t)
	hc := HealthCheck{Path: "/health", Interval: 50, Timeout: 500}
	other := HealthCheck{Interval: 50, Timeout: 500} // TCP check: a distinct checker
	plain := NewRoute("plain").Ports(p3).ForwardTo(a.addr).Route()
	p := startTestProxy(t, lp, Options{Routes: []Route{
		checkedRoute("one", p1, hc, a.addr, b.addr),
		checkedRoute("two", p2, hc, a.addr), // same address and config: shared
		plain,
	}})
	require.Equal(t, 2, p.health.Checkers())
	requireCheckerGoroutines(t, 2)

	require.NoError(t, p.UpdateRoutes([]Route{
		checkedRoute("one", p1, hc, a.addr, b.addr),
		checkedRoute("two", p2, other, a.addr),
		plain,
	}))
	require.Equal(t, 3, p.health.Checkers())
	requireCheckerGoroutines(t, 3)

	// Removing the checked routes ends their checkers before UpdateRoutes
	// returns, and no probe arrives afterwards.
	require.NoError(t, p.UpdateRoutes([]Route{plain}))
	require.Zero(t, p.health.Checkers())
	requireCheckerGoroutines(t, 0)
	probes := a.probes.Load() + b.probes.Load()
	time.Sleep(150 * time.Millisecond)
	require.Equal(t, probes, a.probes.Load()+b.probes.Load())
	require.Len(t, p.TargetHealth(), 1, "only the plain route's target stays listed")

	require.NoError(t, p.UpdateRoutes([]Route{checkedRoute("again", p4, hc, a.addr, b.addr), plain}))
	requireCheckerGoroutines(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, p.Stop(ctx))
	requireCheckerGoroutines(t, 0)
}

// A checker stuck on a target that accepts but never answers must not
// hold up Stop: the probe is cancelled.
func TestStopCancelsHangingProbe(t *testing.T) {
	hang := startBackend(t, "127.0.0.1:0", func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	lp := newListenerPool(t)
	hc := HealthCheck{Path: "/health", Interval: 50, Timeout: 10_000}
	p := startTestProxy(t, lp, Options{Routes: []Route{checkedRoute("hang", lp.port(t), hc, hang.addr())}})
	require.Eventually(t, func() bool { return hang.accepts.Load() > 0 }, 2*time.Second, time.Millisecond)
	start := time.Now()
	require.NoError(t, p.Stop(context.Background()))
	require.Less(t, time.Since(start), time.Second)
	requireCheckerGoroutines(t, 0)
}

// Health checks of a re-encrypting route speak TLS to the target.
func TestHealthCheckOverTLS(t *testing.T) {
	var probes atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil && r.URL.Path == "/health" {
			probes.Add(1)
		}
	})}
	var wg sync.WaitGroup
	wg.Add(1)
	tln := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{testCert()}})
	go func() { defer wg.Done(); _ = srv.Serve(tln) }()
	t.Cleanup(func() { _ = srv.Close(); wg.Wait() })

	lp := newListenerPool(t)
	r := checkedRoute("re", lp.port(t), HealthCheck{Path: "/health", Interval: 50, Timeout: 1000}, ln.Addr().String())
	r.Action.TLS = &RouteTLS{Mode: TLSTerminateAndReencrypt, Backend: &BackendTLS{InsecureSkipVerify: true}}
	r.Action.TLS.Certificate = testCertSpec(t)
	p := startTestProxy(t, lp, Options{Routes: []Route{r}})
	require.Eventually(t, func() bool { return probes.Load() >= 2 }, 3*time.Second, 5*time.Millisecond)
	require.True(t, statusOf(t, p, ln.Addr().String()).HealthCheckUp)
}

// testCertSpec is testCert as an inline PEM route certificate.
func testCertSpec(t testing.TB) *CertificateSpec {
	c := testCert()
	key, err := x509.MarshalECPrivateKey(c.PrivateKey.(*ecdsa.PrivateKey))
	require.NoError(t, err)
	return &CertificateSpec{
		Cert: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})),
		Key:  string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: key})),
	}
}

func TestBackoffDoublesAndCaps(t *testing.T) {
	p := newTestProxy(t, nil, Options{Routes: []Route{lbRoute("x", 80, "", "10.0.0.1:1")}})
	p.health.BackoffBase, p.health.BackoffMax = time.Millisecond, 4*time.Millisecond
	var last time.Duration
	for i := range 6 {
		require.Eventually(t, func() bool { return statusOf(t, p, "10.0.0.1:1").DownUntil.IsZero() }, time.Second, time.Millisecond)
		before := time.Now()
		p.health.Failed("10.0.0.1:1", io.EOF)
		st := statusOf(t, p, "10.0.0.1:1")
		require.Equal(t, i+1, st.ConsecutiveFailures)
		if !st.DownUntil.IsZero() {
			last = st.DownUntil.Sub(before)
		}
	}
	require.LessOrEqual(t, last, 4*time.Millisecond+time.Millisecond)
}
