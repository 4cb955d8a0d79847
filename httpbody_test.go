package smartproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// readHead reads an HTTP/1.1 request head from br (nil at EOF).
func readHead(br *bufio.Reader) []byte {
	var head []byte
	for {
		line, err := br.ReadSlice('\n')
		head = append(head, line...)
		if err != nil {
			return nil
		}
		if string(line) == "\r\n" {
			return head
		}
	}
}

// readAllUntilClose reads c until the proxy closes it.
func readAllUntilClose(t *testing.T, c net.Conn) (string, error) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

// TestHTTPBackendBreaksOff: a backend that closes or resets after its
// head or mid-body gets the client a response that is visibly truncated
// (the head and the bytes that came, then the close: for Content-Length
// a short body, for chunked no terminating chunk), over the synchronous
// client (GET) and http.Transport (POST); one that sends nothing gets
// the client a 502.
func TestHTTPBackendBreaksOff(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		reply string // what the backend sends before it ends
		reset bool   // end with a reset rather than a FIN
		want  string // what the client gets, up to the close
	}{
		{"length short then close", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789", false,
			"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n*\r\n0123456789"},
		{"length short then reset", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789", true,
			"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n*\r\n0123456789"},
		{"head only then close", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", false,
			"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n*\r\n"},
		{"chunked then reset", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", true,
			"HTTP/1.1 200 OK\r\n*Transfer-Encoding: chunked\r\n*\r\n5\r\nhello\r\n"},
		{"nothing", "", false, "HTTP/1.1 502 Bad Gateway\r\n*"},
	}
	for _, tc := range cases {
		for _, method := range []string{"GET", "POST"} {
			t.Run(tc.name+" "+method, func(t *testing.T) {
				lp := newListenerPool(t)
				port := lp.port(t)
				be := startBackend(t, "127.0.0.1:0", func(c net.Conn) {
					br := bufio.NewReader(c)
					if readHead(br) == nil {
						return
					}
					if method == "POST" {
						_, _ = io.ReadFull(br, make([]byte, 4))
					}
					_, _ = io.WriteString(c, tc.reply)
					time.Sleep(20 * time.Millisecond) // the reply goes out before the reset
					if tc.reset {
						_ = c.(*net.TCPConn).SetLinger(0)
					}
				})
				startTestProxy(t, lp, Options{Routes: []Route{httpRouteOn("r", port, be.addr(), "a.test")}})
				c := dial(t, port)
				req := method + " / HTTP/1.1\r\nHost: a.test\r\n"
				if tc.reply == "" {
					req += "Connection: close\r\n" // the 502 leaves the connection usable
				}
				if method == "POST" {
					req += "Content-Length: 4\r\n\r\nbody"
				} else {
					req += "\r\n"
				}
				_, err := io.WriteString(c, req)
				require.NoError(t, err)
				got, _ := readAllUntilClose(t, c)
				require.True(t, truncGlob(tc.want, got), "got %q, want %q", got, tc.want)
			})
		}
	}
}

// truncGlob matches s against pattern, where '*' stands for any run of
// bytes that stays within one header line.
func truncGlob(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for i, part := range parts[1:] {
		last := i == len(parts)-2
		for {
			if last && part == "" {
				return true
			}
			if strings.HasPrefix(s, part) && (!last || len(s) == len(part)) {
				s = s[len(part):]
				break
			}
			if s == "" {
				return false
			}
			s = s[1:]
		}
	}
	return s == ""
}

// TestHTTPRequestTrailers: a chunked request's trailer fields reach the
// backend, HTTP/1.1 and h2c, from an HTTP/1.1 client.
func TestHTTPRequestTrailers(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"http1", "h2c"} {
		t.Run(backend, func(t *testing.T) {
			lp := newListenerPool(t)
			port := lp.port(t)
			got := make(chan string, 1)
			// Both protocols served: the route's BackendProtocol picks one.
			be := startH2CEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				got <- string(b) + "|" + r.Proto + "|" + r.Trailer.Get("X-Checksum") + "|" + r.Trailer.Get("X-Other")
			}))
			r := httpRouteOn("r", port, be.addr(), "a.test")
			r.Action.Options = &ActionOptions{BackendProtocol: BackendProtocol(backend)}
			startTestProxy(t, lp, Options{Routes: []Route{r}})
			c := dial(t, port)
			_, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum, X-Other\r\n\r\n"+
				"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n")
			require.NoError(t, err)
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			require.NoError(t, err)
			_ = resp.Body.Close()
			require.Equal(t, 200, resp.StatusCode)
			want := "hello|HTTP/1.1|abc|1"
			if backend == "h2c" {
				want = "hello|HTTP/2.0|abc|1"
			}
			require.Equal(t, want, <-got)
		})
	}
}

// TestHTTPMalformedChunkedBody: a chunked request body whose framing is
// broken gets the client a 400 and a closed connection. When the bad
// bytes came with the head, no backend sees anything; when they come
// later, the backend's connection is torn down after the valid chunks,
// without a terminating chunk, so it never sees a complete request.
func TestHTTPMalformedChunkedBody(t *testing.T) {
	// Not parallel: it sets the package variable chunkPrefetchWait.
	bad := map[string]string{
		"size overflow":   "fffffffffffffffffffff\r\nx\r\n0\r\n\r\n",
		"bare LF in ext":  "5;ext=1\nhello\r\n0\r\n\r\n",
		"bad size":        "zz\r\nhello\r\n0\r\n\r\n",
		"no CRLF at end":  "5\r\nhelloXX0\r\n\r\n",
		"bare LF in size": "5\nhello\r\n0\r\n\r\n",
	}
	for name, tail := range bad {
		for _, late := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s late=%v", name, late), func(t *testing.T) {
				old := chunkPrefetchWait
				chunkPrefetchWait = 2 * time.Second // the buffered case must be seen as buffered, however busy the machine
				if late {
					chunkPrefetchWait = 10 * time.Millisecond
				}
				t.Cleanup(func() { chunkPrefetchWait = old })
				lp := newListenerPool(t)
				port := lp.port(t)
				got := make(chan string, 4)
				be := startBackend(t, "127.0.0.1:0", func(c net.Conn) {
					_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
					b, _ := io.ReadAll(c)
					got <- string(b)
				})
				startTestProxy(t, lp, Options{Routes: []Route{httpRouteOn("r", port, be.addr(), "a.test")}})
				c := dial(t, port)
				head := "POST /up HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
				if late {
					_, err := io.WriteString(c, head)
					require.NoError(t, err)
					time.Sleep(300 * time.Millisecond)
					_, err = io.WriteString(c, tail)
					require.NoError(t, err)
				} else {
					_, err := io.WriteString(c, head+tail)
					require.NoError(t, err)
				}
				resp, _ := readAllUntilClose(t, c)
				require.True(t, strings.HasPrefix(resp, "HTTP/1.1 400 "), "got %q", resp)
				require.Contains(t, resp, "Connection: close")
				if !late {
					time.Sleep(50 * time.Millisecond)
					require.Zero(t, be.accepts.Load(), "the backend was connected to")
					return
				}
				select {
				case b := <-got:
					require.True(t, strings.HasPrefix(b, "POST /up HTTP/1.1\r\n"), "backend got %q", b)
					require.Contains(t, b, "\r\n\r\n3\r\nabc\r\n")
					require.NotContains(t, b, "\r\n0\r\n", "the backend got a complete body")
				case <-time.After(5 * time.Second):
					t.Fatal("the backend connection was not torn down")
				}
			})
		}
	}
}

// TestHTTPContentLengthAndChunked: a request with both Content-Length
// and Transfer-Encoding is answered, and then its connection is closed
// (RFC 9112 6.1): a request pipelined after it is never answered nor
// forwarded.
func TestHTTPContentLengthAndChunked(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be, seen := pathBackend(t)
	startTestProxy(t, lp, Options{Routes: []Route{httpRouteOn("r", port, be.addr(), "a.test")}})
	c := dial(t, port)
	_, err := io.WriteString(c, "POST /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"+
		"0\r\n\r\nGET /second HTTP/1.1\r\nHost: a.test\r\n\r\n")
	require.NoError(t, err)
	got, err := readAllUntilClose(t, c)
	require.NoError(t, err, "the connection was not closed: %q", got)
	require.Equal(t, 1, strings.Count(got, "HTTP/1.1 "), "got %q", got)
	require.True(t, strings.HasPrefix(got, "HTTP/1.1 200 "), "got %q", got)
	require.Contains(t, got, "Connection: close")
	require.Equal(t, []string{"/first"}, seen())
}

// TestHTTPMalformedChunkedBodyH2Backend: over an h2c backend, a chunked
// body whose framing breaks after the head went out ends in a reset
// stream: the backend's handler reads an error, never a complete body,
// and the client gets 400.
func TestHTTPMalformedChunkedBodyH2Backend(t *testing.T) {
	// Not parallel: it sets the package variable chunkPrefetchWait.
	old := chunkPrefetchWait
	chunkPrefetchWait = 10 * time.Millisecond
	t.Cleanup(func() { chunkPrefetchWait = old })
	lp := newListenerPool(t)
	port := lp.port(t)
	got := make(chan string, 1)
	be := startH2CEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		got <- fmt.Sprintf("%s %q err=%v", r.Proto, b, err != nil)
	}))
	r := httpRouteOn("r", port, be.addr(), "a.test")
	r.Action.Options = &ActionOptions{BackendProtocol: "h2c"}
	startTestProxy(t, lp, Options{Routes: []Route{r}})
	c := dial(t, port)
	_, err := io.WriteString(c, "POST /up HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
	require.NoError(t, err)
	time.Sleep(300 * time.Millisecond)
	_, err = io.WriteString(c, "zz\r\n")
	require.NoError(t, err)
	resp, _ := readAllUntilClose(t, c)
	require.True(t, strings.HasPrefix(resp, "HTTP/1.1 400 "), "got %q", resp)
	select {
	case b := <-got:
		require.Equal(t, `HTTP/2.0 "abc" err=true`, b)
	case <-time.After(5 * time.Second):
		t.Fatal("the backend's stream was not reset")
	}
}

// TestHTTPHandoverOneRequest: a socket handler that a request was handed
// over to gets that request, its body (by Content-Length or chunked,
// trailers included) as the client sent it, and then the end of the
// stream: a request pipelined after it reaches no handler and no
// backend without the HTTP layer's routing and checks.
func TestHTTPHandoverOneRequest(t *testing.T) {
	t.Parallel()
	bodies := map[string]struct{ head, body string }{
		"none":    {"", ""},
		"length":  {"Content-Length: 5\r\n", "hello"},
		"chunked": {"Transfer-Encoding: chunked\r\n", "5;x=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"},
	}
	for name, b := range bodies {
		t.Run(name, func(t *testing.T) {
			lp := newListenerPool(t)
			port := lp.port(t)
			be, seen := pathBackend(t)
			admin := httpRouteOn("admin", port, be.addr(), "a.test")
			admin.Match.Path = "/admin/*"
			admin.Security = &RouteSecurity{BasicAuth: &BasicAuth{Users: []BasicAuthUser{{Username: "u", Password: "p"}}}}
			got := make(chan string, 1)
			relay := NewRoute("relay").Ports(port).HandleWith(func(_ context.Context, c net.Conn, _ *RouteContext) error {
				all, _ := io.ReadAll(c) // everything the handler is given, up to its end
				got <- string(all)
				_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
				return err
			}).Route()
			relay.Priority = -1
			startTestProxy(t, lp, Options{Routes: []Route{admin, relay}})
			c := dial(t, port)
			_, err := io.WriteString(c, "POST /open HTTP/1.1\r\nHost: a.test\r\n"+b.head+"\r\n"+b.body+
				"GET /admin/secret HTTP/1.1\r\nHost: a.test\r\n\r\n")
			require.NoError(t, err)
			var all string
			select {
			case all = <-got:
			case <-time.After(5 * time.Second):
				t.Fatal("the handler was not given the end of its request")
			}
			require.True(t, strings.HasPrefix(all, "POST /open HTTP/1.1\r\n"), "%q", all)
			require.True(t, strings.HasSuffix(all, "\r\n\r\n"+b.body), "%q", all)
			require.NotContains(t, all, "/admin/secret")
			resp, _ := readAllUntilClose(t, c)
			require.Equal(t, 1, strings.Count(resp, "HTTP/1.1 "), "%q", resp)
			require.Empty(t, seen())
		})
	}
}

// TestHTTPHandoverUpgrade: an upgrade request handed over keeps its
// stream once the handler switched protocols; when the handler refused
// the upgrade, what the client sends next ends the stream, and so do
// bytes pipelined behind the upgrade request (sent before any 101: they
// could be a request that never met the HTTP layer).
func TestHTTPHandoverUpgrade(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ accept, early bool }{{true, false}, {false, false}, {true, true}} {
		accept := tc.accept
		t.Run(fmt.Sprint("accept=", accept, ",early=", tc.early), func(t *testing.T) {
			lp := newListenerPool(t)
			port := lp.port(t)
			web := echoBackend(t, "web")
			got := make(chan string, 1)
			h := NewRoute("ws").Ports(port).HandleWith(func(_ context.Context, c net.Conn, _ *RouteContext) error {
				br := bufio.NewReader(c)
				if readHead(br) == nil {
					return nil
				}
				status := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n"
				if !accept {
					status = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
				}
				if _, err := io.WriteString(c, status); err != nil {
					return err
				}
				rest, _ := io.ReadAll(br)
				got <- string(rest)
				return nil
			}).Route()
			h.Priority = -1
			startTestProxy(t, lp, Options{Routes: []Route{httpRouteOn("web", port, web.addr(), "web.test"), h}})
			c := dial(t, port)
			early := ""
			if tc.early {
				early = "GET /admin HTTP/1.1\r\nHost: web.test\r\n\r\n"
			}
			_, err := io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: a.test\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n"+early)
			require.NoError(t, err)
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			require.NoError(t, err)
			_, err = io.WriteString(c, "frames after the answer")
			if !tc.early { // else the proxy may have closed already
				require.NoError(t, err)
				require.NoError(t, c.CloseWrite())
			}
			want := "frames after the answer"
			if tc.early {
				want = "" // the pipelined bytes ended the stream before the 101
			}
			if !accept {
				require.Equal(t, 400, resp.StatusCode)
				want = ""
			} else {
				require.Equal(t, 101, resp.StatusCode)
			}
			select {
			case s := <-got:
				require.Equal(t, want, s)
			case <-time.After(5 * time.Second):
				t.Fatal("the handler's stream did not end")
			}
		})
	}
}

// TestChunkedPrefetchTrailersUnshared: a chunked request whose body (with trailers) comes
// after the prefetch stopped waiting is forwarded while the prefetch's read is still under
// way, on a trailer map of its own (the server fills the client request's when that read
// reaches the body's end, which raced with the transport's validation of a shared map: seen
// once under -race with an h2c backend; the race detector orders socket I/O, so this test
// cannot show it reliably). The trailer values that came are still forwarded.
func TestChunkedPrefetchTrailersUnshared(t *testing.T) {
	// Not parallel: it sets the package variable chunkPrefetchWait.
	old := chunkPrefetchWait
	chunkPrefetchWait = time.Millisecond
	t.Cleanup(func() { chunkPrefetchWait = old })
	got := make(chan string, 1)
	be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- string(b) + " " + r.Trailer.Get("X-T")
	}))
	lp := newListenerPool(t)
	port := lp.port(t)
	startStackTestProxy(t, lp, Options{Routes: []Route{httpRouteOn("r", port, be.addr(), "a.test")}}, false)
	c := dial(t, port)
	_, err := io.WriteString(c, "POST /up HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n")
	require.NoError(t, err)
	time.Sleep(50 * time.Millisecond) // the prefetch gave up waiting: the request is forwarded
	_, err = io.WriteString(c, "5\r\nhello\r\n0\r\nX-T: v\r\n\r\n")
	require.NoError(t, err)
	select {
	case s := <-got:
		require.Equal(t, "hello v", s)
	case <-time.After(5 * time.Second):
		t.Fatal("the backend got no request")
	}
}
