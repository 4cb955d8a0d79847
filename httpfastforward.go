package smartproxy

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"

	"github.com/gosmartproxy/smartproxy/internal/balance"
	"github.com/gosmartproxy/smartproxy/internal/h1client"
	"github.com/gosmartproxy/smartproxy/internal/h1parse"
	"github.com/gosmartproxy/smartproxy/internal/textmatch"
	"golang.org/x/net/http/httpguts"
)

// The fast forward: the backend side of the HTTP/1.1 fast path. A
// request the fast path parsed, whose route forwards to a cleartext
// HTTP/1.1 backend, is sent without httputil.ReverseProxy, http.Request
// cloning or http.Response: its outgoing head is serialised once from
// the parsed fields into a pooled buffer and written with the first body
// bytes in one write (h1client.Send), and the response head, parsed
// strictly, is relayed field by field through the fastWriter. What it
// does to the head is what rewriteRequest and modifyResponse do through
// ReverseProxy: hop-by-hop fields and those Connection names dropped
// ("Te: trailers" kept), X-Forwarded-*, X-Real-Ip and Forwarded
// replaced (setForwarded's values), Host the target's or the client's
// (keepHost), the path canonical or rewritten, header templates applied
// (a templated name replaces the field; an empty or multi-line value
// deletes it), no User-Agent added. Target choice, leases, passive
// health, retries and the 502/504 answers are backendTransport's and
// proxyError's, through the same functions.
//
// Everything else stays on ReverseProxy: chunked uploads, upgrades,
// h2/h2c backends and re-encrypting routes.

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
// the fast path, to a cleartext HTTP/1.1 backend, with no body or a
// Content-Length one, not an upgrade or CONNECT.
func (h *httpLayer) fastForwardable(fw *fastWriter, pr *proxyReq) bool {
	r := pr.in
	if fw.fc.req == nil || h.backendTLS(pr) != nil || len(r.TransferEncoding) > 0 ||
		r.Method == http.MethodConnect || isUpgrade(r) || len(r.Header["Expect"]) > 0 {
		return false
	}
	hr := pr.route.state.http
	return hr == nil || hr.backend == "http1"
}

// fastForward forwards pr (see above) and relays the response to w.
func (h *httpLayer) fastForward(w http.ResponseWriter, fw *fastWriter, lr *loggedResponse, pr *proxyReq) {
	r, req := pr.in, fw.fc.req
	var body *watchedBody // nil: no body (as RoundTrip's, for retryable)
	var src *fastForwardBody
	var first []byte // body bytes already read with the head: sent in its write
	if fb, ok := r.Body.(*fastBody); ok && fb.left > 0 {
		fc := fb.fc
		end := min(fc.n, fc.off+fastOutSize/2) // what fits the head's write
		if int64(end-fc.off) > fb.left {
			end = fc.off + int(fb.left)
		}
		first = fc.buf[fc.off:end]
		body = &watchedBody{ReadCloser: fb}
		src = &fastForwardBody{fb: fb, skip: len(first), w: body}
	}
	tmpl := h.expandTemplates(pr, true)
	buf := fastOutPool.Get().(*[fastOutSize]byte)
	defer fastOutPool.Put(buf) // buf itself: a head that outgrew it went to a new array
	out := buf[:0]
	o := h1client.Outgoing{Replayable: h1client.Replayable(r), HeadMethod: r.Method == http.MethodHead, Interim: fw}
	if src != nil && int64(len(first)) < src.fb.left {
		o.Body, o.BodyLen = src, src.fb.left-int64(len(first))
	}
	// The tried list and the lease escape (the balancer keeps neither):
	// pooled, they cost no allocation per request.
	st := fastFwdStatePool.Get().(*fastFwdState)
	defer fastFwdStatePool.Put(st)
	lease := &st.lease
	var ex *h1client.Exchange
	err := h.tryHosts(r, pr, body, lease, st.tried[:0], func(addr string) (err error) {
		out = appendFastRequest(out[:0], pr, req, addr, tmpl)
		o.Head = append(out, first...)
		out = o.Head[:len(out)]
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
	h.relayResponse(w, fw, lr, pr, ex)
}

// fastFwdState is a forward's tried hosts and lease.
type fastFwdState struct {
	tried [4]string
	lease balance.Lease
}

var fastFwdStatePool = sync.Pool{New: func() any { return new(fastFwdState) }}

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

// fwdTemplate is an expanded header template: value "" deletes.
type fwdTemplate struct{ name, value string }

// expandTemplates expands the route's request (or response) header
// templates once, as applyHeaders does.
func (h *httpLayer) expandTemplates(pr *proxyReq, request bool) []fwdTemplate {
	hr := pr.route.state.http
	if hr == nil {
		return nil
	}
	list := hr.respHeaders
	if request {
		list = hr.reqHeaders
	}
	if len(list) == 0 {
		return nil
	}
	out := make([]fwdTemplate, len(list))
	for i, ht := range list {
		v := textmatch.Expand(ht.tmpl, pr.lookup)
		if !httpguts.ValidHeaderFieldValue(v) {
			v = "" // applyHeaders deletes a value with a line break; appendField drops other controls
		}
		out[i] = fwdTemplate{name: ht.name, value: v}
	}
	// Set replaces: the last template of a name wins, as with hdr.Set.
	return out
}

// templated reports whether a template names name.
func templated(tmpl []fwdTemplate, name []byte) bool {
	for i := range tmpl {
		if equalFoldBytes(name, tmpl[i].name) {
			return true
		}
	}
	return false
}

// appendTemplates appends the templates' fields (the last of a name
// wins; empty ones delete), except names framing or Host: those the
// writer of the head sets itself, as http.Request.Write ignores them.
func appendTemplates(b []byte, tmpl []fwdTemplate, skip func(string) bool) []byte {
	for i, t := range tmpl {
		if t.value == "" || skip(t.name) {
			continue
		}
		last := true
		for _, u := range tmpl[i+1:] {
			if u.name == t.name {
				last = false
			}
		}
		if last {
			b = appendField(b, t.name, t.value)
		}
	}
	return b
}

// hopByHop are the fields a proxy does not forward (RFC 9110 7.6.1, and
// ReverseProxy's list), lower-case.
var hopByHop = [...]string{"connection", "proxy-connection", "keep-alive", "proxy-authenticate",
	"proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"}

// connectionFields returns the Connection fields of fields, appended to
// buf (a caller's small array: one per head, so that dropField does not
// rescan every field for each one).
func connectionFields(fields []h1parse.Field, buf []h1parse.Field) []h1parse.Field {
	for _, f := range fields {
		if equalFoldBytes(f.Name, "connection") {
			buf = append(buf, f)
		}
	}
	return buf
}

// dropField reports a field the forward does not copy: hop-by-hop, named
// by one of conns (the head's Connection fields, connectionFields), or
// in extra (lower-case).
func dropField(name []byte, conns []h1parse.Field, extra []string) bool {
	for _, s := range hopByHop {
		if equalFoldBytes(name, s) {
			return true
		}
	}
	for _, s := range extra {
		if equalFoldBytes(name, s) {
			return true
		}
	}
	for i := range conns {
		v := conns[i].Value
		for len(v) > 0 {
			tok := v
			if j := bytes.IndexByte(v, ','); j >= 0 {
				tok, v = v[:j], v[j+1:]
			} else {
				v = nil
			}
			if tok = bytes.Trim(tok, " \t"); len(tok) > 0 && equalFoldBoth(tok, name) {
				return true
			}
		}
	}
	return false
}

// requestReplaced are the request fields the forward sets itself.
var requestReplaced = []string{"host", "content-length", "x-forwarded-for", "x-forwarded-host",
	"x-forwarded-proto", "x-real-ip", "forwarded"}

// appendFastRequest serialises the outgoing head of pr to addr: what
// rewriteRequest and http.Request.Write would send, fields in the
// client's order.
func appendFastRequest(b []byte, pr *proxyReq, req *h1parse.Request, addr string, tmpl []fwdTemplate) []byte {
	r := pr.in
	b = append(b, r.Method...)
	b = append(b, ' ')
	// rewriteRequest takes the path and query of pr.rewritten, and
	// keeps the rest of the client's URL (ForceQuery included).
	// ReverseProxy drops the query parameters it cannot parse (a bad
	// escape, a ';') from the client's query before Rewrite; the same here.
	u, q := r.URL, cleanQuery(r.URL.RawQuery)
	if pr.rewritten != nil {
		u, q = pr.rewritten, pr.rewritten.RawQuery
	}
	b = appendRequestURI(b, u.EscapedPath(), q, r.URL.ForceQuery)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	host := addr
	if hr := pr.route.state.http; hr != nil && hr.keepHost {
		host = r.Host
	}
	b = append(b, host...)
	b = append(b, "\r\n"...)
	trailers := false
	var connBuf [2]h1parse.Field
	conns := connectionFields(req.Fields, connBuf[:0])
	for _, f := range req.Fields {
		if equalFoldBytes(f.Name, "te") && httpguts.HeaderValuesContainsToken([]string{string(f.Value)}, "trailers") {
			trailers = true
		}
		if dropField(f.Name, conns, requestReplaced) || templated(tmpl, f.Name) {
			continue
		}
		if len(f.Value) == 0 && equalFoldBytes(f.Name, "user-agent") {
			continue // Request.Write sends no User-Agent for an empty one
		}
		b = append(b, f.Name...)
		b = append(b, ": "...)
		b = append(b, f.Value...)
		b = append(b, "\r\n"...)
	}
	if trailers && !templated(tmpl, []byte("Te")) {
		b = append(b, "Te: trailers\r\n"...)
	}
	// setForwarded's values, unless a template replaces them.
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if !templated(tmpl, []byte("X-Forwarded-For")) {
			b = appendField(b, "X-Forwarded-For", ip)
		}
		if !templated(tmpl, []byte("X-Real-Ip")) {
			b = appendField(b, "X-Real-Ip", ip)
		}
	}
	if !templated(tmpl, []byte("X-Forwarded-Host")) {
		b = appendField(b, "X-Forwarded-Host", r.Host)
	}
	if !templated(tmpl, []byte("X-Forwarded-Proto")) {
		if r.TLS != nil {
			b = append(b, "X-Forwarded-Proto: https\r\n"...)
		} else {
			b = append(b, "X-Forwarded-Proto: http\r\n"...)
		}
	}
	if !templated(tmpl, []byte("Forwarded")) {
		b = append(b, "Forwarded: "...)
		b = appendForwarded(b, pr.rc.ClientIP, r.Host, r.TLS != nil)
		b = append(b, "\r\n"...)
	}
	b = appendTemplates(b, tmpl, requestWriteOwns)
	// Request.Write's rule: a length when there is a body, and 0 for a
	// bodyless POST, PUT or PATCH only.
	if r.ContentLength > 0 || r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, max(r.ContentLength, 0), 10)
		b = append(b, "\r\n"...)
	}
	return append(b, "\r\n"...)
}

// requestWriteOwns: the fields http.Request.Write takes from the
// request, not its header (a template cannot set them).
func requestWriteOwns(name string) bool {
	switch name {
	case "Host", "Content-Length", "Transfer-Encoding", "Trailer":
		return true
	}
	return false
}

// appendRequestURI appends a request-target as url.URL.RequestURI
// writes it for an origin-form URL, without allocating.
func appendRequestURI(b []byte, escapedPath, rawQuery string, forceQuery bool) []byte {
	if escapedPath != "" {
		b = append(b, escapedPath...)
	} else {
		b = append(b, '/')
	}
	if forceQuery || rawQuery != "" {
		b = append(b, '?')
		b = append(b, rawQuery...)
	}
	return b
}

// equalFoldBytes compares b with s, ASCII case-insensitively.
func equalFoldBytes(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		if lowerASCII(b[i]) != lowerASCII(s[i]) {
			return false
		}
	}
	return true
}

// equalFoldBoth compares a with b, ASCII case-insensitively.
func equalFoldBoth(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if lowerASCII(a[i]) != lowerASCII(b[i]) {
			return false
		}
	}
	return true
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// cleanQuery is ReverseProxy's treatment of the client's query: one
// with a ';' or a malformed escape is parsed and re-encoded, which
// drops the parameters that do not parse.
func cleanQuery(q string) string {
	for i := 0; i < len(q); {
		switch q[i] {
		case ';':
			return reencodeQuery(q)
		case '%':
			if i+2 >= len(q) || unhexDigit(q[i+1]) < 0 || unhexDigit(q[i+2]) < 0 {
				return reencodeQuery(q)
			}
			i += 3
		default:
			i++
		}
	}
	return q
}

func reencodeQuery(q string) string {
	v, _ := url.ParseQuery(q)
	return v.Encode()
}

func unhexDigit(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}
