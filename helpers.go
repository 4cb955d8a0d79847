package smartproxy

// Route constructors named after the TypeScript SmartProxy's helpers. Each
// returns a plain Route that can be adjusted before use; mistakes (such as
// a bad address) are reported by New or UpdateRoutes.

// HTTPSPassthroughRoute forwards TLS connections on port 443 (or
// HTTPSPort) for the given domains to target ("host:port") without
// terminating TLS.
func HTTPSPassthroughRoute(name string, domains []string, target string, opts ...HelperOption) Route {
	return NewRoute(name).Ports(portsOf(opts).https).Domains(domains...).TLSPassthrough().ForwardTo(target).Route()
}

// SocketHandlerRoute hands connections on ports (and, if given, for
// domains, which needs TLS SNI) to a Go function.
func SocketHandlerRoute(name string, ports PortSpec, domains []string, h SocketHandler) Route {
	return NewRoute(name).PortSpec(ports).Domains(domains...).HandleWith(h).Route()
}

// PortRangeRoute forwards every port in ports to target. A target without
// a port ("10.0.0.5") keeps the port the client connected to.
func PortRangeRoute(name string, ports PortSpec, target string) Route {
	return NewRoute(name).PortSpec(ports).ForwardTo(target).Route()
}

// PortMappingRoute forwards each port in ports to host on the port that
// mapPort returns for it, e.g. func(p int) int { return p + 1000 }.
func PortMappingRoute(name string, ports PortSpec, host string, mapPort func(port int) int) Route {
	return NewRoute(name).PortSpec(ports).Target(Target{
		Host:     StringList{host},
		PortFunc: func(rc *RouteContext) int { return mapPort(rc.Port) },
	}).Route()
}

// OffsetMappingRoute forwards each port in ports to host on port+offset.
func OffsetMappingRoute(name string, ports PortSpec, host string, offset int) Route {
	return PortMappingRoute(name, ports, host, func(p int) int { return p + offset })
}
