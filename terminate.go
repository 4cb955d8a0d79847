package smartproxy

import (
	"crypto/rand"
	"crypto/tls"
	"time"

	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/gosmartproxy/smartproxy/forwarding"
)

// newTLSBase is the template every terminating route's tls.Config is cloned
// from. Its session ticket key is set explicitly so that every clone, over
// all routes and route reloads, issues and accepts the same tickets.
func newTLSBase() (*tls.Config, error) {
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return nil, err
	}
	base := &tls.Config{MinVersion: tls.VersionTLS12}
	base.SetSessionTicketKeys([][32]byte{key})
	return base, nil
}

// terminate completes the TLS handshake for a terminating route and then
// runs the route's action on the decrypted stream: forward (re-encrypting
// for terminate-and-reencrypt) or the socket handler.
func (p *Proxy) terminate(pc *proxiedConn, peek *forwarding.PeekConn, rec *connection.Record, rc *RouteContext) {
	rt := rc.Route.state.tls
	tconn := tls.Server(peek, rt.serverConfig(p.tlsBase, p.certs))
	_ = peek.SetDeadline(time.Now().Add(p.opts.InitialDataTimeout))
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
	switch rc.Route.Action.Type {
	case ActionSocketHandler:
		p.runHandler(tconn, rec, rc)
	case ActionForward:
		var reencrypt *routeTLS
		if rt.mode == TLSTerminateAndReencrypt {
			reencrypt = rt
		}
		backend, ok := p.dialBackend(pc, rc, reencrypt)
		if !ok {
			return
		}
		p.pipe(tconn, backend, rec, rc)
	}
}
