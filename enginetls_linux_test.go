//go:build linux

package smartproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/gosmartproxy/smartproxy/internal/evloop"
	"github.com/stretchr/testify/require"
)

// countingConn counts the bytes a client wrote and read on the wire.
type countingConn struct {
	net.Conn
	in, out atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(int64(n))
	return n, err
}

// tlsLoopProxy starts a proxy (event loops, the fast path) with a terminating route on a fresh port to a
// backend that answers each request with its method, path, body and X-Forwarded-Proto, and
// records them in order.
func tlsLoopProxy(t *testing.T) (p *Proxy, port int, seen func() []string) {
	t.Helper()
	skipWithoutFastPath(t)
	var mu sync.Mutex
	var got []string
	be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		line := r.Method + " " + r.URL.Path + " " + string(body) + " " + r.Header.Get("X-Forwarded-Proto")
		mu.Lock()
		got = append(got, line)
		mu.Unlock()
		_, _ = io.WriteString(w, line)
	}))
	// The loops, also in the goroutine pass (SMARTPROXY_TEST_ENGINE=goroutines).
	p, port = startEngineProxy(t, Options{Certificates: testCertStore(t)}, func(port int) []Route {
		return []Route{terminateRouteOn("r", port, be.addr(), "a.test")}
	})
	return p, port, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
}

// terminatingProxy starts a proxy on engine eng with a terminating route (a.test) on a fresh
// port to target: the loops (startEngineProxy, in the goroutine pass too), or goroutines.
func terminatingProxy(t *testing.T, eng Engine, target string) (*Proxy, int) {
	t.Helper()
	routes := func(port int) []Route { return []Route{terminateRouteOn("r", port, target, "a.test")} }
	if eng == EngineEventLoop {
		skipWithoutFastPath(t)
		return startEngineProxy(t, Options{Certificates: testCertStore(t)}, routes)
	}
	port := closedPort(t)
	p := newTestProxy(t, nil, Options{Certificates: testCertStore(t), ListenAddress: "127.0.0.1", Routes: routes(port)})
	p.opts.Engine = EngineGoroutines
	require.NoError(t, p.Start(context.Background()))
	return p, port
}

// skipWithoutFastPath skips a test of TLS on the loops in the suite's net/http pass: the loops
// serve terminated HTTP/1.1 only on the fast path, which SMARTPROXY_TEST_NETHTTP=1 turns off
// (newTestProxy); the default pass runs these tests.
func skipWithoutFastPath(t *testing.T) {
	t.Helper()
	if os.Getenv("SMARTPROXY_TEST_NETHTTP") == "1" {
		t.Skip("SMARTPROXY_TEST_NETHTTP=1: the fast path is off, and with it TLS on the event loops")
	}
}

// loopsOf is the event-loop server a port's TLS connections move to.
func loopsOf(t *testing.T, p *Proxy, port int) *evloop.Server {
	t.Helper()
	v, ok := p.loopSrv.Load(port)
	require.True(t, ok, "port %d has no event loops", port)
	return v.(*evloop.Server)
}

// exchange writes raw over c and reads n responses, returning their bodies.
func tlsExchange(t *testing.T, c net.Conn, br *bufio.Reader, raw string, n int) []string {
	t.Helper()
	_, err := io.WriteString(c, raw)
	require.NoError(t, err)
	var bodies []string
	for range n {
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, 200, resp.StatusCode, string(b))
		bodies = append(bodies, string(b))
	}
	return bodies
}

// TestTLSConnectionMovesToLoop: a TLS-terminated HTTP/1.1 connection is served by the port's
// event loop after its handshake: no goroutine fast connection serves it, the loop counts it,
// its requests carry the TLS state (X-Forwarded-Proto https), its record counts exactly the
// bytes that crossed the wire (the handshake's on the goroutine path, the rest on the loop),
// and a client's close_notify ends it. An h2 connection stays on the goroutine path.
func TestTLSConnectionMovesToLoop(t *testing.T) {
	t.Parallel()
	p, port, _ := tlsLoopProxy(t)
	srv := loopsOf(t, p, port)
	raw, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	require.NoError(t, err)
	cc := &countingConn{Conn: raw}
	c := tls.Client(cc, insecureTLS("a.test", "http/1.1"))
	defer c.Close()
	br := bufio.NewReader(c)
	get := func(path string) {
		got := tlsExchange(t, c, br, "GET "+path+" HTTP/1.1\r\nHost: a.test\r\n\r\n", 1)
		require.Equal(t, "GET "+path+"  https", got[0])
	}
	get("/1")
	// The counts from here on: the handshake's bytes, and any the handshake read ahead, count
	// as on the goroutine path (meterConn: from the first request on).
	mgr := p.conns.(*connection.Manager)
	var in0, out0 uint64
	require.Eventually(t, func() bool {
		recs := mgr.Records()
		if len(recs) == 1 {
			in0, out0 = recs[0].BytesIn, recs[0].BytesOut
		}
		return len(recs) == 1 && out0 > 0
	}, 2*time.Second, 5*time.Millisecond)
	cin, cout := cc.in.Load(), cc.out.Load()
	get("/2")
	get("/3")
	active, _, _ := srv.Stats()
	require.EqualValues(t, 1, active, "the loop serves the connection")
	n := 0
	p.http.fastConns.Range(func(any, any) bool { n++; return true })
	require.Zero(t, n, "no goroutine fast connection")
	require.Eventually(t, func() bool {
		recs := mgr.Records()
		return len(recs) == 1 && int64(recs[0].BytesIn-in0) == cc.out.Load()-cout && int64(recs[0].BytesOut-out0) == cc.in.Load()-cin
	}, 2*time.Second, 5*time.Millisecond, "the record counts the wire's bytes: %+v, client wrote %d and read %d", mgr.Records(), cc.out.Load()-cout, cc.in.Load()-cin)

	// An h2 client: served by net/http on a goroutine, not moved.
	h2, _ := proxyClient(t, port, insecureTLS("a.test", "h2"), true)
	resp, err := h2.Get("https://a.test/h2")
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, 2, resp.ProtoMajor)
	active, _, _ = srv.Stats()
	require.EqualValues(t, 1, active, "the h2 connection is not the loop's")
	h2.CloseIdleConnections()

	require.NoError(t, c.Close()) // close_notify, then the FIN
	require.Eventually(t, func() bool {
		active, _, _ := srv.Stats()
		return active == 0 && len(mgr.Records()) == 0
	}, 2*time.Second, 5*time.Millisecond)
}

// TestTLSLoopHandsBack: a request the loop does not carry (a body over the loop's held size)
// goes back to the goroutine path with the plaintext the loop read of it and of a request
// pipelined behind it, on the same tls.Conn: the backend gets every request once and in
// order, and the connection goes on there. (A chunked upload closes the connection after its answer on both paths.)
func TestTLSLoopHandsBack(t *testing.T) {
	t.Parallel()
	p, port, seen := tlsLoopProxy(t)
	srv := loopsOf(t, p, port)
	c, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), insecureTLS("a.test", "http/1.1"))
	require.NoError(t, err)
	defer c.Close()
	br := bufio.NewReader(c)
	require.Equal(t, []string{"GET /a  https"}, tlsExchange(t, c, br, "GET /a HTTP/1.1\r\nHost: a.test\r\n\r\n", 1))
	active, _, _ := srv.Stats()
	require.EqualValues(t, 1, active)
	body := strings.Repeat("x", maxHeldBody+1)
	// One write: the loop reads the POST (and, as it comes, the GET behind it) as plaintext
	// before it hands back; the rest waits in the tls.Conn or the socket, and comes after.
	got := tlsExchange(t, c, br, "POST /b HTTP/1.1\r\nHost: a.test\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body+
		"GET /c HTTP/1.1\r\nHost: a.test\r\n\r\n", 2)
	require.Equal(t, []string{"POST /b " + body + " https", "GET /c  https"}, got)
	require.Equal(t, []string{"GET /d  https"}, tlsExchange(t, c, br, "GET /d HTTP/1.1\r\nHost: a.test\r\n\r\n", 1))
	require.Equal(t, []string{"GET /a  https", "POST /b " + body + " https", "GET /c  https", "GET /d  https"}, seen())
	require.Eventually(t, func() bool {
		active, _, _ := srv.Stats()
		return active == 0
	}, 2*time.Second, 5*time.Millisecond, "handed back: the loop no longer holds it")
}

// TestTLSLoopStopAndKill: a connection the loop serves is closed by the connection manager (the
// record's closer, through the goroutine path's proxiedConn) and by Stop, which waits for it.
func TestTLSLoopStopAndKill(t *testing.T) {
	t.Parallel()
	p, port, _ := tlsLoopProxy(t)
	srv := loopsOf(t, p, port)
	dialOne := func() (*tls.Conn, *bufio.Reader) {
		c, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), insecureTLS("a.test", "http/1.1"))
		require.NoError(t, err)
		br := bufio.NewReader(c)
		tlsExchange(t, c, br, "GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n", 1)
		return c, br
	}
	c1, br1 := dialOne()
	defer c1.Close()
	p.conns.(*connection.Manager).CloseAll()
	_ = c1.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := br1.ReadByte()
	require.Error(t, err, "killed by the connection manager")
	require.False(t, errors.Is(err, os.ErrDeadlineExceeded), "not closed: %v", err)

	c2, br2 := dialOne()
	defer c2.Close()
	active, _, _ := srv.Stats()
	require.EqualValues(t, 1, active)
	require.NoError(t, p.Stop(t.Context()))
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = br2.ReadByte()
	require.Error(t, err)
	require.False(t, errors.Is(err, os.ErrDeadlineExceeded), "not closed by Stop: %v", err)
	<-srv.Done()
}

// TestTLSLoopFirstBytesAreRequests: a moved connection's first bytes were classified before
// its move (evloop: an adopted connection starts past its first bytes), so on the loop they
// are a request to parse: a malformed first head or the h2 preface is answered 400, plaintext
// that looks like a TLS record waits as an incomplete head and ends at the head timeout, and
// none of it reaches the backend.
func TestTLSLoopFirstBytesAreRequests(t *testing.T) {
	t.Parallel()
	p, port, seen := tlsLoopProxy(t)
	srv := loopsOf(t, p, port)
	for _, first := range []string{
		"GET / HTTP/1.1\r\nHost a.test\r\n\r\n",
		"\x16\x03\x01\x00\x05hello",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	} {
		c, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), insecureTLS("a.test", "http/1.1"))
		require.NoError(t, err)
		require.Eventually(t, func() bool { active, _, _ := srv.Stats(); return active == 1 }, 2*time.Second, 5*time.Millisecond,
			"the connection moved to the loop before its first bytes")
		_, err = io.WriteString(c, first)
		require.NoError(t, err)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(c)
		if first[0] == 0x16 {
			require.Empty(t, b, "%q", first) // no CRLF: an incomplete head, closed without a word
		} else {
			require.True(t, strings.HasPrefix(string(b), "HTTP/1.1 400 "), "%q: got %q", first, b)
		}
		_ = c.Close()
		require.Eventually(t, func() bool { active, _, _ := srv.Stats(); return active == 0 }, 2*time.Second, 5*time.Millisecond)
	}
	require.Empty(t, seen())
}
