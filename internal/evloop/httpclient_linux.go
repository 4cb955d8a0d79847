//go:build linux

package evloop

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// The client side of HTTP mode past the request's decision: answers written (with
// back-pressure), refusals, hand-off, deadlines, Shutdown.

// httpWaitHead arms the head deadline, from the head's first byte: the whole head must come in
// HTTPHeadTimeout, however it trickles.
func (l *loop) httpWaitHead(c *Conn) {
	h := c.h
	if h.headAt == 0 {
		h.headAt = l.clock()
		if t := l.srv.httpHead; t > 0 {
			l.httpArm(c, h.headAt+int64(t), ErrHTTPHeadTimeout)
		} else {
			l.httpArm(c, 0, nil)
		}
	}
	if c.s[0].eof {
		l.closeConn(c, fmt.Errorf("evloop: client closed in a request head: %w", unix.ECONNRESET))
		return
	}
	l.httpReading(c)
}

// httpReading tells the owner (OnHTTPReading) that client bytes wait in the buffer for the
// rest of their request. They are counted (OnData) only once the request is served, so that
// a hand-off leaves them to the new owner to count; a client sending a head or a held body
// slowly is active meanwhile all the same. Only a request that came in pieces costs the call.
func (l *loop) httpReading(c *Conn) {
	if f := l.srv.cfg.OnHTTPReading; f != nil {
		f(c)
	}
}

// httpConsume drops the request just served from the client buffer.
func (l *loop) httpConsume(c *Conn) {
	h := c.h
	l.servedIn(c, h.used) // a request's bytes count once it is served (see httpServe)
	h.n = copy(h.in, h.in[h.used:h.n])
	h.used, h.want, h.continued = 0, 0, false
	h.headAt, h.early = 0, false
}

// httpRefuse answers a head the parser refused (OnMalformed's answer, or a bare 400) and
// closes the connection once it is written.
func (l *loop) httpRefuse(c *Conn, err error) {
	var b []byte
	if f := l.srv.cfg.OnMalformed; f != nil {
		h := c.h
		var handOff bool
		b, handOff = f(c, err, !h.pastFirst && h.n > 0, h.in[:h.n])
		// A connection's first bytes, or a request whose body was cut (its head and what came
		// of the body), may go to the owner's other path, which then answers them.
		if handOff && h.n > 0 && (!h.pastFirst || errors.Is(err, ErrHTTPBodyCut)) && !errors.Is(err, ErrHTTPHeadTimeout) {
			l.httpHandOff(c)
			return
		}
	}
	if b == nil {
		b = []byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	}
	l.servedIn(c, c.h.n) // the refused bytes were read (see closeConn)
	c.h.n = 0
	c.h.closing = true
	c.err = err
	l.httpWrite(c, b)
	if !c.closed && len(c.h.out) == 0 {
		l.closeConn(c, err)
	}
}

// httpHandOff gives the client socket, with the bytes of this request and after, to OnHandOff.
func (l *loop) httpHandOff(c *Conn) {
	h := c.h
	fd := c.s[0].fd
	data := append([]byte(nil), h.in[:h.n]...)
	if fd < len(l.socks) && l.socks[fd] == &c.s[0] {
		l.socks[fd] = nil
	}
	// The socket outlives its registration: take it out of the epoll set.
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	c.s[0].fd = -1
	peer := c.peer
	l.closeConn(c, ErrHandedOff)
	if f := l.srv.cfg.OnHTTPHandOff; f != nil {
		f(c, fd, data)
	} else if f := l.srv.cfg.OnHandOff; f != nil {
		f(fd, peer, data)
	} else {
		closeFD(fd)
	}
}

// ErrHandedOff is reported to OnClose for an HTTP-mode connection handed off (HTTPPlan.HandOff).
var ErrHandedOff = errors.New("evloop: handed off")

// httpWrite writes b to the client, keeping what it does not take in out (the backend is not
// read meanwhile). It reports false when the connection was closed.
func (l *loop) httpWrite(c *Conn, b []byte) bool {
	b, err := l.encode(c, b)
	if err != nil {
		l.closeConn(c, err)
		return false
	}
	return l.httpWriteWire(c, b)
}

// httpWriteWire is httpWrite for bytes already in their wire form.
func (l *loop) httpWriteWire(c *Conn, b []byte) bool {
	h := c.h
	if len(h.out) > 0 {
		h.out = append(h.out, b...)
		return true
	}
	for len(b) > 0 {
		w, err := send(c.s[0].fd, b)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			break
		}
		if err != nil {
			l.closeConn(c, fmt.Errorf("evloop: writing client: %w", err))
			return false
		}
		l.moved(&c.s[1], w)
		b = b[w:]
	}
	if len(b) > 0 {
		h.out = append(h.out[:0], b...)
		l.armWrite(c)
	}
	return true
}

// httpFlush writes what the client had not taken; once all is written the exchange goes on
// (the backend is read again) or the next request is served.
func (l *loop) httpFlush(c *Conn) bool {
	h := c.h
	for len(h.out) > 0 {
		w, err := send(c.s[0].fd, h.out)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return true
		}
		if err != nil {
			l.closeConn(c, fmt.Errorf("evloop: writing client: %w", err))
			return false
		}
		l.moved(&c.s[1], w)
		h.out = h.out[w:]
		l.armWrite(c)
	}
	h.out = nil
	c.writeAt = 0
	if h.busy {
		l.backendRead(c) // it was left unread while the client was behind
	} else if h.closing {
		l.closeConn(c, c.err)
		return false
	} else {
		l.httpServe(c)
		if !c.closed && c.s[0].more {
			l.clientRead(c)
		}
	}
	return !c.closed
}

// httpSweep ends an HTTP-mode connection whose phase deadline passed.
func (l *loop) httpSweep(c *Conn, now int64) {
	h := c.h
	if h.busy && h.fin && now-h.xAt >= int64(httpGoneGrace) {
		l.closeConn(c, ErrHTTPClientGone) // it half-closed early and the exchange outlasted the grace
		return
	}
	if h.at == 0 || now < h.at {
		return
	}
	err := h.atErr
	h.at = 0
	if h.busy {
		l.exchangeFailed(c, err)
		return
	}
	if errors.Is(err, ErrHTTPHeadTimeout) {
		l.httpRefuse(c, err) // a 408-like end: OnMalformed words it
		return
	}
	l.closeConn(c, err)
}

// httpShutdown closes the HTTP-mode connections idle between requests (Server.Shutdown); the
// others close once their exchange is over.
func (l *loop) httpShutdown() {
	for _, s := range l.socks {
		if s == nil || s.pooled != nil || s.dir != 0 || s.c.closed || s.c.h == nil {
			continue
		}
		if h := s.c.h; !h.busy && h.n == 0 && len(h.out) == 0 {
			l.closeConn(s.c, nil)
		}
	}
	l.poolSweep(monoNow())
}
