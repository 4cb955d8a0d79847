//go:build linux

package evloop

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"

	"github.com/gosmartproxy/smartproxy/internal/h1parse"
	"golang.org/x/sys/unix"
)

// The backend side of an HTTP-mode exchange: the request sent in one send on a pooled
// connection (or a new one), the response head parsed strictly (h1parse.ParseResponse, heads
// up to httpMaxRespHead), rewritten by OnResponse and written with the first body bytes in
// one send, the body relayed as framed, and the connection pooled again when the response
// ended cleanly with nothing after it.

// httpMaxRespHead bounds a response head (as internal/h1client does).
const httpMaxRespHead = 16 << 10

// exchange starts the request of c.h.plan on a pooled connection to its target, or a new one.
func (l *loop) exchange(c *Conn) {
	h := c.h
	target := h.plan.Target
	c.target = target
	h.sent, h.bn, h.headDone, h.left, h.relayed, h.got = 0, 0, false, 0, 0, false
	h.sendErr, h.full = nil, false
	h.trail = h.trail[:0]
	if !h.retried {
		if fd, gen, ok := l.poolGet(target); ok {
			h.reused = true
			c.s[1] = sock{fd: fd, gen: gen, c: c, other: &c.s[0], dir: 1}
			l.setSock(fd, &c.s[1])
			c.connected = true
			l.sendRequest(c)
			return
		}
	}
	h.reused = false
	c.connected = false
	c.s[1] = sock{fd: -1, c: c, other: &c.s[0], dir: 1}
	if err := l.connect(c, target); err != nil {
		l.exchangeFailed(c, err)
	}
}

// backendReady serves an event of the exchange's backend socket.
func (l *loop) backendReady(c *Conn, events uint32) {
	h, s := c.h, &c.s[1]
	if events&unix.EPOLLERR != 0 {
		err := errors.New("socket error")
		if v, gerr := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_ERROR); gerr == nil && v != 0 {
			err = unix.Errno(v)
		}
		if !c.connected {
			err = fmt.Errorf("evloop: connect %v: %w", c.target, err)
			l.exchangeFailed(c, err)
			return
		}
		h.sendErr = err // a reset after an answer: read the answer first
		l.backendRead(c)
		return
	}
	if events&unix.EPOLLRDHUP != 0 {
		s.rdhup = true
	}
	if !c.connected {
		if events&(unix.EPOLLOUT|unix.EPOLLHUP) == 0 {
			return
		}
		c.connected = true
		c.connectAt = 0
		if f := l.srv.cfg.OnConnect; f != nil {
			f(c)
		}
		if !l.sendRequest(c) {
			return
		}
	} else if events&unix.EPOLLOUT != 0 && h.sent < h.plan.size() && h.sendErr == nil {
		if !l.sendRequest(c) {
			return
		}
	}
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP) != 0 {
		l.backendRead(c)
	}
}

// sendRequest writes what is left of the request; the response timeout starts once all of it
// is written. It reports false when the exchange ended.
func (l *loop) sendRequest(c *Conn) bool {
	h := c.h
	out, body := h.plan.Out, h.plan.Body
	for h.sent < len(out)+len(body) {
		var w int
		var err error
		switch {
		case h.sent >= len(out):
			w, err = send(c.s[1].fd, body[h.sent-len(out):])
		case len(body) > 0:
			w, err = l.sendTwo(c.s[1].fd, out[h.sent:], body)
		default:
			w, err = send(c.s[1].fd, out[h.sent:])
		}
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			l.armWrite(c)
			return true
		}
		if err != nil {
			// The backend may have answered before it closed (an early refusal of
			// a large body): what it sent is read first; the write error stands when the
			// socket holds no whole answer.
			h.sendErr = fmt.Errorf("evloop: writing backend: %w", err)
			l.backendRead(c)
			return false
		}
		h.sent += w
	}
	c.writeAt = 0
	if !h.headDone {
		if t := l.srv.httpResponse; t > 0 {
			l.httpArm(c, l.clock()+int64(t), ErrHTTPResponseTimeout)
		}
	}
	return true
}

// backendRead reads the response and relays it, unless the client is behind (then once it
// took what waits for it).
func (l *loop) backendRead(c *Conn) {
	h, s := c.h, &c.s[1]
	if len(h.out) > 0 || s.fd < 0 {
		s.more = true
		if h.headDone {
			h.at = 0 // the client is behind: the write timeout covers it
		}
		return
	}
	s.more = false
	for {
		if h.bin == nil {
			h.bin = l.getBin()
		}
		if h.bn == len(h.bin) {
			l.exchangeFailed(c, fmt.Errorf("%w: head over %d bytes", ErrHTTPBadResponse, httpMaxRespHead))
			return
		}
		n, err := recv(s.fd, h.bin[h.bn:])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			if h.sendErr != nil { // no answer came before the failed send
				l.exchangeFailed(c, h.sendErr)
				return
			}
			if t := l.srv.httpBody; t > 0 && h.headDone { // the body must keep coming
				l.httpArm(c, l.clock()+int64(t), ErrHTTPResponseTimeout)
			}
			return
		}
		if err != nil {
			l.exchangeFailed(c, fmt.Errorf("evloop: reading backend: %w", err))
			return
		}
		if n == 0 {
			s.eof = true
			l.backendEOF(c)
			return
		}
		h.got = true
		h.bn += n
		short := h.bn < len(h.bin)
		h.full = !short // the socket may hold bytes past this read
		if !l.relay(c) {
			return // the exchange ended, or the client is behind
		}
		if t := l.srv.httpBody; t > 0 && h.headDone { // the body must keep coming
			l.httpArm(c, l.clock()+int64(t), ErrHTTPResponseTimeout)
		}
		if short && !s.rdhup {
			return
		}
	}
}

// relay parses and passes on what bin holds. It reports whether to read on.
func (l *loop) relay(c *Conn) bool {
	h := c.h
	out := l.hbuf[:0]
	for !h.headDone {
		err := h1parse.ParseResponse(h.bin[:h.bn], &h.resp, h.plan.Head)
		if errors.Is(err, h1parse.ErrIncomplete) {
			if len(out) > 0 && !l.httpWrite(c, out) { // interim heads relayed so far
				return false
			}
			return len(h.out) == 0
		}
		if err == nil && h.resp.Status == 101 {
			err = errors.New("101 to a request that asked for no upgrade")
		}
		if err != nil {
			l.exchangeFailed(c, fmt.Errorf("%w: %w", ErrHTTPBadResponse, err))
			return false
		}
		head, ok := out, true
		if f := l.srv.cfg.OnResponse; f != nil {
			head, ok = f(c, &h.resp, out)
		}
		if !ok {
			l.exchangeFailed(c, ErrHTTPBadResponse)
			return false
		}
		out = head
		hl := h.resp.HeadLen
		if h.resp.Status < 200 { // interim (100, 103): relayed, then the final head
			h.bn = copy(h.bin, h.bin[hl:h.bn])
			continue
		}
		h.headDone = true
		h.at = 0
		switch h.resp.Framing {
		case h1parse.Length:
			h.left = h.resp.ContentLength
		case h1parse.Chunked:
			h.chunks.Reset()
		}
		h.bn = copy(h.bin, h.bin[hl:h.bn])
	}
	body := h.bin[:h.bn]
	take, done := len(body), false
	consumed := 0   // bytes of body that are the response's, when more than take (held trailers)
	var tail []byte // a held trailer section, filtered, passed on after body[:take]
	switch h.resp.Framing {
	case h1parse.NoBody:
		take, done = 0, true
	case h1parse.Length:
		take = int(min(int64(take), h.left))
		h.left -= int64(take)
		done = h.left == 0
	case h1parse.Chunked:
		var err error
		if l.srv.cfg.HTTPTrailerName == nil {
			take, done, err = h.chunks.Scan(body)
		} else {
			take, consumed, done, tail, err = l.scanTrailers(h, body)
		}
		if err != nil {
			if len(out) > 0 && !l.httpWrite(c, out) {
				return false
			}
			l.exchangeFailed(c, fmt.Errorf("%w: %w", ErrHTTPBadResponse, err))
			return false
		}
	}
	h.relayed += int64(take)
	if consumed < take {
		consumed = take
	}
	clean := consumed == len(body) // nothing came after the response
	if h.resp.Framing == h1parse.UntilClose && take > 0 {
		// Passed on chunked, a piece a chunk: the client's connection outlives the backend's.
		out = append(strconv.AppendInt(out, int64(take), 16), "\r\n"...)
		out = append(append(out, body...), "\r\n"...)
		l.hbuf = out[:0]
		take = 0
	}
	switch {
	case len(out) == 0 && tail == nil:
		out = body[:take]
	default:
		out = append(out, body[:take]...) // head and body in one send
		out = append(out, tail...)
		l.hbuf = out[:0] // keep a grown buffer
	}
	h.bn = 0
	if len(out) > 0 && !l.httpWrite(c, out) {
		return false
	}
	if done {
		l.exchangeDone(c, clean)
		return false
	}
	return len(h.out) == 0
}

// httpMaxTrailers bounds a chunked response's trailer section, held until whole when trailers
// are filtered (Config.HTTPTrailerName).
const httpMaxTrailers = 16 << 10

var errTrailersTooLarge = fmt.Errorf("trailer section over %d bytes", httpMaxTrailers)

// scanTrailers scans a chunked body's piece when trailers are filtered: the chunks pass as
// they come (take), the trailer section is held in h.trail until it ended (consumed counts
// the piece's bytes that were the response's), then passed on (tail) without the fields
// HTTPTrailerName refuses.
func (l *loop) scanTrailers(h *httpState, body []byte) (take, consumed int, done bool, tail []byte, err error) {
	if !h.chunks.InTrailers() {
		if take, done, err = h.chunks.ScanChunks(body); err != nil || done || !h.chunks.InTrailers() {
			return take, take, done, nil, err
		}
	}
	t, end, err := h.chunks.Scan(body[take:])
	if err == nil && len(h.trail)+t > httpMaxTrailers {
		err = errTrailersTooLarge
	}
	if err != nil {
		return take, take, false, nil, err
	}
	h.trail = append(h.trail, body[take:take+t]...)
	if !end {
		return take, take + t, false, nil, nil
	}
	ok := l.srv.cfg.HTTPTrailerName
	section := h.trail
	for len(section) > 0 { // lines the scanner validated: "name: value" CRLF, then CRLF
		i := bytes.IndexByte(section, '\n')
		line := section[:i+1]
		section = section[i+1:]
		if colon := bytes.IndexByte(line, ':'); colon > 0 && !ok(line[:colon]) {
			continue
		}
		tail = append(tail, line...)
	}
	h.trail = h.trail[:0]
	return take, take + t, true, tail, nil
}

// lastChunk ends a body passed on chunked.
var lastChunk = []byte("0\r\n\r\n")

// backendEOF: a body delimited by the close ends there (the client gets the last chunk);
// anything else was cut off.
func (l *loop) backendEOF(c *Conn) {
	h := c.h
	if h.headDone && h.resp.Framing == h1parse.UntilClose {
		if l.httpWrite(c, lastChunk) {
			l.exchangeDone(c, false)
		}
		return
	}
	if h.sendErr != nil { // closed with no answer to a request it did not take whole
		l.exchangeFailed(c, h.sendErr)
		return
	}
	l.exchangeFailed(c, ErrHTTPBackendClosed)
}

// exchangeDone ends an exchange whose response was relayed whole: the backend connection
// goes back to the pool when it may carry another request: the response did not ask to
// close, was not delimited by the close, nothing came after it (reusable) nor may wait past
// a read that filled the buffer (full), and all of the request went out (a backend that
// answered early and is still to take the rest would read the next request as its body).
func (l *loop) exchangeDone(c *Conn, reusable bool) {
	h, s := c.h, &c.s[1]
	if reusable && !h.resp.Close && !s.eof && !s.rdhup && s.fd >= 0 && h.sent == h.plan.size() && !h.full {
		l.poolPut(c.target, s.fd, s.gen)
		s.fd = -1
	} else {
		l.dropBackend(c)
	}
	l.endExchange(c, nil)
	if c.closed {
		return
	}
	if h.plan.Close || h.req.Close {
		h.closing = true
	}
	l.httpConsume(c)
	if len(h.out) == 0 {
		l.httpServe(c)
		if !c.closed && c.s[0].more {
			l.clientRead(c)
		}
	}
}

// exchangeFailed ends an exchange that broke: a stale pooled connection (closed before it
// answered a byte) is replaced by a new one for a replayable request, or OnHTTPRetry plans
// another attempt; otherwise OnExchangeEnd words the answer when nothing of the response was
// written yet (the connection then carries on, unless the request or plan said close), and a
// response cut after its head closes the connection.
func (l *loop) exchangeFailed(c *Conn, err error) {
	h := c.h
	l.dropBackend(c)
	if h.reused && !h.got && !h.retried && h.plan.Replayable && staleErr(err) {
		h.retried = true
		l.exchange(c)
		return
	}
	if f := l.srv.cfg.OnHTTPRetry; f != nil && !h.got {
		if plan, ok := f(c, err, c.connected); ok {
			plan.HandOff, plan.Respond = false, nil
			h.plan = plan
			h.retried = false
			l.exchange(c)
			return
		}
	}
	answer := l.endExchange(c, err)
	if c.closed {
		return
	}
	if h.headDone || answer == nil {
		l.closeConn(c, err) // the response is cut: the client sees it end early
		return
	}
	// The request was read whole before it went out: the client's stream is where the next
	// request starts, and the connection carries on after the answer unless it was to close.
	if h.plan.Close || h.req.Close {
		c.err = err
		h.closing = true
	}
	l.httpConsume(c)
	if !l.httpWrite(c, answer) || len(h.out) > 0 {
		return // httpFlush goes on once the client took it
	}
	l.httpServe(c)
	if !c.closed && c.s[0].more {
		l.clientRead(c)
	}
}

// staleErr reports an error a closed idle connection gives to the first request sent on it.
func staleErr(err error) bool {
	return errors.Is(err, ErrHTTPBackendClosed) || errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE)
}

// endExchange reports the exchange's end to OnExchangeEnd and clears it; it returns the
// owner's answer for a failed one.
func (l *loop) endExchange(c *Conn, err error) []byte {
	h := c.h
	h.busy = false
	h.at = 0
	c.writeAt, c.connectAt = 0, 0
	var answer []byte
	if f := l.srv.cfg.OnExchangeEnd; f != nil {
		status := 0
		if h.headDone {
			status = h.resp.Status
		}
		answer = f(c, status, h.relayed, err)
	}
	h.plan.Out, h.plan.Body = nil, nil
	h.retried = false
	l.putBin(h)
	return answer
}

// dropBackend closes the exchange's backend socket.
func (l *loop) dropBackend(c *Conn) {
	s := &c.s[1]
	if s.fd < 0 {
		return
	}
	if s.fd < len(l.socks) && l.socks[s.fd] == s {
		l.socks[s.fd] = nil
	}
	closeFD(s.fd)
	s.fd = -1
}

// getBin is a backend read buffer from the loop's spares.
func (l *loop) getBin() []byte {
	if n := len(l.bins); n > 0 {
		b := l.bins[n-1]
		l.bins = l.bins[:n-1]
		return b
	}
	return make([]byte, httpMaxRespHead)
}

// putBin gives an exchange's read buffer back (a few are kept for the next exchanges).
func (l *loop) putBin(h *httpState) {
	if h.bin != nil && len(l.bins) < 64 {
		l.bins = append(l.bins, h.bin)
	}
	h.bin, h.bn = nil, 0
}

// size is how many bytes the plan's request is: Out and Body.
func (p *HTTPPlan) size() int { return len(p.Out) + len(p.Body) }
