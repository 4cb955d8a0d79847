//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package smartproxy

import "golang.org/x/sys/unix"

// reusePortSupported: these systems have SO_REUSEPORT. Only Linux spreads
// new connections over the sockets sharing a port (FreeBSD does that with a
// separate option, SO_REUSEPORT_LB, not set here); elsewhere sharing lets a
// new process bind the port beside the old one (upgrades) but need not
// balance the load.
const reusePortSupported = true

func setReusePort(fd uintptr) error {
	return unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
}
