//go:build unix && !aix

package h1client

import (
	"net"
	"syscall"
)

// peekAlive reports whether an idle backend connection can still carry
// a request: a non-blocking peek finds nothing to read (no FIN, no
// reset, no unsolicited bytes such as the 408 some servers send before
// closing an idle connection). One system call; it never waits.
// Connections that are not sockets (from a custom dialer) are trusted.
// (AIX lacks MSG_DONTWAIT: peek_other.go.)
func peekAlive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	var b [1]byte
	err = raw.Read(func(fd uintptr) bool {
		for {
			_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			if err == syscall.EINTR {
				continue
			}
			// Nothing to read yet is the only good answer: 0 bytes is
			// the backend's FIN, data is a protocol violation.
			alive = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
			return true // done: never wait for readability
		}
	})
	return err == nil && alive
}
