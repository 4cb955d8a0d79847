package smartproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/gosmartproxy/smartproxy/forwarding"
	"github.com/gosmartproxy/smartproxy/internal/balance"
)

// ErrStopped is returned by Start, ServeConn and UpdateRoutes after Stop.
var ErrStopped = errors.New("smartproxy: proxy stopped")

// ConnectionManager tracks every proxied connection and enforces the
// connection limits and timeouts. *connection.Manager is the default.
//
// Wrap it, don't replace it: Open must return a *connection.Record, and
// only a connection.Manager makes those (the record carries the timeout
// and byte-count state the manager sweeps). So an implementation embeds a
// *connection.Manager from connection.NewManager and overrides the
// methods it observes or adds policy to (refusing in Open before calling
// the embedded one, counting, logging); every record it hands out comes
// from that Manager and goes back to it in Close. Implementations must be
// safe for concurrent use.
type ConnectionManager interface {
	// Open admits a new client connection or refuses it with an error.
	// closer is called to kill the connection on timeout or shutdown.
	Open(client netip.AddrPort, localPort int, closer io.Closer) (*connection.Record, error)
	// AssignRouteLimits binds the record to its route and enforces the
	// route's limits (zero fields: none).
	AssignRouteLimits(r *connection.Record, route, domain string, lim connection.RouteLimits) error
	// Close releases a record; idempotent.
	Close(r *connection.Record) bool
	// Run enforces timeouts and samples metrics until ctx ends.
	Run(ctx context.Context)
	// CloseAll calls every open record's closer.
	CloseAll()
	// Active is the number of open records.
	Active() int
	// Snapshot returns the current metrics.
	Snapshot() connection.Metrics
}

// routeSet is one immutable generation of routes; connections keep the
// generation they were matched in, so UpdateRoutes never disturbs them.
type routeSet struct {
	routes  []*Route
	matcher RouteMatcher
	ports   map[int]portPlan
	// alpn holds the ALPN choice of every terminating forward route.
	alpn map[*Route]*alpnConfigs
}

// portPlan is what the accept path needs to know about a port.
type portPlan struct {
	needsHello bool // some route on the port matches by SNI or TLS version
	plainHTTP  bool // plain HTTP connections go to the HTTP layer (portPlan.add)
	// termHTTP: some terminating route on the port has HTTP-level
	// matching, checks or header rules, so its decrypted streams are
	// never forwarded raw on silence or an undecided first line.
	termHTTP bool
}

// Proxy routes connections on its ports according to its routes. Create
// it with New, then Start it; Stop it to release everything.
type Proxy struct {
	opts  Options
	log   *slog.Logger
	conns ConnectionManager
	sec   SecurityChecker
	// rejects counts refusals by reason and summarises their logs.
	rejects *rejectLog
	set     atomic.Pointer[routeSet]
	certs   CertificateStore
	// noCert rate-limits the warning for handshakes without a certificate.
	noCert noCertWarner
	// tlsBase is the template of every terminating route's tls.Config.
	tlsBase *tls.Config
	tickets *ticketKeyRing
	// health is the load balancer's view of the targets (health.go); its
	// active checkers are synced by Start/UpdateRoutes and stopped by Stop.
	health *balance.Health
	// http is the HTTP layer (httpserver.go), started on first use.
	http *httpLayer
	// ops: counters for metrics and the admin API, access logs (opsstate.go).
	ops *opsState

	// baseCtx is cancelled when Stop gives up draining; it is the parent of
	// every handler's context.
	baseCtx    context.Context
	cancelBase context.CancelFunc
	runOnce    sync.Once
	runCancel  context.CancelFunc
	// draining is closed when Stop begins (RouteContext.Draining).
	draining chan struct{}
	// parker parks idle forwarded connections (Options.IdleParkAfter);
	// set by startRunner, nil when parking is off or unavailable.
	parker  *forwarding.IdleParker
	runDone chan struct{}

	mu        sync.Mutex // guards the fields below
	listeners map[int]*portListener
	started   bool
	stopped   bool
	handlers  sync.WaitGroup // one per connection being served
	acceptors sync.WaitGroup // one per accept loop
}

// New validates the options and routes and returns a proxy that is not
// yet listening. Every mistake found is reported, each naming its route
// and field.
func New(opts Options) (*Proxy, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("smartproxy: invalid options: %w", err)
	}
	if err := opts.checkOwnManager(); err != nil {
		return nil, fmt.Errorf("smartproxy: invalid options: %w", err)
	}
	userCerts := opts.Certificates != nil
	opts = opts.withDefaults()
	conns := opts.Connections
	if conns == nil {
		m, err := connection.NewManager(opts.connectionConfig())
		if err != nil {
			return nil, fmt.Errorf("smartproxy: %w", err)
		}
		conns = m
	}
	opts.haveCertStore = userCerts
	set, err := buildRouteSet(opts.Routes, opts)
	if err != nil {
		return nil, fmt.Errorf("smartproxy: invalid routes: %w", err)
	}
	tickets := &ticketKeyRing{}
	tlsBase, err := newTLSBase(tickets)
	if err != nil {
		return nil, fmt.Errorf("smartproxy: %w", err)
	}
	p := &Proxy{
		tlsBase:   tlsBase,
		tickets:   tickets,
		certs:     opts.Certificates,
		opts:      opts,
		log:       opts.Logger,
		conns:     conns,
		sec:       opts.Security,
		rejects:   newRejectLog(opts.Logger, 0),
		listeners: make(map[int]*portListener),
		runDone:   make(chan struct{}),
		draining:  make(chan struct{}),
		ops:       newOpsState(newAccessLog(opts.AccessLog, opts.Logger)),
	}
	p.baseCtx, p.cancelBase = context.WithCancel(context.Background())
	p.health = balance.NewHealth(opts.Logger, p.dial) // checks dial as connections do
	p.http = newHTTPLayer(newProxySeam(p))
	p.set.Store(set)
	return p, nil
}

func buildRouteSet(routes []Route, opts Options) (*routeSet, error) {
	compiled, err := compileRoutes(routes, opts.Defaults)
	if err != nil {
		return nil, err
	}
	for _, r := range compiled {
		if sec := r.state.sec; sec != nil {
			sec.http.SetIPv6PrefixLen(opts.IPv6PrefixLen) // freshly compiled: not yet shared
		}
		if rt := r.state.tls; rt != nil && rt.backendNoAuth {
			opts.Logger.Warn("route re-encrypts without verifying the backend certificate (insecureSkipVerify)", "route", r.Name)
		}
	}
	if err := checkCertificateSources(compiled, opts.haveCertStore); err != nil {
		return nil, err
	}
	m, err := opts.Matcher(compiled)
	if err != nil {
		return nil, fmt.Errorf("building matcher: %w", err)
	}
	ports := make(map[int]portPlan)
	alpn := make(map[*Route]*alpnConfigs)
	for _, r := range compiled {
		if r.state.tls != nil && r.Action.Type == ActionForward {
			alpn[r] = &alpnConfigs{}
		}
		r.Match.Ports.Each(func(port int) bool {
			plan := ports[port]
			plan.add(r)
			ports[port] = plan
			return true
		})
	}
	return &routeSet{routes: compiled, matcher: m, ports: ports, alpn: alpn}, nil
}

// Routes returns copies of the active (enabled) routes.
func (p *Proxy) Routes() []Route {
	set := p.set.Load()
	out := make([]Route, len(set.routes))
	for i, r := range set.routes {
		out[i] = *r
		out[i].state = nil
	}
	return out
}

// Ports returns the ports the current routes listen on, ascending.
func (p *Proxy) Ports() []int { return sortedPorts(p.set.Load().ports) }

// Metrics returns a snapshot of the connection manager's metrics.
func (p *Proxy) Metrics() connection.Metrics {
	m := p.conns.Snapshot()
	if m.Rejected == nil {
		m.Rejected = make(map[connection.Reason]uint64)
	}
	p.rejects.addTo(m.Rejected)
	return m
}

// Start opens a listener on every port the routes use and starts serving.
// If any port cannot be opened, the ones already opened are closed and the
// error is returned. ctx bounds the opening only.
func (p *Proxy) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return ErrStopped
	}
	if p.started {
		return errors.New("smartproxy: already started")
	}
	p.startRunner()
	if err := p.reconcileLocked(ctx, p.set.Load()); err != nil {
		return err
	}
	p.health.Sync(healthPlan(p.set.Load())) // start the routes' active health checks
	p.started = true
	return nil
}

// startRunner starts the connection manager's sweeper once.
func (p *Proxy) startRunner() {
	p.runOnce.Do(func() {
		if p.opts.IdleParkAfter >= 0 {
			pk, err := forwarding.NewIdleParker(p.opts.IdleParkAfter, 0)
			if err != nil {
				p.log.Warn("idle connections will not be parked", "err", err)
			} else {
				p.parker = pk
				p.ops.parker.Store(pk) // for scrapes, which may run concurrently
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		p.runCancel = cancel
		go func() {
			defer close(p.runDone)
			if p.parker != nil {
				// Stop cancels ctx once every connection has ended.
				defer p.parker.Close()
			}
			var wg sync.WaitGroup
			wg.Go(func() { p.rejects.run(ctx) }) // summarises the tail of a burst
			wg.Go(func() { p.runTicketRotation(ctx) })
			if a := p.ops.access; a != nil {
				wg.Go(func() { a.run(ctx) })
			}
			p.conns.Run(ctx)
			wg.Wait()
		}()
	})
}

// UpdateRoutes replaces the routes at runtime. New connections see the
// new routes at once; open connections keep flowing on the routes they
// were matched with. Ports no route uses any more are closed and new ports
// are opened. An invalid route set, or a port that cannot be opened,
// leaves the old routes in place and returns the error.
func (p *Proxy) UpdateRoutes(routes []Route) error {
	set, err := buildRouteSet(routes, p.opts)
	if err != nil {
		return fmt.Errorf("smartproxy: invalid routes: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return ErrStopped
	}
	if p.started {
		// Stores set once the new ports are open, before they accept.
		if err := p.reconcileLocked(context.Background(), set); err != nil {
			return err
		}
		p.health.Sync(healthPlan(set)) // stop checks no route needs any more, start new ones
	} else {
		p.set.Store(set)
	}
	p.log.Info("routes updated", "routes", len(set.routes), "ports", len(set.ports))
	return nil
}

// Stop stops accepting, waits for open connections to finish until ctx
// ends (or Options.GracefulShutdownTimeout when ctx has no deadline), then
// closes the rest and waits until every goroutine of the proxy has
// returned. It returns ctx's error if connections had to be cut.
func (p *Proxy) Stop(ctx context.Context) error {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return nil
	}
	p.stopped = true
	close(p.draining) // socket handlers wind down their keep-alive connections
	p.health.Stop()   // end the active health checks; prompt, probes are cancelled
	for port, l := range p.listeners {
		l.close()
		delete(p.listeners, port)
	}
	p.mu.Unlock()
	p.acceptors.Wait()
	p.http.beginShutdown() // idle keep-alive connections close now, busy ones after their response

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.opts.GracefulShutdownTimeout)
		defer cancel()
	}
	drained := make(chan struct{})
	go func() { p.handlers.Wait(); close(drained) }()
	var err error
	select {
	case <-drained:
	case <-ctx.Done():
		err = ctx.Err()
		p.log.Warn("shutdown: closing connections still open", "active", p.conns.Active())
		p.cancelBase()
		p.conns.CloseAll()
		<-drained
	}
	p.cancelBase()
	p.http.close()
	p.runOnce.Do(func() { close(p.runDone) }) // never started: nothing to wait for
	if p.runCancel != nil {
		p.runCancel()
	}
	<-p.runDone
	return err
}
