package smartproxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy/acme"
)

// autoRoute is a terminating route on port 443 whose certificate comes
// from the store (ACME).
func autoRoute(name string, domains ...string) Route {
	r := NewRoute(name).Ports(443).Domains(domains...).ForwardTo("127.0.0.1:8080").Route()
	r.Action.TLS = &RouteTLS{Mode: TLSTerminate, Certificate: &CertificateSpec{Auto: true}}
	return r
}

func newManager(t *testing.T) *acme.Manager {
	t.Helper()
	m, err := acme.NewManager(acme.Config{Storage: acme.NewFileStorage(t.TempDir())})
	require.NoError(t, err)
	return m
}

// TestACMEManagedNames: the managed names are the domains of terminating
// routes without a certificate of their own, once each, with a route's
// acme settings merged over the file's.
func TestACMEManagedNames(t *testing.T) {
	t.Parallel()
	prod := true
	a := autoRoute("a", "A.example.com", "b.example.com")
	b := autoRoute("b", "c.example.com", "b.example.com")
	c := autoRoute("c", "d.example.com")
	c.Action.TLS.Certificate = nil // none: the store's, like "auto"
	c.Action.TLS.ACME = &RouteACME{Email: "d@example.com", UseProduction: &prod, ChallengePort: 8080, RenewBeforeDays: 10}
	static := autoRoute("static", "static.example.com")
	static.Action.TLS.Certificate = testCertSpec(t)
	pass := NewRoute("pass").Ports(443).Domains("pass.example.com").ForwardTo("127.0.0.1:1").Route()
	pass.Action.TLS = &RouteTLS{Mode: TLSPassthrough}
	plain := httpRouteOn("plain", 80, "127.0.0.1:1", "plain.example.com")

	cfg := &Config{Routes: []Route{a, b, c, static, pass, plain}, ACME: &ACMEOptions{Email: "ops@example.com", CertificateStore: t.TempDir()}}
	opts := cfg.Options()
	opts.Logger = testLogger()
	p, err := New(opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Stop(t.Context()) })
	base := acme.Settings{Email: "ops@example.com", HTTPPort: 80, RenewBefore: 30 * 24 * time.Hour}
	over := acme.Settings{Email: "d@example.com", UseProduction: true, HTTPPort: 8080, RenewBefore: 10 * 24 * time.Hour}
	require.Equal(t, []acme.Domain{{Name: "a.example.com"}, {Name: "b.example.com"}, {Name: "c.example.com"}, {Name: "d.example.com", Settings: &over}},
		p.set.Load().acmeDomains)
	require.Equal(t, base, p.opts.ACME.Settings())
	require.Same(t, p.opts.ACME, p.certs, "the manager is the certificate store")
}

// TestACMEManagedNamesRefused: what ACME cannot order is refused when the
// manager is the only store, naming the field; with a store of the
// user's (a wrapper) patterns are left to it.
func TestACMEManagedNamesRefused(t *testing.T) {
	t.Parallel()
	m := newManager(t)
	_, err := New(Options{ACME: m, Routes: []Route{autoRoute("w", "ok.example.com", "*.example.com")}})
	require.ErrorContains(t, err, `route "w": match.domains[1]: "*.example.com" is a pattern: ACME (HTTP-01, TLS-ALPN-01) orders certificates for exact names only`)
	_, err = New(Options{ACME: m, Routes: []Route{autoRoute("ip", "ok.example.com", "10.0.0.1", "a_b.example.com")}})
	require.ErrorContains(t, err, `route "ip": match.domains[1]: acme: domain "10.0.0.1": IP addresses are not managed; list exact names, or give the route a certificate`)
	require.ErrorContains(t, err, `route "ip": match.domains[2]: acme: domain "a_b.example.com": character '_' not allowed`)
	long := strings.Repeat(strings.Repeat("a", 63)+".", 4) + "com" // 259 bytes: labels fine, name too long
	_, err = New(Options{ACME: m, Routes: []Route{autoRoute("long", long)}})
	require.ErrorContains(t, err, `route "long": match.domains[0]: acme: domain "`+long+`": empty or longer than 253 bytes`, "refused by New (and -check), not first by Start")
	_, err = New(Options{ACME: m, Routes: []Route{autoRoute("none")}})
	require.ErrorContains(t, err, `route "none": match.domains: certificate "auto" with ACME needs the names to order`)

	p, err := New(Options{ACME: m, Certificates: testCertStore(t), Logger: testLogger(),
		Routes: []Route{autoRoute("w", "ok.example.com", "*.example.com"), autoRoute("none")}})
	require.NoError(t, err, "a wrapping store serves patterns and unnamed clients itself")
	require.Equal(t, []acme.Domain{{Name: "ok.example.com"}}, p.set.Load().acmeDomains)
	require.NoError(t, p.Stop(t.Context()))

	x, y := autoRoute("x", "same.example.com"), autoRoute("y", "same.example.com")
	y.Action.TLS.ACME = &RouteACME{Email: "other@example.com"}
	cfg := &Config{Routes: []Route{x, y}, ACME: &ACMEOptions{CertificateStore: t.TempDir()}}
	_, err = New(cfg.Options())
	require.ErrorContains(t, err, `route "y": action.tls.acme: domain "same.example.com" is also managed by route "x" with other ACME settings`)

	// A manager built in Go reports its settings (Manager.Settings): a
	// route's own are merged over them.
	p, err = New(Options{ACME: m, Logger: testLogger(), Routes: []Route{y}})
	require.NoError(t, err)
	doms := p.set.Load().acmeDomains
	require.Len(t, doms, 1)
	require.NotNil(t, doms[0].Settings)
	require.Equal(t, "other@example.com", doms[0].Settings.Email)
	require.NoError(t, p.Stop(t.Context()))

	// Route settings without any manager.
	y.Action.TLS.Certificate = nil
	_, err = New(Options{Certificates: testCertStore(t), Routes: []Route{y}})
	require.ErrorContains(t, err, `route "y": action.tls.acme: needs an ACME manager (Options.ACME, or an acme block in the config file)`)
}

// TestCertificateStatusStatic: a route's own certificate is reported per
// name, as static and valid.
func TestCertificateStatusStatic(t *testing.T) {
	t.Parallel()
	r := autoRoute("static", "a.example.com")
	r.Action.TLS.Certificate = testCertSpec(t)
	r2 := autoRoute("again", "b.example.com")
	r2.Action.TLS.Certificate = testCertSpec(t)
	p, err := New(Options{Routes: []Route{r, r2}, Logger: testLogger()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Stop(t.Context()) })
	st := p.CertificateStatus()
	require.Len(t, st, 4, "two routes, two names each: %+v", st)
	require.Equal(t, "*.example.com", st[0].Name)
	require.Equal(t, "*.test", st[2].Name)
	for _, s := range st {
		require.Equal(t, acme.SourceStatic, s.Source)
		require.Equal(t, acme.StateValid, s.State)
		require.Equal(t, "smartproxy test", s.Issuer)
		require.Equal(t, "1", s.Serial)
		require.True(t, s.NotAfter.After(time.Now()))
	}
}

// TestACMEChallengeConnOnTCPPort: on an ACME port whose only route is raw
// TCP, a connection whose first line asks for a challenge belongs to the
// proxy: the challenge (unknown here) is answered 404, and requests the
// client pipelines after it, absolute-form challenge paths included, get
// 404 and a close, never the route's backend.
func TestACMEChallengeConnOnTCPPort(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	acmePort, tlsPort := lp.port(t), lp.port(t)
	reached := make(chan struct{}, 10)
	raw := startBackend(t, "127.0.0.1:0", func(c net.Conn) { reached <- struct{}{}; echo(c) })
	m, err := acme.NewManager(acme.Config{Logger: testLogger(), Storage: acme.NewFileStorage(t.TempDir()),
		Settings: acme.Settings{HTTPPort: acmePort, DisableTLSALPN: true, DirectoryURL: "https://127.0.0.1:1/directory"}})
	require.NoError(t, err)
	startTestProxy(t, lp, Options{ACME: m, Routes: []Route{
		NewRoute("raw").Ports(acmePort).ForwardTo(raw.addr()).Route(),
		terminateRouteOn("site", tlsPort, "127.0.0.1:1", "localhost"),
	}})

	const tok = "unknownToken_0123456789abcdef"
	for _, first := range []string{"GET " + acmeChallengePrefix + tok, "GET http://localhost" + acmeChallengePrefix + tok} {
		c := dial(t, acmePort)
		require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
		_, err = io.WriteString(c, first+" HTTP/1.1\r\nHost: localhost\r\n\r\n"+
			"GET /admin HTTP/1.1\r\nHost: localhost\r\n\r\n"+
			"GET "+acmeChallengePrefix+tok+" HTTP/1.1\r\nHost: localhost\r\n\r\n")
		require.NoError(t, err)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err, first)
		body, _ := io.ReadAll(resp.Body)
		require.Equal(t, http.StatusNotFound, resp.StatusCode, first)
		require.Contains(t, string(body), "no such ACME challenge")
		resp, err = http.ReadResponse(br, nil)
		require.NoError(t, err, first)
		_, _ = io.ReadAll(resp.Body)
		require.Equal(t, http.StatusNotFound, resp.StatusCode, "the pipelined request after the challenge")
		require.True(t, resp.Close, "and the connection is closed")
		_, err = http.ReadResponse(br, nil)
		require.Error(t, err, "nothing after the close")
		require.NoError(t, c.Close())
	}
	require.Empty(t, reached, "no connection reached the raw route's backend")
}
