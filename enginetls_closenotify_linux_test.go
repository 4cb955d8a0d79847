//go:build linux

package smartproxy

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestTLSLoopCloseNotifyCounted: the proxy closes after a Connection: close answer; its
// close_notify crosses the wire on both paths, and the route's byte count differs from what
// the client read after its handshake by the same amount on both (a session ticket the
// server wrote during the handshake, uncounted on both; found by review: the loop did not
// count its close_notify).
func TestTLSLoopCloseNotifyCounted(t *testing.T) {
	t.Parallel()
	be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	diff := map[Engine]int64{}
	for _, eng := range []Engine{EngineGoroutines, EngineEventLoop} {
		p, port := terminatingProxy(t, eng, be.addr())
		raw, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		require.NoError(t, err)
		cc := &countingConn{Conn: raw}
		c := tls.Client(cc, insecureTLS("a.test", "http/1.1"))
		require.NoError(t, c.Handshake())
		hs := cc.in.Load() // the handshake's bytes: not counted on either path, and their size varies (ECDSA)
		_, err = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
		require.NoError(t, err)
		b, err := io.ReadAll(c) // to the close_notify (EOF)
		require.NoError(t, err, "%q", b)
		_ = c.Close()
		r := p.ops.routes.get("r")
		require.Eventually(t, func() bool { return r.closed.Load() == 1 }, 2*time.Second, 5*time.Millisecond)
		diff[eng] = cc.in.Load() - hs - int64(r.bytesOut.Load())
	}
	t.Log(fmt.Sprint(diff))
	require.Equal(t, diff[EngineGoroutines], diff[EngineEventLoop], "client read minus counted out")
}
