package smartproxy

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The request-smuggling corpus: hostile HTTP/1.1 byte streams sent
// through the proxy to a raw backend that records every byte it gets and
// parses it strictly (strictBackend). The property, in every case: the
// backend never sees a request the proxy did not route and check, and
// never two where the proxy saw one. A route's request header template
// proves the first: the proxy adds X-Checked with a secret value (the
// corpus cannot know it) only to requests that passed decide, so every
// request the backend parses must carry exactly one X-Checked with the
// open route's secret. The strict parse proves the second: the proxy must
// frame every request it forwards unambiguously (one Content-Length of
// digits, or Transfer-Encoding: chunked alone, CRLF line ends, no
// obs-fold, no control bytes in values), so no backend can split a
// forwarded request into two. Each case also bounds how many requests may
// arrive (max), and the baseline cases require theirs (min), so that a
// recorder that saw nothing cannot pass.

// smuggleCase is one entry of the corpus.
type smuggleCase struct {
	name     string
	send     string // the client's bytes; "%S" is a smuggled request to a blocked path
	min, max int    // how many requests the backend may parse
}

// sentinel ends every case's stream: a request that asks the proxy to
// close the connection after it, so that the client reads until the
// close instead of waiting for silence. Its own arrival at the backend is
// not counted (it is checked like any other).
const sentinel = "GET /end HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"

// smuggled is a request the proxy refuses (the blocked route): reaching
// the backend in any form is smuggling.
const smuggled = "GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n"

func smugglingCorpus() []smuggleCase {
	post := "POST / HTTP/1.1\r\nHost: a.test\r\n"
	cl := "Content-Length: " + strconv.Itoa(len("0\r\n\r\n"+smuggled)) + "\r\n"
	chunkedSmuggle := "0\r\n\r\n%S"
	teBody := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(smuggled), smuggled)
	te := func(v string) smuggleCase {
		return smuggleCase{"TE.TE " + strconv.Quote(v), post + v + "\r\n" + cl + "\r\n" + chunkedSmuggle, 0, 1}
	}
	return []smuggleCase{
		// Baselines: the recorder sees what it should.
		{"baseline GET", "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", 1, 1},
		{"baseline two pipelined", "GET /1 HTTP/1.1\r\nHost: a.test\r\n\r\nGET /2 HTTP/1.1\r\nHost: a.test\r\n\r\n", 2, 2},
		{"baseline POST", post + "Content-Length: 5\r\n\r\nhello", 1, 1},
		{"baseline chunked", post + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 1, 1},
		{"blocked path", smuggled, 0, 0},

		{"CL.TE", post + cl + "Transfer-Encoding: chunked\r\n\r\n" + chunkedSmuggle, 0, 1},
		{"TE.CL", post + "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n" + teBody + "%S", 0, 1},
		te("Transfer-Encoding: chunked "),
		te("Transfer-Encoding:\tchunked"),
		te("Transfer-Encoding: xchunked"),
		te("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity"),
		te("Transfer-Encoding: identity\r\nTransfer-Encoding: chunked"),
		te("Transfer-Encoding: chunked, identity"),
		te("Transfer-Encoding: identity, chunked"),
		te("Transfer-Encoding : chunked"),
		te(" Transfer-Encoding: chunked"),
		te("Transfer-Encoding: \"chunked\""),
		te("Transfer-Encoding: CHUNKED"),
		te("Transfer-Encoding: chunked\x00"),
		te("X: y\r\n\tTransfer-Encoding: chunked"),
		te("Transfer-Encoding:\r\n chunked"),

		{"CL duplicate differing", post + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello%S", 0, 0},
		{"CL list differing", post + "Content-Length: 5, 6\r\n\r\nhello%S", 0, 0},
		{"CL duplicate equal", post + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 0, 1},
		{"CL plus sign", post + "Content-Length: +5\r\n\r\nhello%S", 0, 0},
		{"CL minus sign", post + "Content-Length: -1\r\n\r\n%S", 0, 0},
		{"CL hex", post + "Content-Length: 0x5\r\n\r\nhello%S", 0, 0},
		{"CL overflow", post + "Content-Length: 99999999999999999999\r\n\r\n%S", 0, 0},

		{"chunk size overflow", post + "Transfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n%S", 0, 1},
		{"chunk size 16 digits", post + "Transfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nhello\r\n0\r\n\r\n%S", 0, 1},
		{"chunk extension", post + "Transfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\n\r\n", 0, 1},
		{"chunk extension bare LF", post + "Transfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n%S", 0, 1},
		{"chunk size bare LF", post + "Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n%S", 0, 1},
		{"chunk data overrun", post + "Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n%S", 0, 1},
		{"chunk size negative", post + "Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n%S", 0, 1},

		{"bare LF head", "GET / HTTP/1.1\nHost: a.test\n\n", 0, 1},
		{"bare LF inside value", "GET / HTTP/1.1\r\nHost: a.test\r\nX: a\nContent-Length: 5\r\n\r\nhello%S", 0, 1},
		{"bare CR inside value", "GET / HTTP/1.1\r\nHost: a.test\r\nX: a\rContent-Length: 41\r\n\r\n%S", 0, 1},
		{"NUL in value", "GET / HTTP/1.1\r\nHost: a.test\r\nX: a\x00b\r\n\r\n", 0, 1},
		{"NUL in Host", "GET / HTTP/1.1\r\nHost: a.test\x00.b.test\r\n\r\n", 0, 1},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a.test\r\nX: a\r\n b\r\n\r\n", 0, 1},
		{"obs-fold Content-Length", post + "Content-Length:\r\n 5\r\n\r\nhello%S", 0, 1},

		{"absolute-form other host", "GET http://b.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n", 0, 0},
		{"absolute-form blocked path", "GET http://a.test/smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n", 0, 0},
		{"absolute-form own host", "GET http://a.test/ HTTP/1.1\r\nHost: b.test\r\n\r\n", 0, 1},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", 0, 1},

		{"pipelined after 401", "GET / HTTP/1.1\r\nHost: b.test\r\n\r\n%SGET /ok HTTP/1.1\r\nHost: a.test\r\n\r\n", 1, 1},
		{"pipelined after 400", post + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello%SGET /ok HTTP/1.1\r\nHost: a.test\r\n\r\n", 0, 0},
		{"pipelined after 404", "GET / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n%S", 0, 0},
		{"body on GET", "GET / HTTP/1.1\r\nHost: a.test\r\nContent-Length: " + strconv.Itoa(len(smuggled)) + "\r\n\r\n%S", 1, 1},
		{"body on GET chunked", "GET / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n" + teBody, 0, 1},
		{"HTTP/1.0 chunked", "POST / HTTP/1.0\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n" + cl + "\r\n" + chunkedSmuggle, 0, 1},
		{"PRI method on HTTP/1.1", "PRI * HTTP/1.1\r\nHost: a.test\r\n\r\n%S", 0, 1},
		{"HTTP/2 preface on HTTP/1 port", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n%S", 0, 0},
	}
}

// TestHTTPSmugglingCorpus runs the corpus through the HTTP layer on
// net/http's server (DisableHTTPFastPath).
func TestHTTPSmugglingCorpus(t *testing.T) {
	t.Parallel()
	runSmugglingCorpus(t, false, false)
}

// TestHTTPSmugglingCorpusFastPath runs the corpus through the HTTP/1.1
// fast path (httpfast.go).
func TestHTTPSmugglingCorpusFastPath(t *testing.T) {
	t.Parallel()
	runSmugglingCorpus(t, true, false)
}

// TestHTTPSmugglingCorpusTLS runs the corpus over TLS-terminated
// connections on the fast path: on Linux with the event-loop engine, the
// loop serves them after the handshake (enginetls_linux.go), and hands the
// ones it does not carry back to the goroutine path.
func TestHTTPSmugglingCorpusTLS(t *testing.T) {
	t.Parallel()
	runSmugglingCorpus(t, true, true)
}

// runSmugglingCorpus runs every case of the corpus, each against its own
// proxy (the corpus routes, on the fast path or on net/http, terminating
// TLS when overTLS) and backend.
func runSmugglingCorpus(t *testing.T, fast, overTLS bool) {
	for _, tc := range smugglingCorpus() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runSmuggleCase(t, fast, overTLS, tc)
		})
	}
}

func runSmuggleCase(t *testing.T, fast, overTLS bool, tc smuggleCase) {
	secret := func() string {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		return hex.EncodeToString(b)
	}
	open, closed := secret(), secret()
	be := startStrictBackend(t)
	lp := newListenerPool(t)
	port := lp.port(t)
	var opts Options
	opts.Routes = []Route{
		NewRoute("open").Ports(port).Domains("a.test").ForwardTo(be.addr()).
			RequestHeader("X-Checked", open).Route(),
		NewRoute("blocked").Ports(port).Domains("a.test").Path("/smuggled*").ForwardTo(be.addr()).
			BlockIPs("127.0.0.1").RequestHeader("X-Checked", "blocked-"+open).Route(),
		NewRoute("closed").Ports(port).Domains("b.test").ForwardTo(be.addr()).
			BasicAuth(&BasicAuth{Users: []BasicAuthUser{{Username: "u", Password: secret()}}}).
			RequestHeader("X-Checked", closed).Route(),
	}
	var c net.Conn = dial(t, port)
	if overTLS {
		opts.Certificates = testCertStore(t)
		for i := range opts.Routes {
			opts.Routes[i].Action.TLS = &RouteTLS{Mode: TLSTerminate}
		}
		c = tls.Client(c, insecureTLS("a.test", "http/1.1"))
	}
	p := startStackTestProxy(t, lp, opts, fast)
	if tc, ok := c.(*tls.Conn); ok { // the case's bytes reach the HTTP layer
		require.NoError(t, tc.Handshake())
	}

	_, err := io.WriteString(c, strings.ReplaceAll(tc.send, "%S", smuggled)+sentinel)
	require.NoError(t, err)
	// The proxy closes the connection after a refusal or after the
	// sentinel's response; quiet only ends cases where it waits for body
	// bytes that never come.
	reply := readUntilQuiet(c, 2*time.Second, 10*time.Second)
	_ = c.Close()
	require.NoError(t, p.Stop(t.Context()))
	be.close() // joins the backend's goroutines: every byte is recorded

	for _, problem := range judgeSmuggle(tc, be, open) {
		t.Errorf("%s\nclient got %q", problem, reply)
	}
}

// judgeSmuggle lists how what the backend got breaks the corpus property
// for tc, open being the open route's secret.
func judgeSmuggle(tc smuggleCase, be *strictBackend, open string) []string {
	reqs, violations, raw := be.result()
	var problems []string
	for _, v := range violations {
		problems = append(problems, fmt.Sprintf("ambiguous framing forwarded: %s\nbackend got %q", v, raw))
	}
	for i, r := range reqs {
		if len(r.checked) != 1 || r.checked[0] != open {
			problems = append(problems, fmt.Sprintf("request %d (%s) reached the backend without the proxy's check (X-Checked %q)\nbackend got %q",
				i, r.line, r.checked, raw))
		}
	}
	n := 0
	for _, r := range reqs {
		if r.line != "GET /end HTTP/1.1" {
			n++
		}
	}
	if n < tc.min || n > tc.max {
		problems = append(problems, fmt.Sprintf("backend parsed %d requests, want %d..%d\nbackend got %q", n, tc.min, tc.max, raw))
	}
	return problems
}

// TestHTTPSmugglingOracle: the corpus's judge is not vacuous. Every case
// sent straight to the strict backend, without the proxy, breaks the
// property (the backend parses requests nobody checked, or finds the
// framing ambiguous).
func TestHTTPSmugglingOracle(t *testing.T) {
	t.Parallel()
	for _, tc := range smugglingCorpus() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			be := startStrictBackend(t)
			c, err := net.Dial("tcp", be.addr())
			require.NoError(t, err)
			_, err = io.WriteString(c, strings.ReplaceAll(tc.send, "%S", smuggled))
			require.NoError(t, err)
			// Half-closed, the backend reads everything and ends.
			require.NoError(t, c.(*net.TCPConn).CloseWrite())
			readUntilQuiet(c, 5*time.Second, 5*time.Second)
			_ = c.Close()
			be.close()
			require.NotEmpty(t, judgeSmuggle(tc, be, "secret"), "sent directly, %q passed the judge", tc.send)
		})
	}
}

// readUntilQuiet reads c until it closes, nothing comes for quiet, or
// limit passes.
func readUntilQuiet(c net.Conn, quiet, limit time.Duration) string {
	var out []byte
	buf := make([]byte, 4096)
	end := time.Now().Add(limit)
	for time.Now().Before(end) {
		_ = c.SetReadDeadline(time.Now().Add(quiet))
		n, err := c.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			break
		}
	}
	return string(out)
}
