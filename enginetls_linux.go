//go:build linux

package smartproxy

import (
	"crypto/tls"
	"net"

	"github.com/gosmartproxy/smartproxy/forwarding"
	"github.com/gosmartproxy/smartproxy/internal/evloop"
	"golang.org/x/sys/unix"
)

// TLS-terminated HTTP/1.1 on the event loops. The handshake stays on the goroutine path
// (serve, terminate: the ClientHello, routing by SNI, the certificate lookup, which may block
// on ACME or a user's CertificateStore); once it is done and the connection speaks HTTP/1.1,
// its socket moves to one of the port's loops (evloop's Server.Adopt) with its tls.Conn as
// the loop's Stream (tlsLoopConn), and the loop serves its requests as a plain port's: the
// same loopHTTP, decide and forward, plus the TLS state (X-Forwarded-Proto https, the route's
// TLS match). What the loop does not carry it hands back with the plaintext it read, and the
// goroutine fast path goes on with the same tls.Conn.
//
// A port gets loops for this (engineTLSPort) when it has terminating routes and the loops may
// serve it at all (the built-in matcher, connection manager and security checker, no PROXY
// headers in, the fast path on); the loops hand every connection to serve at accept, since
// all of a TLS connection's first steps are the goroutine path's.

// engineTLSPort reports whether port's TLS-terminated HTTP/1.1 connections may move to its
// loops after their handshake: it has a route whose connections the loop can serve
// (loopTLSRoute), and the loops may serve the port at all.
func (p *Proxy) engineTLSPort(set *routeSet, port int) bool {
	if plan, ok := set.ports[port]; !ok || !plan.terminating || !p.loopHTTPParts(set) {
		return false
	}
	for _, r := range set.routes {
		if routeOnPort(r, port) && loopTLSRoute(r) {
			return true
		}
	}
	return false
}

// adoptTLS moves a terminated connection to its port's loops, right after the handshake,
// before any request was read: hconn is what the HTTP layer would serve (tconn, or the
// plaintext sniffed from it in a tlsPeekConn), hc its connection state. It reports false when
// the connection stays on the goroutine path (no loops, a route the loop cannot forward, bytes
// buffered where the loop cannot take them); true means the loop owns it, its record and
// sockets included.
func (p *Proxy) adoptTLS(pc *proxiedConn, peek *forwarding.PeekConn, lc *tlsLoopConn, tconn *tls.Conn, hconn net.Conn, hc *httpConn, state *tls.ConnectionState) bool {
	v, ok := p.loopSrv.Load(hc.rc.Port)
	if !ok || state.NegotiatedProtocol == "h2" || p.http.fastStop.Load() || !loopTLSRoute(hc.rc.Route) || len(peek.Buffered()) > 0 {
		return false
	}
	if !p.loopHTTPParts(p.set.Load()) {
		return false // the routes changed since the port opened (a custom matcher now)
	}
	var data []byte
	switch c := hconn.(type) {
	case *tls.Conn:
	case *tlsPeekConn:
		data = c.Buffered()
	default:
		return false
	}
	tcp, ok := pc.client.(*net.TCPConn)
	if !ok {
		return false
	}
	fd, err := dupSocket(tcp)
	if err != nil {
		p.log.Debug("TLS connection stays on the goroutine path", "id", hc.rc.ConnectionID, "err", err)
		return false
	}
	lh := &loopHTTP{p: p, initialDeadline: pc.initialDeadline, tlsState: *state}
	lh.hc = httpConn{rc: hc.rc, admission: hc.admission, terminated: true, rec: hc.rec}
	lh.tls = &tlsStream{tc: tconn, lc: lc}
	lh.init(&lh.tlsState)
	lc.onLoop = true
	err = v.(*evloop.Server).Adopt(fd, hc.rc.ClientAddr, lh.tls, data, func(c *evloop.Conn) {
		lh.ec = c
		c.Data = lh
	})
	if err != nil {
		lc.onLoop = false
		_ = unix.Close(fd)
		lh.cancel()
		return false
	}
	if tp, ok := hconn.(*tlsPeekConn); ok {
		tp.Discard(len(data)) // Adopt copied them: the sniff's buffer goes back to its pool
	}
	pc.movedToLoop(lh)
	return true
}

// handBackTLS serves a loop-served TLS connection the loop handed back on the goroutine path:
// the tls.Conn reads and writes the socket again (through a new meter), data (the plaintext
// the loop read and did not serve) comes first, then what the tls.Conn holds.
func (lh *loopHTTP) handBackTLS(fd int, data []byte) {
	p := lh.p
	conn, pc, ok := lh.takeBack(fd)
	if !ok {
		return
	}
	meter := &meterConn{Conn: conn, rec: lh.hc.rec}
	meter.on.Store(true)
	lc := lh.tls.lc
	lc.Conn, lc.onLoop = meter, false
	peek := forwarding.NewPeekConn(&fastReplayConn{Conn: lh.tls.tc, pending: data})
	hconn := &tlsPeekConn{PeekConn: peek, state: lh.tlsState}
	lh.hc.meter, lh.hc.owner = meter, pc
	rec := lh.hc.rec
	p.handlers.Add(1)
	go func() {
		defer p.handlers.Done()
		defer p.finish(rec, pc)
		defer peek.Release()
		if p.baseCtx.Err() == nil {
			p.http.serve(hconn, &lh.hc)
		}
	}()
}

// registerLoops makes srv the loops TLS connections on port move to (adoptTLS), until it ends.
func (p *Proxy) registerLoops(port int, srv *evloop.Server) {
	p.loopSrv.Store(port, srv)
	go func() {
		<-srv.Done()
		p.loopSrv.CompareAndDelete(port, srv)
	}()
}
