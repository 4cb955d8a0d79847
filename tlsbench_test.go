package smartproxy

import (
	"crypto/tls"
	"io"
	"net"
	"strconv"
	"testing"
)

// BenchmarkTLSHandshake: one new TLS 1.3 connection (ECDSA P-256) per
// operation, handshake plus one echoed byte, over loopback: through the
// proxy terminating (a full handshake, and one resumed from a session
// ticket) and, for reference, to a Go TLS server directly.
func BenchmarkTLSHandshake(b *testing.B) {
	k := pki()
	be := startBackend(b, "127.0.0.1:0", echo)
	lp := newListenerPool(b)
	port := lp.port(b)
	startTestProxy(b, lp, Options{Routes: []Route{
		terminateRoute("bench", port, be.addr(), RouteTLS{Mode: TLSTerminate, Certificate: k.route.spec(k.ca)}, "route.test"),
	}})
	directCfg := &tls.Config{Certificates: []tls.Certificate{*k.route.tls}, MinVersion: tls.VersionTLS13}
	direct := startBackend(b, "127.0.0.1:0", func(c net.Conn) {
		srv := tls.Server(c, directCfg)
		_, _ = io.Copy(srv, srv)
	})
	proxyAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))

	run := func(b *testing.B, addr string, cache tls.ClientSessionCache, wantResumed bool) {
		cfg := &tls.Config{RootCAs: k.ca.pool, ServerName: "route.test", MinVersion: tls.VersionTLS13, ClientSessionCache: cache}
		one := func() {
			c, err := tls.Dial("tcp", addr, cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = c.Close() }()
			var buf [1]byte
			if _, err := c.Write([]byte{'x'}); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, buf[:]); err != nil {
				b.Fatal(err)
			}
			if c.ConnectionState().DidResume != wantResumed {
				b.Fatalf("DidResume = %v, want %v", !wantResumed, wantResumed)
			}
		}
		if cache != nil {
			c, err := tls.Dial("tcp", addr, cfg) // prime the cache
			if err != nil {
				b.Fatal(err)
			}
			_, _ = c.Write([]byte{'x'})
			_, _ = io.ReadFull(c, make([]byte, 1)) // reading takes in the ticket
			_ = c.Close()
		}
		b.ReportAllocs()
		for b.Loop() {
			one()
		}
	}
	b.Run("full", func(b *testing.B) { run(b, proxyAddr, nil, false) })
	b.Run("resumed", func(b *testing.B) { run(b, proxyAddr, tls.NewLRUClientSessionCache(8), true) })
	b.Run("direct", func(b *testing.B) { run(b, direct.addr(), nil, false) })
	b.Run("direct-resumed", func(b *testing.B) { run(b, direct.addr(), tls.NewLRUClientSessionCache(8), true) })
}
