//go:build linux

package evloop

import (
	"net/netip"
	"time"
)

// The loop's pool of idle backend connections for HTTP mode, per target address, newest last.
// An idle connection stays registered in the epoll set: any event on it (the backend closed
// it, reset it, or sent bytes no request asked for) closes it at once, so a connection taken
// from the pool has raised nothing since its last response and needs no probe. What is left
// is the race with a backend closing it just as a request goes out, which the stale rule of
// exchangeFailed covers for replayable requests.

// DefaultHTTPIdleConns is how many idle connections a loop keeps per target (Config.HTTPIdleConns).
const DefaultHTTPIdleConns = 64

// DefaultHTTPPoolIdle is how long an idle backend connection is kept (Config.HTTPPoolIdleTimeout).
const DefaultHTTPPoolIdle = 90 * time.Second

// idleConn is a pooled backend connection; s.pooled marks its registration.
type idleConn struct {
	s      sock
	since  int64
	target netip.AddrPort
}

// poolPut keeps fd, registered under gen, as an idle connection to target, or closes it when
// the target has its share.
func (l *loop) poolPut(target netip.AddrPort, fd int, gen int32) {
	list := l.pool[target]
	if len(list) >= l.srv.httpIdleConns || l.srv.shutting.Load() {
		if fd < len(l.socks) && l.socks[fd] != nil && l.socks[fd].fd == fd {
			l.socks[fd] = nil
		}
		closeFD(fd)
		return
	}
	ic := &idleConn{s: sock{fd: fd, gen: gen, dir: 1}, since: monoNow(), target: target}
	ic.s.pooled = ic
	l.setSock(fd, &ic.s)
	if l.pool == nil {
		l.pool = make(map[netip.AddrPort][]*idleConn)
	}
	l.pool[target] = append(list, ic)
	l.poolN++
}

// poolGet takes the newest idle connection to target.
func (l *loop) poolGet(target netip.AddrPort) (fd int, gen int32, ok bool) {
	list := l.pool[target]
	if len(list) == 0 {
		return -1, 0, false
	}
	ic := list[len(list)-1]
	list[len(list)-1] = nil
	l.pool[target] = list[:len(list)-1]
	l.poolN--
	if l.socks[ic.s.fd] == &ic.s {
		l.socks[ic.s.fd] = nil
	}
	return ic.s.fd, ic.s.gen, true
}

// poolDrop closes an idle connection and removes it from the pool.
func (l *loop) poolDrop(ic *idleConn) {
	list := l.pool[ic.target]
	for i, x := range list {
		if x == ic {
			l.pool[ic.target] = append(list[:i], list[i+1:]...)
			l.poolN--
			break
		}
	}
	if ic.s.fd < len(l.socks) && l.socks[ic.s.fd] == &ic.s {
		l.socks[ic.s.fd] = nil
	}
	closeFD(ic.s.fd)
	ic.s.fd = -1
}

// poolSweep closes the idle connections kept past their time (all of them after Shutdown).
func (l *loop) poolSweep(now int64) {
	limit := int64(l.srv.httpPoolIdle)
	for _, list := range l.pool {
		for _, ic := range append([]*idleConn(nil), list...) {
			if now-ic.since >= limit || l.srv.shutting.Load() || l.closed.Load() {
				l.poolDrop(ic)
			}
		}
	}
}
