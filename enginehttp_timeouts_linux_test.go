//go:build linux

package smartproxy

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/stretchr/testify/require"
)

// The connection-level timeouts of a plain-HTTP port, on both engines (the goroutine path the
// reference): what the event loop's HTTP mode holds or hands off must be timed as serve times it.

// startHTTPPortOn starts a proxy with routes on a new port (made by routes) served by engine,
// whatever SMARTPROXY_TEST_ENGINE says, and returns it with the port.
func startHTTPPortOn(t *testing.T, engine Engine, opts Options, routes func(port int) []Route) (*Proxy, int) {
	t.Helper()
	lp := newListenerPool(t)
	port := lp.port(t)
	opts.Routes = routes(port)
	p := newTestProxy(t, lp, opts)
	p.opts.Engine = engine
	require.NoError(t, p.Start(context.Background()))
	// (With SMARTPROXY_TEST_NETHTTP=1 the fast path is off, and no plain-HTTP port is the loops'.)
	require.Equal(t, engine == EngineEventLoop && p.fastPath(), servedByEngine(p, port), "port %d: served by event loops", port)
	return p, port
}

// TestHTTPFirstBytesShareInitialDataTimeout: on a plain-HTTP port with a TLS route, a client
// whose first byte (a TLS record's) comes late has only what is left of InitialDataTimeout for
// the rest of its ClientHello: the loop's wait for the first bytes and the goroutine path's
// sniff after the hand-off share one budget from the accept, as serve's sniff and readHello do.
// A new budget at the hand-off would let it hold the connection until 1.6 s.
func TestHTTPFirstBytesShareInitialDataTimeout(t *testing.T) {
	t.Parallel()
	const budget = time.Second
	for _, engine := range engines {
		t.Run(engine.String(), func(t *testing.T) {
			t.Parallel()
			tunnel := startBackend(t, "127.0.0.1:0", echo)
			web := echoBackend(t, "web")
			p, port := startHTTPPortOn(t, engine, Options{InitialDataTimeout: budget}, func(port int) []Route {
				return []Route{
					httpRouteOn("web", port, web.addr(), "a.test"),
					NewRoute("tls").Ports(port).Domains("tls.test").TLSPassthrough().ForwardTo(tunnel.addr()).Route(),
				}
			})
			start := time.Now() // before the accept: the proxy's budget ends after start+budget
			c := dial(t, port)
			// Well within the budget (a late write still ends by it: the loop's own wait).
			time.Sleep(budget * 6 / 10)
			_, err := c.Write([]byte{0x16})
			require.NoError(t, err)
			_, got := awaitClose(t, c, 5*time.Second)
			total := time.Since(start)
			require.Empty(t, got)
			require.Greater(t, total, budget*9/10, "closed before InitialDataTimeout")
			require.Less(t, total, budget*13/10, "the ClientHello got more than InitialDataTimeout from the accept")
			requireNoRecords(t, p)
			require.Zero(t, tunnel.accepts.Load(), "no ClientHello, no route")
		})
	}
}

// TestHTTPHeldBodyTrickleIsActivity: a request body that comes slowly, each piece well within
// InactivityTimeout but the whole twice as long, keeps its connection alive, and the request
// reaches the backend whole, on both engines. The loop holds a Content-Length body until it is
// whole: the bytes must mark activity as they come (as meterConn's reads do) and be counted
// once, when the request is served.
func TestHTTPHeldBodyTrickleIsActivity(t *testing.T) {
	t.Parallel()
	const inactivity = 500 * time.Millisecond
	for _, engine := range engines {
		t.Run(engine.String(), func(t *testing.T) {
			t.Parallel()
			be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				_, _ = w.Write(b)
			}))
			p, port := startHTTPPortOn(t, engine, Options{InactivityTimeout: inactivity}, func(port int) []Route {
				return []Route{httpRouteOn("r", port, be.addr(), "a.test")}
			})
			c := dial(t, port)
			require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
			body := pattern(200, 7)
			head := "POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: 200\r\nConnection: close\r\n\r\n"
			_, err := io.WriteString(c, head)
			require.NoError(t, err)
			// 20 pieces 50 ms apart: about twice InactivityTimeout in all.
			require.NoError(t, writeSlowly(c, body, 10, 50*time.Millisecond))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			require.NoError(t, err, "the connection was closed while the body came in")
			got, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			require.Equal(t, body, got, "the body the backend received")
			requireNoRecords(t, p)
			m := p.Metrics()
			require.Zero(t, m.Closed[connection.ReasonInactivity], "closed for inactivity")
			require.EqualValues(t, len(head)+len(body), m.BytesIn, "every client byte counted once")
		})
	}
}
