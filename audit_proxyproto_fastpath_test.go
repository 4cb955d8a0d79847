package smartproxy

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestAuditProxyProtocolFastPath (issue 13 × the HTTP/1.1 fast path):
// with Options.HTTPFastPath the address from a trusted PROXY header is
// still the client in X-Forwarded-For, X-Real-IP, Forwarded, {clientIp}
// and ipAllowList, and a client's own X-Forwarded-For is dropped, as
// TestProxyProtocolHTTPHeaders proves for net/http's server.
func TestAuditProxyProtocolFastPath(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := echoBackend(t, "be")
	r := httpRouteOn("web", port, be.addr())
	r.Action.Headers = &HeaderActions{Request: map[string]string{"X-Client": "{clientIp}"}}
	r.Security = &RouteSecurity{IPAllowList: []string{"203.0.113.7"}}
	startTestProxy(t, lp, Options{AcceptProxyProtocol: true, ProxyIPs: []string{"127.0.0.1"}, HTTPFastPath: true,
		ProxyHeaderTimeout: time.Second, Routes: []Route{r}})
	get := func(src string) string {
		c := dial(t, port)
		_, err := c.Write(append(ppHeader(t, 2, src, "192.0.2.1:80"), "GET /x HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n"...))
		require.NoError(t, err)
		_, got := awaitClose(t, c, 3*time.Second)
		return string(got)
	}
	resp := get("203.0.113.7:40000")
	require.Contains(t, resp, "200 OK")
	for _, want := range []string{`"X-Forwarded-For":["203.0.113.7"]`, `"X-Real-Ip":["203.0.113.7"]`, `"X-Client":["203.0.113.7"]`, `for=203.0.113.7`} {
		require.Contains(t, resp, want)
	}
	require.NotContains(t, resp, "6.6.6.6")
	require.Contains(t, get("203.0.113.8:40000"), "403", "the allow list is decided on the real address")
}
