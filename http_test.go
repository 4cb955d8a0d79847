package smartproxy

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHTTPRoutingTable(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := map[string]*echoServer{}
	for _, n := range []string{"site", "api", "user", "exact", "hdr", "post", "wild", "other"} {
		be[n] = echoBackend(t, n)
	}
	with := func(r Route, f func(*Route)) Route { f(&r); return r }
	routes := []Route{
		httpRouteOn("site", port, be["site"].addr(), "a.test"),
		with(httpRouteOn("api", port, be["api"].addr(), "a.test"), func(r *Route) { r.Match.Path = "/api/*" }),
		with(httpRouteOn("user", port, be["user"].addr(), "a.test"), func(r *Route) { r.Match.Path = "/users/:id" }),
		with(httpRouteOn("exact", port, be["exact"].addr(), "a.test"), func(r *Route) { r.Match.Path = "/api/exact" }),
		with(httpRouteOn("hdr", port, be["hdr"].addr(), "a.test"), func(r *Route) {
			r.Match.Path = "/h"
			r.Match.Headers = map[string]string{"x-env": "prod*", "X-Team": "core"}
		}),
		with(httpRouteOn("post", port, be["post"].addr(), "a.test"), func(r *Route) { r.Match.Path, r.Match.Method = "/m", []string{"post"} }),
		httpRouteOn("wild", port, be["wild"].addr(), "*.test"),
		with(httpRouteOn("other", port, be["other"].addr(), "b.test"), func(r *Route) { r.Priority = -1 }),
	}
	startTestProxy(t, lp, Options{Routes: routes})
	c, _ := proxyClient(t, port, nil, false)

	tests := []struct {
		method, url string
		header      http.Header
		want        string
	}{
		{"GET", "http://a.test/", nil, "site"},
		{"GET", "http://A.TEST:8080/index.html", nil, "site"}, // port stripped, case folded
		{"GET", "http://a.test/api", nil, "api"},
		{"GET", "http://a.test/api/v1/users", nil, "api"},
		{"GET", "http://a.test/api/exact", nil, "exact"}, // longer literal path wins
		{"GET", "http://a.test/api/exact/more", nil, "api"},
		{"GET", "http://a.test/users/42", nil, "user"},
		{"GET", "http://a.test/users/42/x", nil, "site"},
		{"GET", "http://a.test/public/../api/x", nil, "api"}, // matched as the backend will see it
		{"GET", "http://a.test/h", hdr("X-Env", "production", "X-Team", "core"), "hdr"},
		{"GET", "http://a.test/h", hdr("X-Env", "staging", "X-Team", "core"), "site"},
		{"GET", "http://a.test/h", hdr("X-Env", "prod"), "site"},
		{"POST", "http://a.test/m", nil, "post"},
		{"GET", "http://a.test/m", nil, "site"},
		{"GET", "http://x.test/", nil, "wild"},
		{"GET", "http://b.test/", nil, "wild"}, // priority beats an exact domain
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.url, func(t *testing.T) {
			e := getEcho(t, c, tc.method, tc.url, tc.header)
			require.Equal(t, tc.want, e.Backend)
			require.Equal(t, be[tc.want].addr(), e.Host, "Host is rewritten to the target")
		})
	}

	resp, body := do(t, c, "GET", "http://unknown.example/", nil, nil)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.Contains(t, body, "no route")
	require.Less(t, len(body), 100)
}

func TestHTTPForwardedHeaders(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := echoBackend(t, "b")
	keep := httpRouteOn("keep", port, be.addr(), "keep.test")
	no := false
	keep.Action.Options = &ActionOptions{RewriteHostHeader: &no}
	startTestProxy(t, lp, Options{Routes: []Route{httpRouteOn("rw", port, be.addr(), "rw.test"), keep}})
	c, _ := proxyClient(t, port, nil, false)

	spoof := hdr("X-Forwarded-For", "6.6.6.6", "X-Forwarded-Host", "evil", "X-Forwarded-Proto", "https", "Forwarded", "for=6.6.6.6",
		"X-Real-IP", "6.6.6.6")
	e := getEcho(t, c, "GET", "http://rw.test:8080/p", spoof)
	require.Equal(t, []string{"127.0.0.1"}, e.Header["X-Forwarded-For"], "the client's own X-Forwarded-For is replaced")
	require.Equal(t, []string{"127.0.0.1"}, e.Header["X-Real-Ip"], "the client's own X-Real-IP is replaced")
	require.Equal(t, []string{"rw.test:8080"}, e.Header["X-Forwarded-Host"])
	require.Equal(t, []string{"http"}, e.Header["X-Forwarded-Proto"])
	require.Equal(t, []string{`for=127.0.0.1;host="rw.test:8080";proto=http`}, e.Header["Forwarded"])
	require.Equal(t, be.addr(), e.Host)

	e = getEcho(t, c, "GET", "http://keep.test/p", nil)
	require.Equal(t, "keep.test", e.Host, "rewriteHostHeader false keeps the client's Host")
}

func TestHTTPHeaderTemplatesAndRewrite(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := echoBackend(t, "b")
	r := httpRouteOn("tmpl", port, be.addr(), "t.test")
	r.Action.Headers = &HeaderActions{
		Request: map[string]string{
			"X-Client":  "{clientIp}",
			"X-Where":   "{routeName}@{domain}:{port}{path}?{query}",
			"X-Agent":   "ua={headers.user-agent}",
			"X-Remove":  "",
			"X-Unknown": "{nope}",
			"X-Conn":    "{connectionId}",
		},
		Response: map[string]string{"X-Served-By": "{routeName}", "Server": "", "X-Req-Path": "{path}"},
	}
	rw := httpRouteOn("rewrite", port, be.addr(), "rw.test")
	rw.Action.Rewrite = &URLRewrite{Pattern: `^/old/([^?]*)`, Target: "/new/$1/{domain}"}
	startTestProxy(t, lp, Options{Routes: []Route{r, rw}})
	c, _ := proxyClient(t, port, nil, false)

	resp, body := do(t, c, "GET", "http://t.test/a/b?x=1", hdr("User-Agent", "tester", "X-Remove", "bye"), nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "tmpl", resp.Header.Get("X-Served-By"))
	require.Equal(t, "/a/b", resp.Header.Get("X-Req-Path"))
	require.Empty(t, resp.Header.Values("Server"))
	var e echoed
	require.NoError(t, json.Unmarshal([]byte(body), &e))
	require.Equal(t, "127.0.0.1", e.Header.Get("X-Client"))
	require.Equal(t, fmt.Sprintf("tmpl@t.test:%d/a/b?x=1", port), e.Header.Get("X-Where"))
	require.Equal(t, "ua=tester", e.Header.Get("X-Agent"))
	require.Empty(t, e.Header.Values("X-Remove"))
	require.Equal(t, "{nope}", e.Header.Get("X-Unknown"))
	require.NotEmpty(t, e.Header.Get("X-Conn"))

	e = getEcho(t, c, "GET", "http://rw.test/old/x/y?q=2", nil)
	require.Equal(t, "/new/x/y/rw.test", e.Path)
	require.Equal(t, "q=2", e.Query)
	e = getEcho(t, c, "GET", "http://rw.test/keep", nil)
	require.Equal(t, "/keep", e.Path)
}

func TestHTTPRedirect(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	red := HTTPToHTTPSRedirectRoute("redirect", []string{"*.test"})
	red.Match.Ports = Ports(port)
	temp := Route{Name: "temp", Match: RouteMatch{Ports: Ports(port), Domains: StringList{"t.example.com"}},
		Action: RouteAction{Type: ActionForward, Redirect: &Redirect{To: "https://elsewhere.example.com/x{path}?src={domain}", Status: 307}}}
	startTestProxy(t, lp, Options{Routes: []Route{red, temp}})
	c, _ := proxyClient(t, port, nil, false)

	resp, _ := do(t, c, "GET", "http://a.test:8080/some/path?q=1", nil, nil)
	require.Equal(t, http.StatusMovedPermanently, resp.StatusCode)
	require.Equal(t, "https://a.test/some/path?q=1", resp.Header.Get("Location"))
	resp, _ = do(t, c, "POST", "http://t.example.com/p", nil, strings.NewReader("x"))
	require.Equal(t, http.StatusTemporaryRedirect, resp.StatusCode)
	require.Equal(t, "https://elsewhere.example.com/x/p?src=t.example.com", resp.Header.Get("Location"))
}

func TestHTTPBackendErrors(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	release := make(chan struct{})
	slow := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer close(release)
	startTestProxy(t, lp, Options{
		ConnectTimeout: 300 * time.Millisecond,
		Routes: []Route{
			httpRouteOn("refused", port, fmt.Sprintf("127.0.0.1:%d", closedPort(t)), "refused.test"),
			httpRouteOn("slow", port, slow.addr(), "slow.test"),
		},
	})
	c, _ := proxyClient(t, port, nil, false)

	resp, body := do(t, c, "GET", "http://refused.test/", nil, nil)
	require.Equal(t, http.StatusBadGateway, resp.StatusCode)
	require.Equal(t, "502 Bad Gateway\n", body)

	start := time.Now()
	resp, body = do(t, c, "GET", "http://slow.test/", nil, nil)
	require.Equal(t, http.StatusGatewayTimeout, resp.StatusCode)
	require.Equal(t, "504 Gateway Timeout\n", body)
	require.Less(t, time.Since(start), 3*time.Second)
}

func TestHTTPRetryOtherTarget(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := echoBackend(t, "up")
	// Two hosts on one port: the backend listens on 127.0.0.1 only, so
	// 127.0.0.2 refuses. A refused connect sent nothing: even a POST with
	// a body is retried on the other host.
	r := NewRoute("lb").Ports(port).Domains("lb.test").
		Target(Target{Host: StringList{"127.0.0.2", "127.0.0.1"}, Port: TargetPort(be.Listener.Addr().(*net.TCPAddr).Port)}).Route()
	startTestProxy(t, lp, Options{Routes: []Route{r}})
	c, _ := proxyClient(t, port, nil, false)
	for range 4 {
		resp, body := do(t, c, "POST", "http://lb.test/", nil, strings.NewReader("body"))
		require.Equal(t, http.StatusOK, resp.StatusCode, body)
	}
}

func TestHTTPTargetSubMatch(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	def, api, admin := echoBackend(t, "def"), echoBackend(t, "api"), echoBackend(t, "admin")
	tgt := func(b *echoServer, prio int, m *TargetMatch) Target {
		tg, err := targetFromAddrs(b.addr())
		require.NoError(t, err)
		tg.Priority, tg.Match = prio, m
		return tg
	}
	r := Route{Name: "sub", Match: RouteMatch{Ports: Ports(port), Domains: StringList{"s.test"}}, Action: RouteAction{Type: ActionForward,
		Targets: []Target{
			tgt(def, 0, nil),
			tgt(api, 5, &TargetMatch{Path: "/api/*", Method: []string{"GET"}}),
			tgt(admin, 9, &TargetMatch{Headers: map[string]string{"X-Admin": "yes"}, Ports: []int{port}}),
		}}}
	startTestProxy(t, lp, Options{Routes: []Route{r}})
	c, _ := proxyClient(t, port, nil, false)
	require.Equal(t, "def", getEcho(t, c, "GET", "http://s.test/", nil).Backend)
	require.Equal(t, "api", getEcho(t, c, "GET", "http://s.test/api/x", nil).Backend)
	require.Equal(t, "def", getEcho(t, c, "POST", "http://s.test/api/x", nil).Backend)
	require.Equal(t, "admin", getEcho(t, c, "GET", "http://s.test/api/x", hdr("X-Admin", "yes")).Backend)
}

func TestHTTPKeepAliveReuse(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := echoBackend(t, "b")
	p := startTestProxy(t, lp, Options{Routes: []Route{httpRouteOn("ka", port, be.addr(), "ka.test")}})
	c, dials := proxyClient(t, port, nil, false)
	for range 50 {
		getEcho(t, c, "GET", "http://ka.test/", nil)
	}
	require.Equal(t, int64(1), dials.Load(), "one client connection")
	require.Equal(t, int64(1), be.conns.Load(), "one pooled backend connection")
	m := p.Metrics()
	require.Equal(t, 1, m.Active)
	c.Transport.(*http.Transport).CloseIdleConnections()
	requireNoRecords(t, p)
}

// startHandoverProxy serves HTTP route web.test next to a catch-all
// socket-handler route answering 418, on one port.
func startHandoverProxy(t *testing.T) (*Proxy, int) {
	t.Helper()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := echoBackend(t, "b")
	catchAll := SocketHandlerRoute("catch", Ports(port), nil, HTTPResponseHandler(http.StatusTeapot, nil, "from the handler"))
	catchAll.Priority = -1
	return startTestProxy(t, lp, Options{Routes: []Route{httpRouteOn("web", port, be.addr(), "web.test"), catchAll}}), port
}

func TestHTTPHandoverToSocketHandler(t *testing.T) {
	t.Parallel()
	_, port := startHandoverProxy(t)
	c, _ := proxyClient(t, port, nil, false)
	require.Equal(t, "b", getEcho(t, c, "GET", "http://web.test/", nil).Backend)
	resp, body := do(t, c, "GET", "http://other.test/x", nil, nil)
	require.Equal(t, http.StatusTeapot, resp.StatusCode)
	require.Equal(t, "from the handler", body)
}

func TestHTTPh2c(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := echoBackend(t, "b")
	startTestProxy(t, lp, Options{Routes: []Route{httpRouteOn("h2c", port, be.addr(), "h2c.test")}})
	c, _ := proxyClient(t, port, nil, false)
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	c.Transport.(*http.Transport).Protocols = &protos
	resp, body := do(t, c, "GET", "http://h2c.test/", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	require.Equal(t, "HTTP/2.0", resp.Proto)
}

func TestHTTPStopClosesIdleKeepAlive(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := echoBackend(t, "b")
	p := startTestProxy(t, lp, Options{GracefulShutdownTimeout: 10 * time.Second,
		Routes: []Route{httpRouteOn("ka", port, be.addr(), "ka.test")}})
	c, _ := proxyClient(t, port, nil, false)
	getEcho(t, c, "GET", "http://ka.test/", nil) // leaves an idle keep-alive connection
	require.Equal(t, 1, p.Metrics().Active)
	start := time.Now()
	require.NoError(t, p.Stop(t.Context()))
	require.Less(t, time.Since(start), 2*time.Second, "idle keep-alive connections do not hold up Stop")
	require.Zero(t, p.Metrics().Active)
}

// A request head that starts and then stalls is cut after the head
// timeout: InitialDataTimeout when shorter than 30 s (here), 30 s at most
// (the 120 s default would let a trickling client hold the connection
// for two minutes).
func TestHTTPStalledRequestHead(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := echoBackend(t, "b")
	p := startTestProxy(t, lp, Options{
		Routes:             []Route{httpRouteOn("r", port, be.addr(), "r.test")},
		InitialDataTimeout: 300 * time.Millisecond,
	})
	require.Equal(t, 300*time.Millisecond, p.http.headTimeout())
	c := dial(t, port)
	_, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: r.test\r\nX-Slow: "))
	require.NoError(t, err)
	el, _ := awaitClose(t, c, 5*time.Second)
	require.Less(t, el, 3*time.Second, "a stalled head must be cut after the head timeout")

	p2 := newTestProxy(t, nil, Options{InitialDataTimeout: DefaultInitialDataTimeout})
	require.Equal(t, 30*time.Second, p2.http.headTimeout(), "the default InitialDataTimeout is capped")
	require.NotNil(t, p2.http.listener()) // starts the server
	p2.http.mu.Lock()
	defer p2.http.mu.Unlock()
	require.Equal(t, 30*time.Second, p2.http.srv.ReadHeaderTimeout, "the server uses the capped timeout")
}

// A request handed over to a socket handler counts the client's bytes
// once: the head the HTTP server read is replayed to the handler, and the
// replay is not traffic.
func TestHTTPHandoverCountsBytesOnce(t *testing.T) {
	t.Parallel()
	p, port := startHandoverProxy(t)
	c := dial(t, port)
	req := "GET /x HTTP/1.1\r\nhost: other.test\r\nx-a:   spaced   \r\n\r\n"
	_, err := c.Write([]byte(req))
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	resp, err := io.ReadAll(c)
	require.NoError(t, err)
	require.Contains(t, string(resp), "418")
	requireNoRecords(t, p)
	require.EqualValues(t, len(req), p.Metrics().BytesIn, "bytes in = what the client sent")
}
