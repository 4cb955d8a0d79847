//go:build linux

package evloop

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

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
	// unlistened is closed once the loop closed its listening socket after Shutdown.
	unlistened chan struct{}
	cmdMu      sync.Mutex
	cmds       []*Conn // queued by Conn.Close, under cmdMu
	timed      map[*Conn]struct{}
	conns      int     // open connections; a shut-down loop ends when none is left
	spare      []kpipe // empty splice pipes for reuse (splice_linux.go)
}

func newLoop(srv *Server, addr netip.AddrPort) (*loop, error) {
	l := &loop{srv: srv, epfd: -1, lfd: -1, wakefd: -1, buf: make([]byte, bufSize), done: make(chan struct{}), unlistened: make(chan struct{}),
		timed: make(map[*Conn]struct{})}
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
	if srv.cfg.SharedListen {
		l.lfd, err = dupListener(srv.cfg.ListenFD, !srv.cfg.NoDelayOff, srv.cfg.ListenSocket)
	} else {
		l.lfd, err = listenReusePort(addr, !srv.cfg.NoDelayOff, srv.cfg.ListenSocket)
	}
	if err != nil {
		l.closeFDs()
		return nil, err
	}
	if l.wakefd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("evloop: eventfd: %w", err)
	}
	for _, fd := range []int{l.lfd, l.wakefd} {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
		if fd == l.lfd && srv.cfg.SharedListen {
			ev.Events |= unix.EPOLLEXCLUSIVE // one loop woken per connection, not all
		}
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
func listenReusePort(addr netip.AddrPort, noDelay bool, control func(fd int)) (int, error) {
	fd, err := unix.Socket(family(addr), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("evloop: socket: %w", err)
	}
	opts := [][2]int{{unix.SOL_SOCKET, unix.SO_REUSEADDR}, {unix.SOL_SOCKET, unix.SO_REUSEPORT}}
	if noDelay {
		opts = append(opts, [2]int{unix.IPPROTO_TCP, unix.TCP_NODELAY})
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o[0], o[1], 1); err != nil {
			_ = unix.Close(fd)
			return -1, fmt.Errorf("evloop: setsockopt: %w", err)
		}
	}
	if control != nil {
		control(fd)
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
	for _, p := range l.spare {
		closePipe(p)
	}
	l.spare = nil
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
	var armed time.Time // the read deadline set on the epoll fd
	for !l.closed.Load() && !(l.lfd < 0 && l.conns == 0) {
		if d := l.waitDeadline(); !d.Equal(armed) && (d.IsZero() || armed.IsZero() || !d.After(armed)) {
			// Only when none is set, none is needed, or a sooner one is: a sweep per tick,
			// not a deadline update per turn.
			armed = d
			_ = l.epf.SetReadDeadline(d)
		}
		n = 0
		if err := rc.Read(harvest); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				armed = time.Time{}
				_ = l.epf.SetReadDeadline(armed)
				l.sweep()
				continue
			}
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
				l.commands() // Conn.Close, Server.Shutdown; Server.Close is seen by the loop condition
			default:
				if fd < len(l.socks) && l.socks[fd] != nil && l.socks[fd].gen == ev.Pad {
					l.ready(l.socks[fd], ev.Events)
				}
			}
		}
	}
	for _, s := range l.socks {
		if s != nil && !s.c.closed {
			l.closeConn(s.c, ErrClosed)
		}
	}
	l.closeFDs()
}

// accept takes every queued connection and starts its backend connect.
func (l *loop) accept() {
	for {
		cfd, peer, err := accept4(l.lfd)
		if err != nil {
			if err != unix.EAGAIN && err != unix.ECONNABORTED && err != unix.EINTR {
				l.srv.acceptErrors.Add(1) // EMFILE and the like: the next readiness retries
			}
			if err == unix.ECONNABORTED || err == unix.EINTR {
				continue
			}
			return
		}
		l.start(cfd, peer)
	}
}

// start asks OnOpen what to do with an accepted client socket: refuse it, hand it off, or
// forward it, registering it once for its lifetime (edge-triggered, for reading, writing and
// the peer's FIN) and starting its backend connect.
func (l *loop) start(cfd int, peer netip.AddrPort) {
	c := &Conn{l: l, peer: peer}
	c.s[0] = sock{fd: cfd, c: c, other: &c.s[1], dir: 0}
	c.s[1] = sock{fd: -1, c: c, other: &c.s[0], dir: 1}
	d := Decision{Target: l.srv.cfg.Target}
	if f := l.srv.cfg.OnOpen; f != nil {
		d = f(c)
	}
	switch {
	case d.HandOff && l.srv.cfg.OnHandOff != nil:
		c.closed = true // the socket is not ours any more: a later Conn.Close does nothing
		l.srv.cfg.OnHandOff(cfd, peer)
		return
	case (!d.Target.IsValid() && !d.Sniff) || d.HandOff:
		c.closed = true
		closeFD(cfd)
		return
	}
	l.srv.active.Add(1)
	l.conns++
	if err := l.register(&c.s[0]); err != nil {
		l.closeConn(c, err)
		return
	}
	if d.Sniff {
		c.sniffing = true
		if t := l.srv.sniffTimeout; t > 0 {
			c.sniffAt = monoNow() + int64(t)
			l.time(c)
		}
		return // ready reads the first bytes (sniff.go)
	}
	l.dial(c, d.Target)
}

// register adds s to the epoll set under a new generation.
func (l *loop) register(s *sock) error {
	l.gen++
	s.gen = l.gen
	l.setSock(s.fd, s)
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(s.fd), Pad: s.gen}
	if err := epollAdd(l.epfd, s.fd, &ev); err != nil {
		return fmt.Errorf("evloop: epoll_ctl: %w", err)
	}
	return nil
}

// dial starts the backend connect to target, moving on to the targets OnDialError offers
// while connects fail at once; a connect in progress finishes in ready (or in the sweep,
// at the connect timeout).
func (l *loop) dial(c *Conn, target netip.AddrPort) {
	for {
		err := l.connect(c, target)
		if err == nil {
			return
		}
		next, ok := l.dialFailed(c, err)
		if !ok {
			return
		}
		target = next
	}
}

// connect opens the backend socket and starts a non-blocking connect.
func (l *loop) connect(c *Conn, target netip.AddrPort) error {
	c.target = target
	bfd, err := socketTCP(family(target))
	if err != nil {
		return fmt.Errorf("evloop: socket: %w", err)
	}
	cfg := &l.srv.cfg
	if !cfg.NoDelayOff {
		_ = setsockoptInt(bfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	}
	if cfg.KeepAlive {
		_ = setsockoptInt(bfd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
		if t := cfg.KeepAliveIdle; t > 0 {
			_ = setsockoptInt(bfd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int((t+time.Second-1)/time.Second))
		}
	}
	if cfg.BackendSocket != nil {
		cfg.BackendSocket(bfd)
	}
	if err := connectTo(bfd, target); err != nil && err != unix.EINPROGRESS {
		closeFD(bfd)
		return fmt.Errorf("evloop: connect %v: %w", target, err)
	}
	c.s[1].fd = bfd
	if err := l.register(&c.s[1]); err != nil {
		return err
	}
	t := l.srv.connectTimeout
	if c.connectFor > 0 {
		t = c.connectFor
	}
	if t > 0 {
		c.connectAt = monoNow() + int64(t)
		l.time(c)
	}
	return nil
}

// dialFailed drops the failed backend socket and asks OnDialError for another target; without
// one the connection ends with err. ok reports whether to try next.
func (l *loop) dialFailed(c *Conn, err error) (next netip.AddrPort, ok bool) {
	if fd := c.s[1].fd; fd >= 0 {
		if l.socks[fd] == &c.s[1] {
			l.socks[fd] = nil
		}
		closeFD(fd)
		c.s[1].fd = -1
	}
	c.connectAt = 0
	if f := l.srv.cfg.OnDialError; f != nil {
		if next, ok = f(c, err); ok && next.IsValid() {
			return next, true
		}
	}
	l.closeConn(c, err)
	return netip.AddrPort{}, false
}

func (l *loop) setSock(fd int, s *sock) {
	if fd >= len(l.socks) {
		grown := make([]*sock, max(2*len(l.socks), fd+1, 1024))
		copy(grown, l.socks)
		l.socks = grown
	}
	l.socks[fd] = s
}
