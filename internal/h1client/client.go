package h1client

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Bounds of the pool (those the root package gives its http.Transports),
// and of a response head with the 1xx heads before it unless they are
// relayed (http.Transport's).
const (
	// MaxIdlePerAddr is how many idle connections one backend address
	// keeps; past it the longest idle of that address is closed.
	MaxIdlePerAddr = 256
	// MaxIdle is how many idle connections all addresses keep together.
	MaxIdle = 1024
	// DefaultIdleTimeout is Config.IdleTimeout's zero value.
	DefaultIdleTimeout = 90 * time.Second
	// MaxHeaderBytes bounds a response head, and the 1xx heads before it
	// that no ClientTrace relays.
	MaxHeaderBytes = 10 << 20
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

// RoundTrip sends r to r.URL.Host and reads the response head. The
// connection goes back to the pool when the response body has been read
// to its end; a body closed before that closes it. A backend that sends
// no response head within HeadTimeout fails with a net.Error whose
// Timeout is true; a Dial error is returned as it is. r must be one that
// Handles; r's context ending interrupts the exchange, body included.
func (c *Client) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := checkRequest(r); err != nil {
		return nil, err
	}
	key := poolKey{addr: r.URL.Host}
	pc := c.get(key, Replayable(r) && (r.Body == nil || r.Body == http.NoBody))
	for {
		fresh := pc == nil
		if fresh {
			nc, err := c.dial(r.Context(), "tcp", key.addr)
			if err != nil {
				return nil, err // the owner's error: another target may be tried
			}
			pc = newConn(nc, key)
		}
		resp, err := c.exchange(pc, r)
		if err == nil || fresh || !retryStale(r, pc, err) {
			return resp, err
		}
		pc = nil // the backend had closed the pooled connection: once more on a new one
	}
}

// checkRequest refuses what http.Transport refuses to send: a method that
// is not a token (the HTTP/2 server lets spaces and tabs through in
// :method, which would be written into the backend's request line), a
// field name that is not a token, or a value with control characters
// other than tab (Request.Write would drop the one and blank line breaks
// in the other).
func checkRequest(r *http.Request) error {
	if !httpguts.ValidHeaderFieldName(r.Method) {
		return fmt.Errorf("invalid method %q", r.Method)
	}
	for k, vv := range r.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("invalid header field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("invalid header field value for %q", k)
			}
		}
	}
	return nil
}

// exchange writes r on pc and reads the response head within
// headTimeout. On an error pc is closed.
func (c *Client) exchange(pc *conn, r *http.Request) (*http.Response, error) {
	ctx := r.Context()
	pc.nread, pc.nwritten, pc.limit = 0, 0, MaxHeaderBytes
	d := c.headTimeout
	if d > 0 {
		_ = pc.c.SetDeadline(time.Now().Add(d))
	}
	// The request's end (client gone, the owner stopping) interrupts
	// blocked I/O on pc until the exchange is over: body read to its
	// end, or closed.
	stop := context.AfterFunc(ctx, pc.intr)
	resp, err := head(pc, r)
	if err == nil && d > 0 {
		_ = pc.c.SetDeadline(time.Time{})
	}
	if err == nil && ctx.Err() != nil {
		// The interrupt may have run before the deadline was cleared,
		// and been undone by it: the body read would not be interrupted.
		err = ctx.Err()
	}
	if err != nil {
		stop()
		_ = pc.c.Close()
		return nil, headError(ctx, pc, d, err)
	}
	keep := !resp.Close && !r.Close
	if resp.Body == http.NoBody { // HEAD, 204, 304, Content-Length: 0
		c.release(pc, stop, keep)
		return resp, nil
	}
	resp.Body = &body{rc: resp.Body, c: c, pc: pc, ctx: ctx, stop: stop, keep: keep}
	return resp, nil
}

// head writes r and reads responses up to the final one. 1xx responses
// go to the request's ClientTrace.Got1xxResponse (a reverse proxy relays
// them, e.g. 103 Early Hints), as http.Transport does. Unlike
// http.Transport's, a response's Connection field stays in its header
// when it says close (connfield.go).
func head(pc *conn, r *http.Request) (*http.Response, error) {
	// Request.Write sends Host from r.Host or else r.URL.Host, no
	// User-Agent when the header is present but empty (a reverse proxy
	// sets it so), Connection: close when r.Close: what the transport
	// sent. One write system call for a head up to the buffer's size.
	if pc.bw == nil { // RoundTrip's only: Send writes its head itself
		pc.bw = bufio.NewWriterSize(pc, 4<<10)
	}
	err := r.Write(pc.bw)
	if err == nil {
		err = pc.bw.Flush()
	}
	if err != nil {
		return nil, err
	}
	trace := httptrace.ContextClientTrace(r.Context())
	for {
		conns, seen, err := peekConnection(pc.br)
		if err != nil {
			return nil, err
		}
		resp, err := http.ReadResponse(pc.br, r)
		if err != nil {
			return nil, err
		}
		if err := RestoreConnection(resp, conns, seen); err != nil {
			return nil, fmt.Errorf("backend %s: %w", pc.addr, err)
		}
		code := resp.StatusCode
		switch {
		case code == http.StatusSwitchingProtocols:
			return nil, fmt.Errorf("backend %s switched protocols without an upgrade request", pc.addr)
		case code >= 100 && code < 200:
			if trace != nil && trace.Got1xxResponse != nil {
				if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
					return nil, err
				}
				pc.limit = MaxHeaderBytes // relayed heads are the receiver's to bound
			}
		default:
			pc.limit = math.MaxInt64 // the body is unbounded
			return resp, nil
		}
	}
}

// headError is what a failed exchange reports: the request's own end, a
// head too large, a timeout (a net.Error, so a proxy can answer 504 and
// try no other target), or the error itself.
func headError(ctx context.Context, pc *conn, d time.Duration, err error) error {
	var ne net.Error
	switch {
	case ctx.Err() != nil:
		return context.Cause(ctx)
	case pc.limit <= 0:
		return fmt.Errorf("backend %s: response head exceeds %d bytes", pc.addr, MaxHeaderBytes)
	case errors.As(err, &ne) && ne.Timeout():
		return &timeoutError{addr: pc.addr, d: d}
	}
	return err
}

// retryStale reports whether r, failed on pc, may be sent again on a
// new connection: pc came from the pool, nothing of the response
// arrived, the failure is how a closed connection shows (EOF, or a
// socket error such as a reset or broken pipe, not a timeout), and
// either none of the request went out or it is Replayable.
func retryStale(r *http.Request, pc *conn, err error) bool {
	return staleFailure(r.Context(), pc, err) && (pc.nwritten == 0 || Replayable(r))
}

// staleFailure reports how a pooled connection the backend had closed
// fails: pc came from the pool, nothing of the response arrived, the
// request is still wanted, and the error is EOF or a socket error (a
// reset, a broken pipe), not a timeout. Whether the request may then go
// out again is the caller's rule (retryStale, Send's).
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
	pc.br = bufio.NewReaderSize(pc, 16<<10)
	pc.intr = pc.interrupt
	pc.probe.init(pc.raw)
	return pc
}
