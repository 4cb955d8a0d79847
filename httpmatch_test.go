package smartproxy

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCleanPath(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                 "/",
		"/a/b":             "/a/b",
		"/a/../b":          "/b",
		"/a//b/":           "/a/b/",
		"/a/./b/../../../": "/",
		"/../etc":          "/etc",
	} {
		require.Equal(t, want, cleanPath(in), in)
	}
}

func TestRouteTableHTTPMatching(t *testing.T) {
	t.Parallel()
	mk := func(name, path string, prio int, f func(*Route)) Route {
		r := fwd(name).Ports(80).Domains("a.test").Priority(prio).Route()
		r.Match.Path = path
		if f != nil {
			f(&r)
		}
		return r
	}
	routes, err := compileRoutes([]Route{
		mk("any", "", 0, nil),
		mk("wild", "/api/*", 0, nil),
		mk("param", "/api/:v", 0, nil),
		mk("exact", "/api/v1", 0, nil),
		mk("deep", "/api/v1/*", 0, nil),
		mk("prio", "/p/*", 5, nil),
		mk("longer-low", "/p/long/path", 0, nil),
		mk("tls", "/tls", 9, func(r *Route) { r.Action.TLS = &RouteTLS{Mode: TLSTerminate} }),
		mk("pass", "", 9, func(r *Route) { r.Action.TLS = &RouteTLS{Mode: TLSPassthrough} }),
	}, Defaults{})
	require.NoError(t, err)
	m, err := NewRouteTable(routes)
	require.NoError(t, err)
	match := func(method, target string, terminated bool) string {
		req := httptest.NewRequest(method, target, nil)
		r := m.Match(&MatchQuery{Port: 80, Domain: "a.test", Request: req, Terminated: terminated})
		if r == nil {
			return ""
		}
		return r.Name
	}
	require.Equal(t, "any", match("GET", "/", false))
	require.Equal(t, "wild", match("GET", "/api", false))
	require.Equal(t, "param", match("GET", "/api/v2", false))
	require.Equal(t, "exact", match("GET", "/api/v1", false))
	require.Equal(t, "deep", match("GET", "/api/v1/x", false))
	require.Equal(t, "wild", match("GET", "/api/v2/x", false))
	require.Equal(t, "prio", match("GET", "/p/long/path", false), "priority first")
	require.Equal(t, "any", match("GET", "/tls", false), "terminating routes only for terminated requests")
	require.Equal(t, "tls", match("GET", "/tls", true))
	require.Equal(t, "", match("GET", "/", true))

	// Connection-level matching: a route with request criteria takes no raw
	// TCP connection, but a TLS connection it terminates.
	require.Equal(t, "tls", m.Match(&MatchQuery{Port: 80, Domain: "a.test", TLSVersion: 0x0304}).Name)
	require.Equal(t, "pass", m.Match(&MatchQuery{Port: 80, Domain: "a.test"}).Name)
}

// TestRouteTableTSPathPrefix: as in TS, a match.path ending in '/' is a
// prefix and "/" matches every path; the more specific route still wins.
func TestRouteTableTSPathPrefix(t *testing.T) {
	mk := func(name, path string) Route {
		r := fwd(name).Ports(80).Domains("a.test").Route()
		r.Match.Path = path
		return r
	}
	routes, err := compileRoutes([]Route{mk("root", "/"), mk("api", "/api/"), mk("users", "/api/users")}, Defaults{})
	require.NoError(t, err)
	m, err := NewRouteTable(routes)
	require.NoError(t, err)
	match := func(target string) string {
		r := m.Match(&MatchQuery{Port: 80, Domain: "a.test", Request: httptest.NewRequest("GET", target, nil)})
		if r == nil {
			return ""
		}
		return r.Name
	}
	require.Equal(t, "root", match("/"))
	require.Equal(t, "root", match("/anything/else"))
	require.Equal(t, "root", match("/apix"))
	require.Equal(t, "api", match("/api/"))
	require.Equal(t, "api", match("/api/orders/7"))
	require.Equal(t, "users", match("/api/users"))
	require.Equal(t, "api", match("/api/users/42"), "an exact pattern stays exact")
}

func TestHTTPMatchHeadersAndMethods(t *testing.T) {
	t.Parallel()
	h := &httpRoute{}
	v := &routeValidator{name: "t"}
	h.headers = v.compileHeaderMatch("match.headers", map[string]string{"x-env": "prod*", "Accept": "text/html"})
	h.methods = v.compileMethods("match.method", []string{"get", "HEAD"})
	require.Empty(t, v.Errors())
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("X-Env", "production")
	req.Header.Add("Accept", "application/json")
	req.Header.Add("Accept", "text/html")
	require.True(t, h.matchRequest(req))
	req.Method = http.MethodPost
	require.False(t, h.matchRequest(req))
	req.Method = http.MethodHead
	req.Header.Del("X-Env")
	require.False(t, h.matchRequest(req), "a missing header never matches")
}

func TestTCPMatchStillAllocatesNothing(t *testing.T) {
	// Not parallel: testing.AllocsPerRun counts the allocations of the whole process.
	r := fwd("p").Ports(80).Domains("a.test").Route()
	r.Match.Path = "/x"
	routes, err := compileRoutes([]Route{r, fwd("plain").Ports(80).Domains("*.test").Route()}, Defaults{})
	require.NoError(t, err)
	m, err := NewRouteTable(routes)
	require.NoError(t, err)
	q := MatchQuery{Port: 80, Domain: "a.test", TLSVersion: 0x0304}
	require.Equal(t, "plain", m.Match(&q).Name)
	require.Zero(t, testing.AllocsPerRun(100, func() { m.Match(&q) }))
}
