package smartproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy/acme"
	"github.com/gosmartproxy/smartproxy/internal/pebbletest"
)

// These tests order real certificates from Pebble through the proxy's own
// ports: Pebble resolves "localhost" to 127.0.0.1, where the proxy
// listens. Pebble's validation ports are fixed per instance, so every
// test runs its own.

// pebbleManager is a manager ordering from pb with settings s. The proxy
// stops it.
func pebbleManager(t *testing.T, pb *pebbletest.Server, s acme.Settings) *acme.Manager {
	t.Helper()
	s.DirectoryURL = pb.DirectoryURL
	m, err := acme.NewManager(acme.Config{Settings: s, HTTPClient: pb.Client, Storage: acme.NewFileStorage(t.TempDir()), Logger: testLogger()})
	require.NoError(t, err)
	return m
}

// awaitIssued waits until the proxy reports name valid from ACME.
func awaitIssued(t *testing.T, p *Proxy, name string) acme.CertStatus {
	t.Helper()
	var got acme.CertStatus
	require.Eventually(t, func() bool {
		for _, st := range p.CertificateStatus() {
			if st.Name == name && st.State == acme.StateValid && st.Source == acme.SourceACME {
				got = st
				return true
			}
		}
		return false
	}, 30*time.Second, 20*time.Millisecond, "no certificate for %s: %+v", name, p.CertificateStatus())
	return got
}

// requireTrusted completes a handshake with the proxy's port for
// localhost, verifying the chain against Pebble's root, and then a real
// HTTPS request through the proxy to the site backend.
func requireTrusted(t *testing.T, pb *pebbletest.Server, port int, st acme.CertStatus) {
	t.Helper()
	roots := pb.Roots(t)
	conn, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port), &tls.Config{ServerName: "localhost", RootCAs: roots})
	require.NoError(t, err, "the served chain verifies against Pebble's root")
	leaf := conn.ConnectionState().PeerCertificates[0]
	require.NoError(t, conn.Close())
	require.Equal(t, []string{"localhost"}, leaf.DNSNames)
	require.Equal(t, st.Serial, leaf.SerialNumber.Text(16))
	_, err = leaf.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: roots, Intermediates: x509.NewCertPool()})
	require.Error(t, err, "the leaf alone does not chain: the proxy sent the intermediate")

	c, _ := proxyClient(t, port, &tls.Config{RootCAs: roots}, false)
	e := getEcho(t, c, "GET", "https://localhost/hello", nil)
	require.Equal(t, "site", e.Backend)
	require.Equal(t, "/hello", e.Path)
}

// get sends one plain HTTP request for localhost to port.
func get(t *testing.T, port int, path string) (int, string) {
	t.Helper()
	c, _ := proxyClient(t, port, nil, false)
	resp, body := do(t, c, "GET", "http://localhost"+path, nil, nil)
	return resp.StatusCode, body
}

// TestACMEHTTP01SharedPort: HTTP-01 is validated through the proxy's own
// port, which a user HTTP route for the same name (matching every path)
// shares: the challenge wins before routing, the route keeps answering
// its own requests during and after, an unknown token is 404 without
// reaching the route, and the challenge path on another port is an
// ordinary request.
func TestACMEHTTP01SharedPort(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	httpPort, tlsPort, otherPort := lp.port(t), lp.port(t), lp.port(t)
	pb := pebbletest.Start(t, pebbletest.Options{HTTPPort: httpPort})
	paths := make(chan string, 10000)
	user := okBackend(t, paths)
	site := echoBackend(t, "site")
	m := pebbleManager(t, pb, acme.Settings{HTTPPort: httpPort, DisableTLSALPN: true})
	p := startTestProxy(t, lp, Options{ACME: m, Routes: []Route{
		httpRouteOn("user", httpPort, user.addr(), "localhost"),
		httpRouteOn("other", otherPort, user.addr()),
		terminateRouteOn("site", tlsPort, site.addr(), "localhost"),
	}})
	require.Equal(t, sortedInts(httpPort, otherPort, tlsPort), p.Ports())

	// The user's route answers throughout the order.
	stop := make(chan struct{})
	var during sync.WaitGroup
	var served atomic.Int64
	during.Go(func() {
		c, _ := proxyClient(t, httpPort, nil, false)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			resp, err := c.Get("http://localhost/user")
			if err != nil {
				t.Errorf("user request during the order: %v", err)
				return
			}
			var b strings.Builder
			_, _ = bufio.NewReader(resp.Body).WriteTo(&b)
			resp.Body.Close()
			if resp.StatusCode != 200 || b.String() != "ok:/user" {
				t.Errorf("user request during the order: %d %q", resp.StatusCode, b.String())
				return
			}
			served.Add(1)
		}
	})
	st := awaitIssued(t, p, "localhost")
	close(stop)
	during.Wait()
	require.Positive(t, served.Load())
	requireTrusted(t, pb, tlsPort, st)

	code, body := get(t, httpPort, "/after")
	require.Equal(t, 200, code)
	require.Equal(t, "ok:/after", body)
	code, body = get(t, httpPort, "/.well-known/acme-challenge/unknownToken")
	require.Equal(t, http.StatusNotFound, code, body)
	code, _ = get(t, httpPort, "/.well-known/acme-challenge/bad.token")
	require.Equal(t, http.StatusNotFound, code)
	code, body = get(t, otherPort, "/.well-known/acme-challenge/unknownToken")
	require.Equal(t, 200, code, "not an ACME port: an ordinary request")
	require.Equal(t, "ok:/.well-known/acme-challenge/unknownToken", body)
	close(paths)
	for path := range paths {
		if strings.HasPrefix(path, acmeChallengePrefix) {
			require.Equal(t, "/.well-known/acme-challenge/unknownToken", path)
			require.Zero(t, len(paths), "only the request on the other port reached the backend")
		}
	}
}

// TestACMEHTTP01OwnPort: no route uses the ACME port, so the proxy opens
// it for the challenges alone and answers 404 to anything else; it is
// closed again when no name needs it.
func TestACMEHTTP01OwnPort(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	acmePort, tlsPort := lp.port(t), lp.port(t)
	pb := pebbletest.Start(t, pebbletest.Options{HTTPPort: acmePort})
	site := echoBackend(t, "site")
	m := pebbleManager(t, pb, acme.Settings{HTTPPort: acmePort, DisableTLSALPN: true})
	p := startTestProxy(t, lp, Options{ACME: m, Routes: []Route{terminateRouteOn("site", tlsPort, site.addr(), "localhost")}})
	require.Equal(t, sortedInts(acmePort, tlsPort), p.Ports())
	st := awaitIssued(t, p, "localhost")
	requireTrusted(t, pb, tlsPort, st)
	code, _ := get(t, acmePort, "/")
	require.Equal(t, http.StatusNotFound, code)
	code, _ = get(t, acmePort, "/.well-known/acme-challenge/unknownToken")
	require.Equal(t, http.StatusNotFound, code)

	require.NoError(t, p.UpdateRoutes(nil))
	require.Empty(t, p.Ports(), "no managed name: the ACME port is closed")
}

// TestACMEHTTP01TCPRoute: the ACME port carries a raw TCP route (no HTTP
// rules): a challenge request is answered by the proxy, everything else
// is forwarded as before, a server-speaks-first backend included.
func TestACMEHTTP01TCPRoute(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	acmePort, tlsPort := lp.port(t), lp.port(t)
	pb := pebbletest.Start(t, pebbletest.Options{HTTPPort: acmePort})
	raw := startBackend(t, "127.0.0.1:0", func(c net.Conn) {
		_, _ = c.Write([]byte("banner\n"))
		echo(c)
	})
	site := echoBackend(t, "site")
	m := pebbleManager(t, pb, acme.Settings{HTTPPort: acmePort, DisableTLSALPN: true})
	p := startTestProxy(t, lp, Options{ACME: m, Routes: []Route{
		NewRoute("raw").Ports(acmePort).ForwardTo(raw.addr()).Route(),
		terminateRouteOn("site", tlsPort, site.addr(), "localhost"),
	}})
	awaitIssued(t, p, "localhost")

	c := dial(t, acmePort)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	require.NoError(t, err, "silence: the backend speaks first")
	require.Equal(t, "banner\n", line)
	req := "GET /page HTTP/1.1\r\nHost: localhost\r\n\r\n"
	_, err = c.Write([]byte(req))
	require.NoError(t, err)
	echoed := make([]byte, len(req))
	_, err = io.ReadFull(r, echoed)
	require.NoError(t, err)
	require.Equal(t, req, string(echoed), "a request that is no challenge is forwarded raw")
}

// TestACMETLSALPN01: with HTTP-01 off, the name is validated by
// TLS-ALPN-01 on the terminating route's port; no HTTP port is opened.
func TestACMETLSALPN01(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	tlsPort := lp.port(t)
	pb := pebbletest.Start(t, pebbletest.Options{TLSPort: tlsPort})
	site := echoBackend(t, "site")
	m := pebbleManager(t, pb, acme.Settings{DisableHTTP01: true})
	p := startTestProxy(t, lp, Options{ACME: m, Routes: []Route{terminateRouteOn("site", tlsPort, site.addr(), "localhost")}})
	require.Equal(t, []int{tlsPort}, p.Ports())
	st := awaitIssued(t, p, "localhost")
	requireTrusted(t, pb, tlsPort, st)

	// A validation hello now finds no challenge: the handshake fails and
	// nothing is routed.
	_, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(tlsPort), &tls.Config{ServerName: "localhost", NextProtos: []string{acmeALPNProto}, InsecureSkipVerify: true})
	require.Error(t, err)
	// A client that offers acme-tls/1 beside other protocols is no
	// validation: it is routed as any other.
	conn, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(tlsPort), &tls.Config{ServerName: "localhost", NextProtos: []string{"h2", acmeALPNProto}, RootCAs: pb.Roots(t)})
	require.NoError(t, err)
	require.Equal(t, "h2", conn.ConnectionState().NegotiatedProtocol)
	require.NoError(t, conn.Close())
}

// TestACMEUpdateRoutes: a terminating route added at run time gets its
// name ordered, through the HTTP port a user route already has.
func TestACMEUpdateRoutes(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	httpPort, tlsPort := lp.port(t), lp.port(t)
	pb := pebbletest.Start(t, pebbletest.Options{HTTPPort: httpPort})
	user := okBackend(t, nil)
	site := echoBackend(t, "site")
	m := pebbleManager(t, pb, acme.Settings{HTTPPort: httpPort, DisableTLSALPN: true})
	userRoute := httpRouteOn("user", httpPort, user.addr(), "localhost")
	p := startTestProxy(t, lp, Options{ACME: m, Routes: []Route{userRoute}})
	require.Empty(t, p.CertificateStatus())
	require.Zero(t, pb.Orders())

	require.NoError(t, p.UpdateRoutes([]Route{userRoute, terminateRouteOn("site", tlsPort, site.addr(), "localhost")}))
	st := awaitIssued(t, p, "localhost")
	requireTrusted(t, pb, tlsPort, st)
	require.Equal(t, 1, pb.Orders())
	code, body := get(t, httpPort, "/x")
	require.Equal(t, 200, code)
	require.Equal(t, "ok:/x", body)
}

// TestACMEStopWithoutStart: a proxy that never started stops its manager
// too (the CLI's -check does this).
func TestACMEStopWithoutStart(t *testing.T) {
	t.Parallel()
	m := newManager(t)
	p, err := New(Options{ACME: m, Logger: testLogger(), Routes: []Route{autoRoute("a", "a.example.com")}})
	require.NoError(t, err)
	require.NoError(t, p.Stop(context.Background()))
	require.ErrorContains(t, m.Start(context.Background()), "Start after Stop")
}

// TestACMEHTTP01BeforeSecurity: the challenge is answered before the
// route's security, so an allow list that keeps the CA out of the port's
// route does not stop the validation.
func TestACMEHTTP01BeforeSecurity(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	httpPort, tlsPort := lp.port(t), lp.port(t)
	pb := pebbletest.Start(t, pebbletest.Options{HTTPPort: httpPort})
	paths := make(chan string, 100)
	user := okBackend(t, paths)
	site := echoBackend(t, "site")
	m := pebbleManager(t, pb, acme.Settings{HTTPPort: httpPort, DisableTLSALPN: true})
	guarded := NewRoute("guarded").Ports(httpPort).Domains("localhost").AllowIPs("10.0.0.0/8").ForwardTo(user.addr()).Route()
	p := startTestProxy(t, lp, Options{ACME: m, Routes: []Route{guarded, terminateRouteOn("site", tlsPort, site.addr(), "localhost")}})
	st := awaitIssued(t, p, "localhost")
	requireTrusted(t, pb, tlsPort, st)
	code, _ := get(t, httpPort, "/page")
	require.Equal(t, http.StatusForbidden, code, "the route still refuses loopback clients")
	require.Empty(t, paths, "nothing reached the guarded backend")
}
