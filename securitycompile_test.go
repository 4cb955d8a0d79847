package smartproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/gosmartproxy/smartproxy/schema"
)

var testClient = netip.MustParseAddr("192.0.2.10")

// testNow is the fixed clock of the security tests.
var testNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// mustCompile compiles s and fails the test on any error.
func mustCompile(t testing.TB, s *RouteSecurity) *compiledSecurity {
	t.Helper()
	cs, errs := compileSecurity(s)
	require.Empty(t, errs)
	require.NotNil(t, cs)
	return cs
}

// checkAs runs checkHTTP on a GET / from testClient that sends the Basic
// credentials user:pass (none when user is ""), and returns the response
// and the refusal.
func checkAs(cs *compiledSecurity, user, pass string) (*httptest.ResponseRecorder, error) {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	if user != "" {
		r.SetBasicAuth(user, pass)
	}
	w := httptest.NewRecorder()
	return w, cs.checkHTTP(w, r, testClient, testNow)
}

func bcryptHash(t testing.TB, pass string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	require.NoError(t, err)
	return string(h)
}

// requireFields asserts errs name exactly the given fields.
func requireFields(t *testing.T, errs schema.FieldErrors, fields ...string) {
	t.Helper()
	var got []string
	for _, e := range errs {
		got = append(got, e.Field)
	}
	require.ElementsMatch(t, fields, got, "errors: %v", errs)
}

func TestCompileSecurityLimits(t *testing.T) {
	cs, errs := compileSecurity(nil)
	require.Empty(t, errs)
	require.Nil(t, cs)
	cs, errs = compileSecurity(&RouteSecurity{IPAllowList: []string{"10.0.0.0/8"}})
	require.Empty(t, errs)
	require.Nil(t, cs, "IP lists alone compile to nothing here (routeState has them)")
	// A nil *compiledSecurity imposes nothing.
	require.Equal(t, connection.RouteLimits{}, cs.routeLimits())
	require.False(t, cs.hasHTTPChecks())
	w := httptest.NewRecorder()
	require.NoError(t, cs.checkHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil), testClient, time.Now()))

	cs = mustCompile(t, &RouteSecurity{MaxConnections: 10, MaxConnectionsPerIP: 2, ConnectionRateLimitPerMinute: 30})
	require.Equal(t, connection.RouteLimits{MaxConnections: 10, MaxConnectionsPerIP: 2, RatePerMinute: 30}, cs.routeLimits())
	require.False(t, cs.hasHTTPChecks())

	_, errs = compileSecurity(&RouteSecurity{MaxConnections: -1, MaxConnectionsPerIP: -1, ConnectionRateLimitPerMinute: -5})
	requireFields(t, errs, "security.maxConnections", "security.maxConnectionsPerIP", "security.connectionRateLimitPerMinute")
	require.ErrorContains(t, errs[0], "security.maxConnections: must be >= 0")
}

func TestCompileRouteSecurityDefaults(t *testing.T) {
	def, errs := compileSecurity(&RouteSecurity{
		MaxConnectionsPerIP: 5,
		BasicAuth:           &BasicAuth{Users: []BasicAuthUser{{Username: "u", Password: "p"}}},
		RateLimit:           &RateLimit{MaxRequests: 1, Window: 60},
	})
	require.Empty(t, errs)
	off := false
	a, errs := compileRouteSecurity(def, &RouteSecurity{ConnectionRateLimitPerMinute: 9})
	require.Empty(t, errs)
	b, errs := compileRouteSecurity(def, &RouteSecurity{MaxConnectionsPerIP: 1, BasicAuth: &BasicAuth{Enabled: &off}})
	require.Empty(t, errs)
	require.Equal(t, connection.RouteLimits{MaxConnectionsPerIP: 5, RatePerMinute: 9}, a.routeLimits())
	require.Equal(t, connection.RouteLimits{MaxConnectionsPerIP: 1}, b.routeLimits())
	// How auth blocks are shared with the defaults is asserted by auth's
	// TestCompileWithDefaults. Here: b opts out of the default basicAuth,
	// and a's budget is its own: b's requests do not consume it.
	code := func(cs *compiledSecurity, user, pass string) int {
		w, _ := checkAs(cs, user, pass)
		return w.Code
	}
	require.Equal(t, http.StatusOK, code(b, "", ""))
	require.Equal(t, http.StatusOK, code(a, "u", "p"))
	require.Equal(t, http.StatusTooManyRequests, code(a, "u", "p"))
}

// TestCheckHTTPReasons: auth's refusals reach the proxy as RejectErrors
// with the reasons Metrics.Rejected has always reported.
func TestCheckHTTPReasons(t *testing.T) {
	cs := mustCompile(t, &RouteSecurity{
		BasicAuth: &BasicAuth{Users: []BasicAuthUser{{Username: "u", Password: "p"}}},
		RateLimit: &RateLimit{MaxRequests: 2, Window: 60},
	})
	check := func(user, pass string) *RejectError {
		var re *RejectError
		_, err := checkAs(cs, user, pass)
		require.ErrorAs(t, err, &re)
		require.Equal(t, testClient, re.IP)
		return re
	}
	re := check("", "")
	require.Equal(t, RejectAuthMissing, re.Reason)
	require.Equal(t, "auth-required", rejectReasonOf(re))
	re = check("u", "x")
	require.Equal(t, RejectBasicAuth, re.Reason)
	require.Equal(t, "basic-auth", rejectReasonOf(re))
	require.NotContains(t, re.Error(), `"x"`, "the password never reaches logs")
	re = check("", "")
	require.Equal(t, RejectHTTPRateLimit, re.Reason)
	require.Equal(t, "http-rate-limit", rejectReasonOf(re))
	require.Positive(t, re.RetryAfter)
	require.Equal(t, "jwt-invalid", string(RejectJWT))
	// Field errors of auth are named from the route, like the limits'.
	_, errs := compileSecurity(&RouteSecurity{JWTAuth: &JWTAuth{Secret: "x"}, RateLimit: &RateLimit{MaxRequests: 1, Window: 1, KeyBy: "header"}})
	requireFields(t, errs, "security.jwtAuth.algorithm", "security.rateLimit.headerName")
}

func TestWriteHTTPReject(t *testing.T) {
	cases := []struct {
		err    error
		code   int
		retry  string
		reason string
	}{
		{&RejectError{Reason: RejectBlocked}, 403, "", "ip-blocked"},
		{&RejectError{Reason: RejectHTTPRateLimit, RetryAfter: 1500 * time.Millisecond}, 429, "2", "http-rate-limit"},
		{&connection.LimitError{Reason: connection.ReasonRouteRateLimit, Limit: 30, RetryAfter: 41500 * time.Millisecond}, 429, "42", "route-rate-limit"},
		{&connection.LimitError{Reason: connection.ReasonRateLimit, Limit: 30}, 429, "1", "rate-limit"},
		{&connection.LimitError{Reason: connection.ReasonIPLimit, Limit: 3}, 429, "1", "ip-limit"},
		{&connection.LimitError{Reason: connection.ReasonRouteLimit, Limit: 3}, 503, "", "route-limit"},
		{errors.New("custom checker"), 403, "", "error"},
	}
	for _, c := range cases {
		w := httptest.NewRecorder()
		writeHTTPReject(w, c.err)
		require.Equal(t, c.code, w.Code, "%v", c.err)
		require.Equal(t, c.retry, w.Header().Get("Retry-After"), "%v", c.err)
		require.Equal(t, c.reason, rejectReasonOf(c.err))
	}
}

// TestSecurityFloodDistinctIPs: connections from many distinct loopback
// addresses against a route with per-IP limits. Every one is served, the
// per-IP and per-route per-IP tables stay within MaxTrackedIPs, and both
// are pruned to zero once the rate windows have passed. 100,000
// connections (about 5 s, 10 s with -race on 2 cores); 2,000 with -short.
func TestSecurityFloodDistinctIPs(t *testing.T) {
	n := 100000
	if testing.Short() {
		n = 2000
	}
	const capIPs = 1000
	clk := &stepClock{now: time.Now()}
	mgr, err := connection.NewManager(connection.Config{
		MaxTrackedIPs: capIPs, MaxConnectionsPerIP: -1, ConnectionRateLimitPerMinute: 100, Now: clk.Now,
	})
	require.NoError(t, err)
	sec := &RouteSecurity{MaxConnectionsPerIP: 2, ConnectionRateLimitPerMinute: 5}
	lp := newListenerPool(t)
	port := lp.port(t)
	route := SocketHandlerRoute("flood", Ports(port), nil, func(_ context.Context, c net.Conn, _ *RouteContext) error {
		_, err := io.WriteString(c, "ok")
		return err
	})
	route.Security = sec
	p := startTestProxy(t, lp, Options{
		Routes:      []Route{route},
		Connections: mgr,
	})

	var next atomic.Int64
	var served, peakIPs, peakRouteIPs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range 16 {
		wg.Go(func() {
			buf := make([]byte, 8)
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				src := net.IPv4(127, byte(1+i>>16), byte(i>>8), byte(i))
				d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: src}}
				c, err := d.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
				if err != nil {
					t.Errorf("dial from %v: %v", src, err)
					return
				}
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				m, _ := io.ReadFull(c, buf[:2])
				_ = c.Close()
				if m == 2 {
					served.Add(1)
				}
				if i%500 == 0 {
					s := p.Metrics()
					peakIPs.Store(max(peakIPs.Load(), int64(s.TrackedIPs)))
					peakRouteIPs.Store(max(peakRouteIPs.Load(), int64(s.TrackedRouteIPs)))
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d connections from distinct addresses in %v; peak tracked IPs %d, route IPs %d",
		n, time.Since(start), peakIPs.Load(), peakRouteIPs.Load())
	require.Equal(t, int64(n), served.Load())
	requireNoRecords(t, p)
	s := p.Metrics()
	// Entries holding a connection may exceed the cap briefly (never
	// evicted); 16 clients hold at most 16.
	require.LessOrEqual(t, s.TrackedIPs, capIPs)
	require.LessOrEqual(t, s.TrackedRouteIPs, capIPs)
	require.LessOrEqual(t, peakIPs.Load(), int64(capIPs+16), "the per-IP table stayed bounded during the flood")
	require.LessOrEqual(t, peakRouteIPs.Load(), int64(capIPs+16))
	require.Equal(t, min(n, capIPs), s.TrackedRouteIPs, "history is kept up to the cap")

	// The per-route rate limit holds: the 6th connection of one client in
	// a minute is closed without being served.
	for i := range 6 {
		c := dialFrom(t, "127.250.0.1", port)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(c)
		require.Equal(t, i < 5, string(b) == "ok", "connection %d", i)
	}
	require.Equal(t, uint64(1), p.Metrics().Rejected[connection.ReasonRouteRateLimit])

	// Once the rate windows are over, the manager's sweeper prunes both tables.
	clk.Advance(3 * time.Minute)
	require.Eventually(t, func() bool {
		s := p.Metrics()
		return s.TrackedIPs == 0 && s.TrackedRouteIPs == 0
	}, 5*time.Second, 20*time.Millisecond)
}

// Options refuses a prefix length IPv6 does not have, and a park time the sweeper cannot
// tick at.
func TestOptionsIPv6PrefixLen(t *testing.T) {
	_, err := New(Options{IPv6PrefixLen: 129})
	require.ErrorContains(t, err, "IPv6PrefixLen must be 1..128")
	_, err = New(Options{IdleParkAfter: time.Microsecond})
	require.ErrorContains(t, err, "IdleParkAfter must be at least 1ms")
	// The prefix length reaches the routes' HTTP rate limiters.
	r := httpRouteOn("rl", 8080, "127.0.0.1:1", "rl.test")
	r.Security = &RouteSecurity{RateLimit: &RateLimit{MaxRequests: 1, Window: 60}}
	p, err := New(Options{IPv6PrefixLen: 128, Logger: testLogger(), Routes: []Route{r}})
	require.NoError(t, err)
	sec := p.set.Load().routes[0].state.sec
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	for _, ip := range []string{"2001:db8::1", "2001:db8::2"} {
		require.NoError(t, sec.checkHTTP(httptest.NewRecorder(), req, netip.MustParseAddr(ip), testNow), "a /128 budget per address")
	}
	require.NoError(t, p.Stop(context.Background()))
}
