package smartproxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestClassifyHTTP(t *testing.T) {
	t.Parallel()
	type want struct {
		isHTTP, decided bool
		skip            int
	}
	for in, w := range map[string]want{
		"GET / HTTP/1.1": {true, true, 0}, "GE": {false, false, 0}, "POST ": {false, false, 0},
		"PRI * HTTP/2.0": {true, true, 0}, "PRI * HTTP": {false, false, 0}, "PRI * http/": {true, true, 0},
		// Any method token in any case is a method: the HTTP layer decides.
		"get / HTTP/1.1": {true, true, 0}, "FOO / HTTP/1.1": {true, true, 0}, "QUERY /x HTTP/1.0\r\n": {true, true, 0},
		"M-SEARCH * HTTP/1.1": {true, true, 0}, "GET\t/": {true, true, 0}, "FOO  /  hTtP/": {true, true, 0},
		// GET needs no version (HTTP/0.9), nor a complete line.
		"GET ": {true, true, 0}, "get /x\r\n": {true, true, 0},
		// Empty lines before the request line are skipped (RFC 9112 §2.2).
		"\r\nGET / HTTP/1.1": {true, true, 2}, "\n\r\n\nFOO / HTTP/1.1": {true, true, 4},
		"\r\n": {false, false, 2}, "\r\nGE": {false, false, 2}, "\r\nPUT /x": {false, false, 2},
		// Not a request line: a non-token byte first, a lone word, or a
		// whole line without a version.
		"SSH-2.0-OpenSSH\r\n": {false, true, 0}, "PING\r\n": {false, true, 0}, "PING x\n": {false, true, 0},
		"SET key v\r\n": {false, true, 0}, "FOO /x\r\nHTTP/1.1": {false, true, 0},
		"\x16\x03\x01": {false, true, 0}, " GET /": {false, true, 0}, "\r\n[x": {false, true, 0},
		"*1\r\n$4\r\nPING": {false, true, 0}, "\x00\x00\x00\x08": {false, true, 0},
	} {
		v, decided, skip := classifyHTTP([]byte(in), false)
		require.Equal(t, w, want{v == verdictHTTP, decided, skip}, "%q", in)
	}
	// Where routes check requests (strict), whatever a lenient parser
	// might read as a request line is HTTP: any token and whitespace, with
	// any version or none (Node takes RTSP/ and ICE/ versions, old servers
	// HTTP/0.9 with any method), leading whitespace and odd separators
	// (Python's http.server splits on VT, FF, 0x1c-0x1f, 0x85, 0xa0).
	type strictWant struct {
		v       httpVerdict
		decided bool
	}
	for in, w := range map[string]strictWant{
		"PING x\n": {verdictLookalike, true}, "SET key v\r\n": {verdictLookalike, true},
		"POST /x RTSP/1.1\r\n": {verdictLookalike, true}, "SOURCE /x ICE/1.0\r\n": {verdictLookalike, true},
		"DELETE /x\r\n": {verdictLookalike, true}, " GET / HTTP/1.1": {verdictLookalike, true},
		"\tGET /": {verdictLookalike, true}, "\x0bGET /": {verdictLookalike, true}, "\x1cGET /": {verdictLookalike, true},
		"\xa0GET /": {verdictLookalike, true}, "GET\x0b/x": {verdictLookalike, true}, "HEAD\x0c/x": {verdictLookalike, true},
		"\r\n GET /": {verdictLookalike, true}, "GET / HTTP/1.1": {verdictHTTP, true}, "\r\nget /x": {verdictHTTP, true},
		"PUT /x": {verdictOther, false}, "  ": {verdictOther, false}, " GE": {verdictOther, false},
		"PING\r\n": {verdictOther, true}, "SSH-2.0-OpenSSH\r\n": {verdictOther, true}, "\x00GET /": {verdictOther, true},
		"\x16\x03\x01": {verdictOther, true}, "*1\r\n$4\r\nPING": {verdictOther, true}, "GET\x00/": {verdictOther, true},
	} {
		v, decided, _ := classifyHTTP([]byte(in), true)
		require.Equal(t, w, strictWant{v, decided}, "strict %q", in)
	}
	// An endless word or endless empty lines are HTTP once the cap is
	// reached (the HTTP layer refuses them), never raw.
	for _, in := range [][]byte{bytes.Repeat([]byte("A"), sniffLineCap), bytes.Repeat([]byte("\r\n"), sniffLineCap/2),
		append([]byte("PUT "), bytes.Repeat([]byte("x"), sniffLineCap)...)} {
		for _, strict := range []bool{false, true} {
			v, decided, _ := classifyHTTP(in, strict)
			require.True(t, v == verdictHTTP && decided, "%.8q… at the cap", in)
		}
	}
}

// talk writes msg on c and returns everything read until the proxy
// closes the connection (or 3 s pass).
func talk(t *testing.T, c net.Conn, msg string) string {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	_, err := io.WriteString(c, msg)
	require.NoError(t, err)
	got, _ := io.ReadAll(c)
	return string(got)
}

// TestHTTPChecksNotBypassedThroughRawFallback is issue 9's critical hole
// as a class: a first request whose method, spelling or leading empty
// lines the old sniffer did not take for HTTP was forwarded as raw TCP by
// a catch-all route, and every request pipelined after it reached the
// backend without the checks of its own route. On plain HTTP ("/admin/*"
// has basicAuth next to a catch-all) and on terminated TLS without ALPN
// (SNI a.test is open, b.test has basicAuth, both on one backend), the
// protected request must get a 401 or be refused as malformed, and
// neither it nor the client's forged X-Forwarded-For may reach the
// backend.
func TestHTTPChecksNotBypassedThroughRawFallback(t *testing.T) {
	t.Parallel()
	firsts := []struct {
		line  string
		valid bool // the HTTP layer serves it (else it is refused: 400, or closed unanswered)
	}{
		{"FOO / HTTP/1.1", true}, {"QUERY / HTTP/1.1", true}, {"PURGE / HTTP/1.1", true},
		{"get / HTTP/1.1", true}, {"M-SEARCH / HTTP/1.1", true}, {"PRI / HTTP/1.1", true},
		{"\r\nGET / HTTP/1.1", true}, {"\r\n\r\nFOO / HTTP/1.1", true}, {"\nPURGE / HTTP/1.1", true},
		{"GET / http/1.1", false}, {"GET\t/ HTTP/1.1", false}, {"GET  / HTTP/1.1", false},
		{"GET / HTTP/1.1 x", false}, {"GET /x", false}, {"FOO /x hTTP/1.1", false},
		// Found by an attack run on the first version of this rule: what
		// Node (RTSP/ICE versions) or Python's http.server (any whitespace)
		// would have served raw.
		{"POST /x RTSP/1.1", false}, {"SOURCE /x ICE/1.0", false}, {" GET / HTTP/1.1", false},
		{"\tGET / HTTP/1.1", false}, {"\xa0GET / HTTP/1.1", false}, {"GET\x0b/ HTTP/1.1", false},
		{"DELETE /x", false},
	}
	auth := &RouteSecurity{BasicAuth: &BasicAuth{Users: []BasicAuthUser{{Username: "u", Password: "p"}}}}
	for _, kind := range []string{"http", "tls"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			rb := startRecordingBackend(t)
			lp := newListenerPool(t)
			port := lp.port(t)
			var routes []Route
			protected, host := "/admin/secret", "x.test"
			if kind == "http" {
				admin := NewRoute("admin").Ports(port).ForwardTo(rb.addr()).Route()
				admin.Match.Path = "/admin/*"
				admin.Security = auth
				routes = []Route{admin, NewRoute("catch-all").Ports(port).ForwardTo(rb.addr()).Route()}
			} else {
				// TS-style terminate routes: no HTTP field on the open one.
				open := NewRoute("a").Ports(port).Domains("a.test").ForwardTo(rb.addr()).Route()
				open.Action.TLS = &RouteTLS{Mode: TLSTerminate}
				closed := NewRoute("b").Ports(port).Domains("b.test").ForwardTo(rb.addr()).Route()
				closed.Action.TLS = &RouteTLS{Mode: TLSTerminate}
				closed.Security = auth
				routes, protected, host = []Route{open, closed}, "/b-secret", "b.test"
			}
			startTestProxy(t, lp, Options{Routes: routes, Certificates: testCertStore(t)})
			for i, f := range firsts {
				c := net.Conn(dial(t, port))
				if kind == "tls" {
					tc := tls.Client(c, insecureTLS("a.test")) // no ALPN: the stream is sniffed
					require.NoError(t, tc.Handshake())
					c = tc
				}
				msg := f.line + "\r\nHost: a.test\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n" +
					"GET " + protected + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n"
				got := talk(t, c, msg)
				_ = c.Close()
				require.NotContains(t, got, "served "+protected, "case %d %q: the protected request was served", i, f.line)
				if f.valid {
					require.Contains(t, got, "HTTP/1.1 401", "case %d %q: the pipelined request must meet basicAuth", i, f.line)
				} else {
					// A malformed request line gets 400; a lookalike that only
					// a lenient parser would take for one is closed unanswered.
					require.Regexp(t, `^(HTTP/1\.1 400 |$)`, got, "case %d %q: want it refused", i, f.line)
				}
			}
			rec := rb.received()
			require.NotContains(t, rec, protected, "a protected request reached the backend")
			require.NotContains(t, rec, "6.6.6.6", "the client's own X-Forwarded-For reached the backend")
		})
	}
}

// TestTerminatedSilenceIsNotRawOnHTTPPorts: on a port whose terminating
// routes have HTTP-level rules, a client that stays silent past the
// 500 ms sniff is still read as HTTP, so a request sent afterwards meets
// its own route's checks instead of being forwarded raw to the route its
// SNI chose. On a port without such rules silence still means a protocol
// where the server speaks first.
func TestTerminatedSilenceIsNotRawOnHTTPPorts(t *testing.T) {
	t.Parallel()
	rb := startRecordingBackend(t)
	greeter := startBackend(t, "127.0.0.1:0", func(c net.Conn) { _, _ = io.WriteString(c, "220 hello\r\n") })
	lp := newListenerPool(t)
	port, mailPort := lp.port(t), lp.port(t)
	open := NewRoute("a").Ports(port).Domains("a.test").ForwardTo(rb.addr()).Route()
	open.Action.TLS = &RouteTLS{Mode: TLSTerminate}
	closed := NewRoute("b").Ports(port).Domains("b.test").ForwardTo(rb.addr()).Route()
	closed.Action.TLS = &RouteTLS{Mode: TLSTerminate}
	closed.Security = &RouteSecurity{BasicAuth: &BasicAuth{Users: []BasicAuthUser{{Username: "u", Password: "p"}}}}
	mail := NewRoute("mail").Ports(mailPort).Domains("mail.test").ForwardTo(greeter.addr()).Route()
	mail.Action.TLS = &RouteTLS{Mode: TLSTerminate}
	startTestProxy(t, lp, Options{Routes: []Route{open, closed, mail}, Certificates: testCertStore(t)})

	tc := tls.Client(dial(t, port), insecureTLS("a.test"))
	require.NoError(t, tc.Handshake())
	time.Sleep(terminatedSniffWait + 200*time.Millisecond)
	got := talk(t, tc, "GET /b-secret HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n")
	_ = tc.Close()
	require.True(t, strings.HasPrefix(got, "HTTP/1.1 401"), "got %q", got)
	require.NotContains(t, rb.received(), "/b-secret")

	mc := tls.Client(dial(t, mailPort), insecureTLS("mail.test"))
	require.NoError(t, mc.Handshake())
	defer mc.Close()
	_ = mc.SetReadDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(mc).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "220 hello\r\n", line)
}

// TestSlowRequestLineIsNeverRaw: a request line trickled so slowly that
// the initial-data timeout passes before its first word ends is closed,
// not forwarded raw by the catch-all (which would let the rest of the
// line and every pipelined request skip the HTTP checks).
func TestSlowRequestLineIsNeverRaw(t *testing.T) {
	t.Parallel()
	rb := startRecordingBackend(t)
	lp := newListenerPool(t)
	port := lp.port(t)
	admin := NewRoute("admin").Ports(port).ForwardTo(rb.addr()).Route()
	admin.Match.Path = "/admin/*"
	admin.Security = &RouteSecurity{BasicAuth: &BasicAuth{Users: []BasicAuthUser{{Username: "u", Password: "p"}}}}
	startTestProxy(t, lp, Options{Routes: []Route{admin, NewRoute("all").Ports(port).ForwardTo(rb.addr()).Route()},
		InitialDataTimeout: 300 * time.Millisecond})
	c := dial(t, port)
	defer c.Close()
	_, err := io.WriteString(c, "\r\nGE")
	require.NoError(t, err)
	time.Sleep(500 * time.Millisecond)
	_, _ = io.WriteString(c, "T /admin/secret HTTP/1.1\r\nHost: x\r\n\r\n")
	awaitClose(t, c, 3*time.Second)
	require.Empty(t, rb.received())
}

// TestTerminateRouteOffersALPNPerClient: a terminate route written as a
// TS config writes it (no HTTP field) offers h2 and http/1.1 to a client
// that asks for them, and nothing to one that asks only for its own
// protocol, whose handshake must still succeed and which is forwarded as
// TCP.
func TestTerminateRouteOffersALPNPerClient(t *testing.T) {
	t.Parallel()
	web := echoBackend(t, "web")
	tcp := startBackend(t, "127.0.0.1:0", echo)
	lp := newListenerPool(t)
	port, dbPort := lp.port(t), lp.port(t)
	r := NewRoute("web").Ports(port).Domains("a.test").ForwardTo(web.addr()).Route()
	r.Action.TLS = &RouteTLS{Mode: TLSTerminate}
	db := NewRoute("db").Ports(dbPort).ForwardTo(tcp.addr()).Route()
	db.Action.TLS = &RouteTLS{Mode: TLSTerminate}
	startTestProxy(t, lp, Options{Routes: []Route{r, db}, Certificates: testCertStore(t)})

	client, _ := proxyClient(t, port, insecureTLS("a.test", "h2"), true)
	resp, body := do(t, client, http.MethodGet, "https://a.test/x", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	require.Equal(t, 2, resp.ProtoMajor, "an h2-only client gets h2")

	for _, protos := range [][]string{{"postgresql"}, nil} {
		tc := tls.Client(dial(t, dbPort), insecureTLS("db.test", protos...))
		require.NoError(t, tc.Handshake(), "ALPN %v", protos)
		require.Empty(t, tc.ConnectionState().NegotiatedProtocol)
		require.Equal(t, "\x00hello", roundTrip(t, tc, "\x00hello"))
		_ = tc.Close()
	}
}

// TestH2PrefaceOverTLSWithoutALPN: an HTTP/2 preface on a terminated
// stream that did not negotiate h2 is answered 400 and never reaches
// the backend as a "PRI *" request.
func TestH2PrefaceOverTLSWithoutALPN(t *testing.T) {
	t.Parallel()
	rb := startRecordingBackend(t)
	lp := newListenerPool(t)
	port := lp.port(t)
	r := NewRoute("web").Ports(port).Domains("a.test").ForwardTo(rb.addr()).Route()
	r.Action.TLS = &RouteTLS{Mode: TLSTerminate}
	startTestProxy(t, lp, Options{Routes: []Route{r}, Certificates: testCertStore(t)})
	for _, protos := range [][]string{nil, {"http/1.1"}} { // sniffed; negotiated HTTP/1.1
		tc := tls.Client(dial(t, port), insecureTLS("a.test", protos...))
		require.NoError(t, tc.Handshake())
		got := talk(t, tc, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
		_ = tc.Close()
		require.True(t, strings.HasPrefix(got, "HTTP/1.1 400"), "ALPN %v: got %q", protos, got)
	}
	require.Empty(t, rb.received())
}

// TestOverLimitHTTPClientGetsStatus: a client refused at admission on an
// HTTP port (over its per-IP cap) gets a 429 with Retry-After, not a
// bare reset; on a TCP port it is still just closed.
func TestOverLimitHTTPClientGetsStatus(t *testing.T) {
	t.Parallel()
	web := echoBackend(t, "web")
	lp := newListenerPool(t)
	port := lp.port(t)
	startTestProxy(t, lp, Options{Routes: []Route{httpRouteOn("web", port, web.addr(), "a.test")}, MaxConnectionsPerIP: 1})
	held := dial(t, port)
	defer held.Close()
	_, err := io.WriteString(held, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(held), nil)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	c := dial(t, port)
	defer c.Close()
	got := talk(t, c, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(strings.NewReader(got)), nil)
	require.NoError(t, err, "got %q", got)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	require.NotEmpty(t, resp.Header.Get("Retry-After"))
	require.True(t, resp.Close, "the refusal asks the client to close")
}
