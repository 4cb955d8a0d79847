package acme

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ACME directories of Let's Encrypt.
const (
	LetsEncryptProduction = "https://acme-v02.api.letsencrypt.org/directory"
	LetsEncryptStaging    = "https://acme-staging-v02.api.letsencrypt.org/directory"
)

// Defaults applied to zero fields.
const (
	DefaultRenewBefore        = 30 * 24 * time.Hour // TS renewThresholdDays 30
	DefaultRenewCheckInterval = 24 * time.Hour      // TS renewCheckIntervalHours 24
	DefaultHTTPPort           = 80
	DefaultHandshakeWait      = 10 * time.Second
	DefaultStorageDir         = "./certs" // TS certificateStore
)

// Settings are what a route may override for its names (the TS route
// level action.tls.acme); Config.Settings are the defaults.
type Settings struct {
	// Email is the account contact; "" registers an account without one.
	Email string
	// DirectoryURL is the ACME directory; "" means LetsEncryptStaging,
	// or LetsEncryptProduction when UseProduction is set.
	DirectoryURL string
	// UseProduction picks Let's Encrypt production when DirectoryURL is "".
	UseProduction bool
	// RenewBefore renews a certificate when less than this is left of
	// its validity; 0 means DefaultRenewBefore (30 days).
	RenewBefore time.Duration
	// HTTPPort is the port on which the proxy answers HTTP-01
	// challenges (the CA always connects to port 80 in production; other
	// values are for test CAs); 0 means 80.
	HTTPPort int
	// DisableHTTP01 turns HTTP-01 off; then only TLS-ALPN-01 is used.
	DisableHTTP01 bool
	// DisableTLSALPN turns TLS-ALPN-01 off (config tlsAlpnChallenge:false).
	DisableTLSALPN bool
}

// ErrUseACME is what Config.Provision returns to have a name ordered
// from the ACME CA instead.
var ErrUseACME = errors.New("acme: use ACME for this name")

// Config configures a Manager.
type Config struct {
	// Settings are the defaults for every name without its own.
	Settings
	// RenewCheckInterval is how often each name's certificate is checked
	// for renewal (with ±10% jitter, and at the latest when it falls due);
	// 0 means 24 h.
	RenewCheckInterval time.Duration
	// DisableAutoRenew stops renewal (TS autoRenew:false): missing
	// certificates are still ordered, Renew still works, and an
	// "expiring" event reports a certificate that falls due.
	DisableAutoRenew bool
	// Storage keeps accounts and certificates; nil means
	// NewFileStorage(DefaultStorageDir).
	Storage Storage
	// Locker coordinates processes sharing Storage; nil means Storage
	// itself when it implements Locker, else a lock within this process.
	Locker Locker
	// Provision, when set, is asked first for each name's certificate
	// (TS certProvisionFunction), again when that certificate falls due.
	// Returning ErrUseACME orders the name from the CA; any other error
	// falls back to ACME too, unless NoProvisionFallback. It runs on the
	// name's worker goroutine, after Start; its certificates are kept in
	// memory only (it is asked again after a restart).
	Provision func(ctx context.Context, domain string) (*tls.Certificate, error)
	// NoProvisionFallback makes a Provision error mark the name failed
	// (retried with backoff) instead of ordering it from the CA.
	NoProvisionFallback bool
	// OnEvent receives issued, renewed, failed and expiring events. It is
	// called on the name's worker goroutine, never concurrently for one
	// name but concurrently for different names; it must return quickly
	// (the name's work waits for it) and must not call Stop or Manage.
	OnEvent func(Event)
	// Logger receives the Manager's log; nil means slog.Default().
	Logger *slog.Logger
	// HTTPClient talks to the CA and to OCSP responders; nil means a
	// client on http.DefaultTransport (system roots, so SSL_CERT_FILE
	// can add a test CA).
	HTTPClient *http.Client
	// Fallback is served for a managed name that has no certificate yet
	// (or whose order failed); nil makes such handshakes fail with an
	// alert.
	Fallback *tls.Certificate
	// HandshakeWait bounds how long a handshake for a managed name
	// without a certificate waits for an order in progress; 0 means 10 s.
	HandshakeWait time.Duration

	// Retry knobs, set by tests through export_test.go.
	backoffBase, backoffCap time.Duration
}

// Retry schedule of failed attempts: base·2^(n-1), capped, with jitter.
const (
	defaultBackoffBase = time.Minute
	defaultBackoffCap  = 6 * time.Hour
	attemptTimeout     = 5 * time.Minute // one order, however slow the CA
)

// Domain is one name to manage.
type Domain struct {
	// Name is a DNS name (no wildcard: HTTP-01 and TLS-ALPN-01 cannot
	// validate one). It is matched case-insensitively.
	Name string
	// Settings, when non-nil, replace Config.Settings for this name
	// entirely: the caller merges route overrides into a full Settings.
	Settings *Settings
}

// resolve fills the defaults of s.
func (s Settings) resolve() Settings {
	if s.DirectoryURL == "" {
		s.DirectoryURL = LetsEncryptStaging
		if s.UseProduction {
			s.DirectoryURL = LetsEncryptProduction
		}
	}
	if s.RenewBefore == 0 {
		s.RenewBefore = DefaultRenewBefore
	}
	if s.HTTPPort == 0 {
		s.HTTPPort = DefaultHTTPPort
	}
	return s
}

// validate names the field that is wrong; prefix locates the Settings.
func (s Settings) validate(prefix string) error {
	if s.DirectoryURL != "" {
		u, err := url.Parse(s.DirectoryURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("acme: %sDirectoryURL %q: want an http(s) URL", prefix, s.DirectoryURL)
		}
	}
	if s.RenewBefore < 0 {
		return fmt.Errorf("acme: %sRenewBefore %v: negative", prefix, s.RenewBefore)
	}
	if s.HTTPPort < 0 || s.HTTPPort > 65535 {
		return fmt.Errorf("acme: %sHTTPPort %d: out of range 1-65535", prefix, s.HTTPPort)
	}
	if s.DisableHTTP01 && s.DisableTLSALPN {
		return fmt.Errorf("acme: %sDisableHTTP01 and DisableTLSALPN: no challenge type left", prefix)
	}
	if strings.ContainsAny(s.Email, "\r\n \t<>") {
		return fmt.Errorf("acme: %sEmail %q: not an address", prefix, s.Email)
	}
	return nil
}

func (c *Config) validate() error {
	if err := c.Settings.validate(""); err != nil {
		return err
	}
	if c.RenewCheckInterval < 0 {
		return fmt.Errorf("acme: RenewCheckInterval %v: negative", c.RenewCheckInterval)
	}
	if c.HandshakeWait < 0 {
		return fmt.Errorf("acme: HandshakeWait %v: negative", c.HandshakeWait)
	}
	if c.NoProvisionFallback && c.Provision == nil {
		return errors.New("acme: NoProvisionFallback without Provision")
	}
	if c.Fallback != nil && len(c.Fallback.Certificate) == 0 {
		return errors.New("acme: Fallback: certificate without DER")
	}
	return nil
}

// CheckName reports why Manager.Manage would refuse name: it must be a
// DNS name an ACME CA can validate over HTTP-01 or TLS-ALPN-01 (no IP
// address, no wildcard, letters, digits and inner hyphens, at most 253
// bytes), in any case, with or without a trailing dot. Callers that take
// names from configuration check them with it before Manage runs.
func CheckName(name string) error {
	_, err := normalizeName(name)
	return err
}

// normalizeName lowercases name and checks it (see CheckName).
func normalizeName(name string) (string, error) {
	n := strings.ToLower(strings.TrimSuffix(name, "."))
	if n == "" || len(n) > 253 {
		return "", fmt.Errorf("acme: domain %q: empty or longer than 253 bytes", name)
	}
	if net.ParseIP(n) != nil {
		return "", fmt.Errorf("acme: domain %q: IP addresses are not managed", name)
	}
	if strings.HasPrefix(n, "*.") {
		return "", fmt.Errorf("acme: domain %q: wildcards need DNS-01, which this manager does not do", name)
	}
	for label := range strings.SplitSeq(n, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", fmt.Errorf("acme: domain %q: bad label %q", name, label)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", fmt.Errorf("acme: domain %q: character %q not allowed", name, c)
			}
		}
	}
	return n, nil
}
