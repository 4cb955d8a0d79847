package forwarding

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
)

// copyBufSize is the chunk size of the user-space fallback copy.
const copyBufSize = 32 << 10

// tlsBufSize is the chunk size when reading a *tls.Conn: one Read returns at most one
// record's plaintext (16 KiB), so a bigger buffer would only be held, never filled. A
// terminated connection waits in Read holding its buffer, so this halves what an idle one
// pins.
const tlsBufSize = 16 << 10

var (
	copyBufPool = sync.Pool{New: func() any {
		b := make([]byte, copyBufSize)
		return &b
	}}
	tlsBufPool = sync.Pool{New: func() any {
		b := make([]byte, tlsBufSize)
		return &b
	}}
)

// bufPoolFor picks the buffer pool for reading src.
func bufPoolFor(src net.Conn) *sync.Pool {
	for range maxUnwrap {
		switch v := src.(type) {
		case *tls.Conn:
			return &tlsBufPool
		case interface{ Unwrap() net.Conn }:
			src = v.Unwrap()
		default:
			return &copyBufPool
		}
	}
	return &copyBufPool
}

// maxUnwrap bounds how many wrapper layers unwrapTCP looks through, so a conn whose Unwrap
// returns itself cannot loop forever.
const maxUnwrap = 8

// unwrapTCP returns the *net.TCPConn beneath c, or nil. forRead says the caller wants to
// read from the socket directly, which would skip bytes a *PeekConn layer still buffers; such
// a layer therefore stops the search.
func unwrapTCP(c net.Conn, forRead bool) *net.TCPConn {
	for range maxUnwrap {
		switch v := c.(type) {
		case *net.TCPConn:
			return v
		case *PeekConn:
			if forRead && len(v.Buffered()) > 0 {
				return nil
			}
			c = v.Conn
		case interface{ Unwrap() net.Conn }:
			c = v.Unwrap()
		default:
			return nil
		}
	}
	return nil
}

// copy moves the direction's src to dst until EOF (nil error), failure, or errParked, and
// returns the bytes written by this call. It is called again after a park.
func (s *pipeState) copy(d *pipeDir) (int64, error) {
	var total int64
	dir, src, dst := d.dir, d.src, d.dst
	// Replay what a PeekConn prefetched (typically the ClientHello) so that the rest of
	// the stream can come straight from the socket.
	if pc, ok := src.(*PeekConn); ok {
		if b := pc.Buffered(); len(b) > 0 {
			n, err := d.wd.write(dst, b)
			pc.consume(n)
			total += int64(n)
			if err != nil {
				return total, err
			}
			s.moved(dir, src, n)
		}
	}
	rs, ws := unwrapTCP(src, true), unwrapTCP(dst, false)
	if rs != nil {
		d.attach(rs)
	}
	if rs != nil && ws != nil {
		n, handled, err := spliceCopy(d, rs, ws)
		if handled {
			return total + n, err
		}
	}
	n, err := s.bufferCopy(d, rs)
	return total + n, err
}

// bufferCopy is the portable copy loop. When the source is a TCP socket it first waits for
// readability without holding a buffer, so an idle connection pins none; otherwise a pooled
// buffer is held for the whole copy because a generic Read needs one to wait in.
func (s *pipeState) bufferCopy(d *pipeDir, srcTCP *net.TCPConn) (int64, error) {
	var (
		total int64
		bp    *[]byte
		wait  = newReadWaiter(srcTCP, d)
	)
	dir, src, dst := d.dir, d.src, d.dst
	pool := bufPoolFor(src)
	defer func() {
		if bp != nil {
			pool.Put(bp)
		}
	}()
	for {
		if wait != nil {
			if bp != nil {
				pool.Put(bp)
				bp = nil
			}
			if err := wait.wait(); err != nil {
				return total, d.waitError(err)
			}
		}
		if bp == nil {
			bp = pool.Get().(*[]byte)
		}
		nr, rerr := src.Read(*bp)
		if nr > 0 {
			nw, werr := d.wd.write(dst, (*bp)[:nr])
			total += int64(nw)
			if werr != nil {
				return total, werr
			}
			if nw != nr {
				return total, io.ErrShortWrite
			}
			s.moved(dir, src, nr)
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return total, nil
			}
			return total, d.waitError(rerr)
		}
	}
}
