package smartproxy

import (
	"strconv"
	"strings"
)

// HTTP route constructors named after the TypeScript SmartProxy's
// helpers. Each returns a plain Route to adjust before use; mistakes
// (such as a bad address) are reported by New or UpdateRoutes.

// HelperOption adjusts what a route helper builds. The helpers listen on
// the standard ports unless told otherwise, so an edge service on other
// ports passes HTTPPort and HTTPSPort.
type HelperOption func(*helperPorts)

// helperPorts are the ports a helper builds for.
type helperPorts struct {
	http, https int
}

// HTTPPort makes the helpers' plain-HTTP routes (HTTPRoute, APIRoute,
// WebSocketRoute, HTTPToHTTPSRedirectRoute and HTTPSServer's redirect)
// listen on port instead of 80.
func HTTPPort(port int) HelperOption { return func(p *helperPorts) { p.http = port } }

// HTTPSPort makes the helpers' TLS routes (HTTPSTerminateRoute,
// HTTPSPassthroughRoute, HTTPSServer) listen on port instead of 443, and
// the redirect helpers send clients there: https://{domain}:port{path}.
func HTTPSPort(port int) HelperOption { return func(p *helperPorts) { p.https = port } }

func portsOf(opts []HelperOption) helperPorts {
	p := helperPorts{http: 80, https: 443}
	for _, o := range opts {
		o(&p)
	}
	return p
}

// httpsURL is the redirect template to the HTTPS port: the port is
// written unless it is 443, which a browser would otherwise not reach.
func (p helperPorts) httpsURL() string {
	if p.https == 443 {
		return "https://{domain}{path}"
	}
	return "https://{domain}:" + strconv.Itoa(p.https) + "{path}"
}

// HTTPRoute proxies plain HTTP on port 80 (or HTTPPort) for domains
// (matched against the Host header) to target ("host:port").
func HTTPRoute(name string, domains []string, target string, opts ...HelperOption) Route {
	return NewRoute(name).Ports(portsOf(opts).http).Domains(domains...).ForwardTo(target).Route()
}

// HTTPSTerminateRoute terminates TLS on port 443 (or HTTPSPort) for domains and proxies
// the HTTP requests (HTTP/2 or HTTP/1.1 to clients) to target, over TLS
// again when reencrypt is set. cert nil takes certificates from
// Options.Certificates by SNI. The route offers ALPN h2 and http/1.1
// because options.backendProtocol marks it as HTTP.
func HTTPSTerminateRoute(name string, domains []string, target string, cert *CertificateSpec, reencrypt bool, opts ...HelperOption) Route {
	b := NewRoute(name).Ports(portsOf(opts).https).Domains(domains...).ForwardTo(target).BackendProtocol(BackendHTTP1)
	if reencrypt {
		return b.TLSReencrypt(cert, nil).Route()
	}
	return b.TLSTerminate(cert).Route()
}

// HTTPToHTTPSRedirectRoute answers plain HTTP on port 80 (or HTTPPort)
// for domains with 301 to https://{domain}{path} (the query is kept), or
// to https://{domain}:port{path} with HTTPSPort other than 443.
func HTTPToHTTPSRedirectRoute(name string, domains []string, opts ...HelperOption) Route {
	p := portsOf(opts)
	return NewRoute(name).Ports(p.http).Domains(domains...).Redirect(p.httpsURL(), 301).Route()
}

// HTTPSServer is the usual pair: HTTPSTerminateRoute on 443 and, named
// name+"-redirect", HTTPToHTTPSRedirectRoute on 80 (HTTPSPort and
// HTTPPort move them; the redirect follows).
func HTTPSServer(name string, domains []string, target string, cert *CertificateSpec, opts ...HelperOption) []Route {
	return []Route{
		HTTPSTerminateRoute(name, domains, target, cert, false, opts...),
		HTTPToHTTPSRedirectRoute(name+"-redirect", domains, opts...),
	}
}

// LoadBalancerRoute balances the connections (or, for HTTP, the
// requests) on ports for domains over hosts, all on port. algorithm is
// an action.loadBalancing algorithm; "" means round-robin.
func LoadBalancerRoute(name string, domains []string, ports PortSpec, hosts []string, port int, algorithm Algorithm) Route {
	b := NewRoute(name).PortSpec(ports).Domains(domains...).
		Target(Target{Host: append(StringList(nil), hosts...), Port: TargetPort(port)})
	if algorithm != "" {
		b.LoadBalance(algorithm, nil)
	}
	return b.Route()
}

// APIRoute proxies the HTTP requests under pathPrefix ("/api" takes /api
// and everything below it) for domains on port 80 (or HTTPPort) to target. With cors
// set, responses carry permissive CORS headers (any origin, the common
// methods and headers); preflight requests are answered by the backend.
func APIRoute(name string, domains []string, pathPrefix string, target string, cors bool, opts ...HelperOption) Route {
	b := NewRoute(name).Ports(portsOf(opts).http).Domains(domains...).ForwardTo(target).
		Path(strings.TrimSuffix(pathPrefix, "/") + "/*")
	if cors {
		b.ResponseHeader("Access-Control-Allow-Origin", "*").
			ResponseHeader("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS").
			ResponseHeader("Access-Control-Allow-Headers", "Content-Type, Authorization").
			ResponseHeader("Access-Control-Max-Age", "86400")
	}
	return b.Route()
}

// WebSocketRoute proxies HTTP requests, WebSocket upgrades included, on
// path for domains on port 80 (or HTTPPort) to target.
func WebSocketRoute(name string, domains []string, path string, target string, opts ...HelperOption) Route {
	return NewRoute(name).Ports(portsOf(opts).http).Domains(domains...).ForwardTo(target).Path(path).WebSocket(true).Route()
}
