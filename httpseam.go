package smartproxy

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/gosmartproxy/smartproxy/internal/balance"
)

// proxySeam is everything the HTTP layer (httpserver.go, httpproxy.go,
// httphandover.go, httpbackend.go, h2guard.go) needs from the proxy, and
// the only way it reaches it: the HTTP code holds no *Proxy. Listing the
// calls here keeps the layer's dependencies visible in one place, lets a
// change to the proxy's internals (load balancing, health, limits) be made
// in newProxySeam alone, and lets tests build a layer around fakes.
//
// Every func is set; the values are fixed for the proxy's life (Options
// do not change after New).
type proxySeam struct {
	// routes returns the current route generation. The backend pools and
	// the path gate are rebuilt when it changes.
	routes func() *routeSet
	// match finds the route of one request in generation set (from
	// routes, loaded once per request).
	match func(set *routeSet, q *MatchQuery) *Route

	// admit runs the connection-level checks (IP lists, connection rate)
	// for a request whose route is not the one the connection was
	// admitted for.
	admit func(rc *RouteContext) error
	// assign moves the connection's record to a route's limits
	// (maxConnections, maxConnectionsPerIP, connection rate).
	assign func(rec *connection.Record, route, domain string, lim connection.RouteLimits) error
	// detailed: enableDetailedLogging, which adds a line per request.
	detailed bool
	// ops counts requests and writes access log lines (opsstate.go).
	ops *opsState
	// fastPath: not Options.DisableHTTPFastPath (httpfast.go).
	fastPath bool
	// defaultChecker: Options.Security is DefaultSecurityChecker, which keeps no
	// RouteContext it is given (routeScratch.shared).
	defaultChecker bool
	// reject counts and logs one refusal (the rejection log).
	reject func(at refusal, err error)

	// acmeChallenge is the ACME manager's key authorization for an
	// HTTP-01 token; false without a manager or for an unknown token.
	acmeChallenge func(host, token string) (string, bool)

	// runHandler runs a socket-handler route's handler on a handed-over
	// request's stream, as serve would on a connection.
	runHandler func(conn net.Conn, rec *connection.Record, rc *RouteContext)

	// dial connects to a backend (Options.Dial when set) and tunes the
	// TCP conn; the caller bounds ctx.
	dial func(ctx context.Context, addr string) (net.Conn, error)
	// pick is the load balancer's choice of a host of route's target for
	// one attempt, skipping the hosts tried already.
	pick func(route *Route, target int, rc *RouteContext, tried []string) (string, error)
	// acquire counts an attempt as active on addr (least-connections) until
	// the lease is released.
	acquire func(l *balance.Lease, addr string)
	// succeeded and failed feed passive health.
	succeeded func(addr string)
	failed    func(addr string, err error)

	// logConn logs a per-connection event (debug, or info with
	// EnableDetailedLogging); log is the proxy's logger for the rest.
	logConn func(msg string, args ...any)
	log     *slog.Logger
	// baseCtx is cancelled when Stop gives up draining: the parent of
	// every request's context.
	baseCtx context.Context

	// connectTimeout bounds a backend connect and the wait for its
	// response head (Options.ConnectTimeout).
	connectTimeout time.Duration
	// writeTimeout is the write-progress timeout to clients, 0 for none
	// (Options.WriteTimeout).
	writeTimeout time.Duration
	// halfCloseTimeout bounds the direction of an upgraded stream left
	// once the other ended (Options.HalfCloseTimeout).
	halfCloseTimeout time.Duration
	// initialDataTimeout bounds the wait for a connection's first bytes
	// (Options.InitialDataTimeout).
	initialDataTimeout time.Duration
	// inactivityTimeout is the connection manager's inactivity timeout,
	// 0 for none; it lowers the keep-alive idle timeout.
	inactivityTimeout time.Duration
}

// isDefaultChecker reports the built-in security checker.
func isDefaultChecker(c SecurityChecker) bool {
	switch c.(type) {
	case DefaultSecurityChecker, *DefaultSecurityChecker:
		return true
	}
	return false
}

// newProxySeam binds the HTTP layer's seam to p. This is the one place
// where the HTTP layer meets *Proxy.
func newProxySeam(p *Proxy) proxySeam {
	return proxySeam{
		routes: p.set.Load,
		match:  func(set *routeSet, q *MatchQuery) *Route { return set.matcher.Match(q) },
		admit:  func(rc *RouteContext) error { return p.sec.CheckConnection(rc) },
		assign: func(rec *connection.Record, route, domain string, lim connection.RouteLimits) error {
			return p.conns.AssignRouteLimits(rec, route, domain, lim)
		},
		reject:        p.reject,
		acmeChallenge: acmeChallengeOf(p.opts.ACME),
		runHandler:    p.runHandler,
		dial: func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := p.dial(ctx, addr)
			if err != nil {
				return nil, err
			}
			p.tuneTCP(c)
			return c, nil
		},
		pick: func(route *Route, target int, rc *RouteContext, tried []string) (string, error) {
			return pick(route, target, rc, tried, p.health)
		},
		acquire:            p.health.Acquire,
		succeeded:          p.health.Succeeded,
		failed:             p.backendFailed,
		logConn:            p.logConn,
		detailed:           p.opts.EnableDetailedLogging,
		ops:                p.ops,
		fastPath:           !p.opts.DisableHTTPFastPath,
		defaultChecker:     isDefaultChecker(p.sec),
		log:                p.log,
		baseCtx:            p.baseCtx,
		connectTimeout:     p.opts.ConnectTimeout,
		writeTimeout:       p.opts.writeTimeout(),
		halfCloseTimeout:   p.opts.HalfCloseTimeout,
		initialDataTimeout: p.opts.InitialDataTimeout,
		inactivityTimeout:  p.opts.connectionConfig().InactivityTimeout,
	}
}
