package smartproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"

	"github.com/gosmartproxy/smartproxy/internal/balance"
	"github.com/gosmartproxy/smartproxy/internal/h1client"
)

// The fast forward: the backend side of the HTTP/1.1 fast path. A
// request the fast path parsed, whose route forwards to an HTTP/1.1
// backend (cleartext, or TLS for a re-encrypting route), is sent without
// httputil.ReverseProxy, http.Request cloning or http.Response: its
// outgoing head is serialised once from the parsed fields into a pooled
// buffer (httpfastforwardhead.go) and written with the first body bytes
// in one write (h1client.Send), and the response head, parsed strictly,
// is relayed field by field through the fastWriter
// (httpfastforwardresp.go). What it does to the head is what
// rewriteRequest and modifyResponse do through ReverseProxy: hop-by-hop
// fields and those Connection names dropped ("Te: trailers" kept),
// X-Forwarded-*, X-Real-Ip and Forwarded replaced (setForwarded's
// values), Host the target's or the client's (keepHost), the path
// canonical or rewritten, header templates applied (a templated name
// replaces the field; an empty or multi-line value deletes it), no
// User-Agent added. Target choice, leases, passive health, retries and
// the 502/504 answers are backendTransport's and proxyError's, through
// the same functions.
//
// TLS backends: h1client dials and verifies them itself, with the
// route's one backend config (routeTLS.backendH1) and the server name
// backendConfig would give the transport (the target's host, an explicit
// name, or for "original" the client's SNI). h1client pools connections
// per address, config and server name, so, as on the transport's
// per-SNI pools (sniAddr), a connection verified for one SNI is never
// reused for another. Chunked uploads are decoded strictly and sent
// re-chunked (httpfastforwardchunked.go).
//
// Everything else stays on ReverseProxy: Expect, upgrades and h2/h2c
// backends.

// fastForwardWriter returns the fastWriter under w (the fast path's own,
// or inside the request log's wrapper), nil when w is another stack's.
func fastForwardWriter(w http.ResponseWriter) (*fastWriter, *loggedResponse) {
	switch v := w.(type) {
	case *fastWriter:
		return v, nil
	case *loggedResponse:
		fw, _ := v.ResponseWriter.(*fastWriter)
		return fw, v
	}
	return nil, nil
}

// fastForwardable reports a request the fast forward takes: parsed by
// the fast path, to an HTTP/1.1 backend (cleartext or TLS), with no
// body, a Content-Length one or a chunked one, not an upgrade, CONNECT
// or Expect.
func (h *httpLayer) fastForwardable(fw *fastWriter, pr *proxyReq) bool {
	r := pr.in
	if fw.fc.req == nil || r.Method == http.MethodConnect || isUpgrade(r) || len(r.Header["Expect"]) > 0 {
		return false
	}
	if len(r.TransferEncoding) > 0 && !fw.fc.req.Chunked {
		return false
	}
	if rt := h.backendTLS(pr); rt != nil && rt.backendH1 == nil {
		return false // never cleartext to a re-encrypting route's backend (compileTLS sets it)
	}
	hr := pr.route.state.http
	return hr == nil || hr.backend == "http1"
}

// fastForward forwards pr (see above) and relays the response to w.
func (h *httpLayer) fastForward(w http.ResponseWriter, fw *fastWriter, lr *loggedResponse, pr *proxyReq) {
	r, req := pr.in, fw.fc.req
	// The tried list, the lease and a chunked upload's state escape (the
	// balancer keeps the first two, Send the last): the connection's,
	// which forwards one request at a time, they cost no allocation and
	// no pool round trip per request.
	st := &fw.fc.fwd
	defer st.release()
	o := h1client.Outgoing{Replayable: h1client.Replayable(r), HeadMethod: r.Method == http.MethodHead, Interim: fw}
	var body *watchedBody // nil: no body (as RoundTrip's, for retryable)
	var src *fastForwardBody
	var up *chunkedUpload
	var first []byte             // body bytes read with the head: sent in its write
	var held *[heldBodySize]byte // a body read whole (first is in it)
	if fb, ok := r.Body.(*fastBody); ok && fb.chunks != nil {
		if !forwardableTrailers(r.Trailer) {
			h.badBody(w, pr, errTrailerName) // announced: net/http's server refuses the request
			return
		}
		body = st.watch(fb)
		up = &st.up
		var err error
		if first, err = up.start(r, fb, body); err != nil {
			h.badBody(w, pr, err) // nothing was sent: a 400, as prefetchChunked's
			return
		}
		if !forwardableTrailers(r.Trailer) {
			h.fastForwardError(w, pr, nil, errTrailerName) // read already: the transport's 502
			return
		}
		if !up.ended {
			o.Body = up
		}
	} else if ok && fb.left > 0 && fb.left <= maxHeldBody {
		// A body that fits is read whole before a backend is chosen, as
		// nginx does by default (proxy_request_buffering): the request then
		// goes out in one write, whose answer h1client waits for without a
		// failed read first (writeAwait), and a connect that fails may go
		// to another host: the bytes are read from fb, not through body,
		// which only tells the client's failures from the backend's.
		held = heldBodyPool.Get().(*[heldBodySize]byte)
		defer heldBodyPool.Put(held)
		first = held[heldHeadRoom : heldHeadRoom+int(fb.left)]
		if _, err := io.ReadFull(fb, first); err != nil {
			h.badBody(w, pr, fmt.Errorf("%w: %w", errClientBody, err))
			return
		}
		body = st.watch(fb)
	} else if ok && fb.left > 0 {
		// Over maxHeldBody: the bytes that came with the head go in its
		// write (at most half a head buffer, far less than the body), the
		// rest streams.
		fc := fb.fc
		first = fc.buf[fc.off:min(fc.n, fc.off+fastOutSize/2)]
		body = st.watch(fb)
		st.src = fastForwardBody{fb: fb, skip: len(first), w: body}
		src = &st.src
		o.Body = src
	}
	rt := h.backendTLS(pr)
	if rt != nil {
		o.TLS = rt.backendH1
	}
	tmpl := h.expandTemplates(pr, true)
	buf := fastOutPool.Get().(*[fastOutSize]byte)
	defer func() {
		if buf != nil {
			fastOutPool.Put(buf) // buf itself: a head that outgrew it went to a new array
		}
	}()
	out := buf[:0]
	lease := &st.lease
	var ex *h1client.Exchange
	err := h.tryHosts(r, pr, body, lease, st.tried[:0], func(addr string) (err error) {
		if rt != nil {
			host, _, _ := net.SplitHostPort(addr)
			o.ServerName = rt.backendServerName(host, pr.hc.rc.Domain)
		}
		out = appendFastRequest(out[:0], pr, req, addr, tmpl, up, &fw.fc.fields)
		if held != nil && len(out) <= heldHeadRoom {
			// The head goes in front of the held body: one write, no copy of it.
			start := heldHeadRoom - len(out)
			copy(held[start:], out)
			o.Head = held[start : heldHeadRoom+len(first)]
		} else {
			o.Head = append(out, first...)
			out = o.Head[:len(out)]
		}
		ex, err = h.h1.Send(r.Context(), addr, o)
		return err
	})
	if err != nil {
		h.fastForwardError(w, pr, body, err)
		return
	}
	defer lease.Release()
	if src != nil {
		src.consumeFirst() // sent with the head
	}
	// Send is done with the head: buf takes the response's field lines
	// (relayResponse's, then the writer's until its head is committed).
	raw := buf
	buf = nil
	h.relayResponse(w, fw, lr, pr, ex, raw)
}

// A Content-Length body up to maxHeldBody is read whole before it is
// forwarded (fastForward); its buffer keeps heldHeadRoom in front for the
// outgoing head.
const (
	maxHeldBody  = 48 << 10
	heldHeadRoom = fastOutSize
	heldBodySize = heldHeadRoom + maxHeldBody
)

var heldBodyPool = sync.Pool{New: func() any { return new([heldBodySize]byte) }}

// fastFwdState is a forward's tried hosts, lease, body watch and readers.
type fastFwdState struct {
	tried [4]string
	lease balance.Lease
	up    chunkedUpload
	body  watchedBody     // the request body's watch
	src   fastForwardBody // a streamed body's reader
}

// release readies st for the connection's next forward; its upload's
// buffers go back to their pool.
func (st *fastFwdState) release() {
	st.up.release()
	st.body.ReadCloser, st.src = nil, fastForwardBody{}
}

// watch readies st's body watch over fb.
func (st *fastFwdState) watch(fb *fastBody) *watchedBody {
	st.body.ReadCloser = fb
	st.body.read.Store(false)
	st.body.failed.Store(false)
	return &st.body
}

// fastForwardError answers a failed forward as proxyError does: 400
// when the client's body broke off, else 502 or 504.
func (h *httpLayer) fastForwardError(w http.ResponseWriter, pr *proxyReq, body *watchedBody, err error) {
	var be *h1client.BodyError
	if errors.As(err, &be) && body != nil {
		body.failed.Store(true)
	}
	r := pr.in.WithContext(context.WithValue(pr.in.Context(), proxyReqKey{}, pr))
	if body != nil {
		r.Body = body
	}
	h.proxyError(w, r, err)
}

// fastForwardBody is the body Send writes after the head: the bytes
// already sent with it skipped, the rest read through a watchedBody (so
// the retry rule sees whether any was taken, and a client's failure).
type fastForwardBody struct {
	fb   *fastBody
	skip int
	w    *watchedBody
}

// consumeFirst takes the body bytes that went with the head out of the
// connection's buffer, once.
func (b *fastForwardBody) consumeFirst() {
	if b.skip > 0 {
		b.fb.fc.off += b.skip
		b.fb.left -= int64(b.skip)
		b.skip = 0
	}
}

func (b *fastForwardBody) Read(p []byte) (int, error) {
	b.consumeFirst()
	return b.w.Read(p)
}
