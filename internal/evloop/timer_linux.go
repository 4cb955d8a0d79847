//go:build linux

package evloop

import (
	"fmt"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Cross-goroutine commands and deadlines. A loop owns its connections; other goroutines
// reach them only through post (Conn.Close), which queues the conn and wakes the loop through
// its eventfd. Deadlines are checked by a sweep over the conns that have one armed (few: only
// half-closed conns, connects in progress and destinations that do not keep up), run a tick
// after the first of them was armed: when the loop's wait for its epoll fd passes the read
// deadline set for it, or, in a loop too busy to wait, after the batch that finds it passed
// (run). An idle loop with no deadline never wakes; one whose timed conns are gone wakes once
// more, for an empty sweep.

// monoBase anchors monoNow, a monotonic clock in nanoseconds.
var monoBase = time.Now()

func monoNow() int64 { return int64(time.Since(monoBase)) }

// clock is monoNow as of the start of the loop's current batch of events: the HTTP phases'
// deadlines and stamps are taken from it, one clock read per batch instead of several per
// request. A deadline armed late in a batch is early by the batch's run so far (microseconds;
// the timeouts it serves are seconds). Only the loop's goroutine, inside a batch or a sweep,
// may call it.
func (l *loop) clock() int64 { return l.now }

// post queues c for closing by its loop and wakes the loop.
func (l *loop) post(c *Conn) {
	l.cmdMu.Lock()
	l.cmds = append(l.cmds, c)
	l.cmdMu.Unlock()
	l.wake()
}

// wake makes the loop's next wait return (eventfd counters add up; one read clears them).
// After the loop ended it does nothing: its eventfd is closed (see loop.wakeMu).
func (l *loop) wake() {
	one := uint64(1)
	l.wakeMu.RLock()
	if l.wakefd >= 0 {
		_, _, _ = unix.RawSyscall(unix.SYS_WRITE, uintptr(l.wakefd), uintptr(unsafe.Pointer(&one)), 8)
	}
	l.wakeMu.RUnlock()
}

// commands clears the eventfd and closes the conns queued by Conn.Close.
func (l *loop) commands() {
	var v uint64
	_, _, _ = unix.RawSyscall(unix.SYS_READ, uintptr(l.wakefd), uintptr(unsafe.Pointer(&v)), 8)
	l.cmdMu.Lock()
	cmds, adopts := l.cmds, l.adopts
	l.cmds, l.adopts = nil, nil
	l.cmdMu.Unlock()
	for _, a := range adopts { // before the closes: a Close may be queued for one of them
		l.adopt(a)
	}
	for _, c := range cmds {
		l.closeConn(c, ErrClosed)
	}
	if l.srv.shutting.Load() {
		l.httpShutdown()
	}
	if l.srv.shutting.Load() && l.lfd >= 0 {
		if l.srv.cfg.SharedListen && !l.acceptPaused {
			// Other loops hold dups of the same socket: closing this fd alone would leave it
			// in the epoll set, which drops a registration only with the socket's last fd.
			_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, l.lfd, nil)
		}
		closeFD(l.lfd) // close drops it from the epoll set
		l.lfd = -1
		close(l.unlistened)
	}
}

// armHalf (re)starts c's half-close timeout.
func (l *loop) armHalf(c *Conn) {
	if t := l.srv.halfClose; t > 0 {
		c.halfAt = monoNow() + int64(t)
		l.time(c)
	}
}

// armWrite (re)starts c's write-progress timeout.
func (l *loop) armWrite(c *Conn) {
	if t := l.srv.writeTimeout; t > 0 {
		c.writeAt = monoNow() + int64(t)
		l.time(c)
	}
}

// disarmWrite stops c's write-progress timeout once nothing waits to be written.
func (l *loop) disarmWrite(c *Conn) {
	if c.s[0].blocked() || c.s[1].blocked() {
		return
	}
	c.writeAt = 0
	if c.halfAt == 0 && c.connectAt == 0 && c.sniffAt == 0 && c.h == nil { // HTTP mode: timed for life
		l.untime(c)
	}
}

func (l *loop) time(c *Conn) {
	if !c.timed {
		c.timed = true
		l.timed[c] = struct{}{}
	}
}

func (l *loop) untime(c *Conn) {
	if c.timed {
		c.timed = false
		delete(l.timed, c)
	}
}

// sweep closes the conns whose deadline has passed.
func (l *loop) sweep() {
	l.resumeAccept()
	now := monoNow()
	l.now = now
	if l.poolN > 0 {
		l.poolSweep(now)
	}
	for c := range l.timed {
		if c.h != nil {
			l.httpSweepConn(c, now)
			continue
		}
		switch {
		case c.sniffAt != 0 && now >= c.sniffAt:
			l.closeConn(c, ErrSniffTimeout)
		case c.connectAt != 0 && now >= c.connectAt:
			if next, ok := l.dialFailed(c, fmt.Errorf("%w (%v)", ErrConnectTimeout, c.target)); ok {
				l.dial(c, next)
			}
		case c.writeAt != 0 && now >= c.writeAt:
			l.closeConn(c, ErrWriteTimeout)
		case c.halfAt != 0 && now >= c.halfAt:
			l.closeConn(c, ErrHalfCloseTimeout)
		}
	}
}

// httpSweepConn ends what passed its deadline on an HTTP-mode connection: the backend connect
// or write progress of an exchange, the client's write progress, or the phase deadline.
func (l *loop) httpSweepConn(c *Conn, now int64) {
	switch {
	case c.connectAt != 0 && now >= c.connectAt:
		c.connectAt = 0
		l.exchangeFailed(c, fmt.Errorf("%w (%v)", ErrConnectTimeout, c.target))
	case c.writeAt != 0 && now >= c.writeAt:
		c.writeAt = 0
		if c.h.busy && len(c.h.out) == 0 {
			l.exchangeFailed(c, ErrWriteTimeout) // the backend took no byte of the request
		} else {
			l.closeConn(c, ErrWriteTimeout)
		}
	default:
		l.httpSweep(c, now)
	}
}
