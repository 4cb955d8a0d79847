package smartproxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The fast path's equivalence tests (issue 17): the same client bytes go
// through a proxy on net/http (DisableHTTPFastPath) and one on the fast
// path (the default), whatever SMARTPROXY_TEST_NETHTTP says, each to its
// own scripted raw backend (equivBackend), and both must look the same from outside: the backend sees the same
// request lines, the same multiset of header fields (order-insensitive,
// names case-insensitive), the same body and framing; the client gets the
// same status, the same fields (but Date), the same body and framing,
// and the connection ends the same way. Only public behaviour is used
// (Options, sockets), so the tests hold whatever serves the fast path
// behind it: today net/http's ReverseProxy, later a hand-written
// forwarder.

// equivStack is one of the two proxies under comparison.
type equivStack struct {
	name string // "net/http" or "fast"
	port int
	be   *equivBackend
	sni  string // the client's TLS server name; "" for cleartext
}

// startEquivStacks starts a net/http and a fast-path proxy, each with its
// own backend, with the routes routes gives for its port and backend.
func startEquivStacks(t *testing.T, routes func(port int, target string) []Route) [2]*equivStack {
	t.Helper()
	return startEquivStacksSNI(t, "", routes)
}

// startEquivStacksSNI is startEquivStacks with the routes terminating
// TLS (testCertStore) and the clients sending sni, when sni is set.
func startEquivStacksSNI(t *testing.T, sni string, routes func(port int, target string) []Route) [2]*equivStack {
	t.Helper()
	return startEquivStacksTLS(t, sni, nil, routes)
}

// startEquivStacksTLS is startEquivStacksSNI with, when backend is set,
// the routes re-encrypting with it to TLS backends (pki().backend's
// certificate: backend.internal, original.example.com, 127.0.0.1).
func startEquivStacksTLS(t *testing.T, sni string, backend *BackendTLS, routes func(port int, target string) []Route) [2]*equivStack {
	t.Helper()
	lp := newListenerPool(t)
	var stacks [2]*equivStack
	for i, fast := range []bool{false, true} {
		port := lp.port(t)
		var be *equivBackend
		if backend != nil {
			be = startEquivBackendOn(t, pki().backend.tls)
		} else {
			be = startEquivBackend(t)
		}
		opts := Options{Routes: routes(port, be.addr())}
		if sni != "" {
			opts.Certificates = testCertStore(t)
			for i := range opts.Routes {
				opts.Routes[i].Action.TLS = &RouteTLS{Mode: TLSTerminate}
				if backend != nil {
					opts.Routes[i].Action.TLS = &RouteTLS{Mode: TLSTerminateAndReencrypt, Backend: backend}
				}
			}
		}
		startStackTestProxy(t, lp, opts, fast)
		stacks[i] = &equivStack{name: map[bool]string{false: "net/http", true: "fast"}[fast], port: port, be: be, sni: sni}
	}
	// Proof that the stacks differ: a bare-LF head, which net/http takes,
	// is refused on the fast path only (so a comparison that passes does
	// not compare net/http with itself).
	bareLF := "GET /bare-lf HTTP/1.1\nHost: a.test\n\n"
	if o := stacks[1].exchange(t, bareLF, "GET"); len(o.resps) == 0 || o.resps[0].status() != 400 {
		t.Fatalf("the fast stack is not on the fast path: %s", o.text(stacks[1]))
	}
	if o := stacks[0].exchange(t, bareLF, "GET"); len(o.resps) == 0 || o.resps[0].status() == 400 {
		t.Fatalf("the net/http stack refused a bare-LF head: %s", o.text(stacks[0]))
	}
	return stacks
}

// dial connects to the stack's proxy, through TLS when it terminates.
func (s *equivStack) dial(t *testing.T) net.Conn {
	t.Helper()
	c := dial(t, s.port)
	if s.sni == "" {
		return c
	}
	tc := tls.Client(c, insecureTLS(s.sni, "http/1.1"))
	require.NoError(t, tc.Handshake())
	return tc
}

// equivOutcome is what one exchange looked like from outside.
type equivOutcome struct {
	reqs    []wireMsg // what the backend parsed
	beErrs  []string  // what it could not
	resps   []wireMsg // what the client read, a cut-off last one included
	end     string    // how the client's reading ended
	methods []string  // the requests' methods, one per response
}

// exchange sends send on a new connection and reads one response per
// entry of methods (the request methods, in order), or until the
// connection ends or a response is malformed.
func (s *equivStack) exchange(t *testing.T, send string, methods ...string) equivOutcome {
	t.Helper()
	c := s.dial(t)
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err := io.WriteString(c, send)
	require.NoError(t, err)
	o := s.read(bufio.NewReader(c), methods...)
	o.methods = methods
	_ = c.Close()
	o.reqs, o.beErrs = s.be.take()
	return o
}

// read reads the responses to methods from br.
func (s *equivStack) read(br *bufio.Reader, methods ...string) equivOutcome {
	var o equivOutcome
	o.end = "all read"
	for _, m := range methods {
		r, err := readWireResponse(br, m)
		if err != nil {
			if r.line != "" {
				o.resps = append(o.resps, r)
			}
			o.end = endOf(err)
			return o
		}
		o.resps = append(o.resps, r)
	}
	return o
}

// text is the outcome as comparable text: the proxy's port and backend
// address replaced by PORT and BACKEND, fields sorted, the client's Date
// left out (it is the proxy's clock).
func (o equivOutcome) text(s *equivStack) string {
	var b strings.Builder
	msg := func(kind string, m wireMsg, drop string) {
		fields := slices.DeleteFunc(slices.Clone(m.fields), func(f string) bool { return strings.HasPrefix(f, drop+": ") })
		slices.Sort(fields)
		trailers := slices.Clone(m.trailers)
		slices.Sort(trailers)
		b.WriteString(kind + " " + m.line + "\n")
		for _, i := range m.interim {
			b.WriteString("  interim " + i + "\n")
		}
		for _, f := range fields {
			b.WriteString("  " + shortened(f) + "\n")
		}
		b.WriteString("  framing " + m.framing + " body " + shortened(strconv.Quote(m.body)) + "\n")
		for _, f := range trailers {
			b.WriteString("  trailer " + f + "\n")
		}
	}
	for _, m := range o.reqs {
		msg("backend got", m, "")
	}
	for _, e := range o.beErrs {
		b.WriteString("backend refused " + e + "\n")
	}
	for i, m := range o.resps {
		m.fields = slices.DeleteFunc(slices.Clone(m.fields), func(f string) bool {
			// net/http sniffs a Content-Type for a response that has
			// none (the fast path does not: TestFastEquivNoSniffing);
			// its own error pages carry nosniff and keep theirs.
			return f == "content-type: text/plain; charset=utf-8" && !slices.Contains(m.fields, "x-content-type-options: nosniff") ||
				// A HEAD response may leave out Trailer (RFC 9110 9.3.2:
				// fields determined while generating content); net/http
				// relays it, the fast path does not.
				strings.HasPrefix(f, "trailer: ") && i < len(o.methods) && o.methods[i] == "HEAD"
		})
		if len(o.reqs) == 0 && m.status() >= 400 {
			// A refusal before any backend: the stacks' own answers
			// differ in wording (net/http's "400 Bad Request: missing
			// required Host header" is close-delimited), so only the
			// status and whether the connection closes are compared.
			b.WriteString("client got refusal " + strconv.Itoa(m.status()) + " connection " + strings.Join(m.get("connection"), ",") + "\n")
			continue
		}
		if code := m.status(); http.StatusText(code) == "" {
			// net/http writes "299 status code 299" for a code it does
			// not know, the fast path "299 " (no reason phrase): both
			// valid (RFC 9112 4), neither relays the backend's phrase.
			m.line = m.line[:min(len(m.line), len("HTTP/1.1 299"))] + " (unknown code)"
		}
		msg("client got", m, "date")
	}
	b.WriteString("client: " + o.end + "\n")
	out := strings.ReplaceAll(b.String(), s.be.addr(), "BACKEND")
	return regexp.MustCompile(`\b`+strconv.Itoa(s.port)+`\b`).ReplaceAllString(out, "PORT")
}

// requireEquiv runs send through both stacks and requires the same
// outcome; it returns the net/http one for the caller's own checks.
func requireEquiv(t *testing.T, stacks [2]*equivStack, send string, methods ...string) equivOutcome {
	t.Helper()
	slow, fast := stacks[0].exchange(t, send, methods...), stacks[1].exchange(t, send, methods...)
	require.Equal(t, slow.text(stacks[0]), fast.text(stacks[1]), "net/http (expected) and fast path (actual) differ for %q", send)
	return slow
}

// equivRoutes: a plain route, a path route (which makes the port
// canonicalise paths), keepHost, rewrite, header templates and a
// catch-all for any Host.
func equivRoutes(port int, target string) []Route {
	return []Route{
		NewRoute("plain").Ports(port).Domains("a.test").ForwardTo(target).Route(),
		NewRoute("api").Ports(port).Domains("a.test").Path("/api/*").Priority(1).ForwardTo(target).Route(),
		NewRoute("keep").Ports(port).Domains("keep.test").KeepHostHeader().ForwardTo(target).Route(),
		NewRoute("rw").Ports(port).Domains("rw.test").Rewrite(`^/old/([^?]*)`, "/new/$1/{domain}").ForwardTo(target).Route(),
		NewRoute("tmpl").Ports(port).Domains("t.test").ForwardTo(target).
			RequestHeader("X-Client", "{clientIp}").RequestHeader("X-Where", "{routeName}@{domain}{path}?{query}").
			RequestHeader("X-Agent", "ua={headers.user-agent}").RequestHeader("X-Remove", "").
			RequestHeader("X-Forwarded-Host", "tmpl.{domain}"). // replaces one of the forwarding fields
			ResponseHeader("X-Served-By", "{routeName}").ResponseHeader("Server", "").
			ResponseHeader("X-Req-Path", "{path}").Route(),
		NewRoute("any").Ports(port).Priority(-1).ForwardTo(target).Route(),
	}
}

// equivCase is one request of the table.
type equivCase struct {
	name    string
	send    string
	methods []string // one per response to read; GET when empty
	status  int      // the first response's status, both stacks
	reqs    int      // how many requests the backend must see
}

func equivRequestTable() []equivCase {
	a := "a.test"
	long := strings.Repeat("v", 16<<10)
	big := strings.Repeat("b", 64<<10)
	return []equivCase{
		{"GET", rawReq("GET", "/", a, ""), nil, 200, 1},
		{"HEAD", rawReq("HEAD", "/h", a, ""), []string{"HEAD"}, 200, 1},
		{"POST Content-Length", rawReq("POST", "/p", a, "hello", "Content-Length: 5", "Content-Type: text/plain"), nil, 200, 1},
		{"POST Content-Length 0", rawReq("POST", "/p", a, "", "Content-Length: 0"), nil, 200, 1},
		{"POST no body", rawReq("POST", "/p", a, ""), nil, 200, 1},
		{"PUT chunked", rawReq("PUT", "/u", a, "5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\n\r\n", "Transfer-Encoding: chunked"), nil, 200, 1},
		{"POST chunked with trailers and Te", rawReq("POST", "/t", a, "3\r\nabc\r\n0\r\nX-T: v\r\nX-U: w\r\n\r\n",
			"Transfer-Encoding: chunked", "Te: trailers", "Trailer: X-T, X-U"), nil, 200, 1},
		{"DELETE", rawReq("DELETE", "/d", a, ""), nil, 200, 1},
		{"DELETE with body", rawReq("DELETE", "/d", a, "abc", "Content-Length: 3"), nil, 200, 1},
		{"GET with body", rawReq("GET", "/g", a, "abc", "Content-Length: 3"), nil, 200, 1},
		{"OPTIONS path", rawReq("OPTIONS", "/o", a, ""), nil, 200, 1},
		{"OPTIONS asterisk", rawReq("OPTIONS", "*", a, ""), nil, 0, -1},
		{"duplicate fields", rawReq("GET", "/dup", a, "", "X-Dup: a", "X-Dup: b", "Accept: x", "accept: y",
			"Cookie: a=1", "Cookie: b=2", "Cache-Control: no-cache", "Cache-Control: no-store"), nil, 200, 1},
		{"fields named in Connection", rawReq("GET", "/c", a, "", "Connection: X-Hop, Keep-Alive, x-other",
			"X-Hop: secret", "X-Other: o", "Keep-Alive: timeout=5", "X-Stay: s"), nil, 200, 1},
		{"Te trailers", rawReq("GET", "/te", a, "", "Te: trailers"), nil, 200, 1},
		{"Te gzip", rawReq("GET", "/te", a, "", "TE: gzip, trailers;q=1"), nil, 200, 1},
		{"Proxy-Connection and Keep-Alive", rawReq("GET", "/pc", a, "", "Proxy-Connection: keep-alive",
			"Keep-Alive: timeout=5", "Proxy-Authorization: Basic eDp5"), nil, 200, 1},
		{"Upgrade without Connection upgrade", rawReq("GET", "/up", a, "", "Upgrade: websocket"), nil, 200, 1},
		{"client forwarding fields", rawReq("GET", "/xff", a, "", "X-Forwarded-For: 6.6.6.6", "X-Forwarded-For: 7.7.7.7",
			"Forwarded: for=6.6.6.6", "X-Real-IP: 6.6.6.6", "X-Forwarded-Host: evil", "X-Forwarded-Proto: https",
			"X-Forwarded-Port: 1"), nil, 200, 1},
		{"User-Agent", rawReq("GET", "/ua", a, "", "User-Agent: tester/1.0"), nil, 200, 1},
		{"empty User-Agent", rawReq("GET", "/ua", a, "", "User-Agent:"), nil, 200, 1},
		{"Accept-Encoding", rawReq("GET", "/ae", a, "", "Accept-Encoding: gzip, br"), nil, 200, 1},
		{"long value", rawReq("GET", "/long", a, "", "X-Long: "+long, "Cookie: c="+long), nil, 200, 1},
		{"empty value", rawReq("GET", "/e", a, "", "X-Empty:", "X-Spaces:   "), nil, 200, 1},
		{"odd query", rawReq("GET", "/q?a=%zz&b=%2f&c=a+b;d&e=%E2%82%AC&f=%&g==&&h#", a, ""), nil, 0, -1},
		{"odd query 2", rawReq("GET", "/q?a=%zz&b=%2f&c=a+b;d&e=%E2%82%AC&f=%&g==&&h", a, ""), nil, 200, 1},
		{"encoded path", rawReq("GET", "/p%20q/%41%7e?x=%20", a, ""), nil, 200, 1},
		{"canonicalised path", rawReq("GET", "/api/./x/../y//z", a, ""), nil, 200, 1},
		{"canonicalised escapes", rawReq("GET", "/api/%7euser/%2e%2e/v%2d?q", a, ""), nil, 200, 1},
		{"ambiguous path", rawReq("GET", "/api/a%2fb", a, ""), nil, 400, 0},
		{"path parameter", rawReq("GET", "/api/a;b/c", a, ""), nil, 400, 0},
		{"keepHost", rawReq("GET", "/k", "keep.test", ""), nil, 200, 1},
		{"keepHost upper case", rawReq("GET", "/k", "KEEP.Test", ""), nil, 200, 1},
		{"keepHost with port", rawReq("GET", "/k", "keep.test:8080", ""), nil, 200, 1},
		{"rewrite", rawReq("GET", "/old/x/y?q=2", "rw.test", ""), nil, 200, 1},
		{"rewrite no match", rawReq("GET", "/keep?q=2", "rw.test", ""), nil, 200, 1},
		{"templates", rawReq("GET", "/a/b?x=1", "t.test", "", "User-Agent: tester", "X-Remove: bye", "X-Client: spoof"), nil, 200, 1},
		{"templates without User-Agent", rawReq("GET", "/a", "t.test", ""), nil, 200, 1},
		{"Host with port", rawReq("GET", "/hp", "a.test:8080", ""), nil, 200, 1},
		{"IPv6 literal Host", rawReq("GET", "/v6", "[::1]:8080", ""), nil, 200, 1},
		{"IPv6 literal Host keep", rawReq("GET", "/v6", "[::1]", ""), nil, 200, 1},
		{"Expect 100-continue", rawReq("POST", "/ex", a, "hello", "Content-Length: 5", "Expect: 100-continue"), nil, 200, 1},
		{"Connection close", rawReq("GET", "/cc", a, "", "Connection: close"), []string{"GET", "GET"}, 200, 1},
		{"HTTP/1.0", "GET /old HTTP/1.0\r\nHost: a.test\r\n\r\n", []string{"GET", "GET"}, 0, -1},
		{"absolute-form", rawReq("GET", "http://a.test/abs?x", a, ""), nil, 200, 1},
		{"no Host", rawReq("GET", "/", "", ""), nil, 400, 0},
		{"Authorization", rawReq("GET", "/auth", a, "", "Authorization: Bearer x.y.z"), nil, 200, 1},
		{"Cookie one line", rawReq("GET", "/x", a, "", "Cookie: a=1; b=2", "Via: 1.1 other"), nil, 200, 1},
		{"obs-text value", rawReq("GET", "/o", a, "", "X-T: caf\xe9"), nil, 200, 1},
		{"UTF-8 value", rawReq("GET", "/o", a, "", "X-T: café"), nil, 200, 1},
		{"tab and trailing space in value", rawReq("GET", "/o", a, "", "X-T: a\tb  "), nil, 200, 1},
		{"no space after colon", rawReq("GET", "/x", a, "", "X-A:b"), nil, 200, 1},
		{"space before colon", rawReq("GET", "/x", a, "", "X-A : b"), nil, 400, 0},
		{"empty query", rawReq("GET", "/x?", a, ""), nil, 200, 1},
		{"escaped query", rawReq("GET", "/x?a=b%20c&d=e+f", a, ""), nil, 200, 1},
		{"fragment", rawReq("GET", "/x#frag", a, ""), nil, 200, 1},
		{"double slash first", rawReq("GET", "//x", a, ""), nil, 200, 1},
		{"lower-case method", rawReq("get", "/x", a, ""), nil, 200, 1},
		{"PURGE", rawReq("PURGE", "/x", a, ""), nil, 200, 1},
		{"PROPFIND with body", rawReq("PROPFIND", "/x", a, "<a/>", "Content-Length: 4"), nil, 200, 1},
		{"TRACE", rawReq("TRACE", "/x", a, ""), nil, 200, 1},
		{"CONNECT", "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n", nil, 0, -1},
		{"HEAD with Content-Length 0", rawReq("HEAD", "/x", a, "", "Content-Length: 0"), []string{"HEAD"}, 200, 1},
		{"Content-Length leading zeros", rawReq("POST", "/x", a, "hello", "Content-Length: 005"), nil, 200, 1},
		{"Transfer-Encoding Chunked", rawReq("POST", "/x", a, "3\r\nabc\r\n0\r\n\r\n", "Transfer-Encoding: Chunked"), nil, 200, 1},
		{"64 KiB Content-Length body", rawReq("POST", "/x", a, big, "Content-Length: 65536"), nil, 200, 1},
		{"64 KiB chunked body", rawReq("POST", "/x", a, "10000\r\n"+big+"\r\n0\r\n\r\n", "Transfer-Encoding: chunked"), nil, 200, 1},
		{"Host trailing dot", rawReq("GET", "/x", "a.test.", ""), nil, 200, 1},
		{"Host upper case", rawReq("GET", "/x", "A.TEST", ""), nil, 200, 1},
		{"Connection keep-alive", rawReq("GET", "/x", a, "", "Connection: keep-alive"), nil, 200, 1},
		{"Connection CLOSE", rawReq("GET", "/x", a, "", "Connection: CLOSE"), []string{"GET", "GET"}, 200, 1},
		{"Connection upgrade without Upgrade", rawReq("GET", "/x", a, "", "Connection: Upgrade"), nil, 200, 1},
		{"Upgrade h2c", rawReq("GET", "/x", a, "", "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c",
			"HTTP2-Settings: AAMAAABkAAQAAP__"), nil, 200, 1},
		{"WebSocket", rawReq("GET", "/x", a, "", "Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13",
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="), nil, 200, 1},
		{"Expect other", rawReq("POST", "/x", a, "hello", "Content-Length: 5", "Expect: foo"), nil, 417, 0},
		{"Expect 100-continue without body", rawReq("GET", "/x", a, "", "Expect: 100-continue"), nil, 200, 1},
		{"TE chunked on GET", rawReq("GET", "/x", a, "", "TE: chunked"), nil, 200, 1},
		{"X-Forwarded-Proto with templates", rawReq("GET", "/x", "t.test", "", "X-Forwarded-Proto: https"), nil, 200, 1},
	}
}

// TestFastEquivRequests: the request table through both stacks.
func TestFastEquivRequests(t *testing.T) {
	t.Parallel()
	runEquivTable(t, startEquivStacks(t, equivRoutes), equivRequestTable())
}

// TestFastEquivRequestsTLS: the table's requests for a.test through both
// stacks terminating TLS (the rest have another Host than the SNI).
func TestFastEquivRequestsTLS(t *testing.T) {
	t.Parallel()
	var table []equivCase
	for _, c := range equivRequestTable() {
		if strings.Contains(c.send, "\r\nHost: a.test\r\n") {
			table = append(table, c)
		}
	}
	require.Greater(t, len(table), 50)
	runEquivTable(t, startEquivStacksSNI(t, "a.test", equivRoutes), table)
}

func runEquivTable(t *testing.T, stacks [2]*equivStack, table []equivCase) {
	for _, c := range table {
		t.Run(c.name, func(t *testing.T) {
			methods := c.methods
			if methods == nil {
				methods = []string{"GET"}
			}
			o := requireEquiv(t, stacks, c.send, methods...)
			if os.Getenv("EQUIV_DEBUG") != "" {
				t.Log(o.text(stacks[0]))
			}
			if c.status != 0 {
				require.NotEmpty(t, o.resps)
				require.Equal(t, c.status, o.resps[0].status(), "%s", o.text(stacks[0]))
			}
			if c.reqs >= 0 {
				require.Len(t, o.reqs, c.reqs, "%s", o.text(stacks[0]))
			}
		})
	}
}
