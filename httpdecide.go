package smartproxy

import (
	"net/http"
	"time"
)

// decide is the one decision function of the HTTP layer: every request,
// whichever stack parsed it (net/http for HTTP/1.x and HTTP/2, the fast
// HTTP/1.1 path), is routed, admitted, checked and planned here, so that
// a route behaves the same on every stack. In order:
//
//  1. route: canonical path and the match against the current routes;
//  2. admit: the connection-level checks and limits for the request's
//     route;
//  3. check: the route's HTTP security (rate limit, basicAuth/jwtAuth);
//  4. plan: a redirect or WebSocket refusal answered here, or the target
//     (its sub-match) and action.rewrite for a forward.
//
// It answers the request itself on w (404, 400, 401, 403, 429, a
// redirect...) and returns answered, or returns proceed with the
// request's plan for the caller to carry out: a socket-handler handover
// or a forward to pr.target. pr is set whenever a route matched, answered
// or not (the request log names it).
//
// eligible, when set, is asked after the match whether the caller's
// stack can carry out the route's action; when it says no, decide
// returns ineligible having done nothing but the match (no check ran,
// nothing was counted and nothing written), and the caller hands the
// request to a stack that can.
func (h *httpLayer) decide(w http.ResponseWriter, r *http.Request, hc *httpConn, eligible func(*Route) bool) (pr *proxyReq, v verdict) {
	if pr = h.route(w, r, hc); pr == nil {
		return nil, answered
	}
	if eligible != nil && !eligible(pr.route) {
		return pr, ineligible
	}
	if !h.admit(w, pr) || !h.check(w, pr) || !h.plan(w, pr) {
		return pr, answered
	}
	return pr, proceed
}

// verdict is decide's conclusion on a request.
type verdict uint8

const (
	answered   verdict = iota // decide wrote the response
	proceed                   // carry out pr: handover or forward
	ineligible                // the caller's stack cannot; nothing was done
)

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
	s := newRouteScratch(w)
	q := &s.q
	*q = MatchQuery{Port: hc.rc.Port, Domain: host, ClientIP: hc.rc.ClientIP, TLSVersion: hc.rc.TLSVersion, Request: r, Terminated: hc.terminated}
	// Every request is matched against the current routes, not those the
	// connection was accepted under: UpdateRoutes must be able to revoke
	// access on keep-alive and HTTP/2 connections too. A route of a newer
	// generation is not covered by hc.admission, so admit checks it in full.
	route := h.px.match(set, q)
	_, builtin := set.matcher.(*RouteTable)
	s.shared = !builtin || !h.px.defaultChecker || route != nil && route.state != nil && route.state.targetFuncs
	if route == nil || route.state == nil {
		h.px.reject(refusal{client: hc.rc.ClientAddr, port: hc.rc.Port, domain: host, req: r}, &RejectError{Reason: RejectNoRoute, IP: hc.rc.ClientIP})
		http.Error(w, "404 no route for this request", http.StatusNotFound)
		return nil
	}
	if normalized && route.state.http != nil && route.state.http.pathReject {
		h.badPath(w, r, hc, errNonCanonicalPath)
		return nil
	}
	pr := &s.pr
	*pr = proxyReq{hc: hc, w: w, route: route, rc: hc.rc, in: r}
	pr.rc.Domain, pr.rc.Route, pr.rc.RouteName = host, route, route.Name
	return pr
}

// routeScratch is what route needs per request, in one allocation: the
// match's query (on the heap: a custom Matcher may keep it) and the
// request's proxyReq.
type routeScratch struct {
	q  MatchQuery
	pr proxyReq
	// shared: code of the user's was given a pointer into the request's
	// objects (a custom Matcher the query, a custom SecurityChecker or a
	// target's HostFunc or PortFunc the route context) and may keep it: the
	// fast path's request objects are then left to the collector, never
	// reused for a later request (fastConn.releaseRequest).
	shared bool
}

// newRouteScratch returns route's scratch for the request w answers: the
// fast path's request already holds one (fastReq); other stacks' requests
// take a new one.
func newRouteScratch(w http.ResponseWriter) *routeScratch {
	if fw, _ := fastForwardWriter(w); fw != nil && fw.fc.cur != nil {
		return &fw.fc.cur.route
	}
	return new(routeScratch)
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
	sec := pr.route.state.sec
	if !sec.hasHTTPChecks() {
		return true // no clock read for a route without checks
	}
	if err := sec.checkHTTP(w, pr.in, pr.rc.ClientIP, time.Now()); err != nil {
		h.px.reject(pr.refusal(), err)
		return false
	}
	return true
}

// plan answers a redirect or a refused WebSocket upgrade, and for a
// forward picks the target whose sub-match takes the request and applies
// action.rewrite; false when it answered the request.
func (h *httpLayer) plan(w http.ResponseWriter, pr *proxyReq) bool {
	r, route := pr.in, pr.route
	hr := route.state.http
	switch {
	case route.Action.Type == ActionSocketHandler:
		return true
	case hr != nil && hr.redirect != nil:
		h.redirect(w, pr)
		return false
	case hr != nil && hr.noWebSocket && isUpgrade(r):
		http.Error(w, "403 WebSocket upgrades are disabled for this route", http.StatusForbidden)
		return false
	}
	pr.target = chooseTarget(route, r, pr.hc.rc.Port)
	if pr.target < 0 {
		http.Error(w, "404 no target for this request", http.StatusNotFound)
		return false
	}
	if hr != nil && hr.rewrite != nil {
		if err := pr.rewriteURL(hr.rewrite, hr.pathReject); err != nil {
			h.badPath(w, r, pr.hc, err)
			return false
		}
	}
	return true
}
