package smartproxy_test

// Black-box tests: what a user of the package sees, through the public
// API only (New, Start, Stop, UpdateRoutes, Metrics, the route builder and
// helpers, CertStore). Nothing here reaches into the package's internals
// or its internal test helpers, so these tests hold however the inside is
// rearranged.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy"
	"github.com/stretchr/testify/require"
)

// bbPorts hands the proxy listeners the test opened on 127.0.0.1:0,
// through Options.Listen, so each port is known before Start and cannot
// be taken by anyone else in between.
type bbPorts struct {
	mu  sync.Mutex
	lns map[string]net.Listener // by "127.0.0.1:port"
}

func newBBPorts(t *testing.T) *bbPorts {
	ps := &bbPorts{lns: map[string]net.Listener{}}
	t.Cleanup(func() {
		ps.mu.Lock()
		defer ps.mu.Unlock()
		for _, ln := range ps.lns {
			_ = ln.Close()
		}
	})
	return ps
}

// port opens a loopback listener and returns its port.
func (ps *bbPorts) port(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.lns[ln.Addr().String()] = ln
	return ln.Addr().(*net.TCPAddr).Port
}

// listen is Options.Listen: it hands out each reserved listener once.
func (ps *bbPorts) listen(_ context.Context, _, address string) (net.Listener, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ln, ok := ps.lns[address]
	if !ok {
		return nil, fmt.Errorf("port %s was not reserved by the test", address)
	}
	delete(ps.lns, address)
	return ln, nil
}

// startProxy builds and starts a proxy on ps's ports and stops it when the
// test ends, requiring that Stop succeeds.
func startProxy(t *testing.T, ps *bbPorts, routes ...smartproxy.Route) *smartproxy.Proxy {
	t.Helper()
	return startProxyWith(t, ps, smartproxy.Options{Routes: routes})
}

func startProxyWith(t *testing.T, ps *bbPorts, opts smartproxy.Options) *smartproxy.Proxy {
	t.Helper()
	opts.ListenAddress = "127.0.0.1"
	opts.Listen = ps.listen
	opts.Logger = quiet
	p, err := smartproxy.New(opts)
	require.NoError(t, err)
	require.NoError(t, p.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, p.Stop(ctx))
	})
	return p
}

// tcpBackend serves loopback TCP: it writes name and a newline, then
// echoes. It stops, closing its connections, when the test ends.
func tcpBackend(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				if _, err := io.WriteString(c, name+"\n"); err == nil {
					_, _ = io.Copy(c, c)
				}
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// httpBackend serves loopback HTTP, answering "name method path proto".
func httpBackend(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = fmt.Fprintf(w, "%s %s %s %s", name, r.Method, r.URL.Path, r.Header.Get("X-Forwarded-Proto"))
	})}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(ln) })
	t.Cleanup(func() { _ = srv.Close(); wg.Wait() })
	return ln.Addr().String()
}

// dialFrom connects from the loopback address ip to port.
func dialFrom(t *testing.T, ip string, port int) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	return c
}

// greeting reads the backend's first line through c: its name.
func greeting(t *testing.T, c net.Conn) string {
	t.Helper()
	line, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	return line
}

// httpClient returns a client that connects to the proxy port for every
// URL, so URLs can name the hosts routes match; tlsCfg enables https.
// With tlsCfg, the client speaks h2 if tlsCfg offers it, else HTTP/1.1.
func httpClient(t *testing.T, port int, tlsCfg *tls.Config) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", "127.0.0.1:"+strconv.Itoa(port))
		},
		TLSClientConfig: tlsCfg,
	}
	if tlsCfg != nil && slices.Contains(tlsCfg.NextProtos, "h2") {
		tr.ForceAttemptHTTP2 = true
	} else {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // HTTP/1.1 only
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// selfSigned returns a certificate for host and a pool that trusts it.
func selfSigned(t *testing.T, host string) (*tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: host},
		DNSNames:              []string{host},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// TestBlackBoxForwardTCP: a route forwards a port to a backend, byte for
// byte both ways; Metrics counts the connection; UpdateRoutes sends new
// connections to the new target; Stop cuts what is still open once its
// context ends, and closes the port.
func TestBlackBoxForwardTCP(t *testing.T) {
	t.Parallel()
	ps := newBBPorts(t)
	port := ps.port(t)
	a, b := tcpBackend(t, "a"), tcpBackend(t, "b")
	p, err := smartproxy.New(smartproxy.Options{
		ListenAddress: "127.0.0.1",
		Listen:        ps.listen,
		Logger:        quiet,
		Routes:        []smartproxy.Route{smartproxy.NewRoute("tcp").Ports(port).ForwardTo(a).Route()},
	})
	require.NoError(t, err)
	require.NoError(t, p.Start(context.Background()))
	require.Equal(t, []int{port}, p.Ports())

	c := dialFrom(t, "127.0.0.1", port)
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "a\n", line)
	_, err = io.WriteString(c, "hello through the proxy\n")
	require.NoError(t, err)
	line, err = br.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "hello through the proxy\n", line)
	m := p.Metrics()
	require.Equal(t, 1, m.Active)
	require.EqualValues(t, 1, m.Total)
	require.Equal(t, 1, m.ByRoute["tcp"])

	require.NoError(t, p.UpdateRoutes([]smartproxy.Route{smartproxy.NewRoute("tcp").Ports(port).ForwardTo(b).Route()}))
	require.Equal(t, "b\n", greeting(t, dialFrom(t, "127.0.0.1", port)), "a new connection goes to the new target")

	// Stop waits for open connections until ctx ends, then cuts them and
	// says so.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, p.Stop(ctx), context.DeadlineExceeded)
	_, err = br.ReadString('\n')
	require.Error(t, err, "Stop cut the open connection")
	require.Zero(t, p.Metrics().Active)
	_, err = net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	require.Error(t, err, "the port is closed after Stop")
}

// TestBlackBoxHTTPRoutesByHostAndPath: on one port, requests go to the
// backend of the route whose host and path they match, over HTTP/1.1.
func TestBlackBoxHTTPRoutesByHostAndPath(t *testing.T) {
	t.Parallel()
	ps := newBBPorts(t)
	port := ps.port(t)
	api, web, other := httpBackend(t, "api"), httpBackend(t, "web"), httpBackend(t, "other")
	site := smartproxy.HTTPRoute("site", []string{"app.test"}, web)
	site.Match.Ports = smartproxy.Ports(port)
	startProxy(t, ps,
		smartproxy.NewRoute("api").Ports(port).Domains("app.test").Path("/api/*").ForwardTo(api).Route(),
		site,
		smartproxy.NewRoute("other").Ports(port).Domains("other.test").ForwardTo(other).Route(),
	)
	c := httpClient(t, port, nil)
	for url, want := range map[string]string{
		"http://app.test/api/users": "api GET /api/users http",
		"http://app.test/api":       "api GET /api http",
		"http://app.test/":          "web GET / http",
		"http://app.test/apix":      "web GET /apix http",
		"http://other.test/api/x":   "other GET /api/x http",
	} {
		status, body := get(t, c, url)
		require.Equal(t, http.StatusOK, status, url)
		require.Equal(t, want, body, url)
	}
}

// TestBlackBoxTerminateTLS: a terminating HTTPS route takes its
// certificate from the CertStore by SNI; clients that verify it get the
// backend's answer over h2 and HTTP/1.1, with X-Forwarded-Proto https.
func TestBlackBoxTerminateTLS(t *testing.T) {
	t.Parallel()
	ps := newBBPorts(t)
	port := ps.port(t)
	cert, roots := selfSigned(t, "secure.test")
	store := smartproxy.NewCertStore()
	require.NoError(t, store.Add(cert))
	route := smartproxy.HTTPSTerminateRoute("secure", []string{"secure.test"}, httpBackend(t, "be"), nil, false)
	route.Match.Ports = smartproxy.Ports(port)
	startProxyWith(t, ps, smartproxy.Options{Certificates: store, Routes: []smartproxy.Route{route}})

	for _, proto := range []string{"h2", "http/1.1"} {
		cfg := &tls.Config{ServerName: "secure.test", RootCAs: roots, NextProtos: []string{proto}}
		c := httpClient(t, port, cfg)
		resp, err := c.Get("https://secure.test/x")
		require.NoError(t, err, proto)
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, proto)
		require.Equal(t, "be GET /x https", string(body), proto)
		require.Equal(t, proto, resp.TLS.NegotiatedProtocol)
		require.Equal(t, cert.Leaf.Raw, resp.TLS.PeerCertificates[0].Raw, "the store's certificate")
	}
}

// TestBlackBoxRefuseByIPList: a route's block list and allow list refuse
// clients before anything reaches the backend; others pass, and Metrics
// counts the refusals.
func TestBlackBoxRefuseByIPList(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("dials from 127.0.0.2 and 127.0.0.3, which only Linux routes on loopback")
	}
	ps := newBBPorts(t)
	blocked, allowed := ps.port(t), ps.port(t)
	be := tcpBackend(t, "be")
	p := startProxy(t, ps,
		smartproxy.NewRoute("block").Ports(blocked).BlockIPs("127.0.0.2").ForwardTo(be).Route(),
		smartproxy.NewRoute("allow").Ports(allowed).AllowIPs("127.0.0.1", "127.0.0.3").ForwardTo(be).Route(),
	)
	refused := func(ip string, port int) {
		t.Helper()
		c := dialFrom(t, ip, port)
		got, err := io.ReadAll(c)
		require.Empty(t, got, "%s on %d reached the backend", ip, port)
		if err != nil {
			require.NotErrorIs(t, err, context.DeadlineExceeded)
			var ne net.Error
			require.False(t, errors.As(err, &ne) && ne.Timeout(), "%s on %d: not closed: %v", ip, port, err)
		}
	}
	refused("127.0.0.2", blocked)
	refused("127.0.0.2", allowed)
	require.Equal(t, "be\n", greeting(t, dialFrom(t, "127.0.0.1", blocked)))
	require.Equal(t, "be\n", greeting(t, dialFrom(t, "127.0.0.3", allowed)))
	require.Eventually(t, func() bool {
		r := p.Metrics().Rejected
		return r["ip-blocked"] == 1 && r["ip-not-allowed"] == 1
	}, 3*time.Second, 10*time.Millisecond, "Metrics().Rejected: %v", p.Metrics().Rejected)
}
