package smartproxy

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"path"
	"strings"
	"time"

	"github.com/gobwas/glob"

	"github.com/gosmartproxy/smartproxy/connection"
)

// fieldError is a mistake in one field of a security block; Field is
// relative to the route, e.g. "security.jwtAuth.algorithm".
type fieldError struct {
	Field string
	Err   error
}

func (e *fieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *fieldError) Unwrap() error { return e.Err }

// fieldErrs collects fieldErrors under a common prefix.
type fieldErrs struct {
	prefix string
	errs   []*fieldError
}

func (f *fieldErrs) fail(field string, err error) {
	f.errs = append(f.errs, &fieldError{Field: f.prefix + field, Err: err})
}

func (f *fieldErrs) failf(field, format string, args ...any) {
	f.fail(field, fmt.Errorf(format, args...))
}

// compiledSecurity is the runtime form of a route's RouteSecurity beyond
// the IP lists (which validate.go compiles into routeState.allow/block):
// connection limits for the connection manager and the HTTP checks. A nil
// *compiledSecurity imposes nothing; every method accepts nil.
type compiledSecurity struct {
	limits connection.RouteLimits
	rate   *httpRateLimiter // nil: no request rate limit
	basic  *basicAuth       // nil: no basic auth
	jwt    *jwtAuth         // nil: no JWT auth
}

// compileSecurity validates s and compiles it; nil when s imposes nothing
// beyond the IP lists. Errors name their field ("security.jwtAuth.secret").
func compileSecurity(s *RouteSecurity) (*compiledSecurity, []*fieldError) {
	return compileRouteSecurity(nil, s)
}

// compileRouteSecurity compiles a route's security on top of the compiled
// defaults def (nil: none): non-zero limits and non-nil blocks of s replace
// the defaults' ones. Default auth blocks are shared with the defaults
// (their state, such as a JWKS cache, is read-mostly and safe to share);
// a default rate limit gets a fresh limiter per route, so each route has
// its own budget.
func compileRouteSecurity(def *compiledSecurity, s *RouteSecurity) (*compiledSecurity, []*fieldError) {
	fe := &fieldErrs{prefix: "security."}
	cs := &compiledSecurity{}
	if def != nil {
		cs.limits = def.limits
		cs.basic, cs.jwt = def.basic, def.jwt
		if def.rate != nil {
			cs.rate = def.rate.clone()
		}
	}
	if s != nil {
		if s.MaxConnections < 0 {
			fe.failf("maxConnections", "must be >= 0, got %d", s.MaxConnections)
		} else if s.MaxConnections > 0 {
			cs.limits.MaxConnections = s.MaxConnections
		}
		if s.MaxConnectionsPerIP < 0 {
			fe.failf("maxConnectionsPerIP", "must be >= 0, got %d", s.MaxConnectionsPerIP)
		} else if s.MaxConnectionsPerIP > 0 {
			cs.limits.MaxConnectionsPerIP = s.MaxConnectionsPerIP
		}
		if s.ConnectionRateLimitPerMinute < 0 {
			fe.failf("connectionRateLimitPerMinute", "must be >= 0, got %d", s.ConnectionRateLimitPerMinute)
		} else if s.ConnectionRateLimitPerMinute > 0 {
			cs.limits.RatePerMinute = s.ConnectionRateLimitPerMinute
		}
		if s.BasicAuth != nil {
			cs.basic = compileBasicAuth(fe, s.BasicAuth)
		}
		if s.JWTAuth != nil {
			cs.jwt = compileJWTAuth(fe, s.JWTAuth)
		}
		if s.RateLimit != nil {
			cs.rate = compileRateLimit(fe, s.RateLimit)
		}
	}
	if len(fe.errs) > 0 {
		return nil, fe.errs
	}
	if cs.limits == (connection.RouteLimits{}) && cs.rate == nil && cs.basic == nil && cs.jwt == nil {
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
	return cs != nil && (cs.rate != nil || cs.basic != nil || cs.jwt != nil)
}

// checkHTTP applies the route's HTTP checks to one request: the rate
// limit first (so credential guessing is throttled too), then
// authentication. On refusal it writes the whole response (429 with
// Retry-After, or 401 with WWW-Authenticate) and returns the refusal, a
// *RejectError (Route unset) whose Reason is for metrics and the reject
// log; the caller must then stop handling the request. clientIP is the
// real client address (the PROXY protocol's, once supported), never read
// from r here.
func (cs *compiledSecurity) checkHTTP(w http.ResponseWriter, r *http.Request, clientIP netip.Addr, now time.Time) error {
	if !cs.hasHTTPChecks() {
		return nil
	}
	if cs.rate != nil {
		if ok, retry := cs.rate.allow(r, clientIP, now); !ok {
			writeTooMany(w, retry, cs.rate.msg)
			return &RejectError{Reason: RejectHTTPRateLimit, IP: clientIP, RetryAfter: retry}
		}
	}
	needBasic := cs.basic != nil && !cs.basic.exclude.match(r.URL.Path)
	needJWT := cs.jwt != nil && !cs.jwt.exclude.match(r.URL.Path)
	if !needBasic && !needJWT {
		return nil
	}
	// Either scheme suffices: a client can only send one Authorization
	// header, so requiring both would make the route unusable.
	var basicErr, jwtErr error
	if needBasic {
		if basicErr = cs.basic.verify(r); basicErr == nil {
			return nil
		}
	}
	if needJWT {
		if jwtErr = cs.jwt.verify(r, now); jwtErr == nil {
			return nil
		}
	}
	reason, cause := RejectAuthMissing, errors.Join(basicErr, jwtErr)
	switch {
	case needBasic && !errors.Is(basicErr, errNoCredentials):
		reason = RejectBasicAuth
	case needJWT && !errors.Is(jwtErr, errNoCredentials):
		reason = RejectJWT
	}
	h := w.Header()
	if needBasic {
		h.Add("WWW-Authenticate", cs.basic.challenge)
	}
	if needJWT {
		if errors.Is(jwtErr, errNoCredentials) {
			// RFC 6750 3.1: no error code when the request had no token.
			h.Add("WWW-Authenticate", cs.jwt.challenge)
		} else {
			h.Add("WWW-Authenticate", cs.jwt.challengeInvalid)
		}
	}
	h.Set("Cache-Control", "no-store")
	http.Error(w, http.StatusText(http.StatusUnauthorized), http.StatusUnauthorized)
	return &RejectError{Reason: reason, IP: clientIP, Err: cause}
}

// errNoCredentials is the cause when a request carries no credentials of
// the scheme at all (as opposed to wrong ones).
var errNoCredentials = errors.New("no credentials")

// pathGlobs compiles excludePaths: "**/" spans zero or more segments.
var pathGlobs = glob.Compiler{Separators: []rune{'/'}, Globstar: true}

// pathSet is a compiled excludePaths list: globs over the request path
// with '/' as separator ("*" stays within a segment, "**" spans segments).
type pathSet struct{ globs []*glob.Pattern }

func compilePathSet(fe *fieldErrs, field string, patterns []string) *pathSet {
	if len(patterns) == 0 {
		return nil
	}
	ps := &pathSet{}
	for i, p := range patterns {
		f := fmt.Sprintf("%s[%d]", field, i)
		if !strings.HasPrefix(p, "/") {
			fe.failf(f, "pattern %q must start with '/'", p)
			continue
		}
		g, err := pathGlobs.Compile(p)
		if err != nil {
			fe.fail(f, fmt.Errorf("invalid pattern %q: %w", p, err))
			continue
		}
		ps.globs = append(ps.globs, g)
	}
	return ps
}

// match reports whether p is excluded. Only clean paths can be: a path
// with "..", "." or "//" segments could match a pattern here and name
// another resource once the backend normalises it ("/public/../admin"),
// so it keeps authentication (fail closed).
func (ps *pathSet) match(p string) bool {
	if ps == nil || !isCleanPath(p) {
		return false
	}
	for _, g := range ps.globs {
		if g.Match(p) {
			return true
		}
	}
	return false
}

func isCleanPath(p string) bool {
	if !strings.HasPrefix(p, "/") {
		return false
	}
	c := path.Clean(p)
	return c == p || c+"/" == p
}
