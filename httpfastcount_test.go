package smartproxy

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/forwarding"
	"github.com/stretchr/testify/require"
)

// TestFastPathCountsEveryByte: a plain fast-path connection's bytes are
// counted exactly once each way, those the sniff read ahead (several
// pipelined requests in one write, a body among them) and those read
// after the sniffed ones were consumed and the meter reads the socket
// itself (dropDrainedPeek); behind a PROXY header too, whose client
// address the later requests still carry (X-Forwarded-For).
func TestFastPathCountsEveryByte(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		pp     bool
		engine Engine
	}{{"plain", false, EngineGoroutines}, {"proxy-header", true, EngineGoroutines}, {"plain-eventloop", false, EngineEventLoop}} {
		pp := tc.pp
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				_, _ = io.WriteString(w, r.Method+" "+r.URL.Path+" "+string(body)+" from "+r.Header.Get("X-Forwarded-For")+";")
			}))
			lp := newListenerPool(t)
			port := lp.port(t)
			opts := Options{Engine: tc.engine, Routes: []Route{httpRouteOn("count", port, be.addr(), "count.test")}}
			header, from := "", "127.0.0.1;"
			if pp {
				opts.AcceptProxyProtocol, opts.ProxyIPs = true, []string{"127.0.0.1"}
				header, from = "PROXY TCP4 203.0.113.7 127.0.0.1 4242 80\r\n", "203.0.113.7;"
			}
			p := newTestProxyAsIs(t, lp, opts)
			p.opts.Engine = tc.engine // also under SMARTPROXY_TEST_ENGINE=goroutines
			require.NoError(t, p.Start(context.Background()))

			first := "GET /a HTTP/1.1\r\nHost: count.test\r\n\r\n" +
				"POST /b HTTP/1.1\r\nHost: count.test\r\nContent-Length: 5\r\n\r\nhello"
			later := "GET /c?x=1 HTTP/1.1\r\nHost: count.test\r\nUser-Agent: t\r\n\r\n" +
				"GET /d HTTP/1.1\r\nHost: count.test\r\nConnection: close\r\n\r\n"
			c := dial(t, port)
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, err := io.WriteString(c, header+first)
			require.NoError(t, err)
			var got []byte
			buf := make([]byte, 4096)
			for strings.Count(string(got), "HTTP/1.1 200") < 2 {
				n, err := c.Read(buf)
				require.NoError(t, err)
				got = append(got, buf[:n]...)
			}
			// The sniffed bytes are consumed: the meter reads the socket.
			n := 0
			if tc.engine == EngineEventLoop {
				n = 1 // no fastConn: the loop reads the socket itself
			}
			p.http.fastConns.Range(func(k, _ any) bool {
				_, peek := k.(*fastConn).hc.meter.Conn.(*forwarding.PeekConn)
				require.False(t, peek, "the drained PeekConn is still beneath the meter")
				n++
				return true
			})
			require.Equal(t, 1, n)
			_, err = io.WriteString(c, later)
			require.NoError(t, err)
			rest, err := io.ReadAll(c)
			require.NoError(t, err)
			got = append(got, rest...)
			for _, want := range []string{"GET /a  from " + from, "POST /b hello from " + from, "GET /c  from " + from, "GET /d  from " + from} {
				require.Contains(t, string(got), want)
			}
			require.Equal(t, 4, strings.Count(string(got), "HTTP/1.1 200"))
			requireNoRecords(t, p)
			m := p.Metrics()
			require.EqualValues(t, len(first)+len(later), m.BytesIn, "the PROXY header is the sender's, not the client's")
			require.EqualValues(t, len(got), m.BytesOut)
		})
	}
}
