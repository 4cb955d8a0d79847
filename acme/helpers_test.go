package acme_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/acme"
	"github.com/gosmartproxy/smartproxy/internal/pebbletest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		os.Exit(runChild(dir))
	}
	goleak.VerifyTestMain(m)
}

// listen opens a loopback listener closed at cleanup.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func portOf(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

// serveHTTP serves h on ln until cleanup.
func serveHTTP(t *testing.T, ln net.Listener, h http.Handler) {
	t.Helper()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
}

// serveTLS terminates TLS on ln with getCert and offers acme-tls/1 (as
// the proxy does when TLSALPNEnabled); application connections echo.
func serveTLS(t *testing.T, ln net.Listener, getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) {
	t.Helper()
	tl := tls.NewListener(ln, &tls.Config{GetCertificate: getCert, NextProtos: []string{"http/1.1", "acme-tls/1"}})
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { mu.Lock(); delete(conns, c); mu.Unlock(); c.Close() }()
				_ = c.SetDeadline(time.Now().Add(60 * time.Second))
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		tl.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// newManager makes a Manager on Pebble p (its client, its directory) and
// stops it at cleanup.
func newManager(t *testing.T, p *pebbletest.Server, cfg acme.Config) *acme.Manager {
	t.Helper()
	if cfg.DirectoryURL == "" {
		cfg.DirectoryURL = p.DirectoryURL
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = p.Client
	}
	if cfg.Storage == nil {
		cfg.Storage = acme.NewFileStorage(t.TempDir())
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	m, err := acme.NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := m.Stop(ctx); err != nil {
			t.Error(err)
		}
	})
	return m
}

// testWriter sends log lines to t.Log (only shown on failure or -v).
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Logf("%s", p)
	return len(p), nil
}

// events collects OnEvent calls.
type events struct {
	mu  sync.Mutex
	evs []acme.Event
	at  []time.Time
	ch  chan acme.Event
}

func newEvents() *events { return &events{ch: make(chan acme.Event, 1000)} }

func (e *events) on(ev acme.Event) {
	e.mu.Lock()
	e.evs = append(e.evs, ev)
	e.at = append(e.at, time.Now())
	e.mu.Unlock()
	select {
	case e.ch <- ev:
	default:
	}
}

// wait returns the next event of kind for name, failing t after d.
func (e *events) wait(t *testing.T, kind acme.EventKind, name string, d time.Duration) acme.Event {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case ev := <-e.ch:
			if ev.Kind == kind && ev.Name == name {
				return ev
			}
		case <-timer.C:
			t.Fatalf("no %s event for %s within %v", kind, name, d)
		}
	}
}

// status returns m's status of name.
func status(t *testing.T, m *acme.Manager, name string) acme.CertStatus {
	t.Helper()
	for _, s := range m.Status() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("%s not in status %v", name, m.Status())
	return acme.CertStatus{}
}

// dialTLS handshakes with addr as name, verifying against roots.
func dialTLS(t *testing.T, addr, name string, roots *x509.CertPool) (*tls.Conn, error) {
	t.Helper()
	d := &net.Dialer{Timeout: 30 * time.Second}
	return tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: name, RootCAs: roots, NextProtos: []string{"http/1.1"}})
}

// selfSigned makes a certificate for names valid for d.
func selfSigned(t testing.TB, d time.Duration, names ...string) *tls.Certificate {
	t.Helper()
	return selfSignedWindow(t, time.Now().Add(-time.Minute), time.Now().Add(d), names...)
}

// selfSignedWindow makes a certificate for names valid from notBefore
// to notAfter.
func selfSignedWindow(t testing.TB, notBefore, notAfter time.Time, names ...string) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func serialOf(t *testing.T, c *tls.Conn) string {
	t.Helper()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
}

var errTest = errors.New("test provision failure")

// manageStart has m manage "localhost", starts it and returns the
// issued event.
func manageStart(t *testing.T, m *acme.Manager, evs *events) acme.Event {
	t.Helper()
	ctx := context.Background()
	if err := m.Manage(ctx, []acme.Domain{{Name: "localhost"}}); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return evs.wait(t, acme.EventIssued, "localhost", 60*time.Second)
}
