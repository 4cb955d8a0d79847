package smartproxy

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/gosmartproxy/smartproxy/connection"
)

// RejectReason names why a connection was refused.
type RejectReason string

// Rejection reasons reported by the DefaultSecurityChecker and the proxy.
const (
	RejectBlocked    RejectReason = "ip-blocked"     // client in an ipBlockList
	RejectNotAllowed RejectReason = "ip-not-allowed" // client not in a non-empty ipAllowList
	RejectNoRoute    RejectReason = "no-route"       // no route matched

	// HTTP-level rejections (security.rateLimit, basicAuth, jwtAuth).
	RejectHTTPRateLimit RejectReason = "http-rate-limit" // 429: security.rateLimit exceeded
	RejectAuthMissing   RejectReason = "auth-required"   // 401: no credentials sent
	RejectBasicAuth     RejectReason = "basic-auth"      // 401: wrong user or password
	RejectJWT           RejectReason = "jwt-invalid"     // 401: token invalid, expired, wrong issuer/audience...
)

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
		writeTooMany(w, re.RetryAfter, "")
	case errors.As(err, &le):
		switch le.Reason {
		case connection.ReasonRateLimit, connection.ReasonRouteRateLimit:
			// When the client's attempts, refused ones included, will
			// have aged out of the sliding minute enough for one more.
			writeTooMany(w, max(le.RetryAfter, time.Second), "")
		case connection.ReasonIPLimit, connection.ReasonRouteIPLimit:
			writeTooMany(w, time.Second, "")
		default:
			http.Error(w, http.StatusText(http.StatusServiceUnavailable), http.StatusServiceUnavailable)
		}
	default:
		http.Error(w, http.StatusText(http.StatusForbidden), http.StatusForbidden)
	}
}

// writeTooMany writes a 429 with Retry-After in whole seconds (rounded up,
// at least 1, as the header has no fractions).
func writeTooMany(w http.ResponseWriter, retry time.Duration, msg string) {
	secs := max(int64((retry+time.Second-1)/time.Second), 1)
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	if msg == "" {
		msg = http.StatusText(http.StatusTooManyRequests)
	}
	http.Error(w, msg, http.StatusTooManyRequests)
}
