//go:build linux

package smartproxy

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/tlstest"
	"github.com/stretchr/testify/require"
)

// TestHTTPHandedOffTunnelIsKilledWhole: on a port the loops serve in HTTP mode, a
// connection whose first bytes are a ClientHello goes at once to the goroutine path (serve's
// classification), which passes it through to its backend; idle, the pipe parks; killing the
// connection (the connection manager, at MaxConnectionLifetime) ends it whole: the
// parked pipe, the backend's connection, the record.
func TestHTTPHandedOffTunnelIsKilledWhole(t *testing.T) {
	t.Parallel()
	for _, engine := range engines {
		t.Run(engine.String(), func(t *testing.T) {
			t.Parallel()
			hello := tlstest.ToRecords(buildHello("tls.test", 0), 1<<14)
			backendDone := make(chan struct{})
			tunnel := startBackend(t, "127.0.0.1:0", func(c net.Conn) {
				defer close(backendDone)
				got := make([]byte, len(hello))
				if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, hello) {
					return
				}
				_, _ = c.Write([]byte("hi"))
				_, _ = io.Copy(io.Discard, c) // until the proxy closes it
			})
			web := echoBackend(t, "web")
			lp := newListenerPool(t)
			port := lp.port(t)
			p := startTestProxy(t, lp, Options{Engine: engine, IdleParkAfter: 10 * time.Millisecond, MaxConnectionLifetime: 500 * time.Millisecond, Routes: []Route{
				httpRouteOn("web", port, web.addr(), "a.test"),
				NewRoute("tls").Ports(port).Domains("tls.test").TLSPassthrough().ForwardTo(tunnel.addr()).Route(),
			}})
			c := dial(t, port)
			require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
			_, err := c.Write(hello)
			require.NoError(t, err)
			got := make([]byte, 2)
			_, err = io.ReadFull(c, got)
			require.NoError(t, err)
			require.Equal(t, "hi", string(got))
			waitParked(t, p, 2) // idle: the pipe holds no goroutine, as serve's own do

			select { // MaxConnectionLifetime: the manager kills it
			case <-backendDone:
			case <-time.After(5 * time.Second):
				t.Fatal("the killed connection's tunnel to the backend is still up")
			}
			requireNoRecords(t, p)
		})
	}
}
