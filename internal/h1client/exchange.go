package h1client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/h1parse"
)

// Outgoing is a request for Send, already serialised by the caller.
type Outgoing struct {
	// Head is the request head, CRLF CRLF included, and may be followed
	// by the first bytes of the body: it goes out in one write. Send
	// does not keep it past its return.
	Head []byte
	// Body is the rest of the body, framed by the caller (a
	// Content-Length in Head, or the chunks Body returns, last chunk
	// included); nil when Head holds all of it.
	Body io.Reader
	// Replayable: Head may be sent again on a fresh connection after a
	// pooled one failed (h1client.Replayable's rule, the caller's to
	// apply). A request with a Body is sent again only when nothing of
	// it was written.
	Replayable bool
	// HeadMethod: the request is HEAD; its response has no body.
	HeadMethod bool
	// Interim, when set, is given each 1xx head before the final one
	// (103 Early Hints, say) to relay; otherwise they are skipped.
	Interim Interim
	// TLS, when set, makes the backend a TLS one: a new connection is
	// dialled and its handshake run with a clone of TLS whose ServerName
	// is ServerName and whose ALPN offers http/1.1 only. Connections are
	// pooled per address, TLS (by identity: one *tls.Config per trust
	// setting, not one per request, or nothing is reused) and ServerName,
	// and reused only for that same triple.
	TLS *tls.Config
	// ServerName is the name sent as SNI and verified on a TLS backend;
	// "" is the host of the address. Ignored without TLS.
	ServerName string
}

// Interim takes a 1xx response head; its slices are valid during the
// call only.
type Interim interface{ Interim(*h1parse.Response) }

// Exchange is a response from Send: its parsed head and its body. Read
// returns the body decoded (Content-Length, chunked or until close),
// io.EOF at its clean end. Close releases the connection: back to the
// pool when the body ended cleanly (or there was none) and both sides
// allow, closed otherwise. Call Close exactly once, after which the
// Exchange must not be used: it belongs to the connection and serves
// the next exchange on it.
type Exchange struct {
	// Resp is the final response head (1xx heads before it are
	// skipped). Its slices point into the connection's read buffer: they
	// are valid until the first Read of the body.
	Resp h1parse.Response
	// Trailer, when set before the body is read, receives a chunked
	// body's trailer fields (slices valid during the call only).
	Trailer func(name, value []byte)

	c      *Client
	pc     *conn
	ctx    context.Context
	stop   func() bool
	keep   bool
	left   int64 // Length: bytes still to come
	chunks h1parse.ChunkReader
	ended  bool  // the body ended cleanly (or there is none)
	err    error // the body's read error, returned again
}

// Send writes o to a connection to addr (pooled or new) and reads the
// response head: a Dial error is returned as it is,
// a pooled connection found closed is replaced once by a fresh one when
// o allows, a backend that sends no head within HeadTimeout fails with a
// net.Error whose Timeout is true, and ctx ending interrupts the
// exchange, body included. A Body is written with each write bounded by
// HeadTimeout (the backend must keep taking it); if writing it fails,
// a response the backend sent before (a 413, say) is still returned.
// Response heads larger than the connection's 16 KiB read buffer are
// refused (HAProxy's default bound is the same). With o.TLS, a failed
// TLS handshake is returned wrapped (nothing was sent).
func (c *Client) Send(ctx context.Context, addr string, o Outgoing) (*Exchange, error) {
	key := poolKey{addr: addr, tls: o.TLS}
	if o.TLS != nil {
		key.serverName = o.ServerName
	}
	pc := c.get(key, o.Replayable && o.Body == nil)
	for {
		fresh := pc == nil
		if fresh {
			nc, err := c.connect(ctx, key)
			if err != nil {
				return nil, err
			}
			pc = newConn(nc, key)
		}
		ex, bodyRead, err := c.send(ctx, pc, &o)
		if err == nil || fresh || !staleFailure(ctx, pc, err) ||
			!(pc.nwritten == 0 || o.Replayable && !bodyRead) {
			return ex, err
		}
		pc = nil
	}
}

// send runs one exchange of o on pc; on an error pc is closed.
func (c *Client) send(ctx context.Context, pc *conn, o *Outgoing) (ex *Exchange, bodyRead bool, err error) {
	pc.nread, pc.nwritten, pc.limit = 0, 0, maxHeadsBytes
	d := c.headTimeout
	stop := context.AfterFunc(ctx, pc.intr)
	fail := func(err error) (*Exchange, bool, error) {
		stop()
		_ = pc.c.Close()
		return nil, bodyRead, headError(ctx, pc, d, err)
	}
	var werr error
	if o.Body == nil {
		// One deadline for the head's write and the response head (a
		// timer update per exchange saved): the write of a head that
		// fits the socket buffer takes no time.
		if d > 0 {
			_ = pc.c.SetDeadline(time.Now().Add(d))
		}
		werr = pc.probe.writeAwait(pc, o.Head)
	} else {
		// No writeAwait for the body's last write: an answer that came
		// while the body went out (a 403 before the body was read) set
		// the poller's readiness, which the wait's start would clear,
		// and no later edge need come (TestEarlyResponseLastWrite).
		werr = pc.writeTimed(o.Head, d)
		if werr == nil {
			bodyRead = true
			werr = pc.copyBody(o.Body, d)
		}
	}
	if werr != nil && (pc.nwritten == 0 || ctx.Err() != nil || isBodyError(werr)) {
		// Nothing went out, the request is over, or the client's body
		// broke off: the backend waits for the rest, no answer will come.
		return fail(werr)
	}
	if d > 0 && o.Body != nil { // else set before the head's write
		_ = pc.c.SetDeadline(time.Now().Add(d))
	}
	ex = &pc.ex
	*ex = Exchange{Resp: ex.Resp, c: c, pc: pc, ctx: ctx, stop: stop}
	if err := ex.readHead(o.HeadMethod, o.Interim); err != nil {
		if werr != nil {
			err = werr // the write failed first: that is the story
		}
		return fail(err)
	}
	if d > 0 {
		_ = pc.c.SetDeadline(time.Time{})
	}
	if ctx.Err() != nil {
		// The interrupt may have run before the deadline was cleared.
		return fail(ctx.Err())
	}
	ex.keep = werr == nil && !ex.Resp.Close // ParseResponse sets Close for UntilClose
	switch ex.Resp.Framing {
	case h1parse.NoBody:
		ex.ended = true
	case h1parse.Length:
		ex.left = ex.Resp.ContentLength
		ex.ended = ex.left == 0
	case h1parse.Chunked:
		ex.chunks.Reset(pc.br)
	}
	return ex, bodyRead, nil
}

// writeTimed writes b to pc, bounded by d when d > 0.
func (pc *conn) writeTimed(b []byte, d time.Duration) error {
	if d > 0 {
		_ = pc.c.SetWriteDeadline(time.Now().Add(d))
	}
	_, err := pc.Write(b)
	return err
}

// copyBody writes body to pc through the pooled copy buffer, each write
// bounded by d.
func (pc *conn) copyBody(body io.Reader, d time.Duration) error {
	bp := copyPool.Get().(*[copyBufSize]byte)
	defer copyPool.Put(bp)
	for {
		n, rerr := body.Read(bp[:])
		if n > 0 {
			if err := pc.writeTimed(bp[:n], d); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return &BodyError{Err: rerr}
		}
	}
}

// BodyError is a failure reading the request body given to Send (the
// client's side, not the backend's).
type BodyError struct{ Err error }

func (e *BodyError) Error() string { return "reading the request body: " + e.Err.Error() }
func (e *BodyError) Unwrap() error { return e.Err }

// readHead reads response heads up to the final one into ex.head and
// parses it into ex.Resp; 1xx heads go to interim, if any.
func (ex *Exchange) readHead(isHead bool, interim Interim) error {
	br := ex.pc.br
	for {
		n := br.Buffered()
		var err error
		for {
			buf, _ := br.Peek(n)
			err = h1parse.ParseResponse(buf, &ex.Resp, isHead)
			if !errors.Is(err, h1parse.ErrIncomplete) {
				break
			}
			if n == br.Size() {
				return fmt.Errorf("backend %s: response head over %d bytes", ex.pc.addr, br.Size())
			}
			if _, err := br.Peek(n + 1); err != nil {
				return err
			}
			n = br.Buffered()
		}
		if err != nil {
			return fmt.Errorf("backend %s: %w", ex.pc.addr, err)
		}
		code := ex.Resp.Status
		if code == http.StatusSwitchingProtocols {
			return fmt.Errorf("backend %s switched protocols without an upgrade request", ex.pc.addr)
		}
		if code >= 200 {
			// Resp's slices stay in the read buffer: valid until the
			// body's first Read, which may refill it (see Exchange).
			_, _ = br.Discard(ex.Resp.HeadLen)
			ex.pc.limit = math.MaxInt64
			return nil
		}
		if interim != nil {
			interim.Interim(&ex.Resp)
			if f, ok := interim.(interimFailer); ok && f.interimErr() != nil {
				return f.interimErr() // RoundTrip's ClientTrace refused it
			}
		}
		_, _ = br.Discard(ex.Resp.HeadLen)
	}
}

// Read returns body bytes, io.EOF at the body's clean end; an error is
// returned again by every later Read.
func (ex *Exchange) Read(p []byte) (int, error) {
	switch {
	case ex.ended:
		return 0, io.EOF
	case ex.err != nil:
		return 0, ex.err
	case len(p) == 0:
		return 0, nil
	}
	var n int
	var err error
	switch ex.Resp.Framing {
	case h1parse.Length:
		if int64(len(p)) > ex.left {
			p = p[:ex.left]
		}
		n, err = ex.pc.br.Read(p)
		ex.left -= int64(n)
		if ex.left == 0 {
			err = io.EOF
		} else if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
	case h1parse.Chunked:
		ex.chunks.Trailer = ex.Trailer
		n, err = ex.chunks.Read(p)
	default: // UntilClose
		n, err = ex.pc.br.Read(p)
	}
	switch {
	case err == io.EOF:
		ex.ended = true
	case err != nil && ex.ctx.Err() != nil:
		ex.err = ex.ctx.Err() // interrupted: the caller's cancel, not a backend fault
	case err != nil:
		ex.err = err
	}
	if ex.err != nil {
		return n, ex.err
	}
	return n, err
}

// Buffered is how many bytes of the response have arrived and not been
// read: 0 means the next Read may wait for the backend.
func (ex *Exchange) Buffered() int { return ex.pc.br.Buffered() }

// Close releases the exchange's connection: pooled when the body ended
// cleanly and the exchange allows another on it, closed otherwise (the
// rest of a body is never drained).
func (ex *Exchange) Close() error {
	// The Exchange lives in its conn: what it references (the request's
	// context, the owner's trailer callback and through it the client's
	// connection) must not stay alive in the pool.
	stop := ex.stop
	ex.ctx, ex.stop, ex.Trailer, ex.chunks.Trailer = nil, nil, nil, nil
	ex.c.release(ex.pc, stop, ex.ended && ex.keep)
	return nil
}

// abort closes the exchange's connection, never pooled: RoundTrip's
// body closed before its end. It may run while Read blocks in another
// goroutine, so it touches nothing Read writes, and the Exchange is left
// as it is (its connection is never used again).
func (ex *Exchange) abort() {
	ex.stop()
	_ = ex.pc.c.Close()
}

// interimFailer is an Interim that can fail the exchange (RoundTrip's
// relay to a ClientTrace, whose Got1xxResponse returns an error).
type interimFailer interface{ interimErr() error }

// isBodyError reports a failure of the caller's body; a function of its
// own so that the error target escapes only when there is an error.
func isBodyError(err error) bool {
	var be *BodyError
	return errors.As(err, &be)
}

// copyBufSize is the request body copy buffer of Send.
const copyBufSize = 32 << 10

var copyPool = sync.Pool{New: func() any { return new([copyBufSize]byte) }}
