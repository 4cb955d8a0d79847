package smartproxy

import (
	"context"
	"net"
	"net/netip"
)

// Route says which connections it takes (Match), what to do with them
// (Action) and who may use it (Security). It is a plain struct: build it
// literally, with the fluent [NewRoute] builder, with the helper constructors
// such as [HTTPSPassthroughRoute], or decode it from JSON/YAML in the
// TypeScript SmartProxy IRouteConfig schema.
type Route struct {
	// Name identifies the route in logs, metrics and errors. Required and
	// unique within a proxy.
	Name string `json:"name"`
	// ID is an optional second identifier kept for TS compatibility.
	ID string `json:"id,omitempty"`
	// Description is free text for humans.
	Description string `json:"description,omitempty"`
	// Priority orders routes: higher first. Default 0.
	Priority int `json:"priority,omitempty"`
	// Enabled switches the route off when set to false; nil means enabled.
	Enabled *bool `json:"enabled,omitempty"`
	// Tags are free labels for users' own bookkeeping.
	Tags []string `json:"tags,omitempty"`
	// Match selects the connections this route takes.
	Match RouteMatch `json:"match"`
	// Action says what happens to a matched connection.
	Action RouteAction `json:"action"`
	// Security restricts who may use the route; nil means no restriction
	// beyond Options.Defaults.Security.
	Security *RouteSecurity `json:"security,omitempty"`

	// builderErrs holds mistakes collected by the fluent builder; New and
	// UpdateRoutes report them instead of the builder panicking.
	builderErrs []error
	// state is set on the proxy's own validated copy of the route.
	state *routeState
}

// IsEnabled reports whether the route takes part in matching.
func (r *Route) IsEnabled() bool { return r.Enabled == nil || *r.Enabled }

// RouteMatch selects connections. Every set field must match.
type RouteMatch struct {
	// Ports the route listens on: one or more ports and ranges. Required.
	Ports PortSpec `json:"ports"`
	// Domains matched against the TLS SNI: exact names, "*.example.com",
	// "example.*" or "*". Case-insensitive, a trailing dot is ignored, and
	// '*' matches any run of characters including dots (as in the TS
	// library). A route with domains never matches a connection without SNI.
	Domains StringList `json:"domains,omitempty"`
	// ClientIP restricts the route to client addresses: exact, CIDR,
	// "192.168.1.*" globs or "a-b" ranges (see [ParseIPList]).
	ClientIP []string `json:"clientIp,omitempty"`
	// TLSVersion restricts the route to clients whose highest offered TLS
	// version is listed: "TLSv1.0" … "TLSv1.3". Needs a ClientHello.
	TLSVersion []string `json:"tlsVersion,omitempty"`
}

// ActionType names what a route does with a connection.
type ActionType string

// The action types.
const (
	// ActionForward proxies the connection to one of the route's targets.
	ActionForward ActionType = "forward"
	// ActionSocketHandler hands the connection to RouteAction.SocketHandler.
	ActionSocketHandler ActionType = "socket-handler"
)

// RouteAction says what happens to a matched connection.
type RouteAction struct {
	// Type is "forward" or "socket-handler".
	Type ActionType `json:"type"`
	// Targets are the backends of a forward action. When several targets
	// are given the first one (in order of descending Priority) is used and
	// its hosts are balanced round-robin.
	Targets []Target `json:"targets,omitempty"`
	// TLS says how TLS is handled; nil means the bytes are forwarded as they
	// come (plain TCP).
	TLS *RouteTLS `json:"tls,omitempty"`
	// SocketHandler is called for "socket-handler" routes. Code only: a
	// config file cannot name one.
	SocketHandler SocketHandler `json:"-"`
}

// TLSMode says whether the proxy terminates TLS.
type TLSMode string

// The TLS modes.
const (
	// TLSPassthrough routes by SNI without terminating: the backend does TLS.
	TLSPassthrough TLSMode = "passthrough"
	// TLSTerminate completes the handshake in the proxy.
	TLSTerminate TLSMode = "terminate"
	// TLSTerminateAndReencrypt terminates and opens a new TLS connection to
	// the backend.
	TLSTerminateAndReencrypt TLSMode = "terminate-and-reencrypt"
)

// RouteTLS configures TLS handling for a route.
type RouteTLS struct {
	// Mode is "passthrough", "terminate" or "terminate-and-reencrypt".
	// Only passthrough is available in this version: the terminating modes
	// are rejected by validation until the TLS layer lands.
	Mode TLSMode `json:"mode"`
}

// Target is a backend of a forward action.
type Target struct {
	// Host is one or more backend hosts (names or IPs). Several hosts are
	// balanced round-robin.
	Host StringList `json:"host,omitempty"`
	// Port is the backend port, or PreservePort to use the port the client
	// connected to.
	Port TargetPort `json:"port,omitempty"`
	// Priority orders several targets: higher first.
	Priority int `json:"priority,omitempty"`
	// HostFunc, when set, chooses the host per connection and takes
	// precedence over Host. Code only.
	HostFunc func(rc *RouteContext) string `json:"-"`
	// PortFunc, when set, chooses the port per connection and takes
	// precedence over Port. Code only.
	PortFunc func(rc *RouteContext) int `json:"-"`
}

// TargetPort is a backend port number, or PreservePort.
type TargetPort int

// PreservePort forwards to the same port the client connected to
// (JSON: "preserve").
const PreservePort TargetPort = -1

// RouteSecurity restricts who may use a route. Checked before any byte
// reaches a backend and before any backend dial.
type RouteSecurity struct {
	// IPAllowList, when not empty, admits only matching clients.
	IPAllowList []string `json:"ipAllowList,omitempty"`
	// IPBlockList rejects matching clients; block wins over allow.
	IPBlockList []string `json:"ipBlockList,omitempty"`
	// MaxConnections caps the route's concurrent connections; 0 = unlimited.
	MaxConnections int `json:"maxConnections,omitempty"`
}

// RouteContext describes a connection to the code that handles it: socket
// handlers, target functions and (later) templates.
type RouteContext struct {
	// Port is the local port the connection was accepted on.
	Port int
	// Domain is the SNI server name, lower-cased, or "" when none was seen.
	Domain string
	// TLSVersion is the highest TLS version the client offered (for
	// example tls.VersionTLS13), or 0 when no ClientHello was read.
	TLSVersion uint16
	// ClientIP is the client address (IPv4-mapped IPv6 unmapped).
	ClientIP netip.Addr
	// ClientAddr is the client address and port.
	ClientAddr netip.AddrPort
	// LocalAddr is the proxy-side address of the client connection.
	LocalAddr net.Addr
	// RouteName is the name of the matched route.
	RouteName string
	// ConnectionID is the connection manager's id for this connection.
	ConnectionID uint64
	// Route is the matched route. Treat it as read-only.
	Route *Route
}

// SocketHandler handles a connection routed to a "socket-handler" route.
// conn first yields every byte the proxy already read for routing (such
// as a TLS ClientHello), then the rest of the stream, so nothing is lost
// however long the handler takes before reading. The proxy owns conn: it
// closes it when the handler returns (the handler may close it earlier).
// ctx is cancelled when the proxy shuts down. A returned error or a panic
// closes this connection only and is logged.
type SocketHandler func(ctx context.Context, conn net.Conn, rc *RouteContext) error
