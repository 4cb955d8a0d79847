package smartproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The built-in socket handlers are driven through a real proxy: in memory
// with ServeConn over net.Pipe (the server end wrapped so that handlers
// see a client IP), and over loopback listeners where TCP behaviour
// (half-close, resets) matters.

// handlerPort is the port in-memory connections claim to arrive on.
const handlerPort = 8080

// handlerHarness is a proxy with one socket-handler route on handlerPort
// that records what the handler returned.
type handlerHarness struct {
	p    *Proxy
	errs chan error // one per finished connection
}

func newHandlerHarness(t *testing.T, h SocketHandler, domains ...string) *handlerHarness {
	t.Helper()
	hh := &handlerHarness{errs: make(chan error, 16)}
	route := SocketHandlerRoute("handler", Ports(handlerPort), domains, hh.record(h))
	hh.p = newTestProxy(t, nil, Options{Routes: []Route{route}})
	return hh
}

// newLoopbackHarness is newHandlerHarness on a real listening port, which
// it returns.
func newLoopbackHarness(t *testing.T, h SocketHandler) (*handlerHarness, int) {
	t.Helper()
	lp := newListenerPool(t)
	port := lp.port(t)
	hh := &handlerHarness{errs: make(chan error, 16)}
	route := SocketHandlerRoute("handler", Ports(port), nil, hh.record(h))
	hh.p = startTestProxy(t, lp, Options{Routes: []Route{route}})
	return hh, port
}

func (hh *handlerHarness) record(h SocketHandler) SocketHandler {
	return func(ctx context.Context, conn net.Conn, rc *RouteContext) error {
		err := h(ctx, conn, rc)
		hh.errs <- err
		return err
	}
}

// connect serves a new in-memory connection from client ("ip:port")
// through the proxy and returns the client's end. When the test ends the
// client end is closed and ServeConn must have returned.
func (hh *handlerHarness) connect(t *testing.T, client string) net.Conn {
	t.Helper()
	c, s := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- hh.p.ServeConn(addrConn{Conn: s, remote: tcpAddr(client)}, handlerPort) }()
	t.Cleanup(func() {
		_ = c.Close()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(5 * time.Second):
			t.Error("ServeConn did not return after the client closed")
		}
	})
	// A handler that closes at once (BlockHandler("")) may have closed the
	// pipe already: that is not an error here.
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		require.ErrorIs(t, err, io.ErrClosedPipe)
	}
	return c
}

// handlerErr waits for the next connection's handler to return.
func (hh *handlerHarness) handlerErr(t *testing.T) error {
	t.Helper()
	select {
	case err := <-hh.errs:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("socket handler did not return")
		return nil
	}
}

// requireRunning fails if a handler returns within a short while.
func (hh *handlerHarness) requireRunning(t *testing.T) {
	t.Helper()
	select {
	case err := <-hh.errs:
		t.Fatalf("socket handler returned early: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
}

// requireEOF checks that the proxy closed c without sending anything more.
func requireEOF(t *testing.T, c net.Conn) {
	t.Helper()
	b, err := io.ReadAll(c)
	require.NoError(t, err)
	require.Empty(t, string(b))
}

// httpGet writes a GET request for path with the given Host header.
func httpGet(t *testing.T, c net.Conn, host, path string) {
	t.Helper()
	_, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host)
	require.NoError(t, err)
}

// readResponse reads one response to a method request and its body.
func readResponse(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	return resp, string(body)
}

// writeAsync writes b in the background, as a client that keeps sending
// while the proxy answers; net.Pipe writes block until read.
func writeAsync(c net.Conn, b []byte) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := c.Write(b)
		done <- err
	}()
	return done
}

// oversizedHead is a request head larger than any handler accepts.
func oversizedHead() []byte {
	return []byte("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 32<<10) + "\r\n\r\n")
}

func TestHandlerEcho(t *testing.T) {
	t.Parallel()
	hh := newHandlerHarness(t, EchoHandler())
	c := hh.connect(t, "203.0.113.7:40000")
	require.Equal(t, "hello", roundTrip(t, c, "hello"))
	require.Equal(t, "world", roundTrip(t, c, "world"))
	hh.requireRunning(t)
	require.NoError(t, c.Close())
	require.NoError(t, hh.handlerErr(t), "a client closing is a clean end")
}

// TestHandlerEchoLoopback: over TCP a client half-close ends the echo
// after everything sent came back.
func TestHandlerEchoLoopback(t *testing.T) {
	t.Parallel()
	hh, port := newLoopbackHarness(t, EchoHandler())
	c := dial(t, port)
	msg := pattern(256<<10, 1)
	go func() {
		_, _ = c.Write(msg)
		_ = c.CloseWrite()
	}()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	require.True(t, string(got) == string(msg), "echo returned %d bytes, want %d", len(got), len(msg))
	require.NoError(t, hh.handlerErr(t))
}

func TestHandlerProxy(t *testing.T) {
	t.Parallel()
	b := startBackend(t, "127.0.0.1:0", echo)
	hh := newHandlerHarness(t, ProxyHandler(b.addr()))
	c := hh.connect(t, "203.0.113.7:40000")
	require.Equal(t, "ping", roundTrip(t, c, "ping"))
	require.Equal(t, "pong", roundTrip(t, c, "pong"))
	require.NoError(t, c.Close())
	require.NoError(t, hh.handlerErr(t))
	require.EqualValues(t, 1, b.accepts.Load())
}

// TestHandlerProxyReplaysHello: on a route matched by SNI the proxy has
// read the ClientHello before the handler runs; the TLS handshake with the
// backend only succeeds if ProxyHandler passes those bytes on.
func TestHandlerProxyReplaysHello(t *testing.T) {
	t.Parallel()
	b := startBackend(t, "127.0.0.1:0", tlsGreeter("backend"))
	hh := newHandlerHarness(t, ProxyHandler(b.addr()), "*.example.com")
	c := hh.connect(t, "203.0.113.7:40000")
	tlsThrough(t, c, &tls.Config{ServerName: "www.example.com", InsecureSkipVerify: true}, "backend")
	require.NoError(t, hh.handlerErr(t))
}

func TestHandlerProxyDialFails(t *testing.T) {
	t.Parallel()
	hh := newHandlerHarness(t, ProxyHandler(net.JoinHostPort("127.0.0.1", strconv.Itoa(closedPort(t)))))
	c := hh.connect(t, "203.0.113.7:40000")
	requireEOF(t, c)
	err := hh.handlerErr(t)
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	require.ErrorContains(t, err, "proxy handler")
}

// lineUpper is a line protocol that answers each line upper-cased, ends on
// "quit" and fails on "fail". It reports every line it sees on lines.
func lineUpper(lines chan<- string) func(context.Context, string, io.Writer, *RouteContext) error {
	return func(_ context.Context, line string, w io.Writer, _ *RouteContext) error {
		if lines != nil {
			lines <- line
		}
		switch line {
		case "quit":
			return io.EOF
		case "fail":
			return errors.New("boom")
		}
		_, err := io.WriteString(w, strings.ToUpper(line)+"\n")
		return err
	}
}

func TestHandlerLineProtocol(t *testing.T) {
	t.Parallel()
	t.Run("replies and quits", func(t *testing.T) {
		hh := newHandlerHarness(t, LineProtocolHandler(lineUpper(nil)))
		c := hh.connect(t, "203.0.113.7:40000")
		br := bufio.NewReader(c)
		for _, in := range []string{"hello\r\n", "lf only\n", "\n"} {
			_, err := io.WriteString(c, in)
			require.NoError(t, err)
			got, err := br.ReadString('\n')
			require.NoError(t, err)
			require.Equal(t, strings.ToUpper(strings.TrimRight(in, "\r\n"))+"\n", got)
		}
		_, err := io.WriteString(c, "quit\n")
		require.NoError(t, err)
		requireEOF(t, c)
		require.NoError(t, hh.handlerErr(t), "io.EOF from fn ends the connection quietly")
	})
	t.Run("fn error", func(t *testing.T) {
		hh := newHandlerHarness(t, LineProtocolHandler(lineUpper(nil)))
		c := hh.connect(t, "203.0.113.7:40000")
		_, err := io.WriteString(c, "fail\n")
		require.NoError(t, err)
		requireEOF(t, c)
		require.EqualError(t, hh.handlerErr(t), "boom")
	})
	t.Run("last line without newline", func(t *testing.T) {
		lines := make(chan string, 4)
		hh, port := newLoopbackHarness(t, LineProtocolHandler(lineUpper(lines)))
		c := dial(t, port)
		_, err := io.WriteString(c, "one\ntail")
		require.NoError(t, err)
		require.NoError(t, c.CloseWrite())
		require.NoError(t, hh.handlerErr(t))
		require.Equal(t, "one", <-lines)
		require.Equal(t, "tail", <-lines)
	})
	t.Run("longest line", func(t *testing.T) {
		lines := make(chan string, 1)
		hh := newHandlerHarness(t, LineProtocolHandler(lineUpper(lines)))
		c := hh.connect(t, "203.0.113.7:40000")
		// maxLine counts the line ending too.
		long := strings.Repeat("x", maxLine-1)
		w := writeAsync(c, []byte(long+"\n"))
		got, err := bufio.NewReaderSize(c, 2*maxLine).ReadString('\n')
		require.NoError(t, err)
		require.Len(t, got, maxLine)
		require.NoError(t, <-w)
		require.Len(t, <-lines, maxLine-1)
		hh.requireRunning(t)
	})
	t.Run("line too long", func(t *testing.T) {
		hh := newHandlerHarness(t, LineProtocolHandler(lineUpper(nil)))
		c := hh.connect(t, "203.0.113.7:40000")
		w := writeAsync(c, []byte(strings.Repeat("x", maxLine)+"\n"))
		err := hh.handlerErr(t)
		require.ErrorIs(t, err, bufio.ErrTooLong)
		requireEOF(t, c)
		require.Error(t, <-w, "the proxy closed before reading everything")
	})
}

func TestHandlerBlock(t *testing.T) {
	t.Parallel()
	t.Run("message", func(t *testing.T) {
		hh := newHandlerHarness(t, BlockHandler("go away\n"))
		c := hh.connect(t, "203.0.113.7:40000")
		got, err := io.ReadAll(c)
		require.NoError(t, err)
		require.Equal(t, "go away\n", string(got))
		require.NoError(t, hh.handlerErr(t))
	})
	t.Run("silent", func(t *testing.T) {
		hh := newHandlerHarness(t, BlockHandler(""))
		c := hh.connect(t, "203.0.113.7:40000")
		requireEOF(t, c)
		require.NoError(t, hh.handlerErr(t))
	})
}

func TestHandlerHTTPResponse(t *testing.T) {
	t.Parallel()
	h := HTTPResponseHandler(http.StatusTeapot, http.Header{"X-Test": {"yes"}, "Content-Type": {"text/plain"}}, "hello")
	t.Run("GET", func(t *testing.T) {
		hh := newHandlerHarness(t, h)
		c := hh.connect(t, "203.0.113.7:40000")
		httpGet(t, c, "example.com", "/")
		br := bufio.NewReader(c)
		resp, body := readResponse(t, br, http.MethodGet)
		require.Equal(t, http.StatusTeapot, resp.StatusCode)
		require.Equal(t, "418 I'm a teapot", resp.Status)
		require.Equal(t, "yes", resp.Header.Get("X-Test"))
		require.Equal(t, "text/plain", resp.Header.Get("Content-Type"))
		require.EqualValues(t, 5, resp.ContentLength)
		require.True(t, resp.Close, "one-shot handlers say Connection: close")
		require.Equal(t, "hello", body)
		rest, err := io.ReadAll(br)
		require.NoError(t, err)
		require.Empty(t, rest)
		require.NoError(t, hh.handlerErr(t))
	})
	t.Run("HEAD has no body", func(t *testing.T) {
		hh := newHandlerHarness(t, h)
		c := hh.connect(t, "203.0.113.7:40000")
		_, err := io.WriteString(c, "HEAD / HTTP/1.1\r\nHost: example.com\r\n\r\n")
		require.NoError(t, err)
		// Read raw: http.ReadResponse would skip a body it does not expect.
		raw, err := io.ReadAll(c)
		require.NoError(t, err)
		require.True(t, strings.HasSuffix(string(raw), "\r\n\r\n"), "response to HEAD ends after its head: %q", raw)
		require.Contains(t, string(raw), "Content-Length: 5\r\n")
		require.NoError(t, hh.handlerErr(t))
	})
	t.Run("unread request body over TCP", func(t *testing.T) {
		// The response must survive the client still sending: closing with
		// unread bytes would make the kernel reset the connection, which
		// can destroy the response in flight (on loopback it shows as a
		// reset instead of EOF after the response).
		hh, port := newLoopbackHarness(t, h)
		for range 5 {
			c := dial(t, port)
			body := pattern(128<<10, 2)
			w := writeAsync(c, append([]byte("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"), body...))
			require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
			br := bufio.NewReader(c)
			resp, got := readResponse(t, br, http.MethodPost)
			require.Equal(t, http.StatusTeapot, resp.StatusCode)
			require.Equal(t, "hello", got)
			// A FIN, not a reset, follows the response.
			_, err := br.ReadByte()
			require.ErrorIs(t, err, io.EOF)
			require.NoError(t, <-w)
			require.NoError(t, c.Close())
			require.NoError(t, hh.handlerErr(t))
		}
	})
}

// TestHandlerHTTPHostile: garbage and oversized request heads end that
// connection only, with 400 or 431, for every HTTP handler.
func TestHandlerHTTPHostile(t *testing.T) {
	t.Parallel()
	handlers := map[string]SocketHandler{
		"response": HTTPResponseHandler(http.StatusOK, nil, "fine"),
		"block":    HTTPBlockHandler(http.StatusOK, "fine"),
		"redirect": HTTPRedirectHandler("https://{domain}{path}", http.StatusOK),
		"server": HTTPServerHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "fine\n")
		})),
	}
	for name, h := range handlers {
		t.Run(name, func(t *testing.T) {
			hh := newHandlerHarness(t, h)
			// A well-behaved client, connected first, is served after the
			// hostile ones are gone.
			good := hh.connect(t, "198.51.100.1:40000")

			c := hh.connect(t, "203.0.113.7:40000")
			w := writeAsync(c, oversizedHead())
			resp, _ := readResponse(t, bufio.NewReader(c), http.MethodGet)
			require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
			requireEOF(t, c)
			<-w // error or not, depending on how much the handler read
			if name != "server" {
				require.ErrorIs(t, hh.handlerErr(t), errHeadTooLarge)
			} else {
				require.NoError(t, hh.handlerErr(t), "http.Server answers bad requests itself")
			}

			c = hh.connect(t, "203.0.113.7:40001")
			_, err := io.WriteString(c, "\x16\x03\x01 not http at all\r\n\r\n")
			require.NoError(t, err)
			resp, _ = readResponse(t, bufio.NewReader(c), http.MethodGet)
			require.Equal(t, http.StatusBadRequest, resp.StatusCode)
			requireEOF(t, c)
			if name != "server" {
				require.ErrorContains(t, hh.handlerErr(t), "reading HTTP request")
			} else {
				require.NoError(t, hh.handlerErr(t))
			}

			httpGet(t, good, "example.com", "/ok")
			resp, _ = readResponse(t, bufio.NewReader(good), http.MethodGet)
			require.Equal(t, http.StatusOK, resp.StatusCode)
		})
	}
}

func TestHandlerHTTPBlock(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		message, want string
	}{
		{"not here", "not here\n"},
		{"", "Forbidden\n"},
	} {
		t.Run(tt.want, func(t *testing.T) {
			hh := newHandlerHarness(t, HTTPBlockHandler(http.StatusForbidden, tt.message))
			c := hh.connect(t, "203.0.113.7:40000")
			httpGet(t, c, "example.com", "/")
			resp, body := readResponse(t, bufio.NewReader(c), http.MethodGet)
			require.Equal(t, http.StatusForbidden, resp.StatusCode)
			require.Equal(t, "text/plain; charset=utf-8", resp.Header.Get("Content-Type"))
			require.Equal(t, tt.want, body)
			require.NoError(t, hh.handlerErr(t))
		})
	}
}

func TestHandlerHTTPRedirect(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		location string
		status   int
		client   string
		request  string
		want     int
		wantLoc  string
	}{
		{
			name: "https upgrade, default status", location: "https://{domain}{path}",
			client: "203.0.113.7:40000", request: "GET /a/b?c=d HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
			want: http.StatusMovedPermanently, wantLoc: "https://example.com/a/b?c=d",
		},
		{
			name: "port is the port connected to", location: "http://{domain}:{port}/x", status: http.StatusFound,
			client: "203.0.113.7:40000", request: "GET / HTTP/1.1\r\nHost: example.com:9999\r\n\r\n",
			want: http.StatusFound, wantLoc: "http://example.com:8080/x",
		},
		{
			name: "client IP", location: "https://{domain}/from/{clientIp}", status: http.StatusTemporaryRedirect,
			client: "203.0.113.7:40000", request: "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
			want: http.StatusTemporaryRedirect, wantLoc: "https://example.com/from/203.0.113.7",
		},
		{
			name: "IPv6 client IP", location: "{clientIp}", status: http.StatusPermanentRedirect,
			client: "[2001:db8::7]:40000", request: "POST /form HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n",
			want: http.StatusPermanentRedirect, wantLoc: "2001:db8::7",
		},
		{
			name: "IPv6 host keeps its brackets", location: "https://{domain}{path}",
			client: "203.0.113.7:40000", request: "GET /v6 HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\n\r\n",
			want: http.StatusMovedPermanently, wantLoc: "https://[2001:db8::1]/v6",
		},
		{
			name: "unknown variables stay", location: "https://{domain}/{nope}",
			client: "203.0.113.7:40000", request: "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
			want: http.StatusMovedPermanently, wantLoc: "https://example.com/{nope}",
		},
		{
			name: "absolute-form target", location: "https://{domain}{path}",
			client: "203.0.113.7:40000", request: "GET http://example.com/abs?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
			want: http.StatusMovedPermanently, wantLoc: "https://example.com/abs?q=1",
		},
		{
			// The Host header is the client's to choose; one that would
			// change the URL's structure is not used (and there is no SNI
			// on this plain-text connection to fall back to).
			name: "hostile host", location: "https://{domain}{path}",
			client: "203.0.113.7:40000", request: "GET /p HTTP/1.1\r\nHost: evil.example/x?\r\n\r\n",
			want: http.StatusMovedPermanently, wantLoc: "https:///p",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hh := newHandlerHarness(t, HTTPRedirectHandler(tt.location, tt.status))
			c := hh.connect(t, tt.client)
			_, err := io.WriteString(c, tt.request)
			require.NoError(t, err)
			resp, body := readResponse(t, bufio.NewReader(c), http.MethodGet)
			require.Equal(t, tt.want, resp.StatusCode)
			require.Equal(t, tt.wantLoc, resp.Header.Get("Location"))
			require.Empty(t, body)
			require.NoError(t, hh.handlerErr(t))
		})
	}
}

// TestHandlerRedirectHost: {domain} is the Host header without its port;
// the TLS server name stands in when the header is missing or unusable.
func TestHandlerRedirectHost(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ host, sni, want string }{
		{"example.com", "", "example.com"},
		{"example.com:8080", "sni.example", "example.com"},
		{"Example.COM", "", "Example.COM"},
		{"[2001:db8::1]:443", "", "[2001:db8::1]"},
		{"[2001:db8::1]", "", "[2001:db8::1]"},
		{"192.0.2.1:80", "", "192.0.2.1"},
		{"", "sni.example", "sni.example"},
		{"evil.example/path", "sni.example", "sni.example"},
		{"user@evil.example", "sni.example", "sni.example"},
		{"a b", "sni.example", "sni.example"},
		{"", "", ""},
	} {
		require.Equal(t, tt.want, redirectHost(tt.host, tt.sni), "Host %q, SNI %q", tt.host, tt.sni)
	}
}

// keepAliveServer answers every request with its sequence number, path
// and the client address the handler sees.
func keepAliveServer(n *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = fmt.Fprintf(w, "%d %s %s", n.Add(1), r.URL.Path, r.RemoteAddr)
	})
}

func TestHandlerHTTPServerKeepAlive(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	hh := newHandlerHarness(t, HTTPServerHandler(keepAliveServer(&n)))
	c := hh.connect(t, "203.0.113.7:40000")
	br := bufio.NewReader(c)
	for i := 1; i <= 3; i++ {
		httpGet(t, c, "example.com", "/r"+strconv.Itoa(i))
		resp, body := readResponse(t, br, http.MethodGet)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.False(t, resp.Close, "the connection stays open")
		require.Equal(t, fmt.Sprintf("%d /r%d 203.0.113.7:40000", i, i), body)
	}
	hh.requireRunning(t)
	require.NoError(t, c.Close())
	require.NoError(t, hh.handlerErr(t), "a client closing is a clean end")
}

// TestHandlerHTTPServerLoopback runs a real HTTP client against
// HTTPServerHandler on a listening port and checks it reuses one
// connection for three requests.
func TestHandlerHTTPServerLoopback(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	hh, port := newLoopbackHarness(t, HTTPServerHandler(keepAliveServer(&n)))
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	var reused []bool
	for i := 1; i <= 3; i++ {
		trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) { reused = append(reused, info.Reused) }}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace),
			http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/r%d", port, i), nil)
		require.NoError(t, err)
		resp, err := client.Do(req)
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		require.True(t, strings.HasPrefix(string(body), fmt.Sprintf("%d /r%d 127.0.0.1:", i, i)), "body %q", body)
	}
	require.Equal(t, []bool{false, true, true}, reused)
	hh.requireRunning(t)
	tr.CloseIdleConnections()
	require.NoError(t, hh.handlerErr(t))
}

// idleAndBusy opens two HTTPServerHandler connections: idle has had one
// answered request for "/" (its body is returned), busy has a request for
// "/slow" in flight once inFlight is closed by the handler.
func idleAndBusy(t *testing.T, hh *handlerHarness, inFlight chan struct{}) (idle, busy net.Conn, body string) {
	t.Helper()
	idle = hh.connect(t, "203.0.113.7:40000")
	httpGet(t, idle, "example.com", "/")
	_, body = readResponse(t, bufio.NewReader(idle), http.MethodGet)
	busy = hh.connect(t, "203.0.113.7:40001")
	httpGet(t, busy, "example.com", "/slow")
	<-inFlight
	return idle, busy, body
}

// TestHandlerHTTPServerStop: when the proxy gives up draining, an idle
// keep-alive connection and one with a request in flight both end, and
// the in-flight request's context is cancelled.
func TestHandlerHTTPServerStop(t *testing.T) {
	t.Parallel()
	inFlight := make(chan struct{})
	cancelled := make(chan error, 1)
	hh := newHandlerHarness(t, HTTPServerHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(inFlight)
			<-r.Context().Done()
			cancelled <- r.Context().Err()
			return
		}
		_, _ = io.WriteString(w, "quick")
	})))
	idle, busy, body := idleAndBusy(t, hh, inFlight)
	require.Equal(t, "quick", body)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	require.ErrorIs(t, hh.p.Stop(ctx), context.DeadlineExceeded)
	require.Less(t, time.Since(start), 3*time.Second, "Stop must not wait for the idle connection beyond its deadline")
	require.ErrorIs(t, <-cancelled, context.Canceled)
	require.NoError(t, hh.handlerErr(t))
	require.NoError(t, hh.handlerErr(t))
	requireEOF(t, idle)
	_, err := io.ReadAll(busy)
	require.NoError(t, err)
}

// TestHandlerHTTPServerGracefulStop: a graceful Stop closes an idle
// keep-alive connection at once and a busy one right after its response,
// so Stop returns as soon as the request in flight is answered instead of
// waiting for its deadline.
func TestHandlerHTTPServerGracefulStop(t *testing.T) {
	t.Parallel()
	inFlight, release := make(chan struct{}), make(chan struct{})
	hh := newHandlerHarness(t, HTTPServerHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(inFlight)
			<-release
		}
		_, _ = io.WriteString(w, "done "+r.URL.Path)
	})))
	idle, busy, body := idleAndBusy(t, hh, inFlight)
	require.Equal(t, "done /", body)

	stopped := make(chan error, 1)
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- hh.p.Stop(ctx)
	}()
	requireEOF(t, idle) // closed when Stop began, not at its deadline
	close(release)
	br := bufio.NewReader(busy)
	_, body = readResponse(t, br, http.MethodGet)
	require.Equal(t, "done /slow", body)
	// Then the connection closes (the response itself says Connection:
	// close only if its handler saw the drain before writing it).
	rest, err := io.ReadAll(br)
	require.NoError(t, err)
	require.Empty(t, string(rest))
	require.NoError(t, <-stopped)
	require.Less(t, time.Since(start), 5*time.Second)
	require.NoError(t, hh.handlerErr(t))
	require.NoError(t, hh.handlerErr(t))
}

// TestHandlerHTTPServerGracefulStopNewConn: a connection that has not
// sent its first request when Stop begins is between requests too: it
// closes at once instead of holding Stop.
func TestHandlerHTTPServerGracefulStopNewConn(t *testing.T) {
	t.Parallel()
	hh := newHandlerHarness(t, HTTPServerHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
	c := hh.connect(t, "203.0.113.7:40000")
	require.Eventually(t, func() bool { return hh.p.Metrics().Active == 1 }, 5*time.Second, time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	require.NoError(t, hh.p.Stop(ctx))
	require.Less(t, time.Since(start), 5*time.Second)
	requireEOF(t, c)
	require.NoError(t, hh.handlerErr(t))
}

// TestHandlerHTTPServerHijack: a handler that hijacks the connection owns
// it until it closes it; the socket handler must not return (and the proxy
// must not close the connection) before that.
func TestHandlerHTTPServerHijack(t *testing.T) {
	t.Parallel()
	hh := newHandlerHarness(t, HTTPServerHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("hijacked\n")
		_ = brw.Flush()
		line, err := brw.ReadString('\n')
		if err != nil {
			return
		}
		_, _ = brw.WriteString("got " + line)
		_ = brw.Flush()
	})))
	c := hh.connect(t, "203.0.113.7:40000")
	httpGet(t, c, "example.com", "/ws")
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "hijacked\n", line)
	hh.requireRunning(t)
	_, err = io.WriteString(c, "ping\n")
	require.NoError(t, err)
	line, err = br.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "got ping\n", line)
	rest, err := io.ReadAll(br)
	require.NoError(t, err)
	require.Empty(t, rest)
	require.NoError(t, hh.handlerErr(t))
}

// testCertPEM returns testCert as PEM, for routes that terminate TLS.
func testCertPEM(t *testing.T) *CertificateSpec {
	t.Helper()
	c := testCert()
	key, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	require.NoError(t, err)
	return &CertificateSpec{
		Cert: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})),
		Key:  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key})),
	}
}

// TestHandlerHTTPOverTerminatedTLS: behind TLS termination the HTTP
// handlers get the decrypted stream; a request without a Host header is
// redirected to the TLS server name, and the response ends with
// close_notify and a clean close.
func TestHandlerHTTPOverTerminatedTLS(t *testing.T) {
	t.Parallel()
	errs := make(chan error, 1)
	route := SocketHandlerRoute("redirect", Ports(handlerPort), []string{"*.example.com"},
		func(ctx context.Context, conn net.Conn, rc *RouteContext) error {
			err := HTTPRedirectHandler("https://{domain}:{port}{path}", http.StatusPermanentRedirect)(ctx, conn, rc)
			errs <- err
			return err
		})
	route.Action.TLS = &RouteTLS{Mode: TLSTerminate, Certificate: testCertPEM(t)}
	hh := &handlerHarness{errs: errs, p: newTestProxy(t, nil, Options{Routes: []Route{route}})}
	c := tls.Client(hh.connect(t, "203.0.113.7:40000"), &tls.Config{ServerName: "shop.example.com", InsecureSkipVerify: true})
	_, err := io.WriteString(c, "GET /cart?x=1 HTTP/1.0\r\n\r\n")
	require.NoError(t, err)
	br := bufio.NewReader(c)
	resp, _ := readResponse(t, br, http.MethodGet)
	require.Equal(t, http.StatusPermanentRedirect, resp.StatusCode)
	require.Equal(t, "https://shop.example.com:8080/cart?x=1", resp.Header.Get("Location"))
	_, err = br.ReadByte()
	require.ErrorIs(t, err, io.EOF, "close_notify after the response")
	require.NoError(t, c.Close())
	require.NoError(t, hh.handlerErr(t))
}
