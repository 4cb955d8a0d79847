package smartproxy

import (
	"bufio"
	"bytes"
	"context"
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

// The fast forward's tests: a raw backend records the bytes of each
// request head it receives and answers from a script, so that the
// outgoing head (field order included: ReverseProxy's http.Request.Write
// sorts the fields, the fast forward keeps the client's order, which is
// how these tests see that it ran) and the response framing are checked
// byte for byte.

// scriptBackend records request heads and answers each with answer's
// bytes; answer returning "" closes the connection without an answer,
// one starting with "!" closes it after the answer (the "!" not sent).
type scriptBackend struct {
	*backend
	mu    sync.Mutex
	heads []string
	n     int // requests seen
}

func startScriptBackend(t *testing.T, answer func(head string, body []byte, nth int) string) *scriptBackend {
	t.Helper()
	sb := &scriptBackend{}
	sb.backend = startBackend(t, "127.0.0.1:0", func(c net.Conn) {
		br := bufio.NewReader(c)
		for nth := 0; ; nth++ {
			var head strings.Builder
			cl := 0
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				head.WriteString(line)
				if line == "\r\n" {
					break
				}
				if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "content-length") {
					cl, _ = strconv.Atoi(strings.TrimSpace(v))
				}
			}
			body := make([]byte, cl)
			if _, err := io.ReadFull(br, body); err != nil {
				return
			}
			sb.mu.Lock()
			sb.heads = append(sb.heads, head.String())
			sb.n++
			sb.mu.Unlock()
			a := answer(head.String(), body, nth)
			if a == "" {
				return
			}
			closeAfter := a[0] == '!'
			if _, err := io.WriteString(c, strings.TrimPrefix(a, "!")); err != nil || closeAfter {
				return
			}
		}
	})
	return sb
}

func (sb *scriptBackend) lastHead() string {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if len(sb.heads) == 0 {
		return ""
	}
	return sb.heads[len(sb.heads)-1]
}

// okAnswer is a 2-byte 200 response.
const okAnswer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

// exchangeKeep writes raw on c and reads one response with net/http's
// client reader (framing checked), returning it and its body; 1xx heads
// before it are skipped.
func exchangeKeep(t *testing.T, c net.Conn, br *bufio.Reader, raw, method string) (*http.Response, string) {
	t.Helper()
	return exchangeKeepInterim(t, c, br, raw, method, nil)
}

// exchangeKeepInterim is exchangeKeep appending the 1xx heads it reads
// to *interim, when set ("code Link").
func exchangeKeepInterim(t *testing.T, c net.Conn, br *bufio.Reader, raw, method string, interim *[]string) (*http.Response, string) {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err := io.WriteString(c, raw)
	require.NoError(t, err)
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	require.NoError(t, err)
	for resp.StatusCode < 200 { // relayed 1xx heads: the final one follows
		if interim != nil {
			*interim = append(*interim, strconv.Itoa(resp.StatusCode)+" "+resp.Header.Get("Link"))
		}
		resp, err = http.ReadResponse(br, &http.Request{Method: method})
		require.NoError(t, err)
	}
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

// TestFastForwardRequestHead: the outgoing head is the client's fields
// in their order, hop-by-hop fields and those Connection names dropped,
// "Te: trailers" kept, X-Forwarded-*, X-Real-Ip and Forwarded replaced,
// Host the target's, no User-Agent added; with templates, a rewrite and
// the client's Host kept, those apply as on ReverseProxy.
func TestFastForwardRequestHead(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port, port2 := lp.port(t), lp.port(t)
	be := startScriptBackend(t, func(string, []byte, int) string { return okAnswer })
	no := false
	tmpl := httpRouteOn("t", port2, be.addr(), "a.test")
	tmpl.Action.Options = &ActionOptions{RewriteHostHeader: &no}
	tmpl.Action.Headers = &HeaderActions{
		Request:  map[string]string{"X-Client": "{clientIp}", "Aa": "", "Zz": "new-{headers.aa}", "X-Forwarded-Proto": "custom"},
		Response: map[string]string{"X-Route": "{routeName}", "Server": ""},
	}
	tmpl.Action.Rewrite = &URLRewrite{Pattern: "^/v1/(.*)", Target: "/$1"}
	startFastTestProxy(t, lp, Options{Routes: []Route{httpRouteOn("r", port, be.addr(), "a.test"), tmpl}})

	c := dial(t, port)
	br := bufio.NewReader(c)
	resp, body := exchangeKeep(t, c, br, "GET /p?q=1 HTTP/1.1\r\nHost: a.test\r\nZz: 1\r\nConnection: keep-alive, X-Drop\r\n"+
		"X-Drop: y\r\nKeep-Alive: 5\r\nTe: trailers, deflate\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n"+
		"Proxy-Authorization: x\r\nAa: 2\r\n\r\n", "GET")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "ok", body)
	require.Equal(t, "GET /p?q=1 HTTP/1.1\r\nHost: "+be.addr()+"\r\nZz: 1\r\nAa: 2\r\nTe: trailers\r\n"+
		"X-Forwarded-For: 127.0.0.1\r\nX-Real-Ip: 127.0.0.1\r\nX-Forwarded-Host: a.test\r\nX-Forwarded-Proto: http\r\n"+
		"Forwarded: for=127.0.0.1;host=\"a.test\";proto=http\r\n\r\n", be.lastHead())

	// A POST with a body: the length re-emitted, the body behind the head.
	resp, _ = exchangeKeep(t, c, br, "POST /v1/x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nUser-Agent: ua\r\n\r\nhello", "POST")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "POST /v1/x HTTP/1.1\r\nHost: "+be.addr()+"\r\nUser-Agent: ua\r\nX-Forwarded-For: 127.0.0.1\r\n"+
		"X-Real-Ip: 127.0.0.1\r\nX-Forwarded-Host: a.test\r\nX-Forwarded-Proto: http\r\n"+
		"Forwarded: for=127.0.0.1;host=\"a.test\";proto=http\r\nContent-Length: 5\r\n\r\n", be.lastHead())

	c2 := dial(t, port2)
	br2 := bufio.NewReader(c2)
	resp, _ = exchangeKeep(t, c2, br2, "GET /v1/deep/x?y=1 HTTP/1.1\r\nHost: a.test:"+strconv.Itoa(port2)+"\r\nZz: 1\r\nAa: 2\r\n\r\n", "GET")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "t", resp.Header.Get("X-Route"))
	head := be.lastHead()
	require.True(t, strings.HasPrefix(head, "GET /deep/x?y=1 HTTP/1.1\r\nHost: a.test:"+strconv.Itoa(port2)+"\r\n"), head)
	require.NotContains(t, head, "Aa:")
	require.NotContains(t, head, "Zz: 1")
	require.Contains(t, head, "Zz: new-2\r\n")
	require.Contains(t, head, "X-Client: 127.0.0.1\r\n")
	require.Contains(t, head, "X-Forwarded-Proto: custom\r\n")
	require.Equal(t, 1, strings.Count(head, "X-Forwarded-Proto"))
}

// TestFastForwardResponses: every framing reaches the client right over
// one keep-alive client connection and one pooled backend connection
// (until the close-delimited one): HEAD and 304 with their length, 204,
// chunked with trailers, 1xx skipped, a large body both ways; response
// templates apply and hop-by-hop fields are dropped.
func TestFastForwardResponses(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	large := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	be := startScriptBackend(t, func(head string, body []byte, _ int) string {
		path := strings.Fields(head)[1]
		switch path {
		case "/head":
			return "HTTP/1.1 200 OK\r\nContent-Length: 500\r\nX-A: 1\r\n\r\n"
		case "/204":
			return "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"
		case "/304":
			return "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\nEtag: \"e\"\r\n\r\n"
		case "/chunked":
			return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum, Content-Length\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 1\r\n\r\n" +
				"3\r\nabc\r\n3\r\ndef\r\n0\r\nX-Sum: 6\r\nContent-Length: 99\r\n\r\n"
		case "/1xx":
			return "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
		case "/large":
			return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(large)) + "\r\n\r\n" + string(large)
		case "/upload":
			return "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n" + strconv.Itoa(1e9+len(body))
		}
		return okAnswer
	})
	r := httpRouteOn("r", port, be.addr(), "a.test")
	r.Action.Headers = &HeaderActions{Response: map[string]string{"X-Route": "{routeName}", "X-A": ""}}
	startFastTestProxy(t, lp, Options{Routes: []Route{r}})

	c := dial(t, port)
	br := bufio.NewReader(c)
	var interim []string
	get := func(method, path string) (*http.Response, string) {
		return exchangeKeepInterim(t, c, br, method+" "+path+" HTTP/1.1\r\nHost: a.test\r\n\r\n", method, &interim)
	}
	resp, body := get("HEAD", "/head")
	require.Equal(t, int64(500), resp.ContentLength)
	require.Empty(t, body)
	require.Empty(t, resp.Header.Get("X-A"), "deleted by the template")
	require.Equal(t, "r", resp.Header.Get("X-Route"))
	resp, _ = get("GET", "/204")
	require.Equal(t, 204, resp.StatusCode)
	resp, _ = get("GET", "/304")
	require.Equal(t, 304, resp.StatusCode)
	require.Equal(t, `"e"`, resp.Header.Get("Etag"))
	resp, body = get("GET", "/chunked")
	require.Equal(t, "abcdef", body)
	require.Equal(t, "6", resp.Trailer.Get("X-Sum"))
	// A name no trailer may carry is neither announced nor sent (Go's client, which read
	// this response, refuses a response that announces one).
	require.NotContains(t, resp.Trailer, "Content-Length")
	require.Empty(t, resp.Header.Get("X-Hop"))
	require.Empty(t, resp.Header.Get("Keep-Alive"))
	resp, body = get("GET", "/1xx")
	require.Equal(t, []string{"100 ", "103 </s>"}, interim, "1xx heads relayed, as ReverseProxy relays them")
	require.Equal(t, 201, resp.StatusCode)
	require.Equal(t, "ok", body)
	resp, body = get("GET", "/large")
	require.Equal(t, int64(len(large)), resp.ContentLength)
	require.Equal(t, string(large), body)
	require.Equal(t, int64(1), be.accepts.Load(), "one pooled backend connection for all")
	// Over maxHeldBody: on the event loops (the default) the connection goes on on the
	// goroutine path from here, whose client pools its own backend connections.
	resp, body = exchangeKeep(t, c, br, "POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: "+
		strconv.Itoa(len(large))+"\r\n\r\n"+string(large), "POST")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, strconv.Itoa(1e9+len(large)), body)
}

// TestFastForwardCloseDelimited: a response delimited by the backend's
// close reaches the client complete (re-framed), and its backend
// connection is not reused.
func TestFastForwardCloseDelimited(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	closer := startScriptBackend(t, func(string, []byte, int) string { return "!HTTP/1.1 200 OK\r\nX: y\r\n\r\nuntil close" })
	startFastTestProxy(t, lp, Options{Routes: []Route{httpRouteOn("r", port, closer.addr(), "a.test")}})
	c := dial(t, port)
	br := bufio.NewReader(c)
	for range 2 {
		resp, body := exchangeKeep(t, c, br, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", "GET")
		require.Equal(t, "until close", body)
		require.Equal(t, "y", resp.Header.Get("X"))
	}
	require.Equal(t, int64(2), closer.accepts.Load())
}

// TestFastForwardFailures: a pooled backend connection closed as the
// request arrives is replaced (stale retry); a refused dial goes to the
// next host; a backend that sends no head in time is 504; a response
// head the strict parser refuses is 502; a body that breaks off reaches
// the client as far as it came, then the connection closes.
func TestFastForwardFailures(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := startScriptBackend(t, func(head string, _ []byte, nth int) string {
		switch strings.Fields(head)[1] {
		case "/stale":
			if nth == 1 {
				return "" // closes the kept connection without an answer
			}
		case "/slow":
			time.Sleep(400 * time.Millisecond)
		case "/bad":
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
		case "/broken":
			return "!HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"
		}
		return okAnswer
	})
	// The same port on 127.0.0.2, where nothing listens: a refused dial.
	dead := "127.0.0.2:" + strconv.Itoa(be.port)
	r := NewRoute("r").Ports(port).Domains("a.test").ForwardTo(dead, be.addr()).Route()
	startFastTestProxy(t, lp, Options{ConnectTimeout: 200 * time.Millisecond, Routes: []Route{r}})

	req := func(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: a.test\r\n\r\n" }
	c := dial(t, port)
	br := bufio.NewReader(c)
	for range 3 { // the second finds its pooled connection closed
		resp, body := exchangeKeep(t, c, br, req("/stale"), "GET")
		require.Equal(t, 200, resp.StatusCode)
		require.Equal(t, "ok", body)
	}
	resp, _ := exchangeKeep(t, c, br, req("/slow"), "GET")
	require.Equal(t, http.StatusGatewayTimeout, resp.StatusCode)
	resp, _ = exchangeKeep(t, c, br, req("/bad"), "GET")
	require.Equal(t, http.StatusBadGateway, resp.StatusCode)

	got := rawExchange(t, port, req("/broken"))
	require.True(t, strings.HasPrefix(got, "HTTP/1.1 200 OK\r\n"), got)
	require.Contains(t, got, "Content-Length: 100\r\n")
	require.True(t, strings.HasSuffix(got, "\r\n\r\npartial"), got)
}

// TestFastForwardClientBodyBreaksOff: a client whose Content-Length
// body ends early (it half-closes) gets a 400 at once, not a wait for
// the backend's head timeout, and the backend never answers a request
// the proxy did not finish.
func TestFastForwardClientBodyBreaksOff(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := startScriptBackend(t, func(string, []byte, int) string { return okAnswer })
	startFastTestProxy(t, lp, Options{ConnectTimeout: 5 * time.Second,
		Routes: []Route{httpRouteOn("r", port, be.addr(), "a.test")}})
	c := dial(t, port)
	_, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100000\r\n\r\n"+strings.Repeat("x", 20000))
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	start := time.Now()
	got, err := readAllUntilClose(t, c)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(got, "HTTP/1.1 400 "), got)
	require.Less(t, time.Since(start), 3*time.Second)
	be.mu.Lock()
	defer be.mu.Unlock()
	require.Zero(t, be.n, "the backend saw no complete request")
}

// TestFastForwardBodyNextHost: a POST whose connect is refused goes to
// the next host with its whole body, the bytes read with the head
// included (nothing of it was taken before the connect failed).
func TestFastForwardBodyNextHost(t *testing.T) {
	t.Parallel()
	be := startScriptBackend(t, func(_ string, body []byte, _ int) string {
		sum := strconv.Itoa(len(body)) + ":" + string(body[:3]) + string(body[len(body)-3:])
		return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(sum)) + "\r\n\r\n" + sum
	})
	// A proxy per size: the refusing host, once failed, is not dialled again by the same one.
	for _, size := range []int{6, 100 << 10} { // held whole; streamed
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			t.Parallel()
			lp := newListenerPool(t)
			port := lp.port(t)
			var mu sync.Mutex
			var dialed []string
			dialer := func(ctx context.Context, network, addr string) (net.Conn, error) {
				mu.Lock()
				dialed = append(dialed, addr)
				mu.Unlock()
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			}
			r := NewRoute("lb").Ports(port).Domains("a.test").
				Target(Target{Host: StringList{"127.0.0.2", "127.0.0.1"}, Port: TargetPort(be.port)}).Route()
			startFastTestProxy(t, lp, Options{Routes: []Route{r}, Dial: dialer})
			body := "abc" + strings.Repeat("x", size-6) + "xyz"
			c := dial(t, port)
			resp, got := exchangeKeep(t, c, bufio.NewReader(c), "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: "+
				strconv.Itoa(size)+"\r\n\r\n"+body, "POST")
			require.Equal(t, 200, resp.StatusCode)
			require.Equal(t, strconv.Itoa(size)+":abcxyz", got)
			mu.Lock()
			defer mu.Unlock()
			p := ":" + strconv.Itoa(be.port)
			require.Equal(t, []string{"127.0.0.2" + p, "127.0.0.1" + p}, dialed, "the refusing host first, then the next")
		})
	}
}

// TestFastForwardInterimFields: a relayed 1xx head loses its framing and
// hop-by-hop fields as the final head does (a lenient client taking a
// 1xx's Content-Length would eat the next response's bytes).
func TestFastForwardInterimFields(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := startScriptBackend(t, func(string, []byte, int) string {
		return "HTTP/1.1 103 Early Hints\r\nContent-Length: 7\r\nConnection: x-hop\r\nX-Hop: 1\r\nLink: </s>\r\n\r\n" +
			"HTTP/1.1 204 No Content\r\n\r\n"
	})
	startFastTestProxy(t, lp, Options{Routes: []Route{httpRouteOn("r", port, be.addr(), "a.test")}})
	c := dial(t, port)
	_, err := io.WriteString(c, "GET /a HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
	require.NoError(t, err)
	raw, err := io.ReadAll(c)
	require.NoError(t, err)
	early, final, ok := strings.Cut(string(raw), "\r\n\r\n")
	require.True(t, ok, "%q", raw)
	require.True(t, strings.HasPrefix(early, "HTTP/1.1 103 "), "%q", raw)
	require.Contains(t, early, "Link: </s>")
	require.NotContains(t, strings.ToLower(early), "content-length")
	require.NotContains(t, strings.ToLower(early), "x-hop")
	require.True(t, strings.HasPrefix(final, "HTTP/1.1 204 "), "%q", raw)
}
