package h1client

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Tests of the Connection field that http.ReadResponse deletes when it
// says close, kept by RoundTrip (peekConnection) and recoverable from
// recorded bytes (FinalConnection).

func TestFinalConnection(t *testing.T) {
	for _, c := range []struct {
		name, raw string
		vals      []string
		ok        bool
	}{
		{"none", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", nil, true},
		{"close and a name", "HTTP/1.1 200 OK\r\nConnection: close, X-A\r\n\r\nbody", []string{"close, X-A"}, true},
		{"two lines, any case", "HTTP/1.1 200 OK\r\nconnection: X-A\r\nCONNECTION:close\r\n\r\n", []string{"X-A", "close"}, true},
		{"obs-fold joined", "HTTP/1.1 200 OK\r\nConnection: close,\r\n X-A\r\nX-B: b\r\n\r\n", []string{"close, X-A"}, true},
		{"bare LF", "HTTP/1.1 200 OK\nConnection: close, X-A\n\n", []string{"close, X-A"}, true},
		{"1xx skipped", "HTTP/1.1 103 Early Hints\r\nConnection: X-H\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
			[]string{"close"}, true},
		{"101 is final", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n", []string{"Upgrade"}, true},
		{"a name in the body is not a field", "HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n\r\nConnection: X-A\r\n\r\n", nil, true},
		{"field name that only starts so", "HTTP/1.1 200 OK\r\nConnection-X: a\r\n\r\n", nil, true},
		{"incomplete", "HTTP/1.1 200 OK\r\nConnection: close\r\n", nil, false},
		{"only a 1xx", "HTTP/1.1 100 Continue\r\n\r\n", nil, false},
		{"empty", "", nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			vals, ok := FinalConnection([]byte(c.raw))
			require.Equal(t, c.ok, ok)
			require.Equal(t, c.vals, vals)
		})
	}
}

// TestRoundTripKeepsConnection: a response that says close keeps its
// Connection field (resp.Close set as well), so that a proxy can remove
// the fields it names; the 1xx before it are relayed as they came. A head
// too large to be seen whole fails if it may say close, and is taken if
// it is HTTP/1.0 or keeps the connection.
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

// FuzzFinalConnection: on any bytes, FinalConnection agrees with
// http.ReadResponse: where ReadResponse parses a final head and keeps its
// Connection field, the values are the same; where it deleted the field
// (it said close), the values hold a close.
func FuzzFinalConnection(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nConnection: close, X-A\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: X-A\r\nConnection: close\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nConnection: X-H\r\n\r\nHTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n",
		"HTTP/1.1 200 OK\nConnection: close,\n X-A\n\n",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive, X-A\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		vals, ok := FinalConnection(b)
		if !ok {
			return
		}
		br := bufio.NewReader(strings.NewReader(string(b)))
		var resp *http.Response
		for {
			r, err := http.ReadResponse(br, nil)
			if err != nil {
				return
			}
			if r.StatusCode < 100 || r.StatusCode >= 200 || r.StatusCode == http.StatusSwitchingProtocols {
				resp = r
				break
			}
		}
		if got, kept := resp.Header["Connection"]; kept {
			require.Equal(t, got, vals)
			return
		}
		if resp.Close && resp.ProtoAtLeast(1, 1) && !strings.Contains(strings.ToLower(strings.Join(vals, ",")), "close") {
			// ReadResponse also closes for a body without a length.
			require.Empty(t, vals)
		}
	})
}
