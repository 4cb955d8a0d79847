package smartproxy

import (
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
// the trailer names known when the head goes out, the data in chunks
// of our own sizes without extensions, then the last chunk and the
// client's trailer fields of those names (all the client sent, when its
// whole body came with its head, as net/http's stack forwards them after
// prefetchChunked read it; a name that was not announced cannot be sent
// once the head is out). The client's framing never reaches the backend: only bytes the
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
	trailer http.Header        // the request's Trailer: names, and values once ended
	names   []string           // the names the head announces, canonical and sorted
	field   string             // the head's Trailer value; "" when none
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
	fc := fb.fc
	if fc.off >= fc.n {
		u.announce(r)
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
	u.announce(r)
	b := u.pre[:0]
	if n > 0 {
		b = frameChunk(u.pre[:], n)
	}
	if u.ended {
		b = u.appendEnd(b)
	}
	return b, nil
}

// announce takes the trailer names the head announces: those known when
// it is written, the client's announced ones and those of trailers read
// with the first bytes (as Request.Write's head has them after
// prefetchChunked read them).
func (u *chunkedUpload) announce(r *http.Request) {
	u.trailer, u.names = r.Trailer, trailerNames(r.Trailer)
	u.field = strings.Join(u.names, ",")
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

// hasTrailers reports trailer fields to send: values of announced names.
func (u *chunkedUpload) hasTrailers() bool {
	for _, k := range u.names {
		if len(u.trailer[k]) > 0 {
			return true
		}
	}
	return false
}

// appendEnd appends the last chunk and the trailer section: the values
// of the names the head announced (none a framing name: refused before
// the head), as http.Request.Write writes them (sorted by name, a line
// per value; appendField drops a value no field may carry).
func (u *chunkedUpload) appendEnd(b []byte) []byte {
	b = append(b, "0\r\n"...)
	for _, k := range u.names {
		for _, v := range u.trailer[k] {
			b = appendField(b, k, v)
		}
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

// trailerNames are the names http.Request.Write announces in its
// Trailer field: trailer's, canonical and sorted.
func trailerNames(trailer http.Header) []string {
	if len(trailer) == 0 {
		return nil
	}
	keys := make([]string, 0, len(trailer))
	for k := range trailer {
		keys = append(keys, http.CanonicalHeaderKey(k))
	}
	slices.Sort(keys)
	return keys
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
