//go:build !linux

package smartproxy

import (
	"errors"
	"net/netip"

	"github.com/gosmartproxy/smartproxy/internal/evloop"
)

// engineListenAddr: the event-loop engine is Linux-only; elsewhere every port takes the
// goroutine path.
func (p *Proxy) engineListenAddr(*routeSet, int) (netip.AddrPort, bool) {
	return netip.AddrPort{}, false
}

func (p *Proxy) listenEngine(netip.AddrPort) (*evloop.Server, error) {
	return nil, errors.ErrUnsupported
}
