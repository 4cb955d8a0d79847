//go:build linux

package rawsock

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Conn is a *net.TCPConn whose Read and Write are raw system calls made
// in the poller's RawConn callbacks: deadlines, close and the wait for
// readiness are the poller's, as for the TCPConn itself. Everything else
// (deadlines, CloseWrite, addresses, Close) is the TCPConn's.
//
// One Read and one Write may run at a time, as on any net.Conn user that
// serialises its reads and its writes (crypto/tls does).
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn

	// The callbacks and their state, made once so that no call allocates.
	rb     []byte
	rn     int
	rerr   error
	readFn func(fd uintptr) bool

	wb      []byte
	wn      int
	werr    error
	writeFn func(fd uintptr) bool
}

// Wrap returns c with raw reads and writes when it is a *net.TCPConn, c
// itself otherwise.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	r := &Conn{TCPConn: tc, rc: rc}
	r.readFn, r.writeFn = r.read, r.write
	return r
}

// Read reads from the socket, waiting in the poller while it has nothing.
func (c *Conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c.rb, c.rn, c.rerr = b, 0, nil
	err := c.rc.Read(c.readFn) // the poller's errors: deadline, closed
	n, rerr := c.rn, c.rerr
	c.rb, c.rerr = nil, nil
	if err != nil {
		return n, err
	}
	return n, rerr
}

func (c *Conn) read(fd uintptr) bool {
	for {
		r, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rb[0])), uintptr(len(c.rb)))
		switch e {
		case 0:
			if c.rn = int(r); r == 0 {
				c.rerr = io.EOF
			}
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait for readability
		default:
			c.rerr = c.opError("read", e)
			return true
		}
	}
}

// Write writes all of b, waiting in the poller while the socket is full.
func (c *Conn) Write(b []byte) (int, error) {
	c.wb, c.wn, c.werr = b, 0, nil
	err := c.rc.Write(c.writeFn)
	n, werr := c.wn, c.werr
	c.wb, c.werr = nil, nil
	if err != nil {
		return n, err
	}
	return n, werr
}

func (c *Conn) write(fd uintptr) bool {
	for c.wn < len(c.wb) {
		// sendto with MSG_NOSIGNAL: a reset peer is EPIPE, never SIGPIPE.
		r, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&c.wb[c.wn])), uintptr(len(c.wb)-c.wn),
			unix.MSG_NOSIGNAL, 0, 0)
		switch e {
		case 0:
			c.wn += int(r)
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait for room
		default:
			c.werr = c.opError("write", e)
			return true
		}
	}
	return true
}

// opError is the error net.TCPConn returns for a failed call.
func (c *Conn) opError(op string, e unix.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(op, e)}
}
