//go:build linux

package smartproxy

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/gosmartproxy/smartproxy/forwarding"
	"github.com/gosmartproxy/smartproxy/internal/balance"
	"github.com/gosmartproxy/smartproxy/internal/evloop"
	"github.com/gosmartproxy/smartproxy/internal/h1parse"
	"golang.org/x/net/http/httpguts"
)

// startEngine starts the loops of port addr.Port() on addr, sharing lfd when it is a socket.
func (p *Proxy) startEngine(addr netip.AddrPort, lfd int) (*evloop.Server, error) {
	port := int(addr.Port())
	enable, idle := p.opts.keepAlive(), p.opts.KeepAliveInitialDelay
	keepAlive := func(fd int) { setListenerKeepAlive(fd, enable, idle) }
	wildcard := addr.Addr().IsUnspecified()
	local := net.TCPAddrFromAddrPort(addr)
	// Whether the port's routes can be served in the loop, for the route generation it was
	// computed for (one atomic load per connection; recomputed after UpdateRoutes).
	var elig atomic.Pointer[eligibility]
	eligible := func(set *routeSet) *eligibility {
		if e := elig.Load(); e != nil && e.set == set {
			return e
		}
		e := &eligibility{set: set, ok: p.engineEligible(set, port), http: p.engineHTTPPort(set, port)}
		elig.Store(e)
		return e
	}
	return evloop.Start(evloop.Config{
		Listen:           addr,
		SharedListen:     lfd >= 0,
		ListenFD:         lfd,
		HalfCloseTimeout: p.opts.HalfCloseTimeout,
		WriteTimeout:     p.opts.WriteTimeout,
		ConnectTimeout:   p.opts.ConnectTimeout,
		SniffTimeout:     p.opts.InitialDataTimeout,
		SniffMax:         p.opts.MaxClientHelloBytes,
		NoDelayOff:       !p.opts.noDelay(),
		ListenSocket:     keepAlive, // accepted sockets inherit it
		KeepAlive:        enable,
		KeepAliveIdle:    keepAliveIdle(idle),
		OnAcceptError: func(err error) { // as acceptLoop logs it; the loop rests until its next tick
			p.log.Warn("accept failed; listener paused", "addr", addr, "err", err)
		},
		OnOpen: func(c *evloop.Conn) evloop.Decision {
			la := local
			if wildcard {
				la = net.TCPAddrFromAddrPort(unmapPort(c.Local()))
			}
			return p.engineOpen(port, la, c, eligible)
		},
		OnHello: func(c *evloop.Conn, data []byte) evloop.Decision {
			return c.Data.(*engineConn).hello(data)
		},
		OnHandOff: func(fd int, _ netip.AddrPort, _ []byte) { p.engineHandOff(fd, port) },
		OnConnect: func(c *evloop.Conn) {
			if e, ok := c.Data.(*engineConn); ok { // HTTP mode counts a success at the response
				p.health.Succeeded(e.addr)
			}
		},
		OnDialError: func(c *evloop.Conn, err error) (netip.AddrPort, bool) {
			return c.Data.(*engineConn).dialFailed(err)
		},
		OnData: func(c *evloop.Conn, clientToBackend bool, n int) {
			if rec := c.Data.(recorded).record(); clientToBackend {
				rec.AddIn(n)
			} else {
				rec.AddOut(n)
			}
		},
		OnClose: func(c *evloop.Conn, in, out int64, err error) {
			switch e := c.Data.(type) {
			case *engineConn:
				e.closed(in, out, err)
			case *loopHTTP:
				e.closed(in, out, err)
			}
		},
		// HTTP mode (enginehttp_linux.go).
		HTTPHeadTimeout:     p.http.headTimeout(),
		HTTPIdleTimeout:     p.http.idleTimeout,
		HTTPFirstTimeout:    p.opts.InitialDataTimeout, // as serve's sniff waits for the first bytes
		HTTPResponseTimeout: p.http.px.connectTimeout,  // as the fast forward's h1client: ConnectTimeout bounds the wait for a head
		HTTPBodyTimeout:     -1,
		HTTPMaxHeld:         maxHeldBody,
		HTTPExpectUnheld:    true, // handed off (fastEligibleHead): the 100 is not the loop's to send before the checks
		// As relayResponse: names no trailer may carry are not passed on.
		HTTPTrailerName: func(name []byte) bool { return httpguts.ValidTrailerHeader(string(name)) },
		// A panic in the request's code ends that request (a 500 and a close, or a failed
		// exchange), as the goroutine path's recover does (fastConn.run), not the process.
		OnRequest: func(c *evloop.Conn, req *h1parse.Request, raw []byte) (plan evloop.HTTPPlan) {
			lh := c.Data.(*loopHTTP)
			defer func() {
				if v := recover(); v != nil {
					plan = evloop.HTTPPlan{Respond: lh.panicked(v), Close: true}
				}
			}()
			return lh.request(req, raw)
		},
		OnResponse: func(c *evloop.Conn, resp *h1parse.Response, dst []byte) (head []byte, ok bool) {
			lh := c.Data.(*loopHTTP)
			defer func() {
				if v := recover(); v != nil {
					lh.panicked(v)
					head, ok = nil, false
				}
			}()
			return lh.response(resp, dst), true
		},
		OnExchangeEnd: func(c *evloop.Conn, status int, body int64, err error) (answer []byte) {
			lh := c.Data.(*loopHTTP)
			defer func() {
				if v := recover(); v != nil {
					lh.panicked(v)
					answer = nil
				}
			}()
			return lh.exchangeEnd(status, body, err)
		},
		OnHTTPRetry: func(c *evloop.Conn, err error, connected bool) (evloop.HTTPPlan, bool) {
			return c.Data.(*loopHTTP).retry(err, connected)
		},
		OnMalformed: func(c *evloop.Conn, err error, first bool, data []byte) ([]byte, bool) {
			return c.Data.(*loopHTTP).malformed(err, first, data)
		},
		OnHTTPFirst: func(c *evloop.Conn, data []byte) bool {
			return c.Data.(*loopHTTP).firstBytes(data)
		},
		// A request coming in pieces (a held body trickling) is activity before it is counted,
		// as meterConn's reads mark it on the goroutine path: the inactivity timeout sees it.
		OnHTTPReading: func(c *evloop.Conn) { c.Data.(*loopHTTP).hc.rec.Touch() },
		OnHTTPHandOff: func(c *evloop.Conn, fd int, data []byte) {
			c.Data.(*loopHTTP).handOff(fd, data)
		},
	})
}

type eligibility struct {
	set  *routeSet
	ok   bool // the loop forwards the port's connections (engineEligible)
	http bool // the loop serves them in HTTP mode (engineHTTPPort)
}

// recorded is a loop connection's owner: its record takes the byte counts.
type recorded interface{ record() *connection.Record }

func (e *engineConn) record() *connection.Record { return e.rec }
func (lh *loopHTTP) record() *connection.Record  { return lh.hc.rec }

// engineEligible reports whether the loop can serve every route on port in set by itself:
// no HTTP on the port, the built-in matcher and connection manager, and each route an
// engineRoute (a plain forward or a TLS passthrough).
func (p *Proxy) engineEligible(set *routeSet, port int) bool {
	plan, ok := set.ports[port]
	if !ok || plan.plainHTTP || plan.termHTTP || plan.acmeHTTP {
		return false
	}
	if !p.loopParts(set) {
		return false
	}
	for _, r := range set.routes {
		if routeOnPort(r, port) && !p.engineRoute(r) {
			return false
		}
	}
	return true
}

// routeOnPort reports whether r matches connections on port.
func routeOnPort(r *Route, port int) bool {
	on := false
	r.Match.Ports.Each(func(pt int) bool {
		on = pt == port
		return !on
	})
	return on
}

// loopParts reports whether the loops may serve set's connections at all: no PROXY headers
// in (the goroutine path reads and checks them, proxyproto.go; the loop would forward them as
// data), and the built-in matcher and connection manager, which the loop calls and whose
// calls never block (a custom one may do I/O, which would stall every connection of the
// loop).
func (p *Proxy) loopParts(set *routeSet) bool {
	if p.proxyIn != nil {
		return false
	}
	if _, ok := set.matcher.(*RouteTable); !ok {
		return false
	}
	_, ok := p.conns.(*connection.Manager)
	return ok
}

// engineConn is a connection the event loop forwards: what serve, admitConn and
// dialBackend keep for a goroutine-path connection. It is the connection manager's closer.
type engineConn struct {
	p     *Proxy
	set   *routeSet // the route generation the connection was accepted in
	ec    *evloop.Conn
	rec   *connection.Record
	rc    RouteContext
	lease balance.Lease
	held  bool   // lease is acquired (a zero Lease must not be released)
	addr  string // the target being dialed or connected
	tried []string
	scan  *forwarding.HelloScanner // while the ClientHello is read
	// dialBy ends the time all hosts tried share (ConnectTimeout from the first dial, as
	// dialBackend's context); zero while none was dialed.
	dialBy time.Time
}

// Close kills the connection from any goroutine (timeouts, Stop).
func (e *engineConn) Close() error {
	e.ec.Close()
	return nil
}

// engineOpen admits an accepted connection in the loop, as serve does, and routes it at once
// (admitConn, then the target as dialBackend picks it) or, on ports that route by SNI, after
// its ClientHello (hello). A connection the loop cannot forward by itself is handed off before
// anything is recorded, so serve then does all of it.
func (p *Proxy) engineOpen(port int, local net.Addr, c *evloop.Conn, eligible func(*routeSet) *eligibility) evloop.Decision {
	set := p.set.Load()
	switch e := eligible(set); {
	case e.http:
		return p.engineOpenHTTP(port, local, c)
	case !e.ok:
		return evloop.Decision{HandOff: true}
	}
	client := c.Peer()
	e := &engineConn{p: p, ec: c, set: set}
	rec, err := p.conns.Open(client, port, e)
	if err != nil {
		p.reject(refusal{client: client, port: port}, err)
		return evloop.Decision{}
	}
	e.rec = rec
	p.ops.opened(port)
	e.rc = RouteContext{Port: port, ClientIP: client.Addr(), ClientAddr: client, LocalAddr: local, ConnectionID: rec.ID()}
	if p.baseCtx.Err() != nil { // see serve: accepted just before Stop
		e.finish()
		return evloop.Decision{}
	}
	c.Data = e
	if set.ports[port].needsHello {
		return evloop.Decision{Sniff: true}
	}
	d := e.route()
	if !d.Target.IsValid() {
		e.finish() // refused before OnClose could be reported
	}
	return d
}

// hello routes a sniffing connection by its ClientHello, as serve's readHello does: more bytes
// while it is incomplete, without SNI when the client does not speak TLS, closed when the
// hello is malformed or over MaxClientHelloBytes. A refused decision ends the connection and
// OnClose closes its record.
func (e *engineConn) hello(data []byte) evloop.Decision {
	// Each record is scanned once however the hello trickles in (a loop must not be made to
	// re-parse a growing hello), and it is refused as soon as its records show it cannot fit.
	// A hello that came whole (the usual case) is scanned on the stack; the scanner moves to
	// the heap only for one that must wait for more.
	var info forwarding.ClientHelloInfo
	var err error
	if e.scan != nil {
		info, err = e.scan.Scan(data, e.p.opts.MaxClientHelloBytes)
	} else {
		var sc forwarding.HelloScanner
		if info, err = sc.Scan(data, e.p.opts.MaxClientHelloBytes); errors.Is(err, forwarding.ErrNeedMore) {
			e.scan = new(forwarding.HelloScanner)
			*e.scan = sc
		}
	}
	switch {
	case errors.Is(err, forwarding.ErrNeedMore):
		return evloop.Decision{Sniff: true}
	case err == nil:
		e.scan = nil
		e.rc.Domain = normalizeDomain(string(info.ServerName))
		e.rc.TLSVersion = info.MaxVersion
	case errors.Is(err, forwarding.ErrNotTLS):
	default:
		e.p.logConn("closing connection: no usable ClientHello", "id", e.rc.ConnectionID, "client", e.rc.ClientAddr, "port", e.rc.Port, "err", err)
		return evloop.Decision{}
	}
	return e.route()
}

// route runs the connection checks (admitConn, which matches the route) and picks the first
// target; the zero Decision refuses.
func (e *engineConn) route() evloop.Decision {
	route, _, ok := e.p.admitConn(e.set, alertWriter{e.ec}, e.rec, &e.rc)
	if !ok {
		return evloop.Decision{}
	}
	if !e.p.engineRoute(route) { // cannot happen on an eligible port; never forward it blindly
		return evloop.Decision{}
	}
	target, ok := e.next()
	if !ok {
		return evloop.Decision{}
	}
	return evloop.Decision{Target: target}
}

// alertWriter is the conn admitConn writes a refusal's TLS alert to: the loop's socket,
// written without waiting (best effort, as writeTLSAlert is).
type alertWriter struct{ c *evloop.Conn }

func (a alertWriter) Read([]byte) (int, error)         { return 0, net.ErrClosed }
func (a alertWriter) Write(b []byte) (int, error)      { a.c.WriteNow(b); return len(b), nil }
func (a alertWriter) Close() error                     { return nil }
func (a alertWriter) LocalAddr() net.Addr              { return nil }
func (a alertWriter) RemoteAddr() net.Addr             { return nil }
func (a alertWriter) SetDeadline(time.Time) error      { return nil }
func (a alertWriter) SetReadDeadline(time.Time) error  { return nil }
func (a alertWriter) SetWriteDeadline(time.Time) error { return nil }

// engineRoute reports whether the loop can forward connections of route by itself: a plain
// forward or a TLS passthrough (no termination) to IP-literal hosts chosen by the route's
// balancer, sending no PROXY header (dialBackend writes it: proxyproto_send.go), with
// connection checks that run no user code.
func (p *Proxy) engineRoute(r *Route) bool {
	if r == nil || r.state == nil || r.Action.Type != ActionForward || r.state.tls != nil ||
		len(r.state.targets) == 0 || r.state.sendPP != 0 || admissionFor(r, "").deferred() {
		return false
	}
	return p.http.px.defaultChecker && ipTarget(&r.state.targets[0])
}

// next picks the next host (as dialBackend does) and takes its lease. Like dialBackend, it
// gives each remaining host an equal share of the ConnectTimeout left, so one black-holed
// host cannot use up the time of all the others, and tries none once it is spent.
func (e *engineConn) next() (netip.AddrPort, bool) {
	p, rc := e.p, &e.rc
	hosts := hostCount(rc.Route, 0)
	if len(e.tried) >= hosts {
		p.log.Debug("every target failed: closing client", "id", rc.ConnectionID, "route", rc.RouteName, "client", rc.ClientAddr, "tried", len(e.tried))
		return netip.AddrPort{}, false
	}
	if hosts > 1 { // a single host gets the whole ConnectTimeout: the loop's default
		now := time.Now()
		if e.dialBy.IsZero() {
			e.dialBy = now.Add(p.opts.ConnectTimeout)
		}
		left := e.dialBy.Sub(now)
		if left <= 0 {
			p.log.Debug("connect time spent: closing client", "id", rc.ConnectionID, "route", rc.RouteName, "client", rc.ClientAddr, "tried", len(e.tried))
			return netip.AddrPort{}, false
		}
		e.ec.SetConnectTimeout(left / time.Duration(hosts-len(e.tried)))
	}
	addr, err := pick(rc.Route, 0, rc, e.tried, p.health)
	if err != nil {
		p.log.Debug("cannot forward", "id", rc.ConnectionID, "route", rc.RouteName, "err", err)
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		p.log.Warn("cannot forward", "id", rc.ConnectionID, "route", rc.RouteName, "target", addr, "err", err)
		return netip.AddrPort{}, false
	}
	e.tried = append(e.tried, addr)
	e.addr = addr
	p.health.Acquire(&e.lease, addr)
	e.held = true
	return ap, true
}

// release ends the target's active-connection count (least-connections).
func (e *engineConn) release() {
	if e.held {
		e.held = false
		e.lease.Release()
	}
}

// dialFailed marks the host failed (passive health) and moves on to the next one.
func (e *engineConn) dialFailed(err error) (netip.AddrPort, bool) {
	p := e.p
	e.release()
	if p.baseCtx.Err() != nil {
		return netip.AddrPort{}, false // shutting down: not the target's fault
	}
	p.backendFailed(e.addr, err)
	p.logConn("backend dial failed", "id", e.rc.ConnectionID, "route", e.rc.RouteName, "target", e.addr, "err", err)
	return e.next()
}

// closed ends the connection's record, as the end of a pipe does.
func (e *engineConn) closed(in, out int64, err error) {
	e.release()
	if e.p.connLogOn() {
		e.p.logConn("connection closed", "id", e.rc.ConnectionID, "route", e.rc.RouteName, "bytesIn", in, "bytesOut", out, "err", err, "engine", "eventloop")
	}
	e.finish()
}

// finish ends an admitted connection's record and accounts it, as Proxy.finish does for
// the goroutine path (ops counters, access log).
func (e *engineConn) finish() {
	e.p.conns.Close(e.rec)
	e.p.ops.connDone(e.rec, e)
}

// backendAddr names the connected target for the access log; "" before the loop connected.
func (e *engineConn) backendAddr() string {
	if !e.ec.Connected() {
		return ""
	}
	return e.ec.Target().String()
}

// engineHandOff serves a socket the loop handed off on the goroutine path.
func (p *Proxy) engineHandOff(fd, port int) {
	f := os.NewFile(uintptr(fd), "handed-off")
	conn, err := net.FileConn(f)
	_ = f.Close()
	if err != nil {
		p.log.Warn("handing a connection to the goroutine path failed", "port", port, "err", err)
		return
	}
	p.handlers.Add(1)
	go func() {
		defer p.handlers.Done()
		p.serve(conn, port, true)
	}()
}
