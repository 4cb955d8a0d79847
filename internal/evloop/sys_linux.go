//go:build linux

package evloop

import (
	"fmt"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The loop's system calls on non-blocking fds are made raw: they cannot block, so going
// through entersyscall/exitsyscall would only cost time and let sysmon retake the loop's P
// and hand it to another thread. unix.Accept4 would also ask getsockopt(SO_PROTOCOL) on every
// accept to tell L2TP sockets apart; the address is decoded here instead.

func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// epollWaitNow harvests ready events without waiting.
func epollWaitNow(epfd int, events []unix.EpollEvent) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	return int(r), errnoErr(e)
}

// accept4 accepts one connection as a non-blocking, close-on-exec socket and returns its
// peer address (the zero AddrPort for a family other than IPv4 and IPv6).
func accept4(lfd int) (int, netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	n := uint32(unix.SizeofSockaddrAny)
	r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)),
		unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	return int(r), rawAddr(&rsa), nil
}

func rawAddr(rsa *unix.RawSockaddrAny) netip.AddrPort {
	switch rsa.Addr.Family {
	case unix.AF_INET:
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), ntohs(a.Port))
	case unix.AF_INET6:
		a := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), ntohs(a.Port))
	}
	return netip.AddrPort{}
}

// ntohs reads a port stored in network byte order.
func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

// recv reads from a socket into b. recvfrom rather than read: read goes through vfs_read
// (permission hook, fsnotify) before it reaches the socket, recvfrom goes to it directly.
func recv(fd int, b []byte) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// send writes b without raising SIGPIPE on a reset peer.
func send(fd int, b []byte) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// sendTwo writes a, then b, in one sendmsg, without raising SIGPIPE on a reset peer (a and b
// not empty). The loop's own iovecs and header: nothing is allocated per call.
func (l *loop) sendTwo(fd int, a, b []byte) (int, error) {
	iov := &l.iov
	iov[0].Base, iov[1].Base = &a[0], &b[0]
	iov[0].SetLen(len(a))
	iov[1].SetLen(len(b))
	l.msg = unix.Msghdr{Iov: &iov[0]}
	l.msg.SetIovlen(len(iov))
	r, _, e := unix.RawSyscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&l.msg)),
		unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
	iov[0].Base, iov[1].Base = nil, nil // keep no request alive
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// socketTCP opens a non-blocking, close-on-exec TCP socket.
func socketTCP(family int) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

// setsockoptInt sets an int socket option.
func setsockoptInt(fd, level, opt, v int) error {
	val := int32(v)
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&val)), 4, 0)
	return errnoErr(e)
}

// connectTo starts a non-blocking connect; EINPROGRESS is the usual answer.
func connectTo(fd int, a netip.AddrPort) error {
	var e unix.Errno
	if a.Addr().Is4() || a.Addr().Is4In6() {
		sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.Addr().Unmap().As4()}
		sa.Port = ntohs(a.Port()) // the same swap both ways
		_, _, e = unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	} else {
		sa := unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.Addr().As16()}
		sa.Port = ntohs(a.Port())
		_, _, e = unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	}
	return errnoErr(e)
}

// epollAdd registers fd for ev.
func epollAdd(epfd, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), unix.EPOLL_CTL_ADD, uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	return errnoErr(e)
}

// shutdownWrite sends a FIN after what was written.
func shutdownWrite(fd int) error {
	_, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0)
	return errnoErr(e)
}

// closeFD closes a socket (no SO_LINGER is ever set, so close does not wait).
func closeFD(fd int) {
	_, _, _ = unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

// dupListener is a loop's own fd for a shared listening socket (Config.SharedListen): a
// close-on-exec dup, non-blocking (a file status flag: the socket's other fds are too), with
// the options listenReusePort sets on a socket of its own.
func dupListener(fd int, noDelay bool, control func(fd int)) (int, error) {
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("evloop: dup listening socket: %w", err)
	}
	if err := unix.SetNonblock(d, true); err != nil {
		_ = unix.Close(d)
		return -1, fmt.Errorf("evloop: fcntl: %w", err)
	}
	if noDelay {
		_ = unix.SetsockoptInt(d, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	}
	if control != nil {
		control(d)
	}
	return d, nil
}
