package smartproxy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy"
	"github.com/gosmartproxy/smartproxy/auth"
	"github.com/gosmartproxy/smartproxy/connection"
)

// Black-box checks that the proxy's pluggable parts can be supplied from
// another package, as their docs promise: a RouteMatcher written from
// scratch, and a ConnectionManager that wraps connection.Manager.

// portMatcher routes by port alone, with no RouteTable inside.
type portMatcher struct{ byPort map[int]*smartproxy.Route }

func (m portMatcher) Match(q *smartproxy.MatchQuery) *smartproxy.Route { return m.byPort[q.Port] }

// countingManager wraps the default manager and counts admissions; it
// refuses clients from 198.51.100.0/24 itself, before the manager sees
// them.
type countingManager struct {
	*connection.Manager
	opened atomic.Int64
}

var errRefused = fmt.Errorf("refused by the wrapper")

func (c *countingManager) Open(client netip.AddrPort, localPort int, closer io.Closer) (*connection.Record, error) {
	if netip.MustParsePrefix("198.51.100.0/24").Contains(client.Addr()) {
		return nil, errRefused
	}
	c.opened.Add(1)
	return c.Manager.Open(client, localPort, closer)
}

// namer answers every connection with the route's name.
func namer(_ context.Context, conn net.Conn, rc *smartproxy.RouteContext) error {
	_, err := fmt.Fprintln(conn, rc.RouteName)
	return err
}

// askRoute runs one in-memory connection from client through p on port
// and returns what it read until the proxy closed it.
func askRoute(t *testing.T, p *smartproxy.Proxy, client string, port int) string {
	t.Helper()
	c, s := net.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- p.ServeConn(clientConn{Conn: s, addr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(client))}, port)
	}()
	got, err := io.ReadAll(bufio.NewReader(c))
	require.NoError(t, err)
	require.NoError(t, <-done)
	_ = c.Close()
	return string(got)
}

func TestPluggablePartsFromOutside(t *testing.T) {
	var built atomic.Int64
	factory := func(routes []*smartproxy.Route) (smartproxy.RouteMatcher, error) {
		built.Add(1)
		m := portMatcher{byPort: map[int]*smartproxy.Route{}}
		for _, r := range routes {
			r.Match.Ports.Each(func(port int) bool { m.byPort[port] = r; return true })
		}
		return m, nil
	}
	inner, err := connection.NewManager(connection.Config{})
	require.NoError(t, err)
	conns := &countingManager{Manager: inner}
	p, err := smartproxy.New(smartproxy.Options{
		Logger:      quiet,
		Matcher:     factory,
		Connections: conns,
		Routes: []smartproxy.Route{
			smartproxy.SocketHandlerRoute("seven", smartproxy.Ports(7000), nil, namer),
			smartproxy.SocketHandlerRoute("eight", smartproxy.Ports(8000), nil, namer),
		},
	})
	require.NoError(t, err)
	defer func() { require.NoError(t, p.Stop(context.Background())) }()

	require.Equal(t, "eight\n", askRoute(t, p, "192.0.2.1:5000", 8000))
	require.Equal(t, "seven\n", askRoute(t, p, "192.0.2.1:5001", 7000))
	require.Empty(t, askRoute(t, p, "198.51.100.7:5002", 7000), "the wrapper's own refusal closes the connection")
	require.Positive(t, built.Load())
	require.EqualValues(t, 2, conns.opened.Load())
	require.Equal(t, 0, conns.Active(), "every record went back to the wrapped manager")
	require.EqualValues(t, 2, conns.Snapshot().Total)
}

// ParseConfig reads the formats it names and refuses any other.
func TestParseConfigFormat(t *testing.T) {
	for _, f := range []smartproxy.ConfigFormat{smartproxy.FormatJSON, smartproxy.FormatYAML} {
		_, err := smartproxy.ParseConfig([]byte(`{"routes": []}`), f) // JSON is YAML too
		require.NoError(t, err, f)
	}
	_, err := smartproxy.ParseConfig([]byte(`{"routes": []}`), "toml")
	require.ErrorContains(t, err, `unknown config format "toml"`)
}

// The builder covers the HTTP actions, security and port specs, and a
// route it returned does not change with later calls.
func TestBuilderCoversRouteFields(t *testing.T) {
	on := true
	b := smartproxy.NewRoute("api").PortSpec(smartproxy.PortSpec{{From: 8000, To: 8010}}).Domains("api.example.com").
		ForwardTo("10.0.0.1:80").BackendProtocol(smartproxy.BackendH2C).KeepHostHeader().
		RequestHeader("X-Client", "{clientIp}").ResponseHeader("X-Route", "{routeName}").
		Rewrite("^/v1/(.*)", "/$1").WebSocket(true).
		MaxConnectionsPerIP(5).ConnectionRateLimit(60).
		RateLimit(&smartproxy.RateLimit{MaxRequests: 10, Window: 1, KeyBy: auth.KeyByPath})
	r := b.Route()
	keep := false
	want := smartproxy.Route{
		Name:  "api",
		Match: smartproxy.RouteMatch{Ports: smartproxy.PortSpec{{From: 8000, To: 8010}}, Domains: smartproxy.StringList{"api.example.com"}},
		Action: smartproxy.RouteAction{
			Type:      smartproxy.ActionForward,
			Targets:   []smartproxy.Target{{Host: smartproxy.StringList{"10.0.0.1"}, Port: 80}},
			Options:   &smartproxy.ActionOptions{BackendProtocol: smartproxy.BackendH2C, RewriteHostHeader: &keep},
			Headers:   &smartproxy.HeaderActions{Request: map[string]string{"X-Client": "{clientIp}"}, Response: map[string]string{"X-Route": "{routeName}"}},
			Rewrite:   &smartproxy.URLRewrite{Pattern: "^/v1/(.*)", Target: "/$1"},
			WebSocket: &smartproxy.WebSocketOptions{Enabled: &on},
		},
		Security: &smartproxy.RouteSecurity{
			MaxConnectionsPerIP: 5, ConnectionRateLimitPerMinute: 60,
			RateLimit: &smartproxy.RateLimit{MaxRequests: 10, Window: 1, KeyBy: auth.KeyByPath},
		},
	}
	require.Equal(t, want, r)

	b.ResponseHeader("X-Later", "x").Redirect("https://{domain}{path}", 308).BackendProtocol(smartproxy.BackendHTTP1)
	require.Equal(t, want, r, "later builder calls leave a built route alone")
	r2 := b.Route()
	require.Equal(t, "x", r2.Action.Headers.Response["X-Later"])
	require.Equal(t, &smartproxy.Redirect{To: "https://{domain}{path}", Status: 308}, r2.Action.Redirect)

	// Mistakes are collected and reported by New with route and field.
	bad := smartproxy.NewRoute("bad").Ports(80).ForwardTo("10.0.0.1:http").Route()
	_, err := smartproxy.New(smartproxy.Options{Logger: quiet, Routes: []smartproxy.Route{bad}})
	var re *smartproxy.RouteError
	require.ErrorAs(t, err, &re)
	require.Equal(t, `"bad"`, re.Route)
	require.Equal(t, "action.targets", re.Field)
}

// The typed enums and unit types read and write the same JSON as the
// plain strings and ints they replace.
func TestTypedFieldsKeepTheirJSON(t *testing.T) {
	doc := `{"routes":[{"name":"r","match":{"ports":443,"domains":"a.example.com"},
		"action":{"type":"forward","targets":[{"host":["10.0.0.1","10.0.0.2"],"port":443}],
			"tls":{"mode":"terminate-and-reencrypt","backend":{"serverName":"original"}},
			"options":{"backendProtocol":"h2"},"loadBalancing":{"algorithm":"ip-hash"}},
		"security":{"rateLimit":{"maxRequests":5,"window":60,"keyBy":"header","headerName":"X-Key"},
			"jwtAuth":{"secret":"s","algorithm":"HS256","leeway":-1}}}]}`
	for _, f := range []smartproxy.ConfigFormat{smartproxy.FormatJSON, smartproxy.FormatYAML} {
		c, err := smartproxy.ParseConfig([]byte(doc), f)
		require.NoError(t, err, f)
		r := c.Routes[0]
		require.Equal(t, smartproxy.ServerNameOriginal, r.Action.TLS.Backend.ServerName)
		require.Equal(t, smartproxy.BackendH2, r.Action.Options.BackendProtocol)
		require.Equal(t, smartproxy.AlgorithmIPHash, r.Action.LoadBalancing.Algorithm)
		require.Equal(t, auth.KeyByHeader, r.Security.RateLimit.KeyBy)
		require.Equal(t, time.Minute, r.Security.RateLimit.Window.Duration())
		require.Equal(t, smartproxy.Seconds(-1), r.Security.JWTAuth.Leeway)

		out, err := json.Marshal(r)
		require.NoError(t, err)
		for _, want := range []string{`"serverName":"original"`, `"backendProtocol":"h2"`, `"algorithm":"ip-hash"`, `"keyBy":"header"`, `"window":60`, `"leeway":-1`} {
			require.Contains(t, string(out), want)
		}
	}
}
