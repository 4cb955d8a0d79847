package acme_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/acme"
	xacme "golang.org/x/crypto/acme"
)

func TestNewManagerValidates(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  acme.Config
		want string
	}{
		{acme.Config{Settings: acme.Settings{DirectoryURL: "ftp://x"}}, "DirectoryURL"},
		{acme.Config{Settings: acme.Settings{DirectoryURL: "https://"}}, "DirectoryURL"},
		{acme.Config{Settings: acme.Settings{RenewBefore: -time.Second}}, "RenewBefore"},
		{acme.Config{Settings: acme.Settings{HTTPPort: 70000}}, "HTTPPort"},
		{acme.Config{Settings: acme.Settings{DisableHTTP01: true, DisableTLSALPN: true}}, "DisableHTTP01"},
		{acme.Config{Settings: acme.Settings{Email: "a@b\r\nX-Injected: 1"}}, "Email"},
		{acme.Config{RenewCheckInterval: -1}, "RenewCheckInterval"},
		{acme.Config{HandshakeWait: -1}, "HandshakeWait"},
		{acme.Config{NoProvisionFallback: true}, "NoProvisionFallback"},
		{acme.Config{Fallback: &tls.Certificate{}}, "Fallback"},
	} {
		_, err := acme.NewManager(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewManager(%+v) = %v, want an error naming %s", tc.cfg, err, tc.want)
		}
	}
}

// TestManageSet: names are validated, the set is replaced as a whole,
// unmanaged names get ErrNotManaged at once, a managed name without a
// certificate gets ErrNoCertificateYet after HandshakeWait (the Manager
// is not started, so no order runs), and per-name Settings drive the
// HTTP-01 ports.
func TestManageSet(t *testing.T) {
	t.Parallel()
	m, err := acme.NewManager(acme.Config{
		Storage:       acme.NewFileStorage(t.TempDir()),
		HandshakeWait: 100 * time.Millisecond,
		Settings:      acme.Settings{DirectoryURL: "https://127.0.0.1:1/dir"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop(context.Background())
	ctx := context.Background()
	for _, bad := range []string{"", "*.example.com", "exa mple.com", "-a.example", "127.0.0.1", "::1", "a..b", strings.Repeat("a", 64) + ".com", "ex_ample.com"} {
		if err := m.Manage(ctx, []acme.Domain{{Name: bad}}); err == nil || !strings.Contains(err.Error(), "domains[0].Name") {
			t.Errorf("Manage(%q) = %v, want an error naming domains[0].Name", bad, err)
		}
	}
	alt := &acme.Settings{DirectoryURL: "https://127.0.0.1:1/dir", HTTPPort: 8080, DisableTLSALPN: true}
	if err := m.Manage(ctx, []acme.Domain{{Name: "a.example"}, {Name: "B.example."}, {Name: "c.example", Settings: alt}}); err != nil {
		t.Fatal(err)
	}
	if got := m.HTTPPorts(); len(got) != 2 || got[0] != 80 || got[1] != 8080 {
		t.Fatalf("HTTPPorts = %v, want [80 8080]", got)
	}
	st := m.Status()
	if len(st) != 3 || st[0].Name != "a.example" || st[1].Name != "b.example" || st[2].State != acme.StatePending {
		t.Fatalf("Status = %+v", st)
	}
	if err := m.Manage(ctx, []acme.Domain{{Name: "c.example", Settings: &acme.Settings{HTTPPort: 0}}, {Name: "c.example", Settings: alt}}); err == nil {
		t.Fatal("one name with two settings accepted")
	}
	if err := m.Manage(ctx, []acme.Domain{{Name: "b.example"}}); err != nil {
		t.Fatal(err)
	}
	if st := m.Status(); len(st) != 1 || st[0].Name != "b.example" {
		t.Fatalf("Status after replacing the set = %+v", st)
	}
	if _, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "a.example"}); !errors.Is(err, acme.ErrNotManaged) {
		t.Fatalf("removed name: %v, want ErrNotManaged", err)
	}
	t0 := time.Now()
	if _, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "b.example"}); !errors.Is(err, acme.ErrNoCertificateYet) {
		t.Fatalf("pending name: %v, want ErrNoCertificateYet", err)
	}
	if d := time.Since(t0); d < 80*time.Millisecond || d > 5*time.Second {
		t.Fatalf("pending handshake waited %v, want about HandshakeWait", d)
	}
	if err := m.Renew(ctx, "b.example"); err == nil {
		t.Fatal("Renew before Start succeeded")
	}
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err == nil {
		t.Fatal("Start after Stop succeeded")
	}
	if err := m.Manage(ctx, nil); err == nil {
		t.Fatal("Manage after Stop succeeded")
	}
}

// TestFallbackCertificate: a managed name without a certificate gets
// Config.Fallback after HandshakeWait instead of an error; an unmanaged
// name still gets ErrNotManaged at once, and a validation hello no
// challenge is pending for gets an error, never the fallback.
func TestFallbackCertificate(t *testing.T) {
	t.Parallel()
	fb := selfSigned(t, time.Hour, "fallback.example")
	m, err := acme.NewManager(acme.Config{
		Storage:       acme.NewFileStorage(t.TempDir()),
		HandshakeWait: 50 * time.Millisecond,
		Fallback:      fb,
		Settings:      acme.Settings{DirectoryURL: "https://127.0.0.1:1/dir"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop(context.Background())
	if err := m.Manage(context.Background(), []acme.Domain{{Name: "a.example"}}); err != nil {
		t.Fatal(err)
	}
	if c, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "A.example."}); err != nil || c != fb {
		t.Fatalf("managed name without a certificate: %p %v, want the fallback", c, err)
	}
	if _, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "b.example"}); !errors.Is(err, acme.ErrNotManaged) {
		t.Fatalf("unmanaged name: %v, want ErrNotManaged", err)
	}
	if c, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "a.example", SupportedProtos: []string{"acme-tls/1"}}); err == nil {
		t.Fatalf("validation hello without a pending challenge got %p", c)
	}
}

// TestHTTPChallengeLookup: the token of a name being validated is
// answered for that name (any case, a port or a trailing dot on the
// host); another name, another method, a malformed token or a path
// trick is not, and the handler passes those on (nil next → 404).
func TestHTTPChallengeLookup(t *testing.T) {
	t.Parallel()
	m, err := acme.NewManager(acme.Config{Storage: acme.NewFileStorage(t.TempDir())})
	if err != nil {
		t.Fatal(err)
	}
	const tok, ka = "validlookingtoken_0123456789-abc", "validlookingtoken_0123456789-abc.thumbprint"
	acme.PendHTTP(m, "localhost", tok, ka)
	for _, host := range []string{"localhost", "LocalHost:80", "localhost."} {
		if got, ok := m.HTTPChallenge(host, tok); !ok || got != ka {
			t.Errorf("host %q: %q %v, want the key authorization", host, got, ok)
		}
	}
	for _, q := range [][2]string{{"example.com", tok}, {"localhost", ""}, {"localhost", "short"},
		{"localhost", "../" + tok}, {"localhost", tok + "/"}, {"localhost", tok + "%2F"}, {"localhost", strings.Repeat("A", 300)}} {
		if _, ok := m.HTTPChallenge(q[0], q[1]); ok {
			t.Errorf("host %q token %q answered", q[0], q[1])
		}
	}
	ln := listen(t)
	serveHTTP(t, ln, m.HTTPHandler(nil))
	base := "http://" + ln.Addr().String() + "/.well-known/acme-challenge/"
	c := &http.Client{Timeout: 10 * time.Second}
	for _, q := range []struct {
		method, path string
		want         int
	}{{"GET", tok, 200}, {"HEAD", tok, 200}, {"POST", tok, 404}, {"GET", "unknown_0123456789-abcdefgh", 404}, {"GET", "..%2F" + tok, 404}} {
		req, err := http.NewRequest(q.method, base+q.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "localhost"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != q.want {
			t.Errorf("%s %s: %d, want %d", q.method, q.path, resp.StatusCode, q.want)
		}
	}
}

// TestBackoffSchedule: exponential with jitter between half and the
// whole of base·2^(n-1), capped; a rate limit or a Retry-After from the
// CA is never cut short.
func TestBackoffSchedule(t *testing.T) {
	t.Parallel()
	cfg := acme.Config{Storage: acme.NewFileStorage(t.TempDir())}
	acme.SetBackoff(&cfg, time.Second, time.Minute)
	m, err := acme.NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	plain := errors.New("validation failed")
	for n := 1; n <= 40; n++ {
		full := time.Minute
		if n < 7 {
			full = time.Second << (n - 1)
		}
		for range 20 {
			if d := acme.Backoff(m, n, plain); d < full/2 || d > full {
				t.Fatalf("attempt %d: %v, want in [%v, %v]", n, d, full/2, full)
			}
		}
	}
	retryAfter := &xacme.Error{StatusCode: 503, Header: http.Header{"Retry-After": {"600"}}}
	if d := acme.Backoff(m, 1, fmt.Errorf("wrapped: %w", retryAfter)); d != 10*time.Minute {
		t.Fatalf("Retry-After 600: %v", d)
	}
	limited := &xacme.Error{StatusCode: 429, ProblemType: "urn:ietf:params:acme:error:rateLimited", Header: http.Header{"Retry-After": {"7200"}}}
	if d := acme.Backoff(m, 1, limited); d != 2*time.Hour {
		t.Fatalf("rate limit with Retry-After 7200: %v", d)
	}
	limited.Header = nil
	if d := acme.Backoff(m, 1, limited); d < time.Minute {
		t.Fatalf("rate limit without Retry-After: %v, want at least the cap", d)
	}
}
