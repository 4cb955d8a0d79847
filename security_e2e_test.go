package smartproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
)

// End-to-end tests of route security over real loopback sockets: every
// kind of refusal on every path a connection can take to a route's
// action, each proving the backend (or socket handler) never saw the
// refused connection or request, and that Metrics counts it by reason.

const (
	e2eRefused = "127.0.0.2" // the client address the tests refuse
	e2eOther   = "127.0.0.3" // another client, which must stay unaffected
	e2eDomain  = "sec.test"  // the route's domain (testCert covers *.test)
)

// e2ePath is one way a connection reaches a route's action.
type e2ePath string

const (
	pathTCP         e2ePath = "tcp-forward"       // plain TCP, forwarded
	pathPassthrough e2ePath = "tls-passthrough"   // routed by SNI, TLS untouched
	pathTermTCP     e2ePath = "tls-terminate-tcp" // terminated, the stream is not HTTP
	pathTermHTTP    e2ePath = "tls-terminate-http"
	pathHTTP        e2ePath = "http"
	pathHandler     e2ePath = "socket-handler"      // raw TCP to a socket handler
	pathHandover    e2ePath = "http-socket-handler" // HTTP request handed over to a socket handler
)

var (
	e2eAllPaths  = []e2ePath{pathTCP, pathPassthrough, pathTermTCP, pathTermHTTP, pathHTTP, pathHandler, pathHandover}
	e2eHTTPPaths = []e2ePath{pathHTTP, pathTermHTTP, pathHandover}
)

func (k e2ePath) tls() bool { return k == pathPassthrough || k == pathTermTCP || k == pathTermHTTP }

func (k e2ePath) http() bool { return k == pathHTTP || k == pathTermHTTP || k == pathHandover }

// refusesWithStatus reports whether the path refuses a connection-level
// check (IP lists, route limits) with an HTTP status: plain HTTP checks
// them per request; TLS paths refuse before the handshake with an alert.
func (k e2ePath) refusesWithStatus() bool { return k == pathHTTP || k == pathHandover }

// e2eEnv is one proxy with the route under test ("sec") on one port.
type e2eEnv struct {
	t    *testing.T
	path e2ePath
	port int
	p    *Proxy
	// hits counts what reached the route's action: backend accepts on the
	// TCP paths, requests at the backend on the HTTP paths (the proxy pools
	// backend connections), socket handler calls.
	hits func() int64
	// paths are the request paths the HTTP backend or handler served.
	paths chan string
}

// newE2E starts a proxy whose route "sec" (path kind, security sec) runs
// on a fresh port; opts carries defaults and proxy-wide limits.
func newE2E(t *testing.T, path e2ePath, sec *RouteSecurity, opts Options) *e2eEnv {
	t.Helper()
	lp := newListenerPool(t)
	env := &e2eEnv{t: t, path: path, port: lp.port(t), paths: make(chan string, 100)}
	var calls atomic.Int64
	var routes []Route
	var r Route
	switch path {
	case pathTCP:
		be := startBackend(t, "127.0.0.1:0", echo)
		env.hits = be.accepts.Load
		r = plainRoute("sec", env.port, be.addr())
	case pathPassthrough:
		be := startBackend(t, "127.0.0.1:0", tlsGreeter("be"))
		env.hits = be.accepts.Load
		r = NewRoute("sec").Ports(env.port).Domains(e2eDomain).TLSPassthrough().ForwardTo(be.addr()).Route()
	case pathTermTCP:
		be := startBackend(t, "127.0.0.1:0", echo)
		env.hits = be.accepts.Load
		r = NewRoute("sec").Ports(env.port).Domains(e2eDomain).ForwardTo(be.addr()).Route()
		r.Action.TLS = &RouteTLS{Mode: TLSTerminate}
	case pathTermHTTP, pathHTTP:
		be := okBackend(t, env.paths)
		env.hits = be.requests.Load
		if path == pathHTTP {
			r = httpRouteOn("sec", env.port, be.addr(), e2eDomain)
		} else {
			r = terminateRouteOn("sec", env.port, be.addr(), e2eDomain)
		}
	case pathHandler:
		env.hits = calls.Load
		r = NewRoute("sec").Ports(env.port).HandleWith(func(_ context.Context, c net.Conn, _ *RouteContext) error {
			calls.Add(1)
			echo(c)
			return nil
		}).Route()
	case pathHandover:
		// An HTTP route on the port makes it an HTTP port; requests for
		// other hosts go to the catch-all socket handler under test.
		web := echoBackend(t, "web")
		routes = append(routes, httpRouteOn("web", env.port, web.addr(), "web.test"))
		env.hits = calls.Load
		answer := HTTPResponseHandler(http.StatusOK, nil, "handler")
		r = NewRoute("sec").Ports(env.port).HandleWith(func(ctx context.Context, c net.Conn, rc *RouteContext) error {
			calls.Add(1)
			return answer(ctx, c, rc)
		}).Route()
	default:
		t.Fatalf("unknown path %q", path)
	}
	r.Security = sec
	opts.Routes = append(routes, r)
	if opts.Certificates == nil {
		opts.Certificates = testCertStore(t)
	}
	env.p = startTestProxy(t, lp, opts)
	return env
}

// e2eResult is how one attempt went.
type e2eResult struct {
	ok     bool // the route's action answered (HTTP: 200)
	status int  // the HTTP status, 0 when no response came
	header http.Header
	body   string
	err    error    // why an attempt without a response failed
	conn   net.Conn // the client's connection, open unless the proxy closed it
	http   *rawHTTP // on HTTP paths, for more requests on the connection
}

// dial connects from ip and, on the TLS paths, handshakes; err is the
// handshake's error.
func (env *e2eEnv) dial(ip string) (net.Conn, error) {
	env.t.Helper()
	raw := dialFrom(env.t, ip, env.port)
	require.NoError(env.t, raw.SetDeadline(time.Now().Add(5*time.Second)))
	if !env.path.tls() {
		return raw, nil
	}
	var protos []string
	if env.path == pathTermHTTP {
		protos = []string{"http/1.1"}
	}
	tc := tls.Client(raw, insecureTLS(e2eDomain, protos...))
	if err := tc.Handshake(); err != nil {
		return raw, err
	}
	return tc, nil
}

// attempt opens a connection from ip and exchanges something with the
// route's action: a line on the TCP paths, "GET /" on the HTTP paths.
func (env *e2eEnv) attempt(ip string) e2eResult {
	env.t.Helper()
	if env.path.http() {
		return env.request(ip, "/", nil)
	}
	t := env.t
	c, err := env.dial(ip)
	if err != nil {
		return e2eResult{err: err, conn: c}
	}
	if env.path == pathPassthrough {
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return e2eResult{err: err, conn: c}
		}
		require.Equal(t, "be:"+e2eDomain+"\n", line)
		return e2eResult{ok: true, conn: c}
	}
	const msg = "PING x\n" // not HTTP: terminated streams are forwarded as TCP
	if _, err := io.WriteString(c, msg); err != nil {
		return e2eResult{err: err, conn: c}
	}
	got, err := readN(c, len(msg), 3*time.Second)
	if err != nil {
		return e2eResult{err: err, conn: c}
	}
	require.Equal(t, msg, string(got))
	return e2eResult{ok: true, conn: c}
}

// request sends one GET for path on a new connection from ip.
func (env *e2eEnv) request(ip, path string, header http.Header) e2eResult {
	env.t.Helper()
	require.True(env.t, env.path.http())
	c, err := env.dial(ip)
	if err != nil {
		return e2eResult{err: err, conn: c}
	}
	hc := newRawHTTP(c)
	res := hc.get(e2eDomain, path, header)
	return res
}

// requireRefused checks how a refused attempt showed on the path: a
// response with status on plain HTTP ports, a TLS "access denied" alert
// on the TLS paths, a close without a byte on plain TCP.
func (env *e2eEnv) requireRefused(res e2eResult, status int) {
	t := env.t
	t.Helper()
	require.False(t, res.ok, "attempt was admitted")
	switch {
	case env.path.refusesWithStatus():
		require.Equal(t, status, res.status, "body %q, err %v", res.body, res.err)
	case env.path.tls():
		require.ErrorContains(t, res.err, "access denied", "refused TLS clients get an alert")
	default:
		require.True(t, isClosedErr(res.err), "want EOF or reset, got %v", res.err)
	}
}

// requireDropped checks an attempt refused on accept, before anything was
// read (the proxy-wide limits): the connection is closed without a reply,
// except on a plain HTTP port, where a request that follows at once is
// answered with status (429 or 503) before the close.
func (env *e2eEnv) requireDropped(res e2eResult, status int) {
	env.t.Helper()
	require.False(env.t, res.ok, "attempt was admitted")
	if env.path.refusesWithStatus() {
		require.Equal(env.t, status, res.status, "an HTTP client refused on accept gets a status")
		return
	}
	require.Zero(env.t, res.status, "no response on a connection refused on accept")
	require.True(env.t, isClosedErr(res.err) || errors.Is(res.err, io.ErrUnexpectedEOF),
		"want EOF or reset, got %v", res.err)
}

// requireOK checks that an attempt went through.
func (env *e2eEnv) requireOK(res e2eResult) e2eResult {
	env.t.Helper()
	require.True(env.t, res.ok, "attempt refused: status %d, body %q, err %v", res.status, res.body, res.err)
	return res
}

// requireRejected checks Metrics().Rejected holds exactly want (reasons
// not listed must be absent). It polls: the proxy counts a refusal after
// answering it (the TLS alert, the 401 or 429 go out first).
func requireRejected(t *testing.T, p *Proxy, want map[string]uint64) {
	t.Helper()
	rejected := func() map[string]uint64 {
		got := map[string]uint64{}
		for k, v := range p.Metrics().Rejected {
			if v > 0 {
				got[string(k)] = v
			}
		}
		return got
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && !reflect.DeepEqual(rejected(), want) {
		time.Sleep(5 * time.Millisecond)
	}
	require.Equal(t, want, rejected(), "Metrics().Rejected")
}

// rawHTTP speaks HTTP/1.1 on one connection, one request at a time, so a
// test controls exactly what goes over which connection (keep-alive).
type rawHTTP struct {
	c  net.Conn
	br *bufio.Reader
}

func newRawHTTP(c net.Conn) *rawHTTP { return &rawHTTP{c: c, br: bufio.NewReader(c)} }

// get sends "GET path" with Host host; path is sent as is (not cleaned).
func (h *rawHTTP) get(host, path string, header http.Header) e2eResult {
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\n", path, host)
	for k, vs := range header {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	_ = h.c.SetDeadline(time.Now().Add(5 * time.Second))
	res := e2eResult{conn: h.c, http: h}
	if _, err := io.WriteString(h.c, b.String()); err != nil {
		res.err = err
		return res
	}
	resp, err := http.ReadResponse(h.br, nil)
	if err != nil {
		res.err = err
		return res
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	res.status, res.header, res.body, res.err = resp.StatusCode, resp.Header, string(body), err
	res.ok = err == nil && resp.StatusCode == http.StatusOK
	return res
}

func basicHeader(user, pass string) http.Header {
	return hdr("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))
}

func bearerHeader(tok string) http.Header { return hdr("Authorization", "Bearer "+tok) }

// runPaths runs f as a subtest per path.
func runPaths(t *testing.T, paths []e2ePath, f func(t *testing.T, path e2ePath)) {
	for _, path := range paths {
		t.Run(string(path), func(t *testing.T) { f(t, path) })
	}
}

// TestSecurityE2EIPLists: ipBlockList and ipAllowList, the route's own and
// the defaults', refuse a client on every path before the backend is
// dialed (or the handler called), while another client gets through.
func TestSecurityE2EIPLists(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name          string
		sec, defaults *RouteSecurity
		reason        RejectReason
	}{
		{name: "route block list", reason: RejectBlocked,
			sec: &RouteSecurity{IPBlockList: []string{e2eRefused}}},
		{name: "route allow list", reason: RejectNotAllowed,
			sec: &RouteSecurity{IPAllowList: []string{e2eOther + "/32", "10.0.0.0/8"}}},
		{name: "default block list", reason: RejectBlocked,
			defaults: &RouteSecurity{IPBlockList: []string{"127.0.0.2/32"}}},
		{name: "default allow list", reason: RejectNotAllowed,
			defaults: &RouteSecurity{IPAllowList: []string{e2eOther}}},
		// The default would refuse both clients: the route's list replaces it.
		{name: "route allow list replaces default", reason: RejectNotAllowed,
			defaults: &RouteSecurity{IPAllowList: []string{"10.0.0.0/8"}},
			sec:      &RouteSecurity{IPAllowList: []string{e2eOther}}},
		{name: "block wins over allow", reason: RejectBlocked,
			sec: &RouteSecurity{IPAllowList: []string{"127.0.0.0/8"}, IPBlockList: []string{e2eRefused}}},
		{name: "route block list with default allow list", reason: RejectBlocked,
			defaults: &RouteSecurity{IPAllowList: []string{"127.0.0.0/8"}},
			sec:      &RouteSecurity{IPBlockList: []string{e2eRefused}}},
		{name: "default block wins over route allow", reason: RejectBlocked,
			defaults: &RouteSecurity{IPBlockList: []string{e2eRefused}},
			sec:      &RouteSecurity{IPAllowList: []string{"127.0.0.0/8"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			runPaths(t, e2eAllPaths, func(t *testing.T, path e2ePath) {
				env := newE2E(t, path, tc.sec, Options{Defaults: Defaults{Security: tc.defaults}})
				res := env.attempt(e2eRefused)
				env.requireRefused(res, http.StatusForbidden)
				if res.status != 0 {
					require.NotContains(t, res.body, string(tc.reason), "the reason is not told to the client")
					// The keep-alive connection stays refused request after request.
					again := res.http.get(e2eDomain, "/other", nil)
					require.Equal(t, http.StatusForbidden, again.status)
				}
				require.Zero(t, env.hits(), "refused client reached the backend")

				env.requireOK(env.attempt(e2eOther))
				require.EqualValues(t, 1, env.hits())
				want := uint64(1)
				if res.status != 0 {
					want = 2
				}
				requireRejected(t, env.p, map[string]uint64{string(tc.reason): want})
			})
		})
	}
}

// TestSecurityE2ERouteMaxConnections: the route's maxConnections refuses
// the (N+1)th concurrent connection, whoever it comes from, and admits
// again once one ends.
func TestSecurityE2ERouteMaxConnections(t *testing.T) {
	t.Parallel()
	runPaths(t, e2eAllPaths, func(t *testing.T, path e2ePath) {
		env := newE2E(t, path, &RouteSecurity{MaxConnections: 1}, Options{})
		held := env.requireOK(env.attempt(e2eRefused))
		res := env.attempt(e2eOther)
		env.requireRefused(res, http.StatusServiceUnavailable)
		require.EqualValues(t, 1, env.hits(), "refused connection reached the backend")
		requireRejected(t, env.p, map[string]uint64{"route-limit": 1})

		require.NoError(t, held.conn.Close())
		require.Eventually(t, func() bool { return env.p.Metrics().ByRoute["sec"] == 0 }, 5*time.Second, 5*time.Millisecond)
		env.requireOK(env.attempt(e2eOther))
		require.EqualValues(t, 2, env.hits())
	})
}

// TestSecurityE2ERouteMaxConnectionsPerIP: the route's per-IP cap refuses
// a client's (N+1)th concurrent connection; other clients are unaffected.
func TestSecurityE2ERouteMaxConnectionsPerIP(t *testing.T) {
	t.Parallel()
	runPaths(t, e2eAllPaths, func(t *testing.T, path e2ePath) {
		env := newE2E(t, path, &RouteSecurity{MaxConnectionsPerIP: 1}, Options{})
		held := env.requireOK(env.attempt(e2eRefused))
		res := env.attempt(e2eRefused)
		env.requireRefused(res, http.StatusTooManyRequests)
		if res.status != 0 {
			require.Equal(t, "1", res.header.Get("Retry-After"))
		}
		require.EqualValues(t, 1, env.hits(), "refused connection reached the backend")
		other := env.requireOK(env.attempt(e2eOther))
		require.EqualValues(t, 2, env.hits())
		requireRejected(t, env.p, map[string]uint64{"route-ip-limit": 1})

		// Once its connection ends, the client is admitted again.
		require.NoError(t, held.conn.Close())
		require.NoError(t, other.conn.Close())
		require.Eventually(t, func() bool { return env.p.Metrics().ByRoute["sec"] == 0 }, 5*time.Second, 5*time.Millisecond)
		env.requireOK(env.attempt(e2eRefused))
		require.EqualValues(t, 3, env.hits())
	})
}

// TestSecurityE2ERouteConnectionRate: the route's
// connectionRateLimitPerMinute refuses a client's (N+1)th connection in
// the minute, closed or not; other clients are unaffected.
func TestSecurityE2ERouteConnectionRate(t *testing.T) {
	t.Parallel()
	runPaths(t, e2eAllPaths, func(t *testing.T, path e2ePath) {
		env := newE2E(t, path, &RouteSecurity{ConnectionRateLimitPerMinute: 2}, Options{})
		for range 2 {
			res := env.requireOK(env.attempt(e2eRefused))
			require.NoError(t, res.conn.Close())
		}
		res := env.attempt(e2eRefused)
		env.requireRefused(res, http.StatusTooManyRequests)
		if res.status != 0 {
			// Three attempts count in this minute (the refused one too):
			// the window must roll over and its count decay to one more
			// attempt's room, 60 s + 40 s from the window's start.
			ra, err := strconv.Atoi(res.header.Get("Retry-After"))
			require.NoError(t, err)
			require.InDelta(t, 100, ra, 1.5, "Retry-After counts the refused attempt")
		}
		require.EqualValues(t, 2, env.hits(), "refused connection reached the backend")
		env.requireOK(env.attempt(e2eOther))
		require.EqualValues(t, 3, env.hits())
		requireRejected(t, env.p, map[string]uint64{"route-rate-limit": 1})
	})
}

// TestSecurityE2EGlobalLimits: Options.MaxConnectionsPerIP and
// ConnectionRateLimitPerMinute refuse on accept, on every path, before
// anything is read: without a TLS alert, and on plain HTTP ports with a
// 429 or 503 only for a request that arrives at once (refuseHTTPClient).
func TestSecurityE2EGlobalLimits(t *testing.T) {
	t.Parallel()
	t.Run("MaxConnectionsPerIP", func(t *testing.T) {
		runPaths(t, e2eAllPaths, func(t *testing.T, path e2ePath) {
			env := newE2E(t, path, nil, Options{MaxConnectionsPerIP: 1})
			held := env.requireOK(env.attempt(e2eRefused))
			env.requireDropped(env.attempt(e2eRefused), http.StatusTooManyRequests)
			require.EqualValues(t, 1, env.hits(), "refused connection reached the backend")
			env.requireOK(env.attempt(e2eOther))
			require.EqualValues(t, 2, env.hits())
			requireRejected(t, env.p, map[string]uint64{"ip-limit": 1})
			require.NoError(t, held.conn.Close())
		})
	})
	t.Run("MaxConnections", func(t *testing.T) {
		runPaths(t, e2eAllPaths, func(t *testing.T, path e2ePath) {
			env := newE2E(t, path, nil, Options{MaxConnections: 1})
			held := env.requireOK(env.attempt(e2eRefused))
			env.requireDropped(env.attempt(e2eOther), http.StatusServiceUnavailable) // the cap is proxy-wide: any client
			require.EqualValues(t, 1, env.hits(), "refused connection reached the backend")
			requireRejected(t, env.p, map[string]uint64{"global-limit": 1})
			require.NoError(t, held.conn.Close())
			require.Eventually(t, func() bool { return env.p.Metrics().Active == 0 }, 2*time.Second, 10*time.Millisecond)
			env.requireOK(env.attempt(e2eOther))
			require.EqualValues(t, 2, env.hits())
		})
	})
	t.Run("ConnectionRateLimitPerMinute", func(t *testing.T) {
		runPaths(t, e2eAllPaths, func(t *testing.T, path e2ePath) {
			env := newE2E(t, path, nil, Options{ConnectionRateLimitPerMinute: 2})
			for range 2 {
				res := env.requireOK(env.attempt(e2eRefused))
				require.NoError(t, res.conn.Close())
			}
			env.requireDropped(env.attempt(e2eRefused), http.StatusTooManyRequests)
			require.EqualValues(t, 2, env.hits(), "refused connection reached the backend")
			env.requireOK(env.attempt(e2eOther))
			require.EqualValues(t, 3, env.hits())
			requireRejected(t, env.p, map[string]uint64{"rate-limit": 1})
		})
	})
}

// TestSecurityE2EHTTPRateLimit: security.rateLimit answers 429 with
// Retry-After over the limit, keyed by client IP, path or header, on every
// HTTP path; refused requests never reach the backend.
func TestSecurityE2EHTTPRateLimit(t *testing.T) {
	t.Parallel()
	requireTooMany := func(t *testing.T, res e2eResult) {
		t.Helper()
		require.Equal(t, http.StatusTooManyRequests, res.status, "body %q err %v", res.body, res.err)
		secs, err := strconv.Atoi(res.header.Get("Retry-After"))
		require.NoError(t, err, "Retry-After %q", res.header.Get("Retry-After"))
		// The sliding-window estimate weighs the previous window fully at
		// its end, so the wait can exceed the window (up to twice it).
		require.True(t, secs >= 1 && secs <= 120, "Retry-After %d", secs)
		require.Equal(t, "slow down\n", res.body)
	}
	rl := func(keyBy, header string) *RouteSecurity {
		return &RouteSecurity{RateLimit: &RateLimit{MaxRequests: 2, Window: 60, KeyBy: KeyBy(keyBy), HeaderName: header, ErrorMessage: "slow down"}}
	}
	t.Run("ip", func(t *testing.T) {
		runPaths(t, e2eHTTPPaths, func(t *testing.T, path e2ePath) {
			env := newE2E(t, path, rl("ip", ""), Options{})
			env.requireOK(env.request(e2eRefused, "/a", nil))
			env.requireOK(env.request(e2eRefused, "/b", nil))
			requireTooMany(t, env.request(e2eRefused, "/c", nil))
			require.EqualValues(t, 2, env.hits())
			env.requireOK(env.request(e2eOther, "/a", nil))
			require.EqualValues(t, 3, env.hits())
			requireRejected(t, env.p, map[string]uint64{"http-rate-limit": 1})
		})
	})
	t.Run("path", func(t *testing.T) {
		runPaths(t, e2eHTTPPaths, func(t *testing.T, path e2ePath) {
			env := newE2E(t, path, rl("path", ""), Options{})
			env.requireOK(env.request(e2eRefused, "/a", nil))
			env.requireOK(env.request(e2eOther, "/a", nil))
			requireTooMany(t, env.request(e2eOther, "/a", nil)) // the path's budget, whoever asks
			require.EqualValues(t, 2, env.hits())
			env.requireOK(env.request(e2eRefused, "/b", nil))
			require.EqualValues(t, 3, env.hits())
			requireRejected(t, env.p, map[string]uint64{"http-rate-limit": 1})
		})
	})
	t.Run("header", func(t *testing.T) {
		runPaths(t, e2eHTTPPaths, func(t *testing.T, path e2ePath) {
			env := newE2E(t, path, rl("header", "X-Api-Key"), Options{})
			k1, k2 := hdr("X-Api-Key", "k1"), hdr("X-Api-Key", "k2")
			env.requireOK(env.request(e2eRefused, "/", k1))
			env.requireOK(env.request(e2eOther, "/", k1))
			requireTooMany(t, env.request(e2eRefused, "/", k1))
			env.requireOK(env.request(e2eRefused, "/", k2))
			// Without the header the client IP is the key: leaving the
			// header out gives no fresh budget per request.
			env.requireOK(env.request(e2eOther, "/", nil))
			env.requireOK(env.request(e2eOther, "/", nil))
			requireTooMany(t, env.request(e2eOther, "/", nil))
			require.EqualValues(t, 5, env.hits())
			requireRejected(t, env.p, map[string]uint64{"http-rate-limit": 2})
		})
	})
}

// TestSecurityE2EBasicAuth: basicAuth on every HTTP path: 401 with the
// realm's challenge without or with wrong credentials, plaintext and
// bcrypt users pass, excludePaths serve a public path without
// credentials but never a path that only looks public.
func TestSecurityE2EBasicAuth(t *testing.T) {
	t.Parallel()
	sec := &RouteSecurity{BasicAuth: &BasicAuth{
		Realm: "Admin Area",
		Users: []BasicAuthUser{
			{Username: "alice", Password: "wonderland"},
			{Username: "bob", Password: bcryptHash(t, "hunter2")},
		},
		ExcludePaths: []string{"/public/*"},
	}}
	const challenge = `Basic realm="Admin Area", charset="UTF-8"`
	runPaths(t, e2eHTTPPaths, func(t *testing.T, path e2ePath) {
		env := newE2E(t, path, sec, Options{})
		unauthorized := func(p string, h http.Header) {
			t.Helper()
			res := env.request(e2eRefused, p, h)
			require.Equal(t, http.StatusUnauthorized, res.status, "%s: body %q err %v", p, res.body, res.err)
			require.Equal(t, challenge, res.header.Get("WWW-Authenticate"))
			require.Equal(t, "no-store", res.header.Get("Cache-Control"))
		}
		unauthorized("/admin", nil)
		unauthorized("/admin", basicHeader("alice", "wrong"))
		unauthorized("/admin", basicHeader("mallory", "wonderland"))
		unauthorized("/admin", basicHeader("bob", "wonderland"))
		unauthorized("/admin", hdr("Authorization", "Basic !!notbase64"))
		require.Zero(t, env.hits(), "unauthorized requests reached the backend")

		env.requireOK(env.request(e2eRefused, "/admin", basicHeader("alice", "wonderland")))
		env.requireOK(env.request(e2eRefused, "/admin", basicHeader("bob", "hunter2")))
		env.requireOK(env.request(e2eRefused, "/admin", basicHeader("bob", "hunter2"))) // cached bcrypt success
		require.EqualValues(t, 3, env.hits())

		env.requireOK(env.request(e2eRefused, "/public/page", nil))
		require.EqualValues(t, 4, env.hits())
		// A path is checked in its canonical form, which is the form the
		// backend gets (httppath.go): "/public/../admin" is /admin, and a
		// path without a canonical form is refused.
		for _, p := range []string{"/public/../admin", "/public"} {
			unauthorized(p, nil)
		}
		res := env.request(e2eRefused, "/public/..%2Fadmin", nil)
		require.Equal(t, http.StatusBadRequest, res.status, "body %q err %v", res.body, res.err)
		require.EqualValues(t, 4, env.hits(), "a path that only looks public reached the backend")
		env.requireOK(env.request(e2eRefused, "/public/./page", nil))
		env.requireOK(env.request(e2eRefused, "/public//page", nil))
		require.EqualValues(t, 6, env.hits())
		if path != pathHandover {
			var seen []string
			for len(env.paths) > 0 {
				seen = append(seen, <-env.paths)
			}
			require.Equal(t, []string{"/admin", "/admin", "/admin", "/public/page", "/public/page", "/public/page"}, seen)
		}
		// A malformed Basic header counts as no credentials.
		requireRejected(t, env.p, map[string]uint64{"auth-required": 4, "basic-auth": 3})
	})
}

// e2eToken signs claims with HS256 (or alg none with key nil).
func e2eToken(t *testing.T, key []byte, mod func(jwt.MapClaims)) string {
	t.Helper()
	now := time.Now()
	c := jwt.MapClaims{"sub": "alice", "iss": "https://issuer.test", "aud": "api",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	if mod != nil {
		mod(c)
	}
	var (
		s   string
		err error
	)
	if key == nil {
		s, err = jwt.NewWithClaims(jwt.SigningMethodNone, c).SignedString(jwt.UnsafeAllowNoneSignatureType)
	} else {
		s, err = jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(key)
	}
	require.NoError(t, err)
	return s
}

// TestSecurityE2EJWTAuth: jwtAuth with an HS256 secret on every HTTP path:
// a valid token passes; a missing, expired, wrongly issued, unsigned (alg
// none) or wrongly signed token gets 401 and never reaches the backend.
func TestSecurityE2EJWTAuth(t *testing.T) {
	t.Parallel()
	secret := []byte(strings.Repeat("k", 32))
	sec := &RouteSecurity{JWTAuth: &JWTAuth{
		Secret: string(secret), Algorithm: StringList{"HS256"},
		Issuer: "https://issuer.test", Audience: StringList{"api"},
	}}
	runPaths(t, e2eHTTPPaths, func(t *testing.T, path e2ePath) {
		env := newE2E(t, path, sec, Options{})
		res := env.request(e2eRefused, "/api", nil)
		require.Equal(t, http.StatusUnauthorized, res.status)
		require.Equal(t, `Bearer realm="Restricted"`, res.header.Get("WWW-Authenticate"))

		bad := map[string]string{
			"expired":      e2eToken(t, secret, func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() }),
			"wrong issuer": e2eToken(t, secret, func(c jwt.MapClaims) { c["iss"] = "https://evil.test" }),
			"wrong aud":    e2eToken(t, secret, func(c jwt.MapClaims) { c["aud"] = "other" }),
			"no exp":       e2eToken(t, secret, func(c jwt.MapClaims) { delete(c, "exp") }),
			"alg none":     e2eToken(t, nil, nil),
			"wrong secret": e2eToken(t, []byte(strings.Repeat("x", 32)), nil),
			"garbage":      "not.a.jwt",
		}
		for name, tok := range bad {
			res := env.request(e2eRefused, "/api", bearerHeader(tok))
			require.Equal(t, http.StatusUnauthorized, res.status, name)
			require.Equal(t, `Bearer realm="Restricted", error="invalid_token"`, res.header.Get("WWW-Authenticate"), name)
		}
		require.Zero(t, env.hits(), "a request with a bad token reached the backend")

		good := e2eToken(t, secret, nil)
		env.requireOK(env.request(e2eRefused, "/api", bearerHeader(good)))
		env.requireOK(env.request(e2eOther, "/api", hdr("Authorization", "bearer "+good)))
		require.EqualValues(t, 2, env.hits())
		requireRejected(t, env.p, map[string]uint64{"auth-required": 1, "jwt-invalid": uint64(len(bad))})
	})
}

// TestSecurityE2EKeepAliveRechecks: on one keep-alive connection every
// request is checked against its own route: a first request to an open
// route does not let a later one past another route's authentication,
// block list or rate limit (plain HTTP and terminated TLS).
func TestSecurityE2EKeepAliveRechecks(t *testing.T) {
	t.Parallel()
	forEachHTTPKind(t, func(t *testing.T, k httpKind) {
		lp := newListenerPool(t)
		port := lp.port(t)
		paths := make(chan string, 100)
		beOpen, beAdmin, beBlocked, beLimited := okBackend(t, paths), okBackend(t, paths),
			okBackend(t, paths), okBackend(t, paths)
		open := k.route("open", port, beOpen.addr(), "app.test")
		admin := k.route("admin", port, beAdmin.addr(), "app.test")
		admin.Match.Path = "/admin/*"
		admin.Security = &RouteSecurity{BasicAuth: &BasicAuth{Users: []BasicAuthUser{{Username: "alice", Password: "pw"}}}}
		blocked := k.route("blocked", port, beBlocked.addr(), "blocked.test")
		blocked.Security = &RouteSecurity{IPBlockList: []string{e2eRefused}}
		limited := k.route("limited", port, beLimited.addr(), "limited.test")
		limited.Security = &RouteSecurity{RateLimit: &RateLimit{MaxRequests: 1, Window: 60}}
		p := startTestProxy(t, lp, Options{Certificates: testCertStore(t), Routes: []Route{open, admin, blocked, limited}})

		c, err := k.dial(t, e2eRefused, port, "app.test")
		require.NoError(t, err)
		h := newRawHTTP(c)
		status := func(host, path string, header http.Header) int {
			t.Helper()
			res := h.get(host, path, header)
			require.NoError(t, res.err)
			require.NotEqual(t, "close", res.header.Get("Connection"), "the connection is kept alive")
			return res.status
		}
		require.Equal(t, http.StatusOK, status("app.test", "/", nil))
		require.Equal(t, http.StatusUnauthorized, status("app.test", "/admin/x", nil))
		require.Equal(t, http.StatusForbidden, status("blocked.test", "/", nil), "Host switched to a route blocking the client")
		require.Equal(t, http.StatusOK, status("app.test", "/", nil))
		require.Equal(t, http.StatusUnauthorized, status("app.test", "/admin/x", basicHeader("alice", "nope")))
		require.Equal(t, http.StatusForbidden, status("blocked.test", "/again", nil))
		require.Equal(t, http.StatusOK, status("limited.test", "/", nil))
		require.Equal(t, http.StatusTooManyRequests, status("limited.test", "/", nil))
		require.Equal(t, http.StatusOK, status("app.test", "/admin/x", basicHeader("alice", "pw")))

		require.EqualValues(t, 2, beOpen.requests.Load())
		require.EqualValues(t, 1, beAdmin.requests.Load(), "only the authenticated request")
		require.Zero(t, beBlocked.requests.Load())
		require.Zero(t, beBlocked.conns.Load(), "the blocked route's backend was never dialed")
		require.EqualValues(t, 1, beLimited.requests.Load())
		requireRejected(t, p, map[string]uint64{"auth-required": 1, "basic-auth": 1, "ip-blocked": 2, "http-rate-limit": 1})

		if k.terminate {
			// A client connecting for the blocked name is refused before
			// the handshake.
			_, err := k.dial(t, e2eRefused, port, "blocked.test")
			require.ErrorContains(t, err, "access denied")
			require.Zero(t, beBlocked.conns.Load())
		}
	})
}

// TestSecurityE2EConfigValidation: HTTP checks on a route that never sees
// HTTP requests (TLS passthrough) fail New, naming the route and field.
func TestSecurityE2EConfigValidation(t *testing.T) {
	t.Parallel()
	users := []BasicAuthUser{{Username: "u", Password: "p"}}
	cases := map[string]struct {
		sec, defaults *RouteSecurity
	}{
		"basicAuth":         {sec: &RouteSecurity{BasicAuth: &BasicAuth{Users: users}}},
		"jwtAuth":           {sec: &RouteSecurity{JWTAuth: &JWTAuth{Secret: strings.Repeat("s", 32), Algorithm: StringList{"HS256"}}}},
		"rateLimit":         {sec: &RouteSecurity{RateLimit: &RateLimit{MaxRequests: 1, Window: 1}}},
		"default basicAuth": {defaults: &RouteSecurity{BasicAuth: &BasicAuth{Users: users}}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := NewRoute("tls-pass").Ports(8443).Domains("pass.test").TLSPassthrough().ForwardTo("127.0.0.1:9").Route()
			r.Security = tc.sec
			_, err := New(Options{Logger: testLogger(), Routes: []Route{r}, Defaults: Defaults{Security: tc.defaults}})
			require.Error(t, err)
			require.ErrorContains(t, err, `route "tls-pass"`)
			require.ErrorContains(t, err, "security")
			require.ErrorContains(t, err, "passthrough")
			var re *RouteError
			require.ErrorAs(t, err, &re)
			require.Equal(t, `"tls-pass"`, re.Route)
			require.Equal(t, "security", re.Field)
		})
	}
	// IP lists and connection limits are fine on passthrough routes.
	r := NewRoute("tls-pass").Ports(8443).Domains("pass.test").TLSPassthrough().ForwardTo("127.0.0.1:9").Route()
	r.Security = &RouteSecurity{IPBlockList: []string{"10.0.0.0/8"}, MaxConnections: 5, MaxConnectionsPerIP: 1, ConnectionRateLimitPerMinute: 10}
	p, err := New(Options{Logger: testLogger(), Routes: []Route{r}})
	require.NoError(t, err)
	require.NoError(t, p.Stop(t.Context()))
}

// TestSecurityE2EHTTPChecksNeedHTTP: a route with basicAuth, jwtAuth or
// rateLimit must never hand a stream it could not check to its backend or
// socket handler: a request the sniffer does not take for HTTP (a method
// it does not list, which a Go backend still serves, or a method split by
// a pause longer than the sniff wait) must be refused, not forwarded raw.
func TestSecurityE2EHTTPChecksNeedHTTP(t *testing.T) {
	t.Parallel()
	auth := &RouteSecurity{BasicAuth: &BasicAuth{Users: []BasicAuthUser{{Username: "u", Password: "p"}}}}
	const (
		sniffWait = 300 * time.Millisecond // InitialDataTimeout, and so the sniff wait
		rest      = " /admin HTTP/1.1\r\nHost: " + e2eDomain + "\r\nConnection: close\r\n\r\n"
	)
	sends := []struct {
		name        string
		first, then string // then is sent after a pause past the sniff wait
	}{
		// net/http takes any token as a method: "get" serves /admin.
		{name: "unlisted method", first: "get" + rest},
		{name: "method split by a pause", first: "GE", then: "T" + rest},
	}
	cases := []struct {
		name  string
		route func(port int, be string, h SocketHandler) Route
		tls   bool
	}{
		{name: "plain forward without domains", route: func(port int, be string, _ SocketHandler) Route {
			return plainRoute("sec", port, be)
		}},
		{name: "terminate forward without HTTP options", tls: true, route: func(port int, be string, _ SocketHandler) Route {
			r := NewRoute("sec").Ports(port).Domains(e2eDomain).ForwardTo(be).Route()
			r.Action.TLS = &RouteTLS{Mode: TLSTerminate}
			return r
		}},
		{name: "plain socket handler", route: func(port int, _ string, h SocketHandler) Route {
			return NewRoute("sec").Ports(port).HandleWith(h).Route()
		}},
		{name: "terminate socket handler", tls: true, route: func(port int, _ string, h SocketHandler) Route {
			r := NewRoute("sec").Ports(port).Domains(e2eDomain).HandleWith(h).Route()
			r.Action.TLS = &RouteTLS{Mode: TLSTerminate}
			return r
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lp := newListenerPool(t)
			port := lp.port(t)
			be := okBackend(t, make(chan string, 10))
			var calls atomic.Int64
			handler := func(ctx context.Context, c net.Conn, rc *RouteContext) error {
				calls.Add(1)
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nhandler")
				return nil
			}
			r := tc.route(port, be.addr(), handler)
			r.Security = auth
			opts := Options{Logger: testLogger(), Listen: lp.listen, Certificates: testCertStore(t), Routes: []Route{r},
				MaxConnectionsPerIP: -1, ConnectionRateLimitPerMinute: -1, InitialDataTimeout: sniffWait}
			if _, err := New(opts); err != nil {
				// Refusing the configuration is a fine answer too.
				require.ErrorContains(t, err, `route "sec": security`)
				return
			}
			p := startTestProxy(t, lp, opts)
			for _, send := range sends {
				t.Run(send.name, func(t *testing.T) {
					var c net.Conn = dial(t, port)
					require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
					if tc.tls {
						tc := tls.Client(c, insecureTLS(e2eDomain))
						require.NoError(t, tc.Handshake())
						c = tc
					}
					_, err := io.WriteString(c, send.first)
					require.NoError(t, err)
					if send.then != "" {
						time.Sleep(sniffWait + 150*time.Millisecond)
						_, _ = io.WriteString(c, send.then)
					}
					got, _ := io.ReadAll(c)
					require.NotContains(t, string(got), "200 OK", "the unauthenticated request was served")
				})
			}
			require.Zero(t, be.conns.Load(), "the backend was dialed for a stream the route's security could not check")
			require.Zero(t, calls.Load(), "the socket handler ran without the route's security")
			requireNoRecords(t, p)
		})
	}
}

// TestSecurityE2EPathRouteChecksPerRequest: on a terminated TLS port, a
// route with a path and a block list must refuse only the requests for its
// path. The connection-level match (before any request) picks the most
// specific route for its TLS settings; its security must not decide the
// whole connection.
func TestSecurityE2EPathRouteChecksPerRequest(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	paths := make(chan string, 100)
	beOpen, beAdmin := okBackend(t, paths), okBackend(t, paths)
	open := terminateRouteOn("open", port, beOpen.addr(), "app.test")
	admin := terminateRouteOn("admin", port, beAdmin.addr(), "app.test")
	admin.Match.Path = "/admin/*"
	admin.Security = &RouteSecurity{IPBlockList: []string{e2eRefused}, MaxConnectionsPerIP: 1}
	p := startTestProxy(t, lp, Options{Certificates: testCertStore(t), Routes: []Route{open, admin}})

	get := func(ip, path string) int {
		t.Helper()
		tc := tls.Client(dialFrom(t, ip, port), insecureTLS("app.test", "http/1.1"))
		require.NoError(t, tc.Handshake())
		defer tc.Close()
		res := newRawHTTP(tc).get("app.test", path, nil)
		require.NoError(t, res.err)
		return res.status
	}
	require.Equal(t, http.StatusOK, get(e2eRefused, "/"), "the blocked client may use the open route")
	require.Equal(t, http.StatusForbidden, get(e2eRefused, "/admin/x"))
	require.Equal(t, http.StatusOK, get(e2eOther, "/admin/x"))
	require.EqualValues(t, 1, beOpen.requests.Load())
	require.EqualValues(t, 1, beAdmin.requests.Load())
	requireRejected(t, p, map[string]uint64{"ip-blocked": 1})
}
