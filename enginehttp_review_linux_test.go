//go:build linux

package smartproxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// Regression tests from the review of the event loop's HTTP mode (enginehttp_linux.go): each
// runs the same client bytes on both engines, the goroutine path being the reference.

// engines are the two engines a plain-HTTP port may be served on.
var engines = []Engine{EngineEventLoop, EngineGoroutines}

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
