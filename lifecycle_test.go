package smartproxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/gosmartproxy/smartproxy/internal/tlstest"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// taggedEcho writes tag once on accept, then echoes: a client learns which
// backend it reached and can still check a stream byte for byte.
func taggedEcho(tag string) func(net.Conn) {
	return func(c net.Conn) {
		if _, err := io.WriteString(c, tag); err != nil {
			return
		}
		echo(c)
	}
}

// streamEcho sends data in chunks with pauses while reading the echo back
// concurrently, and reports whether exactly data came back.
func streamEcho(c net.Conn, data []byte, chunk int, pause time.Duration) error {
	errc := make(chan error, 1)
	go func() {
		got, err := readN(c, len(data), 20*time.Second)
		switch {
		case err != nil:
			errc <- fmt.Errorf("reading echo after %d of %d bytes: %w", len(got), len(data), err)
		case !bytes.Equal(got, data):
			errc <- errors.New("echoed bytes differ")
		default:
			errc <- nil
		}
	}()
	werr := writeSlowly(c, data, chunk, pause)
	if rerr := <-errc; rerr != nil {
		return rerr
	}
	return werr
}

func sortedInts(v ...int) []int { slices.Sort(v); return v }

// readTag reads the one-byte backend tag.
func readTag(t *testing.T, c net.Conn) string {
	t.Helper()
	b, err := readN(c, 1, 3*time.Second)
	require.NoError(t, err)
	return string(b)
}

// TestUpdateRoutesUnderTraffic: connections streaming on a route that is
// changed, and on a port that is removed, keep flowing to completion with
// exact bytes; new connections take the new route; the removed port stops
// accepting and the added one starts.
func TestUpdateRoutesUnderTraffic(t *testing.T) {
	t.Parallel()
	a := startBackend(t, "127.0.0.1:0", taggedEcho("A"))
	b := startBackend(t, "127.0.0.1:0", taggedEcho("B"))
	lp := newListenerPool(t)
	kept, removed, added := lp.port(t), lp.port(t), lp.port(t)
	p := startTestProxy(t, lp, Options{Routes: []Route{
		plainRoute("old", kept, a.addr()),
		plainRoute("gone", removed, a.addr()),
	}})
	require.Equal(t, sortedInts(kept, removed), p.Ports())

	const streams = 4
	data := pattern(2<<20, 5)
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := range streams {
		port := kept
		if i%2 == 1 {
			port = removed
		}
		c := dial(t, port)
		require.Equal(t, "A", readTag(t, c))
		wg.Go(func() {
			if err := streamEcho(c, data, 64<<10, 15*time.Millisecond); err != nil {
				errs <- fmt.Errorf("stream %d on port %d: %w", i, port, err)
			}
			_ = c.Close()
		})
	}
	time.Sleep(100 * time.Millisecond) // mid-stream

	require.NoError(t, p.UpdateRoutes([]Route{
		plainRoute("new", kept, b.addr()),
		plainRoute("added", added, b.addr()),
	}))
	require.Equal(t, sortedInts(kept, added), p.Ports())
	m := p.Metrics()
	require.Equal(t, streams/2, m.ByRoute["old"], "streams on the changed route must still be open")
	require.Equal(t, streams/2, m.ByRoute["gone"], "streams on the removed port must still be open")

	c := dial(t, kept)
	require.Equal(t, "B", readTag(t, c), "a new connection must take the new route")
	require.Equal(t, "new", roundTrip(t, c, "new"))
	c = dial(t, added)
	require.Equal(t, "B", readTag(t, c))
	require.Equal(t, "added", roundTrip(t, c, "added"))
	_, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(removed), time.Second)
	require.Error(t, err, "the removed port still accepts")

	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestUpdateRoutesInvalidKeepsOld: an invalid route set, or one needing a
// port that cannot be opened, is refused and changes nothing.
func TestUpdateRoutesInvalidKeepsOld(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "127.0.0.1:0", echo)
	lp := newListenerPool(t)
	port := lp.port(t)
	p := startTestProxy(t, lp, Options{Routes: []Route{plainRoute("r", port, be.addr())}})
	before := p.Routes()

	unopenable := closedPort(t) // not reserved in the pool: Listen fails
	for name, routes := range map[string][]Route{
		"no name":         {NewRoute("").Ports(port).ForwardTo(be.addr()).Route()},
		"duplicate names": {plainRoute("x", port, be.addr()), plainRoute("x", port, be.addr())},
		"bad port":        {NewRoute("x").Ports(70000).ForwardTo(be.addr()).Route()},
		"no target":       {NewRoute("x").Ports(port).Route()},
		"bad address":     {NewRoute("x").Ports(port).ForwardTo("not an address:x").Route()},
		"unopenable port": {plainRoute("r", port, be.addr()), plainRoute("x", unopenable, be.addr())},
	} {
		err := p.UpdateRoutes(routes)
		require.Error(t, err, name)
		require.Equal(t, before, p.Routes(), name)
		require.Equal(t, []int{port}, p.Ports(), name)
		require.Equal(t, name, roundTrip(t, dial(t, port), name), "old route stopped working after %s", name)
	}
}

// TestStopDrains: Stop stops accepting at once but lets an open connection
// finish within the deadline, and returns nil when it does.
func TestStopDrains(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "127.0.0.1:0", echo)
	lp := newListenerPool(t)
	port := lp.port(t)
	p := startTestProxy(t, lp, Options{Routes: []Route{plainRoute("r", port, be.addr())}})
	c := dial(t, port)
	require.Equal(t, "before", roundTrip(t, c, "before"))

	stopped := make(chan error, 1)
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stopped <- p.Stop(ctx)
	}()
	require.Eventually(t, func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
		if err == nil {
			_ = c.Close()
		}
		return err != nil
	}, 5*time.Second, 5*time.Millisecond, "the port still accepts after Stop")

	data := pattern(1<<20, 8)
	require.NoError(t, streamEcho(c, data, 32<<10, 5*time.Millisecond), "draining connection was disturbed")
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while a connection was still open", err)
	default:
	}
	require.NoError(t, c.Close())
	select {
	case err := <-stopped:
		require.NoError(t, err)
		require.Less(t, time.Since(start), 4*time.Second)
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not return after the last connection ended")
	}
	require.Zero(t, p.Metrics().Closed[connection.ReasonShutdown])
	require.ErrorIs(t, p.UpdateRoutes(p.Routes()), ErrStopped)
	require.ErrorIs(t, p.Start(context.Background()), ErrStopped)
	require.NoError(t, p.Stop(context.Background()), "a second Stop is a no-op")
}

// TestStopCutsAfterDeadline: connections still open when Stop's deadline
// passes are closed, whatever state they are in (forwarding, waiting for a
// ClientHello, inside a socket handler that blocks on a read or on ctx),
// Stop reports the deadline, and no goroutine of the proxy is left.
func TestStopCutsAfterDeadline(t *testing.T) {
	// Not parallel: goleak.VerifyNone sees the goroutines of the whole process.
	ignore := goleak.IgnoreCurrent()
	be := startBackend(t, "127.0.0.1:0", echo)
	lp := newListenerPool(t)
	fwd, sni, reader, waiter := lp.port(t), lp.port(t), lp.port(t), lp.port(t)
	p := startTestProxy(t, lp, Options{
		InitialDataTimeout: 30 * time.Second,
		Routes: []Route{
			plainRoute("fwd", fwd, be.addr()),
			NewRoute("sni").Ports(sni).Domains("x.test").ForwardTo(be.addr()).Route(),
			SocketHandlerRoute("reader", Ports(reader), nil, func(ctx context.Context, c net.Conn, rc *RouteContext) error {
				_, err := c.Read(make([]byte, 1))
				return err
			}),
			SocketHandlerRoute("waiter", Ports(waiter), nil, func(ctx context.Context, c net.Conn, rc *RouteContext) error {
				<-ctx.Done()
				return ctx.Err()
			}),
		},
	})
	fc := dial(t, fwd)
	require.Equal(t, "x", roundTrip(t, fc, "x"))
	clients := []net.Conn{fc, dial(t, sni), dial(t, reader), dial(t, waiter)}
	require.Eventually(t, func() bool { return p.Metrics().Active == len(clients) }, 5*time.Second, 5*time.Millisecond)

	const grace = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	start := time.Now()
	err := p.Stop(ctx)
	el := time.Since(start)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.GreaterOrEqual(t, el, grace)
	require.Less(t, el, grace+2*time.Second)
	for i, c := range clients {
		_, got := awaitClose(t, c, time.Second)
		require.Empty(t, got, "client %d", i)
	}
	m := p.Metrics()
	require.Zero(t, m.Active)
	// The "waiter" handler and the forwarded pipe also watch the proxy's
	// context, which Stop cancels first, so they may finish on their own;
	// the hello wait and the blocked read can only be ended by Stop.
	require.GreaterOrEqual(t, m.Closed[connection.ReasonShutdown], uint64(2))

	be.close()
	goleak.VerifyNone(t, ignore)
}

// TestLifecycleErrors covers the calls around Start and Stop.
func TestLifecycleErrors(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	p := newTestProxy(t, lp, Options{Routes: []Route{SocketHandlerRoute("h", Ports(port), nil, EchoHandler())}})
	require.NoError(t, p.Start(context.Background()))
	require.Error(t, p.Start(context.Background()), "second Start")
	require.NoError(t, p.Stop(context.Background()))
	require.ErrorIs(t, p.Start(context.Background()), ErrStopped)
	c1, c2 := net.Pipe()
	defer c1.Close()
	require.ErrorIs(t, p.ServeConn(c2, port), ErrStopped)
	_, err := c1.Write([]byte{1}) // ServeConn closed it
	require.ErrorIs(t, err, io.ErrClosedPipe)

	// A proxy that never started stops at once and leaves nothing running.
	q := newTestProxy(t, nil, Options{Routes: []Route{SocketHandlerRoute("h", Ports(port), nil, EchoHandler())}})
	require.NoError(t, q.Stop(context.Background()))

	// A port that cannot be opened fails Start without leaving a port open.
	// Ports open in ascending order and 65535 is not reserved in the pool,
	// so the first port is open by the time the second one fails.
	var opened []net.Listener
	r := newTestProxy(t, lp, Options{
		Routes: []Route{
			SocketHandlerRoute("ok", Ports(lp.port(t)), nil, EchoHandler()),
			SocketHandlerRoute("bad", Ports(65535), nil, EchoHandler()),
		},
		Listen: func(ctx context.Context, network, addr string) (net.Listener, error) {
			ln, err := lp.listen(ctx, network, addr)
			if err == nil {
				opened = append(opened, ln)
			}
			return ln, err
		},
	})
	require.Error(t, r.Start(context.Background()))
	require.Len(t, opened, 1)
	// SetDeadline succeeds on an open listener only.
	err = opened[0].(*net.TCPListener).SetDeadline(time.Now())
	require.ErrorIs(t, err, net.ErrClosed, "a port opened by the failed Start was left open")
}

// serveConnCase is one in-memory connection for TestServeConnRouting.
type serveConnCase struct {
	name   string
	port   int
	client string // client address ("" means a bare net.Pipe address)
	send   []byte // what the client sends first
	want   string // "route domain clientIP", or "" when refused
}

// TestServeConnRouting proves routing in memory: ServeConn over net.Pipe,
// with the client address supplied by a wrapped conn, reaches the socket
// handler of the expected route, which reports what it was told.
func TestServeConnRouting(t *testing.T) {
	t.Parallel()
	report := func(ctx context.Context, c net.Conn, rc *RouteContext) error {
		_, err := fmt.Fprintf(c, "%s %s %s", rc.RouteName, rc.Domain, rc.ClientIP)
		return err
	}
	route := func(name string) *RouteBuilder { return NewRoute(name).HandleWith(report) }
	p := newTestProxy(t, nil, Options{InitialDataTimeout: time.Second, Routes: []Route{
		route("exact").Ports(443).Domains("api.example.com").Route(),
		route("wild").Ports(443).Domains("*.example.com").Route(),
		route("vip").Ports(443).Domains("*.example.com").ClientIPs("10.1.0.0/16").Priority(10).Route(),
		route("plain443").Ports(443).Route(),
		route("range").PortRange(8000, 8010).Route(),
		route("range-vip").PortRange(8000, 8010).ClientIPs("192.168.1.*").Priority(5).Route(),
		route("v6").Ports(9000).ClientIPs("2001:db8::/32").Route(),
		route("tls12").Ports(9443).Domains("*").TLSVersions("TLSv1.2").Route(),
		route("off").Ports(9500).Disabled().Route(),
	}})
	hello := func(name string, maxVer uint16) []byte {
		return tlstest.CaptureHello(t, &tls.Config{ServerName: name, MaxVersion: maxVer, InsecureSkipVerify: true})
	}
	const ext = "1.2.3.4:5555"
	cases := []serveConnCase{
		{"exact domain", 443, ext, hello("api.example.com", 0), "exact api.example.com 1.2.3.4"},
		{"domain case and trailing dot", 443, ext, hello("API.Example.COM.", 0), "exact api.example.com 1.2.3.4"},
		{"wildcard", 443, ext, hello("www.example.com", 0), "wild www.example.com 1.2.3.4"},
		{"wildcard spans dots", 443, ext, hello("a.b.example.com", 0), "wild a.b.example.com 1.2.3.4"},
		{"priority beats exact", 443, "10.1.2.3:1", hello("api.example.com", 0), "vip api.example.com 10.1.2.3"},
		{"client IP outside vip", 443, "10.2.0.1:1", hello("www.example.com", 0), "wild www.example.com 10.2.0.1"},
		{"unmatched domain falls back", 443, ext, hello("example.com", 0), "plain443 example.com 1.2.3.4"},
		{"no SNI", 443, ext, hello("", 0), "plain443  1.2.3.4"},
		{"not TLS", 443, ext, []byte("GET / HTTP/1.0\r\n\r\n"), "plain443  1.2.3.4"},
		{"port range", 8005, ext, nil, "range  1.2.3.4"},
		{"port range edge", 8010, ext, nil, "range  1.2.3.4"},
		{"port range vip", 8003, "192.168.1.7:9", nil, "range-vip  192.168.1.7"},
		{"IPv4-mapped client unmapped", 8004, "[::ffff:192.168.1.9]:9", nil, "range-vip  192.168.1.9"},
		{"outside range", 8011, ext, nil, ""},
		{"IPv6 client", 9000, "[2001:db8::1]:1234", nil, "v6  2001:db8::1"},
		{"IPv4 client on IPv6 route", 9000, ext, nil, ""},
		{"TLS 1.2 only: 1.2 client", 9443, ext, hello("any.test", tls.VersionTLS12), "tls12 any.test 1.2.3.4"},
		{"TLS 1.2 only: 1.3 client", 9443, ext, hello("any.test", 0), ""},
		{"disabled route", 9500, ext, nil, ""},
		{"unknown port", 1, ext, nil, ""},
	}
	names := make([]string, 0, len(p.Routes()))
	for _, r := range p.Routes() {
		names = append(names, r.Name)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := serveConn(t, p, tc)
			if tc.want == "" {
				for _, n := range names {
					require.NotContains(t, got, n, "a refused connection reached a handler")
				}
				if len(got) > 0 {
					require.Equal(t, byte(0x15), got[0], "a refused client gets at most a TLS alert")
				}
				return
			}
			require.Equal(t, tc.want, got)
		})
	}
	requireNoRecords(t, p)
}

// serveConn runs one case: it serves the server end of a net.Pipe, writes
// the client's bytes, and returns everything the client receives.
func serveConn(t *testing.T, p *Proxy, tc serveConnCase) string {
	t.Helper()
	client, server := net.Pipe()
	var sc net.Conn = server
	if tc.client != "" {
		sc = addrConn{Conn: server, remote: tcpAddr(tc.client)}
	}
	// Before serving: a refused pipe may be closed by the time we get here.
	require.NoError(t, client.SetReadDeadline(time.Now().Add(3*time.Second)))
	served := make(chan error, 1)
	go func() { served <- p.ServeConn(sc, tc.port) }()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer client.Close()
	if len(tc.send) > 0 {
		// The proxy may never read (a port without hello routes): write on
		// the side so that the read below can see the answer or the close.
		wg.Go(func() { _, _ = client.Write(tc.send) })
	}
	got, err := io.ReadAll(client)
	require.NoError(t, err)
	require.NoError(t, <-served)
	return string(got)
}

// TestServeConnBarePipe: the documented use of ServeConn with a plain
// net.Pipe, whose address carries no IP, must be served.
func TestServeConnBarePipe(t *testing.T) {
	t.Parallel()
	var seen RouteContext
	p := newTestProxy(t, nil, Options{Routes: []Route{
		SocketHandlerRoute("pipe", Ports(7000), nil, func(ctx context.Context, c net.Conn, rc *RouteContext) error {
			seen = *rc
			_, err := io.WriteString(c, "served")
			return err
		}),
	}})
	require.Equal(t, "served", serveConn(t, p, serveConnCase{port: 7000}))
	require.Equal(t, "pipe", seen.RouteName)
	require.False(t, seen.ClientIP.IsValid(), "no client IP was known")
	requireNoRecords(t, p)
}

// TestServeConnForward: ServeConn of a net.Pipe on a forward route copies
// through the portable path (no TCP on the client side) to a real backend.
func TestServeConnForward(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "127.0.0.1:0", taggedEcho("E"))
	p := newTestProxy(t, nil, Options{Routes: []Route{plainRoute("fwd", 7001, be.addr())}})
	client, server := net.Pipe()
	served := make(chan error, 1)
	go func() { served <- p.ServeConn(addrConn{server, tcpAddr("10.0.0.1:1")}, 7001) }()
	require.Equal(t, "E", readTag(t, client))
	data := pattern(256<<10, 4)
	require.NoError(t, streamEcho(client, data, 10000, 0))
	require.NoError(t, client.Close())
	require.NoError(t, <-served)
	requireNoRecords(t, p)
	m := p.Metrics()
	require.EqualValues(t, len(data), m.BytesIn)
	require.EqualValues(t, len(data)+1, m.BytesOut)
	require.True(t, slices.Contains(p.Ports(), 7001))
}

// memListener is an in-memory listener like the ones Options.Listen
// invites tests to use. Like many such listeners (bufconn, fasthttputil),
// Accept after Close fails with its own error, not net.ErrClosed.
type memListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

var errMemClosed = errors.New("memListener: closed")

func newMemListener() *memListener {
	return &memListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, errMemClosed
	}
}

func (l *memListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *memListener) Addr() net.Addr { return tcpAddr("127.0.0.1:1") }

// dial connects a client through the in-memory listener.
func (l *memListener) dial(t *testing.T, from string) net.Conn {
	t.Helper()
	c, s := net.Pipe()
	select {
	case l.conns <- addrConn{Conn: s, remote: tcpAddr(from)}:
	case <-time.After(2 * time.Second):
		t.Fatal("in-memory listener is not accepting")
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestStopWithCustomListener: Stop must not depend on the error a custom
// listener's Accept returns once closed; with an in-memory listener it
// returns promptly, and a port removed by UpdateRoutes stops its loop too.
func TestStopWithCustomListener(t *testing.T) {
	t.Parallel()
	lns := map[string]*memListener{"127.0.0.1:7100": newMemListener(), "127.0.0.1:7101": newMemListener()}
	p := startTestProxy(t, nil, Options{
		ListenAddress: "127.0.0.1",
		Listen: func(_ context.Context, _, addr string) (net.Listener, error) {
			if ln := lns[addr]; ln != nil {
				return ln, nil
			}
			return nil, fmt.Errorf("no listener for %s", addr)
		},
		Routes: []Route{
			SocketHandlerRoute("a", Ports(7100), nil, EchoHandler()),
			SocketHandlerRoute("b", Ports(7101), nil, EchoHandler()),
		},
	})
	c := lns["127.0.0.1:7100"].dial(t, "10.0.0.1:1")
	require.Equal(t, "mem", roundTrip(t, c, "mem"))
	require.NoError(t, c.Close())
	require.NoError(t, p.UpdateRoutes([]Route{SocketHandlerRoute("a", Ports(7100), nil, EchoHandler())}))

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		stopped <- p.Stop(ctx)
	}()
	select {
	case err := <-stopped:
		require.NoError(t, err)
	case <-time.After(3 * time.Second):
		t.Fatal("Stop hangs: the accept loop of a closed custom listener never ends")
	}
}

// TestUpdateRoutesQueuedConnection: a connection already waiting in a new
// port's accept queue when UpdateRoutes opens it (a pre-opened or inherited
// listener) must be served by the new routes, not refused with "no route"
// because the accept loop ran ahead of the route set.
func TestUpdateRoutesQueuedConnection(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	first := lp.port(t)
	p := startTestProxy(t, lp, Options{Routes: []Route{SocketHandlerRoute("first", Ports(first), nil, EchoHandler())}})
	for i := range 20 {
		port := lp.port(t)
		queued := make([]net.Conn, 5)
		for j := range queued {
			queued[j] = dial(t, port) // completes in the kernel's backlog
		}
		require.NoError(t, p.UpdateRoutes([]Route{
			SocketHandlerRoute("first", Ports(first), nil, EchoHandler()),
			SocketHandlerRoute("added"+strconv.Itoa(i), Ports(port), nil, EchoHandler()),
		}))
		for j, c := range queued {
			msg := fmt.Sprintf("queued %d/%d", i, j)
			require.Equal(t, msg, roundTrip(t, c, msg))
			require.NoError(t, c.Close())
		}
	}
	requireNoRecords(t, p)
}

// TestStopExpiredWhileAccepting: Stop with an expired context while
// clients are still connecting must not hang on a connection that was
// accepted just before the listener closed but admitted only after Stop
// closed every connection it knew of (its handler would wait forever on a
// client that never sends).
func TestStopExpiredWhileAccepting(t *testing.T) {
	t.Parallel()
	for round := range 15 {
		lp := newListenerPool(t)
		port := lp.port(t)
		p := startTestProxy(t, lp, Options{Routes: []Route{
			SocketHandlerRoute("wait", Ports(port), nil, func(ctx context.Context, c net.Conn, rc *RouteContext) error {
				_, err := c.Read(make([]byte, 1)) // the clients never send
				return err
			}),
		}})
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var clients sync.Map
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
					if err != nil {
						return // the port closed
					}
					clients.Store(c, nil)
				}
			})
		}
		time.Sleep(time.Duration(5+round) * time.Millisecond)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		stopped := make(chan error, 1)
		go func() { stopped <- p.Stop(ctx) }()
		var err error
		select {
		case err = <-stopped:
		case <-time.After(3 * time.Second):
		}
		close(stop)
		wg.Wait()
		clients.Range(func(k, _ any) bool { _ = k.(net.Conn).Close(); return true })
		if err == nil {
			err = <-stopped // hung, but released by the clients closing
			t.Fatalf("round %d: Stop hung on a connection admitted after it closed everything (then returned %v)", round, err)
		}
		require.ErrorIs(t, err, context.Canceled)
	}
}

// UpdateRoutes revokes access on open keep-alive connections: the next
// request on the same connection is matched against the new routes.
func TestUpdateRoutesAppliesToKeepAliveRequests(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := echoBackend(t, "b")
	open := httpRouteOn("web", port, be.addr(), "app.test")
	p := startTestProxy(t, lp, Options{Routes: []Route{open}})
	c, dials := proxyClient(t, port, nil, false)
	require.Equal(t, "b", getEcho(t, c, "GET", "http://app.test/", nil).Backend)

	blocked := open
	blocked.Security = &RouteSecurity{IPBlockList: []string{"127.0.0.1"}}
	require.NoError(t, p.UpdateRoutes([]Route{blocked}))
	resp, _ := do(t, c, "GET", "http://app.test/", nil, nil)
	require.Equal(t, 403, resp.StatusCode)
	require.EqualValues(t, 1, dials.Load(), "the same client connection")
}
