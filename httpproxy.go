package smartproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
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
	relay     relayWriter // the client's writer on net/http's server (act)
	// upgraded is a backend's 101 that modifyResponse took for the
	// proxy's own relay (httpupgrade.go), which act runs.
	upgraded *upgradedBackend
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
//  5. plan: redirect, WebSocket refusal, or the target and rewrite
//     (plan);
//
// steps 2-5 being the one decision function, decide (httpdecide.go),
// that every HTTP stack of the proxy runs;
//
//  6. action: socket-handler handover, or the body framing for the
//     backend (act);
//  7. backend: the reverse proxy (rewriteRequest, then
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
	h.serveRequest(w, r, hc, nil)
}

// serveRequest is one request's way through the proxy on any HTTP
// stack: net/http's (ServeHTTP) and the fast path's (httpfast.go). It
// reports ineligible, having written nothing, when eligible (see decide)
// turns the request's route down.
func (h *httpLayer) serveRequest(w http.ResponseWriter, r *http.Request, hc *httpConn, eligible func(*Route) bool) verdict {
	var pr *proxyReq
	v := answered
	if h.px.detailed || h.px.ops.requests.Load() {
		lr := &loggedResponse{ResponseWriter: w, start: time.Now()}
		w = lr
		defer func() {
			if v != ineligible {
				h.requestDone(lr, r, hc, pr)
			}
		}()
	}
	if refuseFraming(w, r) || h.answerACMEChallenge(w, r, hc) {
		return answered
	}
	if pr, v = h.decide(w, r, hc, eligible); v == proceed {
		h.act(w, pr)
	}
	return v
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

// act carries out a decided request (decide): the handover to a
// socket-handler route, or the reverse proxy to its target after, for
// chunked uploads, reading the first of the body.
func (h *httpLayer) act(w http.ResponseWriter, pr *proxyReq) {
	r := pr.in
	if pr.route.Action.Type == ActionSocketHandler {
		h.handover(w, r, pr)
		return
	}
	if fw, lr := fastForwardWriter(w); fw != nil && h.fastForwardable(fw, pr) {
		h.fastForward(w, fw, lr, pr) // the fast path's backend side (httpfastforward.go)
		fw.fc.forwarded = true
		return
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
	if fw, _ := fastForwardWriter(w); fw == nil {
		// net/http's server: the heads it would alter (httprelayhead.go).
		pr.relay = relayWriter{ResponseWriter: w, http1: r.ProtoMajor == 1}
		w = &pr.relay
	}
	h.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), proxyReqKey{}, pr)))
	if pr.upgraded != nil {
		h.relayUpgrade(w, pr)
	}
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
	if !strings.Contains(host, ":") {
		// The usual Host, without a port: SplitHostPort would build an
		// error to say so, an allocation per request.
	} else if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	return normalizeDomain(host)
}

// isUpgrade reports an HTTP/1.1 Upgrade request (WebSocket).
func isUpgrade(r *http.Request) bool {
	// The map read directly: a request's header keys are canonical (both
	// servers make them so), and Get would canonicalise "Upgrade" again.
	up := r.Header["Upgrade"]
	return len(up) > 0 && up[0] != "" && httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade")
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
	if pf, ok := r.In.Body.(*prefetchBody); ok && pf.trailer != nil {
		out.Trailer = pf.trailer // not the map the prefetch's read may still fill (prefetchChunked)
	}
	out.Host = "" // the target address, from out.URL.Host
	if hr := pr.route.state.http; hr != nil {
		if hr.keepHost {
			out.Host = r.In.Host
		}
		if u := pr.rewritten; u != nil {
			out.URL.Path, out.URL.RawPath, out.URL.RawQuery = u.Path, u.RawPath, u.RawQuery
		}
		pr.applyHeaders(out.Header, hr.reqHeaders)
	}
}

// modifyResponse applies action.headers.response, and takes a 101 for
// the proxy's own relay (takeUpgrade).
func (h *httpLayer) modifyResponse(resp *http.Response) error {
	normalizeLength(resp.Header)
	pr, _ := resp.Request.Context().Value(proxyReqKey{}).(*proxyReq)
	if pr != nil && pr.route.state.http != nil {
		pr.applyHeaders(resp.Header, pr.route.state.http.respHeaders)
	}
	if pr != nil && resp.StatusCode == http.StatusSwitchingProtocols {
		return takeUpgrade(resp, pr)
	}
	return nil
}

// proxyError answers a failed backend exchange: 504 when the backend did
// not connect or answer in time (Options.ConnectTimeout, for the connect
// and for the response head), 502 otherwise (refused, reset, no healthy
// target, bad response).
func (h *httpLayer) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, errUpgradeTaken) {
		return // not an error: act relays the 101
	}
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
