package smartproxy_test

import (
	"testing"

	"github.com/gosmartproxy/smartproxy"
	"github.com/stretchr/testify/require"
)

// The helpers listen on 80/443 unless told otherwise; an edge service on
// other ports moves them, and the redirect keeps a non-443 port.
func TestHelpersTakePorts(t *testing.T) {
	t.Parallel()
	routes := smartproxy.HTTPSServer("app", []string{"app.test"}, "10.0.0.5:8080", nil,
		smartproxy.HTTPPort(8080), smartproxy.HTTPSPort(8443))
	require.Equal(t, smartproxy.Ports(8443), routes[0].Match.Ports)
	require.Equal(t, smartproxy.Ports(8080), routes[1].Match.Ports)
	require.Equal(t, "https://{domain}:8443{path}", routes[1].Action.Redirect.To)

	def := smartproxy.HTTPToHTTPSRedirectRoute("r", []string{"a.test"})
	require.Equal(t, smartproxy.Ports(80), def.Match.Ports)
	require.Equal(t, "https://{domain}{path}", def.Action.Redirect.To, "443 is left out of the URL")

	require.Equal(t, smartproxy.Ports(9000), smartproxy.HTTPRoute("h", nil, "b:80", smartproxy.HTTPPort(9000)).Match.Ports)
	require.Equal(t, smartproxy.Ports(9443), smartproxy.HTTPSPassthroughRoute("p", []string{"a.test"}, "b:443", smartproxy.HTTPSPort(9443)).Match.Ports)
	require.Equal(t, smartproxy.Ports(81), smartproxy.APIRoute("api", nil, "/api", "b:80", false, smartproxy.HTTPPort(81)).Match.Ports)
	require.Equal(t, smartproxy.Ports(82), smartproxy.WebSocketRoute("ws", nil, "/ws", "b:80", smartproxy.HTTPPort(82)).Match.Ports)
}

// A route table is built from CompileRoutes' result; routes built by hand
// are refused with an error instead of a panic.
func TestRouteTableFromCompiledRoutes(t *testing.T) {
	t.Parallel()
	routes := []smartproxy.Route{
		smartproxy.NewRoute("api").Ports(443).Domains("api.test").TLSPassthrough().ForwardTo("10.0.0.1:443").Route(),
		smartproxy.NewRoute("any").Ports(443).TLSPassthrough().ForwardTo("10.0.0.2:443").Route(),
	}
	raw := []*smartproxy.Route{&routes[0], &routes[1]}
	_, err := smartproxy.NewRouteTable(raw)
	require.ErrorContains(t, err, "routes[0] is not compiled")

	compiled, err := smartproxy.CompileRoutes(routes, smartproxy.Defaults{})
	require.NoError(t, err)
	table, err := smartproxy.NewRouteTable(compiled)
	require.NoError(t, err)
	require.Equal(t, "api", table.Match(&smartproxy.MatchQuery{Port: 443, Domain: "api.test", TLSVersion: 0x0304}).Name)
	require.Equal(t, "any", table.Match(&smartproxy.MatchQuery{Port: 443, Domain: "www.test", TLSVersion: 0x0304}).Name)

	_, err = smartproxy.CompileRoutes([]smartproxy.Route{smartproxy.NewRoute("bad").Ports(70000).ForwardTo("x:1").Route()}, smartproxy.Defaults{})
	require.ErrorContains(t, err, `route "bad": match.ports[0]`)
}
