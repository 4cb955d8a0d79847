package smartproxy

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestHTTPLayerNeedsOnlyItsSeam: an HTTP layer built around a fake seam,
// with no *Proxy behind it, routes a request through the seam alone: the
// match finds no route, the refusal goes to reject, the client gets 404.
func TestHTTPLayerNeedsOnlyItsSeam(t *testing.T) {
	var matched, rejected atomic.Int32
	h := newHTTPLayer(proxySeam{
		routes: func() *routeSet { return &routeSet{} },
		match: func(_ *routeSet, q *MatchQuery) *Route {
			matched.Add(1)
			return nil
		},
		reject:             func(refusal, error) { rejected.Add(1) },
		logConn:            func(string, ...any) {},
		ops:                newOpsState(nil),
		log:                slog.New(slog.DiscardHandler),
		baseCtx:            context.Background(),
		initialDataTimeout: time.Second,
	})
	defer h.close()

	server, client := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.serve(server, &httpConn{rc: RouteContext{Port: 80}, admission: admissionDeferred})
	}()
	go func() { _, _ = io.WriteString(client, "GET / HTTP/1.1\r\nHost: x.test\r\n\r\n") }()
	require.NoError(t, client.SetDeadline(time.Now().Add(5*time.Second)))
	resp, err := http.ReadResponse(bufio.NewReader(client), nil)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.NoError(t, client.Close())
	<-done
	require.Equal(t, int32(1), matched.Load())
	require.Equal(t, int32(1), rejected.Load())
}
