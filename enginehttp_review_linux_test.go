//go:build linux

package smartproxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Regression tests from the review of the event loop's HTTP mode (enginehttp_linux.go): each
// runs the same client bytes on both engines, the goroutine path being the reference.

// engines are the two engines a plain-HTTP port may be served on.
var engines = []Engine{EngineEventLoop, EngineGoroutines}

// onEngines runs f on each engine, in parallel subtests, and returns what each gave.
func onEngines(t *testing.T, f func(t *testing.T, engine Engine) []string) map[Engine][]string {
	outcomes := map[Engine][]string{}
	var mu sync.Mutex
	t.Run("engines", func(t *testing.T) {
		for _, engine := range engines {
			t.Run(engine.String(), func(t *testing.T) {
				t.Parallel()
				got := f(t, engine)
				mu.Lock()
				outcomes[engine] = got
				mu.Unlock()
			})
		}
	})
	return outcomes
}

// TestHTTPRetriedBodyIsTheClients: a POST whose first host refuses the connect is sent to the
// next host with its body as the client sent it, also when that host's address (the Host
// field) is longer than the first's, so the outgoing head is too.
func TestHTTPRetriedBodyIsTheClients(t *testing.T) {
	t.Parallel()
	for _, engine := range engines {
		t.Run(engine.String(), func(t *testing.T) {
			t.Parallel()
			// The backend on 127.0.0.10, nothing on 127.0.0.1 at its port: the shorter
			// address refuses, the longer one answers.
			ln, err := net.Listen("tcp", "127.0.0.10:0")
			require.NoError(t, err)
			be := newEchoServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				_, _ = w.Write(b)
			}))
			_ = be.Listener.Close() // httptest's own: the test's on 127.0.0.10 instead
			be.Listener = ln
			be.Start()
			t.Cleanup(be.Close)
			bport := ln.Addr().(*net.TCPAddr).Port
			if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(bport)); err == nil {
				_ = c.Close()
				t.Skip("127.0.0.1 listens on the backend's port")
			}
			lp := newListenerPool(t)
			port := lp.port(t)
			r := NewRoute("lb").Ports(port).Domains("lb.test").
				Target(Target{Host: StringList{"127.0.0.1", "127.0.0.10"}, Port: TargetPort(bport)}).Route()
			startTestProxy(t, lp, Options{Engine: engine, Routes: []Route{r}})
			c := dial(t, port)
			br := bufio.NewReader(c)
			body := strings.Repeat("0123456789", 10)
			// Round-robin: one of the first two requests tries 127.0.0.1 first.
			for i := range 2 {
				resp, got := exchangeKeep(t, c, br, "POST /p HTTP/1.1\r\nHost: lb.test\r\nContent-Length: "+
					strconv.Itoa(len(body))+"\r\n\r\n"+body, "POST")
				require.Equal(t, 200, resp.StatusCode, "request %d", i)
				require.Equal(t, body, got, "request %d: the body the backend got", i)
			}
		})
	}
}

// TestHTTPStaleReplayOnlyWithoutBody: a GET with a body, sent on a pooled backend connection
// that the backend closes after reading it, is not sent again on a new connection (the
// backend may have acted on it, and a request with a body is not replayable: h1client's
// rule): the backend sees it once, the client gets the 502.
func TestHTTPStaleReplayOnlyWithoutBody(t *testing.T) {
	t.Parallel()
	for _, engine := range engines {
		t.Run(engine.String(), func(t *testing.T) {
			t.Parallel()
			var seen atomic.Int64 // requests for /again the backend read
			be := startBackend(t, "127.0.0.1:0", func(c net.Conn) {
				br := bufio.NewReader(c)
				for {
					r, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, r.Body)
					if r.URL.Path == "/again" && seen.Add(1) == 1 {
						return // read, then closed unanswered: a pooled connection gone stale
					}
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			})
			lp := newListenerPool(t)
			port := lp.port(t)
			startTestProxy(t, lp, Options{Engine: engine, Routes: []Route{httpRouteOn("r", port, be.addr(), "a.test")}})
			c := dial(t, port)
			br := bufio.NewReader(c)
			resp, _ := exchangeKeep(t, c, br, "GET /first HTTP/1.1\r\nHost: a.test\r\n\r\n", "GET")
			require.Equal(t, 200, resp.StatusCode)
			resp, _ = exchangeKeep(t, c, br, "GET /again HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4\r\n\r\nbody", "GET")
			require.Equal(t, 502, resp.StatusCode)
			require.Equal(t, int64(1), seen.Load(), "times the backend read the request")
		})
	}
}

// TestHTTPBlockingCheckStallsNoOtherClient: a route whose check may block its caller (a
// jwtAuth key set fetched from a server that does not answer) holds up no other client's
// request: on the event loops such a route is the goroutine path's, as a loop blocked in it
// would stall every connection it serves. Half the connections send a token (each waits for
// the one fetch), the other half a request for another route on the same port, which must all
// be answered while the fetch hangs.
func TestHTTPBlockingCheckStallsNoOtherClient(t *testing.T) {
	t.Parallel()
	for _, engine := range engines {
		t.Run(engine.String(), func(t *testing.T) {
			t.Parallel()
			release := make(chan struct{})
			var once sync.Once
			free := func() { once.Do(func() { close(release) }) }
			jwks := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-release:
				case <-r.Context().Done():
				}
				http.Error(w, "no keys", http.StatusServiceUnavailable)
			}))
			be := echoBackend(t, "be")
			lp := newListenerPool(t)
			port := lp.port(t)
			guarded := httpRouteOn("guarded", port, be.addr(), "jwt.test")
			guarded.Security = &RouteSecurity{JWTAuth: &JWTAuth{JWKSURL: jwks.URL, Algorithm: []string{"RS256"}}}
			open := httpRouteOn("open", port, be.addr(), "open.test")
			startTestProxy(t, lp, Options{Engine: engine, Routes: []Route{guarded, open}})
			t.Cleanup(free)                // before the proxy's Stop and the server's Close (cleanups run last first)
			n := 8 * runtime.GOMAXPROCS(0) // enough for each loop to serve both kinds
			conns := make([]net.Conn, n)
			brs := make([]*bufio.Reader, n)
			for i := range conns {
				conns[i] = dial(t, port)
				brs[i] = bufio.NewReader(conns[i])
				resp, _ := exchangeKeep(t, conns[i], brs[i], "GET / HTTP/1.1\r\nHost: open.test\r\n\r\n", "GET")
				require.Equal(t, 200, resp.StatusCode)
			}
			// {"alg":"RS256","kid":"k"}.{}.sig
			token := "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.e30.c2ln"
			for i := 0; i < n; i += 2 {
				_, err := io.WriteString(conns[i], "GET / HTTP/1.1\r\nHost: jwt.test\r\nAuthorization: Bearer "+token+"\r\n\r\n")
				require.NoError(t, err)
			}
			for i := 1; i < n; i += 2 {
				resp, _ := exchangeKeep(t, conns[i], brs[i], "GET / HTTP/1.1\r\nHost: open.test\r\n\r\n", "GET")
				require.Equal(t, 200, resp.StatusCode, "connection %d", i)
			}
			free()
			for i := 0; i < n; i += 2 {
				require.NoError(t, conns[i].SetDeadline(time.Now().Add(5*time.Second)))
				resp, err := http.ReadResponse(brs[i], &http.Request{Method: "GET"})
				require.NoError(t, err)
				require.Equal(t, 401, resp.StatusCode)
			}
		})
	}
}

// TestHTTPLeasesEndWithTheirRequests: on a least-connections route whose first host refuses
// connects, requests that retried, one abandoned by its client while the backend works on it,
// and one in flight when another goroutine kills the connection (Stop past its deadline)
// leave no host counted active, and the refused host counted failed as often on both engines.
func TestHTTPLeasesEndWithTheirRequests(t *testing.T) {
	t.Parallel()
	failures := map[Engine]int{}
	var mu sync.Mutex
	t.Run("engines", func(t *testing.T) {
		for _, engine := range engines {
			t.Run(engine.String(), func(t *testing.T) {
				t.Parallel()
				hang := make(chan struct{})
				ln, err := net.Listen("tcp", "127.0.0.10:0")
				require.NoError(t, err)
				arrived := make(chan struct{}, 4)
				be := newEchoServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/hang" {
						arrived <- struct{}{}
						select {
						case <-hang:
						case <-r.Context().Done():
						}
					}
					_, _ = io.WriteString(w, "ok")
				}))
				_ = be.Listener.Close()
				be.Listener = ln
				be.Start()
				t.Cleanup(be.Close)
				t.Cleanup(func() { close(hang) })
				bport := ln.Addr().(*net.TCPAddr).Port
				lp := newListenerPool(t)
				port := lp.port(t)
				r := NewRoute("lc").Ports(port).Domains("lc.test").
					Target(Target{Host: StringList{"127.0.0.1", "127.0.0.10"}, Port: TargetPort(bport)}).Route()
				r.Action.LoadBalancing = &LoadBalancing{Algorithm: AlgorithmLeastConnections}
				p := startTestProxy(t, lp, Options{Engine: engine, Routes: []Route{r}})
				idle := func() bool {
					for _, s := range p.TargetHealth() {
						if s.ActiveConnections != 0 {
							return false
						}
					}
					return true
				}
				c := dial(t, port)
				br := bufio.NewReader(c)
				for range 3 {
					resp, _ := exchangeKeep(t, c, br, "GET / HTTP/1.1\r\nHost: lc.test\r\n\r\n", "GET")
					require.Equal(t, 200, resp.StatusCode)
				}
				// Abandoned: the client leaves while the backend works on it.
				gone := dial(t, port)
				_, err = io.WriteString(gone, "GET /hang HTTP/1.1\r\nHost: lc.test\r\n\r\n")
				require.NoError(t, err)
				<-arrived
				require.False(t, idle(), "the request under way counts")
				require.NoError(t, gone.Close())
				require.Eventually(t, idle, 5*time.Second, 5*time.Millisecond, "%+v", p.TargetHealth())
				// Killed: Stop's deadline passes with the request under way.
				_, err = io.WriteString(c, "GET /hang HTTP/1.1\r\nHost: lc.test\r\n\r\n")
				require.NoError(t, err)
				<-arrived
				ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
				defer cancel()
				require.ErrorIs(t, p.Stop(ctx), context.DeadlineExceeded)
				require.True(t, idle(), "%+v", p.TargetHealth())
				for _, s := range p.TargetHealth() {
					if strings.HasPrefix(s.Addr, "127.0.0.1:") {
						mu.Lock()
						failures[engine] = s.ConsecutiveFailures
						mu.Unlock()
					}
				}
			})
		}
	})
	require.Equal(t, failures[EngineGoroutines], failures[EngineEventLoop], "the refused host's failures")
}

// TestHTTPUpdateRoutesRulesKeepAlive: UpdateRoutes between requests of one keep-alive
// connection served on the loop applies to its next request as on the goroutine path: new
// checks answer it, an IP list refuses it, a removed route is no route, a redirect (not the
// loop's) is handed off and answered.
func TestHTTPUpdateRoutesRulesKeepAlive(t *testing.T) {
	t.Parallel()
	outcomes := onEngines(t, func(t *testing.T, engine Engine) []string {
		be := echoBackend(t, "be")
		lp := newListenerPool(t)
		port := lp.port(t)
		route := func() *RouteBuilder { return NewRoute("r").Ports(port).Domains("u.test").ForwardTo(be.addr()) }
		p := startTestProxy(t, lp, Options{Engine: engine, Routes: []Route{route().Route()}})
		c := dial(t, port)
		br := bufio.NewReader(c)
		var got []string
		for _, r := range []Route{
			route().Route(),
			route().BasicAuth(&BasicAuth{Users: []BasicAuthUser{{Username: "u", Password: "p"}}}).Route(),
			route().AllowIPs("10.0.0.0/8").Route(),
			NewRoute("other").Ports(port).Domains("other.test").ForwardTo(be.addr()).Route(),
			route().MaxConnections(1).Route(),
			route().Redirect("https://elsewhere.test{path}", 308).Route(),
			route().Route(),
		} {
			require.NoError(t, p.UpdateRoutes([]Route{r}))
			resp, _ := exchangeKeep(t, c, br, "GET /x HTTP/1.1\r\nHost: u.test\r\n\r\n", "GET")
			got = append(got, strconv.Itoa(resp.StatusCode)+" "+resp.Header.Get("Location")+" "+resp.Header.Get("Connection"))
		}
		return got
	})
	require.Equal(t, []string{"200  ", "401  ", "403  ", "404  ", "200  ", "308 https://elsewhere.test/x ", "200  "},
		outcomes[EngineGoroutines])
	require.Equal(t, outcomes[EngineGoroutines], outcomes[EngineEventLoop])
}

// TestHTTPExpectContinueOnce: a client that sends its head with Expect: 100-continue and
// waits gets a 100 Continue before it sends the body, and then the final response, as on the
// goroutine path; a request its route refuses gets the refusal, never a 100 first (the
// loop's own, before the route's checks).
func TestHTTPExpectContinueOnce(t *testing.T) {
	t.Parallel()
	outcomes := onEngines(t, func(t *testing.T, engine Engine) []string {
		be := echoBackend(t, "be")
		lp := newListenerPool(t)
		port := lp.port(t)
		open := NewRoute("open").Ports(port).Domains("e.test").ForwardTo(be.addr()).Route()
		closed := NewRoute("closed").Ports(port).Domains("auth.test").ForwardTo(be.addr()).
			BasicAuth(&BasicAuth{Users: []BasicAuthUser{{Username: "u", Password: "p"}}}).Route()
		startTestProxy(t, lp, Options{Engine: engine, Routes: []Route{open, closed}})
		var got []string
		for _, host := range []string{"e.test", "auth.test"} {
			c := dial(t, port)
			require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
			br := bufio.NewReader(c)
			_, err := io.WriteString(c, "POST /x HTTP/1.1\r\nHost: "+host+"\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
			require.NoError(t, err)
			resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
			require.NoError(t, err)
			got = append(got, host+" "+strconv.Itoa(resp.StatusCode))
			if resp.StatusCode == 100 {
				_, err = io.WriteString(c, "hello")
				require.NoError(t, err)
				for {
					resp, err = http.ReadResponse(br, &http.Request{Method: "POST"})
					require.NoError(t, err)
					if resp.StatusCode >= 200 { // (a 100 the backend sends may be relayed too)
						got = append(got, strconv.Itoa(resp.StatusCode))
						break
					}
				}
			}
			_ = c.Close()
		}
		return got
	})
	require.Equal(t, []string{"e.test 100", "200", "auth.test 401"}, outcomes[EngineGoroutines])
	require.Equal(t, outcomes[EngineGoroutines], outcomes[EngineEventLoop])
}
