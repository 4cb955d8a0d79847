package smartproxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/gosmartproxy/smartproxy/schema"
	"go.yaml.in/yaml/v3"
)

// Config is the configuration file schema: the TypeScript SmartProxy's
// ISmartProxyOptions names, with durations in milliseconds. LoadConfig
// and ParseConfig read it; Options converts it.
type Config struct {
	Routes                        []Route                       `json:"routes"`
	Defaults                      *Defaults                     `json:"defaults,omitempty"`
	ListenAddress                 string                        `json:"listenAddress,omitempty"`
	InitialDataTimeout            *Millis                       `json:"initialDataTimeout,omitempty"`
	SocketTimeout                 *Millis                       `json:"socketTimeout,omitempty"`
	InactivityTimeout             *Millis                       `json:"inactivityTimeout,omitempty"`
	MaxConnectionLifetime         *Millis                       `json:"maxConnectionLifetime,omitempty"`
	GracefulShutdownTimeout       *Millis                       `json:"gracefulShutdownTimeout,omitempty"`
	ConnectionTimeout             *Millis                       `json:"connectionTimeout,omitempty"`
	HalfCloseTimeout              *Millis                       `json:"halfCloseTimeout,omitempty"`
	IdleParkAfter                 *Millis                       `json:"idleParkAfter,omitempty"`
	IPv6PrefixLen                 int                           `json:"ipv6PrefixLen,omitempty"`
	KeepAliveTreatment            connection.KeepAliveTreatment `json:"keepAliveTreatment,omitempty"`
	KeepAliveInactivityMultiplier float64                       `json:"keepAliveInactivityMultiplier,omitempty"`
	MaxConnections                int                           `json:"maxConnections,omitempty"`
	MaxConnectionsPerIP           int                           `json:"maxConnectionsPerIP,omitempty"`
	ConnectionRateLimitPerMinute  int                           `json:"connectionRateLimitPerMinute,omitempty"`
	MaxClientHelloBytes           int                           `json:"maxClientHelloBytes,omitempty"`
	NoDelay                       *bool                         `json:"noDelay,omitempty"`
	KeepAlive                     *bool                         `json:"keepAlive,omitempty"`
	KeepAliveInitialDelay         *Millis                       `json:"keepAliveInitialDelay,omitempty"`
	EnableDetailedLogging         bool                          `json:"enableDetailedLogging,omitempty"`
	WriteTimeout                  *Millis                       `json:"writeTimeout,omitempty"`
}

// Millis is a duration written in milliseconds, as the TS library does
// for most durations; [Seconds] is its counterpart for the few given in
// seconds.
type Millis int64

// Seconds is [schema.Seconds]: a duration written in whole seconds (the
// HTTP rate limit's window, the JWT leeway).
type Seconds = schema.Seconds

// Duration converts to a time.Duration.
func (m Millis) Duration() time.Duration { return time.Duration(m) * time.Millisecond }

// UnmarshalJSON accepts a whole, non-negative number of milliseconds
// that a time.Duration can hold (up to about 292 years): a larger value
// would wrap around into a negative or zero duration, which means "no
// timeout" or "the default" rather than what was written.
func (m *Millis) UnmarshalJSON(data []byte) error {
	var n json.Number // decodes "123" too: refused below, as before
	if err := json.Unmarshal(data, &n); err != nil || bytes.HasPrefix(bytes.TrimSpace(data), []byte(`"`)) {
		return fmt.Errorf("want milliseconds as a number, got %s", data)
	}
	v, err := parseMillis(string(n))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// Options converts the file's settings to Options.
func (c *Config) Options() Options {
	o := Options{
		Routes:                        c.Routes,
		ListenAddress:                 c.ListenAddress,
		KeepAliveTreatment:            c.KeepAliveTreatment,
		KeepAliveInactivityMultiplier: c.KeepAliveInactivityMultiplier,
		MaxConnections:                c.MaxConnections,
		IPv6PrefixLen:                 c.IPv6PrefixLen,
		MaxConnectionsPerIP:           c.MaxConnectionsPerIP,
		ConnectionRateLimitPerMinute:  c.ConnectionRateLimitPerMinute,
		MaxClientHelloBytes:           c.MaxClientHelloBytes,
		NoDelay:                       c.NoDelay,
		KeepAlive:                     c.KeepAlive,
		EnableDetailedLogging:         c.EnableDetailedLogging,
	}
	if c.Defaults != nil {
		o.Defaults = *c.Defaults
	}
	for _, d := range []struct {
		from *Millis
		to   *time.Duration
	}{
		{c.InitialDataTimeout, &o.InitialDataTimeout},
		{c.SocketTimeout, &o.SocketTimeout},
		{c.InactivityTimeout, &o.InactivityTimeout},
		{c.MaxConnectionLifetime, &o.MaxConnectionLifetime},
		{c.GracefulShutdownTimeout, &o.GracefulShutdownTimeout},
		{c.ConnectionTimeout, &o.ConnectTimeout},
		{c.HalfCloseTimeout, &o.HalfCloseTimeout},
		{c.KeepAliveInitialDelay, &o.KeepAliveInitialDelay},
		{c.WriteTimeout, &o.WriteTimeout},
	} {
		if d.from != nil {
			*d.to = d.from.Duration()
		}
	}
	if c.IdleParkAfter != nil {
		o.IdleParkAfter = c.IdleParkAfter.Duration()
		if o.IdleParkAfter == 0 {
			o.IdleParkAfter = -1 // the file says 0 for "never park"
		}
	}
	return o
}

// LoadConfig reads a JSON (.json) or YAML (.yaml, .yml) config file. The
// file must be a regular file of at most 16 MiB. Relative certFile,
// keyFile and caFile paths in it are resolved against the directory of
// the config file, not the working directory, so a config and its
// certificates can be moved together and the proxy started from
// anywhere. (Routes built in code, or parsed with ParseConfig, keep
// relative paths as written: they resolve against the working directory.)
func LoadConfig(path string) (*Config, error) {
	data, err := readLimitedFile("config file", path, maxConfigFileBytes)
	if err != nil {
		return nil, err
	}
	cfg, err := ParseConfig(data, formatOfPath(path))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	cfg.resolvePaths(filepath.Dir(path))
	return cfg, nil
}

// resolvePaths makes the routes' relative file paths relative to dir.
func (c *Config) resolvePaths(dir string) {
	resolve := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	for i := range c.Routes {
		t := c.Routes[i].Action.TLS
		if t == nil {
			continue
		}
		if cs := t.Certificate; cs != nil {
			resolve(&cs.CertFile)
			resolve(&cs.KeyFile)
		}
		if b := t.Backend; b != nil {
			resolve(&b.CAFile)
		}
	}
}

// ConfigFormat is the syntax of a config document.
type ConfigFormat string

// The config formats ParseConfig reads.
const (
	// FormatJSON is a JSON document (RFC 8259).
	FormatJSON ConfigFormat = "json"
	// FormatYAML is a YAML 1.2 document; it is read into the same generic
	// value as JSON and checked the same way.
	FormatYAML ConfigFormat = "yaml"
)

// formatOfPath is LoadConfig's choice of format: YAML for .yaml and .yml,
// JSON for anything else.
func formatOfPath(path string) ConfigFormat {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".yaml", ".yml":
		return FormatYAML
	}
	return FormatJSON
}

// ParseConfig parses a config document in the given format (FormatJSON
// or FormatYAML; anything else is an error). Unknown fields are errors that name the field; fields the TS
// schema has but this library does not implement are refused with a
// message saying so, rather than silently ignored. The data must hold
// exactly one document: trailing data or a second YAML document is an
// error rather than silently ignored. Numbers must fit the field they set
// (whole numbers for counts and milliseconds, no overflow of a duration),
// and limits must not be negative; every such mistake is reported, each
// with its JSON path.
func ParseConfig(data []byte, format ConfigFormat) (*Config, error) {
	doc, err := decodeOne(data, format)
	if err != nil {
		return nil, err
	}
	top, ok := doc.(map[string]any)
	if !ok {
		return nil, errors.New("config must be an object with a \"routes\" list")
	}
	if err := checkUnsupported(top); err != nil {
		return nil, err
	}
	routes, ok := top["routes"].([]any)
	if !ok && top["routes"] != nil {
		return nil, fmt.Errorf("routes must be a list, got %T (in YAML, each route starts with \"- \")", top["routes"])
	}
	if _, present := top["routes"]; !present {
		return nil, errors.New("config has no \"routes\" list (write \"routes: []\" for a proxy without routes)")
	}
	delete(top, "routes")
	var errs []error
	var cfg Config
	// Each part is decoded only when its numbers are sound: the decoder's
	// own error for the same value would repeat the mistake less clearly.
	nc := &numberChecker{}
	nc.check(top, reflect.TypeFor[Config](), "")
	if nc.Errors() != nil {
		errs = append(errs, nc.Errors().Unwrap()...)
	} else if err := strictDecode(top, &cfg); err != nil {
		errs = append(errs, err)
	} else {
		errs = append(errs, cfg.checkLimits()...)
	}
	for i, raw := range routes {
		at := fmt.Sprintf("routes[%d]%s", i, nameOf(raw))
		nc := &numberChecker{}
		raw = nc.check(raw, reflect.TypeFor[Route](), at)
		if nc.Errors() != nil {
			errs = append(errs, nc.Errors().Unwrap()...)
			continue
		}
		var r Route
		if err := strictDecode(raw, &r); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", at, err))
			continue
		}
		cfg.Routes = append(cfg.Routes, r)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &cfg, nil
}

// decodeOne decodes the single document of data into a generic value,
// numbers as json.Number for JSON.
func decodeOne(data []byte, format ConfigFormat) (any, error) {
	var doc any
	switch format {
	case FormatJSON:
	case FormatYAML:
		dec := yaml.NewDecoder(bytes.NewReader(data))
		if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("parsing YAML: %w", err)
		}
		// A second document would be ignored: the proxy would run a
		// config other than the one the file shows. Empty documents (a
		// trailing "---", as some generators write) hold nothing to lose.
		for {
			var extra yaml.Node
			err := dec.Decode(&extra)
			if errors.Is(err, io.EOF) {
				return doc, nil
			}
			if err != nil {
				return nil, fmt.Errorf("parsing YAML: %w", err)
			}
			if !emptyYAMLDocument(&extra) {
				return nil, fmt.Errorf("parsing YAML: a second document starts at line %d; the file must hold one", extra.Line)
			}
		}
	default:
		return nil, fmt.Errorf("unknown config format %q (want %q or %q)", format, FormatJSON, FormatYAML)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("parsing JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parsing JSON: data after the end of the document at byte %d; the file must hold one JSON value", dec.InputOffset())
	}
	return doc, nil
}

// emptyYAMLDocument reports whether n is a document with no content or
// only a null.
func emptyYAMLDocument(n *yaml.Node) bool {
	if len(n.Content) == 0 {
		return true
	}
	c := n.Content[0]
	return len(n.Content) == 1 && c.Kind == yaml.ScalarNode && c.Tag == "!!null"
}

// checkLimits refuses negative limits: in Options a negative per-IP limit
// means "unlimited", but a config file that says -1 more likely holds a
// mistake, and the TS schema has no such meaning.
func (c *Config) checkLimits() []error {
	var fe schema.Collector
	for _, l := range []struct {
		key  string
		v    int
		zero string
	}{
		{"maxConnections", c.MaxConnections, "unlimited"},
		{"maxConnectionsPerIP", c.MaxConnectionsPerIP, "the default, 100"},
		{"connectionRateLimitPerMinute", c.ConnectionRateLimitPerMinute, "the default, 300"},
		{"maxClientHelloBytes", c.MaxClientHelloBytes, "the default, 64 KiB"},
	} {
		if l.v < 0 {
			fe.Failf(l.key, "must not be negative, got %d (0 means %s)", l.v, l.zero)
		}
	}
	if c.IPv6PrefixLen < 0 || c.IPv6PrefixLen > 128 {
		fe.Failf("ipv6PrefixLen", "must be 1 to 128 (0 means 64), got %d", c.IPv6PrefixLen)
	}
	if m := c.KeepAliveInactivityMultiplier; m < 0 {
		fe.Failf("keepAliveInactivityMultiplier", "must not be negative, got %v", m)
	}
	return fe.Errors().Unwrap()
}

// strictDecode re-encodes a generic document and decodes it into v,
// refusing unknown fields.
func strictDecode(doc any, v any) error {
	raw, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func nameOf(route any) string {
	if m, ok := route.(map[string]any); ok {
		if n, ok := m["name"].(string); ok {
			return fmt.Sprintf(" (%q)", n)
		}
	}
	return ""
}
