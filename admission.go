package smartproxy

// connAdmission is what a connection's accept-time checks established,
// which the HTTP layer needs for each request on it: whether the
// connection-level checks (Security.CheckConnection, the route's limits)
// ran on accept, and for which route. A request routed elsewhere is
// checked in full (httpLayer.admit).
//
// The checks are deferred to requests for plain HTTP (a connection is
// matched per request, never on accept) and for a terminating route with
// request criteria (see deferChecksToRequests).
type connAdmission struct {
	// route is the route whose connection-level checks passed on accept;
	// nil when they were deferred. Only covers reads it.
	route *Route
	// domain is what they were checked for (the SNI): a checker may
	// decide by RouteContext.Domain, so a request for another of the
	// route's domains (Host differing from SNI) is checked again.
	domain string
}

// admissionDeferred: no connection-level check ran on accept.
var admissionDeferred = connAdmission{}

// admissionFor is the admission of a connection accepted for route: its
// checks ran (and passed) on accept, unless route defers them.
func admissionFor(route *Route, domain string) connAdmission {
	if deferChecksToRequests(route) {
		return admissionDeferred
	}
	return connAdmission{route: route, domain: domain}
}

// deferred reports whether the connection-level checks were left to the
// requests.
func (a connAdmission) deferred() bool { return a.route == nil }

// covers reports whether a request routed to route for domain needs no
// connection-level checks: the connection passed them for that very route
// (of the same generation: a reload makes a new *Route, checked anew) and
// domain.
func (a connAdmission) covers(route *Route, domain string) bool {
	return a.route != nil && a.route == route && a.domain == domain
}

// deferChecksToRequests reports whether a connection matched to route is
// checked per request instead of on accept: a terminating route with
// request criteria (path, headers, method) was chosen for its TLS
// settings only; which route a request belongs to is known per request,
// where the HTTP layer checks security and limits. Checking on accept
// would refuse a client for a path it never asks for.
func deferChecksToRequests(route *Route) bool {
	st := route.state
	return st.tls != nil && st.http != nil && st.http.criteria && route.Action.Type == ActionForward
}
