//go:build linux

package smartproxy

import (
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/gosmartproxy/smartproxy/internal/balance"
	"github.com/gosmartproxy/smartproxy/internal/evloop"
)

// engineListenAddr is the address event loops listen on for port, and whether the
// event-loop engine serves it at all: only when chosen, for ports the proxy opens itself, on
// an IP-literal (or empty: every interface) ListenAddress.
func (p *Proxy) engineListenAddr(port int) (netip.AddrPort, bool) {
	if p.opts.Engine != EngineEventLoop || p.opts.Listen != nil {
		return netip.AddrPort{}, false
	}
	if p.opts.ListenAddress == "" {
		return netip.AddrPortFrom(netip.IPv6Unspecified(), uint16(port)), true // dual-stack
	}
	a, err := netip.ParseAddr(p.opts.ListenAddress)
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a, uint16(port)), true
}

// listenEngine opens port on event loops. Connections the loops may not forward by
// themselves are handed to serve, as if accepted by acceptLoop.
func (p *Proxy) listenEngine(addr netip.AddrPort) (*evloop.Server, error) {
	port := int(addr.Port())
	enable, idle := p.opts.keepAlive(), p.opts.KeepAliveInitialDelay
	keepAlive := func(fd int) { setListenerKeepAlive(fd, enable, idle) }
	wildcard := addr.Addr().IsUnspecified()
	local := net.TCPAddrFromAddrPort(addr)
	return evloop.Start(evloop.Config{
		Listen:           addr,
		HalfCloseTimeout: p.opts.HalfCloseTimeout,
		WriteTimeout:     p.opts.WriteTimeout,
		ConnectTimeout:   p.opts.ConnectTimeout,
		NoDelayOff:       !p.opts.noDelay(),
		ListenSocket:     keepAlive, // accepted sockets inherit it
		BackendSocket:    keepAlive,
		OnOpen: func(c *evloop.Conn) evloop.Decision {
			la := local
			if wildcard {
				la = net.TCPAddrFromAddrPort(unmapPort(c.Local()))
			}
			return p.engineOpen(port, la, c)
		},
		OnHandOff: func(fd int, _ netip.AddrPort) { p.engineHandOff(fd, port) },
		OnConnect: func(c *evloop.Conn) {
			p.health.Succeeded(c.Data.(*engineConn).addr)
		},
		OnDialError: func(c *evloop.Conn, err error) (netip.AddrPort, bool) {
			return c.Data.(*engineConn).dialFailed(err)
		},
		OnData: func(c *evloop.Conn, clientToBackend bool, n int) {
			if rec := c.Data.(*engineConn).rec; clientToBackend {
				rec.AddIn(n)
			} else {
				rec.AddOut(n)
			}
		},
		OnClose: func(c *evloop.Conn, in, out int64, err error) {
			c.Data.(*engineConn).closed(in, out, err)
		},
	})
}

func unmapPort(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// engineConn is a connection the event loop forwards: what serve, admitConn and
// dialBackend keep for a goroutine-path connection. It is the connection manager's closer.
type engineConn struct {
	p     *Proxy
	ec    *evloop.Conn
	rec   *connection.Record
	rc    RouteContext
	lease balance.Lease
	addr  string // the target being dialed or connected
	tried []string
	start time.Time
}

// Close kills the connection from any goroutine (timeouts, Stop).
func (e *engineConn) Close() error {
	e.ec.Close()
	return nil
}

// engineOpen admits and routes an accepted connection in the loop, as serve and admitConn
// do, and picks its target; a connection the loop cannot forward by itself is handed off
// before anything is recorded, so serve then does all of it.
func (p *Proxy) engineOpen(port int, local net.Addr, c *evloop.Conn) evloop.Decision {
	set := p.set.Load()
	client := c.Peer()
	q := MatchQuery{Port: port, ClientIP: client.Addr()}
	if plan, ok := set.ports[port]; !ok || plan.needsHello || plan.plainHTTP || !p.engineRoute(set.matcher.Match(&q)) {
		return evloop.Decision{HandOff: true}
	}
	e := &engineConn{p: p, ec: c, start: time.Now()}
	rec, err := p.conns.Open(client, port, e)
	if err != nil {
		p.reject(refusal{client: client, port: port}, err)
		return evloop.Decision{}
	}
	e.rec = rec
	e.rc = RouteContext{Port: port, ClientIP: client.Addr(), ClientAddr: client, LocalAddr: local, ConnectionID: rec.ID()}
	if p.baseCtx.Err() != nil { // see serve: accepted just before Stop
		p.conns.Close(rec)
		return evloop.Decision{}
	}
	if _, _, ok := p.admitConn(set, nil, rec, &e.rc); !ok {
		p.conns.Close(rec)
		return evloop.Decision{}
	}
	target, ok := e.next()
	if !ok {
		p.conns.Close(rec)
		return evloop.Decision{}
	}
	c.Data = e
	return evloop.Decision{Target: target}
}

// engineRoute reports whether the loop can forward connections of route by itself: a plain
// forward without TLS to IP-literal hosts chosen by the route's balancer, with connection
// checks that run no user code.
func (p *Proxy) engineRoute(r *Route) bool {
	if r == nil || r.state == nil || r.Action.Type != ActionForward || r.Action.TLS != nil || r.state.tls != nil ||
		len(r.state.targets) == 0 || admissionFor(r, "").deferred() {
		return false
	}
	if _, ok := p.sec.(DefaultSecurityChecker); !ok {
		return false
	}
	t := &r.state.targets[0]
	if t.HostFunc != nil || t.PortFunc != nil || len(t.Host) == 0 {
		return false
	}
	for _, h := range t.Host {
		if _, err := netip.ParseAddr(h); err != nil {
			return false
		}
	}
	return true
}

// next picks the next host (as dialBackend does) and takes its lease.
func (e *engineConn) next() (netip.AddrPort, bool) {
	p, rc := e.p, &e.rc
	if len(e.tried) >= hostCount(rc.Route, 0) {
		p.log.Debug("every target failed: closing client", "id", rc.ConnectionID, "route", rc.RouteName, "client", rc.ClientAddr, "tried", len(e.tried))
		return netip.AddrPort{}, false
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
	return ap, true
}

// dialFailed marks the host failed (passive health) and moves on to the next one.
func (e *engineConn) dialFailed(err error) (netip.AddrPort, bool) {
	p := e.p
	e.lease.Release()
	if p.baseCtx.Err() != nil {
		return netip.AddrPort{}, false // shutting down: not the target's fault
	}
	p.health.Failed(e.addr, err)
	p.logConn("backend dial failed", "id", e.rc.ConnectionID, "route", e.rc.RouteName, "target", e.addr, "err", err)
	return e.next()
}

// closed ends the connection's record, as the end of a pipe does.
func (e *engineConn) closed(in, out int64, err error) {
	e.lease.Release()
	e.p.logConn("connection closed", "id", e.rc.ConnectionID, "route", e.rc.RouteName, "bytesIn", in, "bytesOut", out, "err", err, "engine", "eventloop")
	e.p.conns.Close(e.rec)
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
