//go:build linux

package forwarding

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// parkPoller is the parker's epoll set. Its fd is itself registered with the Go runtime's
// netpoller (an epoll fd is readable when it has events), so waiting for parked sockets
// costs no blocked thread: one goroutine waits like any socket reader.
type parkPoller struct {
	f    *os.File // the epoll fd, non-blocking; f.Fd() would make it blocking
	epfd int
	// mu keeps close from closing the epoll fd under an epoll_ctl (whose fd number could
	// otherwise be reused by then).
	mu     sync.RWMutex
	closed bool
}

func (pp *parkPoller) open(p *IdleParker) error {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("forwarding: idle parker: %w", os.NewSyscallError("epoll_create1", err))
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return fmt.Errorf("forwarding: idle parker: %w", os.NewSyscallError("fcntl", err))
	}
	pp.epfd = fd
	pp.f = os.NewFile(uintptr(fd), "smartproxy-idle-parker")
	rc, err := pp.f.SyscallConn()
	if err != nil {
		_ = pp.f.Close()
		return fmt.Errorf("forwarding: idle parker: %w", err)
	}
	p.wg.Add(1)
	go parkWaiter(p, rc)
	return nil
}

func (pp *parkPoller) ok() bool { return pp.f != nil }

func (pp *parkPoller) close() error {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	pp.closed = true
	return pp.f.Close()
}

// parkWaiter wakes the directions whose sockets became ready, until the epoll fd is
// closed. Its name is what a stack dump shows.
func parkWaiter(p *IdleParker, rc interface {
	Read(func(uintptr) bool) error
}) {
	defer p.wg.Done()
	var (
		events [128]unix.EpollEvent
		ready  []*pipeDir
	)
	collect := func(fd uintptr) bool {
		for {
			n, err := unix.EpollWait(int(fd), events[:], 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil || n <= 0 {
				return len(ready) > 0 // nothing (more) now: return what we have, or wait
			}
			for _, ev := range events[:n] {
				if d := p.lookup(ev.Fd, ev.Pad); d != nil {
					ready = append(ready, d)
				}
			}
			if n < len(events) {
				return true
			}
		}
	}
	for {
		if err := rc.Read(collect); err != nil {
			return // closed
		}
		for i, d := range ready {
			d.wake()
			ready[i] = nil
		}
		ready = ready[:0]
	}
}

// parkEvents: readable, peer half-closed, one shot (re-armed by the next park). Errors
// and hang-ups are always reported.
const parkEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

// arm adds d's socket to the epoll set, or re-arms it. The event carries d's slot and
// generation, never a pointer. The caller holds d.armMu.
func (pp *parkPoller) arm(d *pipeDir) error {
	pp.mu.RLock()
	defer pp.mu.RUnlock()
	if pp.closed {
		return os.ErrClosed
	}
	ev := unix.EpollEvent{Events: parkEvents, Fd: d.slot, Pad: d.gen}
	var ctlErr error
	err := d.rc.Control(func(fd uintptr) {
		op := unix.EPOLL_CTL_ADD
		if d.armed {
			op = unix.EPOLL_CTL_MOD
		}
		ctlErr = unix.EpollCtl(pp.epfd, op, int(fd), &ev)
		switch {
		case errors.Is(ctlErr, unix.ENOENT): // closed and reopened under the same number
			ctlErr = unix.EpollCtl(pp.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
		case errors.Is(ctlErr, unix.EEXIST):
			ctlErr = unix.EpollCtl(pp.epfd, unix.EPOLL_CTL_MOD, int(fd), &ev)
		}
		if ctlErr == nil {
			d.armed = true
		}
	})
	if err != nil {
		return err
	}
	return ctlErr
}
