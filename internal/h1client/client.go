package h1client

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Bounds of the pool (those the root package gives its http.Transports),
// and of response heads.
const (
	// MaxIdlePerAddr is how many idle connections one backend address
	// keeps; past it the longest idle of that address is closed.
	MaxIdlePerAddr = 256
	// MaxIdle is how many idle connections all addresses keep together.
	MaxIdle = 1024
	// DefaultIdleTimeout is Config.IdleTimeout's zero value.
	DefaultIdleTimeout = 90 * time.Second
	// MaxHeaderBytes bounds each response head, 1xx heads included: it
	// is the size of a connection's read buffer, in which the strict
	// parser (internal/h1parse) reads a head whole. HAProxy's default
	// bound (tune.bufsize) is the same; a backend that sends more is
	// refused (502), on every path of the proxy alike.
	MaxHeaderBytes = 16 << 10
	// maxHeadsBytes bounds all the heads of one exchange together: the
	// 1xx heads a backend may send before the final one, relayed or not.
	maxHeadsBytes = 10 << 20
)

// Config is what a Client needs from its owner.
type Config struct {
	// Dial connects to a backend address, the request URL's host
	// ("host:port"). Required. Its error is returned by RoundTrip as it
	// is, so the caller can tell a failed connect (nothing was sent)
	// from a failed exchange; it should bound its own time.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// HeadTimeout bounds each exchange from writing the request to the
	// end of the response head, as http.Transport's
	// ResponseHeaderTimeout does: the backend must take the request and
	// start answering in that time. Zero: no bound.
	HeadTimeout time.Duration
	// IdleTimeout closes pooled connections idle that long. Zero:
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds the TLS handshake of a new connection to a
	// TLS backend (Outgoing.TLS), as http.Transport's
	// TLSHandshakeTimeout does. Zero: only the request's context.
	HandshakeTimeout time.Duration
}

// Client sends HTTP/1.1 requests over its own pool of keep-alive
// connections: bodyless ones to cleartext backends (RoundTrip), and
// pre-serialised ones to cleartext or TLS backends (Send). It is safe for concurrent use;
// CloseIdleConnections ends it.
type Client struct {
	dial             func(ctx context.Context, network, addr string) (net.Conn, error)
	headTimeout      time.Duration
	handshakeTimeout time.Duration

	mu     sync.Mutex
	idle   map[poolKey][]*conn // per backend (address, TLS), longest idle first
	n      int                 // idle connections of all addresses
	reaper *time.Timer         // closes expired connections
	armed  bool                // reaper pending; not re-armed once the pool is empty
	closed bool                // CloseIdleConnections ran: nothing is pooled any more

	idleTimeout time.Duration // under mu: tests lower it
}

// New returns a Client for cfg. It panics without cfg.Dial, a
// programming error.
func New(cfg Config) *Client {
	if cfg.Dial == nil {
		panic("h1client: Config.Dial is nil")
	}
	return &Client{
		dial:             cfg.Dial,
		headTimeout:      cfg.HeadTimeout,
		handshakeTimeout: cfg.HandshakeTimeout,
		idleTimeout:      cmp.Or(cfg.IdleTimeout, DefaultIdleTimeout),
	}
}

// Handles reports whether a Client can send r: no body, no Expect, no
// upgrade (the response would be a bidirectional stream) and no CONNECT
// (likewise). Others belong on http.Transport.
func Handles(r *http.Request) bool {
	return (r.Body == nil || r.Body == http.NoBody) && r.ContentLength == 0 &&
		r.Method != http.MethodConnect && len(r.Header["Expect"]) == 0 &&
		!(r.Header.Get("Upgrade") != "" && httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade"))
}

// Replayable reports whether r may be sent again, to another backend or
// on a fresh connection, after an attempt that may have reached the
// backend. This is http.Transport's rule (its isReplayable): r has no
// body or can make it again (GetBody), and its method is GET, HEAD,
// OPTIONS or TRACE, or the client marked it with an Idempotency-Key or
// X-Idempotency-Key header. PUT and DELETE are idempotent by RFC 9110
// 9.2.2 but are not replayed: the first attempt may have taken effect,
// and a proxy cannot know that repeating it is harmless (another request
// may have come between the two).
func Replayable(r *http.Request) bool {
	if r.Body != nil && r.Body != http.NoBody && r.GetBody == nil {
		return false
	}
	switch r.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return r.Header["Idempotency-Key"] != nil || r.Header["X-Idempotency-Key"] != nil
}

// headError is what a failed exchange reports: the request's own end,
// heads over maxHeadsBytes, a timeout (a net.Error, so a proxy can
// answer 504 and try no other target), or the error itself.
func headError(ctx context.Context, pc *conn, d time.Duration, err error) error {
	var ne net.Error
	switch {
	case ctx.Err() != nil:
		return context.Cause(ctx)
	case pc.limit <= 0:
		return fmt.Errorf("backend %s: response heads exceed %d bytes", pc.addr, maxHeadsBytes)
	case errors.As(err, &ne) && ne.Timeout():
		return &timeoutError{addr: pc.addr, d: d}
	}
	return err
}

// staleFailure reports how a pooled connection the backend had closed
// fails: pc came from the pool, nothing of the response arrived, the
// request is still wanted, and the error is EOF or a socket error (a
// reset, a broken pipe), not a timeout. Whether the request may then go
// out again is Send's rule.
func staleFailure(ctx context.Context, pc *conn, err error) bool {
	if !pc.reused || pc.nread > 0 || ctx.Err() != nil {
		return false
	}
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ne) && !ne.Timeout()
}

// timeoutError: the backend did not take the request and start
// answering within HeadTimeout.
type timeoutError struct {
	addr string
	d    time.Duration
}

func (e *timeoutError) Error() string {
	return fmt.Sprintf("backend %s sent no response head within %v", e.addr, e.d)
}
func (e *timeoutError) Timeout() bool   { return true } // a proxy answers 504
func (e *timeoutError) Temporary() bool { return true } // completes net.Error

// newConn wraps a fresh backend connection for k in its buffers.
func newConn(c net.Conn, k poolKey) *conn {
	pc := &conn{c: c, raw: rawConn(c), addr: k.addr, key: k}
	pc.br = bufio.NewReaderSize(pc, MaxHeaderBytes)
	pc.intr = pc.interrupt
	pc.probe.init(pc.raw)
	return pc
}
