package smartproxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestFastRequestReuseKeepsNothing: a connection's requests reuse one set of request objects
// (the event loop's always, the goroutine fast path's after a bodyless forward), header map
// and URL included. Each request must be routed and forwarded on its own fields alone: a
// header or query left over from the request before would route the next one to the
// header-matched route or forward the old query.
func TestFastRequestReuseKeepsNothing(t *testing.T) {
	t.Parallel()
	for _, engine := range engines {
		t.Run(engine.String(), func(t *testing.T) {
			t.Parallel()
			a, dflt := echoBackend(t, "a"), echoBackend(t, "dflt")
			_, port := startHTTPPortOn(t, engine, Options{}, func(port int) []Route {
				ra := httpRouteOn("a", port, a.addr())
				ra.Match.Headers = map[string]string{"X-Route": "a"}
				ra.Priority = 10
				rd := httpRouteOn("dflt", port, dflt.addr())
				rd.Match.Path = "/*"
				return []Route{ra, rd}
			})
			c := dial(t, port)
			br := bufio.NewReader(c)
			for i, step := range []struct{ target, extra, backend, path, query string }{
				{"/x?q=1", "X-Route: a\r\nX-One: 1\r\n", "a", "/x", "q=1"},
				{"/y", "", "dflt", "/y", ""},
				{"/z?r=2", "X-Route: a\r\n", "a", "/z", "r=2"},
				{"/", "", "dflt", "/", ""},
			} {
				_, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: reuse.test\r\n%s\r\n", step.target, step.extra)
				require.NoError(t, err)
				resp, err := http.ReadResponse(br, nil)
				require.NoError(t, err, "request %d", i)
				var got echoed
				require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
				_ = resp.Body.Close()
				require.Equal(t, step.backend, got.Backend, "request %d: route", i)
				require.Equal(t, step.path, got.Path, "request %d", i)
				require.Equal(t, step.query, got.Query, "request %d", i)
				if step.extra == "" {
					require.Empty(t, got.Header.Get("X-Route"), "request %d: a field of the request before", i)
					require.Empty(t, got.Header.Get("X-One"), "request %d: a field of the request before", i)
				}
			}
		})
	}
}

// TestForwardingFieldsFollowTheRequest: the forwarding fields' values are kept per connection
// (fwdFields) and made again when the Host changes; every request of a keep-alive connection
// gets the values of its own Host, whichever came before it, and the client's address.
func TestForwardingFieldsFollowTheRequest(t *testing.T) {
	t.Parallel()
	for _, engine := range engines {
		t.Run(engine.String(), func(t *testing.T) {
			t.Parallel()
			be := echoBackend(t, "be")
			_, port := startHTTPPortOn(t, engine, Options{}, func(port int) []Route {
				r := httpRouteOn("r", port, be.addr())
				r.Match.Path = "/*" // an HTTP route: a plain one is forwarded as TCP
				return []Route{r}
			})
			c := dial(t, port)
			br := bufio.NewReader(c)
			for i, host := range []string{"one.test", "one.test", "two.test:8080", "one.test", "ONE.test"} {
				_, err := fmt.Fprintf(c, "GET /%d HTTP/1.1\r\nHost: %s\r\n\r\n", i, host)
				require.NoError(t, err)
				resp, err := http.ReadResponse(br, nil)
				require.NoError(t, err, "request %d", i)
				var got echoed
				require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
				_ = resp.Body.Close()
				require.Equal(t, host, got.Header.Get("X-Forwarded-Host"), "request %d", i)
				require.Equal(t, `for=127.0.0.1;host="`+host+`";proto=http`, got.Header.Get("Forwarded"), "request %d", i)
				require.Equal(t, "127.0.0.1", got.Header.Get("X-Forwarded-For"), "request %d", i)
				require.Equal(t, "127.0.0.1", got.Header.Get("X-Real-Ip"), "request %d", i)
			}
		})
	}
}

// keepingChecker is a SecurityChecker that keeps every RouteContext it is given, as user code
// may: the proxy must not reuse what such a pointer points into.
type keepingChecker struct {
	mu   sync.Mutex
	kept []*RouteContext
	seen []string
}

func (k *keepingChecker) CheckConnection(rc *RouteContext) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.kept, k.seen = append(k.kept, rc), append(k.seen, rc.Domain)
	return nil
}

// TestFastRequestNotReusedUnderUserCode: with a custom SecurityChecker (or Matcher, HostFunc,
// PortFunc) a request's objects are user code's too, and a later request must not reuse them:
// every RouteContext the checker kept still says what it said when it was given. It fails
// when the objects go back to the pool regardless (the kept contexts then show later requests'
// domains). The goroutine path only: a port with user code in its checks is not the loops'.
func TestFastRequestNotReusedUnderUserCode(t *testing.T) {
	t.Parallel()
	be := echoBackend(t, "be")
	checker := &keepingChecker{}
	_, port := startHTTPPortOn(t, EngineGoroutines, Options{Security: checker}, func(port int) []Route {
		return []Route{httpRouteOn("r", port, be.addr(), "*.test")}
	})
	c := dial(t, port)
	br := bufio.NewReader(c)
	for i := range 12 {
		_, err := fmt.Fprintf(c, "GET /%d HTTP/1.1\r\nHost: k%d.test\r\n\r\n", i, i)
		require.NoError(t, err)
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err, "request %d", i)
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
	}
	checker.mu.Lock()
	defer checker.mu.Unlock()
	require.NotEmpty(t, checker.kept, "the checker was asked")
	for i, rc := range checker.kept {
		require.Equal(t, checker.seen[i], rc.Domain, "context %d changed after its request", i)
	}
}
