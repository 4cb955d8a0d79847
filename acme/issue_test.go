package acme_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/acme"
	"github.com/gosmartproxy/smartproxy/internal/pebbletest"
)

// TestIssueHTTP01 orders a certificate with a real HTTP-01 validation
// (Pebble connects to the handler on its HTTP port, which also serves a
// "user route"), verifies the chain against Pebble's root, and restarts
// on the same storage: the stored certificate is loaded, not re-ordered.
func TestIssueHTTP01(t *testing.T) {
	t.Parallel()
	httpLn, tlsLn := listen(t), listen(t)
	p := pebbletest.Start(t, pebbletest.Options{HTTPPort: portOf(httpLn)})
	dir := t.TempDir()
	evs := newEvents()
	m := newManager(t, p, acme.Config{
		Settings: acme.Settings{Email: "ops@example.com", HTTPPort: portOf(httpLn), DisableTLSALPN: true},
		Storage:  acme.NewFileStorage(dir),
		OnEvent:  evs.on,
	})
	user := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "user route") })
	// The port's handler is the current "process's" Manager's.
	var cur atomic.Pointer[acme.Manager]
	cur.Store(m)
	serveHTTP(t, httpLn, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cur.Load().HTTPHandler(user).ServeHTTP(w, r)
	}))
	serveTLS(t, tlsLn, m.GetCertificate)
	ctx := context.Background()
	if err := m.Manage(ctx, []acme.Domain{{Name: "localhost"}}); err != nil {
		t.Fatal(err)
	}
	if st := status(t, m, "localhost"); st.State != acme.StatePending {
		t.Fatalf("before Start: %+v", st)
	}
	if got := m.HTTPPorts(); len(got) != 1 || got[0] != portOf(httpLn) {
		t.Fatalf("HTTPPorts = %v", got)
	}
	if m.TLSALPNEnabled() {
		t.Fatal("TLSALPNEnabled with DisableTLSALPN")
	}
	started := time.Now()
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ev := evs.wait(t, acme.EventIssued, "localhost", 60*time.Second)
	t.Logf("HTTP-01 issuance (account, order, validation, finalize) took %v", time.Since(started))
	st := status(t, m, "localhost")
	if st.State != acme.StateValid || st.Source != acme.SourceACME || st.Serial != ev.Status.Serial || st.LastError != "" {
		t.Fatalf("status after issue: %+v", st)
	}
	if want := time.Now().Add(89 * 24 * time.Hour); st.NotAfter.Before(want) {
		t.Fatalf("NotAfter %v: not a 90-day certificate", st.NotAfter)
	}

	conn, err := dialTLS(t, tlsLn.Addr().String(), "localhost", p.Roots(t))
	if err != nil {
		t.Fatalf("handshake verified against Pebble's root: %v", err)
	}
	leaf := conn.ConnectionState().PeerCertificates[0]
	if serialOf(t, conn) != st.Serial {
		t.Fatalf("served serial %s, status %s", serialOf(t, conn), st.Serial)
	}
	if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Fatalf("leaf key %T, want ECDSA P-256", leaf.PublicKey)
	}
	conn.Close()

	// The user route on the challenge port still answers.
	resp, err := http.Get("http://" + httpLn.Addr().String() + "/.well-known/acme-challenge/unknown-token-xxxxxxxxxxxx")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "user route" {
		t.Fatalf("unknown token went to %q, want the user route", body)
	}
	if n := p.Orders(); n != 1 {
		t.Fatalf("orders = %d, want 1", n)
	}

	// Restart on the same storage: loaded before Start, same serial, no
	// new order after Start either.
	m2 := newManager(t, p, acme.Config{
		Settings: acme.Settings{Email: "ops@example.com", HTTPPort: portOf(httpLn)},
		Storage:  acme.NewFileStorage(dir),
	})
	cur.Store(m2)
	if err := m2.Manage(ctx, []acme.Domain{{Name: "LocalHost."}}); err != nil {
		t.Fatal(err)
	}
	if st2 := status(t, m2, "localhost"); st2.State != acme.StateValid || st2.Serial != st.Serial {
		t.Fatalf("after restart: %+v, want valid serial %s", st2, st.Serial)
	}
	if err := m2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if n := p.Orders(); n != 1 {
		t.Fatalf("orders after restart = %d, want 1", n)
	}
	if st2 := status(t, m2, "localhost"); st2.Serial != st.Serial {
		t.Fatalf("serial changed after restart: %s → %s", st.Serial, st2.Serial)
	}
	// A forced renewal after the restart orders with the stored account.
	if err := m2.Renew(ctx, "localhost"); err != nil {
		t.Fatal(err)
	}
	if st2 := status(t, m2, "localhost"); st2.Serial == st.Serial || p.Orders() != 2 || p.Accounts() != 1 {
		t.Fatalf("after Renew: serial %s (was %s), %d orders, %d accounts; want a new serial, 2 orders, 1 account", st2.Serial, st.Serial, p.Orders(), p.Accounts())
	}
}

// TestIssueTLSALPN01 orders with HTTP-01 disabled: Pebble validates
// through a TLS listener whose GetCertificate is the Manager's, which
// must answer the acme-tls/1 hello with the RFC 8737 certificate.
func TestIssueTLSALPN01(t *testing.T) {
	t.Parallel()
	tlsLn := listen(t)
	p := pebbletest.Start(t, pebbletest.Options{TLSPort: portOf(tlsLn)})
	evs := newEvents()
	m := newManager(t, p, acme.Config{
		Settings: acme.Settings{DisableHTTP01: true},
		OnEvent:  evs.on,
	})
	var alpnAnswered atomic.Int32 // validation hellos answered with a certificate
	serveTLS(t, tlsLn, func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		c, err := m.GetCertificate(hello)
		if err == nil && slices.Equal(hello.SupportedProtos, []string{"acme-tls/1"}) {
			alpnAnswered.Add(1)
		}
		return c, err
	})
	ctx := context.Background()
	if err := m.Manage(ctx, []acme.Domain{{Name: "localhost"}}); err != nil {
		t.Fatal(err)
	}
	if !m.TLSALPNEnabled() || len(m.HTTPPorts()) != 0 {
		t.Fatalf("TLSALPNEnabled %v HTTPPorts %v", m.TLSALPNEnabled(), m.HTTPPorts())
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	evs.wait(t, acme.EventIssued, "localhost", 60*time.Second)
	conn, err := dialTLS(t, tlsLn.Addr().String(), "localhost", p.Roots(t))
	if err != nil {
		t.Fatalf("handshake verified against Pebble's root: %v", err)
	}
	defer conn.Close()
	opts := x509.VerifyOptions{Roots: p.Roots(t), Intermediates: x509.NewCertPool(), DNSName: "localhost"}
	for _, c := range conn.ConnectionState().PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := conn.ConnectionState().PeerCertificates[0].Verify(opts); err != nil {
		t.Fatal(err)
	}
	// Pebble validates from 3 perspectives.
	if n := alpnAnswered.Load(); n < 1 {
		t.Fatalf("%d acme-tls/1 hellos answered", n)
	}
	// Outside a validation, an acme-tls/1 hello gets nothing.
	if _, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "localhost", SupportedProtos: []string{"acme-tls/1"}}); err == nil {
		t.Fatal("acme-tls/1 hello answered with no validation pending")
	}
}
