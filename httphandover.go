package smartproxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/gosmartproxy/smartproxy/forwarding"
)

// handover gives an HTTP/1.x connection to a socket-handler route that a
// request matched (for example a catch-all HTTPRedirectHandler next to
// HTTP routes on port 80): the connection is hijacked and the handler
// reads the request again, re-serialised, and its body as the client
// sent it. The connection then belongs to the handler. HTTP/2 streams
// cannot be handed over and get 421.
//
// The handler gets that one request and then the end of the stream
// once the client sends anything more (requestEnd): a request pipelined
// after it would otherwise reach the handler (and whatever it relays
// to) without the routing and checks of the HTTP layer. The client's
// next request comes on a new connection, routed afresh. Only an
// upgrade (WebSocket) keeps the stream, which is no longer HTTP once the
// handler has answered it.
func (h *httpLayer) handover(w http.ResponseWriter, r *http.Request, pr *proxyReq) {
	if r.ProtoMajor != 1 {
		http.Error(w, "421 this route takes HTTP/1.x only", http.StatusMisdirectedRequest)
		return
	}
	head := requestHead(r)
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "500 internal error", http.StatusInternalServerError)
		return
	}
	defer conn.Close()
	// The handler counts the traffic itself (runHandler).
	pr.hc.meter.on.Store(false)
	var buffered []byte
	if n := brw.Reader.Buffered(); n > 0 {
		buffered, _ = brw.Reader.Peek(n)
	}
	rc := &replayConn{Conn: conn, pending: head}
	switch {
	case isUpgrade(r) && r.ContentLength == 0 && len(r.TransferEncoding) == 0 && len(buffered) == 0:
		// The stream stays the handler's once it has switched protocols
		// (written a 101); bytes the client sends before that end it.
		// Bytes already buffered were sent before any 101 (a pipelined
		// request, say), so such an upgrade is ended like any request
		// (the default case) rather than trusted with them.
		rc.rest = &requestEnd{conn: conn, sw: &rc.switched}
	case len(r.TransferEncoding) > 0:
		// The body's end is found by parsing it; what was buffered
		// comes first (and is counted a second time: the server counted
		// it when it read it).
		src := bufio.NewReader(io.MultiReader(bytes.NewReader(buffered), conn))
		rc.rest = io.MultiReader(&rawChunked{br: src}, &requestEnd{conn: conn, br: src})
	case r.ContentLength > 0:
		n := min(int64(len(buffered)), r.ContentLength)
		rc.pending = append(rc.pending, buffered[:n]...)
		rc.rest = io.MultiReader(io.LimitReader(conn, r.ContentLength-n),
			&requestEnd{conn: conn, more: int64(len(buffered)) > n})
	default:
		rc.rest = &requestEnd{conn: conn, more: len(buffered) > 0}
	}
	h.px.runHandler(rc, pr.hc.rec, &pr.rc)
}

// requestHead re-serialises the head of a server-side HTTP/1.x request as
// the client sent it (header names canonicalised).
func requestHead(r *http.Request) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/%d.%d\r\n", r.Method, r.RequestURI, r.ProtoMajor, r.ProtoMinor)
	if r.Host != "" {
		b.WriteString("Host: " + r.Host + "\r\n")
	}
	if len(r.TransferEncoding) > 0 {
		b.WriteString("Transfer-Encoding: " + strings.Join(r.TransferEncoding, ", ") + "\r\n")
	} else if r.ContentLength > 0 && r.Header.Get("Content-Length") == "" {
		b.WriteString("Content-Length: " + strconv.FormatInt(r.ContentLength, 10) + "\r\n")
	}
	_ = r.Header.Write(&b)
	b.WriteString("\r\n")
	return b.Bytes()
}

// replayConn yields pending before reading rest, or the connection
// when rest is nil.
type replayConn struct {
	net.Conn
	pending  []byte
	rest     io.Reader
	switched atomic.Bool // the handler's first write was a 101 response
	wrote    atomic.Bool
}

// Write notes whether the handler's response switches protocols.
func (c *replayConn) Write(b []byte) (int, error) {
	if c.wrote.CompareAndSwap(false, true) {
		if len(b) >= 12 && (string(b[:12]) == "HTTP/1.1 101" || string(b[:12]) == "HTTP/1.0 101") {
			c.switched.Store(true)
		}
	}
	return c.Conn.Write(b)
}

func (c *replayConn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	if c.rest != nil {
		return c.rest.Read(b)
	}
	return c.Conn.Read(b)
}

// requestEnd is what a socket handler reads after its request: nothing
// while the client is quiet (an idle keep-alive connection stays open,
// held by the handler, as it was before), and the end of the stream as
// soon as the client sends more or closes. What it sends is dropped:
// the next request must come on a new connection, through the HTTP layer.
//
// For an upgrade request (sw set) the stream goes on, unread bytes first,
// if the handler switched protocols before the client's next bytes came.
type requestEnd struct {
	conn net.Conn
	br   *bufio.Reader // the reader the body was parsed from, if any
	more bool          // bytes past the request were already buffered
	sw   *atomic.Bool  // an upgrade: set once the handler wrote a 101
	open bool          // the upgrade went through: read the stream
}

func (e *requestEnd) Read(p []byte) (int, error) {
	if e.open || e.sw != nil && e.sw.Load() {
		e.open = true
		return e.conn.Read(p)
	}
	if e.more || e.br != nil && e.br.Buffered() > 0 || len(p) == 0 {
		return 0, io.EOF
	}
	n, err := e.conn.Read(p)
	if n > 0 && e.sw != nil && e.sw.Load() {
		e.open = true
		return n, err
	}
	e.more = true
	return 0, io.EOF
}

// rawChunked yields a chunked body byte for byte as the client sent it,
// trailer section included, and then io.EOF: it parses just enough
// (RFC 9112 7.1: size lines, data, CRLFs, trailer lines) to know where
// the body ends, and refuses what Go's own chunked reader refuses.
type rawChunked struct {
	br      *bufio.Reader
	out     []byte // a line to yield
	data    int64  // chunk data (and its CRLF) still to yield
	trailer bool   // past the last chunk
	done    bool
	err     error
}

func (c *rawChunked) Read(p []byte) (int, error) {
	for len(c.out) == 0 && c.data == 0 {
		if c.done {
			return 0, io.EOF
		}
		if c.err != nil {
			return 0, c.err
		}
		c.next()
	}
	if len(c.out) > 0 {
		n := copy(p, c.out)
		c.out = c.out[n:]
		return n, nil
	}
	limit := c.data - 2 // the data first, then its CRLF, checked
	if limit == 0 {
		b, err := c.br.Peek(2)
		if err != nil || b[0] != '\r' || b[1] != '\n' {
			c.data, c.err = 0, fmt.Errorf("%w: chunk data not followed by CRLF", errClientBody)
			return 0, c.err
		}
		limit = 2
	}
	if int64(len(p)) > limit {
		p = p[:limit]
	}
	n, err := c.br.Read(p)
	c.data -= int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// next reads the next size or trailer line into out.
func (c *rawChunked) next() {
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		c.err = fmt.Errorf("%w: %w", errClientBody, err)
		return
	}
	if len(line) < 2 || line[len(line)-2] != '\r' || bytes.IndexByte(line[:len(line)-2], '\r') >= 0 {
		c.err = fmt.Errorf("%w: chunked line not ended by CRLF", errClientBody)
		return
	}
	c.out = append(c.out[:0], line...)
	if c.trailer {
		c.done = len(line) == 2
		return
	}
	size, _, _ := bytes.Cut(line[:len(line)-2], []byte(";"))
	size = bytes.TrimRight(size, " \t")
	n, err := strconv.ParseUint(string(size), 16, 62)
	if err != nil || len(size) == 0 {
		c.err = fmt.Errorf("%w: bad chunk size %q", errClientBody, size)
		c.out = c.out[:0]
		return
	}
	if n == 0 {
		c.trailer = true
		return
	}
	c.data = int64(n) + 2
}

// CloseWrite half-closes when the conn beneath can.
func (c *replayConn) CloseWrite() error { return forwarding.CloseWrite(c.Conn) }
