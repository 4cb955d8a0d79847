package smartproxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Chunked uploads and TLS backends on the fast forward: that they take it
// (the fast forward's h1client pool holds the backend connection and no
// http.Transport is made), and what the backend's raw bytes show.

// uploadBackend parses requests with net/http's reader, records every
// byte it receives and answers each complete request with its body's
// length and its X-Sum trailer; a body that fails is recorded as such.
type uploadBackend struct {
	*backend
	mu       sync.Mutex
	raw      bytes.Buffer
	complete int
	failed   []string
}

func startUploadBackend(t *testing.T) *uploadBackend {
	ub := &uploadBackend{}
	ub.backend = startBackend(t, "127.0.0.1:0", func(c net.Conn) {
		br := bufio.NewReader(io.TeeReader(c, ub))
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			body, err := io.ReadAll(req.Body)
			ub.mu.Lock()
			if err != nil {
				ub.failed = append(ub.failed, err.Error())
			} else {
				ub.complete++
			}
			ub.mu.Unlock()
			if err != nil {
				return
			}
			answer := strconv.Itoa(len(body)) + "|" + req.Trailer.Get("X-Sum")
			if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(answer), answer); err != nil {
				return
			}
		}
	})
	return ub
}

func (ub *uploadBackend) Write(p []byte) (int, error) {
	ub.mu.Lock()
	defer ub.mu.Unlock()
	return ub.raw.Write(p)
}

func (ub *uploadBackend) received() string {
	ub.mu.Lock()
	defer ub.mu.Unlock()
	return ub.raw.String()
}

// requireFastForwarded: p's requests took the fast forward, not the
// reverse proxy.
func requireFastForwarded(t *testing.T, p *Proxy) {
	t.Helper()
	require.Positive(t, p.http.h1.IdleConns(), "the fast forward's pool holds the backend connection")
	require.Zero(t, transportCount(p), "no http.Transport was needed")
}

// TestFastForwardChunkedUpload: a chunked upload that arrives in pieces
// is decoded and sent re-chunked: the backend gets the data, the
// announced trailer (not those its head could not announce any more),
// and none of the client's chunk framing (its extension); the client's
// connection closes after the response.
func TestFastForwardChunkedUpload(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := startUploadBackend(t)
	p := startFastTestProxy(t, lp, Options{Routes: []Route{httpRouteOn("r", port, be.addr(), "a.test")}})
	c := dial(t, port)
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	big := strings.Repeat("b", 100<<10)
	for _, part := range []string{
		"POST /up HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5;secret=ext\r\nhello\r\n",
		"6\r\n world\r\n",
		strconv.FormatInt(int64(len(big)), 16) + "\r\n" + big + "\r\n",
		"0\r\nX-Sum: 42\r\nX-Late: 1\r\nContent-Length: 1\r\n\r\n", // names the head did not announce
	} {
		_, err := io.WriteString(c, part)
		require.NoError(t, err)
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "POST"})
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, strconv.Itoa(11+len(big))+"|42", string(body))
	require.True(t, resp.Close, "a chunked upload's connection closes after the response")
	raw := be.received()
	require.Contains(t, raw, "\r\nTransfer-Encoding: chunked\r\n")
	require.Contains(t, raw, "\r\nTrailer: X-Sum\r\n")
	require.NotContains(t, raw, "secret", "the client's chunk extension is not forwarded")
	require.True(t, strings.HasSuffix(raw, "\r\n0\r\nX-Sum: 42\r\n\r\n"), "%q", raw[max(0, len(raw)-40):])
	requireFastForwarded(t, p)
}

// TestFastForwardChunkedBreaksOff: a framing error in the chunks that
// came with the head is answered 400 with nothing sent; one that comes
// later leaves the backend an incomplete request (never a complete one,
// never the client's bytes as a request of their own) and the client a
// 400.
func TestFastForwardChunkedBreaksOff(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := startUploadBackend(t)
	startFastTestProxy(t, lp, Options{Routes: []Route{httpRouteOn("r", port, be.addr(), "a.test")}})
	head := "POST /up HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
	smuggled := "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n"
	for _, parts := range [][]string{
		{head + "3\r\nabcX\r\n" + smuggled},
		{head + "3\r\nabc\r\n", "2\r\nde\r\n", "zz\r\n" + smuggled},
		{head + "3\r\nabc\r\n", "3\nabc\r\n" + smuggled},
	} {
		c := dial(t, port)
		require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
		for _, part := range parts {
			_, err := io.WriteString(c, part)
			require.NoError(t, err)
			time.Sleep(30 * time.Millisecond)
		}
		got, err := readAllUntilClose(t, c)
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(got, "HTTP/1.1 400 "), "%q: %s", parts, got)
		require.Equal(t, 1, strings.Count(got, "HTTP/1.1 "), "one response: %s", got)
	}
	require.Eventually(t, func() bool {
		be.mu.Lock()
		defer be.mu.Unlock()
		return len(be.failed) == 2
	}, 5*time.Second, 10*time.Millisecond, "the two streamed uploads broke off at the backend")
	be.mu.Lock()
	defer be.mu.Unlock()
	require.Zero(t, be.complete, "the backend never saw a complete request")
	require.NotContains(t, be.raw.String(), "smuggled")
	require.NotContains(t, be.raw.String(), "\r\n0\r\n\r\n")
}

// TestFastForwardReencryptNoCrossSNIReuse: TestHTTPReencryptOriginalNoCrossSNIReuse
// on the fast path: HTTP/1.1 clients sending alternating SNIs, in turn
// and at once, on a route whose backend serverName is "original": each
// backend connection was verified for, and carries, one SNI only.
func TestFastForwardReencryptNoCrossSNIReuse(t *testing.T) {
	t.Parallel()
	b := startSNIBackend(t)
	lp := newListenerPool(t)
	port := lp.port(t)
	p := startFastTestProxy(t, lp, Options{Certificates: newTestStore(t),
		Routes: originalRoutes(port, b.addr(), "http1")})
	c, _ := proxyClient(t, port, insecureTLS("", "http/1.1"), false)
	for i := range 10 {
		name := []string{"a.example.com", "b.example.com"}[i%2]
		_, body := do(t, c, "GET", "https://"+name+"/", nil, nil)
		require.Equal(t, "sni="+name+" host="+b.addr()+" proto=HTTP/1.1", body)
	}
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			name := fmt.Sprintf("c%d.example.com", i%4)
			_, body := do(t, c, "GET", "https://"+name+"/", nil, nil)
			require.True(t, strings.HasPrefix(body, "sni="+name+" "), body)
		})
	}
	wg.Wait()
	b.requireOneSNIPerConn(t)
	requireFastForwarded(t, p)
	b.mu.Lock()
	defer b.mu.Unlock()
	require.LessOrEqual(t, len(b.byConn), 2+40, "connections are reused within an SNI")
}

// TestFastForwardReencryptHandshakeTimeout: a backend that accepts but
// never completes the TLS handshake is a 504 within ConnectTimeout, as
// http.Transport's TLSHandshakeTimeout makes it on the other stack.
func TestFastForwardReencryptHandshakeTimeout(t *testing.T) {
	t.Parallel()
	stuck := startBackend(t, "127.0.0.1:0", func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	lp := newListenerPool(t)
	port := lp.port(t)
	r := originalRoutes(port, stuck.addr(), "http1")
	startFastTestProxy(t, lp, Options{ConnectTimeout: 300 * time.Millisecond,
		Certificates: newTestStore(t), Routes: r})
	c, _ := proxyClient(t, port, insecureTLS("", "http/1.1"), false)
	start := time.Now()
	resp, _ := do(t, c, "GET", "https://a.example.com/", nil, nil)
	require.Equal(t, http.StatusGatewayTimeout, resp.StatusCode)
	require.Less(t, time.Since(start), 3*time.Second)
}
