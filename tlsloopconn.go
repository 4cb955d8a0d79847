package smartproxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/evloop"
)

// A terminated TLS connection's tls.Conn reads and writes through a tlsLoopConn, so that the
// connection can move to an event loop after its handshake (enginetls_linux.go): until then,
// and again after the loop hands it back, it is the metered socket; while a loop serves it,
// reads take the bytes the loop fed in and writes collect for the loop to send. The tls.Conn
// keeps its state (keys, sequence numbers, bytes read ahead) across both moves.
type tlsLoopConn struct {
	net.Conn // the metered socket (goroutine path)
	onLoop   bool
	// in is what the loop fed in and the tls.Conn has not read yet: the loop's buffer until
	// the Read after the Feed returns (the tls.Conn reads all of it into its own buffer when
	// it needs a record), a copy of its own past that (tlsStream.Read). out is what the
	// tls.Conn wrote while on the loop and the loop has not taken yet (tlsStream.Encode).
	in  []byte
	out []byte
}

// errLoopWouldBlock is what a tlsLoopConn on a loop returns when it has no byte: temporary,
// so the tls.Conn keeps a partial record and goes on when more is fed (crypto/tls treats a
// temporary net.Error as a deadline: not sticky).
var errLoopWouldBlock error = loopWouldBlock{}

type loopWouldBlock struct{}

func (loopWouldBlock) Error() string   { return "smartproxy: no TLS bytes fed yet" }
func (loopWouldBlock) Timeout() bool   { return true }
func (loopWouldBlock) Temporary() bool { return true }

func (c *tlsLoopConn) Read(p []byte) (int, error) {
	if len(c.in) > 0 {
		n := copy(p, c.in)
		c.in = c.in[n:]
		if len(c.in) == 0 {
			c.in = nil // no reference to the loop's buffer, no buffer held while idle
		}
		return n, nil
	}
	if c.onLoop {
		return 0, errLoopWouldBlock
	}
	return c.Conn.Read(p)
}

func (c *tlsLoopConn) Write(p []byte) (int, error) {
	if c.onLoop {
		c.out = append(c.out, p...)
		return len(p), nil
	}
	if len(c.out) > 0 { // written on the loop and not sent before the hand-back
		if _, err := c.Conn.Write(c.out); err != nil {
			return 0, err
		}
		c.out = nil
	}
	return c.Conn.Write(p)
}

// SetDeadline and the like reach the socket only on the goroutine path: on a loop the loop's
// own timeouts rule.
func (c *tlsLoopConn) SetDeadline(t time.Time) error {
	if c.onLoop {
		return nil
	}
	return c.Conn.SetDeadline(t)
}

func (c *tlsLoopConn) SetReadDeadline(t time.Time) error {
	if c.onLoop {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *tlsLoopConn) SetWriteDeadline(t time.Time) error {
	if c.onLoop {
		return nil
	}
	return c.Conn.SetWriteDeadline(t)
}

// tlsStream is a loop-served TLS connection's evloop.Stream: the loop feeds socket bytes in,
// reads plaintext out of the tls.Conn, and has what it writes encrypted by it.
type tlsStream struct {
	tc *tls.Conn
	lc *tlsLoopConn
	// broken: a read failed (a record that does not decrypt, an alert): the stream ends with
	// the alert the tls.Conn raised, and no close_notify after it.
	broken bool
}

// Feed is evloop.Stream's: b is read in place by the Read that follows (behind what an
// earlier Read left, which is a copy of its own).
func (s *tlsStream) Feed(b []byte) {
	if len(s.lc.in) > 0 {
		s.lc.in = append(s.lc.in, b...)
		return
	}
	s.lc.in = b
}

// Read is evloop.Stream's: the conn's errLoopWouldBlock is the loop's ErrWouldBlock.
func (s *tlsStream) Read(p []byte) (int, error) {
	n, err := s.tc.Read(p)
	if len(s.lc.in) > 0 {
		// Not taken by this Read (the tls.Conn takes all it was fed when it needs a record,
		// so only a Read that ended early leaves some): kept, as the loop's buffer is not.
		s.lc.in = append([]byte(nil), s.lc.in...)
	}
	switch {
	case err == nil || errors.Is(err, io.EOF):
	case errors.Is(err, errLoopWouldBlock):
		err = evloop.ErrWouldBlock
	default:
		s.broken = true
	}
	return n, err
}

// End is evloop.Stream's: what the tls.Conn wrote of its own accord (an alert), then the
// close_notify alert, unless the stream broke (the tls.Conn's own Close sends none after a
// fatal alert either).
func (s *tlsStream) End(dst []byte) []byte {
	lc := s.lc
	dst = append(dst, lc.out...)
	lc.out = dst
	if !s.broken {
		_ = s.tc.CloseWrite()
	}
	dst, lc.out = lc.out, nil
	return dst
}

// Encode is evloop.Stream's: what the tls.Conn wrote of its own accord since the last call
// (a key update's answer), then p's records.
func (s *tlsStream) Encode(dst, p []byte) ([]byte, error) {
	lc := s.lc
	dst = append(dst, lc.out...)
	lc.out = dst
	var err error
	if len(p) > 0 {
		_, err = s.tc.Write(p)
	}
	dst, lc.out = lc.out, nil
	return dst, err
}
