package smartproxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/gosmartproxy/smartproxy/forwarding"
	"github.com/gosmartproxy/smartproxy/internal/rawsock"
)

// meterConn is the proxy's one counting connection: it counts a client
// connection's bytes into its record, so that the connection manager's
// inactivity timeout and metrics see traffic that no copier counts. It
// sits beneath TLS when the proxy terminates it (http.Server needs the
// *tls.Conn itself, for HTTP/2 and r.TLS), and around the conn a socket
// handler is given (runHandler). Counting happens while on is set, so
// that paths counting on their own (the TCP copier, socket handlers
// beneath another meter) are not counted twice; the forwarded TCP path
// counts in the copier instead (Proxy.pipeOptions).
//
// It also enforces the write-progress timeout (Options.WriteTimeout) on
// every write to the client, h2 and TLS included: http.Server has no such
// timeout (its WriteTimeout bounds a whole response), and HTTP/2's
// WriteByteTimeout would clear the deadline after each write. The deadline
// is moved lazily (see arm), so a write costs a clock read.
type meterConn struct {
	net.Conn
	rec *connection.Record
	on  atomic.Bool
	// uncounted is how many of the next bytes read were counted already
	// (a handed-over request's head, replayed to the handler); only the
	// reading goroutine touches it.
	uncounted int
	// wt is the write-progress timeout, 0 for none; set by httpLayer.serve
	// before the server writes anything.
	wt time.Duration
	// armed is when the deadline we set expires (ns on monoNow's clock);
	// 0: none of ours is set; -1: the server set its own, which rules.
	armed atomic.Int64
}

func (c *meterConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && c.on.Load() {
		counted := n
		if c.uncounted > 0 {
			skip := min(c.uncounted, n)
			c.uncounted -= skip
			counted -= skip
		}
		if counted > 0 {
			c.rec.AddIn(counted)
		}
	}
	return n, err
}

func (c *meterConn) Write(b []byte) (int, error) {
	if c.wt <= 0 {
		n, err := c.Conn.Write(b)
		c.count(n)
		return n, err
	}
	total := 0
	for {
		own := c.arm()
		n, err := c.Conn.Write(b[total:])
		c.count(n)
		total += n
		if err == nil || !own || !errors.Is(err, os.ErrDeadlineExceeded) {
			return total, err
		}
		if n == 0 {
			return total, fmt.Errorf("no write progress for %v: %w", c.wt, err)
		}
		// Bytes moved in the period: the rest gets a new one.
		if a := c.armed.Load(); a > 0 {
			c.armed.CompareAndSwap(a, 0)
		}
	}
}

func (c *meterConn) count(n int) {
	if n > 0 && c.on.Load() {
		c.rec.AddOut(n)
	}
}

// arm moves the write deadline when it is nearer than 7/8 of wt, so that
// a busy connection updates it about every wt/8 and each write starts with
// at least 7/8 of wt ahead: a stalled client is cut between 7/8 of wt and
// twice it after its last progress. It reports whether our deadline rules
// (not one the server set).
func (c *meterConn) arm() bool {
	armed := c.armed.Load()
	if armed < 0 {
		return false
	}
	now := monoNow()
	if armed-now >= int64(c.wt-c.wt/8) {
		return true
	}
	if c.armed.CompareAndSwap(armed, now+int64(c.wt)) {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.wt))
	}
	return true
}

// SetWriteDeadline lets the server's own deadlines rule while set; a zero
// one (cleared) hands the deadline back to the write-progress timeout.
func (c *meterConn) SetWriteDeadline(t time.Time) error {
	c.noteDeadline(t)
	return c.Conn.SetWriteDeadline(t)
}

// SetDeadline is SetWriteDeadline for both directions.
func (c *meterConn) SetDeadline(t time.Time) error {
	c.noteDeadline(t)
	return c.Conn.SetDeadline(t)
}

func (c *meterConn) noteDeadline(t time.Time) {
	if t.IsZero() {
		c.armed.Store(0)
	} else {
		c.armed.Store(-1)
	}
}

// monoBase anchors monoNow, a cheap monotonic clock for deadline
// bookkeeping.
var monoBase = time.Now()

func monoNow() int64 { return int64(time.Since(monoBase)) }

// dropDrainedPeek takes the PeekConn the connection was sniffed through
// out from under the meter once every sniffed byte has been read: from
// then on it only adds a call to each read and write. Only over a
// *net.TCPConn (or a PROXY header's client address around one), which
// never returns bytes together with an error, so the PeekConn holds no
// error still to deliver either. The caller is the only goroutine using
// c (before the connection is served).
func (c *meterConn) dropDrainedPeek() {
	p, ok := c.Conn.(*forwarding.PeekConn)
	if !ok || len(p.Buffered()) > 0 {
		return
	}
	inner := p.Conn
	if pc, ok := inner.(*proxyClientConn); ok {
		inner = pc.Conn
	}
	if _, ok := inner.(*net.TCPConn); ok {
		p.Release()
		c.Conn = p.Conn
	}
}

// rawCalls makes the socket's reads and writes raw system calls
// (internal/rawsock: no entersyscall, so the runtime's sysmon neither
// wakes for them nor hands the P to another thread mid-call), once the
// meter sits right on the *net.TCPConn (dropDrainedPeek). For the
// TLS-terminated HTTP connections, which stay on goroutines; the caller
// is the only goroutine using c.
func (c *meterConn) rawCalls() {
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		c.Conn = rawsock.Wrap(tc)
	}
}

// CloseWrite half-closes when the conn beneath can (an error wrapping
// errors.ErrUnsupported otherwise): http.Server uses it to close
// gracefully, socket handlers to linger.
func (c *meterConn) CloseWrite() error { return forwarding.CloseWrite(c.Conn) }
