package smartproxy

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Malformed chunked request bodies (a chunk size that overflows, a bare
// LF in a chunk line, a missing CRLF after chunk data) are the client's
// error, answered 400, and must not reach a backend as a request whose
// body then fails there. The server's chunked reader reports them when
// the body is read, which the transport does only after it has sent the
// request head. So before forwarding, the bytes the server has already
// read past the head are parsed: one Read of the body, which returns the
// buffered chunks without waiting for more, is given chunkPrefetchWait
// to come back (it comes back at once when bytes are buffered). A
// framing error found there is answered 400 with nothing sent to a
// backend. One found later, while the body streams, makes the transport
// tear the backend connection down (never reused, and the backend gets
// no terminating chunk, so it sees an incomplete request), and the
// client is answered 400 rather than 502 (proxyError, watchedBody).

// chunkPrefetchWait bounds how long a chunked request's head waits for
// the first read of its body: the time for a read of bytes already
// buffered to return, with room for a busy scheduler. A body that has not
// arrived by then streams as usual. Tests change it.
var chunkPrefetchWait = 20 * time.Millisecond

// errClientBody marks a failure reading the client's request body.
var errClientBody = errors.New("malformed or broken request body")

// prefetchChunked starts the first read of r's chunked body and waits up
// to chunkPrefetchWait for it. It returns the body to forward instead of
// r.Body, or an error when the read found the framing broken.
func prefetchChunked(r *http.Request) (io.ReadCloser, error) {
	// The server fills r.Trailer when a read reaches the body's end. Should the first read
	// still run after the wait below, it may do so while a transport walks the outgoing
	// request's trailer map (validating it as the request starts): that request then gets a
	// map of its own (rewriteRequest), made before the read began and given the values once
	// the body ended (Read). Otherwise it shares r's, as it does without the prefetch.
	own := r.Trailer.Clone()
	if own == nil {
		own = make(http.Header)
	}
	pf := &prefetchBody{src: r.Body, done: make(chan struct{}), req: r}
	go pf.first()
	t := time.NewTimer(chunkPrefetchWait)
	select {
	case <-pf.done:
		t.Stop()
		if pf.err != nil && pf.err != io.EOF {
			return nil, fmt.Errorf("%w: %w", errClientBody, pf.err)
		}
	case <-t.C:
		pf.trailer = own
	}
	return pf, nil
}

// prefetchBody is a request body whose first read ran ahead.
type prefetchBody struct {
	src  io.ReadCloser
	done chan struct{} // closed when the first read returned
	buf  []byte        // what it read, not yet returned
	err  error         // and its error, returned after buf
	seen bool          // done was waited for
	// req is the client's request, whose Trailer the server fills at the body's end;
	// trailer, when the first read outlasted the wait, is the outgoing request's, given
	// req.Trailer's fields when Read returns io.EOF (nil: it shares req.Trailer).
	req     *http.Request
	trailer http.Header
}

func (b *prefetchBody) first() {
	buf := make([]byte, 4<<10) // the server's read buffer: what can be buffered
	n, err := b.src.Read(buf)
	b.buf, b.err = buf[:n], err
	close(b.done)
}

func (b *prefetchBody) Read(p []byte) (int, error) {
	if !b.seen {
		<-b.done
		b.seen = true
	}
	if len(b.buf) > 0 {
		n := copy(p, b.buf)
		b.buf = b.buf[n:]
		return n, nil
	}
	if b.err != nil {
		b.ended(b.err)
		return 0, b.err
	}
	n, err := b.src.Read(p)
	b.ended(err)
	return n, err
}

// ended gives the outgoing request's trailer the values the server read, at the body's end
// (after done, or in the reading goroutine itself: the server's writes happen before).
func (b *prefetchBody) ended(err error) {
	if err != io.EOF || b.trailer == nil {
		return
	}
	for k, vv := range b.req.Trailer {
		b.trailer[k] = vv
	}
}

// Close closes the client's body; the server does that itself too.
func (b *prefetchBody) Close() error { return b.src.Close() }

// clientBodyFailed reports whether out's body failed while the transport
// read it from the client: the failure was the client's.
func clientBodyFailed(out *http.Request) bool {
	wb, ok := out.Body.(*watchedBody)
	return ok && wb.failed.Load()
}

// badBody answers 400 to a request whose body framing is broken. On
// HTTP/1.x it closes the connection: where the next request would begin
// is unknown. On HTTP/2 the failure is the stream's alone (a client that
// resets a stream while its body is out lands here too), and "Connection:
// close" would make the standard library's server shut the whole
// connection down gracefully, ending every other stream's chance and
// replacing the GOAWAY a later protocol error owes the client with a
// NO_ERROR one.
func (h *httpLayer) badBody(w http.ResponseWriter, pr *proxyReq, err error) {
	h.px.logConn("request body refused", "id", pr.rc.ConnectionID, "route", pr.rc.RouteName, "err", err)
	if pr.in.ProtoMajor < 2 {
		w.Header().Set("Connection", "close")
	}
	http.Error(w, "400 malformed request body", http.StatusBadRequest)
}
