package smartproxy

import (
	"errors"
	"net/http"
	"net/netip"
	"time"

	"github.com/gosmartproxy/smartproxy/auth"
	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/gosmartproxy/smartproxy/schema"
)

// compiledSecurity is the runtime form of a route's RouteSecurity beyond
// the IP lists (which validate.go compiles into routeState.allow/block):
// connection limits for the connection manager and the HTTP checks of
// package auth. A nil *compiledSecurity imposes nothing; every method
// accepts nil.
type compiledSecurity struct {
	limits connection.RouteLimits
	http   *auth.Checker // rate limit, basicAuth, jwtAuth; nil: none
}

// compileSecurity validates s and compiles it; nil when s imposes nothing
// beyond the IP lists. Errors name their field ("security.jwtAuth.secret").
func compileSecurity(s *RouteSecurity) (*compiledSecurity, schema.FieldErrors) {
	return compileRouteSecurity(nil, s)
}

// compileRouteSecurity compiles a route's security on top of the compiled
// defaults def (nil: none): non-zero limits and non-nil blocks of s replace
// the defaults' ones (auth.CompileWithDefaults says how the HTTP checks
// are shared).
func compileRouteSecurity(def *compiledSecurity, s *RouteSecurity) (*compiledSecurity, schema.FieldErrors) {
	fe := &schema.Collector{Prefix: "security."}
	cs := &compiledSecurity{}
	var defHTTP *auth.Checker
	if def != nil {
		cs.limits, defHTTP = def.limits, def.http
	}
	var ac auth.Config
	if s != nil {
		if s.MaxConnections < 0 {
			fe.Failf("maxConnections", "must be >= 0, got %d", s.MaxConnections)
		} else if s.MaxConnections > 0 {
			cs.limits.MaxConnections = s.MaxConnections
		}
		if s.MaxConnectionsPerIP < 0 {
			fe.Failf("maxConnectionsPerIP", "must be >= 0, got %d", s.MaxConnectionsPerIP)
		} else if s.MaxConnectionsPerIP > 0 {
			cs.limits.MaxConnectionsPerIP = s.MaxConnectionsPerIP
		}
		if s.ConnectionRateLimitPerMinute < 0 {
			fe.Failf("connectionRateLimitPerMinute", "must be >= 0, got %d", s.ConnectionRateLimitPerMinute)
		} else if s.ConnectionRateLimitPerMinute > 0 {
			cs.limits.RatePerMinute = s.ConnectionRateLimitPerMinute
		}
		ac = auth.Config{BasicAuth: s.BasicAuth, JWTAuth: s.JWTAuth, RateLimit: s.RateLimit}
	}
	var err error
	cs.http, err = auth.CompileWithDefaults(defHTTP, ac)
	var afe auth.FieldErrors
	if errors.As(err, &afe) {
		fe.Add(afe)
	}
	if errs := fe.Errors(); errs != nil {
		return nil, errs
	}
	if cs.limits == (connection.RouteLimits{}) && cs.http == nil {
		return nil, nil
	}
	return cs, nil
}

// routeLimits returns the limits for Manager.AssignRouteLimits.
func (cs *compiledSecurity) routeLimits() connection.RouteLimits {
	if cs == nil {
		return connection.RouteLimits{}
	}
	return cs.limits
}

// hasHTTPChecks reports whether checkHTTP can refuse anything, so the
// HTTP layer can skip the call (and a route with HTTP checks can be
// refused on a port that never parses HTTP).
func (cs *compiledSecurity) hasHTTPChecks() bool {
	return cs != nil && cs.http != nil
}

// mayBlock reports HTTP checks that may block their caller (auth.Checker.MayBlock).
func (cs *compiledSecurity) mayBlock() bool {
	return cs != nil && cs.http.MayBlock()
}

// checkHTTP applies the route's HTTP checks (auth.Checker.Check) to one
// request. On refusal the response is written and the refusal returned as
// a *RejectError (Route unset) whose Reason, the auth.Reason's string, is
// for metrics and the reject log; the caller must then stop handling the
// request. clientIP is the real client address (the PROXY protocol's,
// once supported), never read from r.
func (cs *compiledSecurity) checkHTTP(w http.ResponseWriter, r *http.Request, clientIP netip.Addr, now time.Time) error {
	if !cs.hasHTTPChecks() {
		return nil
	}
	var ae *auth.Error
	if err := cs.http.Check(w, r, clientIP, now); !errors.As(err, &ae) {
		return err
	}
	return &RejectError{Reason: RejectReason(ae.Reason), IP: clientIP, RetryAfter: ae.RetryAfter, Err: ae.Err}
}
