package smartproxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The whole root suite runs on the fast path, the default; with
// SMARTPROXY_TEST_NETHTTP=1 (newTestProxy) on net/http's server, and its
// key HTTP tests do in every run (TestHTTPNetHTTPSuite). The tests below
// are the fast path's own (startFastTestProxy: on it under either).

// TestHTTPFastPathKeepAlive: keep-alive and pipelined requests with and
// without bodies are served over one connection on the fast path (a bare
// LF head, which net/http takes, is refused there: proof that it ran),
// with X-Forwarded-For set and a chunked upload ending the connection.
func TestHTTPFastPathKeepAlive(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, r.Method+" "+r.RequestURI+" "+r.Header.Get("X-Forwarded-For")+" "+string(b))
	}))
	startFastTestProxy(t, lp, Options{Routes: []Route{httpRouteOn("r", port, be.addr(), "a.test")}})

	got := rawExchange(t, port, "GET /1 HTTP/1.1\r\nHost: a.test\r\n\r\n"+
		"POST /2 HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello"+
		"GET /3 HTTP/1.1\r\nHost: a.test\r\n\r\n"+
		"POST /4 HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"+
		"GET /never HTTP/1.1\r\nHost: a.test\r\n\r\n")
	for _, want := range []string{"GET /1 127.0.0.1 ", "POST /2 127.0.0.1 hello", "GET /3 127.0.0.1 ", "POST /4 127.0.0.1 abc"} {
		require.Contains(t, got, want)
	}
	require.Equal(t, 4, strings.Count(got, "HTTP/1.1 200 OK"), "got %q", got)
	require.NotContains(t, got, "/never")

	got = rawExchange(t, port, "GET / HTTP/1.1\nHost: a.test\n\n")
	require.True(t, strings.HasPrefix(got, "HTTP/1.1 400 "), "bare LF on the fast path: %q", got)
}

// TestHTTPFastPathDefault: Options' zero value and a config without
// httpFastPath (or with true) serve HTTP/1.1 on the fast path; false, or
// SMARTPROXY_TEST_NETHTTP=1 in the tests, on net/http's server. A
// bare-LF head tells them apart: net/http takes it, the fast path
// refuses it.
func TestHTTPFastPathDefault(t *testing.T) {
	t.Parallel()
	for in, disable := range map[string]bool{``: false, `"httpFastPath": true,`: false, `"httpFastPath": false,`: true} {
		cfg, err := ParseConfig([]byte(`{`+in+` "routes": []}`), FormatJSON)
		require.NoError(t, err, in)
		require.Equal(t, disable, cfg.Options().DisableHTTPFastPath, in)
	}
	nethttp := os.Getenv("SMARTPROXY_TEST_NETHTTP") == "1"
	lp := newListenerPool(t)
	port := lp.port(t)
	be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	startTestProxy(t, lp, Options{Routes: []Route{httpRouteOn("r", port, be.addr(), "a.test")}})
	got := rawExchange(t, port, "GET / HTTP/1.1\nHost: a.test\nConnection: close\n\n")
	if nethttp {
		require.True(t, strings.HasPrefix(got, "HTTP/1.1 200 "), "net/http takes a bare-LF head: %q", got)
	} else {
		require.True(t, strings.HasPrefix(got, "HTTP/1.1 400 "), "the default, the fast path, refuses a bare-LF head: %q", got)
	}
}

// TestHTTPFastPathHandsOff: what the fast path does not serve goes to
// net/http with the bytes already read: h2c with prior knowledge, an
// HTTP/1.0 request, and a request for a socket-handler route after a
// fast one on the same connection (the handler reads the request as the
// client sent it).
func TestHTTPFastPathHandsOff(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := startH2CEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto+" "+r.RequestURI)
	}))
	handler := NewRoute("handler").Ports(port).Domains("a.test").Path("/handler").
		HandleWith(requestLineHandler).Route()
	fwd := NewRoute("fwd").Ports(port).Domains("a.test").ForwardTo(be.addr()).
		BackendProtocol(BackendH2C).Route()
	startFastTestProxy(t, lp, Options{Routes: []Route{handler, fwd}})

	h2c, _ := proxyClient(t, port, nil, false)
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	h2c.Transport.(*http.Transport).Protocols = &protos
	res, body := do(t, h2c, "GET", "http://a.test/h2c", nil, nil)
	require.Equal(t, 200, res.StatusCode)
	require.Equal(t, "HTTP/2.0 /h2c", body)

	got := rawExchange(t, port, "GET /fast HTTP/1.1\r\nHost: a.test\r\n\r\nGET /handler HTTP/1.1\r\nHost: a.test\r\n\r\n")
	require.Contains(t, got, "HTTP/2.0 /fast")
	require.Contains(t, got, "GET /handler HTTP/1.1")

	got = rawExchange(t, port, "GET /old HTTP/1.0\r\nHost: a.test\r\n\r\n")
	require.Contains(t, got, "HTTP/2.0 /old")
}

// rawExchange sends raw on a new connection to port and returns what comes
// back until the proxy closes it.
func rawExchange(t *testing.T, port int, raw string) string {
	t.Helper()
	c := dial(t, port)
	_, err := io.WriteString(c, raw)
	require.NoError(t, err)
	got, err := readAllUntilClose(t, c)
	require.NoError(t, err)
	return got
}

// slowMatcher is the default route table, slowed down for requests to
// one path: decide still runs when the fast path's watch of the client
// connection starts (fastWatchAfter).
type slowMatcher struct {
	RouteMatcher
	path string
}

func (m slowMatcher) Match(q *MatchQuery) *Route {
	if q.Request != nil && q.Request.URL.Path == m.path {
		time.Sleep(3 * fastWatchAfter)
	}
	return m.RouteMatcher.Match(q)
}

// TestHTTPFastPathHandOffAfterWatch: a request handed to net/http for
// its socket-handler route reaches the handler whole even when the
// watch of the client connection read pipelined bytes while decide ran
// (they go behind the request, not in place of it).
func TestHTTPFastPathHandOffAfterWatch(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	handler := NewRoute("handler").Ports(port).Domains("a.test").Path("/handler").
		HandleWith(requestLineHandler).Route()
	startFastTestProxy(t, lp, Options{Routes: []Route{handler},
		Matcher: func(routes []*Route) (RouteMatcher, error) {
			m, err := NewRouteTable(routes)
			return slowMatcher{m, "/handler"}, err
		}})

	c := dial(t, port)
	_, err := io.WriteString(c, "GET /handler HTTP/1.1\r\nHost: a.test\r\n\r\n")
	require.NoError(t, err)
	time.Sleep(3 * fastWatchAfter / 2) // the watch is reading
	_, err = io.WriteString(c, "GET /next HTTP/1.1\r\nHost: a.test\r\n\r\n")
	require.NoError(t, err)
	got, err := readAllUntilClose(t, c)
	require.NoError(t, err)
	require.Contains(t, got, "GET /handler HTTP/1.1")
}

// netHTTPSuite are the HTTP layer's tests that TestHTTPNetHTTPSuite
// runs again on net/http's server: routing, checks, framing, handovers,
// streaming and TLS, each a few hundred milliseconds at most.
var netHTTPSuite = []string{
	"TestHTTPRoutingTable", "TestHTTPForwardedHeaders", "TestHTTPHeaderTemplatesAndRewrite",
	"TestHTTPRedirect", "TestHTTPBackendErrors", "TestHTTPRetryOtherTarget", "TestHTTPTargetSubMatch",
	"TestHTTPKeepAliveReuse", "TestHTTPHandoverToSocketHandler", "TestHTTPHandoverOneRequest",
	"TestHTTPHandoverUpgrade", "TestHTTPHandoverCountsBytesOnce", "TestHTTPh2c",
	"TestHTTPStopClosesIdleKeepAlive", "TestHTTPStalledRequestHead", "TestHTTPBackendBreaksOff",
	"TestHTTPRequestTrailers", "TestHTTPMalformedChunkedBody", "TestHTTPContentLengthAndChunked",
	"TestHTTPServerSentEventsFlushAtOnce", "TestHTTPWebSocketDisabled", "TestHTTPPathAmbiguity",
	"TestHTTPChecksNotBypassedThroughRawFallback", "TestHTTPRouteConnectionRateLimitKeepAliveSwitch",
	"TestHTTPSTerminateH2AndHTTP1", "TestHTTPSTerminateWithoutALPNIsSniffed", "TestHTTPSReencrypt",
	"TestSecurityE2EBasicAuth", "TestSecurityE2EJWTAuth", "TestSecurityE2EHTTPRateLimit",
	"TestSecurityE2EKeepAliveRechecks", "TestSecurityE2EPathRouteChecksPerRequest",
	"TestProxyProtocolHTTPHeaders",
}

// TestHTTPNetHTTPSuite runs netHTTPSuite on net/http's server
// (DisableHTTPFastPath) in every `go test` run, so that the stack behind
// Options.DisableHTTPFastPath stays tested where the whole suite is not
// run with SMARTPROXY_TEST_NETHTTP=1 (.ci/run does, for the HTTP tests):
// the test binary again, with that variable set, on those tests only.
func TestHTTPNetHTTPSuite(t *testing.T) {
	if os.Getenv("SMARTPROXY_TEST_NETHTTP") == "1" {
		t.Skip("the whole suite runs on net/http already")
	}
	t.Parallel()
	exe, err := os.Executable()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-test.run=^("+strings.Join(netHTTPSuite, "|")+")$",
		"-test.count=1", "-test.v", "-test.timeout=3m")
	cmd.Env = append(os.Environ(), "SMARTPROXY_TEST_NETHTTP=1")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "the net/http run failed:\n%s", out)
	for _, name := range netHTTPSuite { // a renamed test would pass unrun
		require.Regexp(t, `(?m)^--- (PASS|SKIP): `+name+` `, string(out))
	}
}

// TestHTTPFastPathIdleBufferShrinks: a connection that once carried a
// large head waits for its next request with the usual head buffer, not
// the grown one (an idle keep-alive connection holds fastHeadBuf).
func TestHTTPFastPathIdleBufferShrinks(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	// The goroutine path's buffers (the event loop gives an idle connection's back to its
	// spares: internal/evloop's tests).
	p := startFastTestProxy(t, lp, Options{Engine: EngineGoroutines, Routes: []Route{httpRouteOn("r", port, be.addr(), "a.test")}})

	c := dial(t, port)
	big := "GET / HTTP/1.1\r\nHost: a.test\r\nX-Big: " + strings.Repeat("a", 40<<10) + "\r\n\r\n"
	_, err := io.WriteString(c, big)
	require.NoError(t, err)
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	require.Equal(t, 200, res.StatusCode)
	// The connection's buffer is read only while it waits for the next
	// request (idle): then nothing else touches it.
	var held []int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		held = held[:0]
		p.http.fastConns.Range(func(k, _ any) bool {
			if fc := k.(*fastConn); fc.idle.Load() {
				held = append(held, len(fc.buf))
			}
			return true
		})
		if len(held) == 1 {
			break
		}
	}
	require.Equal(t, []int{fastHeadBuf}, held)
}

// TestHTTPFastPathPrefaceAfterRequest: the HTTP/2 preface after an
// HTTP/1.1 request is refused with 400 on the fast path as on net/http,
// not handed over as if it began the connection (net/http would then
// switch to HTTP/2 mid-stream).
func TestHTTPFastPathPrefaceAfterRequest(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	for _, fast := range []bool{false, true} {
		port := port
		if fast {
			port = lp.port(t)
		}
		startStackTestProxy(t, lp, Options{Routes: []Route{httpRouteOn("r", port, be.addr(), "a.test")}}, fast)
		got := rawExchange(t, port, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"+
			"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
		require.Equal(t, 1, strings.Count(got, "HTTP/1.1 200 OK"), "fast %v: %q", fast, got)
		require.Contains(t, got, "HTTP/1.1 400 ", "fast %v: %q", fast, got)
	}
}

// requestLineHandler is a socket handler that answers the request line
// it reads, and closes.
func requestLineHandler(_ context.Context, c net.Conn, _ *RouteContext) error {
	buf := make([]byte, 4096)
	n, _ := c.Read(buf)
	line, _, _ := strings.Cut(string(buf[:n]), "\r\n")
	_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(line))+"\r\nConnection: close\r\n\r\n"+line)
	return err
}

// TestFastBodyEndsWithHandler: an h2c backend answers before it took the
// request body, leaving the transport's body writer inside the body's
// Read, waiting for the client's next bytes. Once the response is done,
// only the fast path may read the connection (under -race, a second
// reader is a data race): the rest of the body and a request pipelined
// after it are either read by the fast path (the request answered) or
// the connection ends, and the backend never gets a request the proxy
// did not answer.
func TestFastBodyEndsWithHandler(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	seen := make(chan string, 4)
	be := startH2CEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Method + " " + r.URL.Path
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusForbidden) // the body left unread
			return
		}
		_, _ = io.WriteString(w, "second")
	}))
	r := httpRouteOn("r", port, be.addr(), "a.test")
	r.Action.Options = &ActionOptions{BackendProtocol: "h2c"}
	startFastTestProxy(t, lp, Options{Routes: []Route{r}})
	c := dial(t, port)
	_, err := io.WriteString(c, "POST /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100000\r\n\r\n0123456789")
	require.NoError(t, err)
	br := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Equal(t, "POST /first", <-seen)
	time.Sleep(100 * time.Millisecond) // the fast path is past the response
	_, _ = io.WriteString(c, strings.Repeat("x", 100000-10)+"GET /second HTTP/1.1\r\nHost: a.test\r\n\r\n")
	if resp, err = http.ReadResponse(br, nil); err == nil {
		b, _ := io.ReadAll(resp.Body)
		require.Equal(t, "second", string(b))
		require.Equal(t, "GET /second", <-seen)
	} else {
		require.False(t, isTimeout(err), "the connection must end, not stall: %v", err)
		require.Empty(t, seen, "the backend got a request the proxy did not answer")
	}
}

// TestUserAgentsToH2Backend: an HTTP/2 backend gets the first User-Agent
// only, every time (Go's HTTP/2 encoder sends one value per spelling, in
// map order: keeping the others under another spelling, as for HTTP/1.1
// backends, sent them in random order).
func TestUserAgentsToH2Backend(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := startH2CEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto+" "+strings.Join(r.Header.Values("User-Agent"), "|"))
	}))
	r := httpRouteOn("r", port, be.addr(), "a.test")
	r.Action.Options = &ActionOptions{BackendProtocol: "h2c"}
	startTestProxy(t, lp, Options{Routes: []Route{r}})
	c := dial(t, port)
	br := bufio.NewReader(c)
	for range 20 {
		_, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.test\r\nUser-Agent: a\r\nUser-Agent: b\r\n\r\n")
		require.NoError(t, err)
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		require.Equal(t, "HTTP/2.0 a", string(body))
	}
}
