//go:build linux

package evloop

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/h1parse"
)

// startRelay serves HTTP mode on loopback, every request forwarded to target with its head
// as it came (plus X-Relay), every response head passed on as it came; cfg's own callbacks
// and settings are kept.
func startRelay(t *testing.T, target netip.AddrPort, cfg Config) *Server {
	t.Helper()
	cfg.Listen = loopback
	if cfg.OnOpen == nil {
		cfg.OnOpen = func(c *Conn) Decision { return Decision{HTTP: true} }
	}
	if cfg.OnRequest == nil {
		cfg.OnRequest = func(c *Conn, req *h1parse.Request, raw []byte) HTTPPlan {
			if req.Chunked || req.ContentLength > DefaultHTTPMaxHeld {
				return HTTPPlan{Respond: []byte("HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\n\r\n"), Close: true}
			}
			out := append([]byte(nil), raw[:req.HeadLen-2]...)
			out = append(append(out, "X-Relay: 1\r\n\r\n"...), raw[req.HeadLen:]...)
			return HTTPPlan{Target: target, Out: out, Replayable: string(req.Method) == "GET", Head: string(req.Method) == "HEAD"}
		}
	}
	if cfg.OnResponse == nil {
		cfg.OnResponse = func(c *Conn, resp *h1parse.Response, dst []byte) ([]byte, bool) {
			dst = fmt.Appendf(dst, "HTTP/1.1 %d %s\r\n", resp.Status, resp.Reason)
			for _, f := range resp.Fields {
				dst = fmt.Appendf(dst, "%s: %s\r\n", f.Name, f.Value)
			}
			if resp.Framing == h1parse.UntilClose {
				dst = append(dst, "Transfer-Encoding: chunked\r\n"...)
			}
			return append(dst, "\r\n"...), true
		}
	}
	if cfg.OnExchangeEnd == nil {
		cfg.OnExchangeEnd = func(c *Conn, status int, body int64, err error) []byte {
			if err != nil {
				return []byte("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			}
			return nil
		}
	}
	s, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// httpBackend is a net/http server: /len/N answers N pattern bytes with Content-Length,
// /chunked/N the same chunked, /echo the request body; it counts the connections it accepted.
func httpBackend(t *testing.T) (netip.AddrPort, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Relay") != "1" {
			http.Error(w, "not relayed", 400)
			return
		}
		parts := strings.Split(r.URL.Path, "/")
		switch parts[1] {
		case "len", "chunked":
			n, _ := strconv.Atoi(parts[2])
			if parts[1] == "len" {
				w.Header().Set("Content-Length", strconv.Itoa(n))
			}
			b := pattern(n)
			for len(b) > 0 {
				k := min(len(b), 7919)
				_, _ = w.Write(b[:k])
				b = b[k:]
				if parts[1] == "chunked" {
					w.(http.Flusher).Flush()
				}
			}
		case "echo": // read whole first: net/http drops what is unread once the answer starts
			b, _ := io.ReadAll(r.Body)
			_, _ = w.Write(b)
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return netip.MustParseAddrPort(srv.Listener.Addr().String()), &conns
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%23)
	}
	return b
}

func dialHTTP(t *testing.T, s *Server) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

func readResponse(t *testing.T, br *bufio.Reader, method string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// Pipelined keep-alive requests with and without bodies, Content-Length and chunked
// responses, HEAD, empty lines before a request line (ignored, RFC 9112 2.2): each answered
// whole and in order over one backend connection.
func TestHTTPKeepAlivePipelined(t *testing.T) {
	be, conns := httpBackend(t)
	s := startRelay(t, be, Config{})
	c, br := dialHTTP(t, s)
	_, err := io.WriteString(c, "\r\n\nGET /len/10 HTTP/1.1\r\nHost: a\r\n\r\n\r\n"+
		"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"+
		"GET /chunked/100000 HTTP/1.1\r\nHost: a\r\n\r\n"+
		"HEAD /len/10 HTTP/1.1\r\nHost: a\r\n\r\n"+
		"GET /len/70000 HTTP/1.1\r\nHost: a\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		method string
		body   []byte
	}{{"GET", pattern(10)}, {"POST", []byte("hello")}, {"GET", pattern(100000)}, {"HEAD", nil}, {"GET", pattern(70000)}} {
		resp, b := readResponse(t, br, want.method)
		if resp.StatusCode != 200 || !bytes.Equal(b, want.body) {
			t.Fatalf("%s: status %d, body %d bytes, want %d", want.method, resp.StatusCode, len(b), len(want.body))
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("backend connections: %d, want 1 (pooled)", n)
	}
}

// A client that reads slowly gets every byte of a large response: the loop stops reading
// the backend while the client is behind.
func TestHTTPBackPressure(t *testing.T) {
	be, _ := httpBackend(t)
	s := startRelay(t, be, Config{})
	c, br := dialHTTP(t, s)
	const n = 8 << 20
	if _, err := io.WriteString(c, fmt.Sprintf("GET /chunked/%d HTTP/1.1\r\nHost: a\r\n\r\n", n)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the client's receive buffer fills
	resp, b := readResponse(t, br, "GET")
	if resp.StatusCode != 200 || !bytes.Equal(b, pattern(n)) {
		t.Fatalf("status %d, %d bytes (want %d, the pattern)", resp.StatusCode, len(b), n)
	}
}

// A response framed two ways, a backend that refuses connections, a response head over the
// cap: the client gets the owner's 502, and its connection goes on.
func TestHTTPBadBackend(t *testing.T) {
	raw := func(answer string) netip.AddrPort {
		return backend(t, func(c *net.TCPConn) {
			br := bufio.NewReader(c)
			if _, err := http.ReadRequest(br); err == nil {
				_, _ = io.WriteString(c, answer)
			}
			_ = c.CloseWrite()
			_, _ = io.Copy(io.Discard, c)
		})
	}
	for name, target := range map[string]netip.AddrPort{
		"CL and TE":    raw("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
		"obs-fold":     raw("HTTP/1.1 200 OK\r\nX-A: 1\r\n  2\r\nContent-Length: 0\r\n\r\n"),
		"huge head":    raw("HTTP/1.1 200 OK\r\nX-A: " + strings.Repeat("a", 20000) + "\r\n\r\n"),
		"closed early": raw(""),
		"refused":      deadAddr(t),
	} {
		t.Run(name, func(t *testing.T) {
			s := startRelay(t, target, Config{})
			c, br := dialHTTP(t, s)
			if _, err := io.WriteString(c, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, _ := readResponse(t, br, "GET")
			if resp.StatusCode != 502 {
				t.Fatalf("status %d, want 502", resp.StatusCode)
			}
			// The request was read whole: the connection carries the next one, and closes
			// after the answer to one that asks.
			if _, err := io.WriteString(c, "GET /y HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			if resp, _ = readResponse(t, br, "GET"); resp.StatusCode != 502 {
				t.Fatalf("second status %d, want 502", resp.StatusCode)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Fatalf("after the second 502: %v, want EOF", err)
			}
		})
	}
}

// A head the parser refuses, and one that does not come whole within HTTPHeadTimeout, get
// OnMalformed's answer and the connection closes; nothing reaches the backend.
func TestHTTPRefusedHead(t *testing.T) {
	be, conns := httpBackend(t)
	s := startRelay(t, be, Config{HTTPHeadTimeout: 200 * time.Millisecond,
		OnMalformed: func(c *Conn, err error, _ bool, _ []byte) ([]byte, bool) {
			return []byte("HTTP/1.1 400 Bad Request\r\nX-Why: " + strings.ReplaceAll(err.Error(), "\n", " ") + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), false
		}})
	for name, in := range map[string]string{
		"bare LF":     "GET / HTTP/1.1\nHost: a\n\n",
		"TE xchunked": "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
		"slow head":   "GET / HTTP/1.1\r\nHost: a\r\n",
		"huge head":   "GET / HTTP/1.1\r\nHost: a\r\nX-A: " + strings.Repeat("a", httpMaxHead) + "\r\n\r\n",
		"two length":  "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
	} {
		t.Run(name, func(t *testing.T) {
			c, br := dialHTTP(t, s)
			go func() { _, _ = io.WriteString(c, in) }()
			resp, _ := readResponse(t, br, "GET")
			if resp.StatusCode != 400 || resp.Header.Get("X-Why") == "" {
				t.Fatalf("status %d (%q), want OnMalformed's 400", resp.StatusCode, resp.Header.Get("X-Why"))
			}
		})
	}
	if n := conns.Load(); n != 0 {
		t.Fatalf("the backend was connected to %d times", n)
	}
}

// HTTPPlan.HandOff gives OnHandOff the socket and every byte of the request from its first;
// the requests before it were served by the loop.
func TestHTTPHandOff(t *testing.T) {
	be, _ := httpBackend(t)
	got := make(chan []byte, 1)
	relay := startRelayPlan(be)
	s := startRelay(t, be, Config{
		OnRequest: func(c *Conn, req *h1parse.Request, raw []byte) HTTPPlan {
			if string(req.Target) == "/off" {
				return HTTPPlan{HandOff: true}
			}
			return relay(c, req, raw)
		},
		OnHandOff: func(fd int, _ netip.AddrPort, data []byte) {
			f := os.NewFile(uintptr(fd), "handed-off")
			defer f.Close()
			_, _ = f.WriteString("HTTP/1.1 299 Handed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			got <- data
		},
	})
	c, br := dialHTTP(t, s)
	if _, err := io.WriteString(c, "GET /len/3 HTTP/1.1\r\nHost: a\r\n\r\nGET /off HTTP/1.1\r\nHost: a\r\n\r\nGET /after HTTP/1.1\r\n"); err != nil {
		t.Fatal(err)
	}
	if resp, b := readResponse(t, br, "GET"); resp.StatusCode != 200 || string(b) != "abc" {
		t.Fatalf("first: %d %q", resp.StatusCode, b)
	}
	if resp, _ := readResponse(t, br, "GET"); resp.StatusCode != 299 {
		t.Fatalf("handed off: %d", resp.StatusCode)
	}
	if d := string(<-got); d != "GET /off HTTP/1.1\r\nHost: a\r\n\r\nGET /after HTTP/1.1\r\n" {
		t.Fatalf("handed-off data %q", d)
	}
}

// startRelayPlan is startRelay's default OnRequest, for tests that wrap it.
func startRelayPlan(target netip.AddrPort) func(c *Conn, req *h1parse.Request, raw []byte) HTTPPlan {
	return func(c *Conn, req *h1parse.Request, raw []byte) HTTPPlan {
		out := append([]byte(nil), raw[:req.HeadLen-2]...)
		out = append(append(out, "X-Relay: 1\r\n\r\n"...), raw[req.HeadLen:]...)
		return HTTPPlan{Target: target, Out: out, Replayable: true}
	}
}

// A backend that closes its idle connections: the loop sees the close of the pooled one and
// the next request goes out on a new connection, answered.
func TestHTTPIdleBackendClosed(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	srv.Config.IdleTimeout = 50 * time.Millisecond
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	s := startRelay(t, netip.MustParseAddrPort(srv.Listener.Addr().String()), Config{})
	c, br := dialHTTP(t, s)
	for i := range 3 {
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if resp, b := readResponse(t, br, "GET"); resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := conns.Load(); n != 3 {
		t.Fatalf("backend connections: %d, want 3", n)
	}
}

// Shutdown closes keep-alive connections idle between requests, and the loops end.
func TestHTTPShutdownIdle(t *testing.T) {
	be, _ := httpBackend(t)
	s := startRelay(t, be, Config{})
	c, br := dialHTTP(t, s)
	if _, err := io.WriteString(c, "GET /len/1 HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	readResponse(t, br, "GET")
	s.Shutdown()
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection after Shutdown: %v, want EOF", err)
	}
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the loops did not end")
	}
}

// A pooled connection that the backend closes as the next request reaches it (the race the
// idle watch cannot see): a replayable request goes again on a new connection and is
// answered; one that is not replayable gets the owner's answer.
func TestHTTPStaleRetry(t *testing.T) {
	var n atomic.Int64
	be := backend(t, func(c *net.TCPConn) {
		first := n.Add(1) == 1
		br := bufio.NewReader(c)
		for i := 0; ; i++ {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			if first && i == 1 {
				return // the second request on the first connection: closed unanswered
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	for _, replayable := range []bool{true, false} {
		n.Store(0)
		relay := startRelayPlan(be)
		s := startRelay(t, be, Config{OnRequest: func(c *Conn, req *h1parse.Request, raw []byte) HTTPPlan {
			p := relay(c, req, raw)
			p.Replayable = replayable
			return p
		}})
		c, br := dialHTTP(t, s)
		want := []int{200, 200}
		if !replayable {
			want[1] = 502
		}
		for i, status := range want {
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			if resp, _ := readResponse(t, br, "GET"); resp.StatusCode != status {
				t.Fatalf("replayable=%v request %d: %d, want %d", replayable, i, resp.StatusCode, status)
			}
		}
	}
}

// A held body that comes in pieces is forwarded whole, in one request, once all of it came.
func TestHTTPHeldBodyInPieces(t *testing.T) {
	be, _ := httpBackend(t)
	s := startRelay(t, be, Config{})
	c, br := dialHTTP(t, s)
	body := pattern(30000)
	if _, err := fmt.Fprintf(c, "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", len(body)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(body); i += 10000 {
		time.Sleep(50 * time.Millisecond)
		if _, err := c.Write(body[i : i+10000]); err != nil {
			t.Fatal(err)
		}
	}
	if resp, b := readResponse(t, br, "POST"); resp.StatusCode != 200 || !bytes.Equal(b, body) {
		t.Fatalf("status %d, %d bytes back", resp.StatusCode, len(b))
	}
}

// A backend that takes the request and never answers: HTTPResponseTimeout ends the exchange
// with ErrHTTPResponseTimeout and the owner's answer; a client that leaves mid-exchange
// closes it (its backend connection is not pooled).
func TestHTTPResponseTimeoutAndClientGone(t *testing.T) {
	hold := make(chan struct{})
	be := backend(t, func(c *net.TCPConn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
			<-hold
		}
	})
	t.Cleanup(func() { close(hold) }) // before the backend's cleanup waits for its handlers
	errs := make(chan error, 4)
	closed := make(chan error, 4)
	s := startRelay(t, be, Config{HTTPResponseTimeout: 200 * time.Millisecond,
		OnExchangeEnd: func(c *Conn, status int, body int64, err error) []byte {
			errs <- err
			return []byte("HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		},
		OnClose: func(c *Conn, in, out int64, err error) { closed <- err },
	})
	c, br := dialHTTP(t, s)
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if resp, _ := readResponse(t, br, "GET"); resp.StatusCode != 504 {
		t.Fatalf("status %d, want 504", resp.StatusCode)
	}
	if err := <-errs; err != ErrHTTPResponseTimeout {
		t.Fatalf("OnExchangeEnd: %v", err)
	}
	<-closed
	c2, _ := dialHTTP(t, s)
	if _, err := io.WriteString(c2, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	_ = c2.Close()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("a client that left mid-exchange was not closed")
	}
	if active, _, _ := s.Stats(); active != 0 {
		t.Fatalf("%d connections still open", active)
	}
}

// A chunked response with trailers passes on as it came; one the backend ends by closing
// reaches the client chunked, on a connection that stays open for the next request.
func TestHTTPResponseFramings(t *testing.T) {
	var n atomic.Int64
	be := backend(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			switch req.URL.Path {
			case "/trailers":
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"+
					"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n")
			case "/close":
				n.Add(1)
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\nuntil")
				time.Sleep(20 * time.Millisecond)
				_, _ = io.WriteString(c, " close")
				return
			}
		}
	})
	s := startRelay(t, be, Config{})
	c, br := dialHTTP(t, s)
	if _, err := io.WriteString(c, "GET /trailers HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, b := readResponse(t, br, "GET")
	if string(b) != "abcde" || resp.Trailer.Get("X-Sum") != "5" {
		t.Fatalf("trailers: %q, trailer %q", b, resp.Trailer.Get("X-Sum"))
	}
	for range 2 {
		if _, err := io.WriteString(c, "GET /close HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, b = readResponse(t, br, "GET")
		if string(b) != "until close" || resp.TransferEncoding == nil || resp.Close {
			t.Fatalf("until close: %q, TE %v, close %v", b, resp.TransferEncoding, resp.Close)
		}
	}
	if n.Load() != 2 {
		t.Fatalf("backend answered %d", n.Load())
	}
}

// OnMalformed may hand a connection's first bytes off when they are another protocol's (the
// HTTP/2 preface here); once a request was served, a bad head is only answered.
func TestHTTPMalformedHandOff(t *testing.T) {
	be, _ := httpBackend(t)
	got := make(chan string, 2)
	s := startRelay(t, be, Config{
		OnMalformed: func(c *Conn, err error, first bool, data []byte) ([]byte, bool) {
			return nil, first && bytes.HasPrefix(data, []byte("PRI "))
		},
		OnHandOff: func(fd int, _ netip.AddrPort, data []byte) {
			closeFD(fd)
			got <- string(data)
		},
	})
	c, _ := dialHTTP(t, s)
	if _, err := io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if d := <-got; d != "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" {
		t.Fatalf("handed off %q", d)
	}
	c2, br := dialHTTP(t, s)
	if _, err := io.WriteString(c2, "GET /len/1 HTTP/1.1\r\nHost: a\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	readResponse(t, br, "GET")
	if resp, _ := readResponse(t, br, "GET"); resp.StatusCode != 400 {
		t.Fatalf("PRI after a request: %d, want 400", resp.StatusCode)
	}
}
