package h1client

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// Tests of the Client on its own, where the pool's state is the point.
// The root package tests it through the proxy (its h1client_test.go).

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// rawServer is a hand-written HTTP backend: answer is called per request
// read from a connection and returns false to close it.
type rawServer struct {
	ln      net.Listener
	accepts atomic.Int64
	closes  atomic.Int64 // connections the server closed
}

func startRaw(t *testing.T, answer func(c net.Conn, r *http.Request) bool) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &rawServer{ln: ln}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepts.Add(1)
			wg.Go(func() {
				defer func() { _ = c.Close(); s.closes.Add(1) }()
				br := bufio.NewReader(c)
				for {
					r, err := http.ReadRequest(br)
					if err != nil || !answer(c, r) {
						return
					}
				}
			})
		}
	}()
	// The client under test closes its connections (CloseIdleConnections
	// is registered later, so it runs first), which ends their handlers.
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return s
}

func (s *rawServer) addr() string { return s.ln.Addr().String() }

// newTestClient is a Client over a plain net.Dialer, closed at cleanup.
func newTestClient(t *testing.T, cfg Config) *Client {
	var d net.Dialer
	cfg.Dial = d.DialContext
	c := New(cfg)
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// get sends GET addr/path and reads the body to its end.
func get(t *testing.T, c *Client, addr, path string) string {
	t.Helper()
	out, err := http.NewRequestWithContext(t.Context(), "GET", "http://"+addr+path, nil)
	require.NoError(t, err)
	resp, err := c.RoundTrip(out)
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	return string(b)
}

// TestProbe: get peeks at every pooled connection: a live one is
// reused; one the backend closed, or wrote to unasked, is closed instead.
func TestProbe(t *testing.T) {
	after := make(chan string, 1) // what the backend does after its answer
	be := startRaw(t, func(c net.Conn, _ *http.Request) bool {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		switch <-after {
		case "close":
			return false
		case "408": // after the response was taken: unsolicited, on an idle connection
			time.Sleep(10 * time.Millisecond)
			_, _ = io.WriteString(c, "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
		}
		return true
	})
	h1 := newTestClient(t, Config{})
	roundTrip := func(then string) {
		t.Helper()
		after <- then
		require.Equal(t, "ok", get(t, h1, be.addr(), "/"))
		require.Equal(t, 1, h1.IdleConns())
		time.Sleep(40 * time.Millisecond) // what the backend sends after the response arrives
	}
	roundTrip("keep")
	pc := h1.get(poolKey{addr: be.addr()}, false)
	require.NotNil(t, pc, "alive")
	require.True(t, pc.reused)
	h1.put(pc)
	roundTrip("close")
	require.Equal(t, int64(1), be.accepts.Load(), "the live connection was reused")
	require.Nil(t, h1.get(poolKey{addr: be.addr()}, false), "closed by the backend: refused")
	roundTrip("408")
	require.Nil(t, h1.get(poolKey{addr: be.addr()}, false), "unsolicited bytes: refused")
	require.Equal(t, 0, h1.IdleConns())
	require.Equal(t, int64(2), be.accepts.Load())
}

// TestProbeSkippedWhenFresh: a request that can be repeated takes a
// connection idle less than probeAfter unprobed; if the backend closed
// it, the stale-connection rule sends the request again on a new one.
// One that cannot be repeated is always probed.
func TestProbeSkippedWhenFresh(t *testing.T) {
	be := startRaw(t, func(c net.Conn, _ *http.Request) bool {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return false // closes without saying so
	})
	defer func(d time.Duration) { probeAfter = d }(probeAfter)
	probeAfter = time.Hour // every pooled connection counts as fresh
	h1 := newTestClient(t, Config{})
	require.Equal(t, "ok", get(t, h1, be.addr(), "/"))
	require.Eventually(t, func() bool { return be.closes.Load() == 1 }, 5*time.Second, time.Millisecond)
	require.Nil(t, h1.get(poolKey{addr: be.addr()}, false), "cannot be repeated: probed, found closed")
	require.Equal(t, "ok", get(t, h1, be.addr(), "/"))
	require.Eventually(t, func() bool { return be.closes.Load() == 2 }, 5*time.Second, time.Millisecond)
	pc := h1.get(poolKey{addr: be.addr()}, true)
	require.NotNil(t, pc, "repeatable and fresh: not probed")
	h1.put(pc)
	require.Equal(t, "ok", get(t, h1, be.addr(), "/"), "sent again on a new connection")
	require.Equal(t, int64(3), be.accepts.Load())
}

// TestIdleExpiry: the reaper closes connections idle past the idle
// timeout, and disarms once the pool is empty; CloseIdleConnections
// closes the rest and stops pooling.
func TestIdleExpiry(t *testing.T) {
	var conns atomic.Int64
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "b")
	}))
	be.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	be.Start()
	t.Cleanup(be.Close)
	addr := be.Listener.Addr().String()
	h1 := newTestClient(t, Config{IdleTimeout: 50 * time.Millisecond})
	get(t, h1, addr, "/")
	require.Equal(t, 1, h1.IdleConns())
	require.Eventually(t, func() bool { return h1.IdleConns() == 0 }, 2*time.Second, 5*time.Millisecond)
	h1.mu.Lock()
	require.False(t, h1.armed)
	require.Empty(t, h1.idle, "the address is forgotten")
	h1.idleTimeout = time.Hour
	h1.mu.Unlock()

	get(t, h1, addr, "/")
	require.Equal(t, 1, h1.IdleConns())
	require.Equal(t, int64(2), conns.Load())
	h1.CloseIdleConnections()
	require.Equal(t, 0, h1.IdleConns())
	h1.mu.Lock()
	require.True(t, h1.closed)
	h1.mu.Unlock()
	get(t, h1, addr, "/")
	require.Equal(t, 0, h1.IdleConns(), "closed: nothing is pooled any more")
}

// TestRefusesInvalidMethod: a method that is not a token (the HTTP/2
// server lets spaces and tabs through in :method) is refused, not
// written into the backend's request line; so are header fields
// http.Transport would not send.
func TestRefusesInvalidMethod(t *testing.T) {
	be := startRaw(t, func(c net.Conn, _ *http.Request) bool {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		return true
	})
	h1 := newTestClient(t, Config{})
	out, err := http.NewRequestWithContext(t.Context(), "GET", "http://"+be.addr()+"/public", nil)
	require.NoError(t, err)
	out.Method = "GET /admin?x HTTP/1.1\tX-Injected:"
	_, err = h1.RoundTrip(out)
	require.ErrorContains(t, err, "invalid method")

	for name, h := range map[string]http.Header{
		"invalid header field name":  {"X Bad": {"v"}},
		"invalid header field value": {"X-Ok": {"a\r\nX-Injected: 1"}},
	} {
		out, err := http.NewRequestWithContext(t.Context(), "GET", "http://"+be.addr()+"/", nil)
		require.NoError(t, err)
		out.Header = h
		_, err = h1.RoundTrip(out)
		require.ErrorContains(t, err, name)
	}
	require.Equal(t, int64(0), be.accepts.Load(), "nothing reached the backend")
}

// TestDialErrorAsIs: the owner's dial error comes back unwrapped, so it
// can tell a failed connect from a failed exchange.
func TestDialErrorAsIs(t *testing.T) {
	errDial := &net.OpError{Op: "dial", Err: context.DeadlineExceeded}
	h1 := New(Config{Dial: func(context.Context, string, string) (net.Conn, error) { return nil, errDial }})
	out, err := http.NewRequestWithContext(t.Context(), "GET", "http://192.0.2.1:80/", nil)
	require.NoError(t, err)
	_, err = h1.RoundTrip(out)
	require.Same(t, errDial, err)
}

// TestHeadTimeout: a backend that takes the request and never answers
// fails the exchange with a timeout net.Error after HeadTimeout, its
// connection closed, not pooled.
func TestHeadTimeout(t *testing.T) {
	be := startRaw(t, func(c net.Conn, _ *http.Request) bool {
		_, _ = io.Copy(io.Discard, c) // never answers; until the client closes
		return false
	})
	h1 := newTestClient(t, Config{HeadTimeout: 100 * time.Millisecond})
	out, err := http.NewRequestWithContext(t.Context(), "GET", "http://"+be.addr()+"/", nil)
	require.NoError(t, err)
	start := time.Now()
	_, err = h1.RoundTrip(out)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	require.True(t, ne.Timeout())
	require.Less(t, time.Since(start), time.Second)
	require.Equal(t, 0, h1.IdleConns())
}

func TestHandles(t *testing.T) {
	mk := func(method string, body io.Reader, h ...string) *http.Request {
		r := httptest.NewRequest(method, "http://b/", body)
		for i := 0; i+1 < len(h); i += 2 {
			r.Header.Add(h[i], h[i+1])
		}
		return r
	}
	require.True(t, Handles(mk("GET", nil)))
	require.True(t, Handles(mk("DELETE", nil)))
	require.True(t, Handles(mk("GET", nil, "Upgrade", "websocket")), "Upgrade without Connection: upgrade is no upgrade")
	require.False(t, Handles(mk("POST", io.LimitReader(nil, 0))), "a body")
	require.False(t, Handles(mk("GET", nil, "Expect", "100-continue")))
	require.False(t, Handles(mk("CONNECT", nil)))
	require.False(t, Handles(mk("GET", nil, "Upgrade", "websocket", "Connection", "keep-alive, Upgrade")))
}

// TestReplayable pins the one retry policy: http.Transport's.
func TestReplayable(t *testing.T) {
	for method, want := range map[string]bool{
		"": true, "GET": true, "HEAD": true, "OPTIONS": true, "TRACE": true,
		"PUT": false, "DELETE": false, "POST": false, "PATCH": false, "CONNECT": false,
	} {
		require.Equal(t, want, Replayable(&http.Request{Method: method}), method)
	}
	for _, key := range []string{"Idempotency-Key", "X-Idempotency-Key"} {
		require.True(t, Replayable(&http.Request{Method: "POST", Header: http.Header{key: {"k1"}}}), key)
	}
	withBody := httptest.NewRequest("GET", "http://b/", io.LimitReader(nil, 0))
	withBody.Body = io.NopCloser(withBody.Body)
	withBody.GetBody = nil
	require.False(t, Replayable(withBody), "a body that cannot be made again")
	withBody.GetBody = func() (io.ReadCloser, error) { return http.NoBody, nil }
	require.True(t, Replayable(withBody))
}
