package smartproxy

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/tlstest"
	"github.com/stretchr/testify/require"
)

// terminateRoute forwards port to target with the given TLS block,
// matching domains when some are given.
func terminateRoute(name string, port int, target string, rt RouteTLS, domains ...string) Route {
	b := NewRoute(name).Ports(port).ForwardTo(target)
	if len(domains) > 0 {
		b = b.Domains(domains...)
	}
	r := b.Route()
	r.Action.TLS = &rt
	return r
}

// caClient verifies the proxy against the test CA for serverName.
func caClient(serverName string) *tls.Config {
	return &tls.Config{RootCAs: pki().ca.pool, ServerName: serverName}
}

// tlsDial handshakes with the proxy on port; the connection gets a 5 s
// deadline and is closed when the test ends.
func tlsDial(t testing.TB, port int, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	d := &net.Dialer{Timeout: 3 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	return c, nil
}

// readLine reads one line from a TLS connection.
func readLine(c *tls.Conn) (string, error) {
	var b strings.Builder
	buf := make([]byte, 1)
	for {
		if _, err := c.Read(buf); err != nil {
			return b.String(), err
		}
		b.WriteByte(buf[0])
		if buf[0] == '\n' {
			return b.String(), nil
		}
	}
}

// exchange sends a line over c and expects the reporter's answer.
func exchange(t testing.TB, c *tls.Conn, msg string) {
	t.Helper()
	_, err := io.WriteString(c, msg+"\n")
	require.NoError(t, err)
	line, err := readLine(c)
	require.NoError(t, err)
	require.Equal(t, "got:"+msg+"\n", line)
}

// terminated dials port with cfg, checks a round trip to the reporter
// backend and returns the client's view of the handshake.
func terminated(t testing.TB, port int, cfg *tls.Config) tls.ConnectionState {
	t.Helper()
	c, err := tlsDial(t, port, cfg)
	require.NoError(t, err, "handshake with SNI %q", cfg.ServerName)
	exchange(t, c, "hello "+cfg.ServerName)
	st := c.ConnectionState()
	require.NoError(t, c.Close())
	return st
}

// TestTLSTerminateRouteCertificate: a route's own certificate, inline PEM
// with its chain or from files, is served and verifies against the CA.
func TestTLSTerminateRouteCertificate(t *testing.T) {
	t.Parallel()
	k := pki()
	be := startBackend(t, "127.0.0.1:0", reporter)
	lp := newListenerPool(t)
	port, plainPort := lp.port(t), lp.port(t)
	p := startTestProxy(t, lp, Options{Routes: []Route{
		terminateRoute("inline", port, be.addr(), RouteTLS{Mode: TLSTerminate, Certificate: k.route.spec(k.ca)}, "route.test"),
		terminateRoute("files", port, be.addr(), RouteTLS{Mode: TLSTerminate, Certificate: k.files.fileSpec(t, t.TempDir())}, "files.test"),
		// No domains: any SNI (or none) gets the route's certificate.
		terminateRoute("any", plainPort, be.addr(), RouteTLS{Mode: TLSTerminate, Certificate: k.route.spec(k.ca)}),
	}})

	st := terminated(t, port, caClient("route.test"))
	require.Equal(t, []string{"route.test"}, st.PeerCertificates[0].DNSNames)
	require.Len(t, st.PeerCertificates, 2, "the CA chain is sent after the leaf")
	require.NotEmpty(t, st.VerifiedChains)

	st = terminated(t, port, caClient("FILES.test."))
	require.Equal(t, []string{"files.test"}, st.PeerCertificates[0].DNSNames)
	require.Len(t, st.PeerCertificates, 1)

	st = terminated(t, plainPort, &tls.Config{InsecureSkipVerify: true}) // no SNI
	require.Equal(t, []string{"route.test"}, st.PeerCertificates[0].DNSNames)
	st = terminated(t, plainPort, &tls.Config{InsecureSkipVerify: true, ServerName: "whatever.test"})
	require.Equal(t, []string{"route.test"}, st.PeerCertificates[0].DNSNames)

	// SNI that no route takes: refused with an alert, nothing forwarded.
	_, err := tlsDial(t, port, caClient("www.example.com"))
	require.ErrorContains(t, err, "unrecognized name")
	requireNoRecords(t, p)
	require.EqualValues(t, 4, be.accepts.Load())
}

// TestTLSTerminateCertStore: routes without a certificate of their own (nil
// or "auto") take Options.Certificates: exact name, then wildcard, then the
// default; a store without an answer fails the handshake.
func TestTLSTerminateCertStore(t *testing.T) {
	t.Parallel()
	k := pki()
	be := startBackend(t, "127.0.0.1:0", reporter)
	lp := newListenerPool(t)
	nilPort, autoPort, sniPort := lp.port(t), lp.port(t), lp.port(t)
	store := newTestStore(t)
	p := startTestProxy(t, lp, Options{Certificates: store, Routes: []Route{
		terminateRoute("nil", nilPort, be.addr(), RouteTLS{Mode: TLSTerminate}),
		terminateRoute("auto", autoPort, be.addr(), RouteTLS{Mode: TLSTerminate, Certificate: &CertificateSpec{Auto: true}}),
		terminateRoute("sni", sniPort, be.addr(), RouteTLS{Mode: TLSTerminate}, "*.example.com"),
	}})

	for _, port := range []int{nilPort, autoPort, sniPort} {
		st := terminated(t, port, caClient("www.example.com"))
		require.Equal(t, []string{"www.example.com"}, st.PeerCertificates[0].DNSNames)
		st = terminated(t, port, caClient("a.example.com"))
		require.Equal(t, []string{"*.example.com"}, st.PeerCertificates[0].DNSNames)
		st = terminated(t, port, caClient("A.Example.COM"))
		require.Equal(t, []string{"*.example.com"}, st.PeerCertificates[0].DNSNames)
		// Two labels: the wildcard does not cover it, the default answers
		// (and does not verify for that name).
		st = terminated(t, port, &tls.Config{InsecureSkipVerify: true, ServerName: "a.b.example.com"})
		require.Equal(t, []string{"default.test"}, st.PeerCertificates[0].DNSNames)
		_, err := tlsDial(t, port, caClient("a.b.example.com"))
		require.ErrorContains(t, err, "certificate is valid for default.test")
	}
	for _, port := range []int{nilPort, autoPort} {
		st := terminated(t, port, &tls.Config{InsecureSkipVerify: true}) // an IP: no SNI
		require.Equal(t, []string{"default.test"}, st.PeerCertificates[0].DNSNames)
		st = terminated(t, port, caClient("default.test"))
		require.Equal(t, []string{"default.test"}, st.PeerCertificates[0].DNSNames)
	}

	// Renewal while running: the next handshake gets the new certificate.
	renewed := k.ca.issue("www.example.com")
	require.NoError(t, store.Add(renewed.tls))
	st := terminated(t, nilPort, caClient("www.example.com"))
	require.Equal(t, renewed.serial, st.PeerCertificates[0].SerialNumber)

	requireNoRecords(t, p)
}

// TestTLSTerminateNoCertificate: with no certificate for the name the
// handshake fails with an alert, the connection closes and nothing
// reaches the backend.
func TestTLSTerminateNoCertificate(t *testing.T) {
	t.Parallel()
	k := pki()
	be := startBackend(t, "127.0.0.1:0", reporter)
	lp := newListenerPool(t)
	port := lp.port(t)
	store := NewCertStore()
	require.NoError(t, store.Add(k.wildcard.tls))
	p := startTestProxy(t, lp, Options{Certificates: store, Routes: []Route{
		terminateRoute("nil", port, be.addr(), RouteTLS{Mode: TLSTerminate}),
	}})
	terminated(t, port, caClient("a.example.com"))
	for _, name := range []string{"example.com", "a.b.example.com", ""} {
		_, err := tlsDial(t, port, &tls.Config{InsecureSkipVerify: true, ServerName: name})
		require.Error(t, err, "SNI %q", name)
		require.ErrorContains(t, err, "internal error", "SNI %q", name) // crypto/tls's alert for a GetCertificate error
	}
	requireNoRecords(t, p)
	require.EqualValues(t, 1, be.accepts.Load())
}

// TestTLSTerminateVersions: TLS 1.2 and 1.3 by default; versions
// ["TLSv1.3"] refuses a client that stops at TLS 1.2.
func TestTLSTerminateVersions(t *testing.T) {
	t.Parallel()
	k := pki()
	be := startBackend(t, "127.0.0.1:0", reporter)
	lp := newListenerPool(t)
	defPort, only13, only12 := lp.port(t), lp.port(t), lp.port(t)
	p := startTestProxy(t, lp, Options{Routes: []Route{
		terminateRoute("default", defPort, be.addr(), RouteTLS{Mode: TLSTerminate, Certificate: k.route.spec(k.ca)}),
		terminateRoute("tls13", only13, be.addr(), RouteTLS{Mode: TLSTerminate, Certificate: k.route.spec(k.ca), Versions: []string{"TLSv1.3"}}),
		terminateRoute("tls12", only12, be.addr(), RouteTLS{Mode: TLSTerminate, Certificate: k.route.spec(k.ca), Versions: []string{"TLSv1.2"}}),
	}})
	cfg := func(maxVer uint16) *tls.Config {
		c := caClient("route.test")
		c.MaxVersion = maxVer
		return c
	}

	require.EqualValues(t, tls.VersionTLS13, terminated(t, defPort, cfg(0)).Version)
	require.EqualValues(t, tls.VersionTLS12, terminated(t, defPort, cfg(tls.VersionTLS12)).Version)
	require.EqualValues(t, tls.VersionTLS13, terminated(t, only13, cfg(0)).Version)
	require.EqualValues(t, tls.VersionTLS12, terminated(t, only12, cfg(0)).Version)

	_, err := tlsDial(t, only13, cfg(tls.VersionTLS12))
	require.ErrorContains(t, err, "protocol version")
	c := caClient("route.test")
	c.MinVersion = tls.VersionTLS13
	_, err = tlsDial(t, only12, c)
	require.ErrorContains(t, err, "protocol version")
	c = caClient("route.test")
	c.MinVersion, c.MaxVersion = tls.VersionTLS11, tls.VersionTLS11
	_, err = tlsDial(t, defPort, c)
	require.ErrorContains(t, err, "protocol version")

	requireNoRecords(t, p)
	require.EqualValues(t, 4, be.accepts.Load())
}

// TestTLSTerminateCiphers: the cipher list restricts TLS 1.2; TLS 1.3 is
// unaffected.
func TestTLSTerminateCiphers(t *testing.T) {
	t.Parallel()
	k := pki()
	be := startBackend(t, "127.0.0.1:0", reporter)
	lp := newListenerPool(t)
	port := lp.port(t)
	p := startTestProxy(t, lp, Options{Routes: []Route{
		terminateRoute("chacha", port, be.addr(), RouteTLS{Mode: TLSTerminate, Certificate: k.route.spec(k.ca),
			Ciphers: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"}),
	}})
	cfg := func(suites ...uint16) *tls.Config {
		c := caClient("route.test")
		c.MaxVersion, c.CipherSuites = tls.VersionTLS12, suites
		return c
	}
	st := terminated(t, port, cfg()) // the client offers Go's defaults, AES-GCM first
	require.Equal(t, tls.CipherSuiteName(tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256), tls.CipherSuiteName(st.CipherSuite))
	st = terminated(t, port, cfg(tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256))
	require.Equal(t, tls.CipherSuiteName(tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256), tls.CipherSuiteName(st.CipherSuite))

	_, err := tlsDial(t, port, cfg(tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384))
	require.ErrorContains(t, err, "handshake failure")

	st = terminated(t, port, caClient("route.test"))
	require.EqualValues(t, tls.VersionTLS13, st.Version)
	requireNoRecords(t, p)
}

// TestTLSSessionResumption: a client with a session cache resumes on its
// second connection, on another route (another tls.Config) and after
// UpdateRoutes recompiled every route, because all of them share the
// proxy's session ticket keys. Another proxy's tickets are not accepted.
func TestTLSSessionResumption(t *testing.T) {
	t.Parallel()
	k := pki()
	be := startBackend(t, "127.0.0.1:0", reporter)
	lp := newListenerPool(t)
	port1, port2, other := lp.port(t), lp.port(t), lp.port(t)
	routes := func() []Route {
		return []Route{
			terminateRoute("one", port1, be.addr(), RouteTLS{Mode: TLSTerminate, Certificate: k.route.spec(k.ca)}, "route.test"),
			terminateRoute("two", port2, be.addr(), RouteTLS{Mode: TLSTerminate, Certificate: k.route.spec(k.ca)}),
		}
	}
	p := startTestProxy(t, lp, Options{Routes: routes()})
	p2 := startTestProxy(t, lp, Options{Routes: []Route{
		terminateRoute("other", other, be.addr(), RouteTLS{Mode: TLSTerminate, Certificate: k.route.spec(k.ca)}),
	}})

	for _, ver := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		t.Run(tls.VersionName(ver), func(t *testing.T) {
			cfg := caClient("route.test")
			cfg.MaxVersion = ver
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
			conn := func(port int) bool {
				st := terminated(t, port, cfg)
				require.Equal(t, ver, st.Version)
				return st.DidResume
			}
			require.False(t, conn(port1), "first connection")
			require.True(t, conn(port1), "same route")
			require.True(t, conn(port2), "other route")
			require.NoError(t, p.UpdateRoutes(routes()))
			require.True(t, conn(port1), "after UpdateRoutes")
			require.True(t, conn(port2), "after UpdateRoutes")
			require.False(t, conn(other), "another proxy's ticket")
		})
	}
	requireNoRecords(t, p)
	requireNoRecords(t, p2)
}

// TestTLSTerminateNonTLSClient: a client speaking plain text to a
// terminating route is closed at once, and no backend is dialed.
func TestTLSTerminateNonTLSClient(t *testing.T) {
	t.Parallel()
	k := pki()
	be := startBackend(t, "127.0.0.1:0", reporter)
	lp := newListenerPool(t)
	plainPort, sniPort := lp.port(t), lp.port(t)
	p := startTestProxy(t, lp, Options{InitialDataTimeout: 5 * time.Second, Routes: []Route{
		terminateRoute("plain", plainPort, be.addr(), RouteTLS{Mode: TLSTerminate, Certificate: k.route.spec(k.ca)}),
		terminateRoute("sni", sniPort, be.addr(), RouteTLS{Mode: TLSTerminate, Certificate: k.route.spec(k.ca)}, "route.test"),
	}})
	for _, port := range []int{plainPort, sniPort} {
		c := dial(t, port)
		_, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: route.test\r\n\r\n")
		require.NoError(t, err)
		el, got := awaitClose(t, c, 3*time.Second)
		require.Less(t, el, time.Second, "port %d", port)
		require.NotContains(t, string(got), "got:", "port %d", port)
	}
	requireNoRecords(t, p)
	require.Zero(t, be.accepts.Load())
}

// TestTLSHandshakeTimeout: a client that stops in the middle of its
// ClientHello, or after it, is closed at InitialDataTimeout, on a port
// that reads the hello for SNI routing and on one that does not.
func TestTLSHandshakeTimeout(t *testing.T) {
	t.Parallel()
	k := pki()
	be := startBackend(t, "127.0.0.1:0", reporter)
	lp := newListenerPool(t)
	plainPort, sniPort := lp.port(t), lp.port(t)
	const timeout = 300 * time.Millisecond
	p := startTestProxy(t, lp, Options{InitialDataTimeout: timeout, Routes: []Route{
		terminateRoute("plain", plainPort, be.addr(), RouteTLS{Mode: TLSTerminate, Certificate: k.route.spec(k.ca)}),
		terminateRoute("sni", sniPort, be.addr(), RouteTLS{Mode: TLSTerminate, Certificate: k.route.spec(k.ca)}, "route.test"),
	}})
	hello := tlstest.CaptureHello(t, &tls.Config{ServerName: "route.test"})
	for _, tc := range []struct {
		name string
		port int
		send []byte
	}{
		{"plain half hello", plainPort, hello[:len(hello)/2]},
		{"sni half hello", sniPort, hello[:len(hello)/2]},
		{"plain hello, no finish", plainPort, hello},
		{"sni hello, no finish", sniPort, hello},
		{"plain nothing", plainPort, nil},
		{"sni nothing", sniPort, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := dial(t, tc.port)
			_, err := c.Write(tc.send)
			require.NoError(t, err)
			el, got := awaitClose(t, c, 5*time.Second)
			require.GreaterOrEqual(t, el, timeout-50*time.Millisecond)
			require.Less(t, el, timeout+time.Second)
			if len(tc.send) == len(hello) {
				require.NotEmpty(t, got, "the server's flight before the wait")
			}
		})
	}
	t.Cleanup(func() {
		requireNoRecords(t, p)
		require.Zero(t, be.accepts.Load())
	})
}

// reencrypted connects through a terminate-and-reencrypt route and returns
// the backend's report line.
func reencrypted(t *testing.T, port int, sni string) string {
	t.Helper()
	c, err := tlsDial(t, port, caClient(sni))
	require.NoError(t, err)
	line, err := readLine(c)
	require.NoError(t, err)
	exchange(t, c, "ping")
	require.NoError(t, c.Close())
	return line
}

// requireReencryptFails checks that the client is closed promptly without
// a byte from the backend, and that the backend saw the handshake fail.
func requireReencryptFails(t *testing.T, tb *tlsBackend, port int, sni, backendErr string) {
	t.Helper()
	c, err := tlsDial(t, port, caClient(sni))
	require.NoError(t, err, "the client's handshake is with the proxy")
	start := time.Now()
	line, err := readLine(c)
	require.Empty(t, line)
	require.True(t, isClosedErr(err), "want EOF or reset, got %v", err)
	require.Less(t, time.Since(start), 2*time.Second)
	select {
	case err := <-tb.errs:
		require.ErrorContains(t, err, backendErr)
	case <-time.After(3 * time.Second):
		t.Fatal("the backend saw no failed handshake")
	}
}

// TestTLSReencrypt: terminate-and-reencrypt verifies the backend against
// the configured CA (or the system roots) for the configured name.
func TestTLSReencrypt(t *testing.T) {
	// Not parallel: it asserts resumption through the package-wide backendSessionCache.
	k := pki()
	tb := startTLSBackend(t, k.backend.tls)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, []byte(k.ca.pem), 0o600))

	cases := []struct {
		name    string
		backend *BackendTLS
		wantSNI string // "" with fail set: must fail
		fail    string // the backend's handshake error
	}{
		{"ca", &BackendTLS{CA: k.ca.pem, ServerName: "backend.internal"}, "backend.internal", ""},
		{"ca file", &BackendTLS{CAFile: caFile, ServerName: "backend.internal"}, "backend.internal", ""},
		{"system roots", nil, "", "bad certificate"},
		{"system roots with name", &BackendTLS{ServerName: "backend.internal"}, "", "bad certificate"},
		{"wrong ca", &BackendTLS{CA: k.otherCA.pem, ServerName: "backend.internal"}, "", "bad certificate"},
		{"wrong name", &BackendTLS{CA: k.ca.pem, ServerName: "elsewhere.internal"}, "", "bad certificate"},
		{"insecure", &BackendTLS{InsecureSkipVerify: true, ServerName: "backend.internal"}, "backend.internal", ""},
		{"insecure wrong ca", &BackendTLS{CA: k.otherCA.pem, InsecureSkipVerify: true}, "", ""},
		{"original", &BackendTLS{CA: k.ca.pem, ServerName: "original"}, "original.example.com", ""},
		// The target is 127.0.0.1: verified against the IP SAN, and an IP
		// is not sent as SNI.
		{"target", &BackendTLS{CA: k.ca.pem, ServerName: "target"}, "", ""},
		{"default name", &BackendTLS{CA: k.ca.pem}, "", ""},
	}
	lp := newListenerPool(t)
	ports := make([]int, len(cases))
	var routes []Route
	for i, tc := range cases {
		ports[i] = lp.port(t)
		routes = append(routes, terminateRoute(tc.name, ports[i], tb.addr(), RouteTLS{Mode: TLSTerminateAndReencrypt, Backend: tc.backend}))
	}
	p := startTestProxy(t, lp, Options{Routes: routes, Certificates: newTestStore(t)})

	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tb.drain()
			if tc.fail != "" {
				requireReencryptFails(t, tb, ports[i], "original.example.com", tc.fail)
				return
			}
			// Routes of the same trust share sessions, so an earlier case
			// may have left one for this name: the first connection may or
			// may not resume, the second must.
			require.Contains(t, []string{"sni:" + tc.wantSNI + " resumed:false\n", "sni:" + tc.wantSNI + " resumed:true\n"},
				reencrypted(t, ports[i], "original.example.com"))
			require.Equal(t, "sni:"+tc.wantSNI+" resumed:true\n", reencrypted(t, ports[i], "original.example.com"))
			require.Empty(t, tb.errs)
		})
	}
	requireNoRecords(t, p)
}

// TestTLSReencryptSessions: sessions to the backend are resumed across
// connections and route reloads, and never by a route that trusts other
// roots — whose refusal must not evict the session for the routes that do
// trust it (crypto/tls deletes a cached session it does not trust).
func TestTLSReencryptSessions(t *testing.T) {
	// Not parallel: it asserts resumption through the package-wide backendSessionCache.
	k := pki()
	tb := startTLSBackend(t, k.backend.tls)
	lp := newListenerPool(t)
	good, wrong, insecure := lp.port(t), lp.port(t), lp.port(t)
	routes := []Route{
		terminateRoute("insecure", insecure, tb.addr(), RouteTLS{Mode: TLSTerminateAndReencrypt, Certificate: k.route.spec(k.ca),
			Backend: &BackendTLS{InsecureSkipVerify: true, ServerName: "backend.internal"}}),
		terminateRoute("good", good, tb.addr(), RouteTLS{Mode: TLSTerminateAndReencrypt, Certificate: k.route.spec(k.ca),
			Backend: &BackendTLS{CA: k.ca.pem, ServerName: "backend.internal"}}),
		terminateRoute("wrong", wrong, tb.addr(), RouteTLS{Mode: TLSTerminateAndReencrypt, Certificate: k.route.spec(k.ca),
			Backend: &BackendTLS{CA: k.otherCA.pem, ServerName: "backend.internal"}}),
	}
	p := startTestProxy(t, lp, Options{Routes: routes})

	require.Equal(t, "sni:backend.internal resumed:false\n", reencrypted(t, insecure, "route.test"))
	require.Equal(t, "sni:backend.internal resumed:false\n", reencrypted(t, good, "route.test"))
	require.Equal(t, "sni:backend.internal resumed:true\n", reencrypted(t, good, "route.test"))
	requireReencryptFails(t, tb, wrong, "route.test", "bad certificate")
	require.Equal(t, "sni:backend.internal resumed:true\n", reencrypted(t, good, "route.test"), "the wrong route evicted the session")
	require.Equal(t, "sni:backend.internal resumed:true\n", reencrypted(t, insecure, "route.test"))

	require.NoError(t, p.UpdateRoutes(routes))
	require.Equal(t, "sni:backend.internal resumed:true\n", reencrypted(t, good, "route.test"), "after UpdateRoutes")
	requireReencryptFails(t, tb, wrong, "route.test", "bad certificate")
	requireNoRecords(t, p)
}

// TestTLSReencryptBackendStalls: a backend that accepts but never answers
// the handshake is given up at ConnectTimeout, not waited on forever.
func TestTLSReencryptBackendStalls(t *testing.T) {
	t.Parallel()
	k := pki()
	stall := startBackend(t, "127.0.0.1:0", func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	lp := newListenerPool(t)
	port := lp.port(t)
	p := startTestProxy(t, lp, Options{ConnectTimeout: 300 * time.Millisecond, Routes: []Route{
		terminateRoute("stall", port, stall.addr(), RouteTLS{Mode: TLSTerminateAndReencrypt, Certificate: k.route.spec(k.ca),
			Backend: &BackendTLS{CA: k.ca.pem, ServerName: "backend.internal"}}),
	}})
	c, err := tlsDial(t, port, caClient("route.test"))
	require.NoError(t, err)
	start := time.Now()
	_, err = readLine(c)
	require.True(t, isClosedErr(err), "want EOF or reset, got %v", err)
	require.Less(t, time.Since(start), 2*time.Second)
	requireNoRecords(t, p)
}

// TestTLSTerminateStop: Stop cuts a connection stuck in the handshake and
// one being proxied.
func TestTLSTerminateStop(t *testing.T) {
	t.Parallel()
	k := pki()
	be := startBackend(t, "127.0.0.1:0", reporter)
	lp := newListenerPool(t)
	port := lp.port(t)
	p := startTestProxy(t, lp, Options{InitialDataTimeout: time.Minute, Routes: []Route{
		terminateRoute("r", port, be.addr(), RouteTLS{Mode: TLSTerminate, Certificate: k.route.spec(k.ca)}),
	}})
	stuck := dial(t, port)
	_, err := stuck.Write(tlstest.CaptureHello(t, caClient("route.test")))
	require.NoError(t, err)
	live, err := tlsDial(t, port, caClient("route.test"))
	require.NoError(t, err)
	exchange(t, live, "before stop")

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	require.ErrorIs(t, p.Stop(ctx), context.DeadlineExceeded)
	require.Less(t, time.Since(start), 2*time.Second)
	awaitClose(t, stuck, 2*time.Second)
	_, err = readLine(live)
	require.True(t, isClosedErr(err), "want EOF or reset, got %v", err)
}
