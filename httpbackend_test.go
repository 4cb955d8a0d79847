package smartproxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/gosmartproxy/smartproxy/internal/balance"
	"github.com/stretchr/testify/require"
)

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
	t.Parallel()
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
	t.Parallel()
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
// name the backend's certificate does not cover is a 502 and the backend
// gets no request, from an HTTP/2 client (net/http's stack and
// http.Transport) and an HTTP/1.1 one (the fast forward, by default).
func TestHTTPReencryptOriginalWrongSNIFails(t *testing.T) {
	t.Parallel()
	for _, alpn := range []string{"h2", "http/1.1"} {
		t.Run(alpn, func(t *testing.T) {
			t.Parallel()
			b := startSNIBackend(t)
			lp := newListenerPool(t)
			port := lp.port(t)
			r := originalRoutes(port, b.addr(), "http1")
			r[0].Match.Domains = []string{"*.test"}
			startTestProxy(t, lp, Options{Certificates: newTestStore(t), Routes: r})
			c, _ := proxyClient(t, port, insecureTLS("", alpn), alpn == "h2")
			resp, _ := do(t, c, "GET", "https://x.test/", nil, nil)
			require.Equal(t, http.StatusBadGateway, resp.StatusCode)
			b.mu.Lock()
			defer b.mu.Unlock()
			require.Empty(t, b.byConn, "no request reached the backend")
		})
	}
}

func TestSNIAddrRoundTrip(t *testing.T) {
	t.Parallel()
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

type rwBody struct {
	io.Reader
	bytes.Buffer
	closes int
}

func (b *rwBody) Read(p []byte) (int, error) { return b.Reader.Read(p) }

func (b *rwBody) Write(p []byte) (int, error) { return b.Buffer.Write(p) }

func (b *rwBody) Close() error { b.closes++; return nil }

// TestLeasedBodyReleasesOnce: the lease embedded in the response body
// counts the request as active until the body is closed, however often
// and from however many goroutines Close is called; a released lease can
// be taken again (the retry path); an upgraded body stays writable. The
// lease and body cost no allocation beyond the leasedBody itself.
func TestLeasedBodyReleasesOnce(t *testing.T) {
	// Not parallel: testing.AllocsPerRun counts the allocations of the whole process.
	p, err := New(Options{Logger: testLogger()})
	require.NoError(t, err)
	const addr = "10.9.9.8:80"
	active := func() int64 {
		for _, s := range p.TargetHealth() {
			if s.Addr == addr {
				return s.ActiveConnections
			}
		}
		return 0
	}

	lb := new(leasedBody)
	p.health.Acquire(&lb.Lease, addr)
	require.EqualValues(t, 1, active())
	lb.Release() // a failed attempt
	lb.Release()
	require.EqualValues(t, 0, active())
	p.health.Acquire(&lb.Lease, addr) // the next attempt reuses it
	p.health.Acquire(new(balance.Lease), addr)
	require.EqualValues(t, 2, active())

	body := lb.wrap(io.NopCloser(strings.NewReader("x")))
	_, isRW := body.(io.ReadWriteCloser)
	require.False(t, isRW)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { _ = body.Close() })
	}
	wg.Wait()
	require.EqualValues(t, 1, active(), "eight Closes released one lease")

	rw := &rwBody{Reader: strings.NewReader("y")}
	lb2 := new(leasedBody)
	p.health.Acquire(&lb2.Lease, addr)
	body = lb2.wrap(rw)
	w, ok := body.(io.ReadWriteCloser)
	require.True(t, ok, "an upgrade's body stays writable")
	_, err = w.Write([]byte("hello"))
	require.NoError(t, err)
	require.Equal(t, "hello", rw.String())
	require.NoError(t, w.Close())
	require.NoError(t, w.Close())
	require.Equal(t, 2, rw.closes)
	require.EqualValues(t, 1, active())

	nop := io.NopCloser(strings.NewReader(""))
	require.Equal(t, 0.0, testing.AllocsPerRun(100, func() {
		p.health.Acquire(&lb.Lease, addr)
		_ = lb.wrap(nop).Close()
	}), "acquire, wrap and release allocate nothing")
}
