package smartproxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"

	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/gosmartproxy/smartproxy/forwarding"
)

// terminate completes the TLS handshake for a terminating route and then
// runs the route's action on the decrypted stream: the HTTP layer when the
// stream is HTTP, else forward (re-encrypting for terminate-and-reencrypt)
// or the socket handler.
//
// ALPN: forward routes offer "h2" and "http/1.1" to clients that ask for
// either (see alpnConfigs); a negotiated one goes to the HTTP layer. A
// client asking only for its own protocol (postgres asks for
// "postgresql") is offered nothing and its handshake still succeeds.
// Without a negotiated protocol the decrypted stream is classified like a
// plain port's (classifyHTTP): anything that may be an HTTP request goes
// to the HTTP layer, and the rest is forwarded as TCP — only to a route
// without HTTP-level rules. When some terminating route on the port has
// such rules (portPlan.termHTTP) the stream is watched until
// InitialDataTimeout and silence closes it; otherwise silence for 500 ms
// means a protocol where the server speaks first and the stream is
// forwarded as TCP.
//
// It reports who finishes the connection: serve, or the event loop it moved to.
func (p *Proxy) terminate(set *routeSet, pc *proxiedConn, peek *forwarding.PeekConn, rec *connection.Record, rc *RouteContext, adm connAdmission) connOwner {
	route := rc.Route
	rt := route.state.tls
	cfg := rt.serverConfig(p.tlsBase, p.certs)
	if a := set.alpn[route]; a != nil {
		cfg = a.config(cfg)
	}
	// The meter sits beneath TLS so that the HTTP layer, which must see
	// the *tls.Conn itself, still counts the connection's traffic.
	// lc lets the tls.Conn move to an event loop after the handshake (adoptTLS).
	meter := &meterConn{Conn: peek, rec: rec}
	lc := &tlsLoopConn{Conn: meter}
	tconn := tls.Server(lc, cfg)
	_ = peek.SetDeadline(pc.initialDeadline)
	hsStart := time.Now()
	err := tconn.HandshakeContext(p.baseCtx)
	state := tconn.ConnectionState()
	p.ops.handshake(err, &state, time.Since(hsStart))
	if err != nil {
		if errors.Is(err, ErrNoCertificate) {
			p.warnNoCertificate(rc.RouteName, rc.Domain, err)
		}
		p.logConn("TLS handshake failed", "id", rc.ConnectionID, "route", rc.RouteName, "client", rc.ClientAddr, "err", err)
		return ownedByServe
	}
	_ = peek.SetDeadline(time.Time{})
	rc.TLSVersion = state.Version
	if rc.Domain == "" {
		rc.Domain = normalizeDomain(state.ServerName)
	}
	h := route.state.http
	switch route.Action.Type {
	case ActionSocketHandler:
		p.runHandler(tconn, rec, rc)
	case ActionForward:
		client := net.Conn(tconn)
		var hconn net.Conn
		switch np := state.NegotiatedProtocol; {
		case route.state.sendPP != 0:
			// A route that sends PROXY headers forwards TCP only
			// (proxyproto_send.go).
		case np == "h2" || np == "http/1.1":
			hconn = tconn
		default:
			tpeek := forwarding.NewPeekConn(tconn)
			defer tpeek.Release()
			strict := set.ports[rc.Port].termHTTP || h != nil
			wait := min(terminatedSniffWait, p.opts.InitialDataTimeout)
			if strict {
				wait = time.Until(pc.initialDeadline)
			}
			switch sniffStream(tpeek, wait, true, false, strict) {
			case streamHTTP:
				if bytes.HasPrefix(tpeek.Buffered(), []byte(h2ClientPreface[:16])) {
					// HTTP/2 over TLS needs ALPN h2 (RFC 9113 §3.3); as an
					// HTTP/1 request it would reach the backend as "PRI *".
					p.logConn("closing connection: HTTP/2 preface without ALPN h2", "id", rc.ConnectionID, "route", rc.RouteName, "client", rc.ClientAddr)
					_ = tconn.SetWriteDeadline(time.Now().Add(refuseWait))
					_, _ = io.WriteString(tconn, badPrefaceResponse)
					return ownedByServe
				}
				hconn = &tlsPeekConn{PeekConn: tpeek, state: state}
			case streamNone:
				if strict {
					p.logConn("closing connection: no usable initial data", "id", rc.ConnectionID, "route", rc.RouteName, "client", rc.ClientAddr)
					return ownedByServe
				}
				client = tpeek // silence: the server may speak first
			default:
				client = tpeek // replays what the sniff read
			}
		}
		if hconn != nil {
			meter.on.Store(true)
			hc := &httpConn{rc: *rc, admission: adm, terminated: true, rec: rec, meter: meter, owner: pc}
			if p.adoptTLS(pc, peek, lc, tconn, hconn, hc, &state) {
				return ownedByLoop
			}
			p.http.serve(hconn, hc)
			return ownedByServe
		}
		if h != nil && h.httpOnly {
			p.logConn("closing connection: route needs HTTP", "id", rc.ConnectionID, "route", rc.RouteName, "client", rc.ClientAddr)
			return ownedByServe
		}
		var reencrypt *routeTLS
		if rt.mode == TLSTerminateAndReencrypt {
			reencrypt = rt
		}
		backend, ok := p.dialBackend(pc, rc, reencrypt)
		if !ok {
			return ownedByServe
		}
		defer backend.Close()
		p.pipe(client, backend, rec, rc)
	}
	return ownedByServe
}

// badPrefaceResponse answers an HTTP/2 preface on a TLS connection that
// did not negotiate h2.
const badPrefaceResponse = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 41\r\nConnection: close\r\n\r\nHTTP/2 over TLS needs ALPN h2 (RFC 9113)\n"
