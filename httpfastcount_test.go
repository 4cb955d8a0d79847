package smartproxy

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestFastPathCountsEveryByte: a plain fast-path connection's bytes are
// counted exactly once each way, those the sniff read ahead (several
// pipelined requests in one write, a body among them) and those read
// after the sniffed ones were consumed and the meter reads the socket
// itself (dropDrainedPeek).
func TestFastPathCountsEveryByte(t *testing.T) {
	t.Parallel()
	be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, r.Method+" "+r.URL.Path+" "+string(body))
	}))
	lp := newListenerPool(t)
	port := lp.port(t)
	p := startFastTestProxy(t, lp, Options{Routes: []Route{httpRouteOn("count", port, be.addr(), "count.test")}})

	first := "GET /a HTTP/1.1\r\nHost: count.test\r\n\r\n" +
		"POST /b HTTP/1.1\r\nHost: count.test\r\nContent-Length: 5\r\n\r\nhello"
	later := "GET /c?x=1 HTTP/1.1\r\nHost: count.test\r\nUser-Agent: t\r\n\r\n" +
		"GET /d HTTP/1.1\r\nHost: count.test\r\nConnection: close\r\n\r\n"
	c := dial(t, port)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, err := io.WriteString(c, first)
	require.NoError(t, err)
	var got []byte
	buf := make([]byte, 4096)
	for strings.Count(string(got), "HTTP/1.1 200") < 2 {
		n, err := c.Read(buf)
		require.NoError(t, err)
		got = append(got, buf[:n]...)
	}
	_, err = io.WriteString(c, later)
	require.NoError(t, err)
	rest, err := io.ReadAll(c)
	require.NoError(t, err)
	got = append(got, rest...)
	for _, want := range []string{"GET /a ", "POST /b hello", "GET /c ", "GET /d "} {
		require.Contains(t, string(got), want)
	}
	require.Equal(t, 4, strings.Count(string(got), "HTTP/1.1 200"))
	requireNoRecords(t, p)
	m := p.Metrics()
	require.EqualValues(t, len(first)+len(later), m.BytesIn)
	require.EqualValues(t, len(got), m.BytesOut)
}
