package smartproxy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Helpers of the HTTP layer tests: backends that echo what they received,
// clients that dial the proxy whatever the URL's host, and route
// constructors on test ports.

// echoed is what echoBackend reports about a request.
type echoed struct {
	Backend string      `json:"backend"`
	Method  string      `json:"method"`
	Path    string      `json:"path"`
	Query   string      `json:"query"`
	Host    string      `json:"host"`
	Proto   string      `json:"proto"`
	Header  http.Header `json:"header"`
}

// echoServer is a loopback HTTP server closed when the test ends.
type echoServer struct {
	*httptest.Server
	conns atomic.Int64 // connections accepted
}

func (b *echoServer) addr() string { return b.Listener.Addr().String() }

// startEchoServer serves h on loopback, counting connections.
func startEchoServer(t testing.TB, h http.Handler) *echoServer {
	t.Helper()
	b := &echoServer{}
	b.Server = httptest.NewUnstartedServer(h)
	b.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			b.conns.Add(1)
		}
	}
	b.Start()
	t.Cleanup(b.Close)
	return b
}

// echoBackend answers every request with a JSON echoed naming itself.
func echoBackend(t testing.TB, name string) *echoServer {
	return startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(echoed{Backend: name, Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
			Host: r.Host, Proto: r.Proto, Header: r.Header})
	}))
}

// proxyClient returns an HTTP client that connects to the proxy's port
// for every URL (so URLs can carry the domains routes match), counting
// its dials. tlsCfg, when set, enables TLS (https URLs) with it.
func proxyClient(t testing.TB, port int, tlsCfg *tls.Config, h2 bool) (*http.Client, *atomic.Int64) {
	t.Helper()
	var dials atomic.Int64
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, "tcp", "127.0.0.1:"+strconv.Itoa(port))
		},
		TLSClientConfig:   tlsCfg,
		ForceAttemptHTTP2: h2,
	}
	if !h2 && tlsCfg != nil {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // HTTP/1.1 only
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport:     tr,
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, &dials
}

// do sends a request and returns the response and its body.
func do(t testing.TB, c *http.Client, method, url string, header http.Header, body io.Reader) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	require.NoError(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	if h := header.Get("Host"); h != "" {
		req.Host = h
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

// getEcho sends a request that must reach an echoBackend.
func getEcho(t testing.TB, c *http.Client, method, url string, header http.Header) echoed {
	t.Helper()
	resp, body := do(t, c, method, url, header, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	var e echoed
	require.NoError(t, json.Unmarshal([]byte(body), &e), body)
	return e
}

// httpRouteOn is a plain HTTP forward route on port.
func httpRouteOn(name string, port int, target string, domains ...string) Route {
	return NewRoute(name).Ports(port).Domains(domains...).ForwardTo(target).Route()
}

// terminateRouteOn is a TLS-terminating HTTP route on port whose
// certificate comes from the proxy's store.
func terminateRouteOn(name string, port int, target string, domains ...string) Route {
	r := httpRouteOn(name, port, target, domains...)
	r.Action.TLS = &RouteTLS{Mode: TLSTerminate}
	r.Action.Options = &ActionOptions{BackendProtocol: "http1"}
	return r
}

// testCertStore holds testCert (*.example.com, *.test).
func testCertStore(t testing.TB) *CertStore {
	s := NewCertStore()
	c := testCert()
	require.NoError(t, s.Add(&c))
	return s
}

// insecureTLS trusts any certificate (testCert is self-signed).
func insecureTLS(serverName string, protos ...string) *tls.Config {
	return &tls.Config{ServerName: serverName, InsecureSkipVerify: true, NextProtos: protos}
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

// httpKind is one way an HTTP request reaches the proxy: plain HTTP, or
// HTTP inside TLS the proxy terminates.
type httpKind struct {
	name      string
	terminate bool
}

// forEachHTTPKind runs f as a subtest for plain HTTP and terminated TLS.
func forEachHTTPKind(t *testing.T, f func(t *testing.T, k httpKind)) {
	for _, k := range []httpKind{{"http", false}, {"tls-terminate-http", true}} {
		t.Run(k.name, func(t *testing.T) { f(t, k) })
	}
}

// route is an HTTP forward route of this kind on port.
func (k httpKind) route(name string, port int, target string, domains ...string) Route {
	if k.terminate {
		return terminateRouteOn(name, port, target, domains...)
	}
	return httpRouteOn(name, port, target, domains...)
}

// dial connects from ip and, for terminated TLS, handshakes for sni; the
// error is the handshake's. The conn is closed when the test ends.
func (k httpKind) dial(t *testing.T, ip string, port int, sni string) (net.Conn, error) {
	t.Helper()
	var c net.Conn = dialFrom(t, ip, port)
	t.Cleanup(func() { _ = c.Close() })
	if !k.terminate {
		return c, nil
	}
	tc := tls.Client(c, insecureTLS(sni, "http/1.1"))
	return tc, tc.Handshake()
}
