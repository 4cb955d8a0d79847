package smartproxy

import (
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// within runs fn and fails the test if it has not returned after d: the
// mistakes tested here used to hang (a FIFO, /dev/zero), and a hang must
// fail the test, not stall the run.
func within(t *testing.T, d time.Duration, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("still running after %v", d)
	}
}

// sparse makes a file of size bytes without writing them.
func sparse(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "big.pem")
	f, err := os.Create(p)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(size))
	require.NoError(t, f.Close())
	return p
}

// TestFileSettingsRefuseEndlessAndHugeFiles: certFile, keyFile and caFile
// pointing at a device, a FIFO, a directory or a file over 1 MiB fail
// validation at once with an error naming the setting and the path,
// instead of reading forever (/dev/zero, a FIFO) or into memory.
func TestFileSettingsRefuseEndlessAndHugeFiles(t *testing.T) {
	t.Parallel()
	k := pki()
	good := k.route.fileSpec(t, t.TempDir())
	fifo := mkfifo(t)
	big := sparse(t, maxPEMFileBytes+1)
	dir := t.TempDir()
	cert := func(certFile, keyFile string) RouteTLS {
		return RouteTLS{Mode: TLSTerminate, Certificate: &CertificateSpec{CertFile: certFile, KeyFile: keyFile}}
	}
	ca := func(file string) RouteTLS {
		return RouteTLS{Mode: TLSTerminateAndReencrypt, Backend: &BackendTLS{CAFile: file}}
	}
	tests := []struct {
		name string
		tls  RouteTLS
		want string
	}{
		{"certFile /dev/zero", cert("/dev/zero", good.KeyFile), `action.tls.certificate: certFile "/dev/zero": not a regular file (a character device)`},
		{"keyFile /dev/zero", cert(good.CertFile, "/dev/zero"), `action.tls.certificate: keyFile "/dev/zero": not a regular file`},
		{"caFile /dev/zero", ca("/dev/zero"), `action.tls.backend: caFile "/dev/zero": not a regular file`},
		{"certFile FIFO", cert(fifo, good.KeyFile), `certFile "` + fifo + `": not a regular file (a named pipe)`},
		{"caFile FIFO", ca(fifo), `caFile "` + fifo + `": not a regular file (a named pipe)`},
		{"keyFile directory", cert(good.CertFile, dir), `keyFile "` + dir + `": not a regular file (a directory)`},
		{"certFile over 1 MiB", cert(big, good.KeyFile), `certFile "` + big + `": 1048577 bytes, larger than 1 MiB`},
		{"caFile over 1 MiB", ca(big), `caFile "` + big + `": 1048577 bytes, larger than 1 MiB`},
		{"files fine", cert(good.CertFile, good.KeyFile), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if strings.Contains(tc.name, "/dev/zero") {
				if _, err := os.Stat("/dev/zero"); err != nil {
					t.Skip("no /dev/zero")
				}
			}
			r := NewRoute("r").Ports(443).ForwardTo("127.0.0.1:1").Route()
			r.Action.TLS = &tc.tls
			var err error
			within(t, 5*time.Second, func() { _, err = compileRoutes([]Route{r}, Defaults{}) })
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestReadLimitedFileAtTheLimit: exactly the limit is fine, one byte more
// is not, whatever the size the file claims; a missing file keeps its
// cause for errors.Is.
func TestReadLimitedFileAtTheLimit(t *testing.T) {
	t.Parallel()
	p := sparse(t, 1000)
	b, err := readLimitedFile("certFile", p, 1000)
	require.NoError(t, err)
	require.Len(t, b, 1000)
	_, err = readLimitedFile("certFile", p, 999)
	require.ErrorContains(t, err, "larger than 999 bytes")
	_, err = readLimitedFile("keyFile", filepath.Join(t.TempDir(), "missing"), 1000)
	require.True(t, errors.Is(err, fs.ErrNotExist), "%v", err)
	require.ErrorContains(t, err, `keyFile "`)
}

// TestLoadConfigRefusesEndlessAndHugeFiles: the config file itself must
// be a regular file of at most 16 MiB.
func TestLoadConfigRefusesEndlessAndHugeFiles(t *testing.T) {
	t.Parallel()
	fifo := mkfifo(t)
	big := sparse(t, maxConfigFileBytes+1)
	var errFifo, errBig, errZero error
	within(t, 5*time.Second, func() {
		_, errFifo = LoadConfig(fifo)
		_, errBig = LoadConfig(big)
		if _, err := os.Stat("/dev/zero"); err == nil {
			_, errZero = LoadConfig("/dev/zero")
		} else {
			errZero = errors.New("config file \"/dev/zero\": not a regular file (skipped)")
		}
	})
	require.ErrorContains(t, errFifo, `config file "`+fifo+`": not a regular file (a named pipe)`)
	require.ErrorContains(t, errBig, `larger than 16 MiB`)
	require.ErrorContains(t, errZero, `config file "/dev/zero": not a regular file`)
}

// TestLoadConfigResolvesFilesAgainstItsDirectory: relative certFile,
// keyFile and caFile in a config file name files next to the config, not
// in the working directory; absolute paths are kept; ParseConfig (no
// file, so no directory) keeps them as written.
func TestLoadConfigResolvesFilesAgainstItsDirectory(t *testing.T) {
	// Not parallel: t.Chdir changes the process's working directory.
	k := pki()
	confDir := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(confDir, "certs"), 0o700))
	k.route.fileSpec(t, filepath.Join(confDir, "certs"))
	require.NoError(t, os.WriteFile(filepath.Join(confDir, "certs", "ca.pem"), []byte(k.ca.pem), 0o600))
	abs := k.route.fileSpec(t, t.TempDir())
	doc := `{"routes":[
	  {"name":"rel","match":{"ports":443},"action":{"type":"forward","targets":[{"host":"127.0.0.1","port":1}],
	   "tls":{"mode":"terminate-and-reencrypt","certificate":{"certFile":"certs/cert.pem","keyFile":"./certs/key.pem"},
	          "backend":{"caFile":"certs/ca.pem"}}}},
	  {"name":"abs","match":{"ports":444},"action":{"type":"forward","targets":[{"host":"127.0.0.1","port":1}],
	   "tls":{"mode":"terminate","certificate":{"certFile":"` + abs.CertFile + `","keyFile":"` + abs.KeyFile + `"}}}}]}`
	path := filepath.Join(confDir, "proxy.json")
	require.NoError(t, os.WriteFile(path, []byte(doc), 0o600))

	t.Chdir(t.TempDir()) // anywhere but the config's directory
	cfg, err := LoadConfig(path)
	require.NoError(t, err)
	rel := cfg.Routes[0].Action.TLS
	require.Equal(t, filepath.Join(confDir, "certs", "cert.pem"), rel.Certificate.CertFile)
	require.Equal(t, filepath.Join(confDir, "certs", "key.pem"), rel.Certificate.KeyFile)
	require.Equal(t, filepath.Join(confDir, "certs", "ca.pem"), rel.Backend.CAFile)
	require.Equal(t, abs.CertFile, cfg.Routes[1].Action.TLS.Certificate.CertFile)
	_, err = compileRoutes(cfg.Routes, Defaults{})
	require.NoError(t, err, "the files next to the config load from another working directory")

	// A relative config path works too: its directory is relative to the
	// working directory, like the path itself.
	t.Chdir(filepath.Dir(confDir))
	cfg, err = LoadConfig(filepath.Join(filepath.Base(confDir), "proxy.json"))
	require.NoError(t, err)
	_, err = compileRoutes(cfg.Routes, Defaults{})
	require.NoError(t, err)

	parsed, err := ParseConfig([]byte(doc), FormatJSON)
	require.NoError(t, err)
	require.Equal(t, "certs/cert.pem", parsed.Routes[0].Action.TLS.Certificate.CertFile, "ParseConfig has no directory to resolve against")
}

// TestParseConfigNumbers: every number must fit the Go type of its field,
// with an error naming the JSON path; whole numbers may be written in any
// JSON form.
func TestParseConfigNumbers(t *testing.T) {
	t.Parallel()
	route := func(extra string) string {
		return `{"routes":[{"name":"a","match":{"ports":80},"action":{"type":"forward","targets":[{"host":"h","port":1}]` + extra + `}}]}`
	}
	tests := []struct{ name, doc, want string }{
		{"duration overflows to negative", `{"routes":[],"inactivityTimeout":1e13}`, `inactivityTimeout: 1e13 ms overflows a duration (max 9223372036854 ms ≈ 292 years)`},
		{"duration overflows to zero", `{"routes":[],"inactivityTimeout":1e300}`, `inactivityTimeout: 1e300 ms overflows a duration`},
		{"duration beyond float64", `{"routes":[],"socketTimeout":1e999}`, `socketTimeout: 1e999 ms overflows a duration`},
		{"fractional ms", `{"routes":[],"connectionTimeout":1.5}`, `connectionTimeout: 1.5 ms is not a whole number of milliseconds`},
		{"negative ms", `{"routes":[],"halfCloseTimeout":-1}`, `halfCloseTimeout: duration must not be negative, got -1`},
		{"fractional int", `{"routes":[],"maxConnections":1.5}`, `maxConnections: 1.5 is not a whole number`},
		{"int too big", `{"routes":[],"maxConnectionsPerIP":1e19}`, `maxConnectionsPerIP: 1e19 is out of range`},
		{"int far too big", `{"routes":[],"maxConnectionsPerIP":99999999999999999999}`, `maxConnectionsPerIP: 99999999999999999999 is out of range`},
		{"float overflow", `{"routes":[],"keepAliveInactivityMultiplier":1e999}`, `keepAliveInactivityMultiplier: 1e999 is out of range`},
		{"nested defaults", `{"routes":[],"defaults":{"security":{"maxConnections":2.5}}}`, `defaults.security.maxConnections: 2.5 is not a whole number`},
		{"route port", `{"routes":[{"name":"a","match":{"ports":[80,{"from":8000.5,"to":8001}]},"action":{"type":"forward"}}]}`, `routes[0] ("a").match.ports[1].from: 8000.5 is not a whole number`},
		{"valid route", route(`,"loadBalancing":{"healthCheck":{"interval":5000}}`), ""},
		{"health interval", route(`,"loadBalancing":{"healthCheck":{"interval":1e13}}`), `routes[0] ("a").action.loadBalancing.healthCheck.interval: 1e13 ms overflows a duration`},
		{"target port huge", `{"routes":[{"name":"a","match":{"ports":80},"action":{"type":"forward","targets":[{"host":"h","port":1e300}]}}]}`, `routes[0] ("a").action.targets[0].port: 1e300 is out of range`},
		{"rate limit window", `{"routes":[{"name":"a","match":{"ports":80},"action":{"type":"forward"},"security":{"rateLimit":{"maxRequests":10,"window":0.5}}}]}`, `routes[0] ("a").security.rateLimit.window: 0.5 is not a whole number`},
		{"whole numbers in any form", `{"routes":[],"maxConnections":1e3,"inactivityTimeout":6e4,"maxConnectionsPerIP":20.0}`, ""},
		{"largest duration", `{"routes":[],"maxConnectionLifetime":9223372036854}`, ""},
		{"negative limit", `{"routes":[],"maxConnections":-1}`, `maxConnections: must not be negative, got -1 (0 means unlimited)`},
		{"negative per-IP", `{"routes":[],"maxConnectionsPerIP":-5}`, `maxConnectionsPerIP: must not be negative`},
		{"negative rate", `{"routes":[],"connectionRateLimitPerMinute":-1}`, `connectionRateLimitPerMinute: must not be negative`},
		{"prefix", `{"routes":[],"ipv6PrefixLen":129}`, `ipv6PrefixLen: must be 1 to 128`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.doc), FormatJSON)
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.want)
		})
	}

	c, err := ParseConfig([]byte(`{"routes":[],"maxConnections":1e3,"inactivityTimeout":6e4,"maxConnectionLifetime":9223372036854}`), FormatJSON)
	require.NoError(t, err)
	o := c.Options()
	require.Equal(t, 1000, o.MaxConnections)
	require.Equal(t, time.Minute, o.InactivityTimeout)
	require.Greater(t, o.MaxConnectionLifetime, 290*365*24*time.Hour, "the largest duration does not wrap")
}

// TestParseConfigNumbersYAML: YAML numbers get the same checks, including
// YAML's own infinities.
func TestParseConfigNumbersYAML(t *testing.T) {
	t.Parallel()
	for doc, want := range map[string]string{
		"routes: []\ninactivityTimeout: 1e13\n":               `inactivityTimeout: 1e+13 ms overflows a duration`,
		"routes: []\ninactivityTimeout: .inf\n":               `inactivityTimeout: +Inf ms overflows a duration`,
		"routes: []\nmaxConnections: 2.5\n":                   `maxConnections: 2.5 is not a whole number`,
		"routes: []\nmaxConnections: 100000000000000000000\n": `maxConnections: 1e+20 is out of range`,
		"routes: []\nmaxConnections: -1\n":                    `maxConnections: must not be negative`,
		"routes: []\nmaxConnections: 1e3\n":                   ``,
	} {
		_, err := ParseConfig([]byte(doc), FormatYAML)
		if want == "" {
			require.NoError(t, err, doc)
			continue
		}
		require.ErrorContains(t, err, want, doc)
	}
}

// TestParseConfigReportsEveryMistake: mistakes in several places are all
// reported, not only the first.
func TestParseConfigReportsEveryMistake(t *testing.T) {
	t.Parallel()
	doc := `{"routes":[
	  {"name":"a","match":{"ports":80.5},"action":{"type":"forward"}},
	  {"name":"b","match":{"ports":80},"action":{"type":"forward"},"colour":1},
	  {"name":"c","match":{"ports":80},"action":{"type":"forward","targets":[{"host":"h","port":2.5}]}}],
	 "inactivityTimeout":1e13,"maxConnections":-1}`
	_, err := ParseConfig([]byte(doc), FormatJSON)
	require.Error(t, err)
	for _, want := range []string{
		`inactivityTimeout: 1e13 ms overflows`,
		`routes[0] ("a").match.ports: 80.5 is not a whole number`,
		`routes[1] ("b"): unknown field "colour"`,
		`routes[2] ("c").action.targets[0].port: 2.5 is not a whole number`,
	} {
		require.ErrorContains(t, err, want)
	}
	// Top-level limits are checked once the top level decodes.
	_, err = ParseConfig([]byte(`{"routes":[],"maxConnections":-1,"connectionRateLimitPerMinute":-2}`), FormatJSON)
	require.ErrorContains(t, err, "maxConnections: must not be negative")
	require.ErrorContains(t, err, "connectionRateLimitPerMinute: must not be negative")
}

// TestParseConfigOneDocument: trailing data after the JSON value, or a
// second YAML document, is refused rather than ignored.
func TestParseConfigOneDocument(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		doc    string
		format ConfigFormat
		want   string
	}{
		{`{"routes":[]} {"routes":[{"name":"x"}]}`, FormatJSON, "parsing JSON: data after the end of the document"},
		{`{"routes":[]}]`, FormatJSON, "parsing JSON: data after the end of the document"},
		{`{"routes":[]} x`, FormatJSON, "parsing JSON"},
		{"{\"routes\":[]}\n\t \n", FormatJSON, ""},
		{"routes: []\n---\nroutes:\n  - name: x\n", FormatYAML, "parsing YAML: a second document starts at line 2"},
		{"---\nroutes: []\n...\n", FormatYAML, ""},
		{"routes: []\n---\n", FormatYAML, ""},
		{"routes: []\n---\n# nothing\n---\n", FormatYAML, ""},
		{"routes: []\n---\n---\nmaxConnections: 5\n", FormatYAML, "parsing YAML: a second document starts at line 3"},
		{"routes: []\n", FormatYAML, ""},
	} {
		_, err := ParseConfig([]byte(tc.doc), tc.format)
		if tc.want == "" {
			require.NoError(t, err, tc.doc)
			continue
		}
		require.ErrorContains(t, err, tc.want, tc.doc)
	}
}

// TestTargetHostSyntax: a target host is an IP address or a DNS name;
// control characters, ports, brackets and junk are route errors naming
// the host's field path.
func TestTargetHostSyntax(t *testing.T) {
	t.Parallel()
	for host, want := range map[string]string{
		"\x00":                               `action.targets[0].host[0]: invalid host "\x00": contains the control character U+0000`,
		"127.0.0.1:80":                       `invalid host "127.0.0.1:80": a host must not carry a port: put "127.0.0.1" in host and 80 in port`,
		"backend:8080":                       `a host must not carry a port`,
		"[::1]":                              `write the IPv6 address without brackets ("::1")`,
		"[::1]:80":                           `a host must not carry a port: put "::1" in host and 80 in port`,
		"a b":                                `contains a space`,
		"exa\tmple":                          `control character U+0009`,
		"-bad.example":                       `label "-bad" starts or ends with '-'`,
		"a..b":                               `empty label`,
		"x/y":                                `character '/' is not allowed in a host name`,
		"1.2.3.256":                          `not a valid IP address`,
		"bücher.example":                     `non-ASCII character 'ü'`,
		strings.Repeat("a", 64) + ".example": `longer than 63 characters`,
		"127.0.0.1":                          ``,
		"::1":                                ``,
		"fe80::1%eth0":                       ``,
		"backend":                            ``,
		"my_service.local.":                  ``,
		"xn--bcher-kva.example":              ``,
	} {
		r := NewRoute("h").Ports(80).Target(Target{Host: StringList{host}, Port: 80}).Route()
		_, err := compileRoutes([]Route{r}, Defaults{})
		if want == "" {
			require.NoError(t, err, "%q", host)
			continue
		}
		require.ErrorContains(t, err, want, "%q", host)
		var re *RouteError
		require.True(t, errors.As(err, &re))
		require.Equal(t, "action.targets[0].host[0]", re.Field)
	}
	// From a config file, with the route's name.
	c, err := ParseConfig([]byte(`{"routes":[{"name":"n","match":{"ports":80},"action":{"type":"forward","targets":[{"host":"\u0000","port":80}]}}]}`), FormatJSON)
	require.NoError(t, err)
	_, err = New(Options{Routes: c.Routes, Logger: testLogger()})
	require.ErrorContains(t, err, `route "n": action.targets[0].host[0]: invalid host "\x00"`)
}

// TestDomainSyntax: match.domains entries are names or globs; control
// characters and characters no server name has are refused.
func TestDomainSyntax(t *testing.T) {
	t.Parallel()
	for d, want := range map[string]string{
		"a\x00.example":  `match.domains[0]: invalid domain "a\x00.example": contains the control character U+0000`,
		"a b.example":    `contains a space`,
		"a/b":            `character '/' cannot appear in a server name`,
		"bücher.example": `xn-- form`,
		"*.example.com":  ``,
		"api.{a,b}.test": ``,
		"example.*":      ``,
		"*":              ``,
	} {
		r := fwd("d").Ports(443).Domains(d).Route()
		_, err := compileRoutes([]Route{r}, Defaults{})
		if want == "" {
			require.NoError(t, err, "%q", d)
			continue
		}
		require.ErrorContains(t, err, want, "%q", d)
	}
}

// TestMethodsMatchCaseSensitively pins the documented method rule: a
// config's method names are upper-cased when compiled (so "get" in a file
// means GET, as it did before), and requests are then matched exactly: a
// request line "get /" is another method (RFC 9110 §9.1), as for HAProxy
// and nginx, and does not take a GET-only route.
func TestMethodsMatchCaseSensitively(t *testing.T) {
	t.Parallel()
	r := fwd("m").Ports(80).Route()
	r.Match.Method = []string{"get", "HEAD"}
	out, err := compileRoutes([]Route{r}, Defaults{})
	require.NoError(t, err)
	h := out[0].state.http
	require.NotNil(t, h)
	for method, want := range map[string]bool{"GET": true, "HEAD": true, "get": false, "Get": false, "POST": false} {
		req := &http.Request{Method: method, URL: &url.URL{Path: "/"}, Header: http.Header{}}
		require.Equal(t, want, h.matchRequest(req), method)
	}
}

// TestMillisUnmarshalJSON: decoding Millis directly (a Route decoded with
// encoding/json) applies the same rules as the config loader.
func TestMillisUnmarshalJSON(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		`1500`:          "",
		`1e3`:           "",
		`"1500"`:        "want milliseconds as a number",
		`1e13`:          "1e13 ms overflows a duration",
		`1.5`:           "not a whole number",
		`-1`:            "must not be negative",
		`9223372036854`: "",
	} {
		var m Millis
		err := json.Unmarshal([]byte(in), &m)
		if want == "" {
			require.NoError(t, err, in)
			require.Positive(t, m.Duration(), in)
			continue
		}
		require.ErrorContains(t, err, want, in)
	}
}
