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

// idlePool is one target's idle connections, newest last. A target's idlePool stays in the
// loop's map once made, so the loop keeps the one it used last (lastPool): a loop's
// exchanges mostly go to few targets, and a request then costs no map operation for its
// connection (a get and a put each looked the target up, and stored the shortened or grown
// list back, before).
type idlePool struct {
	target netip.AddrPort
	conns  []*idleConn
}

// poolFor is target's idlePool, made when create is set (nil otherwise, when there is none).
func (l *loop) poolFor(target netip.AddrPort, create bool) *idlePool {
	if p := l.lastPool; p != nil && p.target == target {
		return p
	}
	p := l.pool[target]
	if p == nil {
		if !create {
			return nil
		}
		if l.pool == nil {
			l.pool = make(map[netip.AddrPort]*idlePool)
		}
		p = &idlePool{target: target}
		l.pool[target] = p
	}
	l.lastPool = p
	return p
}

// poolPut keeps fd, registered under gen, as an idle connection to target, or closes it when
// the target has its share.
func (l *loop) poolPut(target netip.AddrPort, fd int, gen int32) {
	p := l.poolFor(target, true)
	if len(p.conns) >= l.srv.httpIdleConns || l.srv.shutting.Load() {
		if fd < len(l.socks) && l.socks[fd] != nil && l.socks[fd].fd == fd {
			l.socks[fd] = nil
		}
		closeFD(fd)
		return
	}
	// An idleConn taken by poolGet is reused: one allocation per response otherwise.
	var ic *idleConn
	if n := len(l.freeIdle); n > 0 {
		ic = l.freeIdle[n-1]
		l.freeIdle[n-1] = nil
		l.freeIdle = l.freeIdle[:n-1]
	} else {
		ic = new(idleConn)
	}
	*ic = idleConn{s: sock{fd: fd, gen: gen, dir: 1}, since: l.clock(), target: target}
	ic.s.pooled = ic
	l.setSock(fd, &ic.s)
	p.conns = append(p.conns, ic)
	l.poolN++
}

// poolGet takes the newest idle connection to target.
func (l *loop) poolGet(target netip.AddrPort) (fd int, gen int32, ok bool) {
	p := l.poolFor(target, false)
	if p == nil || len(p.conns) == 0 {
		return -1, 0, false
	}
	n := len(p.conns)
	ic := p.conns[n-1]
	p.conns[n-1] = nil
	p.conns = p.conns[:n-1]
	l.poolN--
	fd, gen = ic.s.fd, ic.s.gen
	if l.socks[fd] == &ic.s {
		l.socks[fd] = nil
	}
	// Nothing refers to ic any more (its registration is gone from socks: an event for fd
	// reaches the exchange's sock that the caller registers next), so it is reused.
	*ic = idleConn{s: sock{fd: -1}}
	if len(l.freeIdle) < maxFreeIdle {
		l.freeIdle = append(l.freeIdle, ic)
	}
	return fd, gen, true
}

// maxFreeIdle bounds the spare idleConns a loop keeps.
const maxFreeIdle = 1024

// poolDrop closes an idle connection and removes it from the pool.
func (l *loop) poolDrop(ic *idleConn) {
	if p := l.poolFor(ic.target, false); p != nil {
		for i, x := range p.conns {
			if x == ic {
				last := len(p.conns) - 1
				copy(p.conns[i:], p.conns[i+1:])
				p.conns[last] = nil
				p.conns = p.conns[:last]
				l.poolN--
				break
			}
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
	for _, p := range l.pool {
		for _, ic := range append([]*idleConn(nil), p.conns...) {
			if now-ic.since >= limit || l.srv.shutting.Load() || l.closed.Load() {
				l.poolDrop(ic)
			}
		}
	}
}
