package smartproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/tlstest"
	"github.com/stretchr/testify/require"
)

// Shared helpers of the proxy tests: pre-opened listeners for the proxy,
// the test backends (TCP and HTTP, counting what they accept and serve; see
// "Test backends" below), a self-signed TLS certificate, hand-made
// ClientHellos, HTTP clients that dial the proxy whatever the URL's host,
// route constructors, and small assertions about how a client connection
// ends.

// testLogger discards everything but still formats every record at debug
// level, so the logging calls on the connection path run under -race too.
func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// listenerPool hands the proxy listeners the test opened itself on
// 127.0.0.1:0 (through Options.Listen), so a route's port is known before
// the proxy starts and no other process can grab it in between.
type listenerPool struct {
	mu  sync.Mutex
	lns map[int]net.Listener
}

func newListenerPool(t testing.TB) *listenerPool {
	lp := &listenerPool{lns: make(map[int]net.Listener)}
	t.Cleanup(func() {
		lp.mu.Lock()
		defer lp.mu.Unlock()
		for _, ln := range lp.lns {
			_ = ln.Close()
		}
	})
	return lp
}

// port reserves a fresh loopback port for the proxy and returns it.
func (lp *listenerPool) port(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	lp.mu.Lock()
	lp.lns[port] = ln
	lp.mu.Unlock()
	return port
}

// listen is the Options.Listen of the proxy: it gives out a reserved
// listener once and refuses ports that were not reserved, which lets tests
// make a port impossible to open.
func (lp *listenerPool) listen(_ context.Context, _, address string) (net.Listener, error) {
	_, ps, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(ps)
	if err != nil {
		return nil, err
	}
	lp.mu.Lock()
	defer lp.mu.Unlock()
	ln, ok := lp.lns[port]
	if !ok {
		return nil, fmt.Errorf("port %d: %w", port, syscall.EADDRINUSE)
	}
	delete(lp.lns, port)
	return ln, nil
}

// newTestProxy builds (without starting) a proxy whose ports come from lp.
// Per-IP limits default to unlimited because every test client comes from
// 127.0.0.1 and the TS defaults (100 concurrent, 300/min) would interfere
// with tests about something else; tests of those limits set them.
//
// HTTP/1.1 runs on the fast path, the default; SMARTPROXY_TEST_NETHTTP=1
// runs the suite on net/http's server instead (.ci/run does, for the
// HTTP tests), except the tests about the fast path itself
// (startFastTestProxy).
func newTestProxy(t testing.TB, lp *listenerPool, opts Options) *Proxy {
	t.Helper()
	if os.Getenv("SMARTPROXY_TEST_NETHTTP") == "1" {
		opts.DisableHTTPFastPath = true
	}
	return newTestProxyAsIs(t, lp, opts)
}

// newTestProxyAsIs is newTestProxy with opts.DisableHTTPFastPath as the
// test set it, whatever SMARTPROXY_TEST_NETHTTP says.
func newTestProxyAsIs(t testing.TB, lp *listenerPool, opts Options) *Proxy {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger()
	}
	if opts.Listen == nil && lp != nil {
		opts.Listen = lp.listen
	}
	if opts.MaxConnectionsPerIP == 0 && opts.Connections == nil {
		opts.MaxConnectionsPerIP = -1
	}
	if opts.ConnectionRateLimitPerMinute == 0 && opts.Connections == nil {
		opts.ConnectionRateLimitPerMinute = -1
	}
	if opts.ConnectTimeout == 0 {
		opts.ConnectTimeout = 2 * time.Second
	}
	if os.Getenv("SMARTPROXY_TEST_ENGINE") == "goroutines" && opts.Engine == EngineEventLoop {
		// the whole suite on the goroutine path; tests that need the loops
		// (startEngineProxy) set EngineEventLoop after this
		opts.Engine = EngineGoroutines
	}
	if opts.InitialDataTimeout == 0 {
		opts.InitialDataTimeout = 2 * time.Second
	}
	if opts.HalfCloseTimeout == 0 {
		opts.HalfCloseTimeout = 2 * time.Second
	}
	p, err := New(opts)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Stop(ctx) // tests that care about Stop's result call it themselves
		// Stop returns only after every connection's goroutine is done, and
		// each of them releases its record: nothing may be left.
		if a := p.Metrics().Active; a != 0 {
			t.Errorf("after Stop: %d connection records left", a)
		}
	})
	return p
}

// startTestProxy is newTestProxy followed by Start.
func startTestProxy(t testing.TB, lp *listenerPool, opts Options) *Proxy {
	t.Helper()
	p := newTestProxy(t, lp, opts)
	require.NoError(t, p.Start(context.Background()))
	return p
}

// startFastTestProxy starts a proxy on the HTTP/1.1 fast path even under
// SMARTPROXY_TEST_NETHTTP=1: for the tests about the fast path, and the
// fast side of those that compare both stacks.
func startFastTestProxy(t testing.TB, lp *listenerPool, opts Options) *Proxy {
	t.Helper()
	opts.DisableHTTPFastPath = false
	p := newTestProxyAsIs(t, lp, opts)
	require.NoError(t, p.Start(context.Background()))
	return p
}

// startStackTestProxy starts a proxy on the fast path (fast) or on
// net/http's server, whatever SMARTPROXY_TEST_NETHTTP says: for the tests
// that compare the two stacks.
func startStackTestProxy(t testing.TB, lp *listenerPool, opts Options, fast bool) *Proxy {
	t.Helper()
	if fast {
		return startFastTestProxy(t, lp, opts)
	}
	opts.DisableHTTPFastPath = true
	return startTestProxy(t, lp, opts)
}

// requireNoRecords waits until the proxy has no connection record left.
func requireNoRecords(t testing.TB, p *Proxy) {
	t.Helper()
	require.Eventually(t, func() bool { return p.Metrics().Active == 0 }, 5*time.Second, 5*time.Millisecond,
		"connection records left: %+v", p.Metrics().ByRoute)
}

// backend is a loopback TCP server run by a test. It counts accepted
// connections and closes every one of them (and joins their goroutines)
// when the test ends.
type backend struct {
	ln      net.Listener
	port    int
	accepts atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// startBackend serves addr ("127.0.0.1:0" for any port) with handle, one
// goroutine per connection; the connection is closed when handle returns.
func startBackend(t testing.TB, addr string, handle func(net.Conn)) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	return serveBackend(t, ln, handle)
}

func serveBackend(t testing.TB, ln net.Listener, handle func(net.Conn)) *backend {
	b := &backend{ln: ln, port: ln.Addr().(*net.TCPAddr).Port, conns: make(map[net.Conn]struct{})}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.accepts.Add(1)
			b.mu.Lock()
			b.conns[c] = struct{}{}
			b.mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer func() {
					b.mu.Lock()
					delete(b.conns, c)
					b.mu.Unlock()
					_ = c.Close()
				}()
				handle(c)
			}()
		}
	}()
	t.Cleanup(b.close)
	return b
}

func (b *backend) close() {
	_ = b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		_ = c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

func (b *backend) addr() string { return b.ln.Addr().String() }

// echo writes back what it reads and closes at EOF.
func echo(c net.Conn) { _, _ = io.Copy(c, c) }

// closedPort returns a loopback port nothing listens on.
func closedPort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}

// dialFrom connects from the local address ip (any 127/8 address works
// on Linux loopback) to 127.0.0.1:port.
func dialFrom(t testing.TB, ip string, port int) *net.TCPConn {
	t.Helper()
	d := net.Dialer{Timeout: 2 * time.Second}
	if ip != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(ip)}
	}
	c, err := d.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c.(*net.TCPConn)
}

func dial(t testing.TB, port int) *net.TCPConn { return dialFrom(t, "", port) }

// isClosedErr reports whether err is how a peer's close shows: EOF or a
// reset (the proxy closing with unread input makes the kernel send RST).
func isClosedErr(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// awaitClose reads c until it ends and returns how long that took; it
// fails the test if c is still open after within, or if it ends in any
// other way than EOF or reset. It returns the bytes read.
func awaitClose(t testing.TB, c net.Conn, within time.Duration) (time.Duration, []byte) {
	t.Helper()
	start := time.Now()
	require.NoError(t, c.SetReadDeadline(start.Add(within)))
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			el := time.Since(start)
			require.Truef(t, isClosedErr(err), "connection did not close within %v: %v", within, err)
			return el, got
		}
	}
}

// roundTrip writes msg and reads the same number of bytes back.
func roundTrip(t testing.TB, c net.Conn, msg string) string {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(3*time.Second)))
	_, err := io.WriteString(c, msg)
	require.NoError(t, err)
	buf := make([]byte, len(msg))
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	require.NoError(t, c.SetDeadline(time.Time{}))
	return string(buf)
}

// addrConn overrides RemoteAddr so in-memory conns can carry a client IP.
type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

func tcpAddr(s string) *net.TCPAddr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }

// testCert is a self-signed certificate for the TLS backends; clients
// skip verification (the proxy never sees inside TLS anyway).
var testCert = sync.OnceValue(func() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "smartproxy test"},
		DNSNames:     []string{"*.example.com", "*.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
})

// tlsGreeter completes a TLS handshake and answers one line: the server
// name the backend saw, then echoes the client's line.
func tlsGreeter(name string) func(net.Conn) {
	return func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{testCert()}})
		if err := tc.Handshake(); err != nil {
			return
		}
		_, _ = fmt.Fprintf(tc, "%s:%s\n", name, tc.ConnectionState().ServerName)
		_, _ = io.Copy(tc, tc)
	}
}

// buildHello returns a hand-made ClientHello handshake message for sni,
// offering TLS 1.3 and 1.2 and padded with an unknown extension of pad bytes
// (which parsers must skip).
func buildHello(sni string, pad int) []byte {
	return tlstest.BuildHello(tlstest.HelloSpec{SNI: sni, Versions: []uint16{tls.VersionTLS13, tls.VersionTLS12}, Padding: pad})
}

// writeSlowly writes b in chunks of size bytes with a pause after each, so
// the proxy sees many small TCP segments.
func writeSlowly(c net.Conn, b []byte, size int, pause time.Duration) error {
	for len(b) > 0 {
		n := min(size, len(b))
		if _, err := c.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
		time.Sleep(pause)
	}
	return nil
}

// readN reads exactly n bytes from c within d.
func readN(c net.Conn, n int, d time.Duration) ([]byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, n)
	m, err := io.ReadFull(c, buf)
	return buf[:m], err
}

// pattern returns n deterministic pseudo-random bytes, so a transfer that
// loses, duplicates or reorders data cannot compare equal by accident.
func pattern(n int, seed uint32) []byte {
	b := make([]byte, n)
	x := seed | 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// Test backends. TCP tests run a backend (startBackend) with one of the
// connection handlers echo, reporter, tlsGreeter or a test's own; HTTP
// tests run an echoServer (startEchoServer, plain or TLS) with echoBackend,
// okBackend or a test's own handler. The other kinds exist for what only
// they do: recordingBackend keeps the raw bytes a client could smuggle past
// an HTTP parser, tlsBackend reports the re-encrypted handshake, sniBackend
// records which SNIs shared a pooled TLS connection.

// reporter is the plain TCP backend of the termination tests: it answers
// every line with "got:" and the line, which shows the client that the
// backend received plaintext.
func reporter(c net.Conn) {
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := io.WriteString(c, "got:"+line); err != nil {
			return
		}
	}
}

// recordingBackend is an HTTP/1.1 backend that keeps every byte it
// receives, so a test can prove what never reached it, raw or parsed. It
// answers each request it can parse with "served <path>".
type recordingBackend struct {
	*backend
	mu  sync.Mutex
	got bytes.Buffer
}

func startRecordingBackend(t *testing.T) *recordingBackend {
	rb := &recordingBackend{}
	rb.backend = startBackend(t, "127.0.0.1:0", func(c net.Conn) {
		br := bufio.NewReader(io.TeeReader(c, rb))
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				_, _ = io.Copy(io.Discard, br) // keep recording raw bytes
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			body := "served " + req.URL.Path
			if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body); err != nil {
				return
			}
		}
	})
	return rb
}

func (rb *recordingBackend) Write(b []byte) (int, error) {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	return rb.got.Write(b)
}

func (rb *recordingBackend) received() string {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	return rb.got.String()
}

// tlsBackend is a TLS server for re-encryption: it reports the server name
// it saw and whether the session was resumed, then answers lines like
// reporter. Failed handshakes are sent to errs.
type tlsBackend struct {
	*backend
	errs chan error
}

func startTLSBackend(t *testing.T, cert *tls.Certificate) *tlsBackend {
	t.Helper()
	tb := &tlsBackend{errs: make(chan error, 32)}
	cfg := &tls.Config{Certificates: []tls.Certificate{*cert}}
	tb.backend = startBackend(t, "127.0.0.1:0", func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		tc := tls.Server(c, cfg)
		if err := tc.Handshake(); err != nil {
			tb.errs <- err
			return
		}
		st := tc.ConnectionState()
		if _, err := fmt.Fprintf(tc, "sni:%s resumed:%t\n", st.ServerName, st.DidResume); err != nil {
			return
		}
		reporter(tc)
	})
	return tb
}

// drain empties errs.
func (tb *tlsBackend) drain() {
	for {
		select {
		case <-tb.errs:
		default:
			return
		}
	}
}

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

// echoServer is a loopback HTTP server closed when the test ends. It
// counts the connections it accepted and the requests it served.
type echoServer struct {
	*httptest.Server
	conns    atomic.Int64 // connections accepted
	requests atomic.Int64 // requests served
}

func (b *echoServer) addr() string { return b.Listener.Addr().String() }

// startEchoServer serves h on loopback.
func startEchoServer(t testing.TB, h http.Handler) *echoServer {
	t.Helper()
	b := newEchoServer(h)
	b.Start()
	t.Cleanup(b.Close)
	return b
}

// startH2CEchoServer serves h on loopback in HTTP/1.1 and in cleartext
// HTTP/2 with prior knowledge (an h2c backend).
func startH2CEchoServer(t testing.TB, h http.Handler) *echoServer {
	t.Helper()
	b := newEchoServer(h)
	b.Config.Protocols = new(http.Protocols)
	b.Config.Protocols.SetHTTP1(true)
	b.Config.Protocols.SetUnencryptedHTTP2(true)
	b.Start()
	t.Cleanup(b.Close)
	return b
}

// startTLSEchoServer serves h on loopback over TLS with cert (nil:
// httptest's own), offering h2 and http/1.1.
func startTLSEchoServer(t testing.TB, h http.Handler, cert *tls.Certificate) *echoServer {
	t.Helper()
	b := newEchoServer(h)
	if cert != nil {
		b.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}}
	}
	b.EnableHTTP2 = true
	b.StartTLS()
	t.Cleanup(b.Close)
	return b
}

func newEchoServer(h http.Handler) *echoServer {
	b := &echoServer{}
	b.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.requests.Add(1)
		h.ServeHTTP(w, r)
	}))
	b.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			b.conns.Add(1)
		}
	}
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

// okBackend answers every request with "ok:" and its path, and sends the
// path to paths when there is room (the security tests' backend).
func okBackend(t testing.TB, paths chan<- string) *echoServer {
	return startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case paths <- r.URL.Path:
		default:
		}
		_, _ = io.WriteString(w, "ok:"+r.URL.Path)
	}))
}

// sniBackend is a TLS backend (certificate *.example.com of the test CA)
// that answers with the SNI and Host it was reached with, and records
// which SNIs each of its connections carried.
type sniBackend struct {
	*echoServer

	mu     sync.Mutex
	byConn map[string]map[string]bool // remote address -> SNIs
}

func startSNIBackend(t *testing.T) *sniBackend {
	t.Helper()
	b := &sniBackend{byConn: make(map[string]map[string]bool)}
	b.echoServer = startTLSEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		if b.byConn[r.RemoteAddr] == nil {
			b.byConn[r.RemoteAddr] = make(map[string]bool)
		}
		b.byConn[r.RemoteAddr][r.TLS.ServerName] = true
		b.mu.Unlock()
		_, _ = fmt.Fprintf(w, "sni=%s host=%s proto=%s", r.TLS.ServerName, r.Host, r.Proto)
	}), pki().wildcard.tls)
	return b
}

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

// HTTP clients that dial the proxy whatever the URL's host, and route
// constructors on test ports.

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

// syncBuffer is a log sink safe for the proxy's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
