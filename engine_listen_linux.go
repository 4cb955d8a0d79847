//go:build linux

package smartproxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/evloop"
	"golang.org/x/sys/unix"
)

// Where the event loops listen: which ports get them and on which socket.

// engineListenAddr is the address event loops listen on for port, and whether the
// event-loop engine serves it at all: only when chosen, for backends the proxy dials itself
// (no Options.Dial), for ports whose routes the loop can serve (engineEligible). The zero
// address means one socket opened as the goroutine path opens it (Options.Listen's, or
// ListenAddress bound without SO_REUSEPORT), which names the address; with
// Options.ReusePort, each loop binds its own socket to an IP-literal (or empty: every
// interface) ListenAddress.
func (p *Proxy) engineListenAddr(set *routeSet, port int) (netip.AddrPort, bool) {
	if p.opts.Engine != EngineEventLoop || p.opts.Dial != nil || !p.engineEligible(set, port) && !p.engineHTTPPort(set, port) && !p.engineTLSPort(set, port) {
		return netip.AddrPort{}, false
	}
	if !p.opts.ReusePort { // (New refuses ReusePort with Options.Listen)
		return netip.AddrPort{}, true // one socket, opened as the goroutine path opens it
	}
	if p.opts.ListenAddress == "" {
		return netip.AddrPortFrom(netip.IPv6Unspecified(), uint16(port)), true // dual-stack
	}
	a, err := netip.ParseAddr(p.opts.ListenAddress)
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a, uint16(port)), true
}

// listenEngine opens port on event loops. With Options.ReusePort each loop opens its own
// SO_REUSEPORT socket on addr (the kernel spreads connections over them); otherwise the loops
// share one socket opened as the goroutine path opens it (Options.Listen's, or a plain
// listener: a port already taken is an error, not silently shared). A listener from
// Options.Listen that is not a *net.TCPListener is returned for the goroutine path to serve.
// Connections the loops may not forward by themselves are handed to serve, as if accepted by
// acceptLoop.
func (p *Proxy) listenEngine(ctx context.Context, addr netip.AddrPort, port int) (*evloop.Server, net.Listener, error) {
	lfd := -1
	if !addr.IsValid() {
		ln, err := p.listen(ctx, port)
		if err != nil {
			return nil, nil, err
		}
		tl, ok := ln.(*net.TCPListener)
		if !ok {
			return nil, ln, nil // a wrapped or non-TCP listener: only Accept can be trusted
		}
		if lfd, err = dupSocket(tl); err != nil {
			p.log.Debug("event loops cannot take the listener: goroutine path", "port", port, "err", err)
			return nil, ln, nil
		}
		addr = unmapPort(tl.Addr().(*net.TCPAddr).AddrPort())
		_ = tl.Close() // the loops hold the socket through lfd
	}
	ev, err := p.startEngine(addr, lfd)
	if err == nil {
		p.registerLoops(port, ev) // for its TLS connections, when it has any (adoptTLS)
	}
	return ev, nil, err
}

// dupSocket is a close-on-exec dup of a socket's fd (a listener's, for the loops to share;
// a connection's, for a loop to take: the socket then lives on when the Go side's fd closes,
// as close sends no FIN while another fd holds the socket).
func dupSocket(sc syscall.Conn) (int, error) {
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	fd := -1
	cerr := rc.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
	if cerr != nil {
		return -1, fmt.Errorf("socket: %w", cerr)
	}
	if err != nil {
		return -1, fmt.Errorf("dup socket: %w", err)
	}
	return fd, nil
}

// keepAliveIdle is the idle time setListenerKeepAlive sets for idle: Go's 15 s default for 0,
// the kernel's for negative.
func keepAliveIdle(idle time.Duration) time.Duration {
	switch {
	case idle == 0:
		return 15 * time.Second
	case idle < 0:
		return 0
	}
	return idle
}

func unmapPort(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}
