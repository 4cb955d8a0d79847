package admin

import (
	"context"
	"time"
)

// Source is what the admin API reports on: a running proxy. The root
// package's Proxy.AdminSource returns one; tests may supply their own.
// Implementations must be safe for concurrent use; every method may be
// called once a second by each open dashboard.
type Source interface {
	// Ready reports whether the proxy is serving: its listeners are up
	// and it is not stopping.
	Ready() bool
	// Routes lists the active routes.
	Routes() []Route
	// Connections lists the open connections, sorted by ID.
	Connections() []Connection
	// Targets lists the backend targets with their health.
	Targets() []Target
	// Stats returns the running totals the dashboard shows.
	Stats() Stats
}

// Reloader re-reads the configuration and applies it, as SIGHUP does;
// the error says why the running configuration was kept.
type Reloader func(ctx context.Context) error

// Route is one active route.
type Route struct {
	Name     string   `json:"name"`
	Ports    []int    `json:"ports"`
	Domains  []string `json:"domains,omitempty"`
	Action   string   `json:"action"`
	TLS      string   `json:"tls,omitempty"`
	Targets  []string `json:"targets,omitempty"`
	Priority int      `json:"priority,omitempty"`
}

// Connection is one open client connection.
type Connection struct {
	ID           uint64    `json:"id"`
	Client       string    `json:"client"`
	Port         int       `json:"port"`
	Route        string    `json:"route"`
	Domain       string    `json:"domain,omitempty"`
	Start        time.Time `json:"start"`
	LastActivity time.Time `json:"lastActivity"`
	BytesIn      uint64    `json:"bytesIn"`
	BytesOut     uint64    `json:"bytesOut"`
}

// Target is one backend address and its health.
type Target struct {
	Addr                string     `json:"addr"`
	Up                  bool       `json:"up"`
	ActiveConnections   int64      `json:"activeConnections"`
	ConsecutiveFailures int        `json:"consecutiveFailures"`
	DownUntil           *time.Time `json:"downUntil,omitempty"`
	HealthChecked       bool       `json:"healthChecked"`
	HealthCheckUp       bool       `json:"healthCheckUp"`
	ConnectErrors       uint64     `json:"connectErrors"`
}

// Stats are the proxy's running totals at one instant.
type Stats struct {
	Time        time.Time         `json:"time"`
	Active      int               `json:"active"`
	Total       uint64            `json:"total"`
	BytesIn     uint64            `json:"bytesIn"`
	BytesOut    uint64            `json:"bytesOut"`
	Throughput  Throughput        `json:"throughput"`
	Rejections  map[string]uint64 `json:"rejections"`
	Routes      []RouteStats      `json:"routes"`
	TopClients  []Client          `json:"topClients"`
	Targets     []Target          `json:"targets"`
	TLS         TLSStats          `json:"tls"`
	Certificate []Certificate     `json:"certificates,omitempty"`
}

// Throughput is bytes per second over the last 1, 10 and 60 seconds.
type Throughput struct {
	In  [3]float64 `json:"in"`
	Out [3]float64 `json:"out"`
}

// RouteStats are one route's running totals: connections and requests
// since start, bytes of finished and open connections.
type RouteStats struct {
	Name        string `json:"name"`
	Active      int    `json:"active"`
	Connections uint64 `json:"connections"`
	Requests    uint64 `json:"requests"`
	BytesIn     uint64 `json:"bytesIn"`
	BytesOut    uint64 `json:"bytesOut"`
}

// Client is a client address (or IPv6 prefix) with its open connections.
type Client struct {
	IP     string `json:"ip"`
	Active int    `json:"active"`
}

// TLSStats count terminated handshakes.
type TLSStats struct {
	Full     uint64 `json:"full"`
	Resumed  uint64 `json:"resumed"`
	Failures uint64 `json:"failures"`
}

// Certificate is the expiry of the certificate served for a name.
type Certificate struct {
	Name     string    `json:"name"`
	NotAfter time.Time `json:"notAfter"`
}
