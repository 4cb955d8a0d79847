//go:build linux

package smartproxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/stretchr/testify/require"
)

// startEngineProxy starts a proxy whose event loops open its ports themselves (the
// event-loop engine does not serve ports from Options.Listen). A free loopback port is
// found by binding and closing; the rare race with another process taking it in between is
// retried.
func startEngineProxy(t *testing.T, opts Options, routes func(port int) []Route) (*Proxy, int) {
	t.Helper()
	return startEngineChoosing(t, opts, routes, true)
}

// startEngineChoosing is startEngineProxy for a port that must (engine) or must not get
// event loops.
func startEngineChoosing(t *testing.T, opts Options, routes func(port int) []Route, engine bool) (*Proxy, int) {
	t.Helper()
	opts.Engine = EngineEventLoop
	opts.ListenAddress = "127.0.0.1"
	for attempt := 0; ; attempt++ {
		port := closedPort(t)
		o := opts
		o.Routes = routes(port)
		p := newTestProxy(t, nil, o)
		p.opts.Engine = EngineEventLoop // also under SMARTPROXY_TEST_ENGINE=goroutines
		err := p.Start(context.Background())
		if err == nil {
			require.Equal(t, engine, servedByEngine(p, port), "port %d: served by event loops", port)
			return p, port
		}
		if !errors.Is(err, syscall.EADDRINUSE) || attempt == 5 {
			t.Fatal(err)
		}
	}
}

// servedByEngine reports whether event loops serve port (not the goroutine path's listener).
func servedByEngine(p *Proxy, port int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.listeners[port]
	return l != nil && l.ev != nil
}

// The engine forwards a plain TCP port: half-close passed on both ways, exact byte counts
// in the metrics, no record left.
func TestEngineForwardHalfClose(t *testing.T) {
	t.Parallel()
	req, resp := pattern(1<<20+13, 1), pattern(2<<20+7, 2)
	be := startBackend(t, "127.0.0.1:0", func(c net.Conn) {
		got, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(got, req) {
			return
		}
		_, _ = c.Write(resp)
	})
	p, port := startEngineProxy(t, Options{}, func(port int) []Route { return []Route{plainRoute("hc", port, be.addr())} })
	got := sendThenHalfClose(t, port, req)
	require.True(t, bytes.Equal(resp, got), "got %d bytes, want %d", len(got), len(resp))
	requireNoRecords(t, p)
	m := p.Metrics()
	require.EqualValues(t, len(req), m.BytesIn)
	require.EqualValues(t, len(resp), m.BytesOut)
	require.EqualValues(t, 1, m.Total)
}

// A refused host is marked failed and the next host of the target takes the connection.
func TestEngineNextHostAfterRefusal(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "127.0.0.1:0", echo)
	_, bePort, _ := net.SplitHostPort(be.addr())
	// The hosts of a target share its port: 127.0.0.2 has nothing listening on the
	// backend's port (the backend is bound to 127.0.0.1 only), so every connect there is
	// refused and the balancer's next host must take over.
	p, port := startEngineProxy(t, Options{}, func(port int) []Route {
		return []Route{NewRoute("two").Ports(port).ForwardTo("127.0.0.2:"+bePort, "127.0.0.1:"+bePort).Route()}
	})
	for i := range 4 {
		c := dial(t, port)
		msg := "m" + strconv.Itoa(i)
		require.Equal(t, msg, roundTrip(t, c, msg))
		require.NoError(t, c.Close())
	}
	requireNoRecords(t, p)
}

// Connection limits are enforced on the loop: over maxConnectionsPerIP the connection is
// closed at once and counted as rejected.
func TestEngineMaxConnectionsPerIP(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "127.0.0.1:0", echo)
	p, port := startEngineProxy(t, Options{MaxConnectionsPerIP: 1}, func(port int) []Route {
		return []Route{plainRoute("lim", port, be.addr())}
	})
	first := dial(t, port)
	require.Equal(t, "a", roundTrip(t, first, "a"))
	second := dial(t, port)
	_, got := awaitClose(t, second, 2*time.Second)
	require.Empty(t, got)
	require.Equal(t, "b", roundTrip(t, first, "b"))
	require.NoError(t, first.Close())
	requireNoRecords(t, p)
	require.EqualValues(t, 1, p.Metrics().Rejected[connection.ReasonIPLimit])
}

// The connection manager's inactivity timeout closes an idle engine connection (its
// closer posts the close to the loop).
func TestEngineInactivityTimeout(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "127.0.0.1:0", echo)
	p, port := startEngineProxy(t, Options{InactivityTimeout: 200 * time.Millisecond}, func(port int) []Route {
		return []Route{plainRoute("idle", port, be.addr())}
	})
	c := dial(t, port)
	require.Equal(t, "x", roundTrip(t, c, "x"))
	el, _ := awaitClose(t, c, 5*time.Second)
	require.Greater(t, el, 100*time.Millisecond)
	requireNoRecords(t, p)
	// The sweeper counts the reason after its kill returns, and the loop may close the
	// connection before that.
	require.Eventually(t, func() bool { return p.Metrics().Closed[connection.ReasonInactivity] == 1 },
		2*time.Second, 5*time.Millisecond, "closed: %v", p.Metrics().Closed)
}

// After UpdateRoutes puts a route the loop cannot serve (a socket handler) on a port the
// loops serve, its connections are handed to the goroutine path on accept and work as before,
// and the connection that was open on the old route carries on.
func TestEngineHandsOffAfterUpdateRoutes(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "127.0.0.1:0", echo)
	p, port := startEngineProxy(t, Options{}, func(port int) []Route { return []Route{plainRoute("fwd", port, be.addr())} })
	old := dial(t, port)
	require.Equal(t, "x", roundTrip(t, old, "x"))
	require.NoError(t, p.UpdateRoutes([]Route{NewRoute("h").Ports(port).HandleWith(func(_ context.Context, c net.Conn, _ *RouteContext) error {
		_, err := io.WriteString(c, "handled")
		return err
	}).Route()}))
	require.True(t, servedByEngine(p, port), "the port's loops should stay")
	c := dial(t, port)
	_, got := awaitClose(t, c, 2*time.Second)
	require.Equal(t, "handled", string(got))
	require.Equal(t, "y", roundTrip(t, old, "y"))
	require.NoError(t, old.Close())
	requireNoRecords(t, p)
}

// Stop waits for open engine connections until its context ends, then closes them.
func TestEngineStop(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "127.0.0.1:0", echo)
	p, port := startEngineProxy(t, Options{}, func(port int) []Route { return []Route{plainRoute("s", port, be.addr())} })
	c := dial(t, port)
	require.Equal(t, "x", roundTrip(t, c, "x"))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	require.ErrorIs(t, p.Stop(ctx), context.DeadlineExceeded)
	require.GreaterOrEqual(t, time.Since(start), 250*time.Millisecond, "Stop did not wait for the open connection")
	_, _ = awaitClose(t, c, 2*time.Second)
	requireNoRecords(t, p)
	_, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	require.Error(t, err, "still accepting after Stop")
}

// SNI passthrough on the loop: the ClientHello is read and parsed there, routes by SNI,
// and reaches the chosen backend first; a normal hello, one cut into tiny records sent in
// tiny segments, and one over 16 KiB (two records), as TestSNIPassthroughRealTLS.
func TestEngineSNIPassthrough(t *testing.T) {
	t.Parallel()
	p, port, alpha, beta := startEngineSNI(t)
	tlsThrough(t, dial(t, port), &tls.Config{ServerName: "www.beta.test", InsecureSkipVerify: true}, "beta")
	tlsThrough(t, dial(t, port), &tls.Config{ServerName: "alpha.test", InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}, "alpha")
	c := &fragmentingConn{Conn: dial(t, port), record: 9, segment: 13, pause: time.Millisecond}
	tlsThrough(t, c, &tls.Config{ServerName: "alpha.test", InsecureSkipVerify: true}, "alpha")
	require.Greater(t, c.records, 100, "the hello should have gone out as many records")
	rc := &recordingConn{Conn: dial(t, port)}
	tlsThrough(t, rc, &tls.Config{ServerName: "beta.test", InsecureSkipVerify: true, NextProtos: hugeALPN()}, "beta")
	requireNoRecords(t, p)
	require.EqualValues(t, 2, alpha.accepts.Load())
	require.EqualValues(t, 2, beta.accepts.Load())
}

// A ClientHello for a name no route serves gets the unrecognized_name alert and is closed;
// garbage on an SNI port is closed without reaching a backend.
func TestEngineSNIRefusals(t *testing.T) {
	t.Parallel()
	p, port, alpha, beta := startEngineSNI(t)
	c := dial(t, port)
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	err := tls.Client(c, &tls.Config{ServerName: "nobody.test", InsecureSkipVerify: true}).Handshake()
	require.ErrorContains(t, err, "unrecognized name")
	g := dial(t, port)
	_, err = g.Write([]byte("\x16\x03\x01\x00\x05\x02garbage"))
	require.NoError(t, err)
	_, got := awaitClose(t, g, 3*time.Second)
	require.Empty(t, got)
	requireNoRecords(t, p)
	require.Zero(t, alpha.accepts.Load()+beta.accepts.Load())
}

// startEngineSNI starts an engine proxy with the two SNI passthrough routes of sniRoutes.
func startEngineSNI(t *testing.T) (p *Proxy, port int, alpha, beta *backend) {
	t.Helper()
	alpha = startBackend(t, "127.0.0.1:0", tlsGreeter("alpha"))
	beta = startBackend(t, "127.0.0.1:0", tlsGreeter("beta"))
	p, port = startEngineProxy(t, Options{InitialDataTimeout: 5 * time.Second}, func(port int) []Route {
		return sniRoutes(port, alpha, beta)
	})
	return p, port, alpha, beta
}

// With the engine chosen, only ports whose every route the loop can serve get loops; a port
// with a socket handler keeps the goroutine path's listener.
func TestEngineChoosesPorts(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "127.0.0.1:0", echo)
	other := closedPort(t)
	p, port := startEngineProxy(t, Options{}, func(port int) []Route {
		return []Route{
			plainRoute("fwd", port, be.addr()),
			NewRoute("h").Ports(other).HandleWith(func(context.Context, net.Conn, *RouteContext) error { return nil }).Route(),
		}
	})
	require.True(t, servedByEngine(p, port))
	require.False(t, servedByEngine(p, other), "a socket-handler port must keep the goroutine path")
}
