//go:build !linux

package smartproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"

	"github.com/gosmartproxy/smartproxy/forwarding"
	"github.com/gosmartproxy/smartproxy/internal/evloop"
)

// engineListenAddr: the event-loop engine is Linux-only; elsewhere every port takes the
// goroutine path.
func (p *Proxy) engineListenAddr(*routeSet, int) (netip.AddrPort, bool) {
	return netip.AddrPort{}, false
}

func (p *Proxy) listenEngine(context.Context, netip.AddrPort, int) (*evloop.Server, net.Listener, error) {
	return nil, nil, errors.ErrUnsupported
}

// adoptTLS: no event loops elsewhere; terminated connections stay on the goroutine path.
func (p *Proxy) adoptTLS(*proxiedConn, *forwarding.PeekConn, *tlsLoopConn, *tls.Conn, net.Conn, *httpConn, *tls.ConnectionState) bool {
	return false
}
