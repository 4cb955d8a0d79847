//go:build unix && !aix

package h1client

import (
	"net"
	"syscall"
)

// prober peeks at an idle backend connection: made once per connection
// (the RawConn and the callback), so a probe allocates nothing.
type prober struct {
	raw   syscall.RawConn // nil: not a socket (a custom dialer's conn)
	fn    func(fd uintptr) bool
	alive bool
	b     [1]byte
}

func (p *prober) init(c net.Conn) {
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			p.raw = raw
			p.fn = p.peek
		}
	}
}

// aliveNow reports whether an idle backend connection can still carry
// a request: a non-blocking peek finds nothing to read (no FIN, no
// reset, no unsolicited bytes such as the 408 some servers send before
// closing an idle connection). One system call; it never waits.
// Connections that are not sockets (from a custom dialer) are trusted.
// (AIX lacks MSG_DONTWAIT: peek_other.go.)
func (p *prober) aliveNow() bool {
	if p.raw == nil {
		return true
	}
	p.alive = false
	return p.raw.Read(p.fn) == nil && p.alive
}

func (p *prober) peek(fd uintptr) bool {
	for {
		_, _, err := syscall.Recvfrom(int(fd), p.b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if err == syscall.EINTR {
			continue
		}
		// Nothing to read yet is the only good answer: 0 bytes is the
		// backend's FIN, data is a protocol violation.
		p.alive = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true // done: never wait for readability
	}
}
