package smartproxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
)

// Chunked uploads on the fast forward (httpfastforward.go). The client's
// chunked body is decoded strictly (h1parse.ChunkReader, under the fast
// path's fastBody: sizes, extensions, CRLFs, the trailer section) and
// sent to the backend re-chunked, as http.Request.Write sends a body of
// unknown length: "Transfer-Encoding: chunked", a "Trailer" field naming
// the announced trailers, the data in chunks of our own sizes without
// extensions, then the last chunk and the trailer fields the client
// sent. The client's framing never reaches the backend: only bytes the
// decoder accepted, framed by us, so a malformed or ambiguous chunk
// stream cannot make the backend see another request than the one the
// proxy checked. A framing error in the bytes that came with the head is
// answered 400 with nothing sent (prefetchChunked's rule on the other
// stack); one found later tears the backend connection down before the
// last chunk (the backend sees an incomplete request) and the client is
// answered 400 (watchedBody, proxyError). Such a request is not
// replayable: on a stale pooled connection it is sent again only when
// nothing of it was written (h1client.Send's rule for every body).

// chunkRoom is the room kept in front of a chunk's data for its size
// line: 16 hex digits (any int64) and CRLF.
const chunkRoom = 18

// lastChunk ends a chunked body without trailers.
var lastChunk = []byte("0\r\n\r\n")

// chunkedUpload is a chunked request body on its way to the backend:
// its Read returns the re-chunked body after the first bytes (start).
type chunkedUpload struct {
	src     io.Reader          // the decoded body, through the request's watchedBody
	trailer http.Header        // the request's Trailer: announced names, values once ended
	field   string             // the head's Trailer value; "" when none was announced
	pre     *[fastOutSize]byte // the first bytes' buffer, pooled
	tail    []byte             // what is left to send of the last chunk and trailers
	ended   bool               // the decoded body reached its end
}

// start readies u for fb's body, read through src, with trailer the
// request's Trailer, and returns the first bytes to send with the head,
// framed: the chunks that came with the head, decoded now and whole if
// they fit half a head buffer, with the last chunk and trailers if the
// body ended there. An error is the client's framing: nothing was sent.
// These bytes are read from fb directly, not through src, so a connect
// that fails may still be retried on another host (nothing was taken
// from the client that cannot be sent again).
func (u *chunkedUpload) start(r *http.Request, fb *fastBody, src *watchedBody) ([]byte, error) {
	*u = chunkedUpload{src: src}
	// net/http's server merges every trailer field into r.Trailer,
	// announced or not; the fast path's reader keeps the announced ones
	// only. Merged here as net/http does, so the same reach the backend.
	fb.chunks.Trailer = func(name, value []byte) {
		if r.Trailer == nil {
			r.Trailer = make(http.Header)
		}
		k := http.CanonicalHeaderKey(string(name))
		r.Trailer[k] = append(r.Trailer[k], string(value))
	}
	defer func() {
		// The names known when the head is written: the announced ones,
		// and those of trailers read with the first bytes (as in
		// Request.Write's head after prefetchChunked read them).
		u.trailer, u.field = r.Trailer, trailerField(r.Trailer)
	}()
	fc := fb.fc
	if fc.off >= fc.n {
		return nil, nil // nothing came with the head: all of it streams
	}
	u.pre = fastOutPool.Get().(*[fastOutSize]byte)
	data := u.pre[chunkRoom : fastOutSize/2]
	n := 0
	for n < len(data) {
		m, err := fb.Read(data[n:])
		n += m
		if err == io.EOF {
			u.ended = true
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errClientBody, err)
		}
		if fb.chunks.Buffered() == 0 && fc.off >= fc.n {
			break // more would wait for the client
		}
	}
	b := u.pre[:0]
	if n > 0 {
		b = frameChunk(u.pre[:], n)
	}
	if u.ended {
		u.trailer = r.Trailer
		b = u.appendEnd(b)
	}
	return b, nil
}

// Read returns the rest of the body, re-chunked: each read of the
// decoded body framed as one chunk in p, then the last chunk and
// trailers. A failure of the client's body is returned as it is, with
// nothing more framed (the backend must not see an end).
func (u *chunkedUpload) Read(p []byte) (int, error) {
	if u.ended {
		if len(u.tail) == 0 {
			return 0, io.EOF
		}
		n := copy(p, u.tail)
		u.tail = u.tail[n:]
		return n, nil
	}
	if len(p) <= chunkRoom+2 {
		return 0, io.ErrShortBuffer // h1client copies through 32 KiB
	}
	n, err := u.src.Read(p[chunkRoom : len(p)-2])
	switch {
	case err == io.EOF:
		u.ended = true
		u.tail = lastChunk
		if u.hasTrailers() {
			u.tail = u.appendEnd(nil)
		}
	case err != nil:
		return 0, err
	}
	if n == 0 {
		if u.ended {
			return u.Read(p)
		}
		return 0, nil
	}
	return copy(p, frameChunk(p, n)), nil
}

// frameChunk frames the n data bytes at buf[chunkRoom:] as one chunk,
// in place: its size line goes right in front of them and CRLF after.
func frameChunk(buf []byte, n int) []byte {
	i := chunkRoom - 2
	buf[i], buf[i+1] = '\r', '\n'
	for v := n; ; v >>= 4 {
		i--
		buf[i] = "0123456789abcdef"[v&15]
		if v < 16 {
			break
		}
	}
	end := chunkRoom + n
	buf[end], buf[end+1] = '\r', '\n'
	return buf[i : end+2]
}

// hasTrailers reports trailer fields to send (values, not just names).
func (u *chunkedUpload) hasTrailers() bool {
	for _, vs := range u.trailer {
		if len(vs) > 0 {
			return true
		}
	}
	return false
}

// appendEnd appends the last chunk and the trailer section, as
// http.Request.Write writes them (Header.Write: sorted, one line per
// value), but for framing names: a trailer that arrived after the head
// went out could carry one, which Request.Write would have refused in
// the head and which a backend that merges trailers must never see.
func (u *chunkedUpload) appendEnd(b []byte) []byte {
	b = append(b, "0\r\n"...)
	if u.hasTrailers() {
		t := u.trailer
		if !forwardableTrailers(t) {
			t = t.Clone()
			delete(t, "Transfer-Encoding")
			delete(t, "Trailer")
			delete(t, "Content-Length")
		}
		w := bytes.NewBuffer(b)
		_ = t.Write(w) // a bytes.Buffer does not fail
		b = w.Bytes()
	}
	return append(b, "\r\n"...)
}

// release returns u's buffer to its pool and forgets the request.
func (u *chunkedUpload) release() {
	if u.pre != nil {
		fastOutPool.Put(u.pre)
	}
	*u = chunkedUpload{}
}

// trailerField is the Trailer field http.Request.Write sends for the
// announced trailer names: canonical, sorted, comma-separated.
func trailerField(trailer http.Header) string {
	if len(trailer) == 0 {
		return ""
	}
	keys := make([]string, 0, len(trailer))
	for k := range trailer {
		keys = append(keys, http.CanonicalHeaderKey(k))
	}
	slices.Sort(keys)
	return strings.Join(keys, ",")
}

// errTrailerName: a trailer named after a framing field.
var errTrailerName = errors.New("trailer named Transfer-Encoding, Trailer or Content-Length")

// forwardableTrailers reports trailer names http.Request.Write accepts
// in a head: none of them a framing field. net/http's server refuses a
// request that announces one (400); its transport refuses to send one
// whose trailers, read before the head was written, have one (502).
func forwardableTrailers(trailer http.Header) bool {
	for k := range trailer {
		switch http.CanonicalHeaderKey(k) {
		case "Transfer-Encoding", "Trailer", "Content-Length":
			return false
		}
	}
	return true
}
