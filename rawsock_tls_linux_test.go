//go:build linux

package smartproxy

import (
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/gosmartproxy/smartproxy/internal/rawsock"
	"github.com/stretchr/testify/require"
)

// TestTerminatedHTTPRawSocket: a TLS-terminated HTTP/1.1 connection on
// the fast path reads and writes its client socket raw
// (internal/rawsock): the meter beneath the tls.Conn sits on a
// rawsock.Conn once the handshake is done, and requests go through it.
func TestTerminatedHTTPRawSocket(t *testing.T) {
	t.Parallel()
	be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	lp := newListenerPool(t)
	port := lp.port(t)
	// The goroutine engine: with event loops the connection moves to a loop
	// after its handshake (enginetls_linux_test.go).
	p := startFastTestProxy(t, lp, Options{Engine: EngineGoroutines, Certificates: newTestStore(t),
		Routes: []Route{terminateRouteOn("r", port, be.addr(), "bench.example.com")}})
	c, _ := proxyClient(t, port, insecureTLS("", "http/1.1"), false)
	for range 3 { // one keep-alive connection
		resp, err := c.Get("https://bench.example.com/")
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, "ok", string(body))
	}
	var under []net.Conn
	p.http.fastConns.Range(func(k, _ any) bool {
		under = append(under, k.(*fastConn).hc.meter.Conn)
		return true
	})
	require.Len(t, under, 1)
	require.IsType(t, &rawsock.Conn{}, under[0])
}
