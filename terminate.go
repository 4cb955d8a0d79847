package smartproxy

import (
	"crypto/tls"
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
// ALPN: only forward routes that are HTTP-only (they have HTTP match
// criteria or HTTP actions, such as options.backendProtocol) offer "h2"
// and "http/1.1"; other terminating routes offer nothing, so a client
// asking for its own protocol (postgres asks for "postgresql") is not
// refused. Without ALPN the decrypted stream is watched for up to 500 ms:
// an HTTP/1.x request goes to the HTTP layer, anything else (or silence,
// for protocols where the server speaks first) is forwarded as TCP.
func (p *Proxy) terminate(pc *proxiedConn, peek *forwarding.PeekConn, rec *connection.Record, rc *RouteContext) {
	route := rc.Route
	rt := route.state.tls
	cfg := rt.serverConfig(p.tlsBase, p.certs)
	h := route.state.http
	if h != nil && h.httpOnly && route.Action.Type == ActionForward {
		cfg = h.alpnConfig(cfg)
	}
	// The meter sits beneath TLS so that the HTTP layer, which must see
	// the *tls.Conn itself, still counts the connection's traffic.
	meter := &meterConn{Conn: peek, rec: rec}
	tconn := tls.Server(meter, cfg)
	_ = peek.SetDeadline(pc.initialDeadline)
	if err := tconn.HandshakeContext(p.baseCtx); err != nil {
		p.logConn("TLS handshake failed", "id", rc.ConnectionID, "route", rc.RouteName, "client", rc.ClientAddr, "err", err)
		return
	}
	_ = peek.SetDeadline(time.Time{})
	state := tconn.ConnectionState()
	rc.TLSVersion = state.Version
	if rc.Domain == "" {
		rc.Domain = normalizeDomain(state.ServerName)
	}
	switch route.Action.Type {
	case ActionSocketHandler:
		p.runHandler(tconn, rec, rc)
	case ActionForward:
		client := net.Conn(tconn)
		var hconn net.Conn
		switch state.NegotiatedProtocol {
		case "h2", "http/1.1":
			hconn = tconn
		default:
			tpeek := forwarding.NewPeekConn(tconn)
			defer tpeek.Release()
			switch sniffStream(tpeek, min(terminatedSniffWait, p.opts.InitialDataTimeout), true, false) {
			case streamHTTP:
				hconn = &tlsPeekConn{PeekConn: tpeek, state: state}
			default:
				client = tpeek // replays what the sniff read
			}
		}
		if hconn != nil {
			meter.on.Store(true)
			admitted := route // the route the connection-level checks passed for
			if deferChecksToRequests(route) {
				admitted = nil // none ran: every request is checked in full
			}
			p.http.serve(hconn, &httpConn{rc: *rc, route: admitted, terminated: true, rec: rec, meter: meter})
			return
		}
		if h != nil && h.httpOnly {
			p.logConn("closing connection: route needs HTTP", "id", rc.ConnectionID, "route", rc.RouteName, "client", rc.ClientAddr)
			return
		}
		var reencrypt *routeTLS
		if rt.mode == TLSTerminateAndReencrypt {
			reencrypt = rt
		}
		backend, ok := p.dialBackend(pc, rc, reencrypt)
		if !ok {
			return
		}
		defer backend.Close()
		p.pipe(client, backend, rec, rc)
	}
}
