package smartproxy

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestHTTPRouteConnectionRateLimitKeepAliveSwitch: a route's
// connectionRateLimitPerMinute counts new connections, so one keep-alive
// connection alternating requests between two rate-limited routes is
// charged to each route once and never refused, while new connections past
// the limit still are (plain HTTP and terminated TLS).
func TestHTTPRouteConnectionRateLimitKeepAliveSwitch(t *testing.T) {
	t.Parallel()
	forEachHTTPKind(t, func(t *testing.T, k httpKind) {
		lp := newListenerPool(t)
		port := lp.port(t)
		paths := make(chan string, 100)
		beA, beB := okBackend(t, paths), okBackend(t, paths)
		ra := k.route("a", port, beA.addr(), "a.test")
		ra.Security = &RouteSecurity{ConnectionRateLimitPerMinute: 2}
		rb := k.route("b", port, beB.addr(), "b.test")
		rb.Security = &RouteSecurity{ConnectionRateLimitPerMinute: 2}
		p := startTestProxy(t, lp, Options{Certificates: testCertStore(t), Routes: []Route{ra, rb}})

		dial := func(sni string) *rawHTTP {
			t.Helper()
			c, err := k.dial(t, e2eRefused, port, sni)
			require.NoError(t, err)
			return newRawHTTP(c)
		}
		status := func(h *rawHTTP, host string) int {
			t.Helper()
			res := h.get(host, "/", nil)
			require.NoError(t, res.err)
			return res.status
		}

		// One connection, ten requests alternating a.test / b.test.
		ka := dial("a.test")
		for i := range 10 {
			host := "a.test"
			if i%2 == 1 {
				host = "b.test"
			}
			require.Equal(t, http.StatusOK, status(ka, host), "request %d to %s on the keep-alive connection", i, host)
		}
		require.EqualValues(t, 5, beA.requests.Load())
		require.EqualValues(t, 5, beB.requests.Load())
		requireRejected(t, p, map[string]uint64{})

		// The keep-alive connection used one of each route's two
		// connections: one more new connection per route fits, the
		// next is refused.
		for _, host := range []string{"a.test", "b.test"} {
			require.Equal(t, http.StatusOK, status(dial(host), host), "second connection to %s", host)
			if k.terminate {
				// The TLS path refuses on the SNI, before the handshake
				// completes.
				_, err := k.dial(t, e2eRefused, port, host)
				if err == nil {
					t.Fatalf("third connection to %s admitted", host)
				}
			} else {
				require.Equal(t, http.StatusTooManyRequests, status(dial(host), host), "third connection to %s", host)
			}
		}
		requireRejected(t, p, map[string]uint64{"route-rate-limit": 2})

		// The first connection was charged already: it keeps switching.
		for i := range 4 {
			host := "a.test"
			if i%2 == 1 {
				host = "b.test"
			}
			require.Equal(t, http.StatusOK, status(ka, host), "request %d to %s after the limit was reached", i, host)
		}
		requireRejected(t, p, map[string]uint64{"route-rate-limit": 2})
	})
}
