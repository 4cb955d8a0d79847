package h1client

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/h1parse"
	"github.com/stretchr/testify/require"
)

// cannedServer answers each request with answers[path] and keeps the
// connection open.
func cannedServer(t *testing.T, answers map[string]string) *rawServer {
	return startRaw(t, func(c net.Conn, r *http.Request) bool {
		_, _ = io.WriteString(c, answers[r.URL.Path])
		return true
	})
}

// getRT sends method path to addr through RoundTrip and reads the
// body to its end; it returns the response, the body and the first
// error (of the head or of the body).
func getRT(t *testing.T, c *Client, addr, method, path string) (*http.Response, string, error) {
	t.Helper()
	out, err := http.NewRequestWithContext(t.Context(), method, "http://"+addr+path, nil)
	require.NoError(t, err)
	resp, err := c.RoundTrip(out)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// TestHostileResponsesRefusedAlike: the responses a smuggling attempt
// (or a broken backend) sends are refused by RoundTrip exactly as by
// Send, with the same error at the same point (the head or the body),
// and the connection is closed, never pooled: the proxy's two paths
// read the same backend bytes the same way.
func TestHostileResponsesRefusedAlike(t *testing.T) {
	cases := []struct {
		name, resp string
		inBody     bool // refused while reading the body, not the head
		want       error
	}{
		{"CL and TE", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false, h1parse.ErrMalformed},
		{"TE and CL", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", false, h1parse.ErrMalformed},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n", false, h1parse.ErrMalformed},
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\n\n", false, h1parse.ErrMalformed},
		{"bare LF in a field", "HTTP/1.1 200 OK\r\nContent-Length: 2\nX-A: 1\r\n\r\nok", false, h1parse.ErrMalformed},
		{"differing CLs", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", false, h1parse.ErrMalformed},
		{"differing CL list", "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!", false, h1parse.ErrMalformed},
		{"signed CL", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", false, h1parse.ErrMalformed},
		{"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello", false, h1parse.ErrMalformed},
		{"TE gzip, chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", false, h1parse.ErrUnsupported},
		{"TE on HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false, h1parse.ErrMalformed},
		{"NUL in a value", "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n", false, h1parse.ErrMalformed},
		{"oversize head", "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("b", MaxHeaderBytes) + "\r\nContent-Length: 0\r\n\r\n", false, nil},
		{"chunk-size overflow", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nx\r\n0\r\n\r\n", true, h1parse.ErrMalformed},
		{"chunk longer than its size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", true, h1parse.ErrMalformed},
		{"chunk size bare LF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", true, h1parse.ErrMalformed},
	}
	answers := map[string]string{}
	for i, tc := range cases {
		answers["/"+itoa(i)] = tc.resp
	}
	be := cannedServer(t, answers)
	c := newTestClient(t, Config{HeadTimeout: 5 * time.Second})
	for i, tc := range cases {
		path := "/" + itoa(i)
		ex, serr := c.Send(t.Context(), be.addr(), Outgoing{Head: []byte("GET " + path + " HTTP/1.1\r\nHost: b\r\n\r\n"), Replayable: true})
		sendInBody := serr == nil
		if serr == nil {
			_, serr = io.ReadAll(ex)
			require.NoError(t, ex.Close())
		}
		resp, _, rerr := getRT(t, c, be.addr(), "GET", path)
		require.Error(t, serr, tc.name)
		require.Equal(t, tc.inBody, sendInBody, "%s: Send refused it in the head: %v", tc.name, serr)
		require.Equal(t, tc.inBody, resp != nil, "%s: RoundTrip refused it in the head: %v", tc.name, rerr)
		require.EqualError(t, rerr, serr.Error(), tc.name)
		if tc.want != nil {
			require.ErrorIs(t, rerr, tc.want, tc.name)
		}
		require.Equal(t, 0, c.IdleConns(), "%s: not pooled", tc.name)
	}
	n := int64(2 * len(cases))
	require.Equal(t, n, be.accepts.Load(), "a connection per exchange")
	require.Eventually(t, func() bool { return be.closes.Load() == n }, 5*time.Second, time.Millisecond, "all closed by the client")
}

// TestRoundTripResponseAsReadResponse: for responses both parsers take,
// RoundTrip's *http.Response is the one http.ReadResponse makes of the
// same bytes (status, header, lengths, Transfer-Encoding, Close, body,
// trailers).
func TestRoundTripResponseAsReadResponse(t *testing.T) {
	answers := map[string]string{
		"/length":  "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Empty:\r\nContent-Length: 5\r\n\r\nhello",
		"/dupcl":   "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
		"/chunked": "HTTP/1.1 201 Created\r\nTrailer: x-sum, X-Other\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;ext=1\r\nlo\r\n0\r\nX-Sum: 42\r\nx-late: 1\r\n\r\n",
		"/head":    "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
		"/headte":  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
		"/204":     "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
		"/304":     "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
		"/close":   "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye",
		"/noreas":  "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
		"/pragma":  "HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 0\r\n\r\n",
		"/http10":  "HTTP/1.0 200 OK\r\nX-A: 1\r\n\r\nuntil the end",
		// net/http refuses it; the strict parser takes it as 5 (below).
		"/cllist": "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
	}
	be := startRaw(t, func(c net.Conn, r *http.Request) bool {
		_, _ = io.WriteString(c, answers[r.URL.Path])
		return r.URL.Path != "/http10"
	})
	c := newTestClient(t, Config{HeadTimeout: 5 * time.Second})
	for path, raw := range answers {
		if path == "/cllist" {
			continue
		}
		method := "GET"
		if strings.HasPrefix(path, "/head") {
			method = "HEAD"
		}
		out, err := http.NewRequestWithContext(t.Context(), method, "http://"+be.addr()+path, nil)
		require.NoError(t, err)
		want, err := http.ReadResponse(bufio.NewReader(strings.NewReader(raw)), out)
		require.NoError(t, err, path)
		wantBody, err := io.ReadAll(want.Body)
		require.NoError(t, err, path)

		got, gotBody, err := getRT(t, c, be.addr(), method, path)
		require.NoError(t, err, path)
		if v, ok := got.Header["Connection"]; ok && want.Close && want.Header["Connection"] == nil {
			want.Header["Connection"] = v // kept on purpose (roundtrip.go)
		}
		require.Equal(t, string(wantBody), gotBody, path)
		require.Equal(t, want.Status, got.Status, path)
		require.Equal(t, want.StatusCode, got.StatusCode, path)
		require.Equal(t, want.Proto, got.Proto, path)
		require.Equal(t, want.ProtoMinor, got.ProtoMinor, path)
		require.Equal(t, want.Header, got.Header, path)
		require.Equal(t, want.ContentLength, got.ContentLength, path)
		require.Equal(t, want.TransferEncoding, got.TransferEncoding, path)
		require.Equal(t, want.Close, got.Close, path)
		require.Equal(t, want.Trailer, got.Trailer, path)
	}
	// Content-Length: 5, 5: the header says 5, as the framing does.
	got, body, err := getRT(t, c, be.addr(), "GET", "/cllist")
	require.NoError(t, err)
	require.Equal(t, "hello", body)
	require.Equal(t, []string{"5"}, got.Header["Content-Length"])
}

// TestRoundTripPooling: the connection is pooled after a body read to
// its end (and a response without one), closed after a body closed
// early, after Connection: close in the request or the response, and
// after a 1xx the ClientTrace refused; 1xx heads are relayed.
func TestRoundTripPooling(t *testing.T) {
	be := cannedServer(t, map[string]string{
		"/ok":    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"/empty": "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"/close": "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
		"/103":   "HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	})
	c := newTestClient(t, Config{HeadTimeout: 5 * time.Second})
	do := func(path string, mod func(*http.Request)) (*http.Response, error) {
		out, err := http.NewRequestWithContext(t.Context(), "GET", "http://"+be.addr()+path, nil)
		require.NoError(t, err)
		if mod != nil {
			mod(out)
		}
		return c.RoundTrip(out)
	}
	resp, err := do("/ok", nil)
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, "hello", string(b))
	require.Equal(t, 1, c.IdleConns(), "pooled at the body's end, before Close")
	require.NoError(t, resp.Body.Close())
	n, err := resp.Body.Read(make([]byte, 1))
	require.Equal(t, 0, n)
	require.Equal(t, io.EOF, err, "a Read past the end does not touch the pooled connection")

	resp, err = do("/empty", nil)
	require.NoError(t, err)
	require.Equal(t, http.NoBody, resp.Body)
	require.Equal(t, 1, c.IdleConns())

	resp, err = do("/ok", nil)
	require.NoError(t, err)
	require.Equal(t, 0, c.IdleConns())
	require.NoError(t, resp.Body.Close())
	require.NoError(t, resp.Body.Close(), "a second Close does nothing")
	_, err = resp.Body.Read(make([]byte, 1))
	require.ErrorIs(t, err, http.ErrBodyReadAfterClose)
	require.Equal(t, 0, c.IdleConns(), "closed before its end: not pooled")

	for _, tc := range []struct {
		path string
		mod  func(*http.Request)
	}{{"/close", nil}, {"/ok", func(r *http.Request) { r.Close = true }}} {
		resp, err = do(tc.path, tc.mod)
		require.NoError(t, err)
		_, err = io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, 0, c.IdleConns(), tc.path)
	}

	var got []string
	relay := func(fail error) func(*http.Request) {
		return func(r *http.Request) {
			trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				got = append(got, itoa(code)+" "+h.Get("Link"))
				return fail
			}}
			*r = *r.WithContext(httptrace.WithClientTrace(r.Context(), trace))
		}
	}
	resp, err = do("/103", relay(nil))
	require.NoError(t, err)
	_, err = io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, []string{"103 </a>"}, got)
	require.Equal(t, 1, c.IdleConns())
	errRefused := errors.New("refused")
	_, err = do("/103", relay(errRefused))
	require.ErrorIs(t, err, errRefused)
	require.Equal(t, 0, c.IdleConns())
	resp, err = do("/103", nil)
	require.NoError(t, err, "skipped without a trace")
	require.NoError(t, resp.Body.Close())
}

// TestRoundTripCloseWhileReading: Close from another goroutine ends a
// Read blocked on the backend (race-free), and the connection is closed.
func TestRoundTripCloseWhileReading(t *testing.T) {
	be := startRaw(t, func(c net.Conn, _ *http.Request) bool {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
		_, _ = io.Copy(io.Discard, c) // the rest never comes
		return false
	})
	c := newTestClient(t, Config{HeadTimeout: 5 * time.Second})
	out, err := http.NewRequestWithContext(t.Context(), "GET", "http://"+be.addr()+"/", nil)
	require.NoError(t, err)
	resp, err := c.RoundTrip(out)
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Go(func() {
		time.Sleep(20 * time.Millisecond)
		require.NoError(t, resp.Body.Close())
	})
	_, err = io.ReadAll(resp.Body)
	require.Error(t, err)
	wg.Wait()
	require.Equal(t, 0, c.IdleConns())
	require.Eventually(t, func() bool { return be.closes.Load() == 1 }, 5*time.Second, time.Millisecond)
}

// TestRoundTripRefusesOthers: a request Handles refuses is not sent.
func TestRoundTripRefusesOthers(t *testing.T) {
	c := newTestClient(t, Config{})
	out, err := http.NewRequestWithContext(t.Context(), "POST", "http://192.0.2.1/", strings.NewReader("x"))
	require.NoError(t, err)
	_, err = c.RoundTrip(out)
	require.ErrorIs(t, err, errNotHandled)
}
