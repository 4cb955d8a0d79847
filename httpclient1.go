package smartproxy

import (
	"bufio"
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
	"sync/atomic"
	"time"
)

// A synchronous HTTP/1.1 client for cleartext backends. http.Transport
// runs a read and a write goroutine per backend connection, hands each
// request and response between them over channels and makes a cancel
// context per request: about a fifth of the proxy's CPU at keep-alive
// rates (bench/README.md). A request without a body needs none of that:
// the handler goroutine writes it on a pooled connection and reads the
// response head, and the reverse proxy reads the body from the
// connection in the same goroutine. Requests with a body stay on
// http.Transport: a backend may answer (413) before reading the body and
// stop reading it, so writing and reading must run concurrently.
//
// The transport's read goroutine noticed at once when a backend closed
// an idle connection, or sent bytes on it. Here every pooled connection
// is peeked without blocking before reuse (one recvfrom): closed or
// holding unsolicited bytes (a body after a HEAD, more than its
// Content-Length, a stray response), it is dropped, so such bytes can
// never be read as the next request's response. A reused connection that
// fails before any byte of the response arrived is replaced by a new
// one, once, if repeating is safe.

// Bounds of the pool (newTransport's), and of a response head with the
// 1xx heads before it unless they are relayed (http.Transport's).
const (
	h1MaxIdlePerAddr = 256
	h1MaxIdle        = 1024
	h1IdleTimeout    = 90 * time.Second
	h1MaxHeaderBytes = 10 << 20
)

// aLongTimeAgo is a deadline in the past: blocked and later I/O on a
// conn with it fails at once.
var aLongTimeAgo = time.Unix(1, 0)

// h1Client sends bodyless HTTP/1.1 requests to cleartext backends over
// its own pool of keep-alive connections. Its zero value with h set is
// ready; closeIdle ends it.
type h1Client struct {
	h *httpLayer

	mu     sync.Mutex
	idle   map[string][]*h1Conn // per backend address, longest idle first
	n      int                  // idle connections of all addresses
	reaper *time.Timer          // closes expired connections
	armed  bool                 // reaper pending; not re-armed once the pool is empty
	closed bool                 // closeIdle ran: nothing is pooled any more

	// idleTimeout (under mu) is h1IdleTimeout when zero; tests lower it.
	idleTimeout time.Duration
}

// h1Takes reports whether the synchronous client can send out: no body,
// no Expect, no upgrade (the response would be a bidirectional stream)
// and no CONNECT (likewise).
func h1Takes(out *http.Request) bool {
	return (out.Body == nil || out.Body == http.NoBody) && out.ContentLength == 0 &&
		out.Method != http.MethodConnect && len(out.Header["Expect"]) == 0 && !isUpgrade(out)
}

// RoundTrip sends out to out.URL.Host and reads the response head. The
// connection goes back to the pool when the response body has been read
// to its end; a body closed before that closes it.
func (c *h1Client) RoundTrip(out *http.Request) (*http.Response, error) {
	// A method must be a token, as http.Transport requires: the HTTP/2
	// server lets spaces and tabs through in :method, which would
	// otherwise be written into the backend's request line.
	if !validHeaderName(out.Method) {
		return nil, fmt.Errorf("invalid method %q", out.Method)
	}
	if err := checkHeader(out.Header); err != nil {
		return nil, err
	}
	addr := out.URL.Host
	// A request that cannot be repeated probes any pooled connection:
	// only the race http.Transport has too is left.
	pc := c.get(addr)
	for {
		fresh := pc == nil
		if fresh {
			conn, err := c.h.dialBackend(out.Context(), "tcp", addr)
			if err != nil {
				return nil, err // a *backendDialError: another target may be tried
			}
			pc = newH1Conn(conn, addr)
		}
		resp, err := c.exchange(pc, out)
		if err == nil || fresh || !retryStale(out, pc, err) {
			return resp, err
		}
		pc = nil // the backend had closed the pooled connection: once more on a new one
	}
}

// exchange writes out on pc and reads the response head, within
// ConnectTimeout: the backend must take the request and start answering
// in that time, as http.Transport's ResponseHeaderTimeout asked. On an
// error pc is closed.
func (c *h1Client) exchange(pc *h1Conn, out *http.Request) (*http.Response, error) {
	ctx := out.Context()
	pc.nread, pc.nwritten, pc.limit = 0, 0, h1MaxHeaderBytes
	d := c.h.px.connectTimeout
	if d > 0 {
		_ = pc.c.SetDeadline(time.Now().Add(d))
	}
	// The request's end (client gone, Stop) interrupts blocked I/O on pc
	// until the exchange is over: body read to its end, or closed.
	stop := context.AfterFunc(ctx, pc.intr)
	resp, err := c.head(pc, out)
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
	keep := !resp.Close && !out.Close
	if resp.Body == http.NoBody { // HEAD, 204, 304, Content-Length: 0
		c.release(pc, stop, keep)
		return resp, nil
	}
	resp.Body = &h1Body{rc: resp.Body, c: c, pc: pc, ctx: ctx, stop: stop, keep: keep}
	return resp, nil
}

// head writes out and reads responses up to the final one. 1xx
// responses go to the request's ClientTrace.Got1xxResponse (the reverse
// proxy relays them, e.g. 103 Early Hints), as http.Transport does.
func (c *h1Client) head(pc *h1Conn, out *http.Request) (*http.Response, error) {
	// Request.Write sends Host from out.Host or else out.URL.Host, no
	// User-Agent when the header is present but empty (the reverse proxy
	// sets it so), Connection: close when out.Close: what the transport
	// sent. One write system call for a head up to the buffer's size.
	err := out.Write(pc.bw)
	if err == nil {
		err = pc.bw.Flush()
	}
	if err != nil {
		return nil, err
	}
	trace := httptrace.ContextClientTrace(out.Context())
	for {
		resp, err := http.ReadResponse(pc.br, out)
		if err != nil {
			return nil, err
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
				pc.limit = h1MaxHeaderBytes // relayed heads are the receiver's to bound
			}
		default:
			pc.limit = math.MaxInt64 // the body is unbounded
			return resp, nil
		}
	}
}

// headError is what a failed exchange reports: the request's own end, a
// head too large, a timeout (a net.Error, so the proxy answers 504 and
// tries no other target), or the error itself.
func headError(ctx context.Context, pc *h1Conn, d time.Duration, err error) error {
	var ne net.Error
	switch {
	case ctx.Err() != nil:
		return context.Cause(ctx)
	case pc.limit <= 0:
		return fmt.Errorf("backend %s: response head exceeds %d bytes", pc.addr, h1MaxHeaderBytes)
	case errors.As(err, &ne) && ne.Timeout():
		return &h1TimeoutError{addr: pc.addr, d: d}
	}
	return err
}

// retryStale reports whether out, failed on pc, may be sent again on a
// new connection: pc came from the pool, nothing of the response
// arrived, the failure is how a closed connection shows (EOF, or a
// socket error such as a reset or broken pipe, not a timeout), and
// either none of the request went out or the method is idempotent.
func retryStale(out *http.Request, pc *h1Conn, err error) bool {
	if !pc.reused || pc.nread > 0 || out.Context().Err() != nil {
		return false
	}
	var ne net.Error
	if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && (!errors.As(err, &ne) || ne.Timeout()) {
		return false
	}
	return pc.nwritten == 0 || idempotent(out)
}

// idempotent reports whether sending out twice is harmless: its method
// says so (RFC 9110 9.2.2), or the client marked it with a key, which
// http.Transport honours too.
func idempotent(out *http.Request) bool {
	switch out.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true // http.Transport's isReplayable: PUT and DELETE may have taken effect
	}
	return out.Header["Idempotency-Key"] != nil || out.Header["X-Idempotency-Key"] != nil
}

// checkHeader refuses what http.Transport refuses to send: a field name
// that is not a token, or a value with control characters other than tab
// (Request.Write would drop the one and blank line breaks in the other).
func checkHeader(h http.Header) error {
	for k, vv := range h {
		if !validHeaderName(k) {
			return fmt.Errorf("invalid header field name %q", k)
		}
		for _, v := range vv {
			for i := 0; i < len(v); i++ {
				if b := v[i]; b < ' ' && b != '\t' || b == 0x7f {
					return fmt.Errorf("invalid header field value for %q", k)
				}
			}
		}
	}
	return nil
}

// h1TimeoutError: the backend did not take the request and start
// answering within ConnectTimeout.
type h1TimeoutError struct {
	addr string
	d    time.Duration
}

func (e *h1TimeoutError) Error() string {
	return fmt.Sprintf("backend %s sent no response head within %v", e.addr, e.d)
}
func (e *h1TimeoutError) Timeout() bool   { return true } // the proxy answers 504
func (e *h1TimeoutError) Temporary() bool { return true } // completes net.Error

// h1Conn is a backend connection and its buffers, owned by one exchange
// at a time or by the pool. Its Read and Write are the buffers' I/O:
// they count what the exchange moved and bound the response head.
type h1Conn struct {
	c         net.Conn
	addr      string
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
	reused    bool   // taken from the pool: the backend may have closed it since
	nread     int64  // bytes read in this exchange
	nwritten  int64  // bytes written in this exchange
	limit     int64  // bytes the response head may still take
	intr      func() // interrupt, made once rather than per exchange
}

func newH1Conn(c net.Conn, addr string) *h1Conn {
	pc := &h1Conn{c: c, addr: addr}
	pc.br = bufio.NewReaderSize(pc, 16<<10)
	pc.bw = bufio.NewWriterSize(pc, 4<<10)
	pc.intr = pc.interrupt
	return pc
}

func (pc *h1Conn) Read(p []byte) (int, error) {
	if pc.limit <= 0 {
		return 0, errors.New("response head too large")
	}
	if int64(len(p)) > pc.limit {
		p = p[:pc.limit]
	}
	n, err := pc.c.Read(p)
	pc.nread += int64(n)
	pc.limit -= int64(n)
	return n, err
}

func (pc *h1Conn) Write(p []byte) (int, error) {
	n, err := pc.c.Write(p)
	pc.nwritten += int64(n)
	return n, err
}

// interrupt makes pc's blocked and later I/O fail: the request ended.
// A conn without deadlines (from Options.Dial) is closed instead.
func (pc *h1Conn) interrupt() {
	if pc.c.SetDeadline(aLongTimeAgo) != nil {
		_ = pc.c.Close()
	}
}

// h1Body is a response body read from its exchange's connection. The
// connection goes back to the pool when the body ends cleanly, and is
// closed when the body is abandoned or fails; either happens once.
type h1Body struct {
	rc   io.ReadCloser // ReadResponse's body
	c    *h1Client
	pc   *h1Conn
	ctx  context.Context
	stop func() bool // ends the exchange's interrupt
	keep bool        // response and request allow another exchange on pc
	done atomic.Bool // pc was released
}

func (b *h1Body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil {
		if err != io.EOF && b.ctx.Err() != nil {
			// Interrupted: report the cancel, which the reverse proxy
			// does not log as a read error.
			err = b.ctx.Err()
		}
		b.finish(err == io.EOF && b.keep)
	}
	return n, err
}

// Close before the end closes the connection rather than read an
// unbounded rest (so ReadResponse's body, whose Close drains, is left
// alone); after the end it does nothing.
func (b *h1Body) Close() error {
	b.finish(false)
	return nil
}

// finish releases the connection, the first time only.
func (b *h1Body) finish(reuse bool) {
	if !b.done.Swap(true) {
		b.c.release(b.pc, b.stop, reuse)
	}
}

// release ends pc's exchange: pc goes back to the pool if keep, the
// interrupt never ran and no byte beyond the response arrived (a broken
// backend's); otherwise it is closed.
func (c *h1Client) release(pc *h1Conn, stop func() bool, keep bool) {
	if stop() && keep && pc.br.Buffered() == 0 {
		c.put(pc)
		return
	}
	_ = pc.c.Close()
}

// get takes the most recently used idle connection to addr that is
// still usable: not expired and, if probe or idle for a while, not
// closed by the backend. nil when there is none.
func (c *h1Client) get(addr string) *h1Conn {
	for {
		c.mu.Lock()
		list := c.idle[addr]
		if len(list) == 0 {
			c.mu.Unlock()
			return nil
		}
		pc := list[len(list)-1]
		list[len(list)-1] = nil
		c.idle[addr] = list[:len(list)-1]
		c.n--
		maxIdle := orDefault(c.idleTimeout, h1IdleTimeout)
		c.mu.Unlock()
		if time.Since(pc.idleSince) < maxIdle && peekAlive(pc.c) {
			pc.reused = true
			return pc
		}
		_ = pc.c.Close()
	}
}

// put pools pc, idle from now. Past the bounds the longest idle
// connection goes: of pc's address if that one is full, else of all.
func (c *h1Client) put(pc *h1Conn) {
	pc.idleSince = time.Now()
	var evicted *h1Conn
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		_ = pc.c.Close()
		return
	}
	if c.idle == nil {
		c.idle = make(map[string][]*h1Conn)
	}
	if len(c.idle[pc.addr]) >= h1MaxIdlePerAddr {
		evicted = c.evictLocked(pc.addr)
	} else if c.n >= h1MaxIdle {
		evicted = c.evictLocked("")
	}
	c.idle[pc.addr] = append(c.idle[pc.addr], pc)
	c.n++
	if !c.armed {
		c.armed = true
		if d := orDefault(c.idleTimeout, h1IdleTimeout); c.reaper == nil {
			c.reaper = time.AfterFunc(d, c.reap)
		} else {
			c.reaper.Reset(d)
		}
	}
	c.mu.Unlock()
	if evicted != nil {
		_ = evicted.c.Close()
	}
}

// evictLocked takes out the longest idle connection of addr, or of all
// addresses for "".
func (c *h1Client) evictLocked(addr string) *h1Conn {
	if addr == "" {
		var since time.Time
		for a, list := range c.idle {
			if len(list) > 0 && (addr == "" || list[0].idleSince.Before(since)) {
				addr, since = a, list[0].idleSince
			}
		}
	}
	list := c.idle[addr]
	pc := list[0]
	n := copy(list, list[1:])
	list[n] = nil
	c.idle[addr] = list[:n]
	c.n--
	return pc
}

// reap closes the connections idle for the idle timeout and re-arms for
// the next to expire, if any is left. It runs on the reaper's timer, so
// an empty pool costs no goroutine and no wake-up.
func (c *h1Client) reap() {
	now := time.Now()
	var dead []*h1Conn
	var next time.Time
	c.mu.Lock()
	timeout := orDefault(c.idleTimeout, h1IdleTimeout)
	for addr, list := range c.idle {
		i := 0
		for i < len(list) && now.Sub(list[i].idleSince) >= timeout {
			i++
		}
		dead = append(dead, list[:i]...)
		k := copy(list, list[i:])
		clear(list[k:])
		if k == 0 {
			delete(c.idle, addr) // also forgets addresses no longer used
			continue
		}
		c.idle[addr] = list[:k]
		if next.IsZero() || list[0].idleSince.Before(next) {
			next = list[0].idleSince
		}
	}
	c.n -= len(dead)
	c.armed = c.n > 0
	if c.armed {
		c.reaper.Reset(next.Add(timeout).Sub(now))
	}
	c.mu.Unlock()
	for _, pc := range dead {
		_ = pc.c.Close()
	}
}

// closeIdle closes the pooled connections and stops pooling. Stop calls
// it once no request is expected any more; one that still ends closes
// its connection.
func (c *h1Client) closeIdle() {
	c.mu.Lock()
	idle := c.idle
	c.idle, c.n, c.closed, c.armed = nil, 0, true, false
	if c.reaper != nil {
		c.reaper.Stop()
	}
	c.mu.Unlock()
	for _, list := range idle {
		for _, pc := range list {
			_ = pc.c.Close()
		}
	}
}

// orDefault is d, or def when d is zero.
func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
