package smartproxy

import (
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
	"log/slog"
	"math/big"
	"net"
	"net/netip"
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
// loopback backends that count what they accept, a self-signed TLS server,
// ClientHello capture and re-recording, and small assertions about how a
// client connection ends.

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
func newTestProxy(t testing.TB, lp *listenerPool, opts Options) *Proxy {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger()
	}
	if opts.Listen == nil && lp != nil {
		opts.Listen = lp.listen
	}
	if opts.MaxConnectionsPerIP == 0 {
		opts.MaxConnectionsPerIP = -1
	}
	if opts.ConnectionRateLimitPerMinute == 0 {
		opts.ConnectionRateLimitPerMinute = -1
	}
	if opts.ConnectTimeout == 0 {
		opts.ConnectTimeout = 2 * time.Second
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
