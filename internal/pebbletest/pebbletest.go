// Package pebbletest runs Pebble, Let's Encrypt's ACME test server, for
// tests: one process per test, with its own listen, management and
// validation ports, stopped at the test's cleanup.
//
// Pebble is pinned as a tool of this module (go.mod `tool` line), so
// `go tool -n pebble` builds it once into the Go build cache and prints
// its path; nothing else needs installing. When that fails (no module
// cache, no network for a first download) the test is skipped with the
// reason.
//
// Pebble validates challenges for a name by resolving it with the system
// resolver, so "localhost" validates against 127.0.0.1 (and ::1) for real:
// a test serves HTTP-01 on Options.HTTPPort and TLS-ALPN-01 on
// Options.TLSPort, both on loopback. Those ports are fixed for the life of
// one Pebble, so each test that validates needs its own Server.
package pebbletest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Options configures one Pebble instance.
type Options struct {
	// HTTPPort is the port Pebble connects to (on the resolved address of
	// the name) for HTTP-01 validation; 0 picks an unused port, which in
	// effect makes HTTP-01 fail.
	HTTPPort int
	// TLSPort is the port for TLS-ALPN-01 validation; 0 as for HTTPPort.
	TLSPort int
	// AlwaysValid skips validation entirely (PEBBLE_VA_ALWAYS_VALID=1):
	// for tests that are not about challenges.
	AlwaysValid bool
	// ValidityPeriod is the lifetime of issued certificates; 0 keeps
	// Pebble's default (90 days). Pebble backdates nothing, so a short
	// period makes renewal tests fast.
	ValidityPeriod time.Duration
	// OCSPResponderURL is written into issued leaves as their OCSP
	// server; Pebble itself answers no OCSP, so the test serves it (sign
	// with Server.Intermediate and Server.IntermediateKey).
	OCSPResponderURL string
	// KeyAlgorithm of Pebble's own root and intermediate, "ecdsa" or
	// "rsa"; "" → "rsa" when OCSPResponderURL is set (Pebble's management
	// API hands out RSA keys only), else "ecdsa".
	KeyAlgorithm string
	// RetryAfter is the Retry-After (seconds) Pebble sends while an
	// order or authorization is processing; 0 → 1.
	RetryAfter int
	// Env adds environment variables (KEY=VALUE) for the Pebble process.
	Env []string
}

// Server is one running Pebble.
type Server struct {
	// DirectoryURL is the ACME directory of this Pebble.
	DirectoryURL string
	// ManagementURL is the base URL of its management API (roots, keys).
	ManagementURL string
	// Client trusts Pebble's API certificate (MinicaPEMPath) and nothing
	// else; use it (or a copy of its Transport) as the ACME HTTP client.
	Client *http.Client
	// MinicaPEMPath is the CA file that signs Pebble's API certificate;
	// point SSL_CERT_FILE at it to trust Pebble through the system roots.
	MinicaPEMPath string
	// Opts are the options it runs with (ports filled in).
	Opts Options

	log *lockedBuffer
}

var (
	buildOnce sync.Once
	binPath   string
	modDir    string
	buildErr  error
)

// binary builds Pebble once per test process and returns its path and
// module directory.
func binary() (string, string, error) {
	buildOnce.Do(func() {
		out, err := exec.Command("go", "tool", "-n", "pebble").Output()
		if err != nil {
			buildErr = fmt.Errorf("go tool -n pebble: %w (%s)", err, stderrOf(err))
			return
		}
		binPath = strings.TrimSpace(string(out))
		out, err = exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/letsencrypt/pebble/v2").Output()
		if err != nil {
			buildErr = fmt.Errorf("go list pebble module: %w (%s)", err, stderrOf(err))
			return
		}
		modDir = strings.TrimSpace(string(out))
	})
	return binPath, modDir, buildErr
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return strings.TrimSpace(string(ee.Stderr))
	}
	return ""
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Prefer listening on 127.0.0.1:0 yourself; this is for servers that
// need a port number in their configuration.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("reserve port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Start runs a Pebble for t and stops it at t's cleanup. It skips t when
// Pebble cannot be built or run here.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin, dir, err := binary()
	if err != nil {
		t.Skipf("pebble not available: %v", err)
	}
	if opts.HTTPPort == 0 {
		opts.HTTPPort = FreePort(t)
	}
	if opts.TLSPort == 0 {
		opts.TLSPort = FreePort(t)
	}
	if opts.KeyAlgorithm == "" {
		opts.KeyAlgorithm = "ecdsa"
		if opts.OCSPResponderURL != "" {
			opts.KeyAlgorithm = "rsa"
		}
	}
	if opts.RetryAfter == 0 {
		opts.RetryAfter = 1
	}
	minica := filepath.Join(dir, "test", "certs", "pebble.minica.pem")
	pool := x509.NewCertPool()
	pemBytes, err := os.ReadFile(minica)
	if err != nil || !pool.AppendCertsFromPEM(pemBytes) {
		t.Skipf("pebble minica %s unreadable: %v", minica, err)
	}
	client := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true},
	}
	t.Cleanup(client.CloseIdleConnections)
	// The listen and management ports are reserved and then released, so
	// another process may take one before Pebble binds it; try again then.
	var lastErr error
	for range 3 {
		s := &Server{Client: client, MinicaPEMPath: minica, Opts: opts, log: &lockedBuffer{}}
		if lastErr = s.run(t, bin, dir); lastErr == nil {
			return s
		}
	}
	t.Fatalf("pebble did not start: %v", lastErr)
	return nil
}

func (s *Server) run(t testing.TB, bin, dir string) error {
	listen, mgmt := FreePort(t), FreePort(t)
	profile := map[string]any{"description": "test"}
	if s.Opts.ValidityPeriod > 0 {
		profile["validityPeriod"] = int64(s.Opts.ValidityPeriod / time.Second)
	}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":           "127.0.0.1:" + strconv.Itoa(listen),
		"managementListenAddress": "127.0.0.1:" + strconv.Itoa(mgmt),
		"certificate":             filepath.Join(dir, "test", "certs", "localhost", "cert.pem"),
		"privateKey":              filepath.Join(dir, "test", "certs", "localhost", "key.pem"),
		"httpPort":                s.Opts.HTTPPort,
		"tlsPort":                 s.Opts.TLSPort,
		"ocspResponderURL":        s.Opts.OCSPResponderURL,
		"keyAlgorithm":            s.Opts.KeyAlgorithm,
		"retryAfter":              map[string]int{"authz": s.Opts.RetryAfter, "order": s.Opts.RetryAfter},
		"profiles":                map[string]any{"default": profile},
	}}
	cfgBytes, _ := json.Marshal(cfg)
	cfgPath := filepath.Join(t.TempDir(), "pebble-config.json")
	if err := os.WriteFile(cfgPath, cfgBytes, 0o600); err != nil {
		t.Fatalf("write pebble config: %v", err)
	}
	cmd := exec.Command(bin, "-config", cfgPath)
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_AUTHZREUSE=0", "PEBBLE_WFE_NONCEREJECT=0")
	if s.Opts.AlwaysValid {
		cmd.Env = append(cmd.Env, "PEBBLE_VA_ALWAYS_VALID=1")
	}
	cmd.Env = append(cmd.Env, s.Opts.Env...)
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		t.Skipf("pebble %s cannot run: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}
	s.DirectoryURL = fmt.Sprintf("https://127.0.0.1:%d/dir", listen)
	s.ManagementURL = fmt.Sprintf("https://127.0.0.1:%d", mgmt)
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("pebble exited: %s", s.Log())
		default:
		}
		if s.ready(s.DirectoryURL) && s.ready(s.ManagementURL+"/roots/0") {
			break
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("pebble not ready after 20s: %s", s.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("pebble log:\n%s", s.Log())
		}
	})
	return nil
}

func (s *Server) ready(url string) bool {
	resp, err := s.Client.Get(url)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Log returns everything Pebble has printed so far.
func (s *Server) Log() string { return s.log.String() }

// Orders counts the orders Pebble has created so far (from its log), from
// every client: the number a test compares with "exactly one order".
func (s *Server) Orders() int { return strings.Count(s.Log(), "Added order ") }

// Accounts counts the accounts Pebble has created so far (from its
// log); a registration with a known key reuses the account and does not
// count.
func (s *Server) Accounts() int { return strings.Count(s.Log(), " accounts in memory") }

// Roots returns Pebble's current root (it makes a new one at each start)
// as a pool for verifying issued chains.
func (s *Server) Roots(t testing.TB) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	for _, c := range s.certs(t, "/roots/0") {
		pool.AddCert(c)
	}
	return pool
}

// Intermediate returns the certificate of Pebble's issuing intermediate.
func (s *Server) Intermediate(t testing.TB) *x509.Certificate {
	t.Helper()
	return s.certs(t, "/intermediates/0")[0]
}

// IntermediateKey returns the private key of Pebble's issuing
// intermediate, so a test can sign OCSP responses for its leaves. Pebble
// serves RSA keys only: start it with KeyAlgorithm "rsa" (the default
// when OCSPResponderURL is set).
func (s *Server) IntermediateKey(t testing.TB) crypto.Signer {
	t.Helper()
	b := s.get(t, "/intermediate-keys/0")
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("pebble intermediate key: no PEM")
	}
	var (
		k   any
		err error
	)
	switch blk.Type {
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	}
	if err != nil {
		t.Fatalf("pebble intermediate key: %v", err)
	}
	return k.(crypto.Signer)
}

func (s *Server) certs(t testing.TB, path string) []*x509.Certificate {
	t.Helper()
	rest := s.get(t, path)
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatalf("pebble %s: %v", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatalf("pebble %s: no certificates", path)
	}
	return out
}

func (s *Server) get(t testing.TB, path string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.ManagementURL+path, nil)
	resp, err := s.Client.Do(req)
	if err != nil {
		t.Fatalf("pebble %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pebble %s: %d %v", path, resp.StatusCode, err)
	}
	return b
}

// lockedBuffer collects the process's output; the os/exec copier writes
// while tests read.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
