package smartproxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/gobwas/glob"

	"github.com/gosmartproxy/smartproxy/iplist"
	"github.com/gosmartproxy/smartproxy/nftables"
	"github.com/gosmartproxy/smartproxy/schema"
)

// RouteError is a configuration mistake in one route. Errors returned by
// New and UpdateRoutes join one RouteError per mistake found.
type RouteError struct {
	// Route is the route's name, or "#N" (its index) when it has none.
	Route string
	// Field is the path of the offending field, such as "match.ports[1]".
	Field string
	// Err says what is wrong.
	Err error
}

// Error names the route, the field and the mistake.
func (e *RouteError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("route %s: %v", e.Route, e.Err)
	}
	return fmt.Sprintf("route %s: %s: %v", e.Route, e.Field, e.Err)
}

// Unwrap returns the underlying mistake.
func (e *RouteError) Unwrap() error { return e.Err }

// routeState is what validation compiles for one route: parsed patterns
// and per-route runtime state shared by all its connections.
type routeState struct {
	index      int // declaration order, the last tie-breaker in matching
	domains    []domainPattern
	clientIP   *iplist.List
	tlsVersion []uint16
	allow      *iplist.List
	block      *iplist.List
	sec        *compiledSecurity // limits, auth and rate limits; nil: none
	targets    []Target          // sorted by descending priority, defaults applied
	needsHello bool              // the route can only be matched after a ClientHello
	tls        *routeTLS         // set for the terminating TLS modes
	lb         *loadBalancer     // load balancing and health of the targets
	http       *httpRoute        // HTTP criteria and actions; nil when none
	sendPP     byte              // PROXY header version sent to backends; 0: none (proxyproto_send.go)
	kernel     *nftables.Route   // forwardingEngine "nftables": the kernel's route
	// ipTargets: every target has fixed hosts, each an IP literal (ipTarget), which the
	// event loops can dial by themselves; decided once here, not per request.
	ipTargets bool
	// targetFuncs: a target has a HostFunc or PortFunc (user code given the route context).
	targetFuncs bool
}

// domainPattern is one compiled entry of match.domains.
type domainPattern struct {
	text    string        // lower-cased, no trailing dot
	glob    *glob.Pattern // nil for an exact name
	literal int           // count of non-wildcard characters, a specificity tie-breaker
}

var tlsVersionNames = map[string]uint16{
	"TLSv1":   tls.VersionTLS10,
	"TLSv1.0": tls.VersionTLS10,
	"TLSv1.1": tls.VersionTLS11,
	"TLSv1.2": tls.VersionTLS12,
	"TLSv1.3": tls.VersionTLS13,
}

// compileRoutes validates routes and returns compiled copies, so that later
// changes to the caller's slice cannot race with connections in flight.
// Disabled routes are validated but left out of the result.
// CompileRoutes validates routes as New does (every mistake is reported,
// each a *RouteError naming the route and field) and returns them
// compiled: the form a MatcherFactory such as NewRouteTable receives, so
// tests and custom matchers can build a table without a proxy. Disabled
// routes are left out.
func CompileRoutes(routes []Route, defaults Defaults) ([]*Route, error) {
	return compileRoutes(routes, defaults)
}

func compileRoutes(routes []Route, defaults Defaults) ([]*Route, error) {
	var errs []error
	seen := make(map[string]int, len(routes))
	out := make([]*Route, 0, len(routes))
	defs, derrs := compileDefaults(defaults)
	errs = append(errs, derrs...)
	for i := range routes {
		r := routes[i] // copy
		v := &routeValidator{name: routeLabel(&r, i)}
		if r.Name == "" {
			v.fail("name", errors.New("is required"))
		} else if prev, dup := seen[r.Name]; dup {
			v.fail("name", fmt.Errorf("duplicate name (also route #%d)", prev))
		} else {
			seen[r.Name] = i
		}
		v.Add(r.builderErrs)
		st := v.compile(&r, defaults, defs)
		st.index = i
		errs = append(errs, v.routeErrors()...)
		if v.Errors() == nil && r.IsEnabled() {
			r.state = st
			r.builderErrs = nil
			out = append(out, &r)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// compiledDefaults is Defaults.Security compiled once for all routes.
type compiledDefaults struct {
	allow, block *iplist.List
	sec          *compiledSecurity
}

func compileDefaults(d Defaults) (compiledDefaults, []error) {
	var c compiledDefaults
	if d.Security == nil {
		return c, nil
	}
	fe := &schema.Collector{Prefix: "defaults."}
	var err error
	if c.allow, err = iplist.Parse(d.Security.IPAllowList); err != nil {
		fe.Fail("security.ipAllowList", err)
	}
	if c.block, err = iplist.Parse(d.Security.IPBlockList); err != nil {
		fe.Fail("security.ipBlockList", err)
	}
	sec, fes := compileSecurity(d.Security)
	fe.Add(fes)
	c.sec = sec
	return c, fe.Errors().Unwrap()
}

func routeLabel(r *Route, i int) string {
	if r.Name != "" {
		return fmt.Sprintf("%q", r.Name)
	}
	return fmt.Sprintf("#%d", i)
}

// routeValidator collects the mistakes of one route with the shared
// schema.Collector; routeErrors labels them with the route.
type routeValidator struct {
	name string
	schema.Collector
}

// fail records a mistake in field (a path within the route).
func (v *routeValidator) fail(field string, err error) { v.Fail(field, err) }

// routeErrors returns the mistakes as RouteErrors naming the route.
func (v *routeValidator) routeErrors() []error {
	var errs []error
	for _, fe := range v.Errors() {
		errs = append(errs, &RouteError{Route: v.name, Field: fe.Field, Err: fe.Err})
	}
	return errs
}

func (v *routeValidator) compile(r *Route, defaults Defaults, defs compiledDefaults) *routeState {
	st := &routeState{allow: defs.allow, block: defs.block}
	v.checkPorts(r.Match.Ports)
	st.domains = v.compileDomains(r.Match.Domains)
	if len(r.Match.ClientIP) > 0 {
		l, err := iplist.Parse(r.Match.ClientIP)
		if err != nil {
			v.fail("match.clientIp", err)
		}
		st.clientIP = l
	}
	for i, name := range r.Match.TLSVersion {
		ver, ok := tlsVersionNames[name]
		if !ok {
			v.fail(fmt.Sprintf("match.tlsVersion[%d]", i), fmt.Errorf("unknown TLS version %q (want TLSv1.0, TLSv1.1, TLSv1.2 or TLSv1.3)", name))
		}
		st.tlsVersion = append(st.tlsVersion, ver)
	}
	st.needsHello = len(st.domains) > 0 || len(st.tlsVersion) > 0
	st.tls = v.checkTLS(r.Action.TLS)
	st.targets = v.checkAction(&r.Action, defaults.Target)
	st.ipTargets = len(st.targets) > 0
	for i := range st.targets {
		t := &st.targets[i]
		st.ipTargets = st.ipTargets && ipTarget(t)
		st.targetFuncs = st.targetFuncs || t.HostFunc != nil || t.PortFunc != nil
	}
	st.http = v.compileHTTP(r, st)
	st.lb = v.compileLB(r, st.targets)
	if s := r.Security; s != nil {
		if len(s.IPAllowList) > 0 {
			l, err := iplist.Parse(s.IPAllowList)
			if err != nil {
				v.fail("security.ipAllowList", err)
			}
			st.allow = l
		}
		if len(s.IPBlockList) > 0 {
			l, err := iplist.Parse(s.IPBlockList)
			if err != nil {
				v.fail("security.ipBlockList", err)
			}
			st.block = l
		}
	}
	st.kernel = v.compileKernel(r, st, defaults)
	sec, fes := compileRouteSecurity(defs.sec, r.Security)
	v.Add(fes)
	st.sec = sec
	// Fail closed: HTTP auth and rate limits on a route that never sees
	// HTTP requests would be silently skipped.
	if sec.hasHTTPChecks() {
		switch {
		case r.Action.TLS != nil && r.Action.TLS.Mode == TLSPassthrough:
			v.fail("security", errors.New("basicAuth, jwtAuth and rateLimit need HTTP: use a plain HTTP or TLS-terminating route, not passthrough"))
		case st.tls != nil && r.Action.Type == ActionSocketHandler:
			v.fail("security", errors.New("basicAuth, jwtAuth and rateLimit need HTTP: a TLS-terminating socket handler gets the raw decrypted stream"))
		}
		// The route must never take a raw stream, or anything the sniffer
		// does not recognise as HTTP would bypass the checks.
		if st.http == nil {
			st.http = &httpRoute{backend: "http1"}
		}
		st.http.httpOnly = true
	}
	st.sendPP = v.compileSendProxy(r, st)
	return st
}

func (v *routeValidator) checkPorts(ports PortSpec) {
	if len(ports) == 0 {
		v.fail("match.ports", errors.New("at least one port is required"))
	}
	for i, pr := range ports {
		field := fmt.Sprintf("match.ports[%d]", i)
		switch {
		case pr.From < 1 || pr.From > 65535:
			v.fail(field, fmt.Errorf("port %d out of range 1-65535", pr.From))
		case pr.To < 1 || pr.To > 65535:
			v.fail(field, fmt.Errorf("port %d out of range 1-65535", pr.To))
		case pr.From > pr.To:
			v.fail(field, fmt.Errorf("range %d-%d is reversed", pr.From, pr.To))
		}
	}
}

func (v *routeValidator) compileDomains(domains []string) []domainPattern {
	var out []domainPattern
	for i, d := range domains {
		field := fmt.Sprintf("match.domains[%d]", i)
		norm := normalizeDomain(d)
		if norm == "" {
			v.fail(field, errors.New("empty domain"))
			continue
		}
		if err := checkDomainSyntax(norm); err != nil {
			v.fail(field, fmt.Errorf("invalid domain %q: %w", d, err))
			continue
		}
		g, err := compileGlob(norm)
		if err != nil {
			v.fail(field, fmt.Errorf("invalid domain pattern %q: %w", d, err))
			continue
		}
		p := domainPattern{text: norm, glob: g, literal: len(norm)}
		if g != nil {
			p.literal = len(norm) - strings.Count(norm, "*") - strings.Count(norm, "?")
		}
		out = append(out, p)
	}
	return out
}

func (v *routeValidator) checkTLS(t *RouteTLS) *routeTLS {
	if t == nil {
		return nil
	}
	switch t.Mode {
	case TLSPassthrough:
		if t.Certificate != nil || len(t.Versions) > 0 || t.Ciphers != "" || t.Backend != nil || t.ACME != nil {
			v.fail("action.tls", errors.New("certificate, versions, ciphers, backend and acme need a terminating mode, not passthrough"))
		}
		return nil
	case TLSTerminate, TLSTerminateAndReencrypt:
		v.checkRouteACME(t)
		return v.compileTLS(t)
	case "":
		v.fail("action.tls.mode", errors.New("is required when action.tls is set"))
	default:
		v.fail("action.tls.mode", fmt.Errorf("unknown mode %q (want passthrough, terminate or terminate-and-reencrypt)", t.Mode))
	}
	return nil
}

// checkAction validates the action and returns its targets in the order
// they are tried, with the default target applied.
func (v *routeValidator) checkAction(a *RouteAction, def *Target) []Target {
	switch a.Type {
	case ActionForward:
		targets := a.Targets
		if len(targets) == 0 && def != nil && a.Redirect == nil {
			targets = []Target{*def}
		}
		if len(targets) == 0 && a.Redirect != nil {
			return nil // answered by the proxy: no backend needed
		}
		if len(targets) == 0 {
			v.fail("action.targets", errors.New("a forward action needs at least one target"))
			return nil
		}
		for i := range targets {
			v.checkTarget(fmt.Sprintf("action.targets[%d]", i), &targets[i])
		}
		sorted := slices.Clone(targets)
		slices.SortStableFunc(sorted, func(x, y Target) int { return y.Priority - x.Priority })
		return sorted
	case ActionSocketHandler:
		if a.SocketHandler == nil {
			v.fail("action.socketHandler", errors.New("a socket-handler action needs a SocketHandler func (set in code; config files cannot name one)"))
		}
	case "":
		v.fail("action.type", errors.New("is required (forward or socket-handler)"))
	default:
		v.fail("action.type", fmt.Errorf("unknown type %q (want forward or socket-handler)", a.Type))
	}
	return nil
}

func (v *routeValidator) checkTarget(field string, t *Target) {
	if t.HostFunc == nil {
		if len(t.Host) == 0 {
			v.fail(field+".host", errors.New("is required"))
		}
		for i, h := range t.Host {
			if err := checkHostSyntax(h); err != nil {
				v.fail(fmt.Sprintf("%s.host[%d]", field, i), fmt.Errorf("invalid host %q: %w", h, err))
			}
		}
	}
	if t.PortFunc == nil && t.Port != PreservePort && (t.Port < 1 || t.Port > 65535) {
		v.fail(field+".port", fmt.Errorf("port %d out of range 1-65535 (or \"preserve\")", t.Port))
	}
}

// ipTarget reports a target the loop can dial by itself: fixed hosts, each an IP literal.
func ipTarget(t *Target) bool {
	if t.HostFunc != nil || t.PortFunc != nil || len(t.Host) == 0 {
		return false
	}
	for _, h := range t.Host {
		if _, err := netip.ParseAddr(h); err != nil {
			return false
		}
	}
	return true
}
