package smartproxy

import (
	"bufio"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSlowHeadBounded: a client that trickles a keep-alive
// connection's second request head one byte at a time, each byte within
// the head timeout of the last, must still be cut off once the head
// timeout (plus armRead's eighth) has passed since the head began, as
// net/http's ReadHeaderTimeout does (and HAProxy's timeout
// http-request). The fast path once moved the deadline on every read,
// so such a client held the connection (and its buffer, up to 64 KiB)
// for 64 KiB × the head timeout.
func TestSlowHeadBounded(t *testing.T) {
	t.Parallel()
	for _, fast := range []bool{false, true} {
		t.Run(map[bool]string{false: "nethttp", true: "fast"}[fast], func(t *testing.T) {
			t.Parallel()
			lp := newListenerPool(t)
			port := lp.port(t)
			be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, "ok")
			}))
			const head = 400 * time.Millisecond
			startTestProxy(t, lp, Options{DisableHTTPFastPath: !fast, InitialDataTimeout: head,
				Routes: []Route{httpRouteOn("r", port, be.addr(), "a.test")}})
			c := dial(t, port)
			br := bufio.NewReader(c)
			resp, body := exchangeKeep(t, c, br, "GET /1 HTTP/1.1\r\nHost: a.test\r\n\r\n", "GET")
			require.Equal(t, 200, resp.StatusCode, body)
			start := time.Now()
			_, err := io.WriteString(c, "GET /2 HTTP/1.1\r\nX: ")
			require.NoError(t, err)
			// One byte every quarter of the head timeout, for 5 head timeouts.
			for time.Since(start) < 5*head {
				time.Sleep(head / 4)
				if _, err := io.WriteString(c, "a"); err != nil {
					break // cut off: as it should be
				}
			}
			_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			_, err = br.ReadByte()
			// Cut off (EOF, reset, or a 408 to read) rather than still waiting.
			var ne interface{ Timeout() bool }
			if err != nil {
				if e, ok := err.(interface{ Timeout() bool }); ok {
					ne = e
				}
			}
			require.False(t, ne != nil && ne.Timeout(),
				"the connection is still open %v after its head began (head timeout %v)", time.Since(start), head)
		})
	}
}
