package smartproxy

import (
	"context"
	"net"
	"net/netip"

	"github.com/gosmartproxy/smartproxy/schema"
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
	// UpdateRoutes report them, labelled with the route, instead of the
	// builder panicking.
	builderErrs schema.FieldErrors
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
	// library). For HTTP requests (plain HTTP, or TLS the proxy
	// terminates) they match the Host header, port stripped, falling back
	// to the SNI. A TCP connection without SNI never matches them.
	Domains StringList `json:"domains,omitempty"`
	// ClientIP restricts the route to client addresses: exact, CIDR,
	// "192.168.1.*" globs or "a-b" ranges (see package iplist).
	ClientIP []string `json:"clientIp,omitempty"`
	// TLSVersion restricts the route to clients whose highest offered TLS
	// version is listed: "TLSv1.0" … "TLSv1.3". Needs a ClientHello.
	TLSVersion []string `json:"tlsVersion,omitempty"`
	// Path matches the HTTP request path: "/api/users", "/api/*",
	// "/users/:id", "/api/users/:id/*". As in TS, a pattern ending in '/'
	// is a prefix ("/api/" is "/api/*"), and "/" matches every path.
	// HTTP routes only: plain HTTP, or a terminating TLS mode. The path is matched after resolving "." and
	// ".." segments. Among routes of equal priority and domain
	// specificity, the more specific path wins.
	Path string `json:"path,omitempty"`
	// Headers match HTTP request headers: case-insensitive names, glob
	// values. HTTP routes only.
	Headers map[string]string `json:"headers,omitempty"`
	// Method restricts HTTP routes to request methods, e.g. ["GET",
	// "HEAD"] (an extension of the TS schema, which has it on target
	// sub-matches only).
	Method []string `json:"method,omitempty"`
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
	// are given, a TCP connection goes to the first (in descending
	// Priority) and an HTTP request to the first whose Match takes it;
	// that target's hosts are chosen by LoadBalancing (round-robin when
	// nil).
	Targets []Target `json:"targets,omitempty"`
	// TLS says how TLS is handled; nil means the bytes are forwarded as they
	// come (plain TCP).
	TLS *RouteTLS `json:"tls,omitempty"`
	// Options tunes HTTP proxying.
	Options *ActionOptions `json:"options,omitempty"`
	// Headers sets request and response headers (HTTP routes), values being
	// templates such as "{clientIp}".
	Headers *HeaderActions `json:"headers,omitempty"`
	// Rewrite rewrites the request URL path (HTTP routes).
	Rewrite *URLRewrite `json:"rewrite,omitempty"`
	// Redirect answers HTTP requests with a redirect instead of forwarding.
	Redirect *Redirect `json:"redirect,omitempty"`
	// LoadBalancing chooses among several target hosts and checks their
	// health.
	LoadBalancing *LoadBalancing `json:"loadBalancing,omitempty"`
	// WebSocket tunes WebSocket proxying (HTTP routes).
	WebSocket *WebSocketOptions `json:"websocket,omitempty"`
	// SocketHandler is called for "socket-handler" routes. Code only: a
	// config file cannot name one.
	SocketHandler SocketHandler `json:"-"`
	// SendProxyProtocol sends the backend a PROXY header with the real
	// client address first (proxyproto_send.go). TCP routes only: routes
	// with HTTP features are refused. ProxyProtocolVersion is 1 (text,
	// the default, as TS) or 2 (binary, with ALPN and authority TLVs);
	// our extension.
	SendProxyProtocol    bool `json:"sendProxyProtocol,omitempty"`
	ProxyProtocolVersion int  `json:"proxyProtocolVersion,omitempty"`

	// ForwardingEngine "nftables" has the kernel forward the route (see
	// NfTablesRoute and package nftables); "" or "node": this process.
	ForwardingEngine ForwardingEngine `json:"forwardingEngine,omitempty"`
	// NfTables tunes a kernel-forwarded route.
	NfTables *NfTablesOptions `json:"nftables,omitempty"`
	// ForwardingEngineFallback serves a kernel route in user space (TCP
	// only) when this process cannot use nftables, instead of failing New.
	// Our extension.
	ForwardingEngineFallback bool `json:"forwardingEngineFallback,omitempty"`
}

// ActionOptions tunes HTTP proxying. Setting it (like any other HTTP
// feature of a route) marks a terminating route as HTTP-only: it offers
// ALPN "h2" and "http/1.1" to clients and refuses streams that are not
// HTTP. Terminating routes without HTTP features offer no ALPN, so that
// TCP protocols over TLS keep working; their HTTP/1.x clients are still
// recognised by their first bytes and served by the HTTP layer.
type ActionOptions struct {
	// RewriteHostHeader sets the Host header to the target; nil means
	// true. False keeps the client's Host.
	RewriteHostHeader *bool `json:"rewriteHostHeader,omitempty"`
	// BackendProtocol is BackendHTTP1 (default), BackendH2C (HTTP/2
	// without TLS) or BackendH2 (HTTP/2 over TLS, with
	// terminate-and-reencrypt).
	BackendProtocol BackendProtocol `json:"backendProtocol,omitempty"`
	// PathNormalization is what happens to a request path that is not in
	// canonical form on a port where routes decide on paths: "normalize"
	// (default) forwards its canonical form, "reject" answers 400. Paths
	// without a canonical form are refused either way. Our extension.
	PathNormalization string `json:"pathNormalization,omitempty"`
}

// HeaderActions sets headers; a value that expands to "" removes the
// header. Values are templates: {domain} {path} {query} {clientIp}
// {serverIp} {port} {routeName} {connectionId} {timestamp} (Unix ms) and
// {headers.<lower-case name>} (a request header, for responses too);
// unknown names stay as written.
type HeaderActions struct {
	// Request headers set on the request sent to the backend.
	Request map[string]string `json:"request,omitempty"`
	// Response headers set on the response sent to the client.
	Response map[string]string `json:"response,omitempty"`
}

// URLRewrite replaces the request path (with its query) matching Pattern,
// a regular expression, by Target, which may use $1 and templates.
type URLRewrite struct {
	// Pattern is a Go regular expression matched against the escaped
	// path with its query ("/a/b?x=1"); the first match is replaced.
	Pattern string `json:"pattern"`
	// Target replaces the match: $1 or ${1} insert capture groups, and
	// templates ({domain}...) are expanded. Neither is expanded again.
	Target string `json:"target"`
}

// Redirect answers with Status (301, 302, 303, 307 or 308; default 301)
// and a Location built from the To template, e.g. "https://{domain}{path}".
// The request's query is appended unless To uses {query} or has a '?'.
// A forward route with a redirect needs no targets.
type Redirect struct {
	// To is the Location template.
	To string `json:"to"`
	// Status is the redirect status code.
	Status int `json:"status,omitempty"`
}

// LoadBalancing chooses among target hosts.
type LoadBalancing struct {
	// Algorithm is one of the Algorithm constants; "" means
	// AlgorithmRoundRobin.
	Algorithm Algorithm `json:"algorithm,omitempty"`
	// HealthCheck enables active health checks; nil means passive only.
	HealthCheck *HealthCheck `json:"healthCheck,omitempty"`
}

// HealthCheck probes each target host: a TCP connect, or an HTTP GET of
// Path when Path is set. Durations are milliseconds in config files.
type HealthCheck struct {
	Path               string `json:"path,omitempty"`
	Interval           Millis `json:"interval,omitempty"` // default 10 s
	Timeout            Millis `json:"timeout,omitempty"`  // default 2 s
	UnhealthyThreshold int    `json:"unhealthyThreshold,omitempty"`
	HealthyThreshold   int    `json:"healthyThreshold,omitempty"`
}

// WebSocketOptions tunes WebSocket proxying.
type WebSocketOptions struct {
	// Enabled allows upgrades; nil means true. With false, upgrade
	// requests are answered 403. (WebSockets over HTTP/2, RFC 8441, are
	// not supported: clients fall back to HTTP/1.1.)
	Enabled *bool `json:"enabled,omitempty"`
	// PingInterval and PingTimeout are accepted for TS compatibility; the
	// proxy relays the peers' own pings and applies no idle timeout to an
	// upgraded connection beyond the inactivity timeout.
	PingInterval Millis `json:"pingInterval,omitempty"`
	PingTimeout  Millis `json:"pingTimeout,omitempty"`
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
	Mode TLSMode `json:"mode"`
	// Certificate for the terminating modes: PEM in the route, files, or
	// "auto". "auto" and nil take the certificate from Options.Certificates
	// by SNI, or, when Options.ACME is set, order one for each of the
	// route's match.domains from the ACME CA (see Options.ACME); with
	// neither set New refuses the route.
	Certificate *CertificateSpec `json:"certificate,omitempty"`
	// ACME overrides the ACME manager's settings for this route's domains
	// (TS action.tls.acme). It needs Options.ACME and a certificate that
	// is "auto" or unset.
	ACME *RouteACME `json:"acme,omitempty"`
	// Versions lists the TLS versions accepted from clients, e.g.
	// ["TLSv1.2", "TLSv1.3"]; default TLS 1.2 and 1.3.
	Versions []string `json:"versions,omitempty"`
	// Ciphers lists the TLS 1.2 cipher suites, by their IANA or Go names
	// separated by ':' or ','. The list replaces the default, so it can
	// widen it. Empty means ECDHE with AES-GCM or ChaCha20-Poly1305 only.
	// TLS 1.3 suites are not configurable (as in Go's crypto/tls).
	Ciphers string `json:"ciphers,omitempty"`
	// Backend configures the TLS connection to the target for
	// "terminate-and-reencrypt". nil means verification against the system
	// roots with the target host as server name.
	Backend *BackendTLS `json:"backend,omitempty"`
}

// RouteACME is a route's ACME settings, each overriding the manager's
// setting of the same meaning for the route's domains when it is set
// (non-zero; UseProduction when not nil).
type RouteACME struct {
	// Email is the ACME account's contact address.
	Email string `json:"email,omitempty"`
	// UseProduction picks Let's Encrypt production over staging when
	// DirectoryURL is empty.
	UseProduction *bool `json:"useProduction,omitempty"`
	// ChallengePort is the port HTTP-01 challenges are answered on (the
	// CA always asks on 80; another port is for a proxy behind a port
	// forward). The proxy listens on it.
	ChallengePort int `json:"challengePort,omitempty"`
	// RenewBeforeDays renews the certificate this many days before it
	// expires.
	RenewBeforeDays int `json:"renewBeforeDays,omitempty"`
	// DirectoryURL is the ACME directory of another CA (not in TS).
	DirectoryURL string `json:"directoryUrl,omitempty"`
}

// CertificateSpec is a route's certificate: inline PEM, PEM files, or
// "auto" (JSON: the string "auto").
type CertificateSpec struct {
	// Auto takes the certificate from Options.Certificates by SNI, or
	// from Options.ACME.
	Auto bool `json:"-"`
	// Cert and Key are PEM blocks (the certificate chain, leaf first, and
	// its private key).
	Cert string `json:"cert,omitempty"`
	Key  string `json:"key,omitempty"`
	// CA is an optional PEM chain appended after Cert.
	CA string `json:"ca,omitempty"`
	// CertFile and KeyFile name PEM files, read when the routes are
	// validated (New, UpdateRoutes). Each must be a regular file of at most
	// 1 MiB. A relative path is relative to the working directory, or,
	// in a file read by LoadConfig, to that file's directory.
	CertFile string `json:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty"`
}

// BackendTLS configures the TLS client side of "terminate-and-reencrypt".
type BackendTLS struct {
	// ServerName is the SNI and verification name sent to the backend:
	// "" or ServerNameTarget for the target host, ServerNameOriginal for
	// the client's SNI, or any explicit name.
	ServerName ServerName `json:"serverName,omitempty"`
	// CA is a PEM bundle to verify the backend with, instead of the system
	// roots; CAFile names a file with it.
	CA     string `json:"ca,omitempty"`
	CAFile string `json:"caFile,omitempty"`
	// InsecureSkipVerify turns verification off, for self-signed backends.
	// It is logged as a warning when the routes load.
	InsecureSkipVerify bool `json:"insecureSkipVerify,omitempty"`
}

// Target is a backend of a forward action.
type Target struct {
	// Host is one or more backend hosts (names or IPs). Several hosts are
	// balanced by the route's LoadBalancing algorithm (round-robin when
	// nil), skipping hosts that are down.
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
	// Match restricts this target to some requests (HTTP routes): the
	// first matching target by Priority is used.
	Match *TargetMatch `json:"match,omitempty"`
	// SendProxyProtocol and ProxyProtocolVersion are
	// RouteAction's, for this target (which then rules).
	SendProxyProtocol    bool `json:"sendProxyProtocol,omitempty"`
	ProxyProtocolVersion int  `json:"proxyProtocolVersion,omitempty"`
}

// TargetMatch selects a target within a route.
// Every set field must match; a target without Match takes every request.
// Targets are tried in descending Priority.
type TargetMatch struct {
	// Ports are proxy ports the request arrived on.
	Ports []int `json:"ports,omitempty"`
	// Path is a path pattern, as match.path.
	Path string `json:"path,omitempty"`
	// Headers are header globs, as match.headers.
	Headers map[string]string `json:"headers,omitempty"`
	// Method lists request methods.
	Method []string `json:"method,omitempty"`
}

// TargetPort is a backend port number, or PreservePort.
type TargetPort int

// PreservePort forwards to the same port the client connected to
// (JSON: "preserve").
const PreservePort TargetPort = -1

// RouteSecurity restricts who may use a route. The connection-level parts
// (IP lists, connection caps and rates) are checked before any byte reaches
// a backend and before any backend dial; a refused TCP connection is
// closed (after a TLS alert when a ClientHello was read). The HTTP-level
// parts (BasicAuth, JWTAuth, RateLimit) apply to plain HTTP and terminated
// TLS routes, per request, and answer 401 or 429 themselves.
//
// In Options.Defaults.Security every field is a default: a route's
// non-zero field (or non-nil block) replaces the default one, so a route
// can opt out of a default block with e.g. "basicAuth": {"enabled": false}.
type RouteSecurity struct {
	// IPAllowList, when not empty, admits only matching clients.
	IPAllowList []string `json:"ipAllowList,omitempty"`
	// IPBlockList rejects matching clients; block wins over allow.
	IPBlockList []string `json:"ipBlockList,omitempty"`
	// MaxConnections caps the route's concurrent connections. 0 means
	// the default: Options.Defaults.Security's, else unlimited; negative
	// is refused.
	MaxConnections int `json:"maxConnections,omitempty"`
	// MaxConnectionsPerIP caps one client IP's concurrent connections on
	// this route. 0 means the default (as MaxConnections); negative is
	// refused. Options.MaxConnectionsPerIP still applies proxy-wide.
	MaxConnectionsPerIP int `json:"maxConnectionsPerIP,omitempty"`
	// ConnectionRateLimitPerMinute caps one client IP's new connections to
	// this route in a sliding minute (refused attempts count). 0 means the
	// default (as MaxConnections); negative is refused.
	// Options.ConnectionRateLimitPerMinute still applies proxy-wide.
	ConnectionRateLimitPerMinute int `json:"connectionRateLimitPerMinute,omitempty"`
	// BasicAuth requires HTTP Basic credentials (see [BasicAuth]).
	BasicAuth *BasicAuth `json:"basicAuth,omitempty"`
	// JWTAuth requires a valid JSON Web Token (see [JWTAuth]). When both
	// BasicAuth and JWTAuth apply to a request, either one suffices.
	JWTAuth *JWTAuth `json:"jwtAuth,omitempty"`
	// RateLimit caps HTTP requests per client IP, path or header value
	// (see [RateLimit]); checked before authentication.
	RateLimit *RateLimit `json:"rateLimit,omitempty"`
}

// RouteContext describes a connection to the code that handles it:
// socket handlers and target functions (HostFunc, PortFunc).
type RouteContext struct {
	// Port is the local port the connection was accepted on.
	Port int
	// Domain is the SNI server name, lower-cased, or "" when none was seen.
	Domain string
	// TLSVersion is the highest TLS version the client offered (for
	// example tls.VersionTLS13), or 0 when no ClientHello was read; on
	// terminating routes, once the handshake is done, the negotiated one.
	TLSVersion uint16
	// ClientIP is the client address (IPv4-mapped IPv6 unmapped).
	ClientIP netip.Addr
	// ClientAddr is the client address and port.
	ClientAddr netip.AddrPort
	// LocalAddr is the proxy-side address of the client connection.
	LocalAddr net.Addr
	// ProxyHeader is the PROXY header a trusted sender sent (its Source
	// is ClientAddr then); nil when none was read.
	ProxyHeader *ProxyHeader
	// RouteName is the name of the matched route.
	RouteName string
	// ConnectionID is the connection manager's id for this connection.
	ConnectionID uint64
	// Route is the matched route. Treat it as read-only.
	Route *Route
	// Draining is closed when the proxy begins a graceful Stop (nil
	// outside socket handlers). A handler that serves many requests on
	// one connection should finish the one in flight and return; ctx is
	// cancelled only when Stop stops waiting.
	Draining <-chan struct{}
}

// SocketHandler handles a connection routed to a "socket-handler" route.
// conn first yields every byte the proxy already read for routing (such
// as a TLS ClientHello), then the rest of the stream, so nothing is lost
// however long the handler takes before reading. The proxy owns conn: it
// closes it when the handler returns (the handler may close it earlier).
// ctx is cancelled when the proxy gives up waiting in Stop; rc.Draining
// is closed when Stop begins. A returned error or a panic
// closes this connection only and is logged.
type SocketHandler func(ctx context.Context, conn net.Conn, rc *RouteContext) error
