package forwarding

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// DefaultWriteTimeout is used when PipeOptions.WriteTimeout is zero: nginx's send_timeout.
const DefaultWriteTimeout = 60 * time.Second

// monoBase anchors monoNow, a cheap monotonic clock for deadline bookkeeping.
var monoBase = time.Now()

func monoNow() int64 { return int64(time.Since(monoBase)) }

// writeDeadline keeps a write-progress timeout on one writer's destination without a
// deadline update per write: the deadline is moved only once it is nearer than 7/8 of the
// timeout, so a busy connection re-arms it about every timeout/8, and every write starts
// with at least 7/8 of the timeout ahead. A write that hits the deadline having moved some
// bytes made progress: it gets a new period for the rest. Only a whole period without a
// byte written ends it, so a stalled destination is cut between 7/8 of the timeout and
// twice it after its last progress, and a slow reader that keeps taking bytes never is.
// One writer at a time uses it (a direction's goroutines run one after the other).
type writeDeadline struct {
	timeout time.Duration // 0: none
	armed   int64         // monoNow when the armed deadline expires; 0: none armed
}

// deadliner is what arm needs of a conn.
type deadliner interface{ SetWriteDeadline(time.Time) error }

// arm makes sure c's write deadline is far enough ahead.
func (w *writeDeadline) arm(c deadliner) error {
	if w.timeout <= 0 {
		return nil
	}
	now := monoNow()
	if w.armed-now >= int64(w.timeout-w.timeout/8) {
		return nil
	}
	w.armed = now + int64(w.timeout)
	return c.SetWriteDeadline(time.Now().Add(w.timeout))
}

// retry reports whether a write that failed with err after moving n bytes in the current
// period should go on (our deadline, with progress); it then forgets the armed deadline so
// that the next arm gives a full period. Otherwise it returns the error to report.
func (w *writeDeadline) retry(err error, n int64) (bool, error) {
	if w.timeout <= 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		return false, err
	}
	if n > 0 {
		w.armed = 0
		return true, nil
	}
	return false, fmt.Errorf("no write progress for %v: %w", w.timeout, err)
}

// write writes b to dst, re-arming the write deadline while the writes progress.
func (w *writeDeadline) write(dst net.Conn, b []byte) (int, error) {
	total := 0
	for {
		if err := w.arm(dst); err != nil {
			return total, err
		}
		n, err := dst.Write(b[total:])
		total += n
		if err == nil {
			return total, nil
		}
		again, err := w.retry(err, int64(n))
		if !again {
			return total, err
		}
	}
}
