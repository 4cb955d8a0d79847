package smartproxy

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// sniBackend is a TLS backend (certificate *.example.com of the test CA)
// that answers with the SNI and Host it was reached with, and records
// which SNIs each of its connections carried.
type sniBackend struct {
	srv   *httptest.Server
	conns atomic.Int64

	mu     sync.Mutex
	byConn map[string]map[string]bool // remote address -> SNIs
}

func startSNIBackend(t *testing.T) *sniBackend {
	t.Helper()
	b := &sniBackend{byConn: make(map[string]map[string]bool)}
	b.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		if b.byConn[r.RemoteAddr] == nil {
			b.byConn[r.RemoteAddr] = make(map[string]bool)
		}
		b.byConn[r.RemoteAddr][r.TLS.ServerName] = true
		b.mu.Unlock()
		_, _ = fmt.Fprintf(w, "sni=%s host=%s proto=%s", r.TLS.ServerName, r.Host, r.Proto)
	}))
	b.srv.TLS = &tls.Config{Certificates: []tls.Certificate{*pki().wildcard.tls}}
	b.srv.EnableHTTP2 = true
	b.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			b.conns.Add(1)
		}
	}
	b.srv.StartTLS()
	t.Cleanup(b.srv.Close)
	return b
}

func (b *sniBackend) addr() string { return b.srv.Listener.Addr().String() }

// requireOneSNIPerConn checks that no backend connection carried requests
// for two SNIs.
func (b *sniBackend) requireOneSNIPerConn(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for conn, snis := range b.byConn {
		require.Len(t, snis, 1, "backend connection %s served SNIs %v", conn, snis)
	}
}

// originalRoutes re-encrypts *.example.com on port, verifying the backend
// against the test CA for the client's SNI, with backend protocol proto.
func originalRoutes(port int, addr, proto string) []Route {
	r := terminateRouteOn("original-"+proto, port, addr, "*.example.com")
	r.Action.TLS.Mode = TLSTerminateAndReencrypt
	r.Action.TLS.Backend = &BackendTLS{CA: pki().ca.pem, ServerName: "original"}
	r.Action.Options.BackendProtocol = BackendProtocol(proto)
	return []Route{r}
}

func transportCount(p *Proxy) int {
	if s := p.http.transports.snap.Load(); s != nil {
		return len(s.m)
	}
	return 0
}

// TestHTTPReencryptOriginalManySNIs: a wildcard route with backend
// serverName "original" verifies each backend connection for the client's
// SNI, through one transport however many SNIs come, and pools (reuses)
// the backend connections of each SNI.
func TestHTTPReencryptOriginalManySNIs(t *testing.T) {
	const snis = 200
	for _, proto := range []string{"http1", "h2"} {
		t.Run(proto, func(t *testing.T) {
			b := startSNIBackend(t)
			lp := newListenerPool(t)
			port := lp.port(t)
			p := startTestProxy(t, lp, Options{Certificates: newTestStore(t), Routes: originalRoutes(port, b.addr(), proto)})
			// The client sends each URL's host as SNI, on a connection of
			// its own.
			c, _ := proxyClient(t, port, insecureTLS("", "h2"), true)
			for round := range 2 {
				for i := range snis {
					name := fmt.Sprintf("h%d.example.com", i)
					resp, body := do(t, c, "GET", "https://"+name+"/", nil, nil)
					require.Equal(t, http.StatusOK, resp.StatusCode, body)
					wantProto := "HTTP/1.1"
					if proto == "h2" {
						wantProto = "HTTP/2.0"
					}
					require.Equal(t, "sni="+name+" host="+b.addr()+" proto="+wantProto, body, "round %d", round)
				}
			}
			require.Equal(t, 1, transportCount(p), "one transport for the route, whatever the SNIs")
			// The second round reused the first round's connections.
			require.Equal(t, int64(snis), b.conns.Load(), "backend connections")
			b.requireOneSNIPerConn(t)
		})
	}
}

// TestHTTPReencryptOriginalNoCrossSNIReuse: requests for alternating SNIs,
// sequential and concurrent, never share a backend connection, though the
// target is the same.
func TestHTTPReencryptOriginalNoCrossSNIReuse(t *testing.T) {
	for _, proto := range []string{"http1", "h2"} {
		t.Run(proto, func(t *testing.T) {
			b := startSNIBackend(t)
			lp := newListenerPool(t)
			port := lp.port(t)
			startTestProxy(t, lp, Options{Certificates: newTestStore(t), Routes: originalRoutes(port, b.addr(), proto)})
			c, _ := proxyClient(t, port, insecureTLS("", "h2"), true)
			for i := range 10 {
				name := []string{"a.example.com", "b.example.com"}[i%2]
				_, body := do(t, c, "GET", "https://"+name+"/", nil, nil)
				require.True(t, strings.HasPrefix(body, "sni="+name+" "), body)
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
		})
	}
}

// TestHTTPReencryptOriginalWrongSNIFails: the SNI is really verified: a
// name the backend's certificate does not cover fails.
func TestHTTPReencryptOriginalWrongSNIFails(t *testing.T) {
	b := startSNIBackend(t)
	lp := newListenerPool(t)
	port := lp.port(t)
	r := originalRoutes(port, b.addr(), "http1")
	r[0].Match.Domains = []string{"*.test"}
	startTestProxy(t, lp, Options{Certificates: newTestStore(t), Routes: r})
	c, _ := proxyClient(t, port, insecureTLS("", "h2"), true)
	resp, _ := do(t, c, "GET", "https://x.test/", nil, nil)
	require.Equal(t, http.StatusBadGateway, resp.StatusCode)
	b.mu.Lock()
	defer b.mu.Unlock()
	require.Empty(t, b.byConn, "no request reached the backend")
}

func TestSNIAddrRoundTrip(t *testing.T) {
	for _, c := range []struct{ addr, sni string }{
		{"127.0.0.1:8443", "a.example.com"},
		{"[::1]:443", "b.example.com"},
		{"backend.internal:443", ""},
		{"h:1", "weird:sni]name.with.dots"},
	} {
		s := sniAddr(c.addr, c.sni)
		_, _, err := net.SplitHostPort(s)
		require.NoError(t, err, s)
		addr, sni, ok := parseSNIAddr(s)
		require.True(t, ok, s)
		require.Equal(t, c.addr, addr)
		require.Equal(t, c.sni, sni)
	}
	require.NotEqual(t, sniAddr("127.0.0.1:1", "a"), sniAddr("127.0.0.1:1", "b"))
	for _, bad := range []string{"127.0.0.1:443", "backend.invalid:443", "szz.a00.sni.invalid:443", "x.sni.invalid:443"} {
		_, _, ok := parseSNIAddr(bad)
		require.False(t, ok, bad)
	}
}

// BenchmarkTransportSetGet is the per-request pool lookup, from many
// goroutines.
func BenchmarkTransportSetGet(b *testing.B) {
	lp := newListenerPool(b)
	port := lp.port(b)
	p := startTestProxy(b, lp, Options{Routes: []Route{httpRouteOn("r", port, "127.0.0.1:1", "x.test")}})
	ts := &p.http.transports
	k := transportKey{proto: "http1"}
	ts.get(k)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ts.get(k)
		}
	})
}
