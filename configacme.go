package smartproxy

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"net/url"
	"path/filepath"
	"time"

	"github.com/gosmartproxy/smartproxy/acme"
	"github.com/gosmartproxy/smartproxy/schema"
)

// ACMEOptions is the config file's top-level acme block: the TS
// SmartProxy's acme options, plus directoryUrl, tlsAlpnChallenge and
// httpChallenge. A route's action.tls.acme (RouteACME) overrides it for
// that route's domains.
type ACMEOptions struct {
	// Email is the ACME account's contact address (Let's Encrypt mails
	// expiry warnings to it). Optional.
	Email string `json:"email,omitempty"`
	// UseProduction orders from Let's Encrypt production; false means
	// Let's Encrypt staging, whose certificates browsers do not trust.
	// Ignored when DirectoryURL is set.
	UseProduction bool `json:"useProduction,omitempty"`
	// Port is where HTTP-01 challenges are answered; default 80 (the
	// port the CA asks on). The proxy shares it with the routes on it, or
	// opens it for the challenges when no route uses it.
	Port *int `json:"port,omitempty"`
	// RenewThresholdDays renews a certificate this many days before it
	// expires; default 30.
	RenewThresholdDays *int `json:"renewThresholdDays,omitempty"`
	// RenewCheckIntervalHours is how often certificates are checked for
	// renewal; default 24. Fractions are allowed.
	RenewCheckIntervalHours *float64 `json:"renewCheckIntervalHours,omitempty"`
	// CertificateStore is the directory of the account key and the
	// certificates; default "./certs", relative to the config file's
	// directory. Several proxies may share it (one orders, the others
	// load).
	CertificateStore string `json:"certificateStore,omitempty"`
	// AutoRenew renews certificates before they expire; default true.
	AutoRenew *bool `json:"autoRenew,omitempty"`
	// DirectoryURL is the ACME directory of the CA (not in TS): any RFC
	// 8555 CA, such as ZeroSSL, a company's step-ca or Pebble. It must be
	// https; the CA's certificate is checked against the system roots
	// (SSL_CERT_FILE adds a test CA's).
	DirectoryURL string `json:"directoryUrl,omitempty"`
	// TLSALPNChallenge answers TLS-ALPN-01 on the ports of terminating
	// routes (not in TS); default true.
	TLSALPNChallenge *bool `json:"tlsAlpnChallenge,omitempty"`
	// HTTPChallenge answers HTTP-01 on Port (not in TS); default true.
	// Turn it off when the CA cannot reach port 80 and TLS-ALPN-01 on 443
	// is the way in.
	HTTPChallenge *bool `json:"httpChallenge,omitempty"`
}

// Defaults of the acme block, as in TS.
const (
	DefaultACMEPort                = 80
	DefaultACMERenewThresholdDays  = 30
	DefaultACMERenewCheckInterval  = 24 * time.Hour
	DefaultACMECertificateStore    = "./certs"
	maxACMEDays                    = 3650
	maxACMERenewCheckIntervalHours = 24 * 365
)

// acmeFileConfig is the ACME manager a config file describes; New builds
// it (Options.acmeFile).
type acmeFileConfig struct {
	cfg acme.Config
	// dir is the certificate store's directory.
	dir string
	// implicit: the file has no acme block, only routes with
	// certificate "auto", so the defaults are used (and New says so).
	implicit bool
}

// newManager builds the manager, logging with log (the manager logs its
// issued, renewed, failed and expiring events there).
func (f *acmeFileConfig) newManager(log *slog.Logger) (*acme.Manager, error) {
	cfg := f.cfg
	cfg.Logger = log
	return acme.NewManager(cfg)
}

// ACMEManagerConfig returns the configuration of the ACME manager the
// file describes, and false when it needs none (no acme block and no
// route with certificate "auto" or none). Config.Options does not build
// the manager (New does, with the proxy's logger, logging its events):
// call this to build it yourself, with an OnEvent of your own, and set
// Options.ACME. Nothing here touches the network or the disk.
func (c *Config) ACMEManagerConfig() (acme.Config, bool) {
	f := c.acmeFile()
	if f == nil {
		return acme.Config{}, false
	}
	return f.cfg, true
}

// acmeFile builds acmeFileConfig from the acme block and the defaults.
func (c *Config) acmeFile() *acmeFileConfig {
	a := c.ACME
	if a == nil {
		if !anyAutoCertificate(c.Routes) {
			return nil
		}
		a = &ACMEOptions{}
	}
	dir := cmp.Or(a.CertificateStore, DefaultACMECertificateStore)
	if !filepath.IsAbs(dir) && c.dir != "" {
		dir = filepath.Join(c.dir, dir)
	}
	var cfg acme.Config
	cfg.Email = a.Email
	cfg.DirectoryURL = a.DirectoryURL
	cfg.UseProduction = a.UseProduction
	cfg.HTTPPort = DefaultACMEPort
	if a.Port != nil {
		cfg.HTTPPort = *a.Port
	}
	cfg.RenewBefore = DefaultACMERenewThresholdDays * 24 * time.Hour
	if a.RenewThresholdDays != nil {
		cfg.RenewBefore = time.Duration(*a.RenewThresholdDays) * 24 * time.Hour
	}
	cfg.RenewCheckInterval = DefaultACMERenewCheckInterval
	if a.RenewCheckIntervalHours != nil {
		cfg.RenewCheckInterval = time.Duration(*a.RenewCheckIntervalHours * float64(time.Hour))
	}
	cfg.DisableAutoRenew = a.AutoRenew != nil && !*a.AutoRenew
	cfg.DisableTLSALPN = a.TLSALPNChallenge != nil && !*a.TLSALPNChallenge
	cfg.DisableHTTP01 = a.HTTPChallenge != nil && !*a.HTTPChallenge
	cfg.Storage = acme.NewFileStorage(dir) // its own Locker: processes sharing dir order once
	return &acmeFileConfig{cfg: cfg, dir: dir, implicit: c.ACME == nil}
}

// anyAutoCertificate reports a terminating route that takes its
// certificate from the store: "auto" or none.
func anyAutoCertificate(routes []Route) bool {
	for i := range routes {
		t := routes[i].Action.TLS
		if t != nil && t.Mode != TLSPassthrough && (t.Certificate == nil || t.Certificate.Auto) {
			return true
		}
	}
	return false
}

// check validates the acme block: numbers in range, an email
// address, an https directory.
func (a *ACMEOptions) check(fe *schema.Collector) {
	if a == nil {
		return
	}
	if a.Port != nil && (*a.Port < 1 || *a.Port > 65535) {
		fe.Failf("acme.port", "must be a port, 1 to 65535, got %d", *a.Port)
	}
	if d := a.RenewThresholdDays; d != nil && (*d < 1 || *d > maxACMEDays) {
		fe.Failf("acme.renewThresholdDays", "must be > 0 (and at most %d), got %d", maxACMEDays, *d)
	}
	if h := a.RenewCheckIntervalHours; h != nil && (*h <= 0 || *h > maxACMERenewCheckIntervalHours) {
		fe.Failf("acme.renewCheckIntervalHours", "must be > 0 (and at most %d), got %v", maxACMERenewCheckIntervalHours, *h)
	}
	if err := checkACMEEmail(a.Email); err != nil {
		fe.Fail("acme.email", err)
	}
	if err := checkDirectoryURL(a.DirectoryURL); err != nil {
		fe.Fail("acme.directoryUrl", err)
	}
	if a.HTTPChallenge != nil && !*a.HTTPChallenge && a.TLSALPNChallenge != nil && !*a.TLSALPNChallenge {
		fe.Failf("acme.httpChallenge", "httpChallenge and tlsAlpnChallenge are both false: no challenge could be answered")
	}
}

// checkACMEEmail accepts "" or a bare address ("ops@example.com", not
// "Ops <ops@example.com>").
func checkACMEEmail(s string) error {
	if s == "" {
		return nil
	}
	addr, err := mail.ParseAddress(s)
	if err != nil || addr.Address != s {
		return fmt.Errorf("want an email address such as ops@example.com, got %q", s)
	}
	return nil
}

// checkDirectoryURL accepts "" or an absolute https URL: RFC 8555 6.1
// requires HTTPS, and an account key sent to a plain-HTTP directory could
// be taken over.
func checkDirectoryURL(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("want an https URL of an ACME directory: %w", err)
	case u.Scheme != "https" || u.Host == "":
		return fmt.Errorf("want an https URL of an ACME directory (such as https://acme-v02.api.letsencrypt.org/directory), got %q", s)
	}
	return nil
}

// checkRouteACME validates a route's action.tls.acme.
func (v *routeValidator) checkRouteACME(t *RouteTLS) {
	a := t.ACME
	if a == nil {
		return
	}
	if t.Certificate != nil && !t.Certificate.Auto {
		v.fail("action.tls.acme", errors.New(`applies to certificate "auto" (or none), not to a route with its own certificate`))
	}
	if a.ChallengePort < 0 || a.ChallengePort > 65535 {
		v.fail("action.tls.acme.challengePort", fmt.Errorf("must be a port, 1 to 65535, got %d", a.ChallengePort))
	}
	if a.RenewBeforeDays < 0 || a.RenewBeforeDays > maxACMEDays {
		v.fail("action.tls.acme.renewBeforeDays", fmt.Errorf("must be > 0 (and at most %d), got %d", maxACMEDays, a.RenewBeforeDays))
	}
	if err := checkACMEEmail(a.Email); err != nil {
		v.fail("action.tls.acme.email", err)
	}
	if err := checkDirectoryURL(a.DirectoryURL); err != nil {
		v.fail("action.tls.acme.directoryUrl", err)
	}
}
