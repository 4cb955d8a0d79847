package smartproxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gosmartproxy/smartproxy/connection"
	"gopkg.in/yaml.v3"
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
}

// Millis is a duration written in milliseconds, as the TS library does.
type Millis int64

// Duration converts to a time.Duration.
func (m Millis) Duration() time.Duration { return time.Duration(m) * time.Millisecond }

// UnmarshalJSON accepts a non-negative number of milliseconds.
func (m *Millis) UnmarshalJSON(data []byte) error {
	var f float64
	if err := json.Unmarshal(data, &f); err != nil {
		return fmt.Errorf("want milliseconds as a number, got %s", data)
	}
	if f < 0 {
		return fmt.Errorf("duration must not be negative, got %s", data)
	}
	*m = Millis(f)
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

// LoadConfig reads a JSON (.json) or YAML (.yaml, .yml) config file.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	yamlFile := false
	switch strings.ToLower(filepath.Ext(path)) {
	case ".yaml", ".yml":
		yamlFile = true
	}
	cfg, err := ParseConfig(data, yamlFile)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig parses a config document, YAML when isYAML is set, JSON
// otherwise. Unknown fields are errors that name the field; fields the TS
// schema has but this version does not implement yet are refused with a
// message saying so, rather than silently ignored.
func ParseConfig(data []byte, isYAML bool) (*Config, error) {
	var doc any
	if isYAML {
		if err := yaml.Unmarshal(data, &doc); err != nil {
			return nil, fmt.Errorf("parsing YAML: %w", err)
		}
	} else {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		if err := dec.Decode(&doc); err != nil {
			return nil, fmt.Errorf("parsing JSON: %w", err)
		}
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
	var cfg Config
	if err := strictDecode(top, &cfg); err != nil {
		return nil, err
	}
	for i, raw := range routes {
		var r Route
		if err := strictDecode(raw, &r); err != nil {
			return nil, fmt.Errorf("routes[%d]%s: %w", i, nameOf(raw), err)
		}
		cfg.Routes = append(cfg.Routes, r)
	}
	return &cfg, nil
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
