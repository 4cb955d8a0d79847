package auth

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func doRate(cs *Checker, ip netip.Addr, path string, now time.Time, mod func(*http.Request)) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, "http://example.com"+path, nil)
	if mod != nil {
		mod(r)
	}
	w := httptest.NewRecorder()
	_ = cs.Check(w, r, ip, now)
	return w
}

func TestRateLimitByIP(t *testing.T) {
	cs := mustCompile(t, Config{RateLimit: &RateLimit{MaxRequests: 3, Window: 10, ErrorMessage: "slow down"}})
	a, b := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")
	now := testNow
	for i := range 3 {
		require.Equal(t, http.StatusOK, doRate(cs, a, "/", now, nil).Code, "request %d", i)
	}
	w := doRate(cs, a, "/", now, nil)
	require.Equal(t, http.StatusTooManyRequests, w.Code)
	// The window must end (10 s) and the 3 requests, now the previous
	// window, must decay to 2 (another 3.3 s).
	require.Equal(t, "14", w.Header().Get("Retry-After"))
	require.Contains(t, w.Body.String(), "slow down")
	require.Equal(t, http.StatusOK, doRate(cs, b, "/", now, nil).Code, "other IPs have their own budget")
	// IPv4-mapped IPv6 is the same client.
	require.Equal(t, http.StatusTooManyRequests, doRate(cs, netip.AddrFrom16(a.As16()), "/", now, nil).Code)

	// Retry-After is honest: refused just before, admitted at that time.
	w = doRate(cs, a, "/", now.Add(10*time.Second), nil)
	require.Equal(t, http.StatusTooManyRequests, w.Code)
	ra, err := strconv.Atoi(w.Header().Get("Retry-After"))
	require.NoError(t, err)
	require.Equal(t, 4, ra)
	require.Equal(t, http.StatusTooManyRequests, doRate(cs, a, "/", now.Add(13200*time.Millisecond), nil).Code)
	require.Equal(t, http.StatusOK, doRate(cs, a, "/", now.Add(14*time.Second), nil).Code)
}

func TestRateLimitByPathAndHeader(t *testing.T) {
	now := testNow
	ip1, ip2 := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")

	byPath := mustCompile(t, Config{RateLimit: &RateLimit{MaxRequests: 1, Window: 60, KeyBy: "path"}})
	require.Equal(t, http.StatusOK, doRate(byPath, ip1, "/a", now, nil).Code)
	require.Equal(t, http.StatusTooManyRequests, doRate(byPath, ip2, "/a", now, nil).Code, "path shared across clients")
	require.Equal(t, http.StatusOK, doRate(byPath, ip1, "/b", now, nil).Code)

	byHeader := mustCompile(t, Config{RateLimit: &RateLimit{MaxRequests: 1, Window: 60, KeyBy: "header", HeaderName: "x-api-key"}})
	key := func(v string) func(*http.Request) { return func(r *http.Request) { r.Header.Set("X-Api-Key", v) } }
	require.Equal(t, http.StatusOK, doRate(byHeader, ip1, "/", now, key("k1")).Code)
	require.Equal(t, http.StatusTooManyRequests, doRate(byHeader, ip2, "/", now, key("k1")).Code, "same key from another IP")
	require.Equal(t, http.StatusOK, doRate(byHeader, ip1, "/", now, key("k2")).Code)
	// Without the header, the client IP is the key: leaving it out does
	// not escape the limit.
	require.Equal(t, http.StatusOK, doRate(byHeader, ip1, "/", now, nil).Code)
	require.Equal(t, http.StatusTooManyRequests, doRate(byHeader, ip1, "/", now, nil).Code)
}

// TestRateLimitBeforeAuth: the limit applies to requests with wrong
// credentials too, so guessing passwords is throttled.
func TestRateLimitBeforeAuth(t *testing.T) {
	cs := mustCompile(t, Config{
		RateLimit: &RateLimit{MaxRequests: 2, Window: 60},
		BasicAuth: &BasicAuth{Users: []BasicAuthUser{{Username: "u", Password: "p"}}},
	})
	require.Equal(t, http.StatusUnauthorized, doRate(cs, testClient, "/", testNow, withBasic("u", "1")).Code)
	require.Equal(t, http.StatusUnauthorized, doRate(cs, testClient, "/", testNow, withBasic("u", "2")).Code)
	w := doRate(cs, testClient, "/", testNow, withBasic("u", "p"))
	require.Equal(t, http.StatusTooManyRequests, w.Code)
	require.NotEmpty(t, w.Header().Get("Retry-After"))
	err := cs.Check(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil), testClient, testNow)
	require.Equal(t, ReasonRateLimit, rejectReasonOfErr(t, err))
}

// TestRateLimitBoundedKeys: 100,000 distinct keys keep the limiter within
// its cap, evicting the least recently used; expired keys are dropped.
func TestRateLimitBoundedKeys(t *testing.T) {
	const capKeys, n = 10000, 100000
	l := newRateLimiter(RateLimit{MaxRequests: 5, Window: 1}, capKeys)
	now := testNow.UnixNano()
	for i := range n {
		ok, _ := l.allowKey(uint64(i)*0x9e3779b97f4a7c15, now)
		require.True(t, ok)
	}
	require.LessOrEqual(t, l.size(), capKeys)
	require.GreaterOrEqual(t, l.size(), capKeys-rateLimitShards, "history kept up to the cap")

	// Once their windows are over, new keys push the stale ones out
	// instead of adding to them.
	later := now + int64(3*time.Second)
	for i := range rateLimitShards * 4 {
		l.allowKey(uint64(n+i)*0x9e3779b97f4a7c15, later)
	}
	require.Less(t, l.size(), capKeys/2)

	// The default cap holds under the request path too.
	cs := mustCompile(t, Config{RateLimit: &RateLimit{MaxRequests: 1, Window: 60, KeyBy: "path"}})
	for i := range n + 5000 {
		doRate(cs, testClient, "/p/"+strconv.Itoa(i), testNow, nil)
	}
	require.LessOrEqual(t, cs.rate.size(), defaultRateLimitKeys)
}

func TestRateLimitCompileErrors(t *testing.T) {
	_, err := Compile(Config{RateLimit: &RateLimit{KeyBy: "cookie"}})
	requireFields(t, err, "rateLimit.maxRequests", "rateLimit.window", "rateLimit.keyBy")
	_, err = Compile(Config{RateLimit: &RateLimit{MaxRequests: 1, Window: 1, KeyBy: "header"}})
	requireFields(t, err, "rateLimit.headerName")
}

// BenchmarkRateLimitChurn: every request is a new key, so the limiter
// inserts and evicts at its cap on every call.
func BenchmarkRateLimitChurn(b *testing.B) {
	l := newRateLimiter(RateLimit{MaxRequests: 5, Window: 1}, 10000)
	now := testNow.UnixNano()
	var i uint64
	b.ReportAllocs()
	for b.Loop() {
		i++
		l.allowKey(i*0x9e3779b97f4a7c15, now)
	}
}

// Keyed by IP, IPv6 clients share a /64's budget by default (as the
// connection limits do); IPv6PrefixLen 128 gives every address its own.
func TestRateLimitIPv6Prefix(t *testing.T) {
	req := httptest.NewRequest("GET", "/", nil)
	now := time.Now()
	a1, a2 := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	next := netip.MustParseAddr("2001:db8:0:1::1")
	l := newRateLimiter(RateLimit{MaxRequests: 1, Window: 60}, 100)
	ok1, _ := l.allow(req, a1, now)
	ok2, _ := l.allow(req, a2, now)
	ok3, _ := l.allow(req, next, now)
	require.Equal(t, []bool{true, false, true}, []bool{ok1, ok2, ok3})

	l = newRateLimiter(RateLimit{MaxRequests: 1, Window: 60}, 100)
	l.v6Bits = 128
	ok1, _ = l.allow(req, a1, now)
	ok2, _ = l.allow(req, a2, now)
	require.Equal(t, []bool{true, true}, []bool{ok1, ok2})
}
