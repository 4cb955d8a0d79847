package smartproxy

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/gosmartproxy/smartproxy/forwarding"
)

// proxiedConn owns the sockets of one connection so the connection
// manager can kill it (timeouts, shutdown) from another goroutine.
type proxiedConn struct {
	client net.Conn
	// initialDeadline bounds everything before the data phase: sniffing,
	// the ClientHello and the TLS handshake share one InitialDataTimeout.
	initialDeadline time.Time

	mu      sync.Mutex
	backend net.Conn
	pipe    *forwarding.Piped // set when a detached pipe runs the data phase
	// loop is the event loop's connection once one serves it (movedToLoop).
	loop   io.Closer
	closed bool
}

// Close closes the client and, once dialed, the backend. Idempotent.
func (pc *proxiedConn) Close() error {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.closed {
		return nil
	}
	pc.closed = true
	if pc.loop != nil {
		return pc.loop.Close() // the client socket closed at the move
	}
	err := pc.client.Close()
	if pc.backend != nil {
		_ = pc.backend.Close()
	}
	if pc.pipe != nil {
		_ = pc.pipe.Close() // a parked pipe learns of the close at once
	}
	return err
}

// movedToLoop hands the connection to the event loop that serves it from now on (adoptTLS):
// the goroutine path's fd of the client socket closes (the loop holds its own, so no FIN
// goes out), and Close closes the loop's connection instead. A Close that came first is
// passed on.
func (pc *proxiedConn) movedToLoop(c io.Closer) {
	pc.mu.Lock()
	closed := pc.closed
	pc.loop = c
	pc.mu.Unlock()
	_ = pc.client.Close()
	if closed {
		_ = c.Close()
	}
}

// setPipe registers the detached pipe that now runs the connection.
func (pc *proxiedConn) setPipe(pp *forwarding.Piped) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	pc.pipe = pp
	if pc.closed {
		_ = pp.Close()
	}
}

// setBackend registers the dialed backend; it reports false (and closes
// the backend) when the connection was killed while dialing.
func (pc *proxiedConn) setBackend(b net.Conn) bool {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.closed {
		_ = b.Close()
		return false
	}
	pc.backend = b
	return true
}

// clientAddrOf returns the client's address with IPv4-mapped IPv6
// unmapped; the zero AddrPort when conn has no IP address (net.Pipe).
func clientAddrOf(conn net.Conn) netip.AddrPort {
	var ap netip.AddrPort
	switch a := conn.RemoteAddr().(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	default:
		if a != nil {
			ap, _ = netip.ParseAddrPort(a.String())
		}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Connection ownership. Exactly one party finishes a connection
// (finishConn: its record, then its sockets), once.
//
//   - serve owns every connection it accepts. One that Open refuses has
//     no record and is closed at once; any other is finished by serve's
//     deferred finish when serve returns. Whatever serve calls
//     (terminate, forward, runHandler, the HTTP layer, which serve blocks
//     on until its server is done with the conn) runs within serve and
//     leaves finishing to it.
//   - The one hand-over: forward with detach may start a detached pipe
//     (Proxy.pipeDetached) that outlives serve; it then reports
//     ownedByPipe, serve's finish does nothing, and the pipe's done
//     callback finishes the connection when the pipe ends. The pipe
//     counts as a handler (Proxy.handlers) until then, so Stop waits for
//     it as for a serving goroutine.
//   - The other: terminate may move a TLS connection to an event loop
//     after its handshake (adoptTLS, enginetls_linux.go); it then reports
//     ownedByLoop, and the loop's OnClose finishes the connection (the
//     loop counts as a handler until its last connection ended). pc's
//     Close closes the loop's connection from then on (movedToLoop).
//   - Meanwhile the connection manager may close pc from another
//     goroutine (timeouts, Stop): that only makes the owner's I/O fail;
//     the owner still finishes.

// connOwner is who finishes a connection (see Connection ownership).
type connOwner int

const (
	ownedByServe connOwner = iota // serve's defer finishes it
	ownedByPipe                   // a detached pipe's done callback finishes it
	ownedByLoop                   // an event loop serves it: its OnClose finishes it
)

// finishConn is the end of every admitted connection, whoever owns it:
// the record is closed first (the connection stops counting against the
// limits and leaves the metrics' active set), then the sockets.
func finishConn(conns ConnectionManager, rec *connection.Record, pc *proxiedConn) {
	conns.Close(rec)
	_ = pc.Close()
}

// serve runs one connection from accept to close: admission, routing,
// security, then the route's action. With detach, a forwarded connection
// may outlive serve (see Connection ownership).
func (p *Proxy) serve(conn net.Conn, port int, detach bool) {
	// A trusted sender's PROXY header comes first: its address is the
	// client address for everything below (proxyproto.go).
	peek := forwarding.NewPeekConn(conn)
	defer peek.Release()
	hdr, err := p.receiveProxyHeader(peek)
	if err != nil {
		p.refuseProxyHeader(peek, port, err)
		return
	}
	client := clientAddrOf(peek)
	pc := &proxiedConn{client: peek.Conn, initialDeadline: time.Now().Add(p.opts.InitialDataTimeout)}
	set := p.set.Load()
	rec, err := p.conns.Open(client, port, pc)
	if err != nil {
		p.reject(refusal{client: client, port: port}, err)
		if set.ports[port].plainHTTP {
			refuseHTTPClient(conn, err)
		}
		_ = pc.Close()
		return
	}
	p.ops.opened(port)
	p.serveOpened(conn, peek, port, detach, set, rec, pc, hdr)
}

// serveOpened is serve's part after the connection's record was opened: the first bytes,
// admission, routing, security, the route's action, and the end of the record and the
// connection (unless a detached pipe owns them). The event loop's HTTP mode hands the
// connections whose first bytes are not a request to it (enginehttp_linux.go).
func (p *Proxy) serveOpened(conn net.Conn, peek *forwarding.PeekConn, port int, detach bool, set *routeSet,
	rec *connection.Record, pc *proxiedConn, hdr *ProxyHeader) {
	client := rec.Client()
	owner := ownedByServe
	defer func() {
		if owner == ownedByServe {
			p.finish(rec, pc)
		}
	}()
	// A connection accepted just before Stop closed the listeners can be
	// admitted only after Stop, past its deadline, closed every connection
	// it knew of; nothing would ever close this one and Stop would wait on
	// it. Stop cancels baseCtx before that CloseAll, so checking it here
	// (after the record is registered) leaves no connection unreached.
	if p.baseCtx.Err() != nil {
		return
	}
	p.tuneTCP(conn)

	rc := &RouteContext{
		Port:         port,
		ClientIP:     client.Addr(),
		ClientAddr:   client,
		LocalAddr:    conn.LocalAddr(),
		ConnectionID: rec.ID(),
		ProxyHeader:  hdr,
	}
	if plan := set.ports[port]; plan.needsHello || plan.plainHTTP || plan.acmeHTTP {
		// Only ports that need it wait for the client's first bytes;
		// elsewhere server-speaks-first protocols are routed on accept.
		// On a port with HTTP routes, what might still become a request
		// line is never routed raw (strict): see classifyHTTP. A port
		// that is sniffed only for ACME challenges, with routes that do
		// not need the first bytes, waits for them briefly (silence:
		// the server may speak first).
		sniffUntil := pc.initialDeadline
		brief := !plan.needsHello && !plan.plainHTTP && plan.hasRoutes
		if brief {
			sniffUntil = time.Now().Add(min(terminatedSniffWait, time.Until(sniffUntil)))
		}
		// The untrusted-header check reads the same first bytes, within
		// the same wait.
		if p.proxyIn != nil {
			if err := refuseUntrustedHeader(peek, sniffUntil); err != nil {
				p.reject(refusal{client: client, port: port}, &RejectError{Reason: RejectProxyProtocol, IP: client.Addr(), Err: err})
				return
			}
		}
		strict := plan.plainHTTP || !plan.hasRoutes
		switch sniffStream(peek, time.Until(sniffUntil), plan.plainHTTP || plan.acmeHTTP, true, strict) {
		case streamNone:
			if brief {
				break
			}
			p.logConn("closing connection: no usable initial data", "id", rec.ID(), "client", client, "port", port)
			return
		case streamTLS:
			hello, ok := p.readHello(peek, rc, pc.initialDeadline)
			if !ok || p.answerALPNChallenge(set, peek, rc, &hello, pc.initialDeadline) {
				return
			}
		case streamHTTP:
			// A port whose routes do not take plain HTTP gives it to the
			// HTTP layer only for ACME challenges (a port open for them
			// alone answers 404 to the rest).
			acmeOnly := !plan.plainHTTP && plan.acmeHTTP && (!plan.hasRoutes || isACMEChallengeLine(peek, pc.initialDeadline))
			if plan.plainHTTP || acmeOnly {
				// Plain HTTP is routed per request, checks included.
				meter := &meterConn{Conn: peek, rec: rec}
				meter.on.Store(true)
				p.http.serve(meter, &httpConn{rc: *rc, admission: admissionDeferred, rec: rec, meter: meter, acmeOnly: acmeOnly, owner: pc})
				return
			}
		}
	}
	route, adm, ok := p.admitConn(set, conn, rec, rc)
	if !ok {
		return
	}
	switch {
	case route.state.tls != nil:
		owner = p.terminate(set, pc, peek, rec, rc, adm)
	case route.Action.Type == ActionForward:
		owner = p.forward(pc, peek, rec, rc, detach)
	case route.Action.Type == ActionSocketHandler:
		p.runHandler(peek, rec, rc)
	}
}

// admitConn routes a connection on what is known on accept (port, SNI,
// client) and runs the connection-level checks, unless the route defers
// them to requests (admission.go). A refused connection gets, when it
// speaks TLS, a fatal alert before it is closed, so that the client
// reports a clear error instead of a bare reset; ok is false then.
func (p *Proxy) admitConn(set *routeSet, conn net.Conn, rec *connection.Record, rc *RouteContext) (route *Route, adm connAdmission, ok bool) {
	refuse := func(alert byte, err error) {
		if rc.TLSVersion != 0 {
			writeTLSAlert(conn, alert)
		}
		p.reject(refusal{client: rc.ClientAddr, port: rc.Port, domain: rc.Domain, route: rc.RouteName}, err)
	}
	q := MatchQuery{Port: rc.Port, Domain: rc.Domain, ClientIP: rc.ClientIP, TLSVersion: rc.TLSVersion}
	if rt, ok := set.matcher.(*RouteTable); ok {
		route = rt.Match(&q) // a direct call keeps q on the stack: one allocation less per connection
	} else {
		custom := q // may be kept by a custom matcher: on the heap
		route = set.matcher.Match(&custom)
	}
	if route == nil || route.state == nil {
		refuse(alertUnrecognizedName, &RejectError{Reason: RejectNoRoute, IP: rc.ClientIP})
		return nil, admissionDeferred, false
	}
	rc.Route, rc.RouteName = route, route.Name
	adm = admissionFor(route, rc.Domain)
	if adm.deferred() {
		return route, adm, true
	}
	if err := p.sec.CheckConnection(rc); err != nil {
		refuse(alertAccessDenied, err)
		return nil, adm, false
	}
	if err := p.conns.AssignRouteLimits(rec, route.Name, rc.Domain, route.state.sec.routeLimits()); err != nil {
		refuse(alertAccessDenied, err)
		return nil, adm, false
	}
	if p.connLogOn() {
		p.logConn("connection routed", "id", rec.ID(), "client", rc.ClientAddr, "port", rc.Port, "domain", rc.Domain, "route", route.Name)
	}
	return route, adm, true
}

// add folds one route into the port's plan. A port serves plain HTTP
// when a route without TLS needs HTTP information: match.path, headers
// or method, an HTTP action, or (for a forward route) domains, which on a
// plain connection match the Host header.
func (pp *portPlan) add(r *Route) {
	st := r.state
	// A terminating route needs the ClientHello even without domains: it
	// only matches connections known to be TLS.
	pp.needsHello = pp.needsHello || st.needsHello || st.tls != nil
	pp.hasRoutes = true
	pp.terminating = pp.terminating || st.tls != nil
	if r.Action.TLS == nil && (st.http != nil || st.sec.hasHTTPChecks() || len(st.domains) > 0 && r.Action.Type == ActionForward) {
		pp.plainHTTP = true
	}
	if st.tls != nil && st.http != nil {
		pp.termHTTP = true
	}
}

// readHello reads the ClientHello under the initial-data deadline and
// fills rc's domain and TLS version. It reports false when the connection
// must be closed: timeout, EOF, oversize or malformed hello. The hello
// returned aliases peek's buffer. A client that
// does not speak TLS is routed without SNI (only routes without domains
// can take it).
func (p *Proxy) readHello(peek *forwarding.PeekConn, rc *RouteContext, deadline time.Time) (forwarding.ClientHelloInfo, bool) {
	_ = peek.SetReadDeadline(deadline)
	info, err := forwarding.SniffClientHello(peek, p.opts.MaxClientHelloBytes)
	_ = peek.SetReadDeadline(time.Time{})
	switch {
	case err == nil:
		rc.Domain = normalizeDomain(string(info.ServerName))
		rc.TLSVersion = info.MaxVersion
		return info, true
	case errors.Is(err, forwarding.ErrNotTLS):
		return forwarding.ClientHelloInfo{}, true
	default:
		p.logConn("closing connection: no usable ClientHello", "id", rc.ConnectionID, "client", rc.ClientAddr, "port", rc.Port, "err", err)
		return forwarding.ClientHelloInfo{}, false
	}
}

// reject counts a refusal by reason and logs it through the summarising
// reject log (rejections come in floods under attack: the first of a
// burst is logged, the rest summarised). Detailed logging adds a debug
// line per refusal.
func (p *Proxy) reject(at refusal, err error) {
	route := at.route
	var re *RejectError
	var le *connection.LimitError
	switch {
	case errors.As(err, &re):
		if e, ok := err.(*RejectError); ok && e.Route == "" && route != "" {
			// HTTP checks refuse without knowing the route: name it in a
			// copy (the error may be a checker's own value).
			c := *e
			c.Route = route
			err = &c
		}
		if re.Route != "" {
			route = re.Route
		}
	case errors.As(err, &le) && le.Route != "":
		route = le.Route
	}
	p.rejects.reject(rejectReasonOf(err), route, at.client.Addr(), err)
	if !p.opts.EnableDetailedLogging {
		return
	}
	if at.req != nil {
		p.log.Log(p.baseCtx, slog.LevelInfo, "request rejected", "client", at.client, "port", at.port, "domain", at.domain,
			"route", route, "method", at.req.Method, "path", at.req.URL.EscapedPath(), "err", err)
		return
	}
	p.log.Log(p.baseCtx, slog.LevelInfo, "connection rejected", "client", at.client, "port", at.port, "domain", at.domain, "route", route, "err", err)
}

// refusal says where a refusal happened, for the rejection log.
type refusal struct {
	client netip.AddrPort
	port   int
	domain string
	// route names the route that refused when the error does not (HTTP
	// checks run after matching and their errors carry no route).
	route string
	// req is the refused request on the HTTP layer; nil for a connection.
	req *http.Request
}

func (p *Proxy) logConn(msg string, args ...any) {
	p.log.Log(p.baseCtx, p.connLogLevel(), msg, args...)
}

// connLogLevel is the level of logConn's lines: Info with EnableDetailedLogging, else Debug.
func (p *Proxy) connLogLevel() slog.Level {
	if p.opts.EnableDetailedLogging {
		return slog.LevelInfo
	}
	return slog.LevelDebug
}

// connLogOn reports whether logConn writes anything: a line per connection checks it first,
// because its arguments are built (and boxed, allocating) before logConn could drop them.
func (p *Proxy) connLogOn() bool { return p.log.Enabled(p.baseCtx, p.connLogLevel()) }

// tuneTCP applies the no-delay option; keep-alive is set by the listener
// and dialer. Go enables TCP_NODELAY on every TCP conn already, so only
// turning it off costs a system call.
func (p *Proxy) tuneTCP(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok && !p.opts.noDelay() {
		_ = tc.SetNoDelay(false)
	}
}

// TLS alert descriptions sent before closing a TLS client we refuse.
const (
	alertAccessDenied     = 49
	alertUnrecognizedName = 112
)

// writeTLSAlert sends a fatal TLS alert record so TLS clients report a
// clear error instead of a bare reset. Best effort, bounded by a short
// deadline.
func writeTLSAlert(c net.Conn, desc byte) {
	_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_, _ = c.Write([]byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, desc})
}
