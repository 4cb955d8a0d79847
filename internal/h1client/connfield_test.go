package h1client

import (
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRoundTripKeepsConnection: a response that says close keeps its
// Connection field (resp.Close set as well; http.ReadResponse deletes
// it), so that a proxy can remove the fields it names; the 1xx before it
// are relayed as they came. Heads over MaxHeaderBytes are refused.
func TestRoundTripKeepsConnection(t *testing.T) {
	big := "X-Big: " + strings.Repeat("b", 17<<10) + "\r\n"
	heads := map[string]string{
		"/close": "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" +
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close, X-Drop\r\nX-Drop: d\r\n\r\nok",
		"/keep":      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Drop\r\n\r\nok",
		"/big-close": "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + big + "Connection: close\r\n\r\nok",
		"/big-until": "HTTP/1.1 200 OK\r\n" + big + "\r\nok",
		"/big-keep":  "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + big + "\r\nok",
		"/big-10":    "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n" + big + "\r\nok",
	}
	srv := startRaw(t, func(c net.Conn, r *http.Request) bool {
		_, _ = io.WriteString(c, heads[r.URL.Path])
		return false
	})
	c := newTestClient(t, Config{})
	for path, want := range map[string][]string{"/close": {"close, X-Drop"}, "/keep": {"X-Drop"}} {
		var interim []textproto.MIMEHeader
		ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			interim = append(interim, h)
			return nil
		}})
		out, err := http.NewRequestWithContext(ctx, "GET", "http://"+srv.addr()+path, nil)
		require.NoError(t, err)
		resp, err := c.RoundTrip(out)
		require.NoError(t, err, path)
		require.Equal(t, want, resp.Header["Connection"], path)
		require.Equal(t, path != "/keep", resp.Close, path)
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, "ok", string(body))
		require.NoError(t, resp.Body.Close())
		if path == "/close" {
			require.Equal(t, []textproto.MIMEHeader{{"Link": {"</a>"}}}, interim)
		}
	}
	// Heads over MaxHeaderBytes are refused, whatever they say (Send's bound).
	for _, path := range []string{"/big-close", "/big-until", "/big-keep", "/big-10"} {
		out, err := http.NewRequestWithContext(t.Context(), "GET", "http://"+srv.addr()+path, nil)
		require.NoError(t, err)
		_, err = c.RoundTrip(out)
		require.Error(t, err, path)
	}
}
