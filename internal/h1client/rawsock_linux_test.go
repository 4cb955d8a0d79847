//go:build linux

package h1client

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/rawsock"
	"github.com/stretchr/testify/require"
)

// TestBackendSocketsRaw: the sockets of pooled backend connections,
// cleartext and under TLS, make raw reads and writes (internal/rawsock),
// and the prober still tells a live connection from a closed one.
func TestBackendSocketsRaw(t *testing.T) {
	t.Parallel()
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "plain")
	}))
	t.Cleanup(plain.Close)
	c := newTestClient(t, Config{})
	require.Equal(t, "plain", get(t, c, plain.Listener.Addr().String(), "/"))

	b := startTLSBackend(t, nil, 0)
	got, err := sendTLS(t, c, b, &tls.Config{InsecureSkipVerify: true}, "a.test", "")
	require.NoError(t, err)
	require.Equal(t, "a.test", got)

	c.mu.Lock()
	var socks []any
	for _, list := range c.idle {
		for _, pc := range list {
			socks = append(socks, pc.raw)
			require.True(t, pc.probe.aliveNow(), "a live idle connection passes the probe")
		}
	}
	c.mu.Unlock()
	require.Len(t, socks, 2)
	for _, s := range socks {
		require.IsType(t, &rawsock.Conn{}, s)
	}

	// The probe of a connection the backend closed fails (raw peek).
	plain.CloseClientConnections()
	c.mu.Lock()
	for k, list := range c.idle {
		if k.tls == nil {
			require.Eventually(t, func() bool { return !list[0].probe.aliveNow() }, 5*time.Second, 10*time.Millisecond)
		}
	}
	c.mu.Unlock()
}
