package smartproxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// With enableDetailedLogging every HTTP request gets a line (method,
// path, route, status), a refused request is logged as a request with
// the route that refused it (not as a connection with an empty route),
// and a socket handler's connection logs its close like a forwarded one.
func TestDetailedLoggingNamesRequestsAndRoutes(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	web := echoBackend(t, "web")
	lp := newListenerPool(t)
	port, hport := lp.port(t), lp.port(t)
	open := httpRouteOn("open", port, web.addr(), "a.test")
	closed := httpRouteOn("closed", port, web.addr(), "b.test")
	closed.Security = &RouteSecurity{BasicAuth: &BasicAuth{Users: []BasicAuthUser{{Username: "u", Password: "p"}}}}
	echoRoute := SocketHandlerRoute("echo", Ports(hport), nil, func(_ context.Context, c net.Conn, _ *RouteContext) error {
		_, err := io.Copy(c, c)
		return err
	})
	startTestProxy(t, lp, Options{Routes: []Route{open, closed, echoRoute}, EnableDetailedLogging: true,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})

	client, _ := proxyClient(t, port, nil, false)
	resp, _ := do(t, client, http.MethodGet, "http://a.test/hello", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp, _ = do(t, client, http.MethodGet, "http://b.test/secret", nil, nil)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	hc := dial(t, hport)
	require.Equal(t, "x", roundTrip(t, hc, "x"))
	require.NoError(t, hc.Close())

	require.Eventually(t, func() bool {
		out := logs.String()
		return strings.Count(out, "msg=request ") == 2 && strings.Contains(out, "handler=true")
	}, 5*time.Second, 10*time.Millisecond, logs.String())
	out := logs.String()
	require.Regexp(t, `msg=request .*method=GET host=a.test path=/hello .*route=open status=200`, out)
	require.Regexp(t, `msg=request .*path=/secret .*route=closed status=401`, out)
	require.Regexp(t, `msg="request rejected" .*route=closed method=GET path=/secret`, out)
	require.NotContains(t, out, `route=""`)
	require.NotContains(t, out, `route \"\"`)
	require.Regexp(t, `msg="connection closed" .*route=echo handler=true bytesIn=1 bytesOut=1`, out)
}
