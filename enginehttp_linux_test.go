//go:build linux

package smartproxy

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Plain-HTTP ports on the event loops (enginehttp_linux.go). The rest of the HTTP suite runs
// on them too (the default engine); these tests hold what is the loop's own.

// loopHTTPProxy starts a proxy on the event loops with one plain HTTP route a.test on a new
// port to target, and returns it with the port.
func loopHTTPProxy(t *testing.T, target string, edit func(*Route)) (*Proxy, int) {
	t.Helper()
	lp := newListenerPool(t)
	port := lp.port(t)
	r := httpRouteOn("r", port, target, "a.test")
	if edit != nil {
		edit(&r)
	}
	p := newTestProxyAsIs(t, lp, Options{Routes: []Route{r}})
	p.opts.Engine = EngineEventLoop // also under SMARTPROXY_TEST_ENGINE=goroutines
	require.NoError(t, p.Start(context.Background()))
	require.True(t, servedByEngine(p, port), "port %d: served by event loops", port)
	return p, port
}

// TestLoopHTTPIdleConnectionsHoldNoGoroutine: keep-alive connections served on the loop hold
// no goroutine between requests (the goroutine path holds one each), so the requests really
// ran on the loop.
func TestLoopHTTPIdleConnectionsHoldNoGoroutine(t *testing.T) {
	be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	p, port := loopHTTPProxy(t, be.addr(), nil)
	// The first connection starts whatever the proxy starts once (its loops, runners).
	c := dial(t, port)
	resp, body := exchangeKeep(t, c, bufio.NewReader(c), "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", "GET")
	require.Equal(t, "ok", body, resp.Status)
	time.Sleep(100 * time.Millisecond)
	before := runtime.NumGoroutine()
	const n = 100
	for range n {
		c := dial(t, port)
		resp, body := exchangeKeep(t, c, bufio.NewReader(c), "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", "GET")
		require.Equal(t, "ok", body, resp.Status)
	}
	time.Sleep(100 * time.Millisecond)
	require.Less(t, runtime.NumGoroutine()-before, n/4, "goroutines per idle keep-alive connection")
	require.Equal(t, n+1, p.Metrics().Active)
}

// TestLoopHTTPHandOffKeepsRecord: a connection the loop served, then handed to the goroutine
// path at a request it does not carry (HTTP/1.0), is one connection: one record, counted
// once, every byte counted once, closed once.
func TestLoopHTTPHandOffKeepsRecord(t *testing.T) {
	be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto+" "+r.URL.Path)
	}))
	p, port := loopHTTPProxy(t, be.addr(), nil)
	c := dial(t, port)
	br := bufio.NewReader(c)
	sent := 0
	req := "GET /loop HTTP/1.1\r\nHost: a.test\r\n\r\n"
	sent += len(req)
	_, body := exchangeKeep(t, c, br, req, "GET")
	require.Equal(t, "HTTP/1.1 /loop", body)
	// HTTP/1.0 and an upgrade-free keep-alive after it, pipelined in one write.
	old := "GET /old HTTP/1.0\r\nHost: a.test\r\nConnection: keep-alive\r\n\r\n"
	next := "GET /after HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
	sent += len(old) + len(next)
	_, err := io.WriteString(c, old+next)
	require.NoError(t, err)
	rest, err := io.ReadAll(br)
	require.NoError(t, err)
	require.Contains(t, string(rest), "HTTP/1.1 /old")
	require.Contains(t, string(rest), "HTTP/1.1 /after")
	requireNoRecords(t, p)
	m := p.Metrics()
	require.EqualValues(t, 1, m.Total, "one connection, one record")
	require.EqualValues(t, sent, m.BytesIn, "every client byte counted once, on the loop or after it")
}

// TestLoopHTTPExpectChecksFirst: a request with Expect: 100-continue gets its route's answer
// (here basicAuth's 401) without a 100 Continue first: the loop leaves the decision on the
// body to the path that checks the request, and the client never sends a body to a refusal.
func TestLoopHTTPExpectChecksFirst(t *testing.T) {
	be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "reached")
	}))
	_, port := loopHTTPProxy(t, be.addr(), func(r *Route) {
		r.Security = &RouteSecurity{BasicAuth: &BasicAuth{Users: []BasicAuthUser{{Username: "u", Password: "p"}}}}
	})
	c := dial(t, port)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, err := io.WriteString(c, "POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	require.NoError(t, err)
	line, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(line, "HTTP/1.1 401 "), "first line %q", line)
}
