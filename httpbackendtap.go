package smartproxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"

	"github.com/gosmartproxy/smartproxy/forwarding"
)

// http.Transport parses response heads with http.ReadResponse, which
// deletes a Connection field holding "close" and with it the names of
// the fields the backend marked hop-by-hop ("Connection: close,
// X-Internal"): ReverseProxy then relayed X-Internal to the client,
// where RFC 9110 7.6.1 wants it removed (the fast path and
// internal/h1client do). So the HTTP/1.1 transports' backend connections
// are headTaps: while a request waits for its response head, the tap
// keeps a copy of what the transport reads, and RoundTrip puts the
// Connection lines of that raw head back when ReadResponse took them
// out (finalConnection, restoreConnection).

// tapSize bounds the bytes a tap keeps for one response: heads over it
// that say close are refused (errHeadUnseen), as the fast path
// refuses every head over 16 KiB.
const tapSize = 16 << 10

var tapPool = sync.Pool{New: func() any { return new([tapSize]byte) }}

// headTap is an HTTP/1.1 backend connection of http.Transport.
type headTap struct {
	net.Conn
	mu  sync.Mutex
	rec *[tapSize]byte // non-nil while a request waits for its head
	n   int            // bytes in rec
	// on says rec is set: the reads of a connection's life past its heads
	// (bodies, an upgraded stream) take no lock. Set by start before the
	// request is written, so the answer's reads see it.
	on atomic.Bool
}

// Read copies what the transport reads while a head is awaited.
func (c *headTap) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.on.Load() {
		c.mu.Lock()
		if c.rec != nil {
			c.n += copy(c.rec[c.n:], p[:n])
		}
		c.mu.Unlock()
	}
	return n, err
}

// CloseWrite half-closes the backend connection: the upgrade relay
// (httpupgrade.go) does so to an upgraded one (a WebSocket) when the
// client half-closes.
func (c *headTap) CloseWrite() error { return forwarding.CloseWrite(c.Conn) }

// Unwrap is the connection beneath (forwarding.CloseWrite's chain).
func (c *headTap) Unwrap() net.Conn { return c.Conn }

// start begins a recording: the transport is about to write a request.
func (c *headTap) start() {
	rec := tapPool.Get().(*[tapSize]byte)
	c.mu.Lock()
	c.rec, c.n = rec, 0
	c.on.Store(true)
	c.mu.Unlock()
}

// stop ends the recording; the caller returns rec to tapPool.
func (c *headTap) stop() (rec *[tapSize]byte, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rec, n = c.rec, c.n
	c.rec, c.n = nil, 0
	c.on.Store(false)
	return rec, n
}

// tapTrace follows one request's attempts: the tap of the connection the
// transport chose (its GotConn hook; the hooks live in the same
// allocation).
type tapTrace struct {
	hooks httptrace.ClientTrace
	conn  *headTap
	used  *headTap // the connection of the attempt that succeeded (an upgrade's relay)
}

func (t *tapTrace) gotConn(info httptrace.GotConnInfo) {
	t.release() // the transport retried on another connection
	if c, ok := info.Conn.(*headTap); ok {
		t.conn = c
		c.start()
	}
}

// release ends the current recording, if any.
func (t *tapTrace) release() {
	if t.conn != nil {
		if rec, _ := t.conn.stop(); rec != nil {
			tapPool.Put(rec)
		}
		t.conn = nil
	}
}

// done ends an attempt: on success, resp gets back the Connection field
// ReadResponse deleted; a head that said close and was not recorded
// whole fails the attempt (resp's body closed).
func (t *tapTrace) done(resp *http.Response, err error) (*http.Response, error) {
	c := t.conn
	t.conn = nil
	var rec *[tapSize]byte
	var n int
	if c != nil {
		rec, n = c.stop()
	}
	if rec != nil {
		defer tapPool.Put(rec)
	}
	if err != nil {
		return nil, err
	}
	t.used = c
	var vals []string
	seen := false
	if rec != nil {
		vals, seen = finalConnection(rec[:n])
	}
	if err := restoreConnection(resp, vals, seen); err != nil {
		_ = resp.Body.Close()
		return nil, fmt.Errorf("backend response: %w", err)
	}
	return resp, nil
}

// withTap makes out's attempts record their response heads; the returned
// request (out with the trace in its context) is the one to send.
func withTap(out *http.Request) (*http.Request, *tapTrace) {
	t := &tapTrace{}
	t.hooks.GotConn = t.gotConn
	return out.WithContext(httptrace.WithClientTrace(out.Context(), &t.hooks)), t
}

// tapped wraps a dialer's connections in headTaps.
func tapped(dial func(context.Context, string, string) (net.Conn, error)) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &headTap{Conn: c}, nil
	}
}
