package smartproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"runtime/debug"
	"time"

	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/gosmartproxy/smartproxy/forwarding"
	"github.com/gosmartproxy/smartproxy/internal/balance"
)

// forward dials the route's target, replays the bytes read for routing and
// then copies both ways (splicing when both ends are TCP) until done. With
// detach, it may hand the connection to a pipe that outlives the calling
// goroutine (see pipeDetached) and then reports ownedByPipe: the pipe owns
// pc and rec from then on and finishes them itself (see Connection
// ownership in serve.go).
func (p *Proxy) forward(pc *proxiedConn, peek *forwarding.PeekConn, rec *connection.Record, rc *RouteContext, detach bool) connOwner {
	backend, ok := p.dialBackend(pc, rc, nil)
	if !ok {
		return ownedByServe
	}
	if b := peek.Buffered(); len(b) > 0 {
		n, err := backend.Write(b)
		rec.AddIn(n)
		if err != nil {
			p.logConn("replaying initial bytes failed", "id", rc.ConnectionID, "err", err)
			_ = backend.Close() // ends the target's active-connection count
			return ownedByServe
		}
		// The replayed bytes are consumed, so the pooled buffer goes back.
		peek.Discard(n)
	}
	// Everything read for routing now sits at the backend: the rest of the
	// stream is the bare socket, which lets the copier splice.
	peek.Release()
	client := peek.Unwrap()
	if r, ok := client.(*fastReplayConn); ok && len(r.pending) == 0 {
		// The event loop's hand-off (enginehttp_linux.go) replayed all it had read: the bare
		// socket again, which the parker can watch and the copier splice.
		client = r.Conn
	}
	if detach && p.parker != nil {
		p.pipeDetached(pc, client, backend, rec, rc)
		return ownedByPipe
	}
	p.pipe(client, backend, rec, rc)
	return ownedByServe
}

// dialBackend connects to one of the route's target hosts and registers
// the backend with pc so timeouts and shutdown can close it. A host that
// refuses or times out is marked failed (passive health) and the next one
// is tried, once per host, all within ConnectTimeout. With rt set
// (terminate-and-reencrypt) the backend connection is TLS, handshaken
// here. The returned conn counts as active on its target (least-
// connections) until it is closed. It reports false, having logged why,
// when the connection must end.
func (p *Proxy) dialBackend(pc *proxiedConn, rc *RouteContext, rt *routeTLS) (net.Conn, bool) {
	ctx, cancel := context.WithTimeout(p.baseCtx, p.opts.ConnectTimeout)
	defer cancel()
	attempts := hostCount(rc.Route, 0)
	var triedBuf [4]string
	tried := triedBuf[:0]
	// One allocation holds the lease and, on success, the backend conn; a
	// failed attempt's lease is released and reused.
	lc := new(leasedConn)
	for attempt := range attempts {
		addr, err := pick(rc.Route, 0, rc, tried, p.health)
		if errors.Is(err, ErrNoHealthyTarget) {
			// Expected while targets are down, and possibly for every
			// client: debug only. The targets' transitions are logged.
			p.log.Debug("no healthy target: closing client", "id", rc.ConnectionID, "route", rc.RouteName, "client", rc.ClientAddr, "tried", len(tried))
			return nil, false
		}
		if err != nil {
			p.log.Warn("cannot forward", "id", rc.ConnectionID, "err", err)
			return nil, false
		}
		tried = append(tried, addr)
		p.health.Acquire(&lc.lease, addr) // before the dial, so a burst spreads
		// Each remaining host gets an equal share of the time left, so one
		// black-holed host cannot use up the budget of all the others.
		budget := time.Until(deadlineOf(ctx)) / time.Duration(attempts-attempt)
		dctx, dcancel := context.WithTimeout(ctx, budget)
		backend, err := p.dial(dctx, addr)
		dcancel()
		if err != nil {
			lc.lease.Release()
			if p.baseCtx.Err() != nil {
				return nil, false // shutting down: not the target's fault
			}
			p.backendFailed(addr, err)
			p.logConn("backend dial failed", "id", rc.ConnectionID, "route", rc.RouteName, "target", addr, "err", err)
			if ctx.Err() != nil {
				return nil, false
			}
			continue
		}
		if v := rc.Route.state.sendPP; v != 0 {
			if err := sendProxyHeader(backend, v, rc, deadlineOf(dctx)); err != nil {
				_ = backend.Close()
				lc.lease.Release()
				p.logConn("backend refused the PROXY header", "id", rc.ConnectionID, "route", rc.RouteName, "target", addr, "err", err)
				if ctx.Err() != nil || p.baseCtx.Err() != nil {
					return nil, false
				}
				continue
			}
		}
		if rt != nil {
			// Re-encrypt before registering the backend: a failed handshake
			// (wrong CA, name or protocol) tries the next host. It does not
			// mark the host down: trust is the route's setting, and another
			// route may verify the same host fine.
			host, _, _ := net.SplitHostPort(addr)
			tc := tls.Client(backend, rt.backendConfig(host, rc.Domain))
			if err := tc.HandshakeContext(ctx); err != nil {
				_ = backend.Close()
				lc.lease.Release()
				if p.baseCtx.Err() != nil {
					return nil, false
				}
				p.logConn("backend TLS handshake failed", "id", rc.ConnectionID, "route", rc.RouteName, "target", addr, "err", err)
				if ctx.Err() != nil {
					return nil, false
				}
				continue
			}
			backend = tc
		}
		p.health.Succeeded(addr)
		if !pc.setBackend(backend) {
			lc.lease.Release()
			return nil, false // killed while dialing
		}
		p.tuneTCP(backend)
		lc.Conn = backend
		return lc, true
	}
	p.log.Debug("every target failed: closing client", "id", rc.ConnectionID, "route", rc.RouteName, "client", rc.ClientAddr, "tried", len(tried))
	return nil, false
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// leasedConn is a backend conn that ends its target's active-connection
// count when closed. Unwrap lets the copier splice the socket beneath and
// find its CloseWrite.
type leasedConn struct {
	net.Conn
	lease balance.Lease
}

// Close closes the conn and releases the lease (idempotent).
func (c *leasedConn) Close() error {
	c.lease.Release()
	return c.Conn.Close()
}

// Unwrap returns the conn beneath.
func (c *leasedConn) Unwrap() net.Conn { return c.Conn }

// pipe copies between client and backend until both are done, counting
// bytes into the connection record. Pipe closes both conns.
func (p *Proxy) pipe(client, backend net.Conn, rec *connection.Record, rc *RouteContext) {
	res := forwarding.Pipe(p.baseCtx, client, backend, p.pipeOptions(rec))
	p.pipeDone(res, rc)
}

// pipeDetached is pipe for connections that may sit idle for long: the
// pipe runs on its own goroutines, which the idle parker takes away while
// the connection is idle, so the serving goroutine (and its stack) ends
// now. The pipe counts as a handler until done, so Stop still waits for
// it; done closes the record and pc as serve would have.
func (p *Proxy) pipeDetached(pc *proxiedConn, client, backend net.Conn, rec *connection.Record, rc *RouteContext) {
	p.handlers.Add(1)
	piped := forwarding.StartPipe(p.baseCtx, client, backend, p.pipeOptions(rec), func(res forwarding.PipeResult) {
		defer p.handlers.Done()
		p.pipeDone(res, rc)
		p.finish(rec, pc) // the pipe owns the connection now (serve.go)
	})
	pc.setPipe(piped)
}

// pipeOptions counts a pipe's bytes into rec and parks it when idle.
func (p *Proxy) pipeOptions(rec *connection.Record) forwarding.PipeOptions {
	return forwarding.PipeOptions{
		OnData: func(dir forwarding.Direction, n int) {
			if dir == forwarding.ClientToBackend {
				rec.AddIn(n)
			} else {
				rec.AddOut(n)
			}
		},
		HalfCloseTimeout: p.opts.HalfCloseTimeout,
		WriteTimeout:     p.opts.WriteTimeout,
		Parker:           p.parker,
	}
}

func (p *Proxy) pipeDone(res forwarding.PipeResult, rc *RouteContext) {
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
	rc.Draining = p.draining
	conn := &meterConn{Conn: client, rec: rec}
	conn.on.Store(true)
	if rp, ok := client.(*replayConn); ok {
		// A handed-over request: the HTTP layer counted its bytes as it
		// read them; their replay is not traffic.
		conn.uncounted = len(rp.pending)
	}
	start := time.Now()
	defer func() {
		if v := recover(); v != nil {
			p.log.Error("socket handler panicked", "id", rc.ConnectionID, "route", rc.RouteName, "panic", v, "stack", string(debug.Stack()))
		}
		// The counterpart of "connection routed", as forwarded
		// connections log it when their pipe ends.
		info := rec.Info()
		p.logConn("connection closed", "id", rc.ConnectionID, "route", rc.RouteName, "handler", true,
			"bytesIn", info.BytesIn, "bytesOut", info.BytesOut, "duration", time.Since(start))
	}()
	if err := rc.Route.Action.SocketHandler(ctx, conn, rc); err != nil {
		p.log.Warn("socket handler failed", "id", rc.ConnectionID, "route", rc.RouteName, "err", err)
	}
}
