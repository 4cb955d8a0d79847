package smartproxy

import (
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
)

// MatchQuery describes a connection to a RouteMatcher.
type MatchQuery struct {
	// Port is the local port the connection arrived on.
	Port int
	// Domain is the SNI server name, lower-cased without a trailing dot,
	// or "" when the client sent none (or no ClientHello was read).
	Domain string
	// ClientIP is the client's address, IPv4-mapped addresses unmapped.
	ClientIP netip.Addr
	// TLSVersion is the highest TLS version offered, 0 if unknown.
	TLSVersion uint16
	// Request is the HTTP request being routed, or nil when a connection
	// is matched. For a request, Domain is its Host (port stripped,
	// lower-cased; the SNI when the request has no Host), and only routes
	// valid for the connection kind are candidates: with Terminated set,
	// routes that terminate TLS; otherwise routes without a TLS block.
	Request *http.Request
	// Terminated reports that Request arrived over TLS the proxy
	// terminated.
	Terminated bool
}

// RouteMatcher picks the route for a connection. It can be implemented
// outside this package: the MatcherFactory given in Options.Matcher
// receives the proxy's compiled routes, and Match returns one of them, so
// a matcher needs nothing else from the package (it may also wrap the
// RouteTable that NewRouteTable builds from the same routes and adjust its
// answers). Implementations must be safe for concurrent use and should not
// allocate per call.
type RouteMatcher interface {
	// Match returns the best route for q, or nil. It must return one of
	// the *Route values the matcher was built from.
	Match(q *MatchQuery) *Route
}

// MatcherFactory builds a RouteMatcher from validated routes, every time
// the route set changes. The routes are the proxy's own compiled copies:
// keep the pointers, do not modify them.
type MatcherFactory func(routes []*Route) (RouteMatcher, error)

// NewRouteTable is the default MatcherFactory. It orders routes by
// priority (higher first), then specificity (an exact domain over a
// wildcard over no domain; among wildcards, more literal characters win),
// then, for HTTP requests, path specificity (more literal path characters,
// then more segments, then an exact path over a trailing "*"; a route with
// a path over one without), then declaration order, and indexes them by port and exact domain so
// that matching stays fast with many thousands of routes.
func NewRouteTable(routes []*Route) (RouteMatcher, error) {
	t := &RouteTable{ports: make(map[int]*portTable)}
	for i, r := range routes {
		if r == nil || r.state == nil {
			// Routes built by hand carry none of what matching reads
			// (compiled domains, paths, client lists).
			return nil, fmt.Errorf("smartproxy: routes[%d] is not compiled: build the table from CompileRoutes' result (New does this itself)", i)
		}
	}
	for _, r := range routes {
		r.Match.Ports.Each(func(port int) bool {
			t.port(port).add(r)
			return true
		})
	}
	for _, pt := range t.ports {
		pt.sort()
	}
	return t, nil
}

// RouteTable is the default RouteMatcher, built by NewRouteTable.
type RouteTable struct {
	ports map[int]*portTable
}

// candidate is a route entered in one of a port's lists, with the
// specificity it has in that list.
type candidate struct {
	route *Route
	spec  int
}

// pathSpec is the route's path specificity, 0 without match.path.
func (c candidate) pathSpec() int {
	if h := c.route.state.http; h != nil {
		return h.pathSpec
	}
	return 0
}

// portTable holds the routes of one port, each list sorted best first.
type portTable struct {
	exact    map[string][]candidate // exact domain -> routes
	suffix   map[string][]candidate // "*.example.com" is filed under "example.com"
	globs    []globCandidate        // any other domain pattern
	noDomain []candidate
}

type globCandidate struct {
	candidate
	pattern *domainPattern
}

// Specificity levels; literal length is added within the wildcard level.
const (
	specNone     = 0
	specWildcard = 1
	specExact    = 1 << 20
)

func (t *RouteTable) port(p int) *portTable {
	pt := t.ports[p]
	if pt == nil {
		pt = &portTable{exact: map[string][]candidate{}, suffix: map[string][]candidate{}}
		t.ports[p] = pt
	}
	return pt
}

func (pt *portTable) add(r *Route) {
	st := r.state
	if len(st.domains) == 0 {
		pt.noDomain = append(pt.noDomain, candidate{r, specNone})
		return
	}
	for i := range st.domains {
		d := &st.domains[i]
		switch {
		case d.glob == nil:
			pt.exact[d.text] = append(pt.exact[d.text], candidate{r, specExact})
		case isSuffixWildcard(d.text):
			key := d.text[2:]
			pt.suffix[key] = append(pt.suffix[key], candidate{r, specWildcard + d.literal})
		default:
			pt.globs = append(pt.globs, globCandidate{candidate{r, specWildcard + d.literal}, d})
		}
	}
}

// isSuffixWildcard reports whether p is "*.rest" with no other wildcard.
func isSuffixWildcard(p string) bool {
	return strings.HasPrefix(p, "*.") && !strings.ContainsAny(p[2:], globMeta)
}

// better reports whether a outranks b.
func better(a, b candidate) bool {
	if a.route.Priority != b.route.Priority {
		return a.route.Priority > b.route.Priority
	}
	if a.spec != b.spec {
		return a.spec > b.spec
	}
	if pa, pb := a.pathSpec(), b.pathSpec(); pa != pb {
		return pa > pb
	}
	return a.route.state.index < b.route.state.index
}

func compareCandidates(a, b candidate) int {
	if better(a, b) {
		return -1
	}
	if better(b, a) {
		return 1
	}
	return 0
}

func (pt *portTable) sort() {
	for _, l := range pt.exact {
		slices.SortStableFunc(l, compareCandidates)
	}
	for _, l := range pt.suffix {
		slices.SortStableFunc(l, compareCandidates)
	}
	slices.SortStableFunc(pt.globs, func(a, b globCandidate) int { return compareCandidates(a.candidate, b.candidate) })
	slices.SortStableFunc(pt.noDomain, compareCandidates)
}

// Match implements RouteMatcher.
func (t *RouteTable) Match(q *MatchQuery) *Route {
	pt := t.ports[q.Port]
	if pt == nil {
		return nil
	}
	var best candidate
	consider := func(c candidate, ok bool) {
		if ok && (best.route == nil || better(c, best)) {
			best = c
		}
	}
	if q.Domain != "" {
		consider(firstMatch(pt.exact[q.Domain], q))
		// Walk the parent names: a.b.example.com -> b.example.com, example.com, com.
		for rest := q.Domain; ; {
			dot := strings.IndexByte(rest, '.')
			if dot < 0 {
				break
			}
			rest = rest[dot+1:]
			consider(firstMatch(pt.suffix[rest], q))
		}
		for i := range pt.globs {
			g := &pt.globs[i]
			if best.route != nil && !better(g.candidate, best) {
				break // sorted: nothing later can win
			}
			if g.pattern.glob.Match(q.Domain) && routeAccepts(g.route, q) {
				best = g.candidate
				break
			}
		}
	}
	consider(firstMatch(pt.noDomain, q))
	return best.route
}

// firstMatch returns the best candidate of a sorted list that accepts q.
func firstMatch(list []candidate, q *MatchQuery) (candidate, bool) {
	for _, c := range list {
		if routeAccepts(c.route, q) {
			return c, true
		}
	}
	return candidate{}, false
}

// routeAccepts checks the criteria other than port and domain.
func routeAccepts(r *Route, q *MatchQuery) bool {
	st := r.state
	if st.http != nil || q.Request != nil {
		if !httpAccepts(r, q) {
			return false
		}
	}
	if st.clientIP != nil && !st.clientIP.Contains(q.ClientIP) {
		return false
	}
	if len(st.tlsVersion) > 0 && !slices.Contains(st.tlsVersion, q.TLSVersion) {
		return false
	}
	return true
}
