package smartproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// proxyReq is one request's routing result, carried in its context to
// the reverse proxy's hooks and the backend transport.
type proxyReq struct {
	hc     *httpConn
	w      http.ResponseWriter // the client's, flushed before a broken response body aborts
	route  *Route
	rc     RouteContext // the connection's, with the request's Domain and Route
	target int          // index into route.state.targets
	addr   string       // the backend address of the last attempt (access log)
	in     *http.Request
	// rewritten is the outgoing URL's path and query after
	// action.rewrite; nil when the route has none or it did not match.
	rewritten *url.URL
}

type proxyReqKey struct{}

// ServeHTTP is one request's way through the proxy. The steps follow in
// this file in the order a request takes them:
//
//  1. framing: refusals and Connection: close that depend on the request's
//     framing alone (refuseFraming); ACME HTTP-01 challenges, answered
//     before any route (answerACMEChallenge, acmewire.go);
//  2. route: canonical path and the match against the current routes
//     (route);
//  3. admit: the connection-level checks and limits for the request's
//     route (admit);
//  4. checks: the route's HTTP security, rate limit and auth (check);
//  5. action: socket-handler handover, redirect, WebSocket refusal, or
//     the target, rewrite and body framing for the backend (act);
//  6. backend: the reverse proxy (rewriteRequest, then
//     backendTransport.RoundTrip in httpbackend.go, modifyResponse or
//     proxyError).
func (h *httpLayer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hc, _ := r.Context().Value(httpConnKey{}).(*httpConn)
	if hc == nil {
		http.Error(w, "500 internal error", http.StatusInternalServerError)
		return
	}
	// A hijacked connection (WebSocket, handover) is done when the
	// hijacker returns: the server reports no StateClosed for it.
	defer func() {
		if hc.hijacked.Load() {
			hc.finish()
		}
	}()
	var pr *proxyReq
	if h.px.detailed || h.px.ops.requests.Load() {
		lr := &loggedResponse{ResponseWriter: w, start: time.Now()}
		w = lr
		defer func() { h.requestDone(lr, r, hc, pr) }()
	}
	if refuseFraming(w, r) || h.answerACMEChallenge(w, r, hc) {
		return
	}
	pr = h.route(w, r, hc)
	if pr == nil || !h.admit(w, pr) || !h.check(w, pr) {
		return
	}
	h.act(w, pr)
}

// refuseFraming answers what the request's framing alone decides; it
// reports whether the request is done.
func refuseFraming(w http.ResponseWriter, r *http.Request) bool {
	if r.ProtoMajor == 2 && r.Method == "PRI" {
		// Go's HTTP/1 server hands the HTTP/2 preface to handlers "so they
		// can wire up their own upgrades" (on a TLS stream that negotiated
		// http/1.1, say); proxied, it would reach the backend as "PRI *".
		w.Header().Set("Connection", "close")
		http.Error(w, "400 HTTP/2 needs ALPN h2 or prior knowledge on a plain port", http.StatusBadRequest)
		return true
	}
	if r.ProtoMajor == 1 && len(r.TransferEncoding) > 0 {
		// RFC 9112 6.1: a request with both Transfer-Encoding and
		// Content-Length may be an attempt at smuggling, and the
		// connection must be closed after the response. Go's server
		// drops the Content-Length before the handler can see it, and
		// the raw head is not kept, so every chunked HTTP/1.x request
		// closes its connection after the response, whatever the
		// response is (a refusal included). Only chunked uploads pay:
		// the next request of that client opens a new connection.
		w.Header().Set("Connection", "close")
	}
	return false
}

// route matches the request against the current routes, after putting
// its path in canonical form where routes decide on the path. It answers
// the request itself (400, 404) and returns nil when there is no route.
func (h *httpLayer) route(w http.ResponseWriter, r *http.Request, hc *httpConn) *proxyReq {
	host := requestHost(r, hc.rc.Domain)
	// Where routes decide on the path, they decide on its canonical form,
	// which is then the form forwarded (httppath.go).
	normalized := false
	set := h.px.routes() // one generation for the path rule and the match
	if h.transports.pathMatters(set, hc.rc.Port) {
		canon, v := canonicalPath(r.URL.EscapedPath())
		switch v {
		case pathAmbiguous:
			h.badPath(w, r, hc, errAmbiguousPath)
			return nil
		case pathNormalizable:
			if err := setRequestPath(r, canon); err != nil {
				h.badPath(w, r, hc, err)
				return nil
			}
			normalized = true
		}
	}
	q := MatchQuery{Port: hc.rc.Port, Domain: host, ClientIP: hc.rc.ClientIP, TLSVersion: hc.rc.TLSVersion, Request: r, Terminated: hc.terminated}
	// Every request is matched against the current routes, not those the
	// connection was accepted under: UpdateRoutes must be able to revoke
	// access on keep-alive and HTTP/2 connections too. A route of a newer
	// generation is not covered by hc.admission, so admit checks it in full.
	route := h.px.match(set, &q)
	if route == nil || route.state == nil {
		h.px.reject(refusal{client: hc.rc.ClientAddr, port: hc.rc.Port, domain: host, req: r}, &RejectError{Reason: RejectNoRoute, IP: hc.rc.ClientIP})
		http.Error(w, "404 no route for this request", http.StatusNotFound)
		return nil
	}
	if normalized && route.state.http != nil && route.state.http.pathReject {
		h.badPath(w, r, hc, errNonCanonicalPath)
		return nil
	}
	pr := &proxyReq{hc: hc, w: w, route: route, rc: hc.rc, in: r}
	pr.rc.Domain, pr.rc.Route, pr.rc.RouteName = host, route, route.Name
	return pr
}

// refusal is where a refusal of this request happened.
func (pr *proxyReq) refusal() refusal {
	return refusal{client: pr.hc.rc.ClientAddr, port: pr.hc.rc.Port, domain: pr.rc.Domain, route: pr.route.Name, req: pr.in}
}

// admit applies the connection checks to a request whose route is not the
// one the connection was admitted for, and moves the connection record
// to the request's route (its maxConnections and maxConnectionsPerIP count
// connections whose latest request went to it, while its
// connectionRateLimitPerMinute charges a connection once, on its first
// request to the route: switching back and forth is not a new connection).
func (h *httpLayer) admit(w http.ResponseWriter, pr *proxyReq) bool {
	px, hc, route := &h.px, pr.hc, pr.route
	if !hc.admission.covers(route, pr.rc.Domain) {
		if err := px.admit(&pr.rc); err != nil {
			px.reject(pr.refusal(), err)
			writeHTTPReject(w, err)
			return false
		}
	}
	if hc.rec.Route() != route.Name || hc.rec.Domain() != pr.rc.Domain {
		if err := px.assign(hc.rec, route.Name, pr.rc.Domain, route.state.sec.routeLimits()); err != nil {
			px.reject(pr.refusal(), err)
			writeHTTPReject(w, err)
			return false
		}
	}
	return true
}

// check runs the route's HTTP-level security (rate limit, then
// basicAuth/jwtAuth), once per request, after admission; it writes the
// 401/429 itself.
func (h *httpLayer) check(w http.ResponseWriter, pr *proxyReq) bool {
	if err := pr.route.state.sec.checkHTTP(w, pr.in, pr.rc.ClientIP, time.Now()); err != nil {
		h.px.reject(pr.refusal(), err)
		return false
	}
	return true
}

// act runs the route's action for an admitted request: a socket-handler
// handover, a redirect, or the reverse proxy to the target its sub-match
// picks, after the rewrite and, for chunked uploads, reading the body.
func (h *httpLayer) act(w http.ResponseWriter, pr *proxyReq) {
	r, route := pr.in, pr.route
	hr := route.state.http
	switch {
	case route.Action.Type == ActionSocketHandler:
		h.handover(w, r, pr)
		return
	case hr != nil && hr.redirect != nil:
		h.redirect(w, pr)
		return
	case isUpgrade(r) && hr != nil && hr.noWebSocket:
		http.Error(w, "403 WebSocket upgrades are disabled for this route", http.StatusForbidden)
		return
	}
	pr.target = chooseTarget(route, r, pr.hc.rc.Port)
	if pr.target < 0 {
		http.Error(w, "404 no target for this request", http.StatusNotFound)
		return
	}
	if hr != nil && hr.rewrite != nil {
		if err := pr.rewriteURL(hr.rewrite, hr.pathReject); err != nil {
			h.badPath(w, r, pr.hc, err)
			return
		}
	}
	if r.ProtoMajor == 1 && len(r.TransferEncoding) > 0 && len(r.Header["Expect"]) == 0 {
		// Expect: 100-continue leaves it to the backend to ask for the
		// body: reading it here would send the 100 on its behalf.
		body, err := prefetchChunked(r)
		if err != nil {
			h.badBody(w, pr, err)
			return
		}
		r.Body = body
	}
	h.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), proxyReqKey{}, pr)))
}

// badPath answers 400 to a request whose path the proxy will not
// forward (httppath.go).
func (h *httpLayer) badPath(w http.ResponseWriter, r *http.Request, hc *httpConn, err error) {
	h.px.logConn("request refused", "id", hc.rc.ConnectionID, "path", r.URL.EscapedPath(), "err", err)
	http.Error(w, "400 "+err.Error(), http.StatusBadRequest)
}

// chooseTarget returns the first target (by priority) whose sub-match
// takes the request, -1 when none does. Targets without a match take
// every request.
func chooseTarget(route *Route, r *http.Request, port int) int {
	st := route.state
	if st.http == nil || st.http.targets == nil {
		return 0
	}
	for i := range st.targets {
		if st.http.targets[i].accepts(r, port) {
			return i
		}
	}
	return -1
}

// requestHost is the request's Host without port, lower-cased, without a
// trailing dot; the SNI when the request has none.
func requestHost(r *http.Request, sni string) string {
	host := r.Host
	if host == "" {
		return sni
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	return normalizeDomain(host)
}

// isUpgrade reports an HTTP/1.1 Upgrade request (WebSocket).
func isUpgrade(r *http.Request) bool {
	return r.Header.Get("Upgrade") != "" && httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade")
}

// newReverseProxy builds the proxy's one ReverseProxy; everything per
// request comes from the request's proxyReq.
func newReverseProxy(h *httpLayer) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:   h.rewriteRequest,
		Transport: backendTransport{h},
		// 0, not -1: ReverseProxy already flushes every write of SSE
		// (text/event-stream) and of responses without a Content-Length,
		// which is every streaming response. -1 would also run a flush
		// timer per response and split header and body into two writes,
		// costing about a quarter of the requests per CPU-second.
		FlushInterval:  0,
		BufferPool:     &bufferPool{},
		ModifyResponse: h.modifyResponse,
		ErrorHandler:   h.proxyError,
	}
}

// rewriteRequest prepares the outgoing request. X-Forwarded-For, -Host
// and -Proto, X-Real-IP and Forwarded are set from the connection, replacing any the
// client sent: the proxy has no list of trusted proxies yet, so a
// client's claims about earlier hops cannot be told from forgeries.
func (h *httpLayer) rewriteRequest(r *httputil.ProxyRequest) {
	pr := r.In.Context().Value(proxyReqKey{}).(*proxyReq)
	out := r.Out
	out.URL.Scheme = "http"
	if h.backendTLS(pr) != nil {
		out.URL.Scheme = "https"
	}
	out.URL.Host = "backend.invalid" // the transport sets the target per attempt
	setForwarded(out, r.In, pr)
	// The outgoing request shares the incoming one's trailer map, which
	// the server fills when the body reaches its end, before the
	// transport writes the trailers (Clone gave out a copy whose values
	// stay empty: the Trailer header went out, the values did not).
	out.Trailer = r.In.Trailer
	hr := pr.route.state.http
	out.Host = "" // the target address, from out.URL.Host
	if hr == nil {
		return
	}
	if hr.keepHost {
		out.Host = r.In.Host
	}
	if u := pr.rewritten; u != nil {
		out.URL.Path, out.URL.RawPath, out.URL.RawQuery = u.Path, u.RawPath, u.RawQuery
	}
	pr.applyHeaders(out.Header, hr.reqHeaders)
}

// modifyResponse applies action.headers.response.
func (h *httpLayer) modifyResponse(resp *http.Response) error {
	pr, _ := resp.Request.Context().Value(proxyReqKey{}).(*proxyReq)
	if pr != nil && pr.route.state.http != nil {
		pr.applyHeaders(resp.Header, pr.route.state.http.respHeaders)
	}
	return nil
}

// proxyError answers a failed backend exchange: 504 when the backend did
// not connect or answer in time (Options.ConnectTimeout, for the connect
// and for the response head), 502 otherwise (refused, reset, no healthy
// target, bad response).
func (h *httpLayer) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if clientBodyFailed(r) {
		if pr, ok := r.Context().Value(proxyReqKey{}).(*proxyReq); ok {
			h.badBody(w, pr, err)
			return
		}
	}
	status := http.StatusBadGateway
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		status = http.StatusGatewayTimeout
	}
	if pr, ok := r.Context().Value(proxyReqKey{}).(*proxyReq); ok {
		h.px.logConn("backend request failed", "id", pr.rc.ConnectionID, "route", pr.rc.RouteName,
			"method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	http.Error(w, fmt.Sprintf("%d %s", status, http.StatusText(status)), status)
}

// bufferPool recycles the reverse proxy's copy buffers. It pools array
// pointers, which a []byte of the right length converts back to without
// allocating (a *[]byte would cost an allocation per Put).
type bufferPool struct{ p sync.Pool }

const proxyBufSize = 32 << 10

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[proxyBufSize]byte); ok {
		return v[:]
	}
	return new([proxyBufSize]byte)[:]
}

// Put takes back a buffer from Get; anything else is left to the GC.
func (b *bufferPool) Put(buf []byte) {
	if cap(buf) < proxyBufSize {
		return
	}
	b.p.Put((*[proxyBufSize]byte)(buf[:proxyBufSize]))
}

// unixMilli is the {timestamp} of templates.
func unixMilli() int64 { return time.Now().UnixMilli() }
