//go:build linux

package h1client

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// peekNow peeks at fd without waiting: a raw call (internal/rawsock says
// why), made once per probed exchange.
func peekNow(fd uintptr, b []byte) error {
	_, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return syscall.Errno(e)
	}
	return nil
}
