package smartproxy

import "strings"

// HTTP route constructors named after the TypeScript SmartProxy's
// helpers. Each returns a plain Route to adjust before use; mistakes
// (such as a bad address) are reported by New or UpdateRoutes.

// HTTPRoute proxies plain HTTP on port 80 for domains (matched against
// the Host header) to target ("host:port").
func HTTPRoute(name string, domains []string, target string) Route {
	return NewRoute(name).Ports(80).Domains(domains...).ForwardTo(target).Route()
}

// HTTPSTerminateRoute terminates TLS on port 443 for domains and proxies
// the HTTP requests (HTTP/2 or HTTP/1.1 to clients) to target, over TLS
// again when reencrypt is set. cert nil takes certificates from
// Options.Certificates by SNI. The route offers ALPN h2 and http/1.1
// because options.backendProtocol marks it as HTTP.
func HTTPSTerminateRoute(name string, domains []string, target string, cert *CertificateSpec, reencrypt bool) Route {
	b := NewRoute(name).Ports(443).Domains(domains...).ForwardTo(target).BackendProtocol(BackendHTTP1)
	if reencrypt {
		return b.TLSReencrypt(cert, nil).Route()
	}
	return b.TLSTerminate(cert).Route()
}

// HTTPToHTTPSRedirectRoute answers plain HTTP on port 80 for domains with
// 301 to https://{domain}{path} (the query is kept).
func HTTPToHTTPSRedirectRoute(name string, domains []string) Route {
	return NewRoute(name).Ports(80).Domains(domains...).Redirect("https://{domain}{path}", 301).Route()
}

// HTTPSServer is the usual pair: HTTPSTerminateRoute on 443 and, named
// name+"-redirect", HTTPToHTTPSRedirectRoute on 80.
func HTTPSServer(name string, domains []string, target string, cert *CertificateSpec) []Route {
	return []Route{
		HTTPSTerminateRoute(name, domains, target, cert, false),
		HTTPToHTTPSRedirectRoute(name+"-redirect", domains),
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
// and everything below it) for domains on port 80 to target. With cors
// set, responses carry permissive CORS headers (any origin, the common
// methods and headers); preflight requests are answered by the backend.
func APIRoute(name string, domains []string, pathPrefix string, target string, cors bool) Route {
	b := NewRoute(name).Ports(80).Domains(domains...).ForwardTo(target).
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
// path for domains on port 80 to target.
func WebSocketRoute(name string, domains []string, path string, target string) Route {
	return NewRoute(name).Ports(80).Domains(domains...).ForwardTo(target).Path(path).WebSocket(true).Route()
}
