package smartproxy

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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

// Options refuses a prefix length IPv6 does not have, and a park time the sweeper cannot
// tick at.
func TestOptionsIPv6PrefixLen(t *testing.T) {
	t.Parallel()
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
