package smartproxy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy/acme"
)

// autoRoute is a terminating route for domains whose certificate is
// "auto", as a config document.
const autoRouteJSON = `{"name": "site", "match": {"ports": 443, "domains": ["example.com"]},
  "action": {"type": "forward", "targets": [{"host": "127.0.0.1", "port": 8080}], "tls": {"mode": "terminate", "certificate": "auto"%s}}}`

func acmeDoc(acmeBlock, routeACME string) string {
	if routeACME != "" {
		routeACME = `, "acme": ` + routeACME
	}
	doc := `{"routes": [` + fmt.Sprintf(autoRouteJSON, routeACME) + `]`
	if acmeBlock != "" {
		doc += `, "acme": ` + acmeBlock
	}
	return doc + "}"
}

// TestConfigACMEFields: every field of the acme block lands in the
// manager's configuration, and the defaults are TS's.
func TestConfigACMEFields(t *testing.T) {
	t.Parallel()
	cfg, err := ParseConfig([]byte(acmeDoc(`{"email": "ops@example.com", "useProduction": true, "port": 8080,
	  "renewThresholdDays": 20, "renewCheckIntervalHours": 1.5, "certificateStore": "/var/lib/proxy/certs", "autoRenew": false,
	  "directoryUrl": "https://ca.example.com/dir", "tlsAlpnChallenge": false, "httpChallenge": true}`, "")), FormatJSON)
	require.NoError(t, err)
	mc, ok := cfg.ACMEManagerConfig()
	require.True(t, ok)
	require.Equal(t, acme.Settings{Email: "ops@example.com", UseProduction: true, HTTPPort: 8080, RenewBefore: 20 * 24 * time.Hour,
		DirectoryURL: "https://ca.example.com/dir", DisableTLSALPN: true}, mc.Settings)
	require.Equal(t, 90*time.Minute, mc.RenewCheckInterval)
	require.True(t, mc.DisableAutoRenew)
	require.Equal(t, "/var/lib/proxy/certs", mc.Storage.(*acme.FileStorage).Dir)

	cfg, err = ParseConfig([]byte(acmeDoc(`{"httpChallenge": false}`, "")), FormatJSON)
	require.NoError(t, err)
	mc, _ = cfg.ACMEManagerConfig()
	require.Equal(t, acme.Settings{HTTPPort: 80, RenewBefore: 30 * 24 * time.Hour, DisableHTTP01: true}, mc.Settings)
	require.Equal(t, 24*time.Hour, mc.RenewCheckInterval)
	require.False(t, mc.DisableAutoRenew)
	require.Equal(t, "./certs", mc.Storage.(*acme.FileStorage).Dir, "parsed without a file: relative to the working directory")

	// The route's block, every field.
	cfg, err = ParseConfig([]byte(acmeDoc(`{}`, `{"email": "site@example.com", "useProduction": false, "challengePort": 8081,
	  "renewBeforeDays": 7, "directoryUrl": "https://other.example.com/dir"}`)), FormatJSON)
	require.NoError(t, err)
	no := false
	require.Equal(t, &RouteACME{Email: "site@example.com", UseProduction: &no, ChallengePort: 8081, RenewBeforeDays: 7,
		DirectoryURL: "https://other.example.com/dir"}, cfg.Routes[0].Action.TLS.ACME)

	// YAML reads the same.
	cfg, err = ParseConfig([]byte("routes: []\nacme:\n  email: a@b.c\n  port: 8081\n"), FormatYAML)
	require.NoError(t, err)
	mc, ok = cfg.ACMEManagerConfig()
	require.True(t, ok, "an acme block builds a manager even without auto routes")
	require.Equal(t, 8081, mc.HTTPPort)
}

// TestConfigACMEImplicit: certificate "auto" without an acme block uses
// ACME with the defaults (Let's Encrypt staging), as TS does; the store
// is ./certs beside the config file. No auto route and no block: none.
func TestConfigACMEImplicit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "proxy.json")
	require.NoError(t, os.WriteFile(path, []byte(acmeDoc("", "")), 0o600))
	cfg, err := LoadConfig(path)
	require.NoError(t, err)
	mc, ok := cfg.ACMEManagerConfig()
	require.True(t, ok)
	require.Equal(t, acme.Settings{HTTPPort: 80, RenewBefore: 30 * 24 * time.Hour}, mc.Settings, "staging: no directory, not production")
	require.Equal(t, filepath.Join(dir, "certs"), mc.Storage.(*acme.FileStorage).Dir)
	require.NotNil(t, cfg.Options().acmeFile)
	require.True(t, cfg.Options().acmeFile.implicit)

	require.NoError(t, os.WriteFile(path, []byte(acmeDoc(`{"certificateStore": "store"}`, "")), 0o600))
	cfg, err = LoadConfig(path)
	require.NoError(t, err)
	mc, _ = cfg.ACMEManagerConfig()
	require.Equal(t, filepath.Join(dir, "store"), mc.Storage.(*acme.FileStorage).Dir)
	require.False(t, cfg.Options().acmeFile.implicit)

	cfg, err = ParseConfig([]byte(`{"routes": [{"name": "p", "match": {"ports": 443}, "action": {"type": "forward", "targets": [{"host": "h", "port": 1}], "tls": {"mode": "passthrough"}}}]}`), FormatJSON)
	require.NoError(t, err)
	_, ok = cfg.ACMEManagerConfig()
	require.False(t, ok)
	require.Nil(t, cfg.Options().acmeFile)
}

// TestConfigACMEErrors: each mistake in the acme blocks is reported with
// its JSON path, all at once.
func TestConfigACMEErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, block, route string
		want               []string
	}{
		{"ranges", `{"port": 0, "renewThresholdDays": 0, "renewCheckIntervalHours": 0}`, "", []string{
			"acme.port: must be a port, 1 to 65535, got 0",
			"acme.renewThresholdDays: must be > 0 (and at most 3650), got 0",
			"acme.renewCheckIntervalHours: must be > 0 (and at most 8760), got 0"}},
		{"negative", `{"port": 70000, "renewThresholdDays": -1, "renewCheckIntervalHours": -2}`, "", []string{
			"acme.port: must be a port, 1 to 65535, got 70000", "acme.renewThresholdDays: must be > 0", "acme.renewCheckIntervalHours: must be > 0"}},
		{"too long", `{"renewThresholdDays": 4000, "renewCheckIntervalHours": 1e9}`, "", []string{
			"acme.renewThresholdDays: must be > 0 (and at most 3650), got 4000", "acme.renewCheckIntervalHours: must be > 0 (and at most 8760)"}},
		{"email", `{"email": "Ops <ops@example.com>"}`, "", []string{`acme.email: want an email address such as ops@example.com, got "Ops <ops@example.com>"`}},
		{"directory", `{"directoryUrl": "http://ca.example.com/dir"}`, "", []string{`acme.directoryUrl: want an https URL of an ACME directory`}},
		{"no challenge", `{"httpChallenge": false, "tlsAlpnChallenge": false}`, "", []string{"acme.httpChallenge: httpChallenge and tlsAlpnChallenge are both false"}},
		{"types", `{"port": "80", "useProduction": "yes", "email": 1, "renewThresholdDays": 1.5}`, "", []string{
			`acme.port: want a whole number, got a string "80"`, `acme.useProduction: want true or false, got a string "yes"`,
			`acme.email: want a string, got the number 1`, `acme.renewThresholdDays: 1.5 is not a whole number`}},
		{"not an object", `true`, "", []string{"acme: want an object, got true"}},
		{"unknown", `{"renewThresholdDay": 3}`, "", []string{`acme: unknown field "renewThresholdDay" (did you mean "renewThresholdDays"?)`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(acmeDoc(tc.block, tc.route)), FormatJSON)
			require.Error(t, err)
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
			var ces ConfigErrors
			require.True(t, errors.As(err, &ces))
			require.Len(t, ces, len(tc.want), err.Error())
		})
	}
}

// TestRouteACMEErrors: a route's action.tls.acme is checked when the
// routes are (New, UpdateRoutes, -check), each mistake naming its field.
func TestRouteACMEErrors(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, route, want string }{
		{"ports", `{"challengePort": 70000, "renewBeforeDays": -1}`, `action.tls.acme.challengePort: must be a port, 1 to 65535, got 70000`},
		{"days", `{"renewBeforeDays": -1}`, `route "site": action.tls.acme.renewBeforeDays: must be > 0 (and at most 3650), got -1`},
		{"email", `{"email": "not an address"}`, `route "site": action.tls.acme.email: want an email address`},
		{"directory", `{"directoryUrl": "ftp://x"}`, `route "site": action.tls.acme.directoryUrl: want an https URL`},
		{"types", `{"challengePort": "80"}`, `routes[0] ("site").action.tls.acme.challengePort: want a whole number, got a string "80"`},
		{"unknown", `{"renewBeforeDay": 3}`, `routes[0] ("site").action.tls.acme: unknown field "renewBeforeDay" (did you mean "renewBeforeDays"?)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(acmeDoc(`{"certificateStore": "`+t.TempDir()+`"}`, tc.route)), FormatJSON)
			if err == nil {
				_, err = New(cfg.Options())
			}
			require.ErrorContains(t, err, tc.want)
		})
	}
	// acme on passthrough, and beside a certificate of the route's own.
	_, err := ParseConfig([]byte(`{"routes": [{"name": "p", "match": {"ports": 443}, "action": {"type": "forward", "targets": [{"host": "h", "port": 1}],
	  "tls": {"mode": "passthrough", "acme": {"email": "a@b.c"}}}}]}`), FormatJSON)
	require.NoError(t, err)
	r := NewRoute("p").Ports(443).ForwardTo("127.0.0.1:1").Route()
	r.Action.TLS = &RouteTLS{Mode: TLSPassthrough, ACME: &RouteACME{Email: "a@b.c"}}
	_, err = New(Options{Routes: []Route{r}})
	require.ErrorContains(t, err, `route "p": action.tls: certificate, versions, ciphers, backend and acme need a terminating mode, not passthrough`)
	r.Action.TLS = &RouteTLS{Mode: TLSTerminate, Certificate: &CertificateSpec{CertFile: "x", KeyFile: "y"}, ACME: &RouteACME{Email: "a@b.c"}}
	_, err = New(Options{Routes: []Route{r}, Certificates: NewCertStore()})
	require.ErrorContains(t, err, `route "p": action.tls.acme: applies to certificate "auto" (or none), not to a route with its own certificate`)
}
