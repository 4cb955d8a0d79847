//go:build linux

package forwarding

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

const (
	// maxFreePipes bounds the pipe free list; pipes returned beyond it are closed, so
	// a burst of transfers does not leave thousands of idle pipe fds behind.
	maxFreePipes = 64
	// pipeSize is what we ask the kernel for (F_SETPIPE_SZ), as Go's own splice does; a
	// bigger pipe moves more per syscall. If refused, the 64 KiB default is used.
	pipeSize = 1 << 20
	// spliceChunk is the most one splice call may move from socket to pipe.
	spliceChunk = pipeSize
	spliceFlags = unix.SPLICE_F_NONBLOCK | unix.SPLICE_F_MOVE
)

// kpipe is a kernel pipe used as the splice intermediary.
type kpipe struct{ r, w int }

// pipeFreeList holds empty pipes ready for reuse.
var pipeFreeList struct {
	mu   sync.Mutex
	free []kpipe
}

// Test hooks: pipesInUse counts pipes taken and not yet returned (an idle Pipe must leave
// it unchanged); spliceCopies counts directions that took the splice path.
var (
	pipesInUse   atomic.Int64
	spliceCopies atomic.Int64
)

func getPipe() (kpipe, error) {
	pipesInUse.Add(1)
	l := &pipeFreeList
	l.mu.Lock()
	if n := len(l.free); n > 0 {
		p := l.free[n-1]
		l.free = l.free[:n-1]
		l.mu.Unlock()
		return p, nil
	}
	l.mu.Unlock()
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		pipesInUse.Add(-1)
		return kpipe{}, fmt.Errorf("forwarding: creating splice pipe: %w", os.NewSyscallError("pipe2", err))
	}
	_, _ = unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, pipeSize) // best effort
	return kpipe{r: fds[0], w: fds[1]}, nil
}

// putPipe returns p to the free list. A pipe that may still hold bytes (after an error)
// is closed instead: its stale data must never leak into another connection.
func putPipe(p kpipe, empty bool) {
	pipesInUse.Add(-1)
	if empty {
		l := &pipeFreeList
		l.mu.Lock()
		if len(l.free) < maxFreePipes {
			l.free = append(l.free, p)
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
	}
	_ = unix.Close(p.r)
	_ = unix.Close(p.w)
}

// freePipes reports the free list length (for tests).
func freePipes() int {
	pipeFreeList.mu.Lock()
	defer pipeFreeList.mu.Unlock()
	return len(pipeFreeList.free)
}

// spliceCopy moves src to dst with splice(2) through a pooled pipe. It waits for data in
// the netpoller through RawConn.Read (which honours read deadlines) holding no pipe, takes a
// pipe when data is there, drains it into dst (waiting for writability through
// RawConn.Write), and gives it back as soon as it is empty and src would block.
// A wait that ends for parking returns errParked.
func spliceCopy(d *pipeDir, src, dst *net.TCPConn) (int64, bool, error) {
	s, dir, srcConn := d.s, d.dir, d.src
	rc, err := src.SyscallConn()
	if err != nil {
		return 0, false, nil // let the buffered copy report problems with this conn
	}
	wc, err := dst.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	spliceCopies.Add(1)

	var (
		p     kpipe
		held  bool
		n     int64 // bytes in the pipe from the last fill
		wrote int64 // bytes drained since the write deadline was last armed
		left  int64 // bytes still in the pipe while draining
		serr  error // errno from the last splice call
		total int64
	)
	// The callbacks are built once: a closure passed to RawConn escapes, so building them
	// inside the loop would allocate per chunk.
	fill := func(fd uintptr) bool {
		d.endWait()
		if !held {
			if p, serr = getPipe(); serr != nil {
				return true
			}
			held = true
		}
		for {
			n, serr = unix.Splice(int(fd), nil, p.w, nil, spliceChunk, spliceFlags)
			if serr != unix.EINTR {
				break
			}
		}
		if serr == unix.EAGAIN {
			// Nothing to read: hand the (empty) pipe back before parking in the netpoller.
			serr = nil
			putPipe(p, true)
			held = false
			if !d.beginWait() {
				serr = errParked
				return true
			}
			return false
		}
		return true
	}
	drain := func(fd uintptr) bool {
		for left > 0 {
			m, err := unix.Splice(p.r, nil, int(fd), nil, int(left), spliceFlags)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				return false // socket buffer full: wait for writability
			case err != nil:
				serr = err
				return true
			case m == 0:
				serr = syscall.EPIPE // cannot happen with bytes in the pipe; never spin
				return true
			}
			left -= m
			total += m
			wrote += m
		}
		return true
	}
	defer func() {
		if held {
			putPipe(p, left == 0)
		}
	}()
	for {
		n, serr = 0, nil
		if err := rc.Read(fill); err != nil {
			return total, true, d.waitError(err)
		}
		if serr == errParked {
			return total, true, errParked
		}
		if serr != nil {
			return total, true, spliceError(serr)
		}
		if n == 0 {
			return total, true, nil // EOF
		}
		left = n
		for {
			// The write deadline bounds each wait for writability; drained bytes are
			// progress that earns a new period (see writeDeadline).
			if err := d.wd.arm(dst); err != nil {
				return total, true, err
			}
			wrote = 0
			err := wc.Write(drain)
			if err == nil {
				break
			}
			again, err := d.wd.retry(err, wrote)
			if !again {
				return total, true, err
			}
		}
		if serr != nil {
			return total, true, spliceError(serr)
		}
		s.moved(dir, srcConn, int(n))
	}
}

func spliceError(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return os.NewSyscallError("splice", errno)
	}
	return err
}

// readWaiter waits until a TCP socket is readable (data, EOF or error) without reading, so
// the buffered copy can take its buffer only when there is something to copy.
type readWaiter struct {
	rc   syscall.RawConn
	peek [1]byte
	poll func(fd uintptr) bool
	park bool // set by poll: park instead of waiting
}

func newReadWaiter(c *net.TCPConn, d *pipeDir) *readWaiter {
	if c == nil {
		return nil
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	w := &readWaiter{rc: rc}
	w.poll = func(fd uintptr) bool {
		d.endWait()
		_, _, err := unix.Recvfrom(int(fd), w.peek[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err == unix.EAGAIN {
			if !d.beginWait() {
				w.park = true
				return true
			}
			return false
		}
		return true // anything else is for the following Read to report
	}
	return w
}

// wait blocks until the socket is readable or its read deadline passes. It returns
// errParked when the direction should park instead of waiting.
func (w *readWaiter) wait() error {
	w.park = false
	if err := w.rc.Read(w.poll); err != nil {
		return err
	}
	if w.park {
		return errParked
	}
	return nil
}

// readAvailable makes one non-blocking read from c into b and returns how many bytes it
// got: 0 when nothing was there, and also on EOF, an error or a passed read deadline, which
// the caller's next Read reports.
func readAvailable(c *net.TCPConn, b []byte) int {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	var n int
	_ = rc.Read(func(fd uintptr) bool {
		for {
			m, err := unix.Read(int(fd), b)
			if err == unix.EINTR {
				continue
			}
			if err == nil && m > 0 {
				n = m
			}
			return true
		}
	})
	return n
}
