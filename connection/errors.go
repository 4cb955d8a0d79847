package connection

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Reason says why a connection was refused or closed.
type Reason string

// Reasons reported in LimitError and in Metrics.Rejected / Metrics.Closed.
const (
	ReasonGlobalLimit Reason = "global-limit" // Config.MaxConnections reached
	ReasonIPLimit     Reason = "ip-limit"     // Config.MaxConnectionsPerIP reached
	ReasonRateLimit   Reason = "rate-limit"   // Config.ConnectionRateLimitPerMinute exceeded
	ReasonRouteLimit  Reason = "route-limit"  // the route's concurrent cap reached
	// ReasonRouteIPLimit: RouteLimits.MaxConnectionsPerIP reached.
	ReasonRouteIPLimit Reason = "route-ip-limit"
	// ReasonRouteRateLimit: RouteLimits.RatePerMinute exceeded.
	ReasonRouteRateLimit Reason = "route-rate-limit"
	ReasonInactivity     Reason = "inactivity" // closed by the sweeper: idle too long
	ReasonLifetime       Reason = "lifetime"   // closed by the sweeper: Config.MaxLifetime exceeded
	ReasonShutdown       Reason = "shutdown"   // closed by CloseAll
)

// reasonIndex maps a Reason to a slot of the fixed counter arrays, so the
// counters can be plain atomics instead of a locked map.
type reasonIndex int

const (
	idxGlobal reasonIndex = iota
	idxIP
	idxRate
	idxRoute
	idxRouteIP
	idxRouteRate
	idxInactivity
	idxLifetime
	idxShutdown
	numReasons
)

var reasonByIndex = [numReasons]Reason{
	ReasonGlobalLimit, ReasonIPLimit, ReasonRateLimit, ReasonRouteLimit,
	ReasonRouteIPLimit, ReasonRouteRateLimit, ReasonInactivity, ReasonLifetime, ReasonShutdown,
}

// LimitError is returned by Manager.Open and Manager.AssignRoute when an
// admission limit refuses a connection. Use errors.As to inspect it.
type LimitError struct {
	Reason Reason     // which limit refused the connection
	IP     netip.Addr // client address (unmapped)
	Route  string     // route name, set for the route reasons only
	Limit  int        // the configured limit that was hit
	// RetryAfter, for the rate limits, is how long until an attempt from
	// this client would be admitted if it made none in between (refused
	// attempts count towards the rate too).
	RetryAfter time.Duration
}

// Error names the reason, the client IP and, for route limits, the route.
func (e *LimitError) Error() string {
	switch e.Reason {
	case ReasonRouteLimit:
		return fmt.Sprintf("connection refused (%s): route %q has %d active connections (client %s)",
			e.Reason, e.Route, e.Limit, e.IP)
	case ReasonRouteIPLimit:
		return fmt.Sprintf("connection refused (%s): client %s has %d active connections on route %q",
			e.Reason, e.IP, e.Limit, e.Route)
	case ReasonRouteRateLimit:
		return fmt.Sprintf("connection refused (%s): client %s exceeded %d connections per minute on route %q",
			e.Reason, e.IP, e.Limit, e.Route)
	case ReasonRateLimit:
		return fmt.Sprintf("connection refused (%s): client %s exceeded %d connections per minute",
			e.Reason, e.IP, e.Limit)
	case ReasonIPLimit:
		return fmt.Sprintf("connection refused (%s): client %s has %d active connections",
			e.Reason, e.IP, e.Limit)
	default:
		return fmt.Sprintf("connection refused (%s): %d active connections (client %s)",
			e.Reason, e.Limit, e.IP)
	}
}

// RejectReason returns Reason as a string, so that callers can read the
// reason of any rejection (smartproxy's RejectError answers it too)
// through one interface.
func (e *LimitError) RejectReason() string { return string(e.Reason) }

// Errors for invalid use of the API (not limit refusals).
var (
	// ErrNilCloser is returned by Open when closer is nil: without it the
	// manager could not enforce timeouts or CloseAll.
	ErrNilCloser = errors.New("connection: nil closer")
	// ErrClosed is returned by AssignRoute for a record already closed.
	ErrClosed = errors.New("connection: record already closed")
	// ErrEmptyRoute is returned by AssignRoute for an empty route name,
	// which would be indistinguishable from "no route assigned".
	ErrEmptyRoute = errors.New("connection: empty route name")
)
