//go:build linux

package evloop

import (
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// sock is one side of a proxied connection.
type sock struct {
	fd    int
	gen   int32
	c     *Conn
	other *sock
	// pend holds bytes read from other that this socket has not taken yet; while it is
	// non-empty other is not read (back-pressure).
	pend []byte
	// more: other was left unread while pend was non-empty, so it may hold data that raised
	// no new edge; read it once pend drains.
	more bool
	// rdhup: this socket's peer shut down its sending side (EPOLLRDHUP seen): read until EOF
	// instead of stopping at a short read.
	rdhup bool
	eof   bool // read EOF from this socket
	// drained: a read of this (adopted, streamed) socket came back short or EAGAIN: no
	// read until the next edge (streamRead).
	drained bool
	shut    bool // shut down this socket's sending side (the other side's EOF passed on)
	// bulk: a read from this socket filled the loop buffer; it is spliced from now on.
	bulk bool
	// pipe holds pipeN bytes spliced from other that this socket has not taken yet (the
	// spliced counterpart of pend).
	pipe  kpipe
	pipeN int
	dir   int // 0: client (bytes read from it go to the backend), 1: backend
	// pooled: an idle backend connection of HTTP mode (httppool_linux.go), no Conn's.
	pooled *idleConn
}

// Conn is one proxied connection: its client and backend sockets. Only Peer and Close may be
// used outside the loop's callbacks.
type Conn struct {
	l         *loop
	s         [2]sock
	peer      netip.AddrPort
	target    netip.AddrPort
	connected bool // the backend's non-blocking connect finished
	closed    bool
	closeReq  atomic.Bool
	n         [2]int64 // bytes written to the other side, per source
	err       error
	// halfAt and writeAt are the half-close and write-progress deadlines (monoNow; 0: none);
	// timed says the conn is in its loop's timed set.
	halfAt, writeAt, connectAt, sniffAt int64
	timed                               bool
	// connectFor, when positive, bounds the next backend connect instead of the server's
	// connect timeout (SetConnectTimeout).
	connectFor time.Duration
	// sniffing: OnOpen asked for the first bytes (Decision.Sniff); they collect in hello
	// until OnHello decides.
	sniffing bool
	hello    []byte
	// h: the connection is served in HTTP mode (Decision.HTTP, http_linux.go).
	h *httpState
	// st decodes and encodes an adopted connection's client bytes (Server.Adopt).
	st Stream
	// Data is the owner's state for the connection (set in OnOpen); only the loop's
	// callbacks may use it.
	Data any
}

// Local is the address the client connected to (getsockname: one system call, for
// listeners on a wildcard address; only in OnOpen).
func (c *Conn) Local() netip.AddrPort {
	sa, err := unix.Getsockname(c.s[0].fd)
	if err != nil {
		return netip.AddrPort{}
	}
	return addrOf(sa, netip.AddrPort{})
}

// Target is the backend address being dialed or connected.
func (c *Conn) Target() netip.AddrPort { return c.target }

// Connected reports whether the backend's connect to Target finished (only in the loop's
// callbacks).
func (c *Conn) Connected() bool { return c.connected }

// SetConnectTimeout bounds the next backend connect by d instead of Config.ConnectTimeout (d
// <= 0: the server's again), so an owner trying several targets can share one budget among
// them. Only in OnOpen, OnHello and OnDialError, before the Decision or target it returns.
func (c *Conn) SetConnectTimeout(d time.Duration) { c.connectFor = d }

// Peer is the client's address as accept returned it.
func (c *Conn) Peer() netip.AddrPort { return c.peer }

// Close closes the connection from any goroutine: the loop closes both sockets at its next
// turn and reports ErrClosed to OnClose. Idempotent.
func (c *Conn) Close() {
	if c.closeReq.Swap(true) {
		return
	}
	c.l.post(c)
}

// ErrClosed is reported for a connection closed by Conn.Close or Server.Close.
var ErrClosed = errors.New("evloop: connection closed")

// ErrHalfCloseTimeout is reported when the remaining direction of a half-closed connection
// moved nothing for Config.HalfCloseTimeout.
var ErrHalfCloseTimeout = errors.New("evloop: half-close timeout")

// ErrConnectTimeout is reported to OnDialError when a backend connect did not finish within
// Config.ConnectTimeout.
var ErrConnectTimeout = errors.New("evloop: connect timeout")

// ErrWriteTimeout is reported when a destination took no byte for Config.WriteTimeout.
var ErrWriteTimeout = errors.New("evloop: no write progress")

// ready serves one readiness event of s.
func (l *loop) ready(s *sock, events uint32) {
	if s.pooled != nil {
		l.poolDrop(s.pooled) // an idle connection raised something: closed, reset, or junk
		return
	}
	c := s.c
	if c.h != nil {
		if events&unix.EPOLLERR != 0 && s.dir == 0 {
			err := errors.New("socket error")
			if v, gerr := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_ERROR); gerr == nil && v != 0 {
				err = unix.Errno(v)
			}
			l.closeConn(c, fmt.Errorf("evloop: client: %w", err))
			return
		}
		if events&unix.EPOLLRDHUP != 0 && s.dir == 0 {
			s.rdhup = true
		}
		l.httpReady(s, events)
		return
	}
	if events&unix.EPOLLERR != 0 {
		err := errors.New("socket error")
		if v, gerr := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_ERROR); gerr == nil && v != 0 {
			err = unix.Errno(v)
		}
		if s.dir == 1 && !c.connected {
			if next, ok := l.dialFailed(c, fmt.Errorf("evloop: connect %v: %w", c.target, err)); ok {
				l.dial(c, next)
			}
			return
		}
		l.closeConn(c, fmt.Errorf("evloop: %s: %w", sideName(s), err))
		return
	}
	if events&unix.EPOLLRDHUP != 0 {
		s.rdhup = true
	}
	if c.sniffing {
		if s.dir == 0 && events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP) != 0 {
			l.sniff(c)
		}
		return
	}
	if s.dir == 1 && !c.connected {
		if events&(unix.EPOLLOUT|unix.EPOLLHUP) == 0 {
			return
		}
		c.connected = true
		c.connectAt = 0
		if c.halfAt == 0 && c.writeAt == 0 {
			l.untime(c)
		}
		if f := l.srv.cfg.OnConnect; f != nil {
			f(c)
		}
		// The client may have sent already (its edge came while the backend was connecting:
		// flush reads it, see pump).
		if !l.flush(s) {
			return
		}
	}
	if events&unix.EPOLLOUT != 0 && s.blocked() {
		if !l.flush(s) {
			return
		}
	}
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP) != 0 {
		l.pump(s)
	}
}

func sideName(s *sock) string {
	if s.dir == 0 {
		return "client"
	}
	return "backend"
}

// pump moves what src has received to its other side, until src has nothing more, the
// destination is full (the rest waits in pend) or src ends. It reports false when the
// connection was closed.
func (l *loop) pump(src *sock) bool {
	dst := src.other
	c := src.c
	if src.eof {
		return true
	}
	if dst.blocked() || !c.connected {
		dst.more = true // read it once dst has taken what is pending
		return true
	}
	if src.bulk {
		return l.pumpSplice(src)
	}
	for {
		n, err := recv(src.fd, l.buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return true
		case err != nil:
			l.closeConn(c, fmt.Errorf("evloop: reading %s: %w", sideName(src), err))
			return false
		case n == 0:
			src.eof = true
			return l.passEOF(src)
		}
		w, err := send(dst.fd, l.buf[:n])
		if err != nil && err != unix.EAGAIN {
			l.closeConn(c, fmt.Errorf("evloop: writing %s: %w", sideName(dst), err))
			return false
		}
		l.moved(src, w)
		if w < n {
			dst.pend = append(dst.pend[:0], l.buf[w:n]...)
			dst.more = true
			l.armWrite(c)
			return true
		}
		// A short read emptied the socket; without a FIN queued (EPOLLRDHUP) the next
		// data raises a new edge, so no read is spent finding EAGAIN.
		if n < len(l.buf) && !src.rdhup {
			return true
		}
		if n == len(l.buf) {
			src.bulk = true
			return l.pumpSplice(src)
		}
	}
}

// blocked reports whether bytes wait for s (in pend or in its pipe).
func (s *sock) blocked() bool { return len(s.pend) > 0 || s.pipeN > 0 }

// moved counts n bytes written from src to its other side.
func (l *loop) moved(src *sock, n int) {
	if n <= 0 {
		return
	}
	c := src.c
	c.n[src.dir] += int64(n)
	l.srv.moved(src.dir, n)
	if f := l.srv.cfg.OnData; f != nil {
		f(c, src.dir == 0, n)
	}
	if c.halfAt != 0 {
		l.armHalf(c) // an active half-closed stream is not cut
	}
}

// flush writes dst's pending bytes; once they are gone it passes on a pending EOF or reads
// the source again. It reports false when the connection was closed.
func (l *loop) flush(dst *sock) bool {
	for len(dst.pend) > 0 {
		w, err := send(dst.fd, dst.pend)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return true
		}
		if err != nil {
			l.closeConn(dst.c, fmt.Errorf("evloop: writing %s: %w", sideName(dst), err))
			return false
		}
		l.moved(dst.other, w)
		dst.pend = dst.pend[w:]
		l.armWrite(dst.c) // progress: a new period
	}
	dst.pend = nil // the pending buffer goes; an idle connection holds none
	if dst.pipeN > 0 {
		done, ok := l.flushPipe(dst)
		if !ok || !done {
			return ok
		}
	}
	l.disarmWrite(dst.c)
	src := dst.other
	if src.eof {
		return l.passEOF(src)
	}
	if dst.more {
		dst.more = false
		return l.pump(src)
	}
	return true
}

// passEOF passes src's EOF on as a half-close of the other side once everything read before
// it was written; when both directions have ended the connection closes.
func (l *loop) passEOF(src *sock) bool {
	dst := src.other
	if dst.blocked() || dst.shut {
		return true
	}
	if dst.eof {
		// Both directions have ended: close at once, a half-close would change nothing.
		l.closeConn(src.c, nil)
		return false
	}
	dst.shut = true
	if err := shutdownWrite(dst.fd); err != nil && !errors.Is(err, unix.ENOTCONN) {
		l.closeConn(src.c, fmt.Errorf("evloop: half-closing %s: %w", sideName(dst), err))
		return false
	}
	l.armHalf(src.c)
	return true
}

// closeConn closes both sockets (close removes them from the epoll set) and reports the
// connection's end.
func (l *loop) closeConn(c *Conn, err error) {
	if c.closed {
		return
	}
	if c.h != nil && c.h.busy {
		cut := err
		if cut == nil {
			cut = ErrClosed
		}
		// OnExchangeEnd once per forwarded request, also when cut off (no answer is written).
		l.endExchange(c, fmt.Errorf("%w: %w", ErrHTTPCut, cut))
	}
	if c.h != nil && !errors.Is(err, ErrHandedOff) {
		// Client bytes read and not served (what came after a request that closes, a
		// request cut off) count as read, as the goroutine path's reads count them; handed
		// off, they are the new owner's to count.
		l.servedIn(c, c.h.n)
		c.h.n = 0
	}
	if c.st != nil && c.s[0].fd >= 0 && (c.h == nil || len(c.h.out) == 0) {
		// An adopted connection's stream ends with what it has to send: an alert it raised
		// (a record that failed), then its clean end (TLS close_notify); best effort, as a
		// close's FIN is, and counted as written. (A handed-off one has no fd here.)
		if b := c.st.End(l.wbuf[:0]); len(b) > 0 {
			if w, serr := send(c.s[0].fd, b); serr == nil {
				l.moved(&c.s[1], w)
			}
		}
	}
	c.closed = true
	c.err = err
	for i := range c.s {
		fd := c.s[i].fd
		if fd < 0 {
			continue // no backend socket (between dial attempts)
		}
		if fd < len(l.socks) && l.socks[fd] == &c.s[i] {
			l.socks[fd] = nil
		}
		closeFD(fd)
		c.s[i].pend = nil
		if c.s[i].pipeN > 0 {
			closePipe(c.s[i].pipe) // it holds bytes: never reused
			c.s[i].pipeN = 0
		}
	}
	c.hello = nil
	if c.h != nil {
		l.putBin(c.h)
		c.h.in, c.h.out = nil, nil
	}
	l.untime(c)
	l.conns--
	l.srv.active.Add(-1)
	if f := l.srv.cfg.OnClose; f != nil {
		f(c, c.n[0], c.n[1], err)
	}
}
