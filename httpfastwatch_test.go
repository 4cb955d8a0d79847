package smartproxy

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestClientGoneAfterHeadTimeout: a bodyless request that runs
// longer than the head timeout (a long poll) and whose client then goes
// away must be abandoned (the backend's request cancelled), as net/http
// does with its background read. The fast path's watch once read the
// client under the head's read deadline, still set: past it the watch's
// read timed out and ended, and a client leaving later was not seen.
func TestClientGoneAfterHeadTimeout(t *testing.T) {
	t.Parallel()
	for _, fast := range []bool{false, true} {
		t.Run(map[bool]string{false: "nethttp", true: "fast"}[fast], func(t *testing.T) {
			t.Parallel()
			cancelled := make(chan time.Duration, 1)
			be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				start := time.Now()
				select {
				case <-r.Context().Done():
					cancelled <- time.Since(start)
				case <-time.After(3 * time.Second):
					cancelled <- -1
					_, _ = io.WriteString(w, "late")
				}
			}))
			lp := newListenerPool(t)
			port := lp.port(t)
			const head = 300 * time.Millisecond
			startTestProxy(t, lp, Options{DisableHTTPFastPath: !fast, InitialDataTimeout: head,
				Routes: []Route{httpRouteOn("r", port, be.addr(), "a.test")}})
			c := dial(t, port)
			_, err := io.WriteString(c, "GET /poll HTTP/1.1\r\nHost: a.test\r\n\r\n")
			require.NoError(t, err)
			time.Sleep(4 * head)
			require.NoError(t, c.Close()) // the client goes away
			d := <-cancelled
			require.True(t, d > 0 && d < 2*time.Second, "backend request cancelled after %v (-1: never)", d)
		})
	}
}
