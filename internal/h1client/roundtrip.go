package h1client

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"sync/atomic"

	"github.com/gosmartproxy/smartproxy/internal/h1parse"
	"golang.org/x/net/http/httpguts"
)

// errNotHandled: RoundTrip was given a request Handles refuses.
var errNotHandled = errors.New("h1client: RoundTrip takes no body, Expect, upgrade or CONNECT (see Handles)")

// RoundTrip sends r to r.URL.Host and reads the response head. It is
// Send under a net/http face: r's head is serialised as http.Transport
// writes it (Request.Write: Host from r.Host or else r.URL.Host, no
// User-Agent when the header is present but empty, Connection: close
// when r.Close), and the response is the one Send parses, with the same
// strict parser (internal/h1parse): a response Send refuses (Content-
// Length with Transfer-Encoding, obs-fold, a bare LF, differing
// Content-Lengths, a bad chunk size) RoundTrip refuses too, and a
// response head over MaxHeaderBytes (16 KiB) fails the exchange. The
// two paths of the proxy thus read one backend's bytes alike.
//
// The connection goes back to the pool when the response body has been
// read to its end; a body closed before that closes it. A backend that
// sends no response head within HeadTimeout fails with a net.Error
// whose Timeout is true; a Dial error is returned as it is. A pooled
// connection found closed is replaced once by a fresh one when nothing
// was sent or r is Replayable. 1xx heads go to the request's
// ClientTrace.Got1xxResponse (a reverse proxy relays them, 103 Early
// Hints say), whose error fails the exchange, and are skipped without
// one. r must be one that Handles (another fails at once, unsent); r's
// context ending interrupts the exchange, body included.
func (c *Client) RoundTrip(r *http.Request) (*http.Response, error) {
	if !Handles(r) {
		return nil, errNotHandled
	}
	if err := checkRequest(r); err != nil {
		return nil, err
	}
	hb := headPool.Get().(*bytes.Buffer)
	defer putHead(hb)
	if err := r.Write(hb); err != nil {
		return nil, fmt.Errorf("writing the request head: %w", err)
	}
	// One allocation holds the response, its body and the 1xx relay.
	rt := &roundTrip{}
	o := Outgoing{Head: hb.Bytes(), Replayable: Replayable(r), HeadMethod: r.Method == http.MethodHead}
	if trace := httptrace.ContextClientTrace(r.Context()); trace != nil && trace.Got1xxResponse != nil {
		rt.interim.got = trace.Got1xxResponse
		o.Interim = &rt.interim
	}
	ex, err := c.Send(r.Context(), r.URL.Host, o)
	if err != nil {
		return nil, err
	}
	if r.Close {
		ex.keep = false // Connection: close went out: the backend closes
	}
	resp := &rt.resp
	rt.fill(&ex.Resp, r)
	if ex.ended { // no body: HEAD, 1xx, 204, 304, Content-Length: 0
		_ = ex.Close()
		resp.Body = http.NoBody
		return resp, nil
	}
	rt.body.ex, rt.body.resp = ex, resp
	if ex.Resp.Framing == h1parse.Chunked {
		ex.Trailer = rt.body.addTrailer
	}
	resp.Body = &rt.body
	return resp, nil
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

// headPool holds RoundTrip's head buffers: Send does not keep the head
// past its return.
var headPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func putHead(b *bytes.Buffer) {
	if b.Cap() > 64<<10 {
		return // a rare huge head does not stay
	}
	b.Reset()
	headPool.Put(b)
}

// roundTrip is one RoundTrip's response, in one allocation.
type roundTrip struct {
	resp    http.Response
	body    respBody
	interim traceInterim
}

// fill makes rt.resp from p, the final head of r's exchange, as http.ReadResponse would
// have for the same bytes: Transfer-Encoding moves from Header to
// TransferEncoding, a Trailer field of a chunked response to Trailer's
// keys, Content-Length is the one parsed value, ContentLength is -1
// when the body is delimited otherwise, 0 for 1xx, 204 and 304, and the
// declared length (or -1) for HEAD.
func (rt *roundTrip) fill(p *h1parse.Response, r *http.Request) {
	resp := &rt.resp
	resp.Request = r
	resp.StatusCode = p.Status
	resp.ProtoMajor, resp.ProtoMinor, resp.Proto = 1, p.Minor, "HTTP/1.1"
	if p.Minor == 0 {
		resp.Proto = "HTTP/1.0"
	}
	resp.Close = p.Close
	te := p.Field("transfer-encoding") != nil // "chunked": ParseResponse takes no other
	resp.Status, resp.Header, resp.Trailer = header(p, te)
	// Unlike http.ReadResponse, Connection stays even when it says close:
	// the names it lists are hop-by-hop, for the caller to remove.
	switch {
	case r.Method == http.MethodHead:
		resp.ContentLength = p.ContentLength
	case p.Framing == h1parse.NoBody:
		resp.ContentLength = 0
	case p.Framing == h1parse.Length:
		resp.ContentLength = p.ContentLength
	default:
		resp.ContentLength = -1
	}
	if te {
		resp.TransferEncoding = []string{"chunked"}
	}
}

// respBody is a RoundTrip response body: the Exchange read through, its
// connection released once, at the body's end or error (pooled after a
// clean end) or at a Close before that (closed).
type respBody struct {
	ex      *Exchange // not touched once state is not open: it may serve another exchange
	resp    *http.Response
	trailer http.Header // fields of the chunked body's trailer section
	state   atomic.Uint32
	err     error // the error that ended the body (io.EOF at its clean end)
}

// The states of a respBody.
const (
	bodyOpen = iota
	bodyEnded
	bodyClosed
)

func (b *respBody) Read(p []byte) (int, error) {
	switch b.state.Load() {
	case bodyEnded:
		return 0, b.err
	case bodyClosed:
		return 0, http.ErrBodyReadAfterClose
	}
	n, err := b.ex.Read(p) // interrupted: the request's cancel, which a reverse proxy does not log
	if err != nil && b.state.CompareAndSwap(bodyOpen, bodyEnded) {
		b.err = err
		if err == io.EOF && b.trailer != nil {
			// As net/http: the trailer is in Response.Trailer when Read
			// returns io.EOF.
			if b.resp.Trailer == nil {
				b.resp.Trailer = make(http.Header, len(b.trailer))
			}
			for k, vv := range b.trailer {
				b.resp.Trailer[k] = vv
			}
		}
		_ = b.ex.Close()
	}
	return n, err
}

// Close before the end closes the connection rather than read an
// unbounded rest; after the end it does nothing. It may run while Read
// blocks in another goroutine (which then fails).
func (b *respBody) Close() error {
	if b.state.CompareAndSwap(bodyOpen, bodyClosed) {
		b.ex.abort()
	}
	return nil
}

// addTrailer is the Exchange's Trailer: each field of a chunked body's
// trailer section, its slices valid during the call only.
func (b *respBody) addTrailer(name, value []byte) {
	if b.trailer == nil {
		b.trailer = make(http.Header)
	}
	k := textproto.CanonicalMIMEHeaderKey(string(name))
	b.trailer[k] = append(b.trailer[k], string(value))
}

// traceInterim relays 1xx heads to a ClientTrace's Got1xxResponse; its
// first error fails the exchange (interimErr).
type traceInterim struct {
	got func(code int, header textproto.MIMEHeader) error
	err error
}

// Interim implements Interim.
func (t *traceInterim) Interim(p *h1parse.Response) {
	if t.err == nil {
		_, h, _ := header(p, false)
		t.err = t.got(p.Status, textproto.MIMEHeader(h))
	}
}

func (t *traceInterim) interimErr() error { return t.err }
