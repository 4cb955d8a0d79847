package smartproxy

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// enginePortFree makes a taken port an error for the event-loop engine as it
// is for the goroutine path, when ReusePort is off. The loops' sockets always
// carry SO_REUSEPORT (one per loop), so their binds alone would succeed beside
// any other process of the same user that holds the port with SO_REUSEPORT
// (another engine, HAProxy), and the two would silently split its
// connections. A socket bound without SO_REUSEPORT (with SO_REUSEADDR, as Go's
// net.Listen binds, so that TIME_WAIT leftovers do not count) fails where a
// listener already holds the port. It is closed again before the loops bind:
// a process binding in between is not caught, a small window at start-up.
func enginePortFree(addr netip.AddrPort) error {
	if addr.Port() == 0 {
		return nil // the loops pick a free port
	}
	family, sa := unix.AF_INET6, unix.Sockaddr(&unix.SockaddrInet6{Port: int(addr.Port()), Addr: addr.Addr().As16()})
	if a := addr.Addr(); a.Is4() || a.Is4In6() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: a.Unmap().As4()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fmt.Errorf("setsockopt: %w", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fmt.Errorf("bind %v: %w (ReusePort shares a port with other processes)", addr, err)
	}
	return nil
}
