package smartproxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/gosmartproxy/smartproxy/acme"
	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/gosmartproxy/smartproxy/forwarding"
)

// Options configures a Proxy.
//
// Zero means the same kind of thing in every field: the default, which
// each field names and which follows the TypeScript SmartProxy where it
// has one (so MaxConnections' default is "unlimited" while
// MaxConnectionsPerIP's is 100, both as in TS). A negative number means
// "off" (no timeout, no limit, never) in the fields that say so, and is
// refused by New in all the others. Nil pointers and funcs mean the
// default too.
type Options struct {
	// Routes are the initial routes; see UpdateRoutes to change them.
	Routes []Route
	// Defaults apply to routes that leave the field unset.
	Defaults Defaults

	// ListenAddress is the host the proxy binds its ports on; "" means all
	// interfaces.
	ListenAddress string

	// InitialDataTimeout bounds the wait for the first bytes a route needs
	// (a TLS ClientHello) on ports whose routes match by domain. 0 means
	// 120 s, as in the TS library (lower it on exposed ports); negative is
	// refused.
	InitialDataTimeout time.Duration
	// MaxClientHelloBytes caps the bytes read to find the SNI. 0 means
	// 64 KiB; anything else below 16 KiB (what post-quantum hellos need),
	// negative included, is refused.
	MaxClientHelloBytes int
	// ConnectTimeout bounds a backend dial. 0 means 30 s; negative is
	// refused.
	ConnectTimeout time.Duration
	// InactivityTimeout closes connections with no traffic either way
	// (see KeepAliveTreatment). 0 means 4 h; negative means none.
	InactivityTimeout time.Duration
	// SocketTimeout is accepted for TS compatibility: when set and lower
	// than InactivityTimeout it is used as the inactivity timeout. 0 means
	// unset; negative is refused.
	SocketTimeout time.Duration
	// KeepAliveTreatment: "standard" ("" too), "extended" (inactivity
	// timeout × KeepAliveInactivityMultiplier) or "immortal" (none).
	KeepAliveTreatment connection.KeepAliveTreatment
	// KeepAliveInactivityMultiplier is used by "extended". 0 means 6;
	// negative is refused.
	KeepAliveInactivityMultiplier float64
	// MaxConnectionLifetime closes connections older than this. 0 means
	// 24 h; negative means unlimited.
	MaxConnectionLifetime time.Duration
	// HalfCloseTimeout bounds how long a half-closed connection may stay
	// idle in the direction that is still open: a forwarded TCP
	// connection, or an upgraded HTTP stream (WebSocket). 0 means 30 s;
	// negative is refused.
	HalfCloseTimeout time.Duration
	// WriteTimeout closes a connection when a write to it makes no
	// progress for this long (nginx's send_timeout): a client that stops
	// reading, or reads a few bytes a second, is cut although bytes still
	// move and the inactivity timeout never fires. It applies to writes to
	// HTTP clients (beneath TLS, HTTP/2 included) and to both sides of a
	// forwarded TCP connection. Progress is checked per write period, so a
	// stalled connection is closed between WriteTimeout and twice it after
	// its last progress. 0 means 60 s (nginx's); negative means never.
	WriteTimeout time.Duration
	// IdleParkAfter is how long a forwarded TCP connection may stay idle
	// before the goroutines copying it are parked: the sockets are then
	// watched by the proxy's own epoll set and the goroutine stacks are
	// given back, so an idle connection costs a few hundred bytes instead
	// of ~10 KiB (see forwarding.IdleParker). Data wakes it at once. 0
	// means 1 s; negative disables parking. Linux only; elsewhere idle
	// connections keep their goroutines.
	IdleParkAfter time.Duration
	// GracefulShutdownTimeout is how long Stop drains when its context has
	// no deadline of its own. 0 means 30 s; negative is refused.
	GracefulShutdownTimeout time.Duration

	// IPv6PrefixLen groups IPv6 clients for every per-IP limit
	// (maxConnectionsPerIP, connectionRateLimitPerMinute, per route too,
	// and HTTP rateLimit keyed by IP) and for Metrics.ByIP: one host
	// usually owns a whole /64, so counting per address would let it
	// multiply its limits at will. 0 means 64; 128 counts every address;
	// negative or above 128 is refused. IPv4 clients are always counted
	// per address. Not in TS SmartProxy, which counts per address.
	IPv6PrefixLen int

	// MaxConnections caps concurrent connections proxy-wide. 0 means the
	// default, which is unlimited (TS has no global cap); negative means
	// unlimited too.
	MaxConnections int
	// MaxConnectionsPerIP caps concurrent connections per client IP. 0
	// means 100, as in TS; negative means unlimited (raise or lift it
	// behind a load balancer, where every client shares its address).
	MaxConnectionsPerIP int
	// ConnectionRateLimitPerMinute caps new connections per client IP per
	// sliding minute. 0 means 300, as in TS; negative means unlimited.
	ConnectionRateLimitPerMinute int

	// NoDelay sets TCP_NODELAY on both sides; nil means true.
	NoDelay *bool
	// KeepAlive enables TCP keep-alive probes on both sides; nil means true.
	KeepAlive *bool
	// KeepAliveInitialDelay is the idle time before the first probe. 0
	// means 10 s; negative is refused.
	KeepAliveInitialDelay time.Duration

	// EnableDetailedLogging logs every connection at Info level rather
	// than Debug.
	EnableDetailedLogging bool
	// DisableHTTPFastPath serves HTTP/1.1 requests on net/http's server
	// too. By default (false) HTTP/1.1 requests (plain, and TLS-terminated
	// without ALPN h2) take the fast path: the proxy's own strict parser
	// and response writer, and for Content-Length or bodiless requests to
	// cleartext backends its own forwarder (httpfast.go); routing and
	// checks are the same. HTTP/2, h2c, upgrades, Expect, HTTP/1.0,
	// absolute-form targets, socket-handler routes, chunked uploads and
	// TLS backends stay on net/http either way. Turn it off to get
	// net/http's lenient parsing back (the fast path refuses bare LF,
	// obs-fold, more than 100 header fields and non-ASCII targets, which
	// net/http accepts) or to rule the fast path out when chasing a bug.
	DisableHTTPFastPath bool
	// Logger receives the proxy's logs; nil means slog.Default().
	Logger *slog.Logger
	// AccessLog turns on access logs, one line per connection and per
	// HTTP request, written off the data path; nil: off (accesslog.go).
	AccessLog *AccessLogOptions

	// Engine selects the data path of plain TCP forwarding, TLS
	// passthrough and plain-HTTP ports: the zero value, EngineEventLoop
	// (event loops where a port allows them, on Linux; see Engine), or
	// EngineGoroutines, the opt-out.
	Engine Engine

	// ReusePort opens the proxy's listening sockets with SO_REUSEPORT, so
	// that several proxy processes (or a new one during an upgrade) can
	// serve the same ports, the kernel spreading new connections among
	// them (Linux; the BSDs and macOS let the processes bind but need not
	// balance). Every process must set it, and run as the same user. Off by
	// default: a port already taken is then an error rather than silently
	// shared, on either engine (with ReusePort the event-loop engine opens
	// one socket per loop; without it the loops share one). New refuses
	// ReusePort where SO_REUSEPORT does not exist and with Options.Listen
	// (set it in that function instead). Stopping one process leaves the
	// others serving the port; connections still queued, not yet accepted,
	// on the stopping process's socket are reset (unless the sysctl
	// net.ipv4.tcp_migrate_req moves them to the others). The admin API's
	// port is not shared. With ACME, keep one process answering
	// challenges: their answers live in the memory of the process that
	// orders (package acme), and a validation request on a shared port
	// reaches any of the processes.
	ReusePort bool

	// Listen opens a port's listener; nil means a net.ListenConfig with
	// the keep-alive settings above. Tests can return in-memory listeners.
	// The event-loop engine takes over the socket of a *net.TCPListener
	// (and closes the listener); other listeners are served on goroutines.
	Listen func(ctx context.Context, network, address string) (net.Listener, error)
	// Dial connects to a backend; nil means a net.Dialer with the keep-alive
	// settings above. Set, it keeps every port on goroutines (the event
	// loops connect with raw sockets).
	Dial func(ctx context.Context, network, address string) (net.Conn, error)

	// Matcher builds the route matcher; nil means NewRouteTable.
	Matcher MatcherFactory
	// Security decides whether a matched connection may proceed; nil means
	// the DefaultSecurityChecker.
	Security SecurityChecker
	// Certificates supplies certificates to terminating routes that have
	// none of their own ("auto" or no certificate), by SNI. nil means
	// ACME when set, else there is none: New then refuses such routes (it
	// would fail every handshake). A store missing a name is logged at
	// WARN when a client asks for it.
	Certificates CertificateStore
	// ACME orders and renews certificates for the terminating routes
	// whose certificate is "auto" or unset. When set:
	//
	//   - It is the CertificateStore when Certificates is nil. A store
	//     that wraps it goes in Certificates, with ACME still set so that
	//     the proxy drives it.
	//   - The managed names are the match.domains of those routes, with a
	//     route's action.tls.acme merged over the manager's settings; the
	//     proxy hands them to Manage on Start and on every UpdateRoutes
	//     (an UpdateRoutes that Manage refuses keeps the old routes).
	//     Wildcard and other pattern domains cannot be ordered by HTTP-01
	//     or TLS-ALPN-01: New refuses them (and routes without domains)
	//     when the manager is the only store.
	//   - HTTP-01 is answered on every port of ACME.HTTPPorts(): a plain
	//     HTTP request for /.well-known/acme-challenge/<token> gets the
	//     key authorization (or 404) before any route or security check,
	//     and every other request keeps going to the routes of that port.
	//     A port no route uses is opened for the challenges alone.
	//   - TLS-ALPN-01 (when ACME.TLSALPNEnabled()) is answered on ports
	//     with a terminating route: a ClientHello for a managed name that
	//     offers "acme-tls/1" alone gets the challenge certificate and is closed
	//     after the handshake, never routed.
	//   - The proxy starts the manager (its first orders) once every
	//     listener is up, and stops it in Stop. A manager serves one proxy.
	//
	// Config.Options leaves it nil and New builds the manager the config
	// file describes (see Config.ACMEManagerConfig), logging to Logger.
	ACME *acme.Manager
	// PROXY protocol, received (see the README's "PROXY protocol" and
	// proxyproto.go). ProxyIPs are the trusted senders (load balancers):
	// addresses, CIDRs, "10.0.*" globs or "a-b" ranges, as match.clientIp.
	// Only their PROXY header (v1 or v2) is read, and its source address
	// becomes the client address everywhere; any other client that sends
	// one is closed. AcceptProxyProtocol turns receiving on and needs
	// ProxyIPs (a non-empty ProxyIPs turns it on too, as in TS). Zero
	// values: off.
	AcceptProxyProtocol bool
	ProxyIPs            []string
	// ProxyProtocol is ProxyProtocolRequired ("", the default: a trusted
	// sender's connection without a header is closed) or
	// ProxyProtocolOptional (it uses its socket address). Our extension.
	ProxyProtocol ProxyProtocolMode
	// ProxyHeaderTimeout bounds the wait for a trusted sender's header. 0
	// means 10 s; negative is refused.
	ProxyHeaderTimeout time.Duration
	// SendProxyProtocol sends a PROXY header to the backends of every
	// forward route that can carry one (no HTTP features), as the TS
	// top-level field does; routes and targets set it for themselves with
	// RouteAction.SendProxyProtocol and Target.SendProxyProtocol.
	SendProxyProtocol bool

	// Connections tracks and limits connections; nil means a
	// connection.Manager configured from the fields above. With a manager
	// of your own, leave those fields zero (New refuses them): build it
	// with NewConnectionManager to start from the same limits.
	Connections ConnectionManager

	// Kernel forwards the routes with forwardingEngine "nftables"; nil
	// means an nftables.Manager on table NftablesTable, made when a route
	// needs it (New fails when the process cannot use nftables, unless
	// every such route asks for forwardingEngineFallback).
	Kernel KernelForwarder
	// NftablesTable names that manager's table; "" means "smartproxy".
	// Give each proxy in a network namespace its own.
	NftablesTable string
	// kernel holds the Kernel in use (kernelproxy.go); New sets it.
	kernel *kernelState

	// haveCertStore records that the user set Certificates or ACME (New
	// fills in an empty store otherwise), so routes that need one can be
	// refused.
	haveCertStore bool
	// acmeOnly: the ACME manager is the only certificate store, so the
	// routes it serves must have names it can order.
	acmeOnly bool
	// acmeFile is the manager a config file describes, built by New when
	// ACME is nil (Config.Options sets it).
	acmeFile *acmeFileConfig
}

// Defaults fill in what routes leave unset.
type Defaults struct {
	// Target is used by forward routes that have no targets.
	Target *Target `json:"target,omitempty"`
	// Security applies to every route; a route's own ipAllowList or
	// ipBlockList replaces the default list of the same kind.
	Security *RouteSecurity `json:"security,omitempty"`
	// PreserveSourceIP is the default of kernel routes'
	// action.nftables.preserveSourceIP.
	PreserveSourceIP *bool `json:"preserveSourceIP,omitempty"`
}

// Default values, as in the TypeScript SmartProxy.
const (
	DefaultInitialDataTimeout      = 120 * time.Second
	DefaultMaxClientHelloBytes     = 64 << 10
	DefaultConnectTimeout          = 30 * time.Second
	DefaultHalfCloseTimeout        = 30 * time.Second
	DefaultGracefulShutdownTimeout = 30 * time.Second
	DefaultKeepAliveInitialDelay   = 10 * time.Second
	DefaultWriteTimeout            = forwarding.DefaultWriteTimeout
)

// withDefaults returns a copy with zero fields set to their defaults.
// The limits and the timeouts the connection manager applies keep their
// zeros: connection.Config gives them the same meaning.
func (o Options) withDefaults() Options {
	o.InitialDataTimeout = cmp.Or(o.InitialDataTimeout, DefaultInitialDataTimeout)
	o.ConnectTimeout = cmp.Or(o.ConnectTimeout, DefaultConnectTimeout)
	o.HalfCloseTimeout = cmp.Or(o.HalfCloseTimeout, DefaultHalfCloseTimeout)
	o.GracefulShutdownTimeout = cmp.Or(o.GracefulShutdownTimeout, DefaultGracefulShutdownTimeout)
	o.KeepAliveInitialDelay = cmp.Or(o.KeepAliveInitialDelay, DefaultKeepAliveInitialDelay)
	o.WriteTimeout = cmp.Or(o.WriteTimeout, DefaultWriteTimeout)
	o.MaxClientHelloBytes = cmp.Or(o.MaxClientHelloBytes, DefaultMaxClientHelloBytes)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Matcher == nil {
		o.Matcher = NewRouteTable
	}
	if o.Certificates == nil {
		o.Certificates = NewCertStore()
	}
	if o.Security == nil {
		o.Security = DefaultSecurityChecker{}
	}
	return o
}

// writeTimeout is WriteTimeout with "never" as 0.
func (o *Options) writeTimeout() time.Duration { return max(o.WriteTimeout, 0) }

func (o *Options) noDelay() bool   { return o.NoDelay == nil || *o.NoDelay }
func (o *Options) keepAlive() bool { return o.KeepAlive == nil || *o.KeepAlive }

// connectionConfig maps the options onto the connection manager's config.
func (o *Options) connectionConfig() connection.Config {
	inactivity := o.InactivityTimeout
	if o.SocketTimeout > 0 && (inactivity == 0 || o.SocketTimeout < inactivity) {
		inactivity = o.SocketTimeout
	}
	return connection.Config{
		MaxConnections:                o.MaxConnections,
		MaxConnectionsPerIP:           o.MaxConnectionsPerIP,
		ConnectionRateLimitPerMinute:  o.ConnectionRateLimitPerMinute,
		InactivityTimeout:             inactivity,
		KeepAliveTreatment:            o.KeepAliveTreatment,
		KeepAliveInactivityMultiplier: o.KeepAliveInactivityMultiplier,
		MaxLifetime:                   o.MaxConnectionLifetime,
		IPv6PrefixLen:                 o.IPv6PrefixLen,
	}
}

// validate refuses option values that would break every connection
// rather than configure something (negative timeouts, a ClientHello cap
// too small for real clients). Zero values mean the defaults.
func (o *Options) validate() error {
	var errs []error
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"InitialDataTimeout", o.InitialDataTimeout},
		{"ConnectTimeout", o.ConnectTimeout},
		{"SocketTimeout", o.SocketTimeout},
		{"HalfCloseTimeout", o.HalfCloseTimeout},
		{"GracefulShutdownTimeout", o.GracefulShutdownTimeout},
		{"KeepAliveInitialDelay", o.KeepAliveInitialDelay},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative, got %v", d.name, d.v))
		}
	}
	if o.MaxClientHelloBytes != 0 && o.MaxClientHelloBytes < minClientHelloBytes {
		errs = append(errs, fmt.Errorf("MaxClientHelloBytes must be at least %d (post-quantum hellos need it), got %d", minClientHelloBytes, o.MaxClientHelloBytes))
	}
	if o.IdleParkAfter > 0 && o.IdleParkAfter < forwarding.MinParkAfter {
		errs = append(errs, fmt.Errorf("IdleParkAfter must be at least %v (or negative: never park), got %v", forwarding.MinParkAfter, o.IdleParkAfter))
	}
	if o.IPv6PrefixLen < 0 || o.IPv6PrefixLen > 128 {
		errs = append(errs, fmt.Errorf("IPv6PrefixLen must be 1..128 (0 for 64), got %d", o.IPv6PrefixLen))
	}
	errs = append(errs, o.validateProxyProtocol()...)
	if o.KeepAliveInactivityMultiplier < 0 {
		errs = append(errs, fmt.Errorf("KeepAliveInactivityMultiplier must not be negative, got %v", o.KeepAliveInactivityMultiplier))
	}
	errs = append(errs, o.AccessLog.validate())
	errs = append(errs, o.validateReusePort())
	return errors.Join(errs...)
}

// minClientHelloBytes is the smallest accepted MaxClientHelloBytes.
const minClientHelloBytes = 16 << 10
