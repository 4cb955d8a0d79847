package smartproxy

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The equivalence tests of head fields: what each stack forwards of a
// request head to the backend and of a response head to the client,
// hop-by-hop fields, fields net/http's server or client would change
// (a 304's Content-Length and Content-Type, a second User-Agent, a
// Connection field that says close) and framing fields on bodiless
// responses. Each case runs through both stacks (requireEquiv) and
// asserts what the right outcome is, so the two cannot agree on a wrong
// one. Requests with a body take http.Transport on the net/http stack,
// bodiless ones internal/h1client: cases come in both kinds.

func init() {
	// This file's backend answers, next to the shared ones.
	for name, s := range map[string]equivScript{
		"304-ct-cl": {raw: "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Type: text/html\r\nContent-Length: 1234\r\n\r\n"},
		"304-cl0":   {raw: "HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n"},
		"204-cl0":   {raw: "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nContent-Type: text/plain\r\n\r\n"},
		"close-drop": {raw: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close, X-Drop\r\nX-Drop: secret\r\n" +
			"X-Stay: s\r\n\r\nok", close: true},
		"close-drop-lines": {raw: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-DROP\r\nconnection: close\r\n" +
			"x-drop: secret\r\nX-Stay: s\r\n\r\nok", close: true},
		"close-delimited-drop": {raw: "HTTP/1.1 200 OK\r\nConnection: close,X-Drop\r\nX-Drop: secret\r\n\r\nuntil the close",
			close: true},
		"fold-drop": {raw: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close,\r\n X-Drop\r\nX-Drop: secret\r\n\r\nok",
			close: true},
		"no-date":   {raw: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		"two-dates": {raw: "HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nDate: Tue, 02 Jan 2024 00:00:00 GMT\r\nContent-Length: 2\r\n\r\nok"},
		"keep-drop": {raw: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Drop\r\nX-Drop: secret\r\n\r\nok"},
		"hop-fields": {raw: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n" +
			"TE: trailers\r\nUpgrade: h2c\r\nProxy-Authenticate: Basic\r\nTrailer: X-T\r\nVia: 1.1 be\r\nServer: be\r\n" +
			"Date: Tue, 02 Jan 2024 00:00:00 GMT\r\n\r\nok"},
		"1xx-hop": {raw: "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\nConnection: X-H\r\nX-H: h\r\nKeep-Alive: x\r\n" +
			"Content-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
		"http10-drop": {raw: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Drop\r\nX-Drop: k\r\n\r\nok",
			close: true},
		"cl-zeros":    {raw: "HTTP/1.1 200 OK\r\nContent-Length: 002\r\n\r\nok"},
		"cl-list":     {raw: "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok"},
		"dup-cl-same": {raw: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"},
		"204-te":      {raw: "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"},
		"304-meta": {raw: "HTTP/1.1 304 Not Modified\r\nVary: Accept\r\nLast-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n" +
			"Content-Encoding: gzip\r\nCache-Control: max-age=5\r\nExpires: Mon, 01 Jan 2024 00:00:05 GMT\r\n\r\n"},
		"big-head-close": {raw: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Big: " + strings.Repeat("b", 17<<10) +
			"\r\nConnection: close, X-Drop\r\nX-Drop: secret\r\n\r\nok", close: true},
	} {
		equivScripts[name] = s
	}
}

// TestFastEquivResponseHeads: response heads through both stacks, for a
// bodiless GET and for a POST with a body, each followed on the same
// client connection by a plain request.
func TestFastEquivResponseHeads(t *testing.T) {
	t.Parallel()
	stacks := startEquivStacks(t, plainRoutes)
	testResponseHeads(t, stacks, "a.test")
}

// TestFastEquivResponseHeadsReencrypt: the same to a TLS backend (the
// net/http stack's requests all take http.Transport then).
func TestFastEquivResponseHeadsReencrypt(t *testing.T) {
	t.Parallel()
	stacks := startEquivStacksTLS(t, "a.test", &BackendTLS{CA: pki().ca.pem}, plainRoutes)
	testResponseHeads(t, stacks, "a.test")
}

func testResponseHeads(t *testing.T, stacks [2]*equivStack, host string) {
	noDrop := func(t *testing.T, m wireMsg) {
		require.Empty(t, m.get("x-drop"), "a field the backend's Connection named reached the client")
		require.Empty(t, m.get("connection"))
	}
	for _, c := range []struct {
		script string
		status int
		check  func(t *testing.T, m wireMsg)
	}{
		// RFC 9110 8.6 and 15.4.5: a 304 may carry the Content-Length
		// and Content-Type of the selected representation; relayed.
		{"304-ct-cl", 304, func(t *testing.T, m wireMsg) {
			require.Equal(t, []string{"1234"}, m.get("content-length"))
			require.Equal(t, []string{"text/html"}, m.get("content-type"))
			require.Equal(t, []string{`"v1"`}, m.get("etag"))
		}},
		{"304-cl0", 304, func(t *testing.T, m wireMsg) { require.Equal(t, []string{"0"}, m.get("content-length")) }},
		// RFC 9110 8.6: never a Content-Length on a 204.
		{"204-cl0", 204, func(t *testing.T, m wireMsg) {
			require.Empty(t, m.get("content-length"))
			require.Equal(t, []string{"text/plain"}, m.get("content-type"))
		}},
		// RFC 9110 7.6.1: the fields Connection names are hop-by-hop, a
		// close among them or not, in one line or several.
		{"close-drop", 200, func(t *testing.T, m wireMsg) { noDrop(t, m); require.Equal(t, []string{"s"}, m.get("x-stay")) }},
		{"close-drop-lines", 200, func(t *testing.T, m wireMsg) { noDrop(t, m); require.Equal(t, []string{"s"}, m.get("x-stay")) }},
		{"close-delimited-drop", 200, func(t *testing.T, m wireMsg) { noDrop(t, m); require.Equal(t, "until the close", m.body) }},
		{"keep-drop", 200, noDrop},
		{"http10-drop", 200, noDrop},
		// The hop-by-hop list; Date, Server and Via relayed as they came
		// (neither stack adds a Via).
		{"hop-fields", 200, func(t *testing.T, m wireMsg) {
			for _, f := range []string{"keep-alive", "proxy-connection", "te", "upgrade", "proxy-authenticate", "trailer"} {
				require.Empty(t, m.get(f), f)
			}
			require.Equal(t, []string{"1.1 be"}, m.get("via"))
			require.Equal(t, []string{"be"}, m.get("server"))
			require.Equal(t, []string{"Tue, 02 Jan 2024 00:00:00 GMT"}, m.get("date"))
		}},
		// Date: the proxy's when the backend sent none, the backend's as
		// they came otherwise (the comparison leaves the client's Date out:
		// asserted here).
		{"no-date", 200, func(t *testing.T, m wireMsg) { require.Len(t, m.get("date"), 1) }},
		{"two-dates", 200, func(t *testing.T, m wireMsg) {
			require.Equal(t, []string{"Mon, 01 Jan 2024 00:00:00 GMT", "Tue, 02 Jan 2024 00:00:00 GMT"}, m.get("date"))
		}},
		// A relayed 1xx loses its hop-by-hop and framing fields too.
		{"1xx-hop", 200, func(t *testing.T, m wireMsg) {
			require.Equal(t, []string{"HTTP/1.1 103 Early Hints | link: </a>"}, m.interim)
		}},
		{"304-meta", 304, func(t *testing.T, m wireMsg) {
			for _, f := range []string{"vary", "last-modified", "content-encoding", "cache-control", "expires"} {
				require.Len(t, m.get(f), 1, f)
			}
		}},
		// A Content-Length as a plain decimal; identical duplicates as one.
		{"cl-zeros", 200, func(t *testing.T, m wireMsg) { require.Equal(t, []string{"2"}, m.get("content-length")) }},
		{"dup-cl-same", 200, func(t *testing.T, m wireMsg) { require.Equal(t, []string{"2"}, m.get("content-length")) }},
		// RFC 9112 6.1: no Transfer-Encoding on a 204 either.
		{"204-te", 204, func(t *testing.T, m wireMsg) { require.Empty(t, m.get("transfer-encoding")) }},
		// A head over 16 KiB: refused (the fast path's bound; on the
		// net/http stack, a head that says close must be seen whole).
		{"big-head-close", 502, noDrop},
	} {
		for _, withBody := range []bool{false, true} {
			method := map[bool]string{false: "GET", true: "POST"}[withBody]
			t.Run(c.script+" "+method, func(t *testing.T) {
				send := rawReq("GET", "/s/"+c.script, host, "", "X-Script: "+c.script)
				if withBody {
					send = rawReq("POST", "/s/"+c.script, host, "hello", "Content-Length: 5", "X-Script: "+c.script)
				}
				sends, methods := []string{send, rawReq("GET", "/after", host, "")}, []string{method, "GET"}
				var o [2]equivOutcome
				for i, s := range stacks {
					o[i] = s.sequence(t, sends, methods)
				}
				require.Equal(t, o[0].text(stacks[0]), o[1].text(stacks[1]), "net/http (expected) and fast path (actual) differ")
				if os.Getenv("EQUIV_DEBUG") != "" {
					t.Log(o[0].text(stacks[0]))
				}
				for i, s := range stacks { // each, for what the comparison leaves out (Date)
					require.Len(t, o[i].resps, 2, o[i].text(s))
					require.Equal(t, "all read", o[i].end)
					require.Equal(t, c.status, o[i].resps[0].status(), o[i].text(s))
					c.check(t, o[i].resps[0])
				}
			})
		}
	}
}

// TestFastEquivRequestHeads: request heads through both stacks, bodiless
// and with a body.
func TestFastEquivRequestHeads(t *testing.T) {
	t.Parallel()
	stacks := startEquivStacks(t, equivRoutes)
	testRequestHeads(t, stacks)
}

// TestFastEquivRequestHeadsReencrypt: the same to a TLS backend.
func TestFastEquivRequestHeadsReencrypt(t *testing.T) {
	t.Parallel()
	testRequestHeads(t, startEquivStacksTLS(t, "a.test", &BackendTLS{CA: pki().ca.pem}, equivRoutes))
}

func testRequestHeads(t *testing.T, stacks [2]*equivStack) {
	notForwarded := func(names ...string) func(t *testing.T, m wireMsg) {
		return func(t *testing.T, m wireMsg) {
			for _, n := range names {
				require.Empty(t, m.get(n), "%s reached the backend", n)
			}
		}
	}
	for _, c := range []struct {
		name   string
		host   string
		fields []string
		close  bool // the client's connection ends after the response
		check  func(t *testing.T, m wireMsg)
	}{
		// Both User-Agent lines, as HAProxy forwards them (net/http's
		// Request.Write sends the first only).
		{"two User-Agents", "a.test", []string{"User-Agent: one", "User-Agent: two"}, false, func(t *testing.T, m wireMsg) {
			require.Equal(t, []string{"one", "two"}, m.get("user-agent"))
		}},
		{"two User-Agents, templates", "t.test", []string{"User-Agent: one", "User-Agent: two"}, false, func(t *testing.T, m wireMsg) {
			require.Equal(t, []string{"one", "two"}, m.get("user-agent"))
			require.Equal(t, []string{"ua=one"}, m.get("x-agent"))
		}},
		// An empty one is left out, as Request.Write leaves out an empty first one.
		{"User-Agent then an empty one", "a.test", []string{"User-Agent: one", "User-Agent:"}, false, func(t *testing.T, m wireMsg) {
			require.Equal(t, []string{"one"}, m.get("user-agent"))
		}},
		{"empty User-Agent then one", "a.test", []string{"User-Agent:", "User-Agent: two"}, false, func(t *testing.T, m wireMsg) {
			require.Equal(t, []string{"two"}, m.get("user-agent"))
		}},
		// RFC 9110 7.6.1, the request direction.
		{"Connection names a field", "a.test", []string{"Connection: X-Foo", "X-Foo: f", "X-Stay: s"}, false, func(t *testing.T, m wireMsg) {
			notForwarded("x-foo", "connection")(t, m)
			require.Equal(t, []string{"s"}, m.get("x-stay"))
		}},
		{"Connection close names a field", "a.test", []string{"Connection: close, X-Foo", "X-Foo: f"}, true, notForwarded("x-foo", "connection")},
		{"Connection lines name fields", "a.test", []string{"Connection: X-Foo", "connection: keep-alive, x-bar", "x-foo: f",
			"X-Bar: b"}, false, notForwarded("x-foo", "x-bar", "connection")},
		{"Connection names an end-to-end field", "a.test", []string{"Connection: User-Agent, Cookie", "User-Agent: u", "Cookie: a=1"},
			false, notForwarded("user-agent", "cookie", "connection")},
		{"hop-by-hop fields", "a.test", []string{"Keep-Alive: timeout=5", "Proxy-Connection: close", "Te: gzip", "Trailer: X-T",
			"Upgrade: foo", "Proxy-Authorization: Basic eDp5"}, false, notForwarded("keep-alive", "proxy-connection", "te", "trailer",
			"upgrade", "proxy-authorization")},
		// End-to-end fields a client may send are forwarded as they came.
		{"end-to-end fields", "a.test", []string{"Via: 1.0 c", "Date: Mon, 01 Jan 2024 00:00:00 GMT", "Server: c", "Max-Forwards: 3"},
			false, func(t *testing.T, m wireMsg) {
				require.Equal(t, []string{"1.0 c"}, m.get("via"))
				require.Equal(t, []string{"Mon, 01 Jan 2024 00:00:00 GMT"}, m.get("date"))
				require.Equal(t, []string{"c"}, m.get("server"))
				require.Equal(t, []string{"3"}, m.get("max-forwards"))
			}},
	} {
		for _, withBody := range []bool{false, true} {
			method := map[bool]string{false: "GET", true: "POST"}[withBody]
			t.Run(c.name+" "+method, func(t *testing.T) {
				send := rawReq("GET", "/h", c.host, "", c.fields...)
				if withBody {
					send = rawReq("POST", "/h", c.host, "hello", append([]string{"Content-Length: 5"}, c.fields...)...)
				}
				o := requireEquiv(t, stacks, send+rawReq("GET", "/after", c.host, ""), method, "GET")
				if os.Getenv("EQUIV_DEBUG") != "" {
					t.Log(o.text(stacks[0]))
				}
				if c.close {
					require.Len(t, o.resps, 1, o.text(stacks[0]))
					require.Len(t, o.reqs, 1, o.text(stacks[0]))
				} else {
					require.Len(t, o.resps, 2, o.text(stacks[0]))
					require.Len(t, o.reqs, 2, o.text(stacks[0]))
				}
				require.Equal(t, 200, o.resps[0].status(), o.text(stacks[0]))
				c.check(t, o.reqs[0])
			})
		}
	}
}

// TestFastEquivContentLengthList: a Content-Length that is a list of one
// value ("5, 5"), which RFC 9110 8.6 lets a recipient take as that value
// or refuse. The fast path takes it, request or response, as HAProxy
// does; net/http's server refuses such a request (400). The response to
// a bodiless request comes through h1client on both stacks (one parser:
// taken); http.Transport would refuse it (502). A deliberate difference
// (README, fast path).
func TestFastEquivContentLengthList(t *testing.T) {
	t.Parallel()
	stacks := startEquivStacks(t, plainRoutes)
	req := rawReq("POST", "/x", "a.test", "hello", "Content-Length: 5, 5")
	resp := rawReq("GET", "/x", "a.test", "", "X-Script: cl-list")
	for i, want := range [2][2]int{{400, 200}, {200, 200}} {
		s := stacks[i]
		o := s.exchange(t, req, "POST")
		require.NotEmpty(t, o.resps, o.text(s))
		require.Equal(t, want[0], o.resps[0].status(), "%s: %s", s.name, o.text(s))
		if want[0] == 200 {
			require.Equal(t, "hello", o.reqs[0].body)
			require.Equal(t, []string{"5"}, o.reqs[0].get("content-length"))
		}
		o = s.exchange(t, resp, "GET")
		require.NotEmpty(t, o.resps, o.text(s))
		require.Equal(t, want[1], o.resps[0].status(), "%s: %s", s.name, o.text(s))
		if want[1] == 200 {
			require.Equal(t, "ok", o.resps[0].body)
			require.Equal(t, []string{"2"}, o.resps[0].get("content-length"))
		}
	}
}

// TestFastEquivFoldedConnection: a Connection field folded over two lines
// (obs-fold) that names a field after its close: h1client refuses the
// response (502), on the fast path and for the net/http stack's bodiless
// requests; http.Transport (the net/http stack's requests with a body)
// reads it leniently and must still remove the field.
func TestFastEquivFoldedConnection(t *testing.T) {
	t.Parallel()
	stacks := startEquivStacks(t, plainRoutes)
	for _, send := range []string{rawReq("GET", "/f", "a.test", "", "X-Script: fold-drop"),
		rawReq("POST", "/f", "a.test", "hello", "Content-Length: 5", "X-Script: fold-drop")} {
		method, _, _ := strings.Cut(send, " ")
		fast := stacks[1].exchange(t, send, method)
		require.NotEmpty(t, fast.resps, fast.text(stacks[1]))
		require.Equal(t, 502, fast.resps[0].status(), fast.text(stacks[1]))
		slow := stacks[0].exchange(t, send, method)
		require.NotEmpty(t, slow.resps, slow.text(stacks[0]))
		if method == "GET" {
			require.Equal(t, 502, slow.resps[0].status(), slow.text(stacks[0]))
			continue
		}
		require.Equal(t, 200, slow.resps[0].status(), slow.text(stacks[0]))
		require.Empty(t, slow.resps[0].get("x-drop"), slow.text(stacks[0]))
	}
}
