//go:build linux

package evloop

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Bulk transfers are spliced: once a read fills the whole loop buffer, the direction moves
// its bytes socket -> pipe -> socket with splice(2) and no copy through user space, as the
// goroutine path does. Pipes are the loop's: one is taken for each chunk and given back empty;
// a destination that does not take the whole chunk keeps the pipe with the rest (its pending
// bytes) until it drains. Small exchanges never splice.

const (
	pipeSize    = 1 << 20 // asked with F_SETPIPE_SZ; the 64 KiB default if refused
	spliceChunk = pipeSize
	spliceFlags = unix.SPLICE_F_NONBLOCK | unix.SPLICE_F_MOVE
	maxSpare    = 16 // empty pipes a loop keeps for reuse
)

// kpipe is a kernel pipe, the splice intermediary.
type kpipe struct{ r, w int }

func (l *loop) getPipe() (kpipe, error) {
	if n := len(l.spare); n > 0 {
		p := l.spare[n-1]
		l.spare = l.spare[:n-1]
		return p, nil
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return kpipe{}, fmt.Errorf("evloop: pipe2: %w", err)
	}
	_, _ = unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, pipeSize) // best effort
	return kpipe{r: fds[0], w: fds[1]}, nil
}

// putPipe keeps an empty pipe for reuse (a pipe that may hold bytes is closed instead:
// they must never reach another connection).
func (l *loop) putPipe(p kpipe) {
	if len(l.spare) < maxSpare {
		l.spare = append(l.spare, p)
		return
	}
	closePipe(p)
}

func closePipe(p kpipe) {
	closeFD(p.r)
	closeFD(p.w)
}

// spliceNB is splice(2) between non-blocking fds, raw like the loop's other calls.
func spliceNB(rfd, wfd, n int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(rfd), 0, uintptr(wfd), 0, uintptr(n), spliceFlags)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// pumpSplice is pump for a source in bulk mode. A short splice does not prove the socket
// empty (the pipe can run out of slots first), so it reads until EAGAIN: one empty splice
// per burst, nothing next to the megabytes moved.
func (l *loop) pumpSplice(src *sock) bool {
	dst, c := src.other, src.c
	for {
		p, err := l.getPipe()
		if err != nil {
			l.closeConn(c, err)
			return false
		}
		n, err := spliceNB(src.fd, p.w, spliceChunk)
		switch {
		case err == unix.EINTR:
			l.putPipe(p)
			continue
		case err == unix.EAGAIN:
			l.putPipe(p)
			return true
		case err != nil:
			l.putPipe(p) // nothing entered it
			l.closeConn(c, fmt.Errorf("evloop: reading %s: %w", sideName(src), err))
			return false
		case n == 0:
			l.putPipe(p)
			src.eof = true
			return l.passEOF(src)
		}
		left, ok := l.drainPipe(p, n, dst)
		if !ok {
			closePipe(p)
			return false
		}
		if left > 0 {
			dst.pipe, dst.pipeN = p, left
			dst.more = true
			l.armWrite(c)
			return true
		}
		l.putPipe(p)
	}
}

// drainPipe splices up to n bytes from p into dst and returns how many are left in p; ok is
// false when the connection was closed.
func (l *loop) drainPipe(p kpipe, n int, dst *sock) (left int, ok bool) {
	for n > 0 {
		m, err := spliceNB(p.r, dst.fd, n)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return n, true
		case err != nil:
			// closeConn closes p when it is dst's pipe already; pumpSplice closes it otherwise.
			l.closeConn(dst.c, fmt.Errorf("evloop: writing %s: %w", sideName(dst), err))
			return 0, false
		}
		n -= m
		l.moved(dst.other, m)
	}
	return 0, true
}

// flushPipe writes what dst's pipe holds; ok is false when the connection was closed. done
// reports that the pipe is empty (and given back).
func (l *loop) flushPipe(dst *sock) (done, ok bool) {
	left, ok := l.drainPipe(dst.pipe, dst.pipeN, dst)
	if !ok {
		dst.pipeN = 0
		return false, false
	}
	if left < dst.pipeN {
		l.armWrite(dst.c) // progress: a new period
	}
	dst.pipeN = left
	if left > 0 {
		return false, true
	}
	l.putPipe(dst.pipe)
	return true, true
}
