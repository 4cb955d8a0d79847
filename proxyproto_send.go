package smartproxy

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pires/go-proxyproto"
)

// Sending the PROXY protocol to backends. A forward route's TCP
// connections (plain forward, passthrough, and terminating routes
// without HTTP features, whose decrypted stream is then forwarded as TCP
// whatever it carries) send the header as the first bytes of every
// backend connection, before a re-encrypting route's TLS handshake. It
// names the real client (also one a trusted sender named, so chains of
// proxies keep it) and the address the client connected to (a received
// header's destination, else this proxy's socket).
//
// HTTP-layer routes cannot send one, and are refused at validation: the
// HTTP layer pools backend connections across clients (and HTTP/2
// multiplexes them), so a header, which is sent once per backend
// connection, would name whichever client opened it. Per-client pools
// would cost a backend connection per client address and defeat the
// pooling; a route that needs the client address over HTTP gets it in
// X-Forwarded-For, X-Real-IP and Forwarded instead.

// errSendProxyHTTP is why a route with HTTP features cannot send a
// PROXY header.
var errSendProxyHTTP = errors.New("sendProxyProtocol needs a TCP route: this route has HTTP features (path, headers, method, target match, HTTP actions or checks, or domains on a route without TLS, which match the Host header), and the HTTP layer shares backend connections between clients, so a header sent once per connection would name the wrong client; use X-Forwarded-For (set by the HTTP layer), or a TCP route: no TLS without domains, passthrough, or terminate without HTTP features")

// compileSendProxy checks the route's PROXY sending settings and returns
// the version its TCP connections send (0: none). TCP connections go to
// the first target by priority, so that target's setting rules.
func (v *routeValidator) compileSendProxy(r *Route, st *routeState) byte {
	a := &r.Action
	checkVersion := func(field string, ver int) {
		if ver != 0 && ver != 1 && ver != 2 {
			v.fail(field, fmt.Errorf("must be 1 or 2, got %d", ver))
		}
	}
	checkVersion("action.proxyProtocolVersion", a.ProxyProtocolVersion)
	sends := a.SendProxyProtocol
	for i := range a.Targets {
		t := &a.Targets[i]
		checkVersion(fmt.Sprintf("action.targets[%d].proxyProtocolVersion", i), t.ProxyProtocolVersion)
		sends = sends || t.SendProxyProtocol
	}
	var first *Target
	if len(st.targets) > 0 {
		first = &st.targets[0]
		sends = sends || first.SendProxyProtocol // a default target's
	}
	switch {
	case !sends:
		return 0
	case a.Type != ActionForward:
		v.fail("action.sendProxyProtocol", errors.New("needs a forward action (a socket handler has no backend)"))
		return 0
	case st.http != nil || (a.TLS == nil && len(st.domains) > 0):
		v.fail("action.sendProxyProtocol", errSendProxyHTTP)
		return 0
	case first == nil:
		return 0 // no targets: checkAction reported it
	case first.SendProxyProtocol:
		return byte(cmp.Or(first.ProxyProtocolVersion, a.ProxyProtocolVersion, 1))
	case a.SendProxyProtocol:
		return byte(cmp.Or(a.ProxyProtocolVersion, 1))
	}
	v.fail("action.sendProxyProtocol", errors.New("only the route's first target (by priority) takes TCP connections: set sendProxyProtocol on the action or on that target"))
	return 0
}

// settleSendProxy finishes the sending settings across routes: a route
// that sends must not share a port with HTTP routes (the HTTP layer
// could route a request to it, without a header); Options.SendProxyProtocol
// applies to the forward routes that can carry a header; and sending
// terminating routes offer no ALPN, so that no client negotiates HTTP/2
// on a stream that is forwarded as TCP.
func settleSendProxy(routes []*Route, ports map[int]portPlan, alpn map[*Route]*alpnConfigs, all bool) error {
	var errs []error
	for i, r := range routes {
		st := r.state
		httpPort := 0
		r.Match.Ports.Each(func(port int) bool {
			if ports[port].plainHTTP {
				httpPort = port
				return false
			}
			return true
		})
		canSend := r.Action.Type == ActionForward && len(st.targets) > 0 && st.http == nil &&
			(r.Action.TLS != nil || len(st.domains) == 0) && httpPort == 0
		if st.sendPP == 0 && all && canSend {
			st.sendPP = 1
		}
		if st.sendPP == 0 {
			continue
		}
		if httpPort != 0 {
			errs = append(errs, &RouteError{Route: routeLabel(r, i), Field: "action.sendProxyProtocol",
				Err: fmt.Errorf("port %d also serves HTTP routes, whose requests could reach this route without a header: give it a port of its own", httpPort)})
		}
		delete(alpn, r)
	}
	return errors.Join(errs...)
}

// proxyHeaderFor builds the header a backend connection of rc starts
// with: the client's address and the one it connected to, or LOCAL when
// either is unknown (a connection from ServeConn without IP addresses).
// Version 2 carries the ALPN the sender named and the authority (the
// SNI, else the sender's).
func proxyHeaderFor(version byte, rc *RouteContext) (*proxyproto.Header, error) {
	src := rc.ClientAddr
	var dst netip.AddrPort
	if h := rc.ProxyHeader; h != nil && !h.Local {
		dst = h.Destination
	} else if a, ok := rc.LocalAddr.(*net.TCPAddr); ok {
		dst = unmapped(a.AddrPort())
	}
	hdr := &proxyproto.Header{Version: version, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
	if src.IsValid() && dst.IsValid() {
		hdr.Command = proxyproto.PROXY
		hdr.TransportProtocol = proxyproto.TCPv4
		if !src.Addr().Is4() || !dst.Addr().Is4() {
			hdr.TransportProtocol = proxyproto.TCPv6
		}
		hdr.SourceAddr = headerAddr(src)
		hdr.DestinationAddr = headerAddr(dst)
	}
	if version == 2 {
		var tlvs []proxyproto.TLV
		authority := rc.Domain
		if h := rc.ProxyHeader; h != nil {
			if h.ALPN != "" {
				tlvs = append(tlvs, proxyproto.TLV{Type: proxyproto.PP2_TYPE_ALPN, Value: []byte(h.ALPN)})
			}
			authority = cmp.Or(authority, h.Authority)
		}
		if authority != "" {
			tlvs = append(tlvs, proxyproto.TLV{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte(authority)})
		}
		if err := hdr.SetTLVs(tlvs); err != nil {
			return nil, fmt.Errorf("PROXY header TLVs: %w", err)
		}
	}
	return hdr, nil
}

// headerAddr is ap without a zone (the header has no room for one).
func headerAddr(ap netip.AddrPort) *net.TCPAddr {
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(ap.Addr().WithZone(""), ap.Port()))
}

// sendProxyHeader writes rc's header to a freshly dialed backend, before
// anything else (a re-encrypting route's handshake included). The write
// is bounded by deadline: a fresh socket takes ~100 bytes at once, so
// only a broken backend waits.
func sendProxyHeader(backend net.Conn, version byte, rc *RouteContext, deadline time.Time) error {
	hdr, err := proxyHeaderFor(version, rc)
	if err != nil {
		return err
	}
	b, err := hdr.Format()
	if err != nil {
		return fmt.Errorf("formatting the PROXY header: %w", err)
	}
	_ = backend.SetWriteDeadline(deadline)
	_, err = backend.Write(b)
	_ = backend.SetWriteDeadline(time.Time{})
	if err != nil {
		return fmt.Errorf("sending the PROXY header: %w", err)
	}
	return nil
}
