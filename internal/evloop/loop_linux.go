//go:build linux

package evloop

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// bufSize is the per-loop receive buffer: one recv moves up to this much, and only bytes the
// destination does not take at once are copied into a per-direction pending buffer.
const bufSize = 64 << 10

// maxEvents is how many readiness events one epoll_wait returns.
const maxEvents = 256

// loop is one event loop: an epoll set, its own SO_REUSEPORT listening socket, and the
// connections it accepted, which it serves alone (no locks on the data path).
type loop struct {
	srv    *Server
	epf    *os.File // the epoll fd, non-blocking and registered with Go's netpoller
	epfd   int
	lfd    int // listening socket
	wakefd int // eventfd: Close wakes the loop through it
	buf    []byte
	socks  []*sock // by fd: the side of a connection registered under that fd
	gen    int32   // registration counter: an event carries its socket's, so an event for a
	// closed fd that a later accept reused in the same batch is recognised and dropped
	closed atomic.Bool
	done   chan struct{}
}

// sock is one side of a proxied connection.
type sock struct {
	fd    int
	gen   int32
	c     *conn
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
	shut  bool // shut down this socket's sending side (the other side's EOF passed on)
	dir   int  // 0: client (bytes read count as in), 1: backend
}

// conn is one proxied connection: client and backend sockets.
type conn struct {
	s         [2]sock
	connected bool // the backend's non-blocking connect finished
	closed    bool
}

func newLoop(srv *Server, addr netip.AddrPort) (*loop, error) {
	l := &loop{srv: srv, epfd: -1, lfd: -1, wakefd: -1, buf: make([]byte, bufSize), done: make(chan struct{})}
	var err error
	if l.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("evloop: epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(l.epfd, true); err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("evloop: fcntl: %w", err)
	}
	// An epoll fd is readable while it has events: the loop waits for it in Go's netpoller
	// like any socket reader, so an idle loop holds no blocked thread and sysmon has no
	// system call to retake a P from.
	l.epf = os.NewFile(uintptr(l.epfd), "evloop")
	if l.lfd, err = listenReusePort(addr); err != nil {
		l.closeFDs()
		return nil, err
	}
	if l.wakefd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("evloop: eventfd: %w", err)
	}
	for _, fd := range []int{l.lfd, l.wakefd} {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			l.closeFDs()
			return nil, fmt.Errorf("evloop: epoll_ctl: %w", err)
		}
	}
	return l, nil
}

// listenReusePort opens a non-blocking listening socket with SO_REUSEPORT (each loop has its
// own: the kernel spreads connections over them, with no shared accept queue or lock) and
// TCP_NODELAY, which accepted sockets inherit (one setsockopt fewer per connection).
func listenReusePort(addr netip.AddrPort) (int, error) {
	fd, err := unix.Socket(family(addr), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("evloop: socket: %w", err)
	}
	for _, o := range [][2]int{{unix.SOL_SOCKET, unix.SO_REUSEADDR}, {unix.SOL_SOCKET, unix.SO_REUSEPORT}, {unix.IPPROTO_TCP, unix.TCP_NODELAY}} {
		if err := unix.SetsockoptInt(fd, o[0], o[1], 1); err != nil {
			_ = unix.Close(fd)
			return -1, fmt.Errorf("evloop: setsockopt: %w", err)
		}
	}
	if err := unix.Bind(fd, sockaddr(addr)); err != nil {
		_ = unix.Close(fd)
		return -1, fmt.Errorf("evloop: bind %v: %w", addr, err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		_ = unix.Close(fd)
		return -1, fmt.Errorf("evloop: listen: %w", err)
	}
	return fd, nil
}

func family(a netip.AddrPort) int {
	if a.Addr().Is4() || a.Addr().Is4In6() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func sockaddr(a netip.AddrPort) unix.Sockaddr {
	if a.Addr().Is4() || a.Addr().Is4In6() {
		return &unix.SockaddrInet4{Port: int(a.Port()), Addr: a.Addr().Unmap().As4()}
	}
	return &unix.SockaddrInet6{Port: int(a.Port()), Addr: a.Addr().As16()}
}

func (l *loop) closeFDs() {
	for _, fd := range []int{l.lfd, l.wakefd} {
		if fd >= 0 {
			_ = unix.Close(fd)
		}
	}
	switch {
	case l.epf != nil:
		_ = l.epf.Close()
	case l.epfd >= 0:
		_ = unix.Close(l.epfd)
	}
}

// run waits for readiness and serves it until the server closes.
func (l *loop) run() {
	defer close(l.done)
	events := make([]unix.EpollEvent, maxEvents)
	rc, err := l.epf.SyscallConn()
	if err != nil {
		l.srv.fail(fmt.Errorf("evloop: %w", err))
		l.closeFDs()
		return
	}
	var (
		n    int
		werr error
	)
	harvest := func(fd uintptr) bool {
		for {
			m, err := epollWaitNow(int(fd), events)
			if err == unix.EINTR {
				continue
			}
			n, werr = m, err
			return err != nil || m > 0 // nothing ready: wait in the netpoller
		}
	}
	for !l.closed.Load() {
		if err := rc.Read(harvest); err != nil {
			werr = err
		}
		if werr != nil {
			l.srv.fail(fmt.Errorf("evloop: epoll_wait: %w", werr))
			break
		}
		for i := range n {
			ev := &events[i]
			switch fd := int(ev.Fd); fd {
			case l.lfd:
				l.accept()
			case l.wakefd:
				// only Close writes it; the loop condition sees why
			default:
				if fd < len(l.socks) && l.socks[fd] != nil && l.socks[fd].gen == ev.Pad {
					l.ready(l.socks[fd], ev.Events)
				}
			}
		}
	}
	for _, s := range l.socks {
		if s != nil && !s.c.closed {
			l.closeConn(s.c)
		}
	}
	l.closeFDs()
}

// accept takes every queued connection and starts its backend connect.
func (l *loop) accept() {
	for {
		cfd, _, err := accept4(l.lfd)
		if err != nil {
			if err != unix.EAGAIN && err != unix.ECONNABORTED && err != unix.EINTR {
				l.srv.acceptErrors.Add(1) // EMFILE and the like: the next readiness retries
			}
			if err == unix.ECONNABORTED || err == unix.EINTR {
				continue
			}
			return
		}
		l.start(cfd)
	}
}

// start connects the backend for an accepted client socket and registers both sockets,
// once each for their lifetime: edge-triggered, for reading, writing and the peer's FIN.
func (l *loop) start(cfd int) {
	target := l.srv.cfg.Target
	bfd, err := socketTCP(family(target))
	if err != nil {
		closeFD(cfd)
		return
	}
	_ = setsockoptInt(bfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if err := connectTo(bfd, target); err != nil && err != unix.EINPROGRESS {
		closeFD(bfd)
		closeFD(cfd)
		return
	}
	c := &conn{}
	c.s[0] = sock{fd: cfd, c: c, other: &c.s[1], dir: 0}
	c.s[1] = sock{fd: bfd, c: c, other: &c.s[0], dir: 1}
	l.srv.active.Add(1)
	for i := range c.s {
		s := &c.s[i]
		l.gen++
		s.gen = l.gen
		l.setSock(s.fd, s)
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(s.fd), Pad: s.gen}
		if err := epollAdd(l.epfd, s.fd, &ev); err != nil {
			l.closeConn(c)
			return
		}
	}
}

func (l *loop) setSock(fd int, s *sock) {
	if fd >= len(l.socks) {
		grown := make([]*sock, max(2*len(l.socks), fd+1, 1024))
		copy(grown, l.socks)
		l.socks = grown
	}
	l.socks[fd] = s
}

// ready serves one readiness event of s.
func (l *loop) ready(s *sock, events uint32) {
	c := s.c
	if events&(unix.EPOLLERR) != 0 {
		l.closeConn(c)
		return
	}
	if events&unix.EPOLLRDHUP != 0 {
		s.rdhup = true
	}
	if s.dir == 1 && !c.connected {
		if events&(unix.EPOLLOUT|unix.EPOLLHUP) == 0 {
			return
		}
		c.connected = true
		// The client may have sent already (its edge came while the backend was connecting:
		// flush reads it, see pump).
		if !l.flush(s) {
			return
		}
	}
	if events&unix.EPOLLOUT != 0 && len(s.pend) > 0 {
		if !l.flush(s) {
			return
		}
	}
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP) != 0 {
		l.pump(s)
	}
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
	if len(dst.pend) > 0 || !c.connected {
		dst.more = true // read it once dst has taken what is pending
		return true
	}
	for {
		n, err := recv(src.fd, l.buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return true
		case err != nil:
			l.closeConn(c)
			return false
		case n == 0:
			src.eof = true
			return l.passEOF(src)
		}
		l.srv.moved(src.dir, n)
		w, err := send(dst.fd, l.buf[:n])
		if err != nil && err != unix.EAGAIN {
			l.closeConn(c)
			return false
		}
		if w < 0 {
			w = 0
		}
		if w < n {
			dst.pend = append(dst.pend[:0], l.buf[w:n]...)
			dst.more = true
			return true
		}
		// A short read emptied the socket; without a FIN queued (EPOLLRDHUP) the next
		// data raises a new edge, so no read is spent finding EAGAIN.
		if n < len(l.buf) && !src.rdhup {
			return true
		}
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
			l.closeConn(dst.c)
			return false
		}
		dst.pend = dst.pend[w:]
	}
	dst.pend = nil // the pending buffer goes; an idle connection holds none
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
	if len(dst.pend) > 0 || dst.shut {
		return true
	}
	if dst.eof {
		// Both directions have ended: close at once, a half-close would change nothing.
		l.closeConn(src.c)
		return false
	}
	dst.shut = true
	if err := shutdownWrite(dst.fd); err != nil && !errors.Is(err, unix.ENOTCONN) {
		l.closeConn(src.c)
		return false
	}
	return true
}

// closeConn closes both sockets; close removes them from the epoll set.
func (l *loop) closeConn(c *conn) {
	if c.closed {
		return
	}
	c.closed = true
	for i := range c.s {
		fd := c.s[i].fd
		if fd < len(l.socks) && l.socks[fd] == &c.s[i] {
			l.socks[fd] = nil
		}
		closeFD(fd)
		c.s[i].pend = nil
	}
	l.srv.active.Add(-1)
}
