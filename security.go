package smartproxy

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"github.com/gosmartproxy/smartproxy/auth"
	"github.com/gosmartproxy/smartproxy/connection"
)

// RejectReason names why a connection was refused.
type RejectReason string

// Rejection reasons reported by the DefaultSecurityChecker and the proxy.
const (
	RejectBlocked    RejectReason = "ip-blocked"     // client in an ipBlockList
	RejectNotAllowed RejectReason = "ip-not-allowed" // client not in a non-empty ipAllowList
	RejectNoRoute    RejectReason = "no-route"       // no route matched

	// HTTP-level rejections (security.rateLimit, basicAuth, jwtAuth): the
	// reasons of package auth, under the names they have always had here.
	RejectHTTPRateLimit = RejectReason(auth.ReasonRateLimit)     // 429: security.rateLimit exceeded
	RejectAuthMissing   = RejectReason(auth.ReasonNoCredentials) // 401: no credentials sent
	RejectBasicAuth     = RejectReason(auth.ReasonBasicAuth)     // 401: wrong user or password
	RejectJWT           = RejectReason(auth.ReasonJWT)           // 401: token invalid, expired, wrong issuer/audience...
)

// The HTTP-level security schema lives in package auth, next to the code
// that enforces it. RouteSecurity refers to it through these aliases, so
// Route literals and JSON configurations are written as before.
type (
	// BasicAuth is [auth.BasicAuth]: HTTP Basic credentials on a route.
	BasicAuth = auth.BasicAuth
	// BasicAuthUser is [auth.BasicAuthUser]: one user of BasicAuth.
	BasicAuthUser = auth.BasicAuthUser
	// JWTAuth is [auth.JWTAuth]: a JSON Web Token required on a route.
	JWTAuth = auth.JWTAuth
	// RateLimit is [auth.RateLimit]: an HTTP request rate limit on a route.
	RateLimit = auth.RateLimit
	// KeyBy is [auth.KeyBy]: what a RateLimit counts requests under
	// (auth.KeyByIP, auth.KeyByPath or auth.KeyByHeader).
	KeyBy = auth.KeyBy
)

// Rejection is an error that names why a connection or request was
// refused. RejectError, connection.LimitError and auth.Error implement it;
// a SecurityChecker may return its own, and the proxy counts it under
// RejectReason() in Metrics.Rejected and the reject log (other errors
// count as "error").
type Rejection interface {
	error
	RejectReason() string
}

// RejectError is returned by a SecurityChecker to refuse a connection, and
// describes a refused HTTP request.
type RejectError struct {
	Reason RejectReason
	Route  string
	IP     netip.Addr
	// RetryAfter, when positive, is when the client may try again (sent as
	// Retry-After with a 429).
	RetryAfter time.Duration
	// Err is the underlying cause, if any (for logs; never sent to clients).
	Err error
}

// Error says which route refused which client, and why.
func (e *RejectError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("route %q: client %v rejected: %s: %v", e.Route, e.IP, e.Reason, e.Err)
	}
	return fmt.Sprintf("route %q: client %v rejected: %s", e.Route, e.IP, e.Reason)
}

// Unwrap returns the underlying cause.
func (e *RejectError) Unwrap() error { return e.Err }

// RejectReason returns Reason as a string (see [Rejection]).
func (e *RejectError) RejectReason() string { return string(e.Reason) }

// SecurityChecker decides whether a matched connection may proceed. It is
// called after routing and before any backend dial or handler call, with
// the client address as an input (not read from the socket), so a wrapper
// can substitute the address learnt from a trusted load balancer.
// Implementations must be safe for concurrent use.
//
// To add a policy, wrap the default:
//
//	type geoChecker struct{ smartproxy.SecurityChecker }
//	func (g geoChecker) CheckConnection(rc *smartproxy.RouteContext) error {
//		if blockedCountry(rc.ClientIP) { return errors.New("geo") }
//		return g.SecurityChecker.CheckConnection(rc)
//	}
type SecurityChecker interface {
	// CheckConnection returns nil to admit the connection described by
	// rc (rc.Route is the matched route), or an error to close it.
	CheckConnection(rc *RouteContext) error
}

// DefaultSecurityChecker enforces the route's (or the defaults')
// ipBlockList and ipAllowList; block wins over allow. The route's
// maxConnections is enforced by the connection manager when the
// connection is assigned to the route.
type DefaultSecurityChecker struct{}

// CheckConnection implements SecurityChecker.
func (DefaultSecurityChecker) CheckConnection(rc *RouteContext) error {
	st := rc.Route.state
	if st == nil {
		return nil
	}
	if st.block.Contains(rc.ClientIP) {
		return &RejectError{Reason: RejectBlocked, Route: rc.RouteName, IP: rc.ClientIP}
	}
	if st.allow.Len() > 0 && !st.allow.Contains(rc.ClientIP) {
		return &RejectError{Reason: RejectNotAllowed, Route: rc.RouteName, IP: rc.ClientIP}
	}
	return nil
}

// writeHTTPReject answers an HTTP request refused before authentication:
// by a SecurityChecker (403), or by a connection limit applied per request
// (429 with Retry-After for per-client limits, 503 for route and global
// caps). The body never carries the internal reason.
func writeHTTPReject(w http.ResponseWriter, err error) {
	var re *RejectError
	var le *connection.LimitError
	switch {
	case errors.As(err, &re) && re.RetryAfter > 0:
		auth.WriteTooManyRequests(w, re.RetryAfter, "")
	case errors.As(err, &le):
		switch le.Reason {
		case connection.ReasonRateLimit, connection.ReasonRouteRateLimit:
			// When the client's attempts, refused ones included, will
			// have aged out of the sliding minute enough for one more.
			auth.WriteTooManyRequests(w, max(le.RetryAfter, time.Second), "")
		case connection.ReasonIPLimit, connection.ReasonRouteIPLimit:
			auth.WriteTooManyRequests(w, time.Second, "")
		default:
			http.Error(w, http.StatusText(http.StatusServiceUnavailable), http.StatusServiceUnavailable)
		}
	default:
		http.Error(w, http.StatusText(http.StatusForbidden), http.StatusForbidden)
	}
}
