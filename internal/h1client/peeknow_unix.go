//go:build unix && !aix && !linux

package h1client

import "syscall"

// peekNow peeks at fd without waiting.
func peekNow(fd uintptr, b []byte) error {
	_, _, err := syscall.Recvfrom(int(fd), b, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return err
}
