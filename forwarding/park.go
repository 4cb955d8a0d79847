package forwarding

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultParkAfter is the idle time after which an IdleParker parks a direction when
// NewIdleParker is given 0.
const DefaultParkAfter = time.Second

// MinParkAfter is the shortest idle time NewIdleParker accepts: the sweeper runs every half
// of it.
const MinParkAfter = time.Millisecond

// DefaultMaxWaiting is the number of directions an IdleParker lets wait for data in
// goroutines when NewIdleParker is given 0.
const DefaultMaxWaiting = 1024

// errParked is returned by a direction's copy loop when the sweeper asked it to park.
var errParked = errors.New("forwarding: direction parked")

// IdleParker takes idle Pipe directions off their goroutines.
//
// A Pipe direction waiting for data normally sits in a goroutine blocked in the runtime's
// netpoller, which costs that goroutine's stack (typically 4–8 KiB) for as long as the
// connection is open. With many idle connections (keep-alive, WebSockets, long polls) the
// stacks are most of the memory a proxy holds. An IdleParker watches the directions of the
// pipes that use it (PipeOptions.Parker); one that has moved no data for the parker's idle
// time is woken through its read deadline, registers its socket with the parker's own epoll
// set and lets its goroutine end. When the socket becomes readable (data, EOF, an error), or
// the pipe is closed, a new goroutine picks the direction up where it stopped. A parked
// connection costs its sockets and a few hundred bytes of bookkeeping.
//
// Parking after an idle time keeps the cost of parking (an epoll_ctl, and a goroutine
// start when data comes) away from short exchanges. But a burst of connections that go idle
// together would still reach a goroutine each first, and the Go runtime keeps the memory of
// ended goroutines for reuse. So the parker also bounds how many directions may wait in
// goroutines at all: once maxWaiting directions wait, a direction that finds no data parks
// at once, as an event loop would. Memory then follows the number of busy connections, not
// the number of open ones.
//
// Only directions that read a bare TCP socket park (splice or the buffered copy of a TCP
// source); a direction that has been half-closed never parks, since its half-close timeout
// needs the read deadline. On systems other than Linux an IdleParker never parks.
//
// Parking uses the source conn's read deadline to wake the waiting goroutine, so a pipe that
// uses a parker must not have read deadlines set on its conns by anyone else while it runs.
// The zero IdleParker is not usable; make one with NewIdleParker and Close it once the pipes
// using it have ended.
type IdleParker struct {
	after      time.Duration
	maxWaiting int64
	waiting    atomic.Int64 // directions waiting for data in a goroutine

	mu     sync.Mutex
	closed bool
	slots  []*pipeDir // registered directions; nil entries are free
	free   []int32    // free slot indices
	gen    int32      // generation counter for slot reuse

	sweepBuf []*pipeDir // the sweeper's reused snapshot of slots

	parked atomic.Int64 // directions currently parked

	poller parkPoller    // the epoll set (Linux) or nothing
	stop   chan struct{} // closed by Close: ends the sweeper
	wg     sync.WaitGroup
}

// NewIdleParker starts a parker that parks directions idle for at least after (0 means
// DefaultParkAfter); they are parked within 1.5 × after of their last data. Beyond
// maxWaiting directions waiting in goroutines (0 means DefaultMaxWaiting), directions park
// as soon as they find no data. It starts two goroutines (the epoll waiter and the sweeper),
// which Close ends.
func NewIdleParker(after time.Duration, maxWaiting int) (*IdleParker, error) {
	if after < 0 || maxWaiting < 0 {
		return nil, errors.New("forwarding: negative park time or waiting limit")
	}
	if after > 0 && after < MinParkAfter {
		return nil, fmt.Errorf("forwarding: park time %v is below the minimum %v", after, MinParkAfter)
	}
	after = cmp.Or(after, DefaultParkAfter)
	maxWaiting = cmp.Or(maxWaiting, DefaultMaxWaiting)
	p := &IdleParker{after: after, maxWaiting: int64(maxWaiting), stop: make(chan struct{})}
	if err := p.poller.open(p); err != nil {
		return nil, err
	}
	p.wg.Add(1)
	go p.sweepLoop()
	return p, nil
}

// Parked reports how many directions are parked right now.
func (p *IdleParker) Parked() int { return int(p.parked.Load()) }

// Close stops the parker. Directions still parked are woken and go on in goroutines (they
// will not park again), so Close loses no connection; call it after the pipes have ended to
// keep it cheap. Close is idempotent.
func (p *IdleParker) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	dirs := p.registered(nil)
	p.mu.Unlock()
	// Close the epoll set first, so that no direction can park again, and let the sweeper
	// and the waiter end; only then resume what is parked: a direction woken earlier could
	// have parked again in a set about to close, and never be woken.
	err := p.poller.close()
	close(p.stop)
	p.wg.Wait()
	for _, d := range dirs {
		d.wake()
	}
	return err
}

// register gives d a slot so the sweeper sees it and events find it. It reports false when
// the parker is closed (d then never parks).
func (p *IdleParker) register(d *pipeDir) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.gen++
	d.gen = p.gen
	if n := len(p.free); n > 0 {
		d.slot = p.free[n-1]
		p.free = p.free[:n-1]
		p.slots[d.slot] = d
	} else {
		d.slot = int32(len(p.slots))
		p.slots = append(p.slots, d)
	}
	return true
}

// unregister frees d's slot; d must not be parked.
func (p *IdleParker) unregister(d *pipeDir) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if d.slot < 0 || int(d.slot) >= len(p.slots) || p.slots[d.slot] != d {
		return
	}
	// d.slot stays as it is: a goroutine still arming d may read it, and the check
	// above makes a second unregister a no-op.
	p.slots[d.slot] = nil
	p.free = append(p.free, d.slot)
}

// lookup returns the direction of an event token, nil when it is stale.
func (p *IdleParker) lookup(slot, gen int32) *pipeDir {
	p.mu.Lock()
	defer p.mu.Unlock()
	if slot < 0 || int(slot) >= len(p.slots) {
		return nil
	}
	if d := p.slots[slot]; d != nil && d.gen == gen {
		return d
	}
	return nil
}

// registered appends the registered directions to dirs[:0]; p.mu must be held.
func (p *IdleParker) registered(dirs []*pipeDir) []*pipeDir {
	dirs = dirs[:0]
	for _, d := range p.slots {
		if d != nil {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// sweepLoop runs sweep every half park time until Close.
func (p *IdleParker) sweepLoop() {
	defer p.wg.Done()
	t := time.NewTicker(p.after / 2)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.sweep()
		}
	}
}

// longAgo is a read deadline in the past: setting it wakes a goroutine waiting to read.
var longAgo = time.Unix(1, 0)

// sweep asks directions that moved nothing for two sweeps (at least the park time) to park,
// and wakes parked directions whose socket was closed behind the pipe's back (a closed fd
// leaves the epoll set silently, so no event would ever come).
func (p *IdleParker) sweep() {
	p.mu.Lock()
	p.sweepBuf = p.registered(p.sweepBuf)
	p.mu.Unlock()
	dirs := p.sweepBuf
	defer clear(dirs) // do not keep ended pipes reachable until the next sweep
	for _, d := range dirs {
		switch d.state.Load() {
		case dirRunning:
			if a := d.activity.Load(); a != d.seen {
				d.seen, d.idleSweeps = a, 0
				continue
			}
			d.idleSweeps++
			if d.idleSweeps >= 2 {
				d.requestPark()
			}
		case dirParked:
			d.idleSweeps = 0 // once woken, it must be idle for the full time again
			if err := d.rc.Control(func(uintptr) {}); err != nil {
				d.wake() // closed: the resumed copy reports it
			}
		}
	}
}

// requestPark wakes a running direction's wait with a past read deadline so that it parks.
// Under parkMu, so that the request cannot land after park cleared it, or after a
// half-close armed its own deadline.
func (d *pipeDir) requestPark() {
	d.parkMu.Lock()
	defer d.parkMu.Unlock()
	if d.state.Load() != dirRunning || d.noPark.Load() || d.parkReq.Load() || d.s.halfClosed.Load() {
		return
	}
	d.parkReq.Store(true)
	_ = d.srcTCP.SetReadDeadline(longAgo)
}

// Direction states.
const (
	dirRunning int32 = iota // a goroutine owns the direction
	dirParked               // no goroutine; the socket is armed in the parker's epoll set
)

// pipeDir is one direction of a Pipe, resumable after parking.
type pipeDir struct {
	s        *pipeState
	dir      Direction
	src, dst net.Conn
	wd       writeDeadline // the write-progress timeout on dst

	// Set when the direction first reaches the bare source socket, if a parker is used.
	parker *IdleParker
	srcTCP *net.TCPConn
	rc     syscall.RawConn
	slot   int32
	gen    int32

	state    atomic.Int32
	parkMu   sync.Mutex    // serializes park requests with park and half-close (see requestPark)
	parkReq  atomic.Bool   // the sweeper set a past read deadline to make it park
	noPark   atomic.Bool   // arming failed once: never park again (no busy retry loop)
	activity atomic.Uint32 // chunks moved; the sweeper compares it across sweeps
	armMu    sync.Mutex    // serializes arming the epoll registration
	armed    bool          // registered in the epoll set (then MOD re-arms it)
	waiting  bool          // counted in parker.waiting; only the running goroutine uses it

	seen       uint32 // sweeper only: activity at the previous sweep
	idleSweeps int    // sweeper only: sweeps without activity
}

// attach makes d parkable once it reads the bare socket src (called on every copy entry;
// only the first call registers).
func (d *pipeDir) attach(src *net.TCPConn) {
	p := d.s.opt.Parker
	if p == nil || d.parker != nil || !p.poller.ok() {
		return
	}
	rc, err := src.SyscallConn()
	if err != nil {
		return
	}
	d.srcTCP, d.rc = src, rc
	if p.register(d) {
		d.parker = p
	}
}

// waitError turns the error of a wait for readability into errParked when it is the
// sweeper's wake-up call (or a park decided by beginWait) rather than a real deadline.
func (d *pipeDir) waitError(err error) error {
	d.endWait()
	if err == errParked {
		return errParked
	}
	if d.parker == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	if !d.s.halfClosed.Load() {
		// With a parker, only the parker sets read deadlines before a half-close: this is
		// its request (even a late one, whose deadline landed after a park cleared it).
		return errParked
	}
	// Half-closed: the half-close deadline replaced any request's; the error is a
	// request's only while that deadline is still ahead (park then re-arms it and
	// carries on instead of parking).
	if d.parkReq.Load() && time.Now().UnixNano() < d.s.halfDeadline.Load() {
		return errParked
	}
	d.parkReq.Store(false)
	return err
}

// beginWait (nil d: no parking) is called by a copy loop that found no data and is about to wait for it in the
// netpoller. It reports false when the direction should park at once instead, because too
// many directions wait in goroutines already.
func (d *pipeDir) beginWait() bool {
	if d == nil || d.parker == nil || d.waiting {
		return true
	}
	p := d.parker
	mayPark := !d.s.halfClosed.Load() && !d.noPark.Load()
	for {
		// A CAS, not Load then Add: two directions must not both take the last place.
		w := p.waiting.Load()
		if w >= p.maxWaiting && mayPark {
			return false
		}
		if p.waiting.CompareAndSwap(w, w+1) {
			d.waiting = true
			return true
		}
	}
}

// endWait ends the wait counted by beginWait (the socket became ready or the wait failed).
func (d *pipeDir) endWait() {
	if d != nil && d.waiting {
		d.waiting = false
		d.parker.waiting.Add(-1)
	}
}

// park parks the direction after a wake-up call from the sweeper. It reports true when
// the goroutine must return (the direction is parked, or already resumed by another
// goroutine), false when it must go on copying itself.
func (d *pipeDir) park() bool {
	s := d.s
	d.parkMu.Lock()
	// Clear the sweeper's past deadline first, so the resumed copy can read.
	if err := d.srcTCP.SetReadDeadline(time.Time{}); err != nil {
		d.parkReq.Store(false)
		d.parkMu.Unlock()
		return false // closed: the copy reports it
	}
	d.parkReq.Store(false)
	if s.halfClosed.Load() {
		// Half-closed in the meantime: its timeout lives in the read deadline, which
		// only works for a waiting goroutine.
		_ = s.armHalfClose(d.srcTCP)
		d.parkMu.Unlock()
		return false
	}
	d.parker.parked.Add(1) // before the state: a waker's Add(-1) must come after it
	d.state.Store(dirParked)
	d.parkMu.Unlock()
	d.armMu.Lock()
	err := d.parker.poller.arm(d)
	d.armMu.Unlock()
	if err != nil {
		// The parker is closed, or epoll refuses (ENOSPC: fs.epoll.max_user_watches):
		// this direction waits in its goroutine from now on instead of retrying.
		d.noPark.Store(true)
		return !d.resumeSelf()
	}
	// A half-close or a close that happened while arming may have missed this direction
	// (it was not parked yet when they looked): look again.
	if s.halfClosed.Load() || s.stopping.Load() {
		return !d.resumeSelf()
	}
	return true
}

// resumeSelf takes a parked direction back for the calling goroutine; false means another
// goroutine resumed it first. Only a parked direction passes the CAS, and parking happened
// after attach set d.parker: using it is safe from there on.
func (d *pipeDir) resumeSelf() bool {
	if !d.state.CompareAndSwap(dirParked, dirRunning) {
		return false
	}
	d.parker.parked.Add(-1)
	if d.s.halfClosed.Load() {
		_ = d.s.armHalfClose(d.srcTCP)
	}
	return true
}

// wake resumes a parked direction in a new goroutine; it does nothing to a running one.
func (d *pipeDir) wake() {
	if !d.resumeSelf() {
		return
	}
	if d.dir == ClientToBackend {
		go copyClientToBackend(d)
	} else {
		go copyBackendToClient(d)
	}
}
