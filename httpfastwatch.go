package smartproxy

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// fastWatchAfter is how long a bodyless request runs before its client
// connection is watched for a close. net/http reads every connection in
// the background while a request runs, to cancel it when the client goes
// away; that read costs a goroutine hand-off per request. The fast path
// starts one only for requests still running after this long: a quick
// exchange never pays, and a backend that hangs is still given up (its
// connection closed, not pooled) soon after the client leaves.
const fastWatchAfter = 20 * time.Millisecond

// fastWatch is a fast connection's watch for its client's close.
type fastWatch struct {
	timer   *time.Timer
	wg      sync.WaitGroup
	stop    atomic.Bool
	buf     [1024]byte
	n       int   // bytes the watch read: pipelined data, kept
	err     error // the watch read's error
	started bool
}

// arm starts the timer of one request's watch.
func (w *fastWatch) arm(fc *fastConn) {
	w.stop.Store(false)
	w.n, w.err = 0, nil
	w.wg.Add(1)
	if w.timer == nil {
		w.timer = time.AfterFunc(fastWatchAfter, func() { w.run(fc) })
	} else {
		w.timer.Reset(fastWatchAfter)
	}
	w.started = true
}

// run reads the client connection until data, an error, or disarm.
func (w *fastWatch) run(fc *fastConn) {
	defer w.wg.Done()
	// The head's read deadline is still set: past it the read would end,
	// and a client leaving later go unseen (net/http's background read
	// has none). Cleared before the stop check: disarm stores stop, then
	// moves the deadline, so either this sees stop or disarm's deadline
	// comes after the clear and wakes the read.
	_ = fc.conn.SetReadDeadline(time.Time{})
	if w.stop.Load() {
		return
	}
	w.n, w.err = fc.conn.Read(w.buf[:])
	if w.n == 0 && w.err != nil && !isTimeout(w.err) {
		fc.cancel() // the client closed: the request is abandoned
	}
}

// disarm ends the watch (interrupting its read) and puts what it read
// in front of the connection's unread bytes; false when the client went
// away.
func (w *fastWatch) disarm(fc *fastConn) bool {
	if !w.started {
		return true
	}
	w.started = false
	w.stop.Store(true)
	if w.timer.Stop() {
		w.wg.Done() // it never ran
		return true
	}
	fc.setReadDeadline(time.Now()) // wakes its read
	w.wg.Wait()
	if w.n > 0 {
		if fc.off > 0 {
			fc.n = copy(fc.buf, fc.buf[fc.off:fc.n])
			fc.off = 0
		}
		if fc.n+w.n > len(fc.buf) {
			return false // a pipelined head larger than the buffer: start over on a new connection
		}
		fc.n += copy(fc.buf[fc.n:], w.buf[:w.n])
		return true
	}
	return w.err == nil || isTimeout(w.err)
}

// isTimeout reports a deadline error.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}
