package smartproxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/gosmartproxy/smartproxy/internal/tlstest"
	"github.com/stretchr/testify/require"
)

// plainRoute forwards every connection on port to addr.
func plainRoute(name string, port int, addr string) Route {
	return NewRoute(name).Ports(port).ForwardTo(addr).Route()
}

// TestForwardHalfClose: the client sends a request and half-closes; the
// backend reads to EOF and only then answers. The whole answer must reach
// the client: the proxy passes the half-close on instead of tearing the
// connection down at the first EOF.
func TestForwardHalfClose(t *testing.T) {
	t.Parallel()
	req := pattern(1<<20+13, 1)
	resp := pattern(2<<20+7, 2)
	be := startBackend(t, "127.0.0.1:0", func(c net.Conn) {
		got, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(got, req) {
			return // the client sees a short response
		}
		_, _ = c.Write(resp)
	})
	lp := newListenerPool(t)
	port := lp.port(t)
	p := startTestProxy(t, lp, Options{Routes: []Route{plainRoute("hc", port, be.addr())}})

	got := sendThenHalfClose(t, port, req)
	require.Equal(t, len(resp), len(got))
	require.True(t, bytes.Equal(resp, got))
	requireNoRecords(t, p)
	m := p.Metrics()
	require.EqualValues(t, len(req), m.BytesIn)
	require.EqualValues(t, len(resp), m.BytesOut)
}

// sendThenHalfClose sends req to port, half-closes, and returns everything the
// proxy sends back until its EOF.
func sendThenHalfClose(t *testing.T, port int, req []byte) []byte {
	t.Helper()
	c := dial(t, port)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err := c.Write(req)
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	return got
}

// TestServerSpeaksFirst: on a port whose routes need no SNI the proxy
// dials the backend at once, so a protocol where the server talks first
// (SMTP, FTP, SSH) works without the client sending anything.
func TestServerSpeaksFirst(t *testing.T) {
	t.Parallel()
	const banner = "220 mail.test ESMTP ready\r\n"
	be := startBackend(t, "127.0.0.1:0", func(c net.Conn) {
		if _, err := io.WriteString(c, banner); err != nil {
			return
		}
		echo(c)
	})
	lp := newListenerPool(t)
	port := lp.port(t)
	p := startTestProxy(t, lp, Options{
		Routes:             []Route{plainRoute("smtp", port, be.addr())},
		InitialDataTimeout: 30 * time.Second, // must not be waited for
	})
	c := dial(t, port)
	start := time.Now()
	got, err := readN(c, len(banner), 2*time.Second)
	require.NoError(t, err)
	require.Equal(t, banner, string(got))
	require.Less(t, time.Since(start), time.Second)
	require.Equal(t, "EHLO client\r\n", roundTrip(t, c, "EHLO client\r\n"))
	require.NoError(t, c.Close())
	requireNoRecords(t, p)
}

// TestRefusedBackend: 1,000 quick connections to a route whose backend
// refuses connections each end promptly for the client and leave no
// record behind.
func TestRefusedBackend(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	dead := "127.0.0.1:" + strconv.Itoa(closedPort(t))
	p := startTestProxy(t, lp, Options{Routes: []Route{plainRoute("dead", port, dead)}})

	const total, workers = 1000, 25
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, total)
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= total {
				c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 2*time.Second)
				if err != nil {
					errs <- err
					continue
				}
				start := time.Now()
				_ = c.SetReadDeadline(start.Add(2 * time.Second))
				n, err := c.Read(make([]byte, 1))
				if n != 0 || !isClosedErr(err) {
					errs <- fmt.Errorf("read = %d, %v after %v; want EOF or reset", n, err, time.Since(start))
				}
				_ = c.Close()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	requireNoRecords(t, p)
	require.EqualValues(t, total, p.Metrics().Total)
}

// TestConnectDisconnectStorm: hundreds of clients connecting at once and
// leaving in every way (at once, with a reset, after a byte, after a round
// trip, during the ClientHello) leave no record, and the proxy still works.
func TestConnectDisconnectStorm(t *testing.T) {
	// Not parallel: thousands of sockets at once; it flakes when other tests load the machine too.
	be := startBackend(t, "127.0.0.1:0", echo)
	lp := newListenerPool(t)
	plain, sni := lp.port(t), lp.port(t)
	p := startTestProxy(t, lp, Options{
		Routes: []Route{
			plainRoute("plain", plain, be.addr()),
			NewRoute("sni").Ports(sni).Domains("storm.test").TLSPassthrough().ForwardTo(be.addr()).Route(),
		},
		// Long enough that a loaded -race run still reads every full
		// hello in time: the clients that stall end by closing.
		InitialDataTimeout: 3 * time.Second,
	})
	hello := tlstest.CaptureHello(t, &tls.Config{ServerName: "storm.test", InsecureSkipVerify: true})

	const clients = 500
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		port := plain
		if i%2 == 1 {
			port = sni
		}
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			tc := c.(*net.TCPConn)
			defer tc.Close()
			_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
			switch i % 5 {
			case 0: // close at once
			case 1: // reset at once
				_ = tc.SetLinger(0)
			case 2: // one byte, then go
				_, _ = tc.Write([]byte{0x16})
			case 3: // part of a hello, then reset
				_, _ = tc.Write(hello[:len(hello)/2])
				_ = tc.SetLinger(0)
			case 4: // a real exchange, then go
				msg := append(append([]byte(nil), hello...), "ping"...)
				if _, err := tc.Write(msg); err != nil {
					errs <- err
					return
				}
				if _, err := io.ReadFull(tc, make([]byte, len(msg))); err != nil {
					errs <- fmt.Errorf("client %d: echo: %w", i, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	requireNoRecords(t, p)
	require.EqualValues(t, clients, p.Metrics().Total)
	require.Equal(t, "still here", roundTrip(t, dial(t, plain), "still here"))
}

// TestChainBackendClosesAtOnce: proxy -> proxy -> a backend that closes
// every connection as soon as it accepts it. Both proxies must end up
// with no record, whatever the client does.
func TestChainBackendClosesAtOnce(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "127.0.0.1:0", func(net.Conn) {})
	lp := newListenerPool(t)
	front, back := lp.port(t), lp.port(t)
	p2 := startTestProxy(t, lp, Options{Routes: []Route{plainRoute("back", back, be.addr())}})
	p1 := startTestProxy(t, lp, Options{Routes: []Route{plainRoute("front", front, "127.0.0.1:"+strconv.Itoa(back))}})

	const clients = 150
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(front)), 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			switch i % 3 {
			case 0: // leave at once
				return
			case 1: // write, then read until the chain closes
				_, _ = c.Write(pattern(4096, uint32(i)))
			}
			if _, err := io.Copy(io.Discard, c); err != nil && !isClosedErr(err) {
				errs <- fmt.Errorf("client %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	requireNoRecords(t, p1)
	requireNoRecords(t, p2)
	require.EqualValues(t, clients, p1.Metrics().Total)
}

// TestSecurityRejectsBeforeDial: a client refused by an ipBlockList or
// ipAllowList is closed before the backend is dialed; an admitted client
// (from another loopback address) shows the backend counter works.
func TestSecurityRejectsBeforeDial(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		route    func(port int, addr string) Route
		defaults *RouteSecurity
		tls      bool // route by SNI: the refusal is a TLS alert
	}{
		{name: "block list", route: func(port int, addr string) Route {
			return NewRoute("r").Ports(port).ForwardTo(addr).BlockIPs("127.0.0.1").Route()
		}},
		{name: "allow list", route: func(port int, addr string) Route {
			return NewRoute("r").Ports(port).ForwardTo(addr).AllowIPs("127.0.0.2/32", "10.0.0.0/8").Route()
		}},
		{name: "block wins over allow", route: func(port int, addr string) Route {
			return NewRoute("r").Ports(port).ForwardTo(addr).AllowIPs("127.0.0.0/8").BlockIPs("127.0.0.1").Route()
		}},
		{name: "default block list", route: func(port int, addr string) Route {
			return NewRoute("r").Ports(port).ForwardTo(addr).Route()
		}, defaults: &RouteSecurity{IPBlockList: []string{"127.0.0.1"}}},
		{name: "SNI route block list", tls: true, route: func(port int, addr string) Route {
			return NewRoute("r").Ports(port).Domains("sec.test").TLSPassthrough().ForwardTo(addr).BlockIPs("127.0.0.1").Route()
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			be := startBackend(t, "127.0.0.1:0", tlsGreeter("be"))
			lp := newListenerPool(t)
			port := lp.port(t)
			p := startTestProxy(t, lp, Options{
				Routes:   []Route{tc.route(port, be.addr())},
				Defaults: Defaults{Security: tc.defaults},
			})
			cfg := &tls.Config{ServerName: "sec.test", InsecureSkipVerify: true}

			refused := dialFrom(t, "127.0.0.1", port)
			require.NoError(t, refused.SetDeadline(time.Now().Add(2*time.Second)))
			err := tls.Client(refused, cfg).Handshake()
			require.Error(t, err)
			if tc.tls {
				require.ErrorContains(t, err, "access denied")
			}

			// The admitted client is dialed after the refused one, so if the
			// refused one had reached the backend it would have been
			// accepted first: exactly one accept proves it never did.
			tlsThrough(t, dialFrom(t, "127.0.0.2", port), cfg, "be")
			require.EqualValues(t, 1, be.accepts.Load())
			requireNoRecords(t, p)
			m := p.Metrics()
			require.EqualValues(t, 2, m.Total)
		})
	}
}

// TestRouteMaxConnections: a route's maxConnections refuses the (N+1)th
// concurrent connection without dialing, and admits again once one ends.
func TestRouteMaxConnections(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "127.0.0.1:0", echo)
	lp := newListenerPool(t)
	port, other := lp.port(t), lp.port(t)
	p := startTestProxy(t, lp, Options{Routes: []Route{
		NewRoute("capped").Ports(port).ForwardTo(be.addr()).MaxConnections(2).Route(),
		plainRoute("free", other, be.addr()),
	}})

	c1, c2 := dial(t, port), dial(t, port)
	require.Equal(t, "one", roundTrip(t, c1, "one"))
	require.Equal(t, "two", roundTrip(t, c2, "two"))
	c3 := dial(t, port)
	_, err := c3.Write([]byte("three"))
	require.NoError(t, err)
	_, got := awaitClose(t, c3, 2*time.Second)
	require.Empty(t, got)
	require.EqualValues(t, 1, p.Metrics().Rejected[connection.ReasonRouteLimit])
	// Other routes are not affected by this route's cap.
	require.Equal(t, "other", roundTrip(t, dial(t, other), "other"))

	require.NoError(t, c1.Close())
	require.Eventually(t, func() bool { return p.Metrics().ByRoute["capped"] == 1 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, "four", roundTrip(t, dial(t, port), "four"))
	require.EqualValues(t, 4, be.accepts.Load()) // c1, c2, other, c4: never c3
}

// TestMaxConnectionsPerIP: the per-IP cap refuses a client's (N+1)th
// concurrent connection while other addresses are still admitted.
func TestMaxConnectionsPerIP(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "127.0.0.1:0", echo)
	lp := newListenerPool(t)
	port := lp.port(t)
	p := startTestProxy(t, lp, Options{
		Routes:              []Route{plainRoute("r", port, be.addr())},
		MaxConnectionsPerIP: 2,
	})
	c1, c2 := dialFrom(t, "127.0.0.1", port), dialFrom(t, "127.0.0.1", port)
	require.Equal(t, "a", roundTrip(t, c1, "a"))
	require.Equal(t, "b", roundTrip(t, c2, "b"))
	_, got := awaitClose(t, dialFrom(t, "127.0.0.1", port), 2*time.Second)
	require.Empty(t, got)
	require.Equal(t, "c", roundTrip(t, dialFrom(t, "127.0.0.2", port), "c"))
	require.EqualValues(t, 1, p.Metrics().Rejected[connection.ReasonIPLimit])
	require.EqualValues(t, 3, be.accepts.Load())

	require.NoError(t, c1.Close())
	require.Eventually(t, func() bool { return p.Metrics().ByIP["127.0.0.1"] == 1 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, "d", roundTrip(t, dialFrom(t, "127.0.0.1", port), "d"))
}

// TestInactivityTimeout: an idle forwarded connection is closed after
// InactivityTimeout; one with traffic every quarter of it is not.
func TestInactivityTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	be := startBackend(t, "127.0.0.1:0", echo)
	lp := newListenerPool(t)
	port := lp.port(t)
	p := startTestProxy(t, lp, Options{
		Routes:            []Route{plainRoute("r", port, be.addr())},
		InactivityTimeout: timeout,
	})
	idle, busy := dial(t, port), dial(t, port)
	require.Equal(t, "x", roundTrip(t, idle, "x"))
	require.Equal(t, "y", roundTrip(t, busy, "y"))

	idleDone := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		_ = idle.SetReadDeadline(start.Add(5 * time.Second))
		n, err := idle.Read(make([]byte, 1))
		if n != 0 || !isClosedErr(err) {
			idleDone <- -1
			return
		}
		idleDone <- time.Since(start)
	}()
	for i := range 16 { // 800 ms of traffic, every 50 ms
		msg := strconv.Itoa(i)
		require.Equal(t, msg, roundTrip(t, busy, msg))
		time.Sleep(timeout / 4)
	}
	el := <-idleDone
	require.Greater(t, el, timeout*3/4, "idle connection was not closed by the timeout")
	require.Less(t, el, 3*timeout)
	require.EqualValues(t, 1, p.Metrics().Closed[connection.ReasonInactivity])
	require.Equal(t, "still", roundTrip(t, busy, "still"))
	require.NoError(t, busy.Close())
	requireNoRecords(t, p)
}

// fetch connects to port, reads until the server side closes, and closes:
// a client that waits for EOF and then leaves, so the proxy's half-closed
// connection ends at once instead of at the half-close timeout.
func fetch(t *testing.T, port int) []byte {
	t.Helper()
	c := dial(t, port)
	_, got := awaitClose(t, c, 2*time.Second)
	require.NoError(t, c.Close())
	return got
}

// TestRoundRobin: a target with two hosts alternates between them.
func TestRoundRobin(t *testing.T) {
	t.Parallel()
	named := func(name string) func(net.Conn) {
		return func(c net.Conn) { _, _ = io.WriteString(c, name) }
	}
	// The two hosts share a port: one free on 127.0.0.1 may be held on
	// 127.0.0.2 by a parallel test's socket, so a taken one is tried again.
	var a, b *backend
	for try := 0; b == nil; try++ {
		a = startBackend(t, "127.0.0.1:0", named("A"))
		ln, err := net.Listen("tcp", "127.0.0.2:"+strconv.Itoa(a.port))
		if err != nil && try < 20 {
			continue // a stays open until cleanup: its port is not handed out again
		}
		require.NoError(t, err)
		b = serveBackend(t, ln, named("B"))
	}
	lp := newListenerPool(t)
	port := lp.port(t)
	p := startTestProxy(t, lp, Options{Routes: []Route{
		NewRoute("rr").Ports(port).ForwardTo(a.addr(), b.addr()).Route(),
	}})
	var seq []byte
	for range 6 {
		seq = append(seq, fetch(t, port)...)
	}
	require.Equal(t, "ABABAB", string(seq))
	requireNoRecords(t, p)
}

// TestPreservePort: a target without a port forwards to the port the
// client connected to (here on another loopback address).
func TestPreservePort(t *testing.T) {
	// Not parallel: the backend binds 127.0.0.2 on a port only known to
	// be free on 127.0.0.1, which a parallel test's socket may hold.
	lp := newListenerPool(t)
	port := lp.port(t)
	be := startBackend(t, "127.0.0.2:"+strconv.Itoa(port), func(c net.Conn) {
		_, _ = fmt.Fprintf(c, "backend on %s", c.LocalAddr())
	})
	p := startTestProxy(t, lp, Options{Routes: []Route{
		NewRoute("keep").Ports(port).ForwardTo("127.0.0.2").Route(),
		NewRoute("keep-explicit").Ports(lp.port(t)).Target(Target{Host: StringList{"127.0.0.2"}, Port: PreservePort}).Route(),
	}})
	require.Equal(t, "backend on 127.0.0.2:"+strconv.Itoa(port), string(fetch(t, port)))
	require.EqualValues(t, 1, be.accepts.Load())
	requireNoRecords(t, p)
}

// TestMetricsBytes: BytesIn/BytesOut equal exactly what was sent each way,
// through a forward route (splice) and through a socket handler.
func TestMetricsBytes(t *testing.T) {
	t.Parallel()
	in, out := pattern(3<<20+5, 9), pattern(1<<20+11, 10)
	be := startBackend(t, "127.0.0.1:0", func(c net.Conn) {
		if _, err := io.Copy(io.Discard, c); err == nil {
			_, _ = c.Write(out)
		}
	})
	lp := newListenerPool(t)
	fwd, hnd := lp.port(t), lp.port(t)
	p := startTestProxy(t, lp, Options{Routes: []Route{
		plainRoute("fwd", fwd, be.addr()),
		SocketHandlerRoute("hnd", Ports(hnd), nil, func(ctx context.Context, c net.Conn, rc *RouteContext) error {
			if _, err := readN(c, 1000, 5*time.Second); err != nil {
				return err
			}
			_, err := c.Write(out[:2345])
			return err
		}),
	}})

	c := dial(t, fwd)
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err := c.Write(in)
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	require.Equal(t, len(out), len(got))
	requireNoRecords(t, p)
	m := p.Metrics()
	require.EqualValues(t, len(in), m.BytesIn)
	require.EqualValues(t, len(out), m.BytesOut)

	c = dial(t, hnd)
	_, err = c.Write(in[:1000])
	require.NoError(t, err)
	_, got = awaitClose(t, c, 5*time.Second)
	require.Len(t, got, 2345)
	requireNoRecords(t, p)
	m = p.Metrics()
	require.EqualValues(t, len(in)+1000, m.BytesIn)
	require.EqualValues(t, len(out)+2345, m.BytesOut)
}

// TestHandlerPanic: a socket handler that panics (or fails) closes its
// own connection only; other connections and the proxy carry on.
func TestHandlerPanic(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	boom, fail, ok := lp.port(t), lp.port(t), lp.port(t)
	p := startTestProxy(t, lp, Options{Routes: []Route{
		SocketHandlerRoute("boom", Ports(boom), nil, func(ctx context.Context, c net.Conn, rc *RouteContext) error {
			_, _ = readN(c, 1, time.Second)
			panic("handler bug")
		}),
		SocketHandlerRoute("fail", Ports(fail), nil, func(ctx context.Context, c net.Conn, rc *RouteContext) error {
			_, _ = readN(c, 1, time.Second)
			return errors.New("handler failed")
		}),
		SocketHandlerRoute("echo", Ports(ok), nil, EchoHandler()),
	}})
	live := dial(t, ok)
	require.Equal(t, "before", roundTrip(t, live, "before"))
	for range 3 {
		for _, port := range []int{boom, fail} {
			c := dial(t, port)
			_, err := c.Write([]byte{1})
			require.NoError(t, err)
			_, got := awaitClose(t, c, 2*time.Second)
			require.Empty(t, got)
		}
	}
	require.Equal(t, "after", roundTrip(t, live, "after"))
	fresh := dial(t, ok)
	require.Equal(t, "new", roundTrip(t, fresh, "new"))
	require.NoError(t, live.Close())
	require.NoError(t, fresh.Close())
	requireNoRecords(t, p)
}

// TestHalfCloseTimeout: once the client has half-closed, a backend that
// neither answers nor closes is cut after HalfCloseTimeout, so a
// half-open connection cannot hold a record forever.
func TestHalfCloseTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	release := make(chan struct{})
	be := startBackend(t, "127.0.0.1:0", func(c net.Conn) {
		_, _ = io.Copy(io.Discard, c)
		<-release // silent, and never closes on its own
	})
	t.Cleanup(func() { close(release) }) // runs before the backend's cleanup joins it
	lp := newListenerPool(t)
	port := lp.port(t)
	p := startTestProxy(t, lp, Options{
		Routes:           []Route{plainRoute("r", port, be.addr())},
		HalfCloseTimeout: timeout,
	})
	c := dial(t, port)
	_, err := c.Write([]byte("request"))
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	el, got := awaitClose(t, c, 5*time.Second)
	require.Empty(t, got)
	require.Greater(t, el, timeout*3/4)
	require.Less(t, el, 4*timeout)
	requireNoRecords(t, p)
}
