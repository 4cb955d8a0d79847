//go:build linux

package evloop

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/h1parse"
	"golang.org/x/sys/unix"
)

// HTTP mode: a connection OnOpen answers with Decision.HTTP is served as HTTP/1.1 keep-alive
// by the loop itself, with no goroutine: request heads are read and parsed strictly
// (h1parse.Parse) into the connection's own buffer, a Content-Length body up to HTTPMaxHeld is
// read whole with its head, OnRequest decides (an answer of its own, a forward, or a hand-off
// of the connection), a forward goes to a backend connection from the loop's pool, written in
// one send, and the response is relayed as it comes: its head as OnResponse rewrites it, its
// body as framed (Content-Length counted, chunked validated by h1parse.ChunkScanner and passed
// on as it came, or until the backend closes), with back-pressure (a client that does not take
// the bytes stops the backend's reads). Pipelined requests wait in the buffer until the
// exchange before them is over: one exchange per connection at a time.
//
// What the loop does not carry (a chunked or larger request body, an upgrade: OnRequest sees
// the head and says), the owner hands off with the bytes read (HTTPPlan.HandOff); the request
// is then served elsewhere from its first byte.

// HTTPPlan is OnRequest's answer for one request.
type HTTPPlan struct {
	// Respond, when set, is the whole answer, written to the client as it is (a refusal, a
	// redirect); no backend is involved.
	Respond []byte
	// Close ends the connection after this request's answer.
	Close bool
	// Target and Out: Out (the outgoing head, the held body after it) is sent to Target over a
	// pooled connection or a new one. Out must stay unchanged until OnExchangeEnd.
	Target netip.AddrPort
	Out    []byte
	// Body, when set, is sent after Out, in the same system call (sendmsg) as far as the
	// socket takes it: the held body as OnRequest passed it (those bytes of the loop's stay
	// unchanged until OnExchangeEnd: the client is not read during an exchange), so that the
	// owner need not copy a body behind its head. Out holds the whole request when Body is
	// nil.
	Body []byte
	// Replayable: the request may be sent again on a new connection when a pooled one turns
	// out to be closed before it answered (GET, HEAD and the like, as the owner knows them).
	Replayable bool
	// Head: the request is HEAD (its response has no body whatever it declares).
	Head bool
	// HandOff gives the connection to OnHandOff with every byte read from this request's
	// first on; nothing of the request has been done.
	HandOff bool
}

// DefaultHTTPMaxHeld is the largest Content-Length body the loop reads whole (Config.HTTPMaxHeld).
const DefaultHTTPMaxHeld = 48 << 10

// httpMaxHead bounds a request head; httpHeadBuf is the client buffer's first size.
const (
	httpMaxHead = 64 << 10
	httpHeadBuf = 8 << 10
)

// Errors of HTTP mode, reported to OnExchangeEnd or OnClose.
var (
	ErrHTTPHeadTimeout     = errors.New("evloop: request head timeout")
	ErrHTTPIdleTimeout     = errors.New("evloop: keep-alive idle timeout")
	ErrHTTPResponseTimeout = errors.New("evloop: backend response timeout")
	ErrHTTPHeadTooLarge    = errors.New("evloop: request head too large")
	ErrHTTPBodyCut         = errors.New("evloop: client closed in a request body")
	ErrHTTPClientGone      = errors.New("evloop: client closed the connection during the exchange")
	// ErrHTTPCut wraps why a connection closed during an exchange, for OnExchangeEnd.
	ErrHTTPCut           = errors.New("evloop: connection closed during the exchange")
	ErrHTTPBackendClosed = errors.New("evloop: backend closed the connection before the response ended")
	ErrHTTPBadResponse   = errors.New("evloop: malformed backend response")
)

// httpState is an HTTP-mode connection's state; c.s[1] is the backend connection of the
// exchange under way (fd -1 between exchanges).
type httpState struct {
	in   []byte // client bytes: in[:n] read, in[:used] consumed by the exchange under way
	n    int
	used int
	req  h1parse.Request
	plan HTTPPlan
	busy bool  // an exchange is under way; client bytes wait in in
	xAt  int64 // when it started (monoNow)
	fin  bool  // the client's FIN came during it, within httpGoneGrace
	// pastFirst: the connection's first bytes are behind it: a request was answered or
	// forwarded, or it was adopted (its owner classified them). Until then OnHTTPFirst is
	// asked about an incomplete head, and OnMalformed's first is true.
	pastFirst bool
	// want is how much of in the request being read needs (its head and held body), once its
	// head came; 0 before: the buffer may grow to httpMaxHead.
	want int
	// closing: close once out is written (an answer with Close, a body until close).
	closing bool
	// out is what the client has not taken yet; the backend is not read while it holds any.
	out []byte

	// The exchange: what was sent of plan.Out and plan.Body, the response read so far.
	sent      int
	bin       []byte // backend bytes read: bin[:bn]
	bn        int
	resp      h1parse.Response
	headDone  bool
	left      int64 // Content-Length body still to come
	chunks    h1parse.ChunkScanner
	trail     []byte // a chunked response's trailer section, held (Config.HTTPTrailerName)
	relayed   int64  // response body bytes passed on
	got       bool   // a response byte came
	reused    bool   // the backend connection came from the pool
	retried   bool
	full      bool  // the last backend read filled bin: bytes may wait past it with no new edge
	continued bool  // 100 Continue written for the request being read
	sendErr   error // the send failed: the answer already sent is read first

	at     int64 // the phase's deadline (monoNow; 0: none): head, idle or response
	atErr  error
	headAt int64 // when the current head's first byte came
	// early: bytes came that are not a request's yet: empty lines before a request line, or
	// bytes fed to an adopted connection's stream that have not come out decoded (a TLS
	// record cut short, records that decode to nothing). The head's deadline runs from the
	// first of them, as from a head's first byte: trickling them keeps no connection open
	// past it.
	early bool
}

// httpStart readies c for HTTP mode once OnOpen chose it. An HTTP-mode connection stays in
// the loop's timed set for its lifetime (one of its deadlines is nearly always armed: idle,
// head, response), rather than entering and leaving it at every phase of every request.
func (l *loop) httpStart(c *Conn) {
	c.h = &httpState{}
	l.time(c)
	if t := l.srv.httpFirst; t > 0 {
		l.httpArm(c, l.clock()+int64(t), ErrHTTPIdleTimeout)
		return
	}
	l.httpIdle(c)
}

// httpIdle arms the keep-alive idle deadline between requests.
func (l *loop) httpIdle(c *Conn) {
	if t := l.srv.httpIdle; t > 0 {
		l.httpArm(c, l.clock()+int64(t), ErrHTTPIdleTimeout)
	} else {
		l.httpArm(c, 0, nil)
	}
}

// httpArm sets c's phase deadline (0: none).
func (l *loop) httpArm(c *Conn, at int64, err error) {
	c.h.at, c.h.atErr = at, err
}

// httpReady serves one readiness event of an HTTP-mode connection.
func (l *loop) httpReady(s *sock, events uint32) {
	c := s.c
	if s.dir == 1 {
		l.backendReady(c, events)
		return
	}
	if events&unix.EPOLLOUT != 0 && len(c.h.out) > 0 {
		if !l.httpFlush(c) {
			return
		}
	}
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP) != 0 {
		c.s[0].drained = false
		if h := c.h; h.busy && events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 && clientGone(c.s[0].fd) {
			// The client left while its request is out: the exchange is abandoned (its
			// backend connection closed), as net/http's server cancels a request whose
			// connection reads EOF; a FIN in the first httpGoneGrace is taken for a client
			// that half-closed after its request (the sweep abandons it after that).
			if events&(unix.EPOLLHUP|unix.EPOLLERR) != 0 || l.clock()-h.xAt >= int64(httpGoneGrace) {
				l.closeConn(c, ErrHTTPClientGone)
				return
			}
			h.fin = true
			return
		}
		l.clientRead(c)
	}
}

// httpGoneGrace is how long into an exchange a client's FIN is taken for a half-close, as the
// proxy's goroutine path starts watching a client only after 20 ms (fastWatchAfter): a quick
// exchange is still answered to a client that shut down its side after the request.
const httpGoneGrace = 20 * time.Millisecond

// clientGone reports a client socket whose peer closed with nothing left unread (a pipelined
// request waiting in it keeps the exchange going, as net/http's background read stops
// watching once it reads one).
func clientGone(fd int) bool {
	var b [1]byte
	for {
		n, _, err := unix.Recvfrom(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return false
		case err != nil:
			return true
		}
		return n == 0
	}
}

// clientRead reads what the client sent into its buffer, unless an exchange is under way (the
// bytes are read once it is over: s.more), then serves the requests buffered.
func (l *loop) clientRead(c *Conn) {
	h, s := c.h, &c.s[0]
again:
	if h.busy || len(h.out) > 0 {
		s.more = true
		return
	}
	s.more = false
	for !s.eof {
		if h.n == len(h.in) {
			if !l.httpGrow(c) {
				s.more = true // the socket may hold more, and no edge will say so
				break         // full: the parser decides (a head too large, a body over the cap)
			}
		}
		var n int
		var err error
		if c.st != nil {
			n, err = l.streamRead(c, h.in[h.n:])
		} else {
			n, err = recv(s.fd, h.in[h.n:])
		}
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			break
		}
		if err != nil {
			l.closeConn(c, fmt.Errorf("evloop: reading client: %w", err))
			return
		}
		if n == 0 {
			s.eof = true
			break
		}
		h.n += n
		if h.n < len(h.in) && !s.rdhup && c.st == nil {
			break // a short read emptied the socket (see pump); a stream reads to EAGAIN
		}
	}
	if c.st != nil && !l.streamFlush(c) {
		return
	}
	l.httpServe(c)
	if !c.closed && s.more {
		goto again // read what the full buffer left in the socket
	}
}

// httpGrow makes room in the client buffer: made on first use, doubled up to the head cap
// plus a held body. It reports false when the buffer is at its cap.
func (l *loop) httpGrow(c *Conn) bool {
	h := c.h
	limit := httpMaxHead
	if h.want > 0 {
		limit = max(h.want, httpHeadBuf)
	}
	switch {
	case h.in == nil:
		if n := len(l.ins); n > 0 {
			h.in, l.ins = l.ins[n-1], l.ins[:n-1]
		} else {
			h.in = make([]byte, httpHeadBuf)
		}
	case len(h.in) >= limit:
		return false
	default:
		// One step to the largest size any request needs (a head at its cap, or a head and a
		// held body), from the loop's spares: a held body then costs no allocation, and is
		// read in as few reads as it came in.
		var grown []byte
		if n := len(l.bigs); n > 0 {
			grown, l.bigs = l.bigs[n-1], l.bigs[:n-1]
		} else {
			grown = make([]byte, l.httpBig())
		}
		copy(grown, h.in[:h.n])
		l.spareIn(h.in)
		h.in = grown
	}
	return true
}

// httpBig is the size of a grown client buffer: a head at its cap and a held body.
func (l *loop) httpBig() int { return httpMaxHead + l.srv.httpMaxHeld }

// spareIn keeps a client buffer for the next connection that needs one (a few of each size).
func (l *loop) spareIn(b []byte) {
	switch {
	case len(b) == httpHeadBuf && len(l.ins) < 256:
		l.ins = append(l.ins, b)
	case len(b) == l.httpBig() && len(l.bigs) < 128: // up to 14 MiB at the default sizes, held only after a peak needed them
		l.bigs = append(l.bigs, b)
	}
}

// httpServe serves the requests in the client buffer, one exchange at a time. The client's
// bytes are counted (OnData, OnClose's totals) as the requests they carry are served, so that
// bytes handed off (HTTPPlan.HandOff) are left for the new owner to count.
func (l *loop) httpServe(c *Conn) {
	h, s := c.h, &c.s[0]
	for !c.closed && !h.busy && len(h.out) == 0 {
		if h.closing {
			l.closeConn(c, nil)
			return
		}
		if h.want == 0 {
			// Empty lines before a request line are ignored (RFC 9112 2.2), as the
			// goroutine path's sniffing does.
			skip := 0
			for skip < h.n && (h.in[skip] == '\n' || h.in[skip] == '\r' && skip+1 < h.n && h.in[skip+1] == '\n') {
				skip++
				if h.in[skip-1] == '\r' {
					skip++
				}
			}
			if skip > 0 {
				h.early = true
				l.servedIn(c, skip)
				h.n = copy(h.in, h.in[skip:h.n])
			}
		}
		if h.n == 0 {
			if s.eof || l.srv.shutting.Load() {
				l.closeConn(c, nil) // the client is done between requests
				return
			}
			// An idle connection holds no buffer: it goes back to the loop's spares.
			l.spareIn(h.in)
			h.in = nil
			if h.early {
				l.httpWaitHead(c)
				return
			}
			h.headAt = 0
			l.httpIdle(c)
			return
		}
		if h.want > 0 && h.n < h.want { // the head parsed already: only body bytes came
			if s.eof {
				l.httpRefuse(c, ErrHTTPBodyCut)
				return
			}
			l.httpReading(c)
			l.httpIdle(c)
			return
		}
		err := h1parse.Parse(h.in[:h.n], &h.req)
		if errors.Is(err, h1parse.ErrIncomplete) && !h.pastFirst {
			if f := l.srv.cfg.OnHTTPFirst; f != nil && f(c, h.in[:h.n]) {
				l.httpHandOff(c) // never a request (TLS, another protocol): the owner's
				return
			}
		}
		if errors.Is(err, h1parse.ErrIncomplete) {
			if h.n >= httpMaxHead {
				err = ErrHTTPHeadTooLarge
			} else {
				l.httpWaitHead(c)
				return
			}
		}
		if err == nil && h.req.HeadLen > httpMaxHead {
			err = ErrHTTPHeadTooLarge
		}
		if err != nil {
			l.httpRefuse(c, err)
			return
		}
		end := h.req.HeadLen
		// A body the loop does not read: chunked, over the cap, or awaited with Expect where
		// the owner decides from the head alone.
		unheld := h.req.Chunked || h.req.ContentLength > int64(l.srv.httpMaxHeld) || h.req.Expect && l.srv.cfg.HTTPExpectUnheld
		if cl := h.req.ContentLength; cl > 0 && !unheld {
			end += int(cl)
			h.want = end
			if h.n < end {
				if h.req.Expect && h.n == h.req.HeadLen && !h.continued { // the client waits for it
					h.continued = true
					if !l.httpWrite(c, []byte("HTTP/1.1 100 Continue\r\n\r\n")) {
						return
					}
				}
				if s.eof {
					l.httpRefuse(c, ErrHTTPBodyCut)
					return
				}
				l.httpReading(c)
				l.httpIdle(c) // body progress: the idle timeout between reads
				return
			}
		}
		h.used = end
		h.pastFirst = true
		h.plan = HTTPPlan{}
		if f := l.srv.cfg.OnRequest; f != nil {
			h.plan = f(c, &h.req, h.in[:end])
		}
		switch p := &h.plan; {
		case p.HandOff:
			l.httpHandOff(c)
			return
		case p.Respond != nil:
			l.httpConsume(c)
			l.httpArm(c, 0, nil)                         // the head is done; a slow reader is the write timeout's
			h.closing = p.Close || h.req.Close || unheld // the body left unread is no request (CL.0)
			l.httpWrite(c, p.Respond)
		case p.Target.IsValid() && unheld: // only its head would go; its body would be parsed as requests
			l.closeConn(c, ErrRefused)
			return
		case p.Target.IsValid():
			h.busy, h.fin, h.xAt = true, false, l.clock()
			l.httpArm(c, 0, nil)
			l.exchange(c)
		default:
			l.closeConn(c, ErrRefused)
			return
		}
	}
}
