package smartproxy

import (
	"fmt"
	"net/netip"
)

// RejectReason names why a connection was refused.
type RejectReason string

// Rejection reasons reported by the DefaultSecurityChecker and the proxy.
const (
	RejectBlocked    RejectReason = "ip-blocked"     // client in an ipBlockList
	RejectNotAllowed RejectReason = "ip-not-allowed" // client not in a non-empty ipAllowList
	RejectNoRoute    RejectReason = "no-route"       // no route matched
)

// RejectError is returned by a SecurityChecker to refuse a connection.
type RejectError struct {
	Reason RejectReason
	Route  string
	IP     netip.Addr
}

func (e *RejectError) Error() string {
	return fmt.Sprintf("route %q: client %v rejected: %s", e.Route, e.IP, e.Reason)
}

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
