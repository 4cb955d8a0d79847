//go:build linux

package evloop

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrSniffTimeout is reported when a connection OnOpen asked to sniff (Decision.Sniff) sent
// nothing OnHello could decide on within Config.SniffTimeout.
var ErrSniffTimeout = errors.New("evloop: no usable initial data in time")

// ErrRefused is reported for a connection OnHello refused.
var ErrRefused = errors.New("evloop: refused after its first bytes")

// errSniffTooLarge ends a connection whose first bytes reached Config.SniffMax undecided.
var errSniffTooLarge = errors.New("evloop: initial data over the sniffing cap")

// sniff reads a sniffing connection's first bytes into its own buffer (the loop buffer is
// shared by every connection, and the bytes must survive until the backend takes them), then
// asks OnHello. A decision with a target dials it with the bytes read queued for the
// backend, so they reach it first, exactly once.
func (l *loop) sniff(c *Conn) {
	src := &c.s[0]
	max := l.srv.sniffMax
	drained := false // a read found the socket empty: its next bytes raise a new edge
	for !src.eof && len(c.hello) < max {
		want := min(len(l.buf), max-len(c.hello))
		n, err := recv(src.fd, l.buf[:want])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			drained = true
			break
		}
		if err != nil {
			l.closeConn(c, fmt.Errorf("evloop: reading client: %w", err))
			return
		}
		if n == 0 {
			src.eof = true // decided on what came; the EOF is passed on after it
			break
		}
		c.hello = append(c.hello, l.buf[:n]...)
		if n < want && !src.rdhup {
			drained = true
			break
		}
	}
	if len(c.hello) == 0 {
		if src.eof {
			l.closeConn(c, fmt.Errorf("evloop: client closed before sending: %w", ErrSniffTimeout))
		}
		return
	}
	d := Decision{Sniff: true}
	if f := l.srv.cfg.OnHello; f != nil {
		d = f(c, c.hello)
	}
	switch {
	case d.Target.IsValid() && !d.HandOff:
	case d.Sniff && !src.eof && len(c.hello) < max:
		return // wait for more
	case d.Sniff:
		l.closeConn(c, errSniffTooLarge)
		return
	default:
		l.closeConn(c, ErrRefused)
		return
	}
	c.sniffing = false
	c.sniffAt = 0
	c.s[1].pend = c.hello // flushed first when the connect finishes
	c.hello = nil
	// Stopped at the sniffing cap with bytes (or the FIN) possibly still queued: they raised
	// their edge already, so read the client once the backend has taken the sniffed bytes.
	c.s[1].more = !drained && !src.eof
	l.dial(c, d.Target)
}

// WriteNow writes b to the client without waiting, best effort (a TLS alert before a
// refusal); only in the loop's callbacks.
func (c *Conn) WriteNow(b []byte) {
	if len(b) > 0 && c.s[0].fd >= 0 {
		_, _ = send(c.s[0].fd, b)
	}
}
