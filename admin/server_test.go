package admin_test

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/gosmartproxy/smartproxy/admin"
	"github.com/stretchr/testify/require"
)

// TestTokenGuardsEveryDataEndpoint: with a token, /healthz, /readyz and
// the page answer anyone; every other endpoint answers 401 without
// credentials and 403 with a wrong token, as JSON with the status.
func TestTokenGuardsEveryDataEndpoint(t *testing.T) {
	t.Parallel()
	e := startEnv(t, admin.Config{Token: testToken, Listen: "0.0.0.0:0"})
	for _, path := range []string{"/healthz", "/readyz", "/", "/dashboard.js", "/dashboard.css"} {
		code, body := e.call(t, "GET", path, "")
		require.Equal(t, http.StatusOK, code, path+": "+body)
	}
	for _, ep := range []struct{ method, path string }{
		{"GET", "/metrics"}, {"GET", "/routes"}, {"GET", "/connections"}, {"GET", "/targets"},
		{"GET", "/stats"}, {"POST", "/reload"}, {"GET", "/debug/pprof/"}, {"GET", "/debug/pprof/heap"},
	} {
		code, body := e.call(t, ep.method, ep.path, "")
		require.Equal(t, http.StatusUnauthorized, code, ep.path)
		require.Equal(t, 401.0, decode[map[string]any](t, body)["status"], body)
		code, body = e.call(t, ep.method, ep.path, testToken+"x")
		require.Equal(t, http.StatusForbidden, code, ep.path)
		require.Equal(t, "wrong token", decode[map[string]any](t, body)["error"], body)
		code, _ = e.call(t, ep.method, ep.path, "", "Authorization", "Basic "+testToken)
		require.Equal(t, http.StatusUnauthorized, code, ep.path)
	}
	code, _ := e.call(t, "GET", "/debug/pprof/heap", testToken)
	require.Equal(t, http.StatusOK, code)
	code, body := e.call(t, "GET", "/routes", "", "Authorization", "bearer "+testToken)
	require.Equal(t, http.StatusOK, code, "the scheme is case-insensitive: "+body)
	code, body = e.call(t, "POST", "/reload", testToken)
	require.Equal(t, http.StatusNotImplemented, code, body)
	code, body = e.call(t, "GET", "/nothing", testToken)
	require.Equal(t, http.StatusNotFound, code)
	require.Equal(t, 404.0, decode[map[string]any](t, body)["status"])
}

// TestEndpointsReportTheProxy: metrics, routes, paged connections and
// targets describe the proxy's real traffic.
func TestEndpointsReportTheProxy(t *testing.T) {
	t.Parallel()
	e := startEnv(t, admin.Config{Token: testToken})
	for range 5 {
		e.echoThrough(t, "hello")
	}

	code, body := e.call(t, "GET", "/metrics", testToken)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `smartproxy_route_connections_active{route="tcp"} 5`)
	require.Contains(t, body, "go_goroutines ")
	require.Contains(t, body, "process_open_fds ")

	code, body = e.call(t, "GET", "/routes", testToken)
	require.Equal(t, http.StatusOK, code)
	routes := decode[struct{ Routes []admin.Route }](t, body).Routes
	require.Len(t, routes, 1)
	require.Equal(t, "tcp", routes[0].Name)
	require.Equal(t, []int{e.port}, routes[0].Ports)
	require.Equal(t, "forward", routes[0].Action)

	type page struct {
		Connections []admin.Connection
		Total       int
		Next        uint64
	}
	var ids []uint64
	after := uint64(0)
	for pages := 0; ; pages++ {
		require.Less(t, pages, 3)
		code, body = e.call(t, "GET", "/connections?limit=2&after="+strconv.FormatUint(after, 10), testToken)
		require.Equal(t, http.StatusOK, code, body)
		pg := decode[page](t, body)
		require.Equal(t, 5, pg.Total)
		for _, c := range pg.Connections {
			ids = append(ids, c.ID)
			require.Equal(t, "tcp", c.Route)
			require.EqualValues(t, 5, c.BytesIn)
			require.True(t, strings.HasPrefix(c.Client, "127.0.0.1:"), c.Client)
		}
		if pg.Next == 0 {
			break
		}
		after = pg.Next
	}
	require.Len(t, ids, 5)
	require.IsIncreasing(t, ids)
	for _, bad := range []string{"limit=0", "limit=1001", "limit=x", "after=-1"} {
		code, body = e.call(t, "GET", "/connections?"+bad, testToken)
		require.Equal(t, http.StatusBadRequest, code, bad+": "+body)
	}

	code, body = e.call(t, "GET", "/targets", testToken)
	require.Equal(t, http.StatusOK, code)
	targets := decode[struct{ Targets []admin.Target }](t, body).Targets
	require.Len(t, targets, 1)
	require.True(t, targets[0].Up)
	require.EqualValues(t, 5, targets[0].ActiveConnections)

	code, body = e.call(t, "GET", "/stats", testToken)
	require.Equal(t, http.StatusOK, code)
	st := decode[admin.Stats](t, body)
	require.Equal(t, 5, st.Active)
	require.Equal(t, []admin.Client{{IP: "127.0.0.1", Active: 5}}, st.TopClients)
}

// TestReadyz: ready while the proxy serves, 503 once it stops.
func TestReadyz(t *testing.T) {
	t.Parallel()
	e := startEnv(t, admin.Config{})
	code, _ := e.call(t, "GET", "/readyz", "")
	require.Equal(t, http.StatusOK, code)
	require.NoError(t, e.p.Stop(context.Background()))
	code, body := e.call(t, "GET", "/readyz", "")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, 503.0, decode[map[string]any](t, body)["status"])
}

// TestNoTokenMeansLoopbackOnly: without a token the server refuses to
// listen beyond loopback, with an error that says what to do.
func TestNoTokenMeansLoopbackOnly(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:0", "example.com:0"} {
		_, err := admin.Start(context.Background(), admin.Config{Listen: addr, Source: nopSource{}})
		require.ErrorContains(t, err, "without a token", addr)
	}
	_, err := admin.Start(context.Background(), admin.Config{Listen: "0.0.0.0:0", Token: "short", Source: nopSource{}})
	require.ErrorContains(t, err, "at least 16 bytes")
	_, err = admin.Start(context.Background(), admin.Config{Listen: "127.0.0.1:0"})
	require.ErrorContains(t, err, "no Source")
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0", "localhost:0", "127.0.0.2:0"} {
		s, err := admin.Start(context.Background(), admin.Config{Listen: addr, Source: nopSource{}})
		if err != nil && strings.Contains(err.Error(), "cannot assign") {
			continue // no IPv6 loopback here
		}
		require.NoError(t, err, addr)
		require.NoError(t, s.Close(context.Background()))
	}
}

// TestNoTokenRefusesBrowserAttacks: without a token, a request for a
// name other than loopback (DNS rebinding), a cross-origin POST and a
// cross-site request for data are refused; same-origin and non-browser
// requests pass.
func TestNoTokenRefusesBrowserAttacks(t *testing.T) {
	t.Parallel()
	reloads := 0
	e := startEnv(t, admin.Config{Reload: func(context.Context) error { reloads++; return nil }})
	code, _ := e.call(t, "GET", "/routes", "")
	require.Equal(t, http.StatusOK, code)
	code, body := e.call(t, "GET", "/routes", "", "Host", "evil.example:80")
	require.Equal(t, http.StatusForbidden, code, body)
	code, _ = e.call(t, "POST", "/reload", "", "Origin", "http://evil.example")
	require.Equal(t, http.StatusForbidden, code)
	// A GET another site's page made the browser send (<img src>): the
	// page cannot read the answer, but a profile costs the proxy.
	for _, site := range []string{"cross-site", "same-site"} {
		code, _ = e.call(t, "GET", "/debug/pprof/heap?gc=1", "", "Sec-Fetch-Site", site)
		require.Equal(t, http.StatusForbidden, code, site)
	}
	code, _ = e.call(t, "GET", "/routes", "", "Sec-Fetch-Site", "same-origin")
	require.Equal(t, http.StatusOK, code)
	code, _ = e.call(t, "GET", "/", "", "Sec-Fetch-Site", "cross-site") // a link to the page
	require.Equal(t, http.StatusOK, code)
	require.Zero(t, reloads)
	code, _ = e.call(t, "POST", "/reload", "", "Origin", e.base)
	require.Equal(t, http.StatusOK, code)
	code, _ = e.call(t, "POST", "/reload", "")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, 2, reloads)
}

// TestReloadFailureIsReported: a failing reload answers 422 with why.
func TestReloadFailureIsReported(t *testing.T) {
	t.Parallel()
	e := startEnv(t, admin.Config{Token: testToken, Reload: func(context.Context) error {
		return errors.New(`routes[0].match.ports: port 70000 out of range`)
	}})
	code, body := e.call(t, "POST", "/reload", testToken)
	require.Equal(t, http.StatusUnprocessableEntity, code)
	require.Contains(t, decode[map[string]any](t, body)["error"], "port 70000 out of range")
	code, _ = e.call(t, "GET", "/reload", testToken)
	require.Equal(t, http.StatusMethodNotAllowed, code)
}

// nopSource is an empty proxy, for tests of the server's configuration.
type nopSource struct{}

func (nopSource) Ready() bool                     { return false }
func (nopSource) Routes() []admin.Route           { return nil }
func (nopSource) Connections() []admin.Connection { return nil }
func (nopSource) Targets() []admin.Target         { return nil }
func (nopSource) Stats() admin.Stats              { return admin.Stats{} }
