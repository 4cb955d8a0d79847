package auth

import (
	"errors"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/gosmartproxy/smartproxy/schema"
)

// Config is the HTTP-level security of one route; every part is
// optional. A part whose Enabled is false is switched off.
type Config struct {
	BasicAuth *BasicAuth
	JWTAuth   *JWTAuth
	RateLimit *RateLimit
}

// Checker is a compiled Config. It is safe for concurrent use. A nil
// *Checker checks nothing and admits every request.
type Checker struct {
	rate  *rateLimiter // nil: no request rate limit
	basic *basicAuth   // nil: no basic auth
	jwt   *jwtAuth     // nil: no JWT auth
}

// Compile validates c and compiles it. It returns a nil Checker when c
// checks nothing. On mistakes the error is a [FieldErrors] naming every
// offending field.
func Compile(c Config) (*Checker, error) { return CompileWithDefaults(nil, c) }

// CompileWithDefaults compiles c on top of defaults (nil: none): a part
// set in c replaces the defaults' one, and a part set with Enabled false
// switches the default off. Authentication shared with the defaults is
// shared state (a JWKS cache is read-mostly and safe to share); a default
// rate limit gets a fresh limiter, so each Checker has its own budget.
func CompileWithDefaults(defaults *Checker, c Config) (*Checker, error) {
	fe := &schema.Collector{}
	ck := &Checker{}
	if defaults != nil {
		ck.basic, ck.jwt = defaults.basic, defaults.jwt
		if defaults.rate != nil {
			ck.rate = defaults.rate.clone()
		}
	}
	if c.BasicAuth != nil {
		ck.basic = compileBasicAuth(fe, c.BasicAuth)
	}
	if c.JWTAuth != nil {
		ck.jwt = compileJWTAuth(fe, c.JWTAuth)
	}
	if c.RateLimit != nil {
		ck.rate = compileRateLimit(fe, c.RateLimit)
	}
	if errs := fe.Errors(); errs != nil {
		return nil, errs
	}
	if ck.rate == nil && ck.basic == nil && ck.jwt == nil {
		return nil, nil
	}
	return ck, nil
}

// SetIPv6PrefixLen makes a rate limit keyed by client IP count IPv6
// clients per /bits network, as the proxy's connection limits do; 0
// means /64. Call it before the Checker is used: it is not synchronised.
func (c *Checker) SetIPv6PrefixLen(bits int) {
	if c != nil && c.rate != nil {
		c.rate.v6Bits = bits
	}
}

// PathDependent reports whether the verdict on a request can depend on
// its path (excludePaths, or a rate limit keyed by path), so the caller
// knows to canonicalise paths before calling Check.
func (c *Checker) PathDependent() bool {
	if c == nil {
		return false
	}
	return c.basic != nil && c.basic.exclude != nil || c.jwt != nil && c.jwt.exclude != nil ||
		c.rate != nil && c.rate.keyBy == KeyByPath
}

// MayBlock reports whether Check may hold its caller up for long: a JWT key
// set fetched over the network (up to its fetch timeout, and requests wait
// for a fetch under way), or bcrypt hashes (tens of milliseconds a check,
// and every wrong password pays it). A caller that must not block (an
// event loop serving many connections) leaves such checks to a goroutine.
func (c *Checker) MayBlock() bool {
	return c != nil && (c.jwt != nil && c.jwt.jwks != nil || c.basic != nil && c.basic.dummy.bcrypt != nil)
}

// Check applies the checks to one request: the rate limit first (so
// credential guessing is throttled too), then authentication, where
// either Basic or JWT suffices when both are configured. On refusal it
// writes the whole response (429 with Retry-After, or 401 with
// WWW-Authenticate) and returns an [*Error]; the caller must then stop
// handling the request. clientIP is the real client address, never read
// from r here; now is the time for token validity and the rate window.
func (c *Checker) Check(w http.ResponseWriter, r *http.Request, clientIP netip.Addr, now time.Time) error {
	if c == nil {
		return nil
	}
	if c.rate != nil {
		if ok, retry := c.rate.allow(r, clientIP, now); !ok {
			WriteTooManyRequests(w, retry, c.rate.msg)
			return &Error{Reason: ReasonRateLimit, RetryAfter: retry}
		}
	}
	needBasic := c.basic != nil && !c.basic.exclude.match(r.URL.Path)
	needJWT := c.jwt != nil && !c.jwt.exclude.match(r.URL.Path)
	if !needBasic && !needJWT {
		return nil
	}
	// Either scheme suffices: a client can only send one Authorization
	// header, so requiring both would make the route unusable.
	var basicErr, jwtErr error
	if needBasic {
		if basicErr = c.basic.verify(r); basicErr == nil {
			return nil
		}
	}
	if needJWT {
		if jwtErr = c.jwt.verify(r, now); jwtErr == nil {
			return nil
		}
	}
	reason, cause := ReasonNoCredentials, errors.Join(basicErr, jwtErr)
	switch {
	case needBasic && !errors.Is(basicErr, errNoCredentials):
		reason = ReasonBasicAuth
	case needJWT && !errors.Is(jwtErr, errNoCredentials):
		reason = ReasonJWT
	}
	h := w.Header()
	if needBasic {
		h.Add("WWW-Authenticate", c.basic.challenge)
	}
	if needJWT {
		if errors.Is(jwtErr, errNoCredentials) {
			// RFC 6750 3.1: no error code when the request had no token.
			h.Add("WWW-Authenticate", c.jwt.challenge)
		} else {
			h.Add("WWW-Authenticate", c.jwt.challengeInvalid)
		}
	}
	h.Set("Cache-Control", "no-store")
	http.Error(w, http.StatusText(http.StatusUnauthorized), http.StatusUnauthorized)
	return &Error{Reason: reason, Err: cause}
}

// errNoCredentials is the cause when a request carries no credentials of
// the scheme at all (as opposed to wrong ones).
var errNoCredentials = errors.New("no credentials")

// WriteTooManyRequests writes a 429 with Retry-After in whole seconds
// (rounded up, at least 1, as the header has no fractions) and msg as the
// body ("Too Many Requests" when empty). The proxy answers its connection
// limits with it too, so every 429 is written the same way.
func WriteTooManyRequests(w http.ResponseWriter, retryAfter time.Duration, msg string) {
	secs := max(int64((retryAfter+time.Second-1)/time.Second), 1)
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	if msg == "" {
		msg = http.StatusText(http.StatusTooManyRequests)
	}
	http.Error(w, msg, http.StatusTooManyRequests)
}

// FieldError is a mistake in one field of a Config ([schema.FieldError]).
// Field is the path within the route's security block, such as
// "jwtAuth.algorithm[0]"; the caller adds its own prefix.
type FieldError = schema.FieldError

// FieldErrors is every mistake Compile found, in the order of the fields
// ([schema.FieldErrors]).
type FieldErrors = schema.FieldErrors
