package smartproxy

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestCanonicalPath(t *testing.T) {
	// Not parallel: testing.AllocsPerRun counts the allocations of the whole process.
	tests := []struct {
		in, want string
		v        pathVerdict
	}{
		{"/", "/", pathCanonical},
		{"/a/b", "/a/b", pathCanonical},
		{"/a/b/", "/a/b/", pathCanonical},
		{"/.well-known/x", "/.well-known/x", pathCanonical},
		{"/a/%20b%3Bc", "/a/%20b%3Bc", pathCanonical},
		{"*", "*", pathCanonical},
		{"", "", pathCanonical},
		{"/a/./b", "/a/b", pathNormalizable},
		{"/a/../b", "/b", pathNormalizable},
		{"/a/b/..", "/a/", pathNormalizable},
		{"/a/b/.", "/a/b/", pathNormalizable},
		{"/..", "/", pathNormalizable},
		{"/../../etc/passwd", "/etc/passwd", pathNormalizable},
		{"//a///b//", "/a/b/", pathNormalizable},
		{"/%2e%2E/admin", "/admin", pathNormalizable},
		{"/public/%2e%2e/admin/x", "/admin/x", pathNormalizable},
		{"/%61dmin/%7Euser", "/admin/~user", pathNormalizable},
		{"/a%3bb", "/a%3Bb", pathNormalizable},
		{"/admin/..%2f", "", pathAmbiguous},
		{"/admin%2Fsecret", "", pathAmbiguous},
		{"/admin%5csecret", "", pathAmbiguous},
		{"/admin\\secret", "", pathAmbiguous},
		{"/admin;x/secret", "", pathAmbiguous},
		{"/public/..;/admin", "", pathAmbiguous},
		{"/a%00b", "", pathAmbiguous},
		{"/a%0d%0ab", "", pathAmbiguous},
		{"/a%2", "", pathAmbiguous},
	}
	for _, tc := range tests {
		got, v := canonicalPath(tc.in)
		require.Equal(t, tc.v, v, tc.in)
		if v != pathAmbiguous {
			require.Equal(t, tc.want, got, tc.in)
			again, v2 := canonicalPath(got)
			require.Equal(t, pathCanonical, v2, "canonical form of %q is not canonical: %q", tc.in, got)
			require.Equal(t, got, again)
		}
	}
	require.Zero(t, testing.AllocsPerRun(100, func() { canonicalPath("/api/v1/users/42") }))
}

// pathBackend records the request target each request arrived with.
func pathBackend(t *testing.T) (*echoServer, func() []string) {
	var mu sync.Mutex
	var seen []string
	be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		seen = append(seen, r.RequestURI)
		mu.Unlock()
		_, _ = io.WriteString(w, r.RequestURI)
	}))
	return be, func() []string {
		mu.Lock()
		defer mu.Unlock()
		s := seen
		seen = nil
		return s
	}
}

// TestHTTPPathAmbiguity: on a port where a route checks /admin/* with
// basicAuth and a catch-all forwards to the same backend, no spelling of
// a path reaches the backend as anything but the path the proxy checked,
// over HTTP/1.1 and h2c, with and without a request body (the synchronous
// backend client and http.Transport).
func TestHTTPPathAmbiguity(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port, rawPort := lp.port(t), lp.port(t)
	be, seen := pathBackend(t)
	admin := httpRouteOn("admin", port, be.addr(), "a.test")
	admin.Match.Path = "/admin/*"
	admin.Security = &RouteSecurity{BasicAuth: &BasicAuth{Users: []BasicAuthUser{{Username: "u", Password: "p"}}}}
	strict := httpRouteOn("strict", port, be.addr(), "a.test")
	strict.Match.Path = "/strict/*"
	strict.Action.Options = &ActionOptions{PathNormalization: PathReject}
	rw := httpRouteOn("rw", port, be.addr(), "a.test")
	rw.Match.Path = "/rw/*"
	rw.Action.Rewrite = &URLRewrite{Pattern: `^/rw/([^?]*)`, Target: "/v2/{headers.x-user}/$1"}
	site := httpRouteOn("site", port, be.addr(), "a.test")
	site.Priority = -1
	// A port where nothing depends on the path forwards it as received.
	raw := httpRouteOn("raw", rawPort, be.addr(), "a.test")
	startTestProxy(t, lp, Options{Routes: []Route{admin, strict, rw, site, raw}})

	tests := []struct {
		path   string
		header http.Header
		status int
		want   string // the request target the backend got; "" for none
	}{
		{"/public/x", nil, 200, "/public/x"},
		{"/admin/x", nil, 401, ""},
		{"/admin/..%2f", nil, 400, ""},
		{"/admin/..%2fpublic", nil, 400, ""},
		{"/admin%2Fsecret", nil, 400, ""},
		{"/admin%5Csecret", nil, 400, ""},
		{"/admin;x/secret", nil, 400, ""},
		{"/public/..;/admin/secret", nil, 400, ""},
		{"/admin/../public", nil, 200, "/public"},
		{"/public/../admin/secret", nil, 401, ""},
		{"/public/%2e%2e/admin/secret", nil, 401, ""},
		{"//admin/secret", nil, 401, ""},
		{"/%61dmin/secret", nil, 401, ""},
		{"/public//a/./b/%7Euser?q=%2F..", nil, 200, "/public/a/b/~user?q=%2F.."},
		{"/strict/x", nil, 200, "/strict/x"},
		{"/strict/./x", nil, 400, ""},
		{"/public/../strict/x", nil, 400, ""},
		{"/rw/a", hdr("X-User", "bob"), 200, "/v2/bob/a"},
		{"/rw/a", hdr("X-User", "..%2Fadmin"), 400, ""},
		{"/rw/a", hdr("X-User", "x;y"), 400, ""},
		{"/rw/a", hdr("X-User", "../.."), 200, "/a"},
	}
	for _, proto := range []string{"http1", "h2c"} {
		c, _ := proxyClient(t, port, nil, false)
		if proto == "h2c" {
			var protos http.Protocols
			protos.SetUnencryptedHTTP2(true)
			c.Transport.(*http.Transport).Protocols = &protos
		}
		for _, method := range []string{"GET", "POST"} {
			for _, tc := range tests {
				t.Run(proto+" "+method+" "+tc.path, func(t *testing.T) {
					var body io.Reader
					if method == "POST" {
						body = strings.NewReader("body")
					}
					resp, got := do(t, c, method, "http://a.test"+tc.path, tc.header, body)
					require.Equal(t, tc.status, resp.StatusCode, got)
					if tc.want == "" {
						require.Empty(t, seen(), "the backend got a refused request")
						return
					}
					require.Equal(t, tc.want, got)
					require.Equal(t, []string{tc.want}, seen())
				})
			}
		}
	}

	t.Run("raw socket", func(t *testing.T) {
		c := dial(t, port)
		br := bufio.NewReader(c)
		// Pipelined on one keep-alive connection: a backslash, which no
		// client library sends unescaped, then a clean request.
		_, err := io.WriteString(c, "GET /admin\\secret HTTP/1.1\r\nHost: a.test\r\n\r\n"+
			"GET /public/./y HTTP/1.1\r\nHost: a.test\r\n\r\n")
		require.NoError(t, err)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		require.Equal(t, 400, resp.StatusCode)
		resp, err = http.ReadResponse(br, nil)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		require.Equal(t, 200, resp.StatusCode)
		require.Equal(t, "/public/y", string(b))
		require.Equal(t, []string{"/public/y"}, seen())
	})

	t.Run("port without path rules", func(t *testing.T) {
		c, _ := proxyClient(t, rawPort, nil, false)
		resp, got := do(t, c, "GET", "http://a.test/a/..%2fb;c", nil, nil)
		require.Equal(t, 200, resp.StatusCode, got)
		require.Equal(t, "/a/..%2fb;c", got)
		require.Equal(t, []string{"/a/..%2fb;c"}, seen())
	})
}

func TestPathNormalizationOption(t *testing.T) {
	t.Parallel()
	r := httpRouteOn("x", 8080, "127.0.0.1:1")
	r.Action.Options = &ActionOptions{PathNormalization: "loose"}
	_, err := New(Options{Routes: []Route{r}, Logger: testLogger()})
	require.ErrorContains(t, err, "action.options.pathNormalization")
}

// BenchmarkCanonicalPath is the per-request cost of the path check on a
// port with path rules: a clean path (one scan) and one to normalise.
func BenchmarkCanonicalPath(b *testing.B) {
	for _, p := range []string{"/api/v1/users/42/posts", "/api/v1/../v2/./users//42"} {
		b.Run(p, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				canonicalPath(p)
			}
		})
	}
}
