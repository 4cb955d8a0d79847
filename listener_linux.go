//go:build linux

package smartproxy

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// listenConfig sets keep-alive once, on the listening socket: Linux
// copies SO_KEEPALIVE and TCP_KEEPIDLE to every socket it accepts. With
// KeepAlive -1 Go does not set them again on each accepted connection,
// which saves two setsockopt calls per connection. With keep-alive off it
// is disabled on the listener, which accepted sockets inherit too.
func (p *Proxy) listenConfig() net.ListenConfig {
	enable, idle := p.opts.keepAlive(), p.opts.KeepAliveInitialDelay
	return net.ListenConfig{
		KeepAlive: -1,
		Control: func(_, _ string, c syscall.RawConn) error {
			return c.Control(func(fd uintptr) { setListenerKeepAlive(int(fd), enable, idle) })
		},
	}
}

// setListenerKeepAlive sets what net.KeepAliveConfig{Enable: enable,
// Idle: idle, Interval: -1, Count: -1} would set on each accepted socket
// (idle 0 means Go's default of 15 s, negative the kernel's), best effort
// as Go does per connection: an idle time the kernel refuses leaves its
// default.
func setListenerKeepAlive(fd int, enable bool, idle time.Duration) {
	if !enable {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 0)
		return
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	if idle == 0 {
		idle = 15 * time.Second
	} else if idle < 0 {
		return
	}
	secs := int((idle + time.Second - 1) / time.Second) // rounded up, as Go does
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, secs)
}
