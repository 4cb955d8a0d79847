//go:build !linux

package evloop

import (
	"errors"
	"net/netip"
)

// Server is Linux-only (epoll); elsewhere Start fails.
type Server struct{}

// Start reports errors.ErrUnsupported: the event loop needs Linux's epoll.
func Start(Config) (*Server, error) {
	return nil, errors.ErrUnsupported
}

// Addr is the zero AddrPort.
func (*Server) Addr() netip.AddrPort { return netip.AddrPort{} }

// Stats reports zeros.
func (*Server) Stats() (active, in, out int64) { return 0, 0, 0 }

// Close does nothing.
func (*Server) Close() error { return nil }

// Conn is Linux-only.
type Conn struct{}

// Peer is the zero AddrPort.
func (*Conn) Peer() netip.AddrPort { return netip.AddrPort{} }

// Close does nothing.
func (*Conn) Close() {}

// Local is the zero AddrPort.
func (*Conn) Local() netip.AddrPort { return netip.AddrPort{} }

// Shutdown does nothing.
func (*Server) Shutdown() {}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Done returns a closed channel.
func (*Server) Done() <-chan struct{} { return closedChan }

// WriteNow does nothing.
func (*Conn) WriteNow([]byte) {}
