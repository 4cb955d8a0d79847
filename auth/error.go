package auth

import (
	"fmt"
	"time"
)

// Reason says why Check refused a request. The values are the reason
// strings smartproxy reports in Metrics.Rejected and its reject log.
type Reason string

// Reasons of an [*Error].
const (
	ReasonRateLimit     Reason = "http-rate-limit" // 429: the rate limit is exceeded
	ReasonNoCredentials Reason = "auth-required"   // 401: no credentials sent
	ReasonBasicAuth     Reason = "basic-auth"      // 401: wrong user or password
	ReasonJWT           Reason = "jwt-invalid"     // 401: token invalid, expired, wrong issuer/audience...
)

// Error is a request refused by [Checker.Check]. Use errors.As to
// inspect it.
type Error struct {
	// Reason says why.
	Reason Reason
	// RetryAfter, for ReasonRateLimit, is when one more request from the
	// same key would be admitted (sent as Retry-After).
	RetryAfter time.Duration
	// Err is the underlying cause, if any: for logs, never sent to
	// clients. It never contains a password.
	Err error
}

// Error names the reason and the cause.
func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("request refused: %s: %v", e.Reason, e.Err)
	}
	return fmt.Sprintf("request refused: %s", e.Reason)
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// RejectReason returns the reason as a string, so that callers can read
// the reason of any rejection (smartproxy's RejectError and
// connection.LimitError answer it too) through one interface.
func (e *Error) RejectReason() string { return string(e.Reason) }
