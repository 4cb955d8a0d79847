package smartproxy

import (
	"io"
	"net/http"
	"strconv"
	"sync"

	"github.com/gosmartproxy/smartproxy/internal/h1parse"
	"golang.org/x/net/http/httpguts"
)

// fastWriter is the fast path's http.ResponseWriter: it writes one
// HTTP/1.1 response to the client. Head and body are collected in one
// pooled buffer and go out in one write when the response ends within
// it (its length is then known: Content-Length); a longer response, or
// one flushed before its end, goes out as it comes, with the backend's
// Content-Length or re-framed as chunked (trailers announced in Trailer
// written after the last chunk).
type fastWriter struct {
	// mu serialises writes and flushes: ReverseProxy flushes from a timer
	// goroutine while its copy writes.
	mu  sync.Mutex
	fc  *fastConn
	hdr http.Header
	// base is the pooled buffer out lives in: until the head is
	// committed, the body collects at fastHeadRoom, the head then goes in
	// front of it (commitInPlace).
	base *[fastOutSize]byte
	out  []byte // pending bytes: the head once committed, then body

	status      int
	wroteHeader bool
	committed   bool // the head is in out (or sent)
	chunked     bool
	noBody      bool  // HEAD, 204, 304
	cl          int64 // declared Content-Length, -1 for none
	written     int64 // body bytes taken
	err         error // the first write error: the connection is done
	closeAfter  bool  // Connection: close was (or will be) sent
	// raw is a relayed head's field lines (relayHead), from fastOutPool;
	// rawDate: they hold a Date.
	raw     []byte
	rawDate bool
}

// fastOutSize is the pooled output buffer: a response up to it goes out
// in one write with its head.
const fastOutSize = 16 << 10

var fastOutPool = sync.Pool{New: func() any { return new([fastOutSize]byte) }}

// fastHeadRoom is the room a response's head has in front of its body in
// the writer's buffer: heads up to it cost no second buffer and no copy
// of the body.
const fastHeadRoom = 2 << 10

// writer readies fc's writer for a new response; the connection's one
// writer and header map serve all its requests (nothing keeps them past
// a request: the handlers and the request log return before the next).
func (fc *fastConn) writer(closeAfter bool) *fastWriter {
	w := &fc.w
	hdr := w.hdr
	if hdr == nil {
		hdr = make(http.Header)
	} else if len(hdr) > 0 { // a forward's answer set none
		clear(hdr)
	}
	base := fastOutPool.Get().(*[fastOutSize]byte)
	*w = fastWriter{fc: fc, hdr: hdr, base: base, out: base[fastHeadRoom:fastHeadRoom], cl: -1, closeAfter: closeAfter}
	return w
}

// release returns the buffers to the pool.
func (w *fastWriter) release() {
	if w.base != nil {
		fastOutPool.Put(w.base)
	}
	w.releaseRaw()
	w.base, w.out = nil, nil
}

// releaseRaw returns a relayed head's field lines to the pool once they
// are in the head.
func (w *fastWriter) releaseRaw() {
	if cap(w.raw) == fastOutSize {
		fastOutPool.Put((*[fastOutSize]byte)(w.raw[:fastOutSize]))
	}
	w.raw = nil
}

// Interim sends a relayed 1xx head (the fast forward's; as ReverseProxy
// relays them): status line and the backend's fields as they came; 101
// never comes here (h1client refuses it).
func (w *fastWriter) Interim(r *h1parse.Response) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.wroteHeader || w.err != nil {
		return
	}
	b := w.appendHead(w.out[:0], r.Status, false)
	b = b[:len(b)-2] // before the blank line
	// As for the final head: no framing or hop-by-hop field (a Content-Length on a 1xx could
	// make a lenient client take the next response's bytes for its body); no templates.
	b, _ = appendRelayedFields(b, r.Fields, nil)
	w.out = append(b, "\r\n"...)
	w.send()
}

// relayHead takes the final head of a relayed response (the fast
// forward's): its status, its field lines (CRLF-terminated, framing
// fields left out; a fastOutPool buffer the writer now owns), its
// declared length (-1: none, the writer frames it as any response
// without one) and whether the lines hold a Date.
func (w *fastWriter) relayHead(code int, raw []byte, cl int64, hasDate bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.wroteHeader {
		return
	}
	w.raw, w.rawDate = raw, hasDate
	w.status, w.wroteHeader = code, true
	w.noBody = w.fc.head || code == http.StatusNoContent || code == http.StatusNotModified
	w.cl = cl
	if httpguts.HeaderValuesContainsToken(w.hdr["Connection"], "close") {
		w.closeAfter = true // set by the handler (a chunked upload's connection ends after it)
	}
}

// Header returns the response header map.
func (w *fastWriter) Header() http.Header { return w.hdr }

// WriteHeader sends 1xx heads at once and records the final status.
func (w *fastWriter) WriteHeader(code int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writeHeader(code)
}

func (w *fastWriter) writeHeader(code int) {
	if w.wroteHeader || code < 100 || code > 999 {
		return
	}
	if code < 200 {
		if code == http.StatusSwitchingProtocols {
			return // upgrades never take the fast path
		}
		w.out = w.appendHead(w.out[:0], code, false)
		w.send()
		return
	}
	w.status, w.wroteHeader = code, true
	w.noBody = w.fc.head || code == http.StatusNoContent || code == http.StatusNotModified
	if v := w.hdr.Get("Content-Length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			w.cl = n
		}
	}
	if httpguts.HeaderValuesContainsToken(w.hdr["Connection"], "close") {
		w.closeAfter = true
	}
}

// Write takes body bytes.
func (w *fastWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.wroteHeader {
		w.writeHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.noBody {
		return 0, http.ErrBodyNotAllowed
	}
	n := len(p)
	var err error
	if w.cl >= 0 && w.written+int64(n) > w.cl {
		n, err = int(w.cl-w.written), http.ErrContentLength
		p = p[:n]
	}
	w.written += int64(n)
	if !w.committed && len(w.out)+n <= cap(w.out)-1024 {
		w.out = append(w.out, p...) // may still go out with a length
		return n, err
	}
	w.commit()
	if w.chunked && n > 0 {
		w.out = strconv.AppendInt(w.out, int64(n), 16)
		w.out = append(w.out, "\r\n"...)
	}
	if len(w.out)+n+2 <= cap(w.out) {
		w.out = append(w.out, p...)
	} else {
		w.send()
		if w.err == nil {
			_, w.err = w.fc.conn.Write(p)
		}
	}
	if w.chunked && n > 0 {
		w.out = append(w.out, "\r\n"...)
	}
	if len(w.out) > fastOutSize/2 {
		w.send()
	}
	if w.err != nil {
		return n, w.err
	}
	return n, err
}

// bodyRoom returns the free space where the writer collects the body,
// sized to the rest of a declared length, when all of that rest fits
// there (the whole response then still goes out in one write); nil
// otherwise. The caller reads into it and reports what it read (took);
// meanwhile nothing else writes the response (the fast forward's
// goroutine relays it alone).
func (w *fastWriter) bodyRoom() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.wroteHeader || w.committed || w.err != nil || w.noBody || w.cl < 0 {
		return nil
	}
	rest := w.cl - w.written
	if rest <= 0 || rest > int64(cap(w.out)-1024-len(w.out)) {
		return nil
	}
	return w.out[len(w.out) : len(w.out)+int(rest)]
}

// took accounts n body bytes read into bodyRoom's space, as Write
// would have taken them (and the request log's wrapper counted them).
func (w *fastWriter) took(n int, lr *loggedResponse) {
	if n <= 0 {
		return
	}
	w.mu.Lock()
	w.out = w.out[:len(w.out)+n]
	w.written += int64(n)
	w.mu.Unlock()
	if lr != nil {
		if lr.status == 0 {
			lr.status = http.StatusOK
		}
		lr.bytes += int64(n)
	}
}

// Flush sends what is pending; the response is chunked from here unless
// it declared its length.
func (w *fastWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.wroteHeader {
		w.writeHeader(http.StatusOK)
	}
	w.commit()
	w.send()
}

// FlushError is Flush with the write error (http.ResponseController).
func (w *fastWriter) FlushError() error {
	w.Flush()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// commit puts the head in front of the body collected so far: in the
// room kept for it (commitInPlace), else both go into a second pooled
// buffer, and the first goes back to the pool (no allocation, and the
// body copied once).
func (w *fastWriter) commit() {
	if w.committed {
		return
	}
	w.committed = true
	body := w.out
	if w.cl < 0 && !w.noBody {
		w.chunked = true
	}
	if w.commitInPlace(body) {
		w.releaseRaw()
		return
	}
	next := fastOutPool.Get().(*[fastOutSize]byte)
	out := w.appendHead(next[:0], w.status, true)
	if w.chunked && len(body) > 0 {
		out = strconv.AppendInt(out, int64(len(body)), 16)
		out = append(out, "\r\n"...)
		out = append(out, body...)
		out = append(out, "\r\n"...)
	} else {
		out = append(out, body...)
	}
	w.release()
	w.base, w.out = next, out
}

// commitInPlace writes the head into the room in front of body, where
// the writer collects it (fastHeadRoom): head and body then go out from
// the one buffer. False, having changed nothing but a head built in
// vain, when body is not there (a 1xx head outgrew it) or the head does
// not fit.
func (w *fastWriter) commitInPlace(body []byte) bool {
	b := w.base
	if b == nil || cap(body) != fastOutSize-fastHeadRoom || &body[:1][0] != &b[fastHeadRoom] {
		return false
	}
	head := w.appendHead(b[:0:fastHeadRoom], w.status, true)
	if w.chunked && len(body) > 0 {
		head = strconv.AppendInt(head, int64(len(body)), 16)
		head = append(head, "\r\n"...)
	}
	if len(head) > fastHeadRoom {
		return false // it went to a new array: b is untouched past the room
	}
	start := fastHeadRoom - len(head)
	copy(b[start:], head)
	w.out = b[start : fastHeadRoom+len(body)]
	if w.chunked && len(body) > 0 {
		w.out = append(w.out, "\r\n"...)
	}
	return true
}

// finish ends the response: the head with its length when nothing has
// gone out yet, the last chunk and trailers when chunked. It reports
// whether the connection may carry another request.
func (w *fastWriter) finish() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.wroteHeader {
		w.writeHeader(http.StatusOK)
	}
	if !w.committed && !w.noBody && w.cl < 0 && !w.hasTrailers() {
		w.cl = int64(len(w.out))
	}
	w.commit()
	if w.chunked {
		w.out = append(w.out, "0\r\n"...)
		w.out = w.appendTrailers(w.out)
		w.out = append(w.out, "\r\n"...)
	}
	w.send()
	truncated := !w.noBody && w.cl >= 0 && w.written != w.cl
	return w.err == nil && !w.closeAfter && !truncated
}

// send writes what is pending.
func (w *fastWriter) send() {
	if len(w.out) > 0 && w.err == nil {
		_, w.err = w.fc.conn.Write(w.out)
	}
	w.out = w.out[:0]
}

var _ io.Writer = (*fastWriter)(nil)
