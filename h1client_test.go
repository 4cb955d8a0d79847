package smartproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/h1client"
	"github.com/stretchr/testify/require"
)

// Tests of the synchronous HTTP/1.1 client (internal/h1client) through
// the proxy over loopback sockets: which requests take it, how its
// failures reach the client, retries and pooling as a proxy sees them.
// Its own tests (internal/h1client) cover the pool's state directly.

// h1Pooled is how many connections the proxy's h1client holds idle.
func h1Pooled(p *Proxy) int { return p.http.h1.IdleConns() }

// fastForwarding reports a proxy on the HTTP/1.1 fast path, whose
// requests with Content-Length bodies take the synchronous client too
// (httpfastforward.go).
func fastForwarding(p *Proxy) bool { return !p.opts.DisableHTTPFastPath }

// h1Proxy starts a proxy with one plain HTTP route h1.test to target.
func h1Proxy(t *testing.T, target string, opts Options) (*Proxy, *http.Client) {
	t.Helper()
	lp := newListenerPool(t)
	port := lp.port(t)
	opts.Routes = []Route{httpRouteOn("h1", port, target, "h1.test")}
	// h1client is the goroutine path's backend client; on the event loops (the default for
	// such a port) requests take the loop's own pool, tested in internal/evloop.
	opts.Engine = EngineGoroutines
	p := startTestProxy(t, lp, opts)
	c, _ := proxyClient(t, port, nil, false)
	return p, c
}

// rawBackend is a hand-written HTTP backend.
type rawBackend struct {
	*backend
	closed atomic.Int64 // connections it closed
}

// rawHTTPBackend serves each connection with answer, called per request
// read from it; answer returns false to close the connection.
func rawHTTPBackend(t *testing.T, answer func(c net.Conn, r *http.Request) bool) *rawBackend {
	rb := &rawBackend{}
	rb.backend = startBackend(t, "127.0.0.1:0", func(c net.Conn) {
		defer rb.closed.Add(1)
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, r.Body)
			if !answer(c, r) {
				return
			}
		}
	})
	return rb
}

// countingServer is an httptest server, configured by cfg before it
// starts, that counts connections accepted and open.
type countingServer struct {
	*httptest.Server
	conns, open atomic.Int64
}

func startCountingServer(t *testing.T, h http.Handler, cfg func(*http.Server)) *countingServer {
	t.Helper()
	s := &countingServer{Server: httptest.NewUnstartedServer(h)}
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			s.conns.Add(1)
			s.open.Add(1)
		case http.StateClosed, http.StateHijacked:
			s.open.Add(-1)
		}
	}
	if cfg != nil {
		cfg(s.Config)
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func (s *countingServer) addr() string { return s.Listener.Addr().String() }

// TestH1ClientReusesOneConn: sequential GETs take the synchronous client
// (no http.Transport is ever made) over one pooled backend connection,
// and the request goes out as http.Transport sent it: Host the target,
// no User-Agent added.
func TestH1ClientReusesOneConn(t *testing.T) {
	be := echoBackend(t, "b")
	p, c := h1Proxy(t, be.addr(), Options{})
	for range 200 {
		e := getEcho(t, c, "GET", "http://h1.test/x", hdr("User-Agent", "")) // the client sends none
		require.Equal(t, be.addr(), e.Host)
		require.Empty(t, e.Header.Values("User-Agent"), "the proxy adds none")
		require.Equal(t, "HTTP/1.1", e.Proto)
	}
	require.Equal(t, int64(1), be.conns.Load(), "one backend connection")
	require.Equal(t, 0, transportCount(p), "no http.Transport: the synchronous client sent them")
	require.Equal(t, 1, h1Pooled(p))
	// The client's own User-Agent passes through.
	e := getEcho(t, c, "GET", "http://h1.test/", hdr("User-Agent", "tester/1"))
	require.Equal(t, "tester/1", e.Header.Get("User-Agent"))
}

// TestH1ClientBackendClosesAfterEachResponse: a backend that closes every
// connection after one response without saying so. Idempotent requests
// find the pooled connection dead and go again on a new one; a
// non-idempotent one probes the pooled connection first.
func TestH1ClientBackendClosesAfterEachResponse(t *testing.T) {
	for _, reset := range []bool{false, true} {
		t.Run(map[bool]string{false: "fin", true: "reset"}[reset], func(t *testing.T) {
			be := rawHTTPBackend(t, func(c net.Conn, r *http.Request) bool {
				body := r.Method
				if r.Method == "HEAD" {
					body = ""
				}
				_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(r.Method), body)
				if reset {
					_ = c.(*net.TCPConn).SetLinger(0) // the close sends RST: the proxy sees ECONNRESET
				}
				return false
			})
			p, c := h1Proxy(t, be.addr(), Options{})
			for i := range 30 {
				method := []string{"GET", "HEAD", "DELETE", "POST", "PATCH"}[i%5]
				if !h1client.Replayable(&http.Request{Method: method}) {
					// Once the backend's close has happened, the probe sees it.
					// (Sent right after the response, a request that cannot be
					// repeated races the close, as with http.Transport.)
					require.Eventually(t, func() bool { return be.closed.Load() == be.accepts.Load() }, 2*time.Second, time.Millisecond)
				}
				resp, body := do(t, c, method, "http://h1.test/", nil, nil)
				require.Equal(t, http.StatusOK, resp.StatusCode, "request %d %s: %s", i, method, body)
				if method != "HEAD" {
					require.Equal(t, method, body)
				}
			}
			require.Equal(t, int64(30), be.accepts.Load(), "a connection per request")
			require.Equal(t, 0, transportCount(p))
		})
	}
}

// TestH1ClientBackendIdleTimeout: a backend that closes keep-alive
// connections after a short idle time. Pooled connections are found
// closed by the probe before use.
func TestH1ClientBackendIdleTimeout(t *testing.T) {
	be := startCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Method)
	}), func(s *http.Server) { s.IdleTimeout = 20 * time.Millisecond })
	_, c := h1Proxy(t, be.addr(), Options{})
	for i := range 6 {
		method := []string{"GET", "POST"}[i%2]
		resp, body := do(t, c, method, "http://h1.test/", nil, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, body)
		require.Equal(t, method, body)
		time.Sleep(150 * time.Millisecond)
	}
	require.Equal(t, int64(6), be.conns.Load())
}

// TestH1ClientSilentBackend: a backend that takes the request and never
// answers gets 504 after ConnectTimeout, its connection closed, not
// pooled.
func TestH1ClientSilentBackend(t *testing.T) {
	closed := make(chan struct{}, 1)
	be := startBackend(t, "127.0.0.1:0", func(c net.Conn) {
		_, _ = io.Copy(io.Discard, c) // until the proxy closes
		closed <- struct{}{}
	})
	p, c := h1Proxy(t, be.addr(), Options{ConnectTimeout: 300 * time.Millisecond})
	start := time.Now()
	resp, body := do(t, c, "GET", "http://h1.test/", nil, nil)
	el := time.Since(start)
	require.Equal(t, http.StatusGatewayTimeout, resp.StatusCode, body)
	require.Equal(t, "504 Gateway Timeout\n", body)
	require.GreaterOrEqual(t, el, 300*time.Millisecond)
	require.Less(t, el, 2*time.Second)
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		t.Fatal("the backend connection stayed open")
	}
	require.Equal(t, 0, h1Pooled(p))
	require.Equal(t, int64(1), be.accepts.Load(), "a timeout is not retried")
}

// TestH1ClientClientGoneMidBody: a client that disconnects while a slow
// response streams ends the exchange: the backend connection is closed,
// nothing pooled, no goroutine left (TestMain checks).
func TestH1ClientClientGoneMidBody(t *testing.T) {
	backendDone := make(chan error, 1)
	be := rawHTTPBackend(t, func(c net.Conn, _ *http.Request) bool {
		_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
		for err == nil {
			_, err = io.WriteString(c, "5\r\nchunk\r\n")
			time.Sleep(5 * time.Millisecond)
		}
		backendDone <- err
		return false
	})
	p, c := h1Proxy(t, be.addr(), Options{})
	resp, err := c.Get("http://h1.test/stream")
	require.NoError(t, err)
	buf := make([]byte, 5)
	_, err = io.ReadFull(resp.Body, buf)
	require.NoError(t, err)
	require.Equal(t, "chunk", string(buf))
	require.NoError(t, resp.Body.Close()) // closes the client connection: the body was not read to its end
	select {
	case err := <-backendDone:
		require.True(t, isClosedErr(err), "%v", err)
	case <-time.After(3 * time.Second):
		t.Fatal("the backend kept streaming: its connection was not closed")
	}
	require.Equal(t, 0, h1Pooled(p))
}

// TestH1ClientClientGoneWhileBlocked: a client that goes away while the
// proxy is blocked reading from the backend (no head yet, or a head and
// then a stalled body) unblocks it at once, long before ConnectTimeout:
// the backend connection is closed, nothing pooled.
func TestH1ClientClientGoneWhileBlocked(t *testing.T) {
	for _, stall := range []string{"head", "body"} {
		t.Run(stall, func(t *testing.T) {
			got := make(chan struct{}, 1)
			closed := make(chan struct{}, 1)
			be := startBackend(t, "127.0.0.1:0", func(c net.Conn) {
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				if stall == "body" {
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst")
				}
				got <- struct{}{}
				_, _ = io.Copy(io.Discard, br) // until the proxy closes
				closed <- struct{}{}
			})
			p, c := h1Proxy(t, be.addr(), Options{ConnectTimeout: 20 * time.Second})
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, "GET", "http://h1.test/", nil)
			require.NoError(t, err)
			errc := make(chan error, 1)
			go func() {
				resp, err := c.Do(req)
				if err == nil {
					_, err = io.ReadAll(resp.Body)
					_ = resp.Body.Close()
				}
				errc <- err
			}()
			<-got
			time.Sleep(20 * time.Millisecond) // the proxy waits on the backend
			start := time.Now()
			cancel() // the client closes its connection
			require.Error(t, <-errc)
			select {
			case <-closed:
			case <-time.After(3 * time.Second):
				t.Fatal("the backend connection stayed open")
			}
			require.Less(t, time.Since(start), 3*time.Second)
			require.Equal(t, 0, h1Pooled(p))
		})
	}
}

// TestH1ClientResponseKinds: framing the pool depends on. A response
// that closes (Connection: close, HTTP/1.0 to EOF) is not reused; chunked
// with trailers, HEAD, 204, 304 and 103 before 200 are, and relay as
// http.Transport relayed them.
func TestH1ClientResponseKinds(t *testing.T) {
	be := startCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/close":
			w.Header().Set("Connection", "close")
			_, _ = io.WriteString(w, "bye")
		case "/trailer":
			w.Header().Set("Trailer", "X-Sum")
			_, _ = io.WriteString(w, "part1,")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "part2")
			w.Header().Set("X-Sum", "42")
		case "/head":
			w.Header().Set("Content-Length", "10")
			if r.Method != "HEAD" {
				_, _ = io.WriteString(w, "0123456789")
			}
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.WriteHeader(http.StatusNotModified)
		case "/103":
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
			_, _ = io.WriteString(w, "final")
		}
	}), nil)
	p, c := h1Proxy(t, be.addr(), Options{})
	conns := func() int64 { return be.conns.Load() }

	for range 3 {
		_, body := do(t, c, "GET", "http://h1.test/close", nil, nil)
		require.Equal(t, "bye", body)
	}
	require.Equal(t, int64(3), conns(), "Connection: close is honoured")
	require.Equal(t, 0, h1Pooled(p))

	resp, body := do(t, c, "GET", "http://h1.test/trailer", nil, nil)
	require.Equal(t, "part1,part2", body)
	require.Equal(t, "42", resp.Trailer.Get("X-Sum"))
	require.Equal(t, 1, h1Pooled(p))

	resp, body = do(t, c, "HEAD", "http://h1.test/head", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Empty(t, body)
	require.Equal(t, int64(10), resp.ContentLength)
	_, body = do(t, c, "GET", "http://h1.test/head", nil, nil)
	require.Equal(t, "0123456789", body)
	resp, _ = do(t, c, "GET", "http://h1.test/204", nil, nil)
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	resp, _ = do(t, c, "GET", "http://h1.test/304", nil, nil)
	require.Equal(t, http.StatusNotModified, resp.StatusCode)

	// 103 Early Hints reach the client before the 200, over the
	// synchronous client (GET) and over http.Transport (POST with a body).
	for _, method := range []string{"GET", "POST"} {
		var got []string
		trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			got = append(got, fmt.Sprintf("%d %s", code, h.Get("Link")))
			return nil
		}}
		var rb io.Reader
		if method == "POST" {
			rb = strings.NewReader("body")
		}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), method, "http://h1.test/103", rb)
		require.NoError(t, err)
		resp, err := c.Do(req)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		require.Equal(t, "final", string(b))
		require.Equal(t, []string{"103 </style.css>; rel=preload"}, got, method)
		require.Empty(t, resp.Header.Get("Link"), method)
	}
	if fastForwarding(p) {
		// The fast forward sends bodies on the synchronous client's pool too.
		require.Equal(t, int64(4), conns(), "one connection after the closing ones, the POST's included")
	} else {
		require.Equal(t, int64(5), conns(), "one connection after the closing ones, and the transport's for the POST")
	}
	require.Equal(t, 1, h1Pooled(p))
}

// TestH1ClientHTTP10UntilEOF: a response without length is read to EOF,
// and its connection is not reused.
func TestH1ClientHTTP10UntilEOF(t *testing.T) {
	be := rawHTTPBackend(t, func(c net.Conn, _ *http.Request) bool {
		_, _ = io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
		return false
	})
	p, c := h1Proxy(t, be.addr(), Options{})
	for range 3 {
		resp, body := do(t, c, "GET", "http://h1.test/", nil, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, "until the end", body)
	}
	require.Equal(t, int64(3), be.accepts.Load())
	require.Equal(t, 0, h1Pooled(p))
}

// TestH1ClientBadResponses: a 101 to a request without Upgrade, a head
// over the limit and garbage are 502s, their connections closed.
func TestH1ClientBadResponses(t *testing.T) {
	huge := "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", h1client.MaxHeaderBytes) + "\r\n\r\n"
	be := rawHTTPBackend(t, func(c net.Conn, r *http.Request) bool {
		switch r.URL.Path {
		case "/101":
			_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n")
		case "/huge":
			_, _ = io.WriteString(c, huge)
		default:
			_, _ = io.WriteString(c, "SSH-2.0-OpenSSH\r\n")
		}
		return true
	})
	// /huge: a head over h1client.MaxHeaderBytes (16 KiB) is a 502.
	p, c := h1Proxy(t, be.addr(), Options{})
	for _, path := range []string{"/101", "/huge", "/garbage"} {
		resp, body := do(t, c, "GET", "http://h1.test"+path, nil, nil)
		require.Equal(t, http.StatusBadGateway, resp.StatusCode, "%s: %s", path, body)
	}
	require.Equal(t, 0, h1Pooled(p))
	require.Eventually(t, func() bool { return be.closed.Load() == 3 }, 2*time.Second, time.Millisecond)
}

// TestH1ClientBodiesTakeTransport: a request with a body, and one with
// Expect, go through http.Transport on net/http's server and still work;
// on the fast path (run too) a Content-Length body takes the synchronous
// client.
func TestH1ClientBodiesTakeTransport(t *testing.T) {
	for _, fast := range []bool{false, true} {
		t.Run(map[bool]string{false: "nethttp", true: "fast"}[fast], func(t *testing.T) {
			be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				_, _ = fmt.Fprintf(w, "%s %s expect=%s", r.Method, b, r.Header.Get("Expect"))
			}))
			p, c := h1Proxy(t, be.addr(), Options{DisableHTTPFastPath: !fast})
			_, body := do(t, c, "POST", "http://h1.test/", nil, strings.NewReader("hello"))
			require.Equal(t, "POST hello expect=", body)
			pooled := 0 // what the synchronous client pools after the POST
			if fastForwarding(p) {
				// The fast forward sends a Content-Length body on the synchronous
				// client; Expect goes to net/http (the fast path hands it off).
				pooled = 1
			} else {
				require.Equal(t, 1, transportCount(p))
			}
			require.Equal(t, pooled, h1Pooled(p))
			_, body = do(t, c, "PUT", "http://h1.test/", hdr("Expect", "100-continue"), strings.NewReader("hi"))
			require.Equal(t, "PUT hi expect=100-continue", body)
			_, body = do(t, c, "GET", "http://h1.test/", hdr("Expect", "100-continue"), nil)
			require.Equal(t, "GET  expect=100-continue", body)
			require.Equal(t, pooled, h1Pooled(p), "none of the Expect ones took the synchronous client")
			_, body = do(t, c, "GET", "http://h1.test/", nil, nil)
			require.Equal(t, "GET  expect=", body)
			require.Equal(t, 1, h1Pooled(p))
		})
	}
}

// TestH1ClientRetryOtherTarget: a refused connect on the synchronous
// client is retried on the other host, and the refusing host is avoided
// afterwards.
func TestH1ClientRetryOtherTarget(t *testing.T) {
	lp := newListenerPool(t)
	port := lp.port(t)
	be := echoBackend(t, "up")
	r := NewRoute("lb").Ports(port).Domains("lb.test").
		Target(Target{Host: StringList{"127.0.0.2", "127.0.0.1"}, Port: TargetPort(be.Listener.Addr().(*net.TCPAddr).Port)}).Route()
	var mu sync.Mutex
	var dialed []string
	dialer := func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dialed = append(dialed, addr)
		mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	p := startTestProxy(t, lp, Options{Routes: []Route{r}, Dial: dialer})
	c, _ := proxyClient(t, port, nil, false)
	for range 6 {
		require.Equal(t, "up", getEcho(t, c, "GET", "http://lb.test/", nil).Backend)
	}
	require.Equal(t, 0, transportCount(p))
	require.Equal(t, int64(1), be.conns.Load())
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, dialed, 2, "%v", dialed)
	require.Contains(t, dialed, be.addr())
	require.Contains(t, dialed, strings.Replace(be.addr(), "127.0.0.1", "127.0.0.2", 1), "the refusing host was tried")
}

// TestH1ClientPoolBound: 300 requests at once to one backend leave at
// most 256 connections pooled; the rest are closed.
func TestH1ClientPoolBound(t *testing.T) {
	const n = 300
	var arrived atomic.Int64
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	be := startCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if arrived.Add(1) == n {
			open()
		}
		<-release
		_, _ = io.WriteString(w, "ok")
	}), nil)
	// A request that never arrives (the test failed) must not keep the
	// others' handlers waiting: the server's Close (an earlier cleanup,
	// so run after this one) waits for every handler, and hung the test
	// until -timeout instead of failing it.
	t.Cleanup(open)
	// The backend answers only once all n requests arrived: under -race on a
	// loaded machine that can take longer than the test default of 2 s.
	// The same goes for a client connection's first bytes: with 300 dialled
	// at once in this process (GOMAXPROCS=1, -race, a shared machine), up to
	// 2.5 s passed between a connect and its request reaching the proxy,
	// which closed it as silent after newTestProxy's 2 s InitialDataTimeout
	// (the product default is 120 s).
	p, c := h1Proxy(t, be.addr(), Options{ConnectTimeout: 20 * time.Second, InitialDataTimeout: 20 * time.Second})
	// Every request waits for the last one: the first sent can take longer
	// than proxyClient's 10 s in such a run (passing runs took up to 8 s).
	c.Timeout = 30 * time.Second
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			resp, err := c.Get("http://h1.test/")
			if !assertNoErr(t, err) {
				return
			}
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if string(b) != "ok" {
				t.Errorf("body %q", b)
			}
		})
	}
	wg.Wait()
	require.Equal(t, int64(n), be.conns.Load())
	require.Equal(t, h1client.MaxIdlePerAddr, h1Pooled(p))
	require.Eventually(t, func() bool { return be.open.Load() == h1client.MaxIdlePerAddr }, 3*time.Second, 5*time.Millisecond,
		"backend connections open: %d", be.open.Load())
}

func assertNoErr(t *testing.T, err error) bool {
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

// TestH1ClientStopClosesPool: Stop closes the pooled backend connections
// (internal/h1client's TestIdleExpiry covers expiry and that pooling
// stops).
func TestH1ClientStopClosesPool(t *testing.T) {
	be := echoBackend(t, "b")
	p, c := h1Proxy(t, be.addr(), Options{})
	getEcho(t, c, "GET", "http://h1.test/", nil)
	require.Equal(t, 1, h1Pooled(p))
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	require.NoError(t, p.Stop(ctx))
	require.Equal(t, 0, h1Pooled(p))
}

// TestH1ClientUnsolicitedBytesNeverAnswerTheNextRequest: a backend that
// writes after its response (here a body after a HEAD answer) leaves
// bytes on the pooled connection; they must not be read as the next
// request's response (it could be another client's). The probe before
// every reuse drops the connection, as http.Transport does.
func TestH1ClientUnsolicitedBytesNeverAnswerTheNextRequest(t *testing.T) {
	be := rawHTTPBackend(t, func(c net.Conn, r *http.Request) bool {
		if r.Method == "HEAD" {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
			time.Sleep(20 * time.Millisecond)
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON")
			return true
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal")
		return true
	})
	_, c := h1Proxy(t, be.addr(), Options{})
	do(t, c, "HEAD", "http://h1.test/", nil, nil)
	time.Sleep(100 * time.Millisecond) // the stray response is on the pooled connection
	_, body := do(t, c, "GET", "http://h1.test/victim", nil, nil)
	require.Equal(t, "real", body)
}

// TestRetryPolicyOtherTarget: a request that reached a backend and got no
// response is tried on the next host only if h1client.Replayable says so
// (http.Transport's rule): GET is, PUT and DELETE are not (the first
// attempt may have taken effect), a POST with an Idempotency-Key is.
func TestRetryPolicyOtherTarget(t *testing.T) {
	be := rawHTTPBackend(t, func(net.Conn, *http.Request) bool { return false }) // reads, never answers
	lp := newListenerPool(t)
	port := lp.port(t)
	r := NewRoute("lb").Ports(port).Domains("lb.test").
		Target(Target{Host: StringList{"10.255.0.1", "10.255.0.2"}, Port: TargetPort(be.port)}).Route()
	dialer := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, be.addr()) // both hosts are the one backend
	}
	startTestProxy(t, lp, Options{Routes: []Route{r}, Dial: dialer})
	c, _ := proxyClient(t, port, nil, false)
	for _, tc := range []struct {
		method string
		h      http.Header
		tries  int64
	}{
		{"GET", nil, 2},
		{"HEAD", nil, 2},
		{"PUT", nil, 1},
		{"DELETE", nil, 1},
		{"POST", nil, 1},
		{"POST", hdr("Idempotency-Key", "k1"), 2},
	} {
		before := be.accepts.Load()
		resp, _ := do(t, c, tc.method, "http://lb.test/", tc.h, nil)
		require.Equal(t, http.StatusBadGateway, resp.StatusCode, tc.method)
		require.Equal(t, tc.tries, be.accepts.Load()-before, "%s %v", tc.method, tc.h)
	}
}
