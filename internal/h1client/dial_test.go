package h1client

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// tlsBackend is an httptest TLS server (its certificate covers
// example.com and 127.0.0.1) that records, per connection, the server
// names and protocols its requests came with.
type tlsBackend struct {
	*httptest.Server
	conns  atomic.Int64
	mu     sync.Mutex
	byConn map[string]map[string]bool // remote address -> "sni proto"
}

func startTLSBackend(t *testing.T, protos []string, idle time.Duration) *tlsBackend {
	t.Helper()
	b := &tlsBackend{byConn: make(map[string]map[string]bool)}
	b.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		if b.byConn[r.RemoteAddr] == nil {
			b.byConn[r.RemoteAddr] = make(map[string]bool)
		}
		b.byConn[r.RemoteAddr][r.TLS.ServerName+" "+r.Proto] = true
		b.mu.Unlock()
		_, _ = io.WriteString(w, r.TLS.ServerName)
	}))
	b.Config.IdleTimeout = idle
	b.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			b.conns.Add(1)
		}
	}
	b.TLS = &tls.Config{NextProtos: protos} // nil: http/1.1
	b.StartTLS()
	t.Cleanup(b.Close)
	return b
}

// roots trusts the backend's certificate.
func (b *tlsBackend) roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(b.Certificate())
	return p
}

// sendTLS sends a GET (replayable unless body is set: then a POST with
// that Content-Length body) to b over cfg for name and returns the body.
func sendTLS(t *testing.T, c *Client, b *tlsBackend, cfg *tls.Config, name, body string) (string, error) {
	t.Helper()
	head := "GET / HTTP/1.1\r\nHost: b\r\n\r\n"
	if body != "" {
		head = "POST / HTTP/1.1\r\nHost: b\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + body
	}
	ex, err := c.Send(t.Context(), b.Listener.Addr().String(),
		Outgoing{Head: []byte(head), Replayable: body == "", TLS: cfg, ServerName: name})
	if err != nil {
		return "", err
	}
	defer ex.Close()
	got, err := io.ReadAll(ex)
	return string(got), err
}

// TestSendTLSPoolKey: TLS connections are verified for their server
// name and reused only for requests with the same address, *tls.Config
// and server name: never across names (an attacker choosing the SNI
// must not get a connection verified for another), never across configs
// (other roots or verification), and never for cleartext.
func TestSendTLSPoolKey(t *testing.T) {
	b := startTLSBackend(t, nil, 0)
	c := newTestClient(t, Config{HeadTimeout: 5 * time.Second, HandshakeTimeout: 5 * time.Second})
	insecure := &tls.Config{InsecureSkipVerify: true}
	for i := range 10 {
		name := []string{"a.test", "b.test"}[i%2]
		got, err := sendTLS(t, c, b, insecure, name, "")
		require.NoError(t, err)
		require.Equal(t, name, got)
	}
	require.Equal(t, int64(2), b.conns.Load(), "one connection per name, reused")
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			name := []string{"c.test", "d.test", "a.test", "b.test"}[i%4]
			got, err := sendTLS(t, c, b, insecure, name, "")
			require.NoError(t, err)
			require.Equal(t, name, got)
		})
	}
	wg.Wait()
	// Another config with the same settings is another pool.
	before := b.conns.Load()
	_, err := sendTLS(t, c, b, &tls.Config{InsecureSkipVerify: true}, "a.test", "")
	require.NoError(t, err)
	require.Equal(t, before+1, b.conns.Load(), "another *tls.Config: a new connection")
	b.mu.Lock()
	for conn, names := range b.byConn {
		require.Len(t, names, 1, "backend connection %s served %v", conn, names)
		for n := range names {
			require.Contains(t, n, " HTTP/1.1")
		}
	}
	b.mu.Unlock()

	// Verification: the name is checked against the trusted roots.
	verified := &tls.Config{RootCAs: b.roots()}
	got, err := sendTLS(t, c, b, verified, "example.com", "")
	require.NoError(t, err)
	require.Equal(t, "example.com", got)
	_, err = sendTLS(t, c, b, verified, "other.test", "")
	var ve *tls.CertificateVerificationError
	require.ErrorAs(t, err, &ve, "a name the certificate does not cover")
	_, err = sendTLS(t, c, b, &tls.Config{}, "example.com", "")
	require.ErrorAs(t, err, &ve, "system roots do not trust the test certificate")
	// "" is the address's host: 127.0.0.1, which the certificate covers.
	got, err = sendTLS(t, c, b, verified, "", "")
	require.NoError(t, err)
	require.Equal(t, "", got, "no SNI is sent for an IP address")
}

// TestSendTLSALPN: only http/1.1 is offered (whatever the config's
// NextProtos): a backend that also speaks h2 answers in HTTP/1.1, and so
// does one configured for h2 only (crypto/tls lets an http/1.1-only
// client connect without ALPN there), never in h2.
func TestSendTLSALPN(t *testing.T) {
	c := newTestClient(t, Config{HeadTimeout: 5 * time.Second})
	insecure := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}
	for _, protos := range [][]string{{"h2", "http/1.1"}, {"h2"}} {
		b := startTLSBackend(t, protos, 0)
		got, err := sendTLS(t, c, b, insecure, "a.test", "")
		require.NoError(t, err, "%v", protos)
		require.Equal(t, "a.test", got)
		b.mu.Lock()
		for _, names := range b.byConn {
			require.Equal(t, map[string]bool{"a.test HTTP/1.1": true}, names)
		}
		b.mu.Unlock()
	}
}

// TestSendTLSProbe: the probe of a pooled TLS connection peeks at the
// socket under it, so one the backend closed while idle (close_notify,
// FIN) is dropped before use: a request that cannot be repeated goes on
// a fresh connection instead of failing on the stale one.
func TestSendTLSProbe(t *testing.T) {
	b := startTLSBackend(t, nil, 50*time.Millisecond)
	c := newTestClient(t, Config{HeadTimeout: 5 * time.Second})
	insecure := &tls.Config{InsecureSkipVerify: true}
	got, err := sendTLS(t, c, b, insecure, "a.test", "")
	require.NoError(t, err)
	require.Equal(t, "a.test", got)
	require.Equal(t, 1, c.IdleConns())
	got, err = sendTLS(t, c, b, insecure, "a.test", "")
	require.NoError(t, err)
	require.Equal(t, "a.test", got)
	require.Equal(t, int64(1), b.conns.Load(), "a live TLS connection is reused")
	time.Sleep(300 * time.Millisecond) // the backend closes the idle connection
	got, err = sendTLS(t, c, b, insecure, "a.test", "not replayable")
	require.NoError(t, err)
	require.Equal(t, "a.test", got)
	require.Equal(t, int64(2), b.conns.Load())
}

// TestPoolKeysBounded: keys of many server names (a client choosing
// SNIs) leave at most about 2*MaxIdle entries in the pool's map, however
// many came and went.
func TestPoolKeysBounded(t *testing.T) {
	c := newTestClient(t, Config{})
	for i := range 3 * MaxIdle {
		a, b := net.Pipe()
		t.Cleanup(func() { _ = b.Close() })
		c.put(newConn(a, poolKey{addr: "x:1", serverName: itoa(i)}))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	require.Equal(t, MaxIdle, c.n)
	require.LessOrEqual(t, len(c.idle), 2*MaxIdle+1)
}
