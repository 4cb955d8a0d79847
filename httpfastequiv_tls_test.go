package smartproxy

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Equivalence tests of the fast forward's TLS backends and chunked
// uploads (httpfastequiv_test.go has the harness): the bytes a raw
// backend receives, and what the client gets, through both stacks.

// equivChunkedTable: chunked uploads, which the fast forward decodes
// and sends re-chunked.
func equivChunkedTable() []equivCase {
	a, te := "a.test", "Transfer-Encoding: chunked"
	small := strings.Repeat("1\r\nx\r\n", 300)
	return []equivCase{
		{"chunked empty body", rawReq("POST", "/x", a, "0\r\n\r\n", te), nil, 200, 1},
		{"chunked GET", rawReq("GET", "/x", a, "3\r\nabc\r\n0\r\n\r\n", te), nil, 200, 1},
		{"chunked many small chunks", rawReq("POST", "/x", a, small+"0\r\n\r\n", te), nil, 200, 1},
		{"chunked upper-case hex and extensions", rawReq("POST", "/x", a, "A;a=b;c=\"d\"\r\n0123456789\r\n0;z\r\n\r\n", te), nil, 200, 1},
		{"chunked unannounced trailer", rawReq("POST", "/x", a, "3\r\nabc\r\n0\r\nX-Late: 1\r\n\r\n", te), nil, 200, 1},
		{"chunked announced and unannounced trailers", rawReq("POST", "/x", a, "3\r\nabc\r\n0\r\nX-T: v\r\nX-Late: 1\r\nX-T: w\r\n\r\n",
			te, "Trailer: x-t"), nil, 200, 1},
		{"chunked announced trailer missing", rawReq("POST", "/x", a, "3\r\nabc\r\n0\r\n\r\n", te, "Trailer: X-Gone, X-A"), nil, 200, 1},
		{"chunked Trailer Content-Length", rawReq("POST", "/x", a, "3\r\nabc\r\n0\r\nContent-Length: 9\r\n\r\n",
			te, "Trailer: Content-Length"), nil, 0, -1},
		{"chunked trailer framing names", rawReq("POST", "/x", a, "3\r\nabc\r\n0\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\nHost: evil\r\n\r\n",
			te, "Trailer: X-T"), nil, 0, -1},
		{"chunked with templates", rawReq("POST", "/a", "t.test", "3\r\nabc\r\n0\r\n\r\n", te), nil, 200, 1},
		{"chunked data longer than size", rawReq("POST", "/x", a, "3\r\nabcd\r\n0\r\n\r\n", te), nil, 400, 0},
		{"chunked size overflow", rawReq("POST", "/x", a, "10000000000000000\r\nabc\r\n0\r\n\r\n", te), nil, 400, 0},
		{"chunked bare LF", rawReq("POST", "/x", a, "3\nabc\r\n0\r\n\r\n", te), nil, 400, 0},
		{"chunked not hex", rawReq("POST", "/x", a, "x\r\nabc\r\n0\r\n\r\n", te), nil, 400, 0},
		{"chunked then pipelined", rawReq("POST", "/x", a, "3\r\nabc\r\n0\r\n\r\n", te) + rawReq("GET", "/next", a, ""),
			[]string{"GET", "GET"}, 200, 1},
		{"chunked 1 MiB", rawReq("POST", "/x", a, strings.Repeat("8000\r\n"+strings.Repeat("z", 1<<15)+"\r\n", 32)+"0\r\n\r\n", te), nil, 200, 1},
	}
}

// TestFastEquivChunked: chunked uploads through both stacks, plain and
// over TLS.
func TestFastEquivChunked(t *testing.T) {
	t.Parallel()
	runEquivTable(t, startEquivStacks(t, equivRoutes), equivChunkedTable())
}

// TestFastEquivChunkedTLS: the chunked table through stacks terminating
// the clients' TLS.
func TestFastEquivChunkedTLS(t *testing.T) {
	t.Parallel()
	runEquivTable(t, startEquivStacksSNI(t, "a.test", equivRoutes), equivChunkedTable())
}

// reencryptTable is the request and chunked tables' requests for a.test,
// for host instead.
func reencryptTable(host string) []equivCase {
	var table []equivCase
	for _, c := range append(equivRequestTable(), equivChunkedTable()...) {
		if strings.Contains(c.send, "\r\nHost: a.test\r\n") {
			c.send = strings.ReplaceAll(c.send, "a.test", host) // the absolute-form target's too
			table = append(table, c)
		}
	}
	return table
}

// TestFastEquivReencrypt: the tables through stacks re-encrypting to a
// TLS backend verified against the test CA, for each backend serverName
// rule: the target's host (an IP here), an explicit name, and the
// client's SNI ("original").
func TestFastEquivReencrypt(t *testing.T) {
	t.Parallel()
	ca := pki().ca.pem
	for _, tc := range []struct {
		name, sni string
		backend   *BackendTLS
	}{
		{"target", "a.test", &BackendTLS{CA: ca}},
		{"explicit name", "a.test", &BackendTLS{CA: ca, ServerName: "backend.internal"}},
		{"original", "original.example.com", &BackendTLS{CA: ca, ServerName: "original"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			host := tc.sni
			table := reencryptTable(host)
			require.Greater(t, len(table), 60)
			stacks := startEquivStacksTLS(t, tc.sni, tc.backend, func(port int, target string) []Route {
				return []Route{
					NewRoute("plain").Ports(port).Domains(host).ForwardTo(target).Route(),
					NewRoute("tmpl").Ports(port).Domains(host).Path("/a*").Priority(1).ForwardTo(target).
						RequestHeader("X-Client", "{clientIp}").ResponseHeader("X-Served-By", "{routeName}").Route(),
				}
			})
			runEquivTable(t, stacks, table)
			sends, methods := keepAliveMix(40)
			for i := range sends {
				sends[i] = strings.Replace(sends[i], "\r\nHost: a.test\r\n", "\r\nHost: "+host+"\r\n", 1)
			}
			slow, fast := stacks[0].be.accepts.Load(), stacks[1].be.accepts.Load()
			o := requireEquivSequence(t, stacks, sends, methods)
			require.Len(t, o.resps, 40, o.end)
			slow, fast = stacks[0].be.accepts.Load()-slow, stacks[1].be.accepts.Load()-fast
			require.LessOrEqual(t, fast, slow, "backend connections for 40 keep-alive requests")
		})
	}
}

// TestFastEquivReencryptUnverified: a backend whose certificate the
// route does not trust, or that does not cover the name, is answered
// 502 on both stacks, and gets no request.
func TestFastEquivReencryptUnverified(t *testing.T) {
	t.Parallel()
	for _, b := range []*BackendTLS{
		{CA: pki().otherCA.pem},
		{CA: pki().ca.pem, ServerName: "elsewhere.internal"},
	} {
		stacks := startEquivStacksTLS(t, "a.test", b, plainRoutes)
		for _, send := range []string{rawReq("GET", "/", "a.test", ""),
			rawReq("POST", "/c", "a.test", "3\r\nabc\r\n0\r\n\r\n", "Transfer-Encoding: chunked")} {
			o := requireEquiv(t, stacks, send, "GET")
			require.Empty(t, o.reqs)
			require.Equal(t, 502, o.resps[0].status())
		}
	}
}
