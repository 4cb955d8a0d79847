//go:build linux

package smartproxy

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestAuditOpsAccountingBothEngines (issue 15 × the event-loop engine):
// the operability numbers an operator reads — connections and bytes per
// route after the connections closed, connections per listener port,
// connect errors per backend target, one access log line per connection —
// are the same whether a plain TCP port is served by goroutines or by the
// event loops (Options.Engine). The route has a refusing host first, so
// the balancer's failover dials it and counts a connect error.
func TestAuditOpsAccountingBothEngines(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "127.0.0.1:0", echo)
	_, bePort, _ := net.SplitHostPort(be.addr())
	dead := "127.0.0.2:" + bePort // nothing listens there: every connect is refused
	routes := func(port int) []Route {
		return []Route{NewRoute("two").Ports(port).ForwardTo(dead, "127.0.0.1:"+bePort).Route()}
	}
	for _, engine := range []string{"goroutines", "eventloop"} {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			var buf syncBuffer
			opts := Options{AccessLog: &AccessLogOptions{Logger: slog.New(slog.NewJSONHandler(&buf, nil))}}
			var p *Proxy
			var port int
			if engine == "eventloop" {
				p, port = startEngineProxy(t, opts, routes)
			} else {
				lp := newListenerPool(t)
				port = lp.port(t)
				opts.Routes = routes(port)
				p = startTestProxy(t, lp, opts)
			}
			const conns = 4
			for i := range conns {
				c := dial(t, port)
				msg := "m" + strconv.Itoa(i)
				require.Equal(t, msg, roundTrip(t, c, msg))
				require.NoError(t, c.Close())
			}
			requireNoRecords(t, p)
			c := p.Collector()
			check := func(name string, labels map[string]string, want float64, atLeast bool) {
				t.Helper()
				got, ok := metricValue(t, c, name, labels)
				require.True(t, ok, "%s%v missing", name, labels)
				if atLeast {
					require.GreaterOrEqual(t, got, want, "%s%v", name, labels)
				} else {
					require.Equal(t, want, got, "%s%v", name, labels)
				}
			}
			check("smartproxy_route_connections_total", map[string]string{"route": "two"}, conns, false)
			check("smartproxy_route_received_bytes_total", map[string]string{"route": "two"}, 2*conns, false)
			check("smartproxy_route_sent_bytes_total", map[string]string{"route": "two"}, 2*conns, false)
			check("smartproxy_listener_connections_total", map[string]string{"port": strconv.Itoa(port)}, conns, false)
			check("smartproxy_listener_connections_active", map[string]string{"port": strconv.Itoa(port)}, 0, false)
			check("smartproxy_backend_connect_errors_total", map[string]string{"target": dead}, 1, true)

			require.NoError(t, p.Stop(context.Background())) // writes what is queued
			n := 0
			for _, l := range accessLines(t, &buf) {
				if l["type"] != "request" && l["route"] == "two" {
					n++
				}
			}
			require.Equal(t, conns, n, "one access line per connection; log:\n%s", strings.TrimSpace(buf.String()))
		})
	}
}
