package smartproxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestFastForwardEarlyAnswer: the backend answers 403 as soon as
// it has a POST's head (nginx's "return 403" does), then discards the
// body and keeps the connection. The client's body arrives in two parts.
// The client must get the 403 (net/http's stack relays it), not a 504
// after the connect timeout, as when h1client's last body write waited
// inside writeAwait for an edge that had come before it (see
// internal/h1client TestEarlyResponseLastWrite).
func TestFastForwardEarlyAnswer(t *testing.T) {
	t.Parallel()
	for _, fast := range []bool{false, true} {
		t.Run(map[bool]string{false: "nethttp", true: "fast"}[fast], func(t *testing.T) {
			t.Parallel()
			be := startBackend(t, "127.0.0.1:0", func(c net.Conn) {
				br := bufio.NewReader(c)
				for {
					r, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
					if _, err := io.Copy(io.Discard, r.Body); err != nil {
						return
					}
				}
			})
			lp := newListenerPool(t)
			port := lp.port(t)
			startTestProxy(t, lp, Options{DisableHTTPFastPath: !fast,
				Routes: []Route{httpRouteOn("r", port, be.ln.Addr().String(), "a.test")}})
			c := dial(t, port)
			br := bufio.NewReader(c)
			require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
			start := time.Now()
			_, err := io.WriteString(c, "POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: 40000\r\n\r\n"+strings.Repeat("a", 20000))
			require.NoError(t, err)
			time.Sleep(200 * time.Millisecond)
			_, err = io.WriteString(c, strings.Repeat("b", 20000))
			require.NoError(t, err)
			resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
			require.NoError(t, err)
			took := time.Since(start)
			require.Equal(t, 403, resp.StatusCode, "after %v", took)
			require.Less(t, took, time.Second)
		})
	}
}
