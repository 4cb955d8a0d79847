package smartproxy

import (
	"bufio"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy/internal/h1parse"
)

// TestRewriteQueryBytesEscaped: a rewrite whose template puts a client's
// header into the query cannot end the request target on the wire: a
// space (and other bytes a target may not hold raw) goes out
// percent-encoded, on both HTTP stacks.
func TestRewriteQueryBytesEscaped(t *testing.T) {
	t.Parallel()
	for _, fast := range []bool{false, true} {
		lp := newListenerPool(t)
		port := lp.port(t)
		be := startScriptBackend(t, func(string, []byte, int) string { return okAnswer })
		rt := httpRouteOn("r", port, be.addr(), "a.test")
		rt.Action.Rewrite = &URLRewrite{Pattern: "^/v1/(.*)", Target: "/r?q={headers.x-q}"}
		startStackTestProxy(t, lp, Options{Routes: []Route{rt}}, fast)
		c := dial(t, port)
		resp, _ := exchangeKeep(t, c, bufio.NewReader(c), "GET /v1/a HTTP/1.1\r\nHost: a.test\r\nX-Q: 1 HTTP/1.0#\u00e9\r\n\r\n", "GET")
		require.Equal(t, 200, resp.StatusCode, "fast=%v", fast)
		line, _, _ := strings.Cut(be.lastHead(), "\r\n")
		require.Equal(t, "GET /r?q=1%20HTTP/1.0%23%C3%A9 HTTP/1.1", line, "fast=%v", fast)
	}
}

func TestEscapeQueryBytes(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"": "", "a=1&b=%20": "a=1&b=%20", "a b": "a%20b", "\x7f\t#": "%7F%09%23"} {
		require.Equal(t, want, escapeQueryBytes(in), "%q", in)
	}
}

// TestFrameChunk: a chunk is framed in place, its size in lower-case
// hex without leading zeros, as http.Request.Write frames one.
func TestFrameChunk(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 15, 16, 255, 4096, 32<<10 - chunkRoom - 2} {
		buf := make([]byte, chunkRoom+n+2)
		copy(buf[chunkRoom:], strings.Repeat("d", n))
		got := frameChunk(buf, n)
		size, data, ok := strings.Cut(string(got), "\r\n")
		require.True(t, ok)
		require.Equal(t, strings.ToLower(strings.TrimLeft(size, "0")), size)
		require.Equal(t, strings.Repeat("d", n)+"\r\n", data, "n=%d", n)
		require.Equal(t, n, parseHex(t, size))
	}
}

func parseHex(t *testing.T, s string) int {
	n := 0
	for _, c := range s {
		d := strings.IndexRune("0123456789abcdef", c)
		require.GreaterOrEqual(t, d, 0, s)
		n = n<<4 | d
	}
	return n
}

// TestTrailerNames: the announced names as Request.Write sends them.
func TestTrailerNames(t *testing.T) {
	t.Parallel()
	require.Empty(t, trailerNames(nil))
	require.Equal(t, []string{"X-A", "X-B"}, trailerNames(http.Header{"X-B": nil, "x-a": {"1"}}))
	require.True(t, forwardableTrailers(http.Header{"X-A": nil}))
	for _, k := range []string{"content-length", "Transfer-Encoding", "Trailer"} {
		require.False(t, forwardableTrailers(http.Header{k: nil}), k)
	}
}

// TestDropFieldSets: dropField's switch drops exactly the hop-by-hop
// names (the list relayHead uses too) and each set's replaced names, in
// any letter case, and no allocation is made for it.
func TestDropFieldSets(t *testing.T) { // not parallel: AllocsPerRun
	request := []string{"host", "content-length", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip", "forwarded"}
	response := []string{"content-length"}
	kept := []string{"accept", "content-type", "x-forwarded", "hosts", "te2", "connection-x", "", "x-forwarded-for-me-too-please"}
	check := func(set fieldSet, drop []string) {
		for _, n := range append(append([]string(nil), hopByHop[:]...), drop...) {
			for _, name := range []string{n, strings.ToUpper(n), http.CanonicalHeaderKey(n)} {
				require.True(t, dropField([]byte(name), nil, set), "%q dropped (set %d)", name, set)
			}
		}
		for _, n := range kept {
			require.False(t, dropField([]byte(n), nil, set), "%q kept (set %d)", n, set)
		}
	}
	check(requestReplaced, request)
	check(responseReplaced, response)
	require.False(t, dropField([]byte("Host"), nil, responseReplaced), "Host is a request's only")
	conns := []h1parse.Field{{Name: []byte("Connection"), Value: []byte("close, X-Hop")}}
	require.True(t, dropField([]byte("x-hop"), conns, responseReplaced), "named by Connection")
	name := []byte("X-Forwarded-Proto")
	require.Zero(t, testing.AllocsPerRun(100, func() { dropField(name, conns, requestReplaced) }))
}
