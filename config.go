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
	ACME                          *ACMEOptions                  `json:"acme,omitempty"`

	// dir is the directory of the config file, which relative paths in it
	// are relative to; "" for a document parsed without a file.
	dir string
	// PROXY protocol (proxyproto_config.go): TS names, and our
	// proxyProtocol ("optional") and proxyHeaderTimeout (ms).
	AcceptProxyProtocol bool              `json:"acceptProxyProtocol,omitempty"`
	ProxyIPs            []string          `json:"proxyIPs,omitempty"`
	ProxyProtocol       ProxyProtocolMode `json:"proxyProtocol,omitempty"`
	ProxyHeaderTimeout  *Millis           `json:"proxyHeaderTimeout,omitempty"`
	SendProxyProtocol   bool              `json:"sendProxyProtocol,omitempty"`

	// Our extensions (configops.go): the admin API and access logs.
	Admin     *AdminConfig     `json:"admin,omitempty"`
	AccessLog *AccessLogConfig `json:"accessLog,omitempty"`

	// Our extensions (configdatapath.go): the data path.
	Engine       string `json:"engine,omitempty"`
	HTTPFastPath *bool  `json:"httpFastPath,omitempty"`
	ReusePort    bool   `json:"reusePort,omitempty"`

	// pos is where each value was in the YAML document, by JSON path.
	pos map[string]docPos
}

// Position returns the line and column (1-based) where the value at a
// JSON path such as "routes[2].match.ports[0]" starts in the YAML
// document the config was read from, or of the nearest enclosing value
// that has one (so that a mistake found later, by validation, can be
// located: RouteError's Field under "routes[N]."). It returns 0, 0 for
// a JSON document or a Config built in code.
func (c *Config) Position(path string) (line, col int) {
	for {
		if p, ok := c.pos[path]; ok {
			return p.line, p.col
		}
		cut := strings.LastIndexAny(path, ".[")
		if cut <= 0 {
			return 0, 0
		}
		path = path[:cut]
	}
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
	c.proxyProtocolOptions(&o)
	c.dataPathOptions(&o)
	if c.IdleParkAfter != nil {
		o.IdleParkAfter = c.IdleParkAfter.Duration()
		if o.IdleParkAfter == 0 {
			o.IdleParkAfter = -1 // the file says 0 for "never park"
		}
	}
	// New builds the ACME manager, with the proxy's logger (see
	// ACMEManagerConfig).
	o.acmeFile = c.acmeFile()
	o.AccessLog = c.AccessLog.options()
	return o
}

// LoadConfig reads a JSON (.json) or YAML (.yaml, .yml) config file; a
// file with another extension is an error (LoadConfigFormat reads it
// when the caller knows its format). The file must be a regular file of
// at most 16 MiB. Relative certFile, keyFile and caFile paths in it are
// resolved against the directory of the config file, not the working
// directory, so a config and its certificates can be moved together and
// the proxy started from anywhere; so is acme.certificateStore (default
// "./certs"). (Routes built in code, or parsed with
// ParseConfig, keep relative paths as written: they resolve against the
// working directory.) Mistakes in the document are returned as
// ConfigErrors, each naming the file.
func LoadConfig(path string) (*Config, error) {
	return LoadConfigFormat(path, "")
}

// LoadConfigFormat is LoadConfig for a file in the given format whatever
// its name; an empty format picks it by extension as LoadConfig does.
func LoadConfigFormat(path string, format ConfigFormat) (*Config, error) {
	data, err := readLimitedFile("config file", path, maxConfigFileBytes)
	if err != nil {
		return nil, err
	}
	if format == "" {
		if format, err = formatOfPath(path); err != nil {
			return nil, err
		}
	}
	cfg, err := ParseConfig(data, format)
	if err != nil {
		var ce ConfigErrors
		if errors.As(err, &ce) {
			for _, e := range ce {
				e.File = path
			}
			return nil, ce
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	cfg.resolvePaths(filepath.Dir(path))
	return cfg, nil
}

// resolvePaths makes the routes' relative file paths relative to dir,
// and records dir for acme.certificateStore (resolved with its default).
func (c *Config) resolvePaths(dir string) {
	c.dir = dir
	c.filePaths(func(_ string, p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	})
}

// RelativePaths lists the file paths in the config (certFile, keyFile,
// caFile) that are relative, each as "JSON path \"value\"". A config
// stored away from its directory (published to a fleet) must have none:
// every instance would read them from its own working directory.
func (c *Config) RelativePaths() []string {
	var rel []string
	c.filePaths(func(path string, p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			rel = append(rel, fmt.Sprintf("%s %q", path, *p))
		}
	})
	return rel
}

// filePaths calls visit for every file path field of the routes, with
// its JSON path: the one list of them, for resolvePaths and RelativePaths.
func (c *Config) filePaths(visit func(path string, p *string)) {
	for i := range c.Routes {
		t := c.Routes[i].Action.TLS
		if t == nil {
			continue
		}
		at := fmt.Sprintf("routes[%d].action.tls.", i)
		if cs := t.Certificate; cs != nil {
			visit(at+"certificate.certFile", &cs.CertFile)
			visit(at+"certificate.keyFile", &cs.KeyFile)
		}
		if b := t.Backend; b != nil {
			visit(at+"backend.caFile", &b.CAFile)
		}
	}
}

// ConfigFormat is the syntax of a config document.
type ConfigFormat string

// The config formats ParseConfig reads.
const (
	// FormatJSON is a JSON document (RFC 8259).
	FormatJSON ConfigFormat = "json"
	// FormatYAML is a YAML 1.2 document (anchors, aliases and "<<" merge
	// keys included); it is read into the same generic value as JSON and
	// checked the same way, keeping each value's line and column for the
	// errors.
	FormatYAML ConfigFormat = "yaml"
)

// formatOfPath is LoadConfig's choice of format: FormatJSON for .json,
// FormatYAML for .yaml and .yml (in any case). Any other name is an
// error rather than a guess: a YAML file read as JSON fails with a
// confusing syntax error, and one read as YAML may mean something else.
func formatOfPath(path string) (ConfigFormat, error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".json":
		return FormatJSON, nil
	case ".yaml", ".yml":
		return FormatYAML, nil
	}
	return "", fmt.Errorf("%s: cannot tell the config format from the file name: name it .json, .yaml or .yml, or give the format (smartproxy -format json|yaml)", path)
}

// ParseConfig parses a config document in the given format (FormatJSON
// or FormatYAML; anything else is an error). The data must hold exactly
// one document: trailing data or a second YAML document is an error
// rather than silently ignored. Every mistake in the document is
// reported, not only the first, as ConfigErrors: each names its JSON path
// (routes[2].action.targets[0].port, with the route's name after its
// index) and, in YAML, its line and column, and says what was wanted and
// what was given rather than naming Go types. Unknown fields are errors,
// with the nearest known name when one is close; fields the TS schema
// has but this library does not implement are refused saying why and
// what to use instead; two routes of the same name are refused. Numbers
// must fit the field they set (whole numbers for counts and
// milliseconds, no overflow of a duration), and limits must not be
// negative.
func ParseConfig(data []byte, format ConfigFormat) (*Config, error) {
	doc, d, err := decodeOne(data, format)
	if err != nil {
		return nil, err
	}
	top, ok := doc.(map[string]any)
	if !ok {
		return nil, ConfigErrors{{Line: d.pos[""].line, Column: d.pos[""].col, Err: errors.New("config must be an object with a \"routes\" list")}}
	}
	routes, ok := top["routes"].([]any)
	if !ok && top["routes"] != nil {
		d.failf("routes", "want a list, got %s (in YAML, each route starts with \"- \")", describe(top["routes"]))
		return nil, d.sorted()
	}
	if _, present := top["routes"]; !present {
		return nil, ConfigErrors{{Err: errors.New("config has no \"routes\" list (write \"routes: []\" for a proxy without routes)")}}
	}
	d.names = make(map[int]string, len(routes))
	first := make(map[string]int, len(routes))
	for i, raw := range routes {
		m, _ := raw.(map[string]any)
		name, ok := m["name"].(string)
		if !ok {
			continue
		}
		d.names[i] = name
		// Validation refuses a second route of the same name too; here
		// the message can name both places.
		if j, dup := first[name]; dup {
			d.failf(fmt.Sprintf("routes[%d].name", i), "duplicate name: routes[%d] is also %q (route names must be unique)", j, name)
		} else {
			first[name] = i
		}
	}
	var cfg Config
	d.value(top, reflect.ValueOf(&cfg).Elem(), "")
	for _, e := range cfg.checkLimits() {
		var fe *schema.FieldError
		if errors.As(e, &fe) {
			d.fail(fe.Field, fe.Err)
		} else {
			d.fail("", e)
		}
	}
	if len(d.errs) > 0 {
		return nil, d.sorted()
	}
	cfg.pos = d.pos
	return &cfg, nil
}

// decodeOne decodes the single document of data into a generic value,
// numbers as json.Number for JSON, and returns a decoder that knows the
// values' positions (for YAML).
func decodeOne(data []byte, format ConfigFormat) (any, *configDecoder, error) {
	d := &configDecoder{}
	switch format {
	case FormatJSON:
	case FormatYAML:
		dec := yaml.NewDecoder(bytes.NewReader(data))
		var root yaml.Node
		if err := dec.Decode(&root); err != nil && !errors.Is(err, io.EOF) {
			return nil, nil, fmt.Errorf("parsing YAML: %w", err)
		}
		// A second document would be ignored: the proxy would run a
		// config other than the one the file shows. Empty documents (a
		// trailing "---", as some generators write) hold nothing to lose.
		for {
			var extra yaml.Node
			err := dec.Decode(&extra)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, nil, fmt.Errorf("parsing YAML: %w", err)
			}
			if !emptyYAMLDocument(&extra) {
				return nil, nil, fmt.Errorf("parsing YAML: a second document starts at line %d; the file must hold one", extra.Line)
			}
		}
		y := &yamlReader{pos: map[string]docPos{}, keyPos: map[string]docPos{}}
		var doc any
		if root.Kind != 0 {
			doc = y.node(&root, "")
		}
		if y.expanded > maxAliasExpansion {
			return nil, nil, fmt.Errorf("parsing YAML: aliases expand to more than %d values", maxAliasExpansion)
		}
		if len(y.errs) > 0 {
			return nil, nil, ConfigErrors(y.errs)
		}
		d.pos, d.keyPos = y.pos, y.keyPos
		return doc, d, nil
	default:
		return nil, nil, fmt.Errorf("unknown config format %q (want %q or %q)", format, FormatJSON, FormatYAML)
	}
	var doc any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, nil, fmt.Errorf("parsing JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("parsing JSON: data after the end of the document at byte %d; the file must hold one JSON value", dec.InputOffset())
	}
	return doc, d, nil
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
	c.ACME.check(&fe)
	c.checkProxyProtocol(&fe)
	c.checkDataPath(&fe)
	return fe.Errors().Unwrap()
}
