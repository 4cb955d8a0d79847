//go:build !linux

package smartproxy

import "net"

// listenConfig applies keep-alive to each accepted connection: not every
// platform copies it from the listening socket.
func (p *Proxy) listenConfig() net.ListenConfig {
	lc := net.ListenConfig{KeepAliveConfig: p.keepAliveConfig()}
	if !p.opts.keepAlive() {
		lc.KeepAlive = -1
	}
	return lc
}
