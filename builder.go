package smartproxy

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"

	"github.com/gosmartproxy/smartproxy/schema"
)

// RouteBuilder builds a Route fluently:
//
//	smartproxy.NewRoute("api").Ports(443).Domains("*.example.com").
//		TLSPassthrough().ForwardTo("10.0.0.5:443").Route()
//
// Methods never panic: mistakes are kept in the built Route and reported,
// with the route name and field, by New or UpdateRoutes.
type RouteBuilder struct {
	r Route
	// errs collects the builder's mistakes (field paths within the
	// route); Route hands a copy to every route built.
	errs schema.Collector
}

// NewRoute starts a route with the given name. The action defaults to
// forward.
func NewRoute(name string) *RouteBuilder {
	return &RouteBuilder{r: Route{Name: name, Action: RouteAction{Type: ActionForward}}}
}

func (b *RouteBuilder) fail(field string, err error) *RouteBuilder {
	b.errs.Fail(field, err)
	return b
}

// Ports adds single ports to match.
func (b *RouteBuilder) Ports(ports ...int) *RouteBuilder {
	b.r.Match.Ports = append(b.r.Match.Ports, Ports(ports...)...)
	return b
}

// PortRange adds an inclusive port range to match.
func (b *RouteBuilder) PortRange(from, to int) *RouteBuilder {
	b.r.Match.Ports = append(b.r.Match.Ports, PortRange{From: from, To: to})
	return b
}

// PortSpec adds every port and range of spec to match.
func (b *RouteBuilder) PortSpec(spec PortSpec) *RouteBuilder {
	b.r.Match.Ports = append(b.r.Match.Ports, spec...)
	return b
}

// Domains adds SNI domain patterns to match.
func (b *RouteBuilder) Domains(domains ...string) *RouteBuilder {
	b.r.Match.Domains = append(b.r.Match.Domains, domains...)
	return b
}

// ClientIPs restricts the route to client address patterns.
func (b *RouteBuilder) ClientIPs(patterns ...string) *RouteBuilder {
	b.r.Match.ClientIP = append(b.r.Match.ClientIP, patterns...)
	return b
}

// TLSVersions restricts the route to clients offering these versions
// ("TLSv1.2", "TLSv1.3").
func (b *RouteBuilder) TLSVersions(versions ...string) *RouteBuilder {
	b.r.Match.TLSVersion = append(b.r.Match.TLSVersion, versions...)
	return b
}

// Priority sets the route's priority (higher first).
func (b *RouteBuilder) Priority(p int) *RouteBuilder { b.r.Priority = p; return b }

// Description sets the route's description.
func (b *RouteBuilder) Description(d string) *RouteBuilder { b.r.Description = d; return b }

// Tags adds labels to the route.
func (b *RouteBuilder) Tags(tags ...string) *RouteBuilder {
	b.r.Tags = append(b.r.Tags, tags...)
	return b
}

// Disabled keeps the route in the configuration but out of matching.
func (b *RouteBuilder) Disabled() *RouteBuilder {
	off := false
	b.r.Enabled = &off
	return b
}

// TLSPassthrough routes by SNI and leaves TLS to the backend.
func (b *RouteBuilder) TLSPassthrough() *RouteBuilder {
	b.r.Action.TLS = &RouteTLS{Mode: TLSPassthrough}
	return b
}

// TLSTerminate terminates TLS in the proxy with cert (nil: the proxy's
// CertificateStore chooses by SNI).
func (b *RouteBuilder) TLSTerminate(cert *CertificateSpec) *RouteBuilder {
	b.r.Action.TLS = &RouteTLS{Mode: TLSTerminate, Certificate: cert}
	return b
}

// TLSReencrypt terminates TLS with cert and opens a new TLS connection to
// the target, verified as backend says (nil: system roots, target name).
func (b *RouteBuilder) TLSReencrypt(cert *CertificateSpec, backend *BackendTLS) *RouteBuilder {
	b.r.Action.TLS = &RouteTLS{Mode: TLSTerminateAndReencrypt, Certificate: cert, Backend: backend}
	return b
}

// Path matches the HTTP request path ("/api/*", "/users/:id").
func (b *RouteBuilder) Path(pattern string) *RouteBuilder { b.r.Match.Path = pattern; return b }

// Header matches an HTTP request header against a glob.
func (b *RouteBuilder) Header(name, glob string) *RouteBuilder {
	if b.r.Match.Headers == nil {
		b.r.Match.Headers = make(map[string]string)
	}
	b.r.Match.Headers[name] = glob
	return b
}

// Methods restricts the route to HTTP methods.
func (b *RouteBuilder) Methods(methods ...string) *RouteBuilder {
	b.r.Match.Method = append(b.r.Match.Method, methods...)
	return b
}

// LoadBalance chooses the algorithm among the target's hosts ("" means
// AlgorithmRoundRobin) and, optionally, active health checks.
func (b *RouteBuilder) LoadBalance(algorithm Algorithm, check *HealthCheck) *RouteBuilder {
	b.r.Action.LoadBalancing = &LoadBalancing{Algorithm: algorithm, HealthCheck: check}
	return b
}

// ForwardTo sets one target from "host:port" addresses. Several addresses
// must share one port and are balanced by the route's load-balancing
// algorithm (round-robin unless LoadBalance says otherwise); an address
// without a port forwards to the port the client connected to.
func (b *RouteBuilder) ForwardTo(addrs ...string) *RouteBuilder {
	t, err := targetFromAddrs(addrs...)
	if err != nil {
		return b.fail("action.targets", fmt.Errorf("ForwardTo: %w", err))
	}
	return b.Target(t)
}

// Target adds a target (use it for HostFunc/PortFunc or priorities).
func (b *RouteBuilder) Target(t Target) *RouteBuilder {
	b.r.Action.Type = ActionForward
	b.r.Action.Targets = append(b.r.Action.Targets, t)
	return b
}

// HandleWith makes the route a socket-handler route.
func (b *RouteBuilder) HandleWith(h SocketHandler) *RouteBuilder {
	b.r.Action.Type = ActionSocketHandler
	b.r.Action.SocketHandler = h
	return b
}

// AllowIPs admits only clients matching the patterns.
func (b *RouteBuilder) AllowIPs(patterns ...string) *RouteBuilder {
	s := b.security()
	s.IPAllowList = append(s.IPAllowList, patterns...)
	return b
}

// BlockIPs rejects clients matching the patterns.
func (b *RouteBuilder) BlockIPs(patterns ...string) *RouteBuilder {
	s := b.security()
	s.IPBlockList = append(s.IPBlockList, patterns...)
	return b
}

// MaxConnections caps the route's concurrent connections.
func (b *RouteBuilder) MaxConnections(n int) *RouteBuilder {
	b.security().MaxConnections = n
	return b
}

// MaxConnectionsPerIP caps one client IP's concurrent connections on the
// route.
func (b *RouteBuilder) MaxConnectionsPerIP(n int) *RouteBuilder {
	b.security().MaxConnectionsPerIP = n
	return b
}

// ConnectionRateLimit caps one client IP's new connections to the route
// per sliding minute.
func (b *RouteBuilder) ConnectionRateLimit(perMinute int) *RouteBuilder {
	b.security().ConnectionRateLimitPerMinute = perMinute
	return b
}

// BasicAuth requires HTTP Basic credentials (see [BasicAuth]).
func (b *RouteBuilder) BasicAuth(a *BasicAuth) *RouteBuilder {
	b.security().BasicAuth = a
	return b
}

// JWTAuth requires a valid JSON Web Token (see [JWTAuth]).
func (b *RouteBuilder) JWTAuth(a *JWTAuth) *RouteBuilder {
	b.security().JWTAuth = a
	return b
}

// RateLimit caps the route's HTTP requests per key (see [RateLimit]).
func (b *RouteBuilder) RateLimit(l *RateLimit) *RouteBuilder {
	b.security().RateLimit = l
	return b
}

// Security replaces the route's whole security block with a copy of s
// (nil: none); the other security methods then adjust it.
func (b *RouteBuilder) Security(s *RouteSecurity) *RouteBuilder {
	b.r.Security = nil
	if s != nil {
		cp := *s
		b.r.Security = &cp
	}
	return b
}

func (b *RouteBuilder) security() *RouteSecurity {
	if b.r.Security == nil {
		b.r.Security = &RouteSecurity{}
	}
	return b.r.Security
}

// Route returns the built route. The builder can go on being used; later
// calls do not change routes already returned.
func (b *RouteBuilder) Route() Route {
	r := b.r
	r.Match.Ports = append(PortSpec(nil), r.Match.Ports...)
	r.Match.Domains = append(StringList(nil), r.Match.Domains...)
	r.Match.Method = append([]string(nil), r.Match.Method...)
	r.Match.Headers = maps.Clone(r.Match.Headers)
	r.Action.Targets = append([]Target(nil), r.Action.Targets...)
	r.builderErrs = slices.Clone(b.errs.Errors())
	if r.Security != nil {
		s := *r.Security
		s.IPAllowList = slices.Clone(s.IPAllowList)
		s.IPBlockList = slices.Clone(s.IPBlockList)
		r.Security = &s
	}
	cloneHTTPAction(&r.Action)
	return r
}

// targetFromAddrs parses "host:port" (or bare "host") addresses into one
// target.
func targetFromAddrs(addrs ...string) (Target, error) {
	if len(addrs) == 0 {
		return Target{}, fmt.Errorf("no address given")
	}
	var t Target
	for i, a := range addrs {
		host, port, err := splitTargetAddr(a)
		if err != nil {
			return Target{}, err
		}
		if i > 0 && port != t.Port {
			return Target{}, fmt.Errorf("addresses %q and %q have different ports; use one Target per port", addrs[0], a)
		}
		t.Host = append(t.Host, host)
		t.Port = port
	}
	return t, nil
}

func splitTargetAddr(a string) (string, TargetPort, error) {
	host, portStr, err := net.SplitHostPort(a)
	if err != nil {
		// No port: a bare host (IPv6 may come bracketed) preserves the port.
		if h := trimBrackets(a); h != "" && net.ParseIP(h) != nil || isHostName(a) {
			return trimBrackets(a), PreservePort, nil
		}
		return "", 0, fmt.Errorf("invalid address %q: %w", a, err)
	}
	if portStr == "preserve" {
		return host, PreservePort, nil
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("invalid port in address %q", a)
	}
	return host, TargetPort(port), nil
}

func trimBrackets(s string) string {
	if len(s) > 1 && s[0] == '[' && s[len(s)-1] == ']' {
		return s[1 : len(s)-1]
	}
	return s
}

func isHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, c := range s {
		if !(c == '-' || c == '.' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}
