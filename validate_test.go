package smartproxy

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestValidationNamesRouteAndField(t *testing.T) {
	t.Parallel()
	handler := func(context.Context, net.Conn, *RouteContext) error { return nil }
	tests := []struct {
		name  string
		route Route
		want  string
	}{
		{"no name", fwd("").Ports(80).Route(), `route #0: name: is required`},
		{"port range", fwd("p").Ports(70000).Route(), `route "p": match.ports[0]: port 70000 out of range 1-65535`},
		{"port zero", fwd("p").Ports(0).Route(), `match.ports[0]: port 0 out of range`},
		{"reversed", fwd("p").PortRange(90, 80).Route(), `match.ports[0]: range 90-80 is reversed`},
		{"no ports", fwd("p").Route(), `route "p": match.ports: at least one port is required`},
		{"no targets", NewRoute("t").Ports(80).Route(), `route "t": action.targets: a forward action needs at least one target`},
		{"bad target port", NewRoute("t").Ports(80).Target(Target{Host: StringList{"a"}, Port: 0}).Route(), `route "t": action.targets[0].port: port 0 out of range`},
		{"empty host", NewRoute("t").Ports(80).Target(Target{Host: StringList{""}, Port: 80}).Route(), `action.targets[0].host[0]: invalid host ""`},
		{"no host", NewRoute("t").Ports(80).Target(Target{Port: 80}).Route(), `action.targets[0].host: is required`},
		{"bad builder addr", NewRoute("b").Ports(80).ForwardTo("a:1", "b:2").Route(), `route "b": action.targets: ForwardTo: addresses "a:1" and "b:2" have different ports`},
		{"unknown mode", Route{Name: "m", Match: RouteMatch{Ports: Ports(443)}, Action: RouteAction{Type: ActionForward, Targets: []Target{{Host: StringList{"a"}, Port: 1}}, TLS: &RouteTLS{Mode: "bogus"}}}, `route "m": action.tls.mode: unknown mode "bogus"`},
		{"valid forward", fwd("m").Ports(443).Route(), ""},
		{"unknown type", Route{Name: "ty", Match: RouteMatch{Ports: Ports(1)}, Action: RouteAction{Type: "redirect"}}, `route "ty": action.type: unknown type "redirect"`},
		{"handler missing", Route{Name: "h", Match: RouteMatch{Ports: Ports(1)}, Action: RouteAction{Type: ActionSocketHandler}}, `route "h": action.socketHandler: a socket-handler action needs a SocketHandler func`},
		{"handler ok", SocketHandlerRoute("h", Ports(1), nil, handler), ""},
		{"bad glob", fwd("g").Ports(443).Domains("[a-").Route(), `route "g": match.domains[0]: invalid domain pattern "[a-"`},
		{"empty domain", fwd("g").Ports(443).Domains("").Route(), `route "g": match.domains[0]: empty domain`},
		{"bad cidr", fwd("c").Ports(1).ClientIPs("10.0.0.0/33").Route(), `route "c": match.clientIp:`},
		{"bad allow", fwd("s").Ports(1).AllowIPs("nope").Route(), `route "s": security.ipAllowList:`},
		{"bad block", fwd("s").Ports(1).BlockIPs("1.2.3.4-1.2.3.1").Route(), `route "s": security.ipBlockList:`},
		{"negative max", fwd("s").Ports(1).MaxConnections(-1).Route(), `route "s": security.maxConnections: must be >= 0`},
		{"tls version", fwd("v").Ports(1).TLSVersions("SSLv3").Route(), `route "v": match.tlsVersion[0]: unknown TLS version "SSLv3"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := compileRoutes([]Route{tc.route}, Defaults{})
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
			var re *RouteError
			require.True(t, errors.As(err, &re))
		})
	}
}

func TestValidationOfTLSBlock(t *testing.T) {
	t.Parallel()
	term := func(tlsCfg RouteTLS) Route {
		r := fwd("term").Ports(443).Route()
		r.Action.TLS = &tlsCfg
		return r
	}
	tests := []struct {
		name string
		tls  RouteTLS
		want string
	}{
		{"terminate from store", RouteTLS{Mode: TLSTerminate}, ""},
		{"auto", RouteTLS{Mode: TLSTerminate, Certificate: &CertificateSpec{Auto: true}}, ""},
		{"half a pair", RouteTLS{Mode: TLSTerminate, Certificate: &CertificateSpec{Cert: "x"}}, `route "term": action.tls.certificate: needs cert and key`},
		{"bad pem", RouteTLS{Mode: TLSTerminate, Certificate: &CertificateSpec{Cert: "x", Key: "y"}}, `route "term": action.tls.certificate: tls: failed to find any PEM data`},
		{"missing file", RouteTLS{Mode: TLSTerminate, Certificate: &CertificateSpec{CertFile: "/nonexistent.pem", KeyFile: "/nonexistent.key"}}, `action.tls.certificate: certFile "/nonexistent.pem": no such file or directory`},
		{"version", RouteTLS{Mode: TLSTerminate, Versions: []string{"TLSv1.4"}}, `action.tls.versions[0]: unknown TLS version "TLSv1.4"`},
		{"insecure cipher", RouteTLS{Mode: TLSTerminate, Ciphers: "TLS_RSA_WITH_RC4_128_SHA"}, `action.tls.ciphers: cipher suite "TLS_RSA_WITH_RC4_128_SHA" is insecure`},
		{"unknown cipher", RouteTLS{Mode: TLSTerminate, Ciphers: "NOPE"}, `unknown cipher suite "NOPE"`},
		{"good ciphers", RouteTLS{Mode: TLSTerminate, Ciphers: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256:TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"}, ""},
		{"passthrough with cert", RouteTLS{Mode: TLSPassthrough, Certificate: &CertificateSpec{Auto: true}}, `action.tls: certificate, versions, ciphers, backend and acme need a terminating mode`},
		{"backend on terminate", RouteTLS{Mode: TLSTerminate, Backend: &BackendTLS{InsecureSkipVerify: true}}, `action.tls.backend: only applies to mode "terminate-and-reencrypt"`},
		{"backend bad ca", RouteTLS{Mode: TLSTerminateAndReencrypt, Backend: &BackendTLS{CA: "junk"}}, `action.tls.backend.ca: no PEM certificates found`},
		{"no mode", RouteTLS{}, `action.tls.mode: is required`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := compileRoutes([]Route{term(tc.tls)}, Defaults{})
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestValidationReportsEveryMistake(t *testing.T) {
	t.Parallel()
	_, err := New(Options{Routes: []Route{
		fwd("dup").Ports(1).Route(),
		fwd("dup").Ports(2).Route(),
		fwd("bad").Ports(0).Domains("").Route(),
	}})
	require.Error(t, err)
	msg := err.Error()
	require.Contains(t, msg, `route "dup": name: duplicate name (also route #0)`)
	require.Contains(t, msg, `route "bad": match.ports[0]`)
	require.Contains(t, msg, `route "bad": match.domains[0]`)
}

func TestDefaultTargetFillsForwardRoutes(t *testing.T) {
	t.Parallel()
	def := Target{Host: StringList{"10.0.0.1"}, Port: 8080}
	routes, err := compileRoutes([]Route{{Name: "d", Match: RouteMatch{Ports: Ports(80)}, Action: RouteAction{Type: ActionForward}}}, Defaults{Target: &def})
	require.NoError(t, err)
	addr, err := pick(routes[0], 0, &RouteContext{Port: 80}, nil, nil)
	require.NoError(t, err)
	require.Equal(t, "10.0.0.1:8080", addr)
}

func TestPickTarget(t *testing.T) {
	t.Parallel()
	routes, err := compileRoutes([]Route{
		NewRoute("rr").Ports(80).ForwardTo("a:1", "b:1", "c:1").Route(),
		NewRoute("preserve").Ports(8000).ForwardTo("10.0.0.9").Route(),
		OffsetMappingRoute("offset", PortsRange(3000, 3010), "10.0.0.8", 1000),
		NewRoute("prio").Ports(81).Target(Target{Host: StringList{"low"}, Port: 1}).Target(Target{Host: StringList{"high"}, Port: 2, Priority: 5}).Route(),
		NewRoute("v6").Ports(82).ForwardTo("[2001:db8::1]:443").Route(),
	}, Defaults{})
	require.NoError(t, err)
	var got []string
	for range 4 {
		a, err := pick(routes[0], 0, &RouteContext{Port: 80}, nil, nil)
		require.NoError(t, err)
		got = append(got, a)
	}
	require.Equal(t, []string{"a:1", "b:1", "c:1", "a:1"}, got)
	a, _ := pick(routes[1], 0, &RouteContext{Port: 8000}, nil, nil)
	require.Equal(t, "10.0.0.9:8000", a)
	a, _ = pick(routes[2], 0, &RouteContext{Port: 3005}, nil, nil)
	require.Equal(t, "10.0.0.8:4005", a)
	a, _ = pick(routes[3], 0, &RouteContext{Port: 81}, nil, nil)
	require.Equal(t, "high:2", a)
	a, _ = pick(routes[4], 0, &RouteContext{Port: 82}, nil, nil)
	require.Equal(t, "[2001:db8::1]:443", a)
}

func TestBuilderRouteIsACopy(t *testing.T) {
	t.Parallel()
	b := fwd("c").Ports(1)
	r1 := b.Route()
	b.Ports(2).AllowIPs("10.0.0.1")
	r2 := b.Route()
	require.Len(t, r1.Match.Ports, 1)
	require.Nil(t, r1.Security)
	require.Len(t, r2.Match.Ports, 2)
}

func TestValidationOfHTTPFields(t *testing.T) {
	t.Parallel()
	with := func(f func(r *Route)) Route {
		r := fwd("h").Ports(80).Route()
		f(&r)
		return r
	}
	no := false
	tests := []struct {
		name  string
		route Route
		want  string
	}{
		{"path ok", with(func(r *Route) { r.Match.Path = "/users/:id/*" }), ""},
		{"bad path", with(func(r *Route) { r.Match.Path = "users" }), `route "h": match.path: path pattern "users" must start with '/'`},
		{"empty param", with(func(r *Route) { r.Match.Path = "/a/:" }), `match.path: path pattern "/a/:": empty parameter name`},
		{"bad header glob", with(func(r *Route) { r.Match.Headers = map[string]string{"X-A": "[a-"} }), `route "h": match.headers.X-A: invalid pattern "[a-"`},
		{"bad header name", with(func(r *Route) { r.Match.Headers = map[string]string{"X A": "v"} }), `match.headers.X A: invalid header name`},
		{"bad method", with(func(r *Route) { r.Match.Method = []string{"GET", "FETCH"} }), `route "h": match.method[1]: unknown HTTP method "FETCH"`},
		{"bad rewrite", with(func(r *Route) { r.Action.Rewrite = &URLRewrite{Pattern: "(", Target: "/x"} }), `route "h": action.rewrite.pattern: error parsing regexp`},
		{"rewrite target", with(func(r *Route) { r.Action.Rewrite = &URLRewrite{Pattern: "^/a"} }), `action.rewrite.target: is required`},
		{"redirect status", with(func(r *Route) { r.Action.Redirect = &Redirect{To: "https://x", Status: 200} }), `route "h": action.redirect.status: status 200 is not a redirect`},
		{"redirect to", with(func(r *Route) { r.Action.Redirect = &Redirect{} }), `action.redirect.to: is required`},
		{"redirect without targets", Route{Name: "r", Match: RouteMatch{Ports: Ports(80)}, Action: RouteAction{Type: ActionForward, Redirect: &Redirect{To: "https://{domain}"}}}, ""},
		{"backend protocol", with(func(r *Route) { r.Action.Options = &ActionOptions{BackendProtocol: "spdy"} }), `route "h": action.options.backendProtocol: unknown protocol "spdy"`},
		{"h2 needs reencrypt", with(func(r *Route) { r.Action.Options = &ActionOptions{BackendProtocol: "h2"} }), `action.options.backendProtocol: "h2" needs tls.mode "terminate-and-reencrypt"`},
		{"host header off", with(func(r *Route) { r.Action.Options = &ActionOptions{RewriteHostHeader: &no, BackendProtocol: "h2c"} }), ""},
		{"header template", with(func(r *Route) { r.Action.Headers = &HeaderActions{Request: map[string]string{"X-A": "a\nb"}} }), `action.headers.request.X-A: value must not contain line breaks`},
		{"target match port", with(func(r *Route) { r.Action.Targets[0].Match = &TargetMatch{Ports: []int{0}} }), `route "h": action.targets[0].match.ports[0]: port 0 out of range`},
		{"target match path", with(func(r *Route) { r.Action.Targets[0].Match = &TargetMatch{Path: "x"} }), `action.targets[0].match.path:`},
		{"passthrough path", with(func(r *Route) { r.Match.Path = "/a"; r.Action.TLS = &RouteTLS{Mode: TLSPassthrough} }), `action.tls.mode: HTTP matching and HTTP actions need a terminating TLS mode`},
		{"handler without HTTP", SocketHandlerRoute("s", Ports(80), nil, EchoHandler()), ""},
		{"negative ping", with(func(r *Route) { r.Action.WebSocket = &WebSocketOptions{PingInterval: -1} }), `action.websocket: pingInterval and pingTimeout must not be negative`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := compileRoutes([]Route{tc.route}, Defaults{})
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.want)
		})
	}
	h := SocketHandlerRoute("s", Ports(80), nil, EchoHandler())
	h.Action.Headers = &HeaderActions{Request: map[string]string{"X-A": "1"}}
	_, err := compileRoutes([]Route{h}, Defaults{})
	require.ErrorContains(t, err, `route "s": action: HTTP actions (options, headers, rewrite, redirect, websocket, target match) need a forward action`)
}

func TestBuilderHTTPAndTLS(t *testing.T) {
	t.Parallel()
	b := NewRoute("api").Ports(443).Domains("api.test").TLSTerminate(nil).
		Path("/v1/*").Header("X-Tenant", "a*").Methods("GET").
		LoadBalance("least-connections", nil).ForwardTo("10.0.0.1:80", "10.0.0.2:80")
	r := b.Route()
	b.Header("X-Other", "b")
	require.Len(t, r.Match.Headers, 1, "later builder calls must not change a built route")
	routes, err := compileRoutes([]Route{r}, Defaults{})
	require.NoError(t, err)
	require.NotNil(t, routes[0].state.tls)
	require.NotNil(t, routes[0].state.http)
	_, err = compileRoutes([]Route{NewRoute("bad").Ports(80).Path("no-slash").ForwardTo("a:1").Route()}, Defaults{})
	require.ErrorContains(t, err, `route "bad": match.path`)
}
