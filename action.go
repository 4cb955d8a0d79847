package smartproxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"runtime/debug"
	"strconv"

	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/gosmartproxy/smartproxy/forwarding"
)

// pickTarget resolves the backend address of a forward route for one
// connection: the first target (by priority), host round-robin among its
// hosts unless HostFunc decides, port from PortFunc, Port or, for
// PreservePort, the port the client connected to.
func pickTarget(route *Route, rc *RouteContext) (string, error) {
	st := route.state
	if len(st.targets) == 0 {
		return "", fmt.Errorf("route %q has no targets", route.Name)
	}
	t := &st.targets[0]
	var host string
	switch {
	case t.HostFunc != nil:
		host = t.HostFunc(rc)
	case len(t.Host) == 1:
		host = t.Host[0]
	default:
		host = t.Host[(st.rr.Add(1)-1)%uint64(len(t.Host))]
	}
	port := int(t.Port)
	switch {
	case t.PortFunc != nil:
		port = t.PortFunc(rc)
	case t.Port == PreservePort:
		port = rc.Port
	}
	if host == "" || port < 1 || port > 65535 {
		return "", fmt.Errorf("route %q: target resolved to invalid address %q:%d", route.Name, host, port)
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), nil
}

// forward dials the route's target, replays the bytes read for routing and
// then copies both ways (splicing when both ends are TCP) until done.
func (p *Proxy) forward(pc *proxiedConn, peek *forwarding.PeekConn, rec *connection.Record, rc *RouteContext) {
	backend, ok := p.dialBackend(pc, rc, nil)
	if !ok {
		return
	}
	if b := peek.Buffered(); len(b) > 0 {
		n, err := backend.Write(b)
		rec.AddIn(n)
		if err != nil {
			p.logConn("replaying initial bytes failed", "id", rc.ConnectionID, "err", err)
			return
		}
		// The replayed bytes are consumed, so the pooled buffer goes back.
		peek.Discard(n)
	}
	// Everything read for routing now sits at the backend: the rest of the
	// stream is the bare socket, which lets the copier splice.
	peek.Release()
	p.pipe(peek.Unwrap(), backend, rec, rc)
}

// dialBackend connects to the route's target and registers the backend
// with pc so timeouts and shutdown can close it. With rt set (terminate-
// and-reencrypt) the backend connection is TLS, handshaken here. It
// reports false, having logged why, when the connection must end.
func (p *Proxy) dialBackend(pc *proxiedConn, rc *RouteContext, rt *routeTLS) (net.Conn, bool) {
	addr, err := pickTarget(rc.Route, rc)
	if err != nil {
		p.log.Warn("cannot forward", "id", rc.ConnectionID, "err", err)
		return nil, false
	}
	ctx, cancel := context.WithTimeout(p.baseCtx, p.opts.ConnectTimeout)
	defer cancel()
	backend, err := p.dial(ctx, addr)
	if err != nil {
		p.logConn("backend dial failed", "id", rc.ConnectionID, "route", rc.RouteName, "target", addr, "err", err)
		return nil, false
	}
	if !pc.setBackend(backend) {
		return nil, false // killed while dialing
	}
	p.tuneTCP(backend)
	if rt == nil {
		return backend, true
	}
	host, _, _ := net.SplitHostPort(addr)
	tc := tls.Client(backend, rt.backendConfig(host, rc.Domain))
	if err := tc.HandshakeContext(ctx); err != nil {
		p.log.Warn("backend TLS handshake failed", "id", rc.ConnectionID, "route", rc.RouteName, "target", addr, "err", err)
		return nil, false
	}
	return tc, true
}

// pipe copies between client and backend until both are done, counting
// bytes into the connection record.
func (p *Proxy) pipe(client, backend net.Conn, rec *connection.Record, rc *RouteContext) {
	res := forwarding.Pipe(p.baseCtx, client, backend, forwarding.PipeOptions{
		OnData: func(dir forwarding.Direction, n int) {
			if dir == forwarding.ClientToBackend {
				rec.AddIn(n)
			} else {
				rec.AddOut(n)
			}
		},
		HalfCloseTimeout: p.opts.HalfCloseTimeout,
	})
	p.logConn("connection closed", "id", rc.ConnectionID, "route", rc.RouteName,
		"bytesIn", res.ClientToBackend, "bytesOut", res.BackendToClient, "err", res.Err)
}

func (p *Proxy) dial(ctx context.Context, addr string) (net.Conn, error) {
	if p.opts.Dial != nil {
		return p.opts.Dial(ctx, "tcp", addr)
	}
	d := net.Dialer{KeepAliveConfig: p.keepAliveConfig()}
	if !p.opts.keepAlive() {
		d.KeepAlive = -1
	}
	return d.DialContext(ctx, "tcp", addr)
}

// runHandler calls the route's socket handler with a conn that first
// replays the routing bytes and counts traffic for the connection
// manager. A panic closes this connection only.
func (p *Proxy) runHandler(client net.Conn, rec *connection.Record, rc *RouteContext) {
	ctx, cancel := context.WithCancel(p.baseCtx)
	defer cancel()
	conn := &countingConn{Conn: client, rec: rec}
	defer func() {
		if v := recover(); v != nil {
			p.log.Error("socket handler panicked", "id", rc.ConnectionID, "route", rc.RouteName, "panic", v, "stack", string(debug.Stack()))
		}
	}()
	if err := rc.Route.Action.SocketHandler(ctx, conn, rc); err != nil {
		p.log.Warn("socket handler failed", "id", rc.ConnectionID, "route", rc.RouteName, "err", err)
	}
}

// countingConn reports a socket handler's traffic to the connection
// manager, which keeps the inactivity timeout and metrics right.
type countingConn struct {
	net.Conn
	rec *connection.Record
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.rec.AddIn(n)
	}
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if n > 0 {
		c.rec.AddOut(n)
	}
	return n, err
}

// CloseWrite half-closes the connection when the underlying conn can.
func (c *countingConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("smartproxy: %T cannot half-close", c.Conn)
}
