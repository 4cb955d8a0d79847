package forwarding

import (
	"net"
	"sync"
	"sync/atomic"
)

// peekBufSize is the size of pooled read-ahead buffers: one read of this size holds a
// typical ClientHello (1-2 KiB, ~1.8 KiB with an ML-KEM key share) and any early bytes.
const peekBufSize = 16 << 10

// peekBufPool recycles read-ahead buffers so that connections only hold one while they are
// being sniffed; a proxied connection that is idle must not pin 16 KiB.
var peekBufPool = sync.Pool{New: func() any {
	b := make([]byte, peekBufSize)
	return &b
}}

// peekBufsHeld counts the PeekConns currently holding a read-ahead buffer (pooled or grown),
// so tests can check that waiting connections hold none.
var peekBufsHeld atomic.Int64

// PeekConn is a net.Conn that can read ahead (prefetch) and then replay what it read: Read
// returns buffered bytes first, then reads the underlying connection. All other net.Conn
// methods are those of the underlying connection.
//
// The read-ahead buffer comes from a pool and goes back to it as soon as Read has returned
// every buffered byte (or on Release), so a PeekConn costs no buffer once drained. Like any
// net.Conn, Read and Fill must not be called concurrently with each other.
type PeekConn struct {
	net.Conn

	buf  *[]byte // read-ahead buffer; nil when none is held
	r, w int     // unread bytes are (*buf)[r:w]
	err  error   // read error met while Fill already had enough bytes; returned once drained
}

// NewPeekConn wraps c. It allocates no buffer until the first Fill.
func NewPeekConn(c net.Conn) *PeekConn {
	return &PeekConn{Conn: c}
}

// Fill reads from the underlying connection until at least min bytes are buffered. It may
// buffer more (each underlying Read asks for as much as fits). It honours the connection's
// deadlines. If the connection ends or fails first it returns that read error (io.EOF, a
// timeout, ...) and keeps whatever was read.
func (c *PeekConn) Fill(min int) error {
	if c.w-c.r >= min {
		return nil
	}
	if c.err != nil {
		err := c.err
		c.err = nil
		return err
	}
	if c.w == c.r && !c.readNow(min) {
		c.waitReadable()
	}
	c.reserve(min)
	for c.w-c.r < min {
		n, err := c.Conn.Read((*c.buf)[c.w:])
		c.w += n
		if err != nil {
			if c.w-c.r >= min {
				c.err = err // deliver it after the buffered bytes, like io.Reader demands
				return nil
			}
			c.releaseIfEmpty()
			return err
		}
	}
	return nil
}

// readNow reads what a TCP connection has already received into the buffer without
// waiting, and reports whether it got any bytes. Usually the first bytes (a ClientHello, a
// request line) are there by the time a connection is sniffed, and then this one read replaces
// waitReadable's MSG_PEEK probe and the read after it: one system call fewer per connection.
// When nothing is there (or on EOF, an error, a deadline) it leaves the buffer as it was and
// the caller waits and reads as before, which reports those exactly as a plain Read would.
func (c *PeekConn) readNow(min int) bool {
	tc, ok := c.Conn.(*net.TCPConn)
	if !ok {
		return false
	}
	c.reserve(min)
	n := readAvailable(tc, (*c.buf)[c.w:])
	c.w += n
	return n > 0
}

// waitReadable blocks until the underlying connection has something to read (data, EOF or
// an error) without holding a buffer, so a silent client pins none for as long as its
// deadline allows. It only knows how to wait on a *net.TCPConn (on Linux); for other conns,
// and on any error (deadline, closed conn), it returns at once and the Read that follows
// blocks or reports the error exactly as it would have without the wait.
func (c *PeekConn) waitReadable() {
	tc := unwrapTCP(c.Conn, true) // through wrappers (the PROXY protocol's), not past buffered bytes
	if tc == nil {
		return
	}
	c.releaseIfEmpty()
	if w := newReadWaiter(tc, nil); w != nil {
		_ = w.wait()
	}
}

// reserve makes room for at least n unread bytes in the buffer, taking a pooled buffer or
// growing past the pool size for oversized hellos. Unread bytes move to the front.
func (c *PeekConn) reserve(n int) {
	if c.buf == nil {
		c.buf = peekBufPool.Get().(*[]byte)
		c.r, c.w = 0, 0
		peekBufsHeld.Add(1)
	}
	b := *c.buf
	switch {
	case len(b) < n:
		nb := make([]byte, (n+4095)&^4095) // round up to whole pages
		c.w = copy(nb, b[c.r:c.w])
		c.r = 0
		c.putBuf()
		c.buf = &nb
	case len(b)-c.r < n:
		c.w = copy(b, b[c.r:c.w])
		c.r = 0
	}
}

// Buffered returns the unconsumed buffered bytes. The slice aliases the internal buffer and
// is only valid until the next Read, Fill or Release.
func (c *PeekConn) Buffered() []byte {
	if c.buf == nil {
		return nil
	}
	return (*c.buf)[c.r:c.w]
}

// Read returns buffered bytes first (without touching the connection), then reads from the
// underlying connection.
func (c *PeekConn) Read(p []byte) (int, error) {
	if c.r < c.w {
		n := copy(p, (*c.buf)[c.r:c.w])
		c.consume(n)
		return n, nil
	}
	if c.err != nil {
		err := c.err
		c.err = nil
		return 0, err
	}
	c.releaseIfEmpty()
	return c.Conn.Read(p)
}

// Discard drops up to n buffered bytes without copying them, for a caller
// that has already passed Buffered() on (replayed it to a backend). It
// returns how many were dropped; the buffer goes back to its pool once empty.
func (c *PeekConn) Discard(n int) int {
	n = min(n, c.w-c.r)
	if n > 0 {
		c.consume(n)
	}
	return n
}

// consume drops n buffered bytes and gives the buffer back once it is empty.
func (c *PeekConn) consume(n int) {
	c.r += n
	c.releaseIfEmpty()
}

// Unwrap returns the underlying connection.
func (c *PeekConn) Unwrap() net.Conn { return c.Conn }

// CloseWrite shuts down the writing side of the underlying connection if it supports it
// (e.g. *net.TCPConn, *tls.Conn); otherwise it returns an error wrapping
// errors.ErrUnsupported (see CloseWrite, the function).
func (c *PeekConn) CloseWrite() error { return CloseWrite(c.Conn) }

// Release hands the internal buffer back to the pool. It is a no-op while bytes are still
// buffered, because dropping them would silently lose data; Read releases the buffer by
// itself when it returns the last buffered byte, so Release is only needed when a Fill
// buffered nothing or the caller stops reading.
func (c *PeekConn) Release() { c.releaseIfEmpty() }

func (c *PeekConn) releaseIfEmpty() {
	if c.buf != nil && c.r >= c.w {
		c.putBuf()
		c.buf = nil
		c.r, c.w = 0, 0
		peekBufsHeld.Add(-1)
	}
}

// putBuf returns the current buffer to the pool if it has the pooled size; grown buffers
// are left to the garbage collector so the pool never hoards oversized ones.
func (c *PeekConn) putBuf() {
	if c.buf != nil && cap(*c.buf) == peekBufSize {
		peekBufPool.Put(c.buf)
	}
}
