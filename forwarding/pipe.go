package forwarding

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultHalfCloseTimeout is used when PipeOptions.HalfCloseTimeout is zero.
const DefaultHalfCloseTimeout = 30 * time.Second

// PipeOptions tunes Pipe. The zero value is usable.
type PipeOptions struct {
	// OnData is called after each chunk moved, with the direction and byte count, from the
	// copying goroutine (the two directions call it concurrently); nil means none. Used for
	// live byte counters and last-activity tracking, so it must be cheap.
	OnData func(dir Direction, n int)
	// HalfCloseTimeout bounds how long the remaining direction may stay idle after the other
	// direction ended with EOF (half-close). 0 means DefaultHalfCloseTimeout. It is enforced
	// with the source connection's read deadline, re-armed on every chunk, so an active
	// half-closed stream is not cut.
	HalfCloseTimeout time.Duration
	// WriteTimeout closes the pipe when a write to either side makes no progress for this
	// long (a destination that stopped reading, or takes a few bytes a second: bytes move,
	// so no inactivity check sees it). 0 means DefaultWriteTimeout; negative means none.
	// It is enforced with the destination's write deadline, moved as writes progress (see
	// writeDeadline), so a stalled destination is cut between 7/8 of it and twice it after
	// its last progress. Pipe owns the write deadlines of both conns.
	WriteTimeout time.Duration
	// Parker, when set, parks directions that stay idle (see IdleParker); nil means idle
	// directions wait in their goroutines.
	Parker *IdleParker
}

// Direction names one of the two copy directions of a Pipe.
type Direction uint8

const (
	// ClientToBackend is the direction reading the client and writing the backend.
	ClientToBackend Direction = iota
	// BackendToClient is the direction reading the backend and writing the client.
	BackendToClient
)

// String returns "client->backend" or "backend->client".
func (d Direction) String() string {
	switch d {
	case ClientToBackend:
		return "client->backend"
	case BackendToClient:
		return "backend->client"
	}
	return fmt.Sprintf("Direction(%d)", uint8(d))
}

// PipeResult reports what a Pipe moved and why it ended.
type PipeResult struct {
	// ClientToBackend and BackendToClient are the exact numbers of bytes written to the
	// destination in each direction.
	ClientToBackend, BackendToClient int64
	// Err is the first error other than EOF (a reset, a write error, a deadline, the
	// context's cause), or nil when both directions ended cleanly.
	Err error
}

// Pipe copies client<->backend until both directions are done or ctx is cancelled, then
// closes both conns. It owns both conns and returns once both directions have ended.
//
// EOF on one side is passed on as CloseWrite on the other (or, if that conn cannot
// half-close, both conns are closed) while the other direction keeps running, bounded by
// HalfCloseTimeout of inactivity. Any error in either direction, or ctx being cancelled,
// closes both conns at once.
//
// When both conns are, or unwrap to, *net.TCPConn (through *PeekConn or an
// Unwrap() net.Conn method), Linux builds move data with splice(2) through a pooled kernel
// pipe that is held only while data flows: an idle Pipe holds no pipe and no buffer. Bytes a
// *PeekConn client already buffered are written first. Other conns are copied through a
// pooled 32 KiB buffer.
//
// Read deadlines already set on the conns keep working, unless PipeOptions.Parker is set
// (see IdleParker); Pipe overrides them once a direction is half-closed.
func Pipe(ctx context.Context, client, backend net.Conn, opt PipeOptions) PipeResult {
	done := make(chan PipeResult, 1)
	s := newPipeState(ctx, client, backend, opt, func(r PipeResult) { done <- r })
	go copyBackendToClient(&s.dirs[BackendToClient])
	// The caller's goroutine does the other direction: one goroutine fewer per connection.
	copyClientToBackend(&s.dirs[ClientToBackend])
	return <-done
}

// StartPipe is Pipe without waiting: it starts both directions in their own goroutines and
// returns at once. done is called exactly once, from one of the pipe's goroutines, after both
// directions have ended and both conns are closed; the pipe's goroutines end right after it.
// The returned Piped can close the pipe early.
func StartPipe(ctx context.Context, client, backend net.Conn, opt PipeOptions, done func(PipeResult)) *Piped {
	s := newPipeState(ctx, client, backend, opt, done)
	go copyBackendToClient(&s.dirs[BackendToClient])
	go copyClientToBackend(&s.dirs[ClientToBackend])
	return &Piped{s: s}
}

// Piped is a running pipe started by StartPipe.
type Piped struct{ s *pipeState }

// Close closes both conns, which ends the pipe (its done callback still runs). Prefer it to
// closing the conns directly when the pipe uses a parker: a parked direction learns of it at
// once instead of at the parker's next sweep. Idempotent.
func (p *Piped) Close() error {
	p.s.closeBoth()
	return nil
}

func newPipeState(ctx context.Context, client, backend net.Conn, opt PipeOptions, done func(PipeResult)) *pipeState {
	s := &pipeState{client: client, backend: backend, opt: opt, done: done}
	if s.opt.HalfCloseTimeout <= 0 {
		s.opt.HalfCloseTimeout = DefaultHalfCloseTimeout
	}
	wt := writeDeadline{timeout: s.opt.WriteTimeout}
	switch {
	case wt.timeout == 0:
		wt.timeout = DefaultWriteTimeout
	case wt.timeout < 0:
		wt.timeout = 0
	}
	s.dirs[ClientToBackend] = pipeDir{s: s, dir: ClientToBackend, src: client, dst: backend, slot: -1, wd: wt}
	s.dirs[BackendToClient] = pipeDir{s: s, dir: BackendToClient, src: backend, dst: client, slot: -1, wd: wt}
	s.running.Store(2)
	// AfterFunc costs no goroutine until ctx is done, which matters with many idle pipes.
	s.ctxDone = make(chan struct{})
	s.stopCtx = context.AfterFunc(ctx, func() {
		defer close(s.ctxDone)
		s.fail(fmt.Errorf("forwarding: pipe cancelled: %w", context.Cause(ctx)))
	})
	return s
}

// copyClientToBackend is the client->backend half of a Pipe; its name is what a stack
// dump shows for that goroutine.
func copyClientToBackend(d *pipeDir) { d.run() }

// copyBackendToClient is the backend->client half of a Pipe.
func copyBackendToClient(d *pipeDir) { d.run() }

// pipeState is shared by the two directions of one Pipe.
type pipeState struct {
	client, backend net.Conn
	opt             PipeOptions
	dirs            [2]pipeDir
	done            func(PipeResult)
	stopCtx         func() bool
	ctxDone         chan struct{}

	n [2]int64 // bytes per direction; each written only by its own direction

	errOnce    sync.Once
	err        error
	closeOnce  sync.Once
	stopping   atomic.Bool  // set before Pipe closes the conns itself
	halfClosed atomic.Bool  // one direction ended with EOF; the other re-arms its deadline
	finished   atomic.Int32 // directions that ended with EOF
	// halfDeadline is when the half-close timeout expires (unix ns): a deadline error
	// before it was the parker's request, not the timeout.
	halfDeadline atomic.Int64
	running      atomic.Int32 // directions not ended yet
}

// run copies the direction until it ends, parking it when the parker asks; a parked
// direction's goroutine returns and a new one calls run again when the socket is ready.
func (d *pipeDir) run() {
	s := d.s
	for {
		n, err := s.copy(d)
		s.n[d.dir] += n
		if err == errParked {
			if d.park() {
				return
			}
			continue
		}
		if d.parker != nil {
			d.parker.unregister(d)
		}
		s.end(d.dir, d.dst, err)
		if s.running.Add(-1) == 0 {
			s.finish()
		}
		return
	}
}

// finish runs once both directions have ended.
func (s *pipeState) finish() {
	if !s.stopCtx() {
		<-s.ctxDone // the cancel callback is running or ran; let it finish first
	}
	s.closeBoth()
	s.done(PipeResult{ClientToBackend: s.n[ClientToBackend], BackendToClient: s.n[BackendToClient], Err: s.err})
}

// end decides what the end of one direction means for the whole pipe.
func (s *pipeState) end(dir Direction, dst net.Conn, err error) {
	if err != nil {
		s.fail(fmt.Errorf("forwarding: %s: %w", dir, err))
		return
	}
	if s.finished.Add(1) == 2 {
		s.closeBoth()
		return
	}
	if err := CloseWrite(dst); err != nil {
		if errors.Is(err, errors.ErrUnsupported) {
			s.closeBoth() // cannot half-close: the best we can do is end both directions
			return
		}
		s.fail(fmt.Errorf("forwarding: %s: half-close: %w", dir, err))
		return
	}
	// The remaining direction reads from dst. Bound its idleness from now on; it re-arms
	// the deadline after each chunk (see moved). A parked remaining direction is woken so
	// that it waits where the deadline works.
	// Under the other direction's parkMu, so that the sweeper, which checks halfClosed
	// under it, asks for no park from now on.
	other := &s.dirs[1-dir]
	other.parkMu.Lock()
	s.halfClosed.Store(true)
	derr := s.armHalfClose(dst)
	other.parkMu.Unlock()
	if derr != nil {
		s.fail(fmt.Errorf("forwarding: %s: arming half-close timeout: %w", dir, derr))
	}
	other.wake()
}

// armHalfClose (re)starts the half-close timeout on src, the source of the remaining
// direction, and notes when it expires (see pipeDir.waitError).
func (s *pipeState) armHalfClose(src net.Conn) error {
	at := time.Now().Add(s.opt.HalfCloseTimeout)
	s.halfDeadline.Store(at.UnixNano())
	return src.SetReadDeadline(at)
}

// moved is called by a direction after each chunk it wrote.
func (s *pipeState) moved(dir Direction, src net.Conn, n int) {
	s.dirs[dir].activity.Add(1)
	if s.opt.OnData != nil {
		s.opt.OnData(dir, n)
	}
	if s.halfClosed.Load() {
		// Only the direction still running gets here after the half-close; an error from
		// SetReadDeadline means the conn is closed and the next read reports it.
		_ = s.armHalfClose(src)
	}
}

// fail records err as the pipe's error unless Pipe is already closing the conns itself
// (then err is just the consequence of that), and closes both conns so that the other
// direction unblocks.
func (s *pipeState) fail(err error) {
	if s.stopping.Load() {
		return
	}
	s.errOnce.Do(func() { s.err = err })
	s.closeBoth()
}

// closeBoth closes both conns once. Close errors are not interesting: data either was
// written already (counted) or the error was reported by the copy.
func (s *pipeState) closeBoth() {
	s.closeOnce.Do(func() {
		s.stopping.Store(true)
		_ = s.client.Close()
		_ = s.backend.Close()
		// Closed fds leave the parker's epoll set without an event: resume parked
		// directions so they see the close.
		s.dirs[ClientToBackend].wake()
		s.dirs[BackendToClient].wake()
	})
}
