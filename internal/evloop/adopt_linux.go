//go:build linux

package evloop

import (
	"errors"
	"fmt"
	"io"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Adopted connections: a client socket whose first steps ran elsewhere (the proxy terminates
// TLS on a goroutine, where the handshake may block on certificate lookups) is served in HTTP
// mode by a loop from then on, its bytes passed through a Stream that decodes what the socket
// carries and encodes what the loop writes. Everything else is HTTP mode's as for an accepted
// connection: OnRequest decides each request, hand-offs go to OnHTTPHandOff (the owner then
// goes on with its Stream's state: what the loop read and did not serve is the plaintext
// handed over, what the Stream holds comes after it).
//
// Byte counts: an adopted connection's client bytes are counted as they are read from the
// socket (OnData, before decoding), and its written bytes as they are written (encoded), so
// that they are what crossed the wire, as a counting conn beneath TLS counts them.

// adoption is an Adopt queued for its loop.
type adoption struct {
	c    *Conn // its client socket is c.s[0].fd
	data []byte
}

// Adopt serves fd, a connected non-blocking client socket, in HTTP mode on one of the loops,
// its bytes passing through st. data is plaintext already read from the stream, served
// before the rest (not counted: its bytes were counted where they were read). init is called
// with the connection before any loop sees it, to set Conn.Data and keep the Conn (for
// Conn.Close); the owner's callbacks then run as for accepted connections, OnClose included.
// Once Adopt returns nil the loop owns fd; on an error (ErrNotAdopted) it is still the
// caller's and init was not called.
func (s *Server) Adopt(fd int, peer netip.AddrPort, st Stream, data []byte, init func(c *Conn)) error {
	if st == nil || s.cfg.OnRequest == nil || s.shutting.Load() || len(s.loops) == 0 {
		return ErrNotAdopted
	}
	l := s.loops[int(s.next.Add(1)%uint32(len(s.loops)))]
	c := &Conn{l: l, peer: peer, st: st}
	c.s[0] = sock{fd: fd, c: c, other: &c.s[1], dir: 0}
	c.s[1] = sock{fd: -1, c: c, other: &c.s[0], dir: 1}
	if len(data) > 0 {
		data = append([]byte(nil), data...) // the caller's buffer may be reused
	}
	l.cmdMu.Lock()
	if l.stopped {
		l.cmdMu.Unlock()
		return ErrNotAdopted
	}
	init(c)
	l.adopts = append(l.adopts, adoption{c: c, data: data})
	l.cmdMu.Unlock()
	l.wake()
	return nil
}

// adopt starts serving an adopted connection: registered as an accepted one, its data in
// the client buffer, then read at once (the stream may hold bytes no edge will announce).
func (l *loop) adopt(a adoption) {
	c := a.c
	l.srv.active.Add(1)
	l.conns++
	if err := l.register(&c.s[0]); err != nil {
		l.closeConn(c, err)
		return
	}
	l.httpStart(c)
	c.h.pastFirst = true // its owner classified its first bytes before the move
	// Its first request is awaited as a head is (the goroutine path's wait after a
	// handshake), not for the first-bytes timeout of a new connection.
	if t := l.srv.httpHead; t > 0 {
		l.httpArm(c, l.clock()+int64(t), ErrHTTPIdleTimeout)
	}
	h := c.h
	for len(a.data) > 0 {
		if h.n == len(h.in) && !l.httpGrow(c) {
			l.closeConn(c, ErrHTTPHeadTooLarge)
			return
		}
		k := copy(h.in[h.n:], a.data)
		h.n += k
		a.data = a.data[k:]
	}
	if c.closeReq.Load() { // closed before the loop took it (the Close command comes next)
		return
	}
	l.clientRead(c)
}

// dropAdoptions ends the adoptions still queued when the loop stops: each is reported closed
// (OnClose), so that its owner's bookkeeping ends as for any other connection.
func (l *loop) dropAdoptions() {
	l.cmdMu.Lock()
	l.stopped = true
	pending := l.adopts
	l.adopts = nil
	l.cmdMu.Unlock()
	for _, a := range pending {
		l.srv.active.Add(1)
		l.conns++
		l.closeConn(a.c, ErrClosed)
	}
}

// streamRead reads decoded client bytes into p: what the stream holds, then what the socket
// holds, until the stream needs bytes the socket does not have (EAGAIN). A socket read that
// came back short emptied the socket (drained): the next edge says when there is more
// (httpReady clears drained), unless the peer's FIN is queued (rdhup: read to EOF). A
// stream's end reads as EOF (0, nil).
func (l *loop) streamRead(c *Conn, p []byte) (int, error) {
	s := &c.s[0]
	for {
		n, err := c.st.Read(p)
		if n > 0 {
			c.h.early = false
			return n, nil // an error after the bytes comes again at the next call
		}
		switch {
		case errors.Is(err, io.EOF):
			return 0, nil
		case !errors.Is(err, ErrWouldBlock):
			return 0, fmt.Errorf("evloop: client stream: %w", err)
		case s.drained && !s.rdhup:
			return 0, unix.EAGAIN
		}
		w, err := recv(s.fd, l.buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if err == unix.EAGAIN {
				s.drained = true
			}
			return 0, err
		}
		if w == 0 {
			return 0, nil
		}
		l.moved(s, w) // the wire's bytes count as they are read
		s.drained = w < len(l.buf)
		c.st.Feed(l.buf[:w])
		c.h.early = true // until they come out decoded (see httpServe)
	}
}

// servedIn counts n client bytes served (or dropped) by HTTP mode: an accepted connection's
// count as their requests are served (see httpServe); an adopted one's counted when read.
func (l *loop) servedIn(c *Conn, n int) {
	if c.st == nil {
		l.moved(&c.s[0], n)
	}
}

// encode is what goes on the wire for b: b itself, or an adopted connection's stream's
// encoding of it, in the loop's scratch buffer (valid until the next encode).
func (l *loop) encode(c *Conn, b []byte) ([]byte, error) {
	if c.st == nil {
		return b, nil
	}
	wire, err := c.st.Encode(l.wbuf[:0], b)
	if err != nil {
		return nil, fmt.Errorf("evloop: encoding for client: %w", err)
	}
	l.keepWbuf(wire)
	return wire, nil
}

// keepWbuf keeps a grown encoding buffer for the next encode, up to a bound: one client's
// burst must not pin a large buffer in the loop for good.
func (l *loop) keepWbuf(b []byte) {
	if cap(b) <= maxKeptWbuf {
		l.wbuf = b[:0]
	}
}

const maxKeptWbuf = 256 << 10

// streamFlush writes what an adopted connection's stream produced of its own accord while
// it read (a TLS key update's answer), at once, as the goroutine path's tls.Conn writes it:
// held until the next response, answers to a client's stream of key updates would pile up
// with no bound. They go through the client's back-pressure (out): a client that does not
// read them is not read either. It reports false when the connection was closed.
func (l *loop) streamFlush(c *Conn) bool {
	b, err := c.st.Encode(l.wbuf[:0], nil)
	if err != nil {
		l.closeConn(c, fmt.Errorf("evloop: encoding for client: %w", err))
		return false
	}
	if len(b) == 0 {
		return true
	}
	l.keepWbuf(b)
	return l.httpWriteWire(c, b)
}
