//go:build unix && !aix

package h1client

import (
	"io"
	"net"
	"syscall"
)

// prober peeks at an idle backend connection, and writes a request then
// waits for the answer (writeAwait): made once per connection (the
// RawConn and the callbacks), so neither allocates.
type prober struct {
	raw   syscall.RawConn // nil: not a socket (a custom dialer's conn)
	fn    func(fd uintptr) bool
	alive bool
	b     [1]byte

	awaitFn func(fd uintptr) bool
	w       io.Writer // writeAwait's
	out     []byte
	wrote   bool
	werr    error
}

func (p *prober) init(c net.Conn) {
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			p.raw = raw
			p.fn = p.peek
			p.awaitFn = p.await
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
		err := peekNow(fd, p.b[:])
		if err == syscall.EINTR {
			continue
		}
		// Nothing to read yet is the only good answer: 0 bytes is the
		// backend's FIN, data is a protocol violation.
		p.alive = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true // done: never wait for readability
	}
}

// writeAwait writes b through w (the connection's counting writer) and
// returns once the connection is readable, or its read deadline passed,
// without the read that would fail first: a read right after a request
// finds no answer yet (EAGAIN), a system call per exchange, before the
// runtime's poller waits. The poller's readiness mark is cleared when a
// RawConn read begins (before the callback) and set by every later edge;
// the write is made in the first call of the callback, so the answer's
// edge comes after the clear and cannot be lost. That holds only when b
// is all of the request (one write): an answer that came while earlier
// parts went out (a 403 before the body was read) had its edge already,
// cleared by the wait's start, so the wait would last to the deadline.
// What arrived before b (stray bytes on a connection taken unprobed) is
// read with the answer, as it would be without the wait. The caller then
// reads as usual; an error of the wait (a deadline, the interrupt, a
// closed connection) is that read's too.
func (p *prober) writeAwait(w io.Writer, b []byte) error {
	if p.raw == nil {
		_, err := w.Write(b)
		return err
	}
	p.w, p.out, p.wrote, p.werr = w, b, false, nil
	_ = p.raw.Read(p.awaitFn)
	err := p.werr
	p.w, p.out, p.werr = nil, nil, nil
	return err
}

func (p *prober) await(uintptr) bool {
	if !p.wrote {
		p.wrote = true
		_, p.werr = p.w.Write(p.out)
		return p.werr != nil // written: wait for the answer
	}
	return true
}
