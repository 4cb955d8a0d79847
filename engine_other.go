//go:build !linux

package smartproxy

import (
	"context"
	"errors"
	"net"
	"net/netip"

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
