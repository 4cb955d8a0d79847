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
	srv *Server
	// iov and msg are sendTwo's: a request's head and held body in one sendmsg.
	iov    [2]unix.Iovec
	msg    unix.Msghdr
	epf    *os.File // the epoll fd, non-blocking and registered with Go's netpoller
	epfd   int
	lfd    int // listening socket
	wakefd int // eventfd: Close wakes the loop through it
	// now is monoNow when the loop's current batch of events began (see clock).
	now int64
	// wakeMu: wake writes to wakefd under its read lock, closeFDs closes it under the
	// write lock. Without it a wake after the loop ended (Close after Shutdown, a
	// Conn.Close from another goroutine) wrote 8 bytes to whatever socket had since
	// taken the closed fd's number: a connection of the process got them as data.
	wakeMu sync.RWMutex
	buf    []byte
	socks  []*sock // by fd: the side of a connection registered under that fd
	gen    int32   // registration counter: an event carries its socket's, so an event for a
	// closed fd that a later accept reused in the same batch is recognised and dropped
	closed atomic.Bool
	done   chan struct{}
	// unlistened is closed once the loop closed its listening socket after Shutdown.
	unlistened chan struct{}
	cmdMu      sync.Mutex
	cmds       []*Conn    // queued by Conn.Close, under cmdMu
	adopts     []adoption // queued by Server.Adopt, under cmdMu
	stopped    bool       // the loop ended: Adopt queues no more (under cmdMu)
	// wbuf is where an adopted connection's stream encodes what the loop writes (encode).
	wbuf  []byte
	timed map[*Conn]struct{}
	conns int     // open connections; a shut-down loop ends when none is left
	spare []kpipe // empty splice pipes for reuse (splice_linux.go)
	// HTTP mode: idle backend connections per target (httppool_linux.go), spare backend read
	// buffers, and the buffer response heads are written into.
	pool     map[netip.AddrPort]*idlePool
	lastPool *idlePool   // the one used last (see idlePool)
	freeIdle []*idleConn // spares for poolPut
	poolN    int
	bins     [][]byte
	ins      [][]byte // spare client buffers: httpHeadBuf, and grown ones (httpBig)
	bigs     [][]byte
	hbuf     []byte
	// acceptPaused: the listening socket is out of the epoll set until the next sweep,
	// after an accept failed for want of resources (EMFILE and the like; see accept).
	acceptPaused bool
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
	if l.lfd >= 0 {
		_ = unix.Close(l.lfd)
		l.lfd = -1
	}
	l.wakeMu.Lock()
	if l.wakefd >= 0 {
		_ = unix.Close(l.wakefd)
		l.wakefd = -1
	}
	l.wakeMu.Unlock()
	switch {
	case l.epf != nil:
		_ = l.epf.Close()
	case l.epfd >= 0:
		_ = unix.Close(l.epfd)
	}
}

// run waits for readiness and serves it until the server closes.
//
// The loop waits for its epoll fd in Go's netpoller, holding no thread and no P while idle.
// Once woken, serve harvests its own set until a harvest comes back empty: events that
// arrived meanwhile are served without a trip through the scheduler, and the empty harvest
// also covers what raises no new wake-up (events beyond the maxEvents a harvest returns, and
// the level-triggered listening socket, which a harvest re-reports while connections are left
// in its backlog: accept takes one per event, so none is spent finding the backlog empty).
// Two variants were measured and dropped (issue 16, sni, 8 clients): going back to the
// netpoller without the empty harvest (the netpoller's own poll then finds the events that
// came during the batch: as many epoll calls, more scheduling), and a blocking epoll_pwait in
// the loop's own set that keeps the P for up to 1 ms (epoll calls 5.5 -> 3.4 per connection,
// but sysmon, which never sleeps while a P is held, woke 4x as often, and the CPU per
// connection did not go down). Measured again on HTTP mode (issue 17, evhttp, wrk -c50,
// interleaved 4 s runs, +-10% noise): going back to the netpoller after a harvest that was
// not full cut epoll_pwait per GET by 0.1-0.3 with the same CPU per request, and polling
// the set for up to 20 us before waiting halved the sleeps but added 5-14 epoll_pwait per
// GET, again for the same CPU per request. Neither is worth its change.
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
		werr error
		due  int64 // monoNow when the next sweep is due (a read deadline is set for it); 0: none
	)
	// arm sets the deadline of the next sweep when a conn has a deadline and none is set. A
	// deadline is never taken back early: once the timed conns are gone it passes with an
	// empty sweep, one per tick at most, instead of costing an update per connection.
	arm := func() {
		if due == 0 && (len(l.timed) > 0 || l.acceptPaused || l.poolN > 0) {
			due = monoNow() + int64(l.srv.tick)
			_ = l.epf.SetReadDeadline(time.Now().Add(l.srv.tick))
		}
	}
	// sweepDue sweeps when the deadline has passed while the loop was busy (the netpoller
	// reports it only to a wait).
	sweepDue := func() {
		if due != 0 && monoNow() >= due {
			due = 0
			l.sweep()
		}
	}
	serve := func(fd uintptr) bool {
		for {
			arm()
			n, err := epollWaitNow(int(fd), events)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				werr = err
				return true
			}
			if n == 0 {
				return false // wait in the netpoller
			}
			l.now = monoNow()
			for i := range n {
				ev := &events[i]
				switch fd := int(ev.Fd); fd {
				case l.lfd:
					l.accept()
				case l.wakefd:
					l.commands() // Conn.Close, Server.Shutdown; Server.Close is seen by ending
				default:
					if fd < len(l.socks) && l.socks[fd] != nil && l.socks[fd].gen == ev.Pad {
						l.ready(l.socks[fd], ev.Events)
					}
				}
			}
			sweepDue()
			if l.ending() {
				return true
			}
		}
	}
	for !l.ending() {
		if err := rc.Read(serve); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				due = 0
				_ = l.epf.SetReadDeadline(time.Time{})
				l.sweep()
				continue
			}
			werr = err
		}
		if werr != nil {
			l.srv.fail(fmt.Errorf("evloop: epoll_wait: %w", werr))
			break
		}
	}
	l.dropAdoptions()
	for _, s := range l.socks {
		if s != nil && s.pooled == nil && !s.c.closed {
			l.closeConn(s.c, ErrClosed)
		}
	}
	l.poolSweep(monoNow()) // closed: every idle connection goes
	l.closeFDs()
}

// pauseAccept takes the listening socket out of the epoll set (see accept); the next sweep
// puts it back.
func (l *loop) pauseAccept() {
	if l.acceptPaused || l.lfd < 0 {
		return
	}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, l.lfd, nil); err == nil {
		l.acceptPaused = true
	}
}

// resumeAccept puts a paused listening socket back into the epoll set, with the events it
// was registered with (EPOLLEXCLUSIVE cannot be changed by EPOLL_CTL_MOD, hence DEL and ADD).
func (l *loop) resumeAccept() {
	if !l.acceptPaused {
		return
	}
	if l.lfd < 0 {
		l.acceptPaused = false // shut down meanwhile
		return
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(l.lfd)}
	if l.srv.cfg.SharedListen {
		ev.Events |= unix.EPOLLEXCLUSIVE
	}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, l.lfd, &ev); err == nil {
		l.acceptPaused = false
	}
}

// ending reports whether the loop is done: closed, or shut down with no connection left.
func (l *loop) ending() bool { return l.closed.Load() || (l.lfd < 0 && l.conns == 0) }

// accept takes one queued connection and starts its backend connect. The listening socket is
// level-triggered: one left in the backlog is reported by the next harvest, which run makes
// before it waits, so no accept is spent finding the backlog empty (EAGAIN).
//
// An accept that fails for want of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM) leaves the
// connection in the backlog, where the level-triggered socket would report it again at once:
// a loop retrying it would spin at full CPU for as long as the shortage lasts (a client that
// holds many connections could cause it). So the listening socket leaves the epoll set until
// the next sweep (a tick later, as HAProxy pauses a listener that hit a limit); connections
// already open are served meanwhile, and new ones wait in the backlog.
func (l *loop) accept() {
	acceptFn := accept4
	if l.srv.cfg.accept != nil {
		acceptFn = l.srv.cfg.accept
	}
	for {
		cfd, peer, err := acceptFn(l.lfd)
		if err != nil {
			if err == unix.ECONNABORTED || err == unix.EINTR {
				continue
			}
			if err != unix.EAGAIN {
				if f := l.srv.cfg.OnAcceptError; f != nil {
					f(err)
				}
				l.pauseAccept()
			}
			return
		}
		l.start(cfd, peer)
		return
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
		l.srv.cfg.OnHandOff(cfd, peer, nil)
		return
	case (!d.Target.IsValid() && !d.Sniff && !d.HTTP) || d.HandOff:
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
	if d.HTTP {
		l.httpStart(c)
		return // ready reads the first request
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
