package smartproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gosmartproxy/smartproxy/forwarding"
	"github.com/gosmartproxy/smartproxy/internal/h1parse"
)

// The HTTP/1.1 fast path (the default; Options.DisableHTTPFastPath): a connection's
// requests are read into one reused buffer, parsed by the strict parser
// (internal/h1parse, which refuses every head whose framing another
// parser could read differently) and answered by fastWriter, instead of
// net/http's server with its background reads, per-request goroutine
// hand-offs and lenient parsing. Each request then takes the same way as
// on net/http (serveRequest: framing refusals, decide, act), so a route
// behaves the same on both.
//
// What the fast path does not serve it hands over, with the bytes it
// has read, to net/http for the rest of the connection, before anything
// of the request was checked or counted: the h2c preface, HTTP/1.0,
// upgrades, Expect, targets other than origin-form, and requests whose
// route is a socket handler (decide's eligible hook says no after the
// match alone). TLS connections that negotiated h2 never reach it.

// fastHeadBuf is the head buffer of a fast connection; a head may grow it
// up to maxHTTPHeaderBytes.
const fastHeadBuf = 8 << 10

// fastConn is one client connection on the fast path.
type fastConn struct {
	h      *httpLayer
	hc     *httpConn
	conn   net.Conn
	tls    *tls.ConnectionState
	remote string
	ctx    context.Context

	buf  []byte // buf[off:n] is read and not consumed
	off  int
	n    int
	head bool // the current request is HEAD
	// req is the current request's parsed head (the fast forward
	// serialises the outgoing head from it); its slices are buf's.
	req *h1parse.Request
	// cur is the current request's objects (fastReq): route takes its
	// scratch from it. Cleared after the request, so that an idle
	// connection keeps none of them alive.
	cur *fastReq
	// forwarded: fastForward carried the current request (act).
	forwarded bool
	idle      atomic.Bool
	// cut: the body's end is taking it from a goroutine still reading it
	// (fastBody.end).
	cut atomic.Bool
	rdl int64 // the read deadline set, on monoNow's clock (armRead); 0: none

	reqTmpl *http.Request // fields every request shares, its context included
	w       fastWriter    // the current request's; reused
	fwd     fastFwdState  // the current request's fast forward (httpfastforward.go); reused
	fields  fwdFields     // the forwarding fields' values, kept while they hold (appendFastRequest)

	cancel context.CancelFunc // ends ctx: the client went away
	watch  fastWatch
}

// fastEligibleConn reports whether conn may start on the fast path, and
// its TLS state when it is a TLS stream.
func fastEligibleConn(conn net.Conn) (*tls.ConnectionState, bool) {
	switch c := conn.(type) {
	case *tls.Conn:
		st := c.ConnectionState()
		return &st, st.NegotiatedProtocol != "h2"
	case *tlsPeekConn:
		return &c.state, true
	case *meterConn:
		return nil, true
	}
	return nil, false
}

// closing reports a proxy that is shutting down.
func (fc *fastConn) closing() bool { return fc.h.fastStop.Load() }

// serveFast runs conn's requests on the fast path. It returns nil when
// the connection is done, or the connection to hand to net/http (the
// bytes read and not consumed replayed in front).
func (h *httpLayer) serveFast(conn net.Conn, hc *httpConn, st *tls.ConnectionState) net.Conn {
	ctx := context.WithValue(h.px.baseCtx, httpConnKey{}, hc)
	// ReverseProxy aborts a response whose body broke off (panics with
	// http.ErrAbortHandler, recovered in serveOne) only under a server.
	ctx = context.WithValue(ctx, http.ServerContextKey, fastServerMarker)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fc := &fastConn{h: h, hc: hc, conn: conn, tls: st, remote: conn.RemoteAddr().String(), ctx: ctx,
		cancel: cancel, buf: make([]byte, fastHeadBuf)}
	fc.reqTmpl = (&http.Request{Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Body: http.NoBody,
		RemoteAddr: fc.remote, TLS: st}).WithContext(ctx)
	if m, ok := conn.(*meterConn); ok {
		fc.takeSniffed(m)
	}
	h.fastConns.Store(fc, struct{}{})
	defer h.fastConns.Delete(fc)
	var req h1parse.Request
	for first := true; ; first = false {
		err := fc.readHead(&req, first)
		switch {
		case errors.Is(err, errFastHandOff):
			return fc.handOff()
		case err != nil:
			fc.refuse(err)
			return nil
		}
		if !fastEligibleHead(&req) {
			return fc.handOff()
		}
		keep, handOff := fc.serveOne(&req)
		if handOff {
			return fc.handOff()
		}
		if !keep || fc.closing() {
			return nil
		}
	}
}

// takeSniffed reads into buf the bytes a plain connection's sniff left in
// its PeekConn (the request line and what came with it), then takes the
// PeekConn out from under the meter: its reads go to the socket directly.
func (fc *fastConn) takeSniffed(m *meterConn) {
	if p, ok := m.Conn.(*forwarding.PeekConn); ok {
		if n := len(p.Buffered()); n > 0 && n <= len(fc.buf) {
			fc.n, _ = m.Read(fc.buf) // buffered bytes: no read of the socket, counted by the meter
		}
		m.dropDrainedPeek()
		m.rawCalls() // as for terminated connections (httpLayer.serve): no sysmon wake-ups per call
	}
}

// fastServerMarker is the http.ServerContextKey of fast-path requests.
var fastServerMarker = &http.Server{}

// errFastHandOff: what was read goes to net/http.
var errFastHandOff = errors.New("fast path: hand off")

// readHead reads until buf holds a complete head and parses it.
func (fc *fastConn) readHead(req *h1parse.Request, first bool) error {
	h := fc.h
	if fc.off > 0 {
		fc.n = copy(fc.buf, fc.buf[fc.off:fc.n])
		fc.off = 0
	}
	if len(fc.buf) > fastHeadBuf && fc.n <= fastHeadBuf {
		// A large head grew buf: the connection may now sit idle for
		// the idle timeout, holding no more than any other.
		fc.buf = append(make([]byte, 0, fastHeadBuf), fc.buf[:fc.n]...)[:fastHeadBuf]
	}
	var began time.Time // when the head's first bytes were seen
	for {
		if fc.n > 0 {
			if first && bytes.HasPrefix(fc.buf[:fc.n], []byte("PRI ")) {
				// The h2c preface (or a PRI request): net/http's. Only
				// first: after a request net/http would take the preface
				// for a connection's start and switch to HTTP/2 mid-stream,
				// where on its own it answers 400 (refuseFraming), as the
				// parser does.
				return errFastHandOff
			}
			err := h1parse.Parse(fc.buf[:fc.n], req)
			if !errors.Is(err, h1parse.ErrIncomplete) {
				return err
			}
			if fc.n == len(fc.buf) {
				if len(fc.buf) >= maxHTTPHeaderBytes {
					return errFastHeadTooLarge
				}
				fc.buf = append(fc.buf, make([]byte, len(fc.buf))...)[:min(2*len(fc.buf), maxHTTPHeaderBytes)]
			}
		}
		wait := h.headTimeout()
		if fc.n == 0 {
			if !first {
				wait = h.idleTimeout
			}
			fc.idle.Store(true)
		} else {
			// The head timeout bounds the whole head, as net/http's
			// ReadHeaderTimeout does, not each read: a client trickling
			// a byte at a time must not hold the connection for 64 KiB
			// of head timeouts.
			if began.IsZero() {
				began = time.Now()
			}
			wait -= time.Since(began) // <= 0: the read fails at once
		}
		if fc.n == 0 && !first {
			// The next request of a keep-alive client comes only after
			// it read the response just written: a read now finds
			// nothing (EAGAIN), a system call spent before the wait.
			// Letting the connections that are ready run first gives it
			// that time, so the read more often finds the request, and
			// the runtime polls for more of them at once (session 8:
			// 6.30 -> 5.84 system calls per GET, +3-6 % requests per
			// CPU-second).
			runtime.Gosched()
		}
		fc.armRead(wait)
		// After the deadline: beginShutdown sets fastStop, then wakes the
		// idle by moving their deadline; checked before it, a wake could
		// be overwritten by armRead.
		if fc.n == 0 && fc.closing() {
			return io.EOF
		}
		m, err := fc.conn.Read(fc.buf[fc.n:])
		fc.idle.Store(false)
		fc.n += m
		if err != nil && m == 0 {
			return io.EOF // a closed or idle connection ends without a word
		}
	}
}

var errFastHeadTooLarge = errors.New("request head too large")

// armRead makes the connection's reads time out wait from now, at the
// earliest, and up to an eighth later: a deadline already in that range
// is kept, so a busy keep-alive connection moves its timer once every
// wait/8 rather than once per request. Every read deadline of a fast
// connection is set here or through setReadDeadline, which keep rdl.
// The check reads the monotonic clock alone; the wall clock is read only
// to move the deadline.
func (fc *fastConn) armRead(wait time.Duration) {
	at := monoNow() + int64(wait)
	if fc.rdl != 0 && fc.rdl >= at && fc.rdl < at+int64(wait/8) {
		return
	}
	fc.setReadDeadline(time.Now().Add(wait + wait/8))
}

// setReadDeadline sets the read deadline and records it for armRead.
func (fc *fastConn) setReadDeadline(t time.Time) {
	fc.rdl = 0
	if !t.IsZero() {
		fc.rdl = max(int64(t.Sub(monoBase)), 1)
	}
	_ = fc.conn.SetReadDeadline(t)
}

// fastEligibleHead reports a head the fast path serves.
func fastEligibleHead(r *h1parse.Request) bool {
	return r.Minor == 1 && !r.Upgrade && !r.Expect && len(r.Target) > 0 && r.Target[0] == '/'
}

// refuse answers a head the parser refused, and ends the connection.
func (fc *fastConn) refuse(err error) {
	if errors.Is(err, io.EOF) {
		return
	}
	status := http.StatusBadRequest
	switch {
	case errors.Is(err, errFastHeadTooLarge):
		status = http.StatusRequestHeaderFieldsTooLarge
	case errors.Is(err, h1parse.ErrUnsupported):
		status = http.StatusNotImplemented
	}
	fc.h.px.logConn("request refused", "id", fc.hc.rc.ConnectionID, "err", err)
	var w rawResponse
	http.Error(&w, http.StatusText(status), status)
	_ = fc.conn.SetWriteDeadline(time.Now().Add(refuseWait))
	_, _ = fc.conn.Write(w.bytes())
}

// handOff returns the connection for net/http with the unconsumed bytes
// in front.
func (fc *fastConn) handOff() net.Conn {
	fc.setReadDeadline(time.Time{})
	pending := append([]byte(nil), fc.buf[fc.off:fc.n]...)
	rc := &fastReplayConn{Conn: fc.conn, pending: pending}
	if fc.tls != nil {
		return &fastReplayTLSConn{fastReplayConn: rc, state: *fc.tls}
	}
	return rc
}

// serveOne serves one parsed request. keep: the connection may carry
// another; handOff: the request's route wants net/http (nothing was
// done for it yet).
func (fc *fastConn) serveOne(req *h1parse.Request) (keep, handOff bool) {
	r, err := fc.request(req)
	if err != nil {
		fc.refuse(err)
		return false, false
	}
	fc.head, fc.req = r.Method == http.MethodHead, req
	// The request's own body, never reused: a backend transport's goroutine
	// that comes back to Read after end (between two reads when end ran)
	// finds it ended, not the next request's.
	body := &fc.cur.body
	body.fc = fc
	switch {
	case req.Chunked:
		body.chunks = h1parse.NewChunkReader(bufio.NewReader(&fastBody{fc: fc, left: -1}))
		if r.Trailer != nil {
			body.chunks.Trailer = func(name, value []byte) {
				k := textproto.CanonicalMIMEHeaderKey(string(name))
				r.Trailer[k] = append(r.Trailer[k], string(value))
			}
		}
		r.Body = body
	case req.ContentLength > 0:
		body.left = req.ContentLength
		r.Body = body
	}
	w := fc.writer(req.Close)
	defer w.release()
	if r.Body == http.NoBody {
		fc.watch.arm(fc)
	}
	fc.forwarded = false
	v, aborted := fc.run(w, r)
	whole := body.end() // before the connection is read again: drain, watch, next head
	if fr := fc.cur; fc.forwarded && !aborted && r.Body == http.NoBody && fr != nil && !fr.route.shared {
		// h1client keeps none of it, no handler or transport saw it; released once this
		// function is done with body (fastReq).
		defer fastReqs.Put(fr)
	}
	fc.cur = nil
	if v == ineligible {
		// Nothing read the body: net/http gets the head again, and what
		// the watch read goes behind it (disarm keeps buf[off:]).
		fc.off = 0
	}
	if !fc.watch.disarm(fc) {
		return false, false // the client is gone
	}
	if aborted {
		return false, false // the response is cut: the client sees it end early
	}
	if v == ineligible {
		return false, true
	}
	if !whole {
		// A read of the body was cut off under the goroutine making it:
		// where the next request starts is not known.
		w.closeAfter = true
	}
	keep = w.finish()
	if !whole || req.Chunked || body.failed {
		return false, false // where the next request starts is not known (or chunked: see refuseFraming)
	}
	if body.left > 0 {
		keep = keep && body.drain()
	}
	return keep, false
}

// run runs the shared request path; aborted when it panicked (a
// response body that broke off: http.ErrAbortHandler), which net/http
// would answer by closing the connection, as the caller does.
func (fc *fastConn) run(w *fastWriter, r *http.Request) (v verdict, aborted bool) {
	defer func() {
		if p := recover(); p != nil {
			aborted = true
			if p != http.ErrAbortHandler {
				fc.h.px.log.Error("panic serving a request", "id", fc.hc.rc.ConnectionID, "panic", p,
					"stack", string(debug.Stack()))
			}
		}
	}()
	return fc.h.serveRequest(w, r, fc.hc, fastEligibleRoute), false
}

// fastEligibleRoute: decide's hook; a socket-handler route needs the
// connection hijacked from net/http.
func fastEligibleRoute(r *Route) bool { return r.Action.Type != ActionSocketHandler }

// fastBody is a request body: the bytes after the head in buf, then the
// connection. left is what is still to come of a Content-Length body, -1
// for the raw stream under a chunked body's decoder.
type fastBody struct {
	fc     *fastConn
	left   int64
	chunks *h1parse.ChunkReader
	failed bool
	// mu is held by Read, and ended makes Read fail: a backend
	// transport may leave a goroutine reading the body after the
	// response is done (an h2/h2c backend that answered before it took
	// the whole body: the transport's body writer is still in Read,
	// waiting for the client's next bytes), and nothing but the fast
	// path may read the connection after that (end).
	mu    sync.Mutex
	ended bool
}

// Read reads the body for the request's handler.
func (b *fastBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ended {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.read(p)
}

// end takes the body from whatever still holds it, once the request's
// handler returned. A Read still running is woken (its connection
// read cut off by a past deadline) and waited for; end then reports
// false, since what that read took from the stream is no longer known.
func (b *fastBody) end() bool {
	whole := true
	if !b.mu.TryLock() {
		whole = false
		// cut first: a Read that sets its deadline after this one
		// (armRead) then sees cut before it reads. Not setReadDeadline:
		// armRead in that Read keeps rdl.
		b.fc.cut.Store(true)
		_ = b.fc.conn.SetReadDeadline(aLongTimeAgo)
		b.mu.Lock()
		b.fc.cut.Store(false)
		b.fc.setReadDeadline(time.Time{})
	}
	b.ended = true
	b.mu.Unlock()
	return whole
}

// aLongTimeAgo is a read deadline in the past: a blocked read ends at once.
var aLongTimeAgo = time.Unix(1, 0)

func (b *fastBody) read(p []byte) (int, error) {
	if b.chunks != nil {
		n, err := b.chunks.Read(p)
		if err != nil && err != io.EOF {
			b.failed = true
		}
		return n, err
	}
	if b.left == 0 {
		return 0, io.EOF
	}
	if b.left > 0 && int64(len(p)) > b.left {
		p = p[:b.left]
	}
	fc := b.fc
	var n int
	var err error
	if fc.off < fc.n {
		n = copy(p, fc.buf[fc.off:fc.n])
		fc.off += n
	} else {
		fc.armRead(fc.h.idleTimeout)
		if fc.cut.Load() {
			err = os.ErrDeadlineExceeded // end takes the body
		} else {
			n, err = fc.conn.Read(p)
		}
	}
	if b.left > 0 {
		b.left -= int64(n)
	}
	if err != nil {
		b.failed = true
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
	}
	return n, err
}

// Close is a no-op: the rest of a body is drained or the connection
// closed once the response is done.
func (b *fastBody) Close() error { return nil }

// drain reads the rest of a body the handler left, up to 256 KiB (as
// net/http does); false when it could not.
func (b *fastBody) drain() bool {
	const maxDrain = 256 << 10
	if b.left > maxDrain {
		return false
	}
	var buf [4 << 10]byte
	for b.left > 0 {
		if _, err := b.read(buf[:]); err != nil {
			return false
		}
	}
	return true
}

// fastReplayConn is a connection whose first bytes were read already:
// the fast path's, handed to net/http, and an upgraded stream's, which
// net/http's server read behind the request head (relayUpgrade).
type fastReplayConn struct {
	net.Conn
	pending []byte
}

func (c *fastReplayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes the connection (net/http's graceful close).
func (c *fastReplayConn) CloseWrite() error { return forwarding.CloseWrite(c.Conn) }

// fastReplayTLSConn is a fastReplayConn of a TLS stream: net/http fills
// r.TLS from ConnectionState.
type fastReplayTLSConn struct {
	*fastReplayConn
	state tls.ConnectionState
}

// ConnectionState returns the TLS state of the terminated connection.
func (c *fastReplayTLSConn) ConnectionState() tls.ConnectionState { return c.state }
