package smartproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gosmartproxy/smartproxy/forwarding"
)

// Built-in socket handlers, the Go counterparts of the TS SmartProxy's
// SocketHandlers. Each returns a SocketHandler for RouteAction.SocketHandler.

// maxRequestHead bounds what the HTTP handlers read of a request head, so
// a hostile client cannot make them buffer without limit.
const maxRequestHead = 16 << 10

// maxLine bounds one line of LineProtocolHandler.
const maxLine = 64 << 10

// requestHeadTimeout bounds the wait for a request head.
const requestHeadTimeout = 30 * time.Second

// httpIdleTimeout bounds how long an idle keep-alive connection is kept,
// by HTTPServerHandler and the HTTP layer (which a lower inactivity
// timeout lowers further): without it an idle client would hold the
// connection (and a connection slot) until the proxy's inactivity timeout,
// 4 h by default.
const httpIdleTimeout = 2 * time.Minute

// lingerTimeout and lingerBytes bound the draining of unread request bytes
// after a one-shot HTTP response (see lingerClose).
const (
	lingerTimeout = time.Second
	lingerBytes   = 256 << 10
)

// EchoHandler writes back everything it reads, until the client closes.
func EchoHandler() SocketHandler {
	return func(ctx context.Context, conn net.Conn, rc *RouteContext) error {
		_, err := io.Copy(conn, conn)
		return err
	}
}

// ProxyHandler forwards the connection to addr ("host:port"), including
// the bytes read for routing. The dial is bounded by
// DefaultConnectTimeout, since a handler cannot see Options.ConnectTimeout.
func ProxyHandler(addr string) SocketHandler {
	return func(ctx context.Context, conn net.Conn, rc *RouteContext) error {
		dctx, cancel := context.WithTimeout(ctx, DefaultConnectTimeout)
		var d net.Dialer
		backend, err := d.DialContext(dctx, "tcp", addr)
		cancel()
		if err != nil {
			return fmt.Errorf("proxy handler: %w", err)
		}
		res := forwarding.Pipe(ctx, conn, backend, forwarding.PipeOptions{})
		return res.Err
	}
}

// LineProtocolHandler reads newline-terminated lines (CR LF or LF, at
// most 64 KiB each counting the line ending) and calls fn for each,
// without the line ending; fn writes any reply to w. Returning an error
// ends the connection (io.EOF ends it quietly). A longer line ends the
// connection with an error wrapping bufio.ErrTooLong. A last line without
// a newline is still passed to fn when the client closes.
func LineProtocolHandler(fn func(ctx context.Context, line string, w io.Writer, rc *RouteContext) error) SocketHandler {
	return func(ctx context.Context, conn net.Conn, rc *RouteContext) error {
		sc := bufio.NewScanner(conn)
		sc.Buffer(make([]byte, 0, 4096), maxLine)
		for sc.Scan() {
			if err := fn(ctx, sc.Text(), conn, rc); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
		}
		if err := sc.Err(); err != nil {
			return fmt.Errorf("line protocol: %w", err)
		}
		return nil
	}
}

// BlockHandler writes message (if any) and closes the connection.
func BlockHandler(message string) SocketHandler {
	return func(ctx context.Context, conn net.Conn, rc *RouteContext) error {
		if message != "" {
			_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, err := io.WriteString(conn, message)
			return err
		}
		return nil
	}
}

// HTTPResponseHandler answers one HTTP request with status, headers and
// body, then closes. A request that is not HTTP, or whose head exceeds
// 16 KiB, gets 400 or 431 and the handler returns the error. The body is
// left out for HEAD requests.
func HTTPResponseHandler(status int, header http.Header, body string) SocketHandler {
	return func(ctx context.Context, conn net.Conn, rc *RouteContext) error {
		req, err := readRequestHead(conn)
		if err != nil {
			return err
		}
		return respond(conn, req, status, header, body)
	}
}

// HTTPBlockHandler answers one HTTP request with status and message as a
// plain-text body, then closes. An empty message means the status text.
func HTTPBlockHandler(status int, message string) SocketHandler {
	if message == "" {
		message = http.StatusText(status)
	}
	h := http.Header{"Content-Type": {"text/plain; charset=utf-8"}}
	return HTTPResponseHandler(status, h, message+"\n")
}

// HTTPRedirectHandler answers one HTTP request with a redirect to
// location, a template (see below) where {domain} is the request's host
// (without port; the TLS SNI when the request has no usable Host header),
// {port} the port the client connected to, {path} the request path
// (escaped, without the query), {query} the raw query (without '?'), and
// {clientIp} the client address (empty when unknown): {path} and {query}
// mean what they mean in a route's templates. As with action.redirect,
// the request's query is appended unless the template places {query} or
// has a '?' of its own, so "https://{domain}{path}" keeps the query.
// Other braces stay as written. status is 301, 302, 303, 307 or 308 (0
// means 301).
func HTTPRedirectHandler(location string, status int) SocketHandler {
	if status == 0 {
		status = http.StatusMovedPermanently
	}
	return func(ctx context.Context, conn net.Conn, rc *RouteContext) error {
		req, err := readRequestHead(conn)
		if err != nil {
			return err
		}
		host := redirectHost(req.Host, rc.Domain)
		loc := redirectLocation(location, req.URL.RawQuery, func(name string) (string, bool) {
			switch name {
			case "domain":
				return host, true
			case "port":
				return strconv.Itoa(rc.Port), true
			case "path":
				return templatePath(req.URL), true
			case "query":
				return req.URL.RawQuery, true
			case "clientIp":
				if !rc.ClientIP.IsValid() {
					return "", true // not "invalid IP", netip's spelling of the zero Addr
				}
				return rc.ClientIP.String(), true
			}
			return "", false
		})
		return respond(conn, req, status, http.Header{"Location": {loc}}, "")
	}
}

// redirectHost returns the Host header without its port, keeping the
// brackets of an IPv6 literal so that it can go back into a URL. A Host
// that could change the meaning of the URL it is pasted into (it is
// client-controlled) falls back to sni.
func redirectHost(hostHeader, sni string) string {
	host := hostHeader
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
		if strings.IndexByte(h, ':') >= 0 {
			host = "[" + h + "]"
		}
	}
	if host == "" || !validHost(host) {
		return sni
	}
	return host
}

// validHost reports whether h uses only characters of host names and IP
// literals.
func validHost(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '.', c == '_', c == ':', c == '[', c == ']', c == '%':
		default:
			return false
		}
	}
	return true
}

// HTTPServerHandler serves the connection with h, keeping it alive for as
// many HTTP/1.x requests as the client sends (request heads are capped at
// 16 KiB, idle connections close after 2 minutes). When the proxy begins
// a graceful Stop (rc.Draining), a connection between requests closes at
// once and a busy one after its response; when Stop gives up, the rest
// close and requests' contexts are cancelled. A handler that hijacks the
// connection owns it until it closes it.
func HTTPServerHandler(h http.Handler) SocketHandler {
	return func(ctx context.Context, conn net.Conn, rc *RouteContext) error {
		sc := &servedConn{Conn: conn, closed: make(chan struct{})}
		l := newOneConnListener(sc)
		var hijacked atomic.Bool
		var state atomic.Int32 // the conn's http.ConnState
		stateClosed := make(chan struct{})
		var closeOnce sync.Once // http.Server reports StateClosed once today; do not rely on it
		// The HTTP layer's server setup, with the 16 KiB head cap of the
		// other HTTP handlers (the proxied path allows 64 KiB).
		srv := newHTTPServer(h, ctx, httpLimits{
			headTimeout:    requestHeadTimeout,
			idleTimeout:    httpIdleTimeout,
			maxHeaderBytes: maxRequestHead,
		})
		srv.ConnState = func(_ net.Conn, s http.ConnState) {
			state.Store(int32(s))
			switch s {
			case http.StateHijacked:
				hijacked.Store(true)
			case http.StateClosed:
				closeOnce.Do(func() { close(stateClosed) })
			}
		}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(l) }()
		var draining <-chan struct{}
		if rc != nil {
			draining = rc.Draining
		}
		giveUp := func() {
			// srv.Close closes the listener, waits for Serve to return and
			// closes the conn unless it was hijacked; a hijacked conn is
			// closed here, since the proxy is giving up on it.
			_ = srv.Close()
			_ = sc.Close()
		}
		select {
		case <-sc.closed:
			// The server (or a hijacker) is done with the connection.
		case <-draining:
			// A graceful Stop: an idle keep-alive connection closes now,
			// a busy one after its response, instead of holding Stop
			// until its deadline.
			srv.SetKeepAlivesEnabled(false)
			// That closes idle connections, but a new one (no request
			// yet) only once it is 5 s old; either is between requests,
			// so it closes now. A request starting at this very instant
			// may be cut, as in any server's shutdown.
			if st := http.ConnState(state.Load()); st == http.StateNew || st == http.StateIdle {
				_ = sc.Close()
			}
			select {
			case <-sc.closed:
			case <-ctx.Done():
				giveUp()
			}
		case <-ctx.Done():
			giveUp()
		}
		// Serve blocks in Accept until the listener closes: closing it is
		// what lets Serve, and so this handler, return.
		_ = l.Close()
		err := <-served
		if l.handedOut() && !hijacked.Load() {
			// The server's goroutine for the conn may still be running the
			// request handler; wait for it so that no goroutine outlives
			// the connection.
			<-stateClosed
		}
		if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}

// servedConn tells HTTPServerHandler when whoever owns the conn (the
// http.Server or a hijacker) closes it.
type servedConn struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (c *servedConn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		err = c.Conn.Close()
		close(c.closed)
	})
	return err
}

// CloseWrite lets http.Server half-close before closing, so that a client
// still sending does not get a reset that destroys the last response.
func (c *servedConn) CloseWrite() error { return forwarding.CloseWrite(c.Conn) }

// oneConnListener hands one conn to http.Server, then blocks Accept until
// the listener is closed.
type oneConnListener struct {
	mu     sync.Mutex
	conn   net.Conn // nil once handed out
	given  bool
	once   sync.Once
	closed chan struct{}
	addr   net.Addr
}

func newOneConnListener(c net.Conn) *oneConnListener {
	return &oneConnListener{conn: c, closed: make(chan struct{}), addr: c.LocalAddr()}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	c := l.conn
	l.conn, l.given = nil, l.given || c != nil
	l.mu.Unlock()
	if c != nil {
		return c, nil
	}
	<-l.closed
	return nil, net.ErrClosed
}

// handedOut reports whether Accept returned the conn.
func (l *oneConnListener) handedOut() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.given
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.addr }

// errHeadTooLarge reports a request head over maxRequestHead.
var errHeadTooLarge = errors.New("request head larger than 16 KiB")

// readRequestHead reads one HTTP/1.x request head under a deadline and a
// byte cap. A malformed or oversized head is answered with 400 or 431
// (best effort) and returned as an error.
func readRequestHead(conn net.Conn) (*http.Request, error) {
	_ = conn.SetReadDeadline(time.Now().Add(requestHeadTimeout))
	defer conn.SetReadDeadline(time.Time{})
	lr := &io.LimitedReader{R: conn, N: maxRequestHead}
	req, err := http.ReadRequest(bufio.NewReader(lr))
	if err == nil {
		return req, nil
	}
	status := http.StatusBadRequest
	if lr.N <= 0 {
		// The cap cut the head short; report that rather than the
		// "unexpected EOF" the parser saw.
		status, err = http.StatusRequestHeaderFieldsTooLarge, errHeadTooLarge
	}
	var ne net.Error
	if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !(errors.As(err, &ne) && ne.Timeout()) {
		// The client is still there and sent something that is not HTTP:
		// tell it why before closing.
		_ = writeHTTPResponse(conn, false, status, nil, http.StatusText(status)+"\n")
	}
	return nil, fmt.Errorf("reading HTTP request: %w", err)
}

// respond writes a one-shot response to req and then closes gracefully.
func respond(conn net.Conn, req *http.Request, status int, header http.Header, body string) error {
	if err := writeHTTPResponse(conn, req.Method == http.MethodHead, status, header, body); err != nil {
		return err
	}
	lingerClose(conn)
	return nil
}

func writeHTTPResponse(conn net.Conn, head bool, status int, header http.Header, body string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %03d %s\r\n", status, http.StatusText(status))
	h := header.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Connection", "close")
	_ = h.Write(&b) // strings.Builder does not fail; Write also strips CR/LF from values
	b.WriteString("\r\n")
	if !head {
		b.WriteString(body)
	}
	_ = conn.SetWriteDeadline(time.Now().Add(requestHeadTimeout))
	_, err := io.WriteString(conn, b.String())
	return err
}

// lingerClose half-closes conn and reads what the client still sends (a
// request body, pipelined requests) until it closes, for at most
// lingerTimeout and lingerBytes. Closing a TCP socket with unread bytes
// makes the kernel send a reset, which can destroy the response before the
// client reads it. Conns that cannot half-close are left as they are.
func lingerClose(conn net.Conn) {
	if forwarding.CloseWrite(conn) != nil {
		return
	}
	_ = conn.SetReadDeadline(time.Now().Add(lingerTimeout))
	_, _ = io.CopyN(io.Discard, conn, lingerBytes)
}
