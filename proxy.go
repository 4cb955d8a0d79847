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

	"github.com/gosmartproxy/smartproxy/acme"
	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/gosmartproxy/smartproxy/forwarding"
	"github.com/gosmartproxy/smartproxy/internal/balance"
	"github.com/gosmartproxy/smartproxy/nftables"
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

	// acmeDomains are the names the ACME manager holds certificates for
	// (acmewire.go), acmeNames the same as a set; acmeALPN: TLS-ALPN-01
	// is answered. Empty without Options.ACME.
	acmeDomains []acme.Domain
	acmeNames   map[string]bool
	acmeALPN    bool
	// acmeHTTP: some port answers HTTP-01 challenges (a port plan's
	// acmeHTTP), so that requests elsewhere skip the port lookup.
	acmeHTTP bool
	// kernel are the routes the kernel forwards (kernelproxy.go).
	kernel []nftables.Route
}

// portPlan is what the accept path needs to know about a port.
type portPlan struct {
	needsHello bool // some route on the port matches by SNI or TLS version
	plainHTTP  bool // plain HTTP connections go to the HTTP layer (portPlan.add)
	// termHTTP: some terminating route on the port has HTTP-level
	// matching, checks or header rules, so its decrypted streams are
	// never forwarded raw on silence or an undecided first line.
	termHTTP bool
	// hasRoutes: some route listens on the port (it may be open only for
	// ACME HTTP-01 challenges otherwise).
	hasRoutes bool
	// terminating: some route on the port terminates TLS, so TLS-ALPN-01
	// challenges are answered on it.
	terminating bool
	// acmeHTTP: HTTP-01 challenge requests are answered on the port
	// before routing (set by manageACME).
	acmeHTTP bool
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
	// loopSrv maps a port to the event loops its TLS connections move to after their
	// handshake (enginetls_linux.go): *evloop.Server by int port.
	loopSrv sync.Map
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
	// proxyIn receives PROXY headers (proxyproto.go); nil when off.
	proxyIn *proxyReceiver
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
	if err := opts.setUpACME(userCerts); err != nil {
		return nil, fmt.Errorf("smartproxy: %w", err)
	}
	conns := opts.Connections
	if conns == nil {
		m, err := connection.NewManager(opts.connectionConfig())
		if err != nil {
			return nil, fmt.Errorf("smartproxy: %w", err)
		}
		conns = m
	}
	opts.haveCertStore = userCerts || opts.ACME != nil
	opts.kernel = &kernelState{opts: &opts}
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
		proxyIn:   newProxyReceiver(&opts),
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
	compiled, kernel, err := splitKernelRoutes(compiled, opts)
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
	domains, names, err := managedDomains(compiled, opts)
	if err != nil {
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
	if err := settleSendProxy(compiled, ports, alpn, opts.SendProxyProtocol); err != nil {
		return nil, err
	}
	return &routeSet{routes: compiled, matcher: m, ports: ports, alpn: alpn, kernel: kernel, acmeDomains: domains, acmeNames: names}, nil
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
	p.addKernelMetrics(&m)
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
	set, err := p.manageACME(ctx, p.set.Load())
	if err != nil {
		return err
	}
	if err := p.opts.kernel.apply(ctx, set); err != nil {
		return err
	}
	if err := p.reconcileLocked(ctx, set); err != nil {
		return errors.Join(err, p.opts.kernel.stop(ctx))
	}
	// Orders begin only now: the CA's validation must find the ports open.
	if m := p.opts.ACME; m != nil {
		if err := m.Start(ctx); err != nil {
			for port, l := range p.listeners {
				l.close()
				delete(p.listeners, port)
			}
			return errors.Join(fmt.Errorf("smartproxy: starting ACME: %w", err), p.opts.kernel.stop(ctx))
		}
	}
	p.health.Sync(healthPlan(set)) // start the routes' active health checks
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
		old := p.set.Load()
		ctx, cancel := context.WithTimeout(p.baseCtx, acmeManageTimeout)
		defer cancel()
		if set, err = p.manageACME(ctx, set); err != nil {
			return err
		}
		if err := p.opts.kernel.apply(context.Background(), set); err != nil {
			if _, rerr := p.manageACME(ctx, old); rerr != nil {
				p.log.Error("acme: restoring the managed names after a failed route update", "err", rerr)
			}
			return err
		}
		// Stores set once the new ports are open, before they accept.
		if err := p.reconcileLocked(context.Background(), set); err != nil {
			if _, rerr := p.manageACME(ctx, old); rerr != nil {
				p.log.Error("acme: restoring the managed names after a failed route update", "err", rerr)
			}
			// Put the kernel's routes back as they were.
			return errors.Join(err, p.opts.kernel.apply(context.Background(), old))
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
	kerr := p.opts.kernel.stop(ctx)
	for port, l := range p.listeners {
		l.close()
		delete(p.listeners, port)
	}
	p.mu.Unlock()
	p.acceptors.Wait()
	acmeErr := p.stopACME(ctx)
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
	return errors.Join(err, kerr, acmeErr)
}

// stopACME stops the ACME manager, whose orders cannot complete with the
// ports closed: orders and renewals in flight are abandoned, the store
// keeps what was finished. It gets its own bound, since ctx may run out
// draining connections and the manager's goroutines must still end.
func (p *Proxy) stopACME(ctx context.Context) error {
	m := p.opts.ACME
	if m == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), acmeStopTimeout)
	defer cancel()
	if err := m.Stop(ctx); err != nil {
		return fmt.Errorf("smartproxy: stopping ACME: %w", err)
	}
	return nil
}
