package balance

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Passive backoff after failed connects: doubling from the base per
// consecutive failure, capped, reset by a successful connect.
const (
	DefaultBackoffBase = time.Second
	DefaultBackoffMax  = 30 * time.Second
)

// DialFunc connects to a target address ("host:port"); active health
// checks dial through it, so they take the same path as connections.
type DialFunc func(ctx context.Context, addr string) (net.Conn, error)

// Health is the health of every target address a proxy knows, shared by
// all its routes and connections: passive state from connect results,
// active state from health checkers (Sync) and the count of
// connections in flight. Its methods are safe for concurrent use.
type Health struct {
	// BackoffBase and BackoffMax bound the passive backoff (defaults
	// DefaultBackoffBase and DefaultBackoffMax). Set them before the
	// registry is in use; tests shorten them.
	BackoffBase, BackoffMax time.Duration

	log  *slog.Logger
	dial DialFunc

	mu sync.RWMutex
	m  map[string]*addrHealth
	// failing counts the entries whose failures are not zero (changed under mu's write
	// lock): Succeeded, called for every request, returns at once while it is zero.
	failing atomic.Int32

	// checkMu serialises Sync and Stop, which own checkers.
	checkMu  sync.Mutex
	checkers map[CheckKey]*checker
}

// NewHealth returns an empty registry that logs target transitions to log
// and whose active checks connect with dial.
func NewHealth(log *slog.Logger, dial DialFunc) *Health {
	return &Health{
		BackoffBase: DefaultBackoffBase,
		BackoffMax:  DefaultBackoffMax,
		log:         log,
		dial:        dial,
		m:           make(map[string]*addrHealth),
		checkers:    make(map[CheckKey]*checker),
	}
}

// Status is the health of one target address. The proxy's TargetStatus
// converts from it, so the two keep the same fields.
type Status struct {
	Addr string // "host:port"
	// Up: neither in a connect-failure backoff nor down for a checker.
	Up                bool
	ActiveConnections int64 // connections and requests in flight
	// ConsecutiveFailures counts failed connects since the last success.
	ConsecutiveFailures int
	DownUntil           time.Time // end of the backoff; zero when none
	// HealthChecked: a checker probes the address; HealthCheckUp is its
	// verdict (true when unchecked).
	HealthChecked bool
	HealthCheckUp bool
}

// Status returns the health of every address the registry knows, sorted
// by address: those pinned by Sync, and any other with connections in
// flight, failing connects or a checker.
func (r *Health) Status() []Status {
	now := time.Now().UnixNano()
	r.mu.RLock()
	out := make([]Status, 0, len(r.m))
	for _, h := range r.m {
		s := Status{
			Addr:                h.addr,
			ActiveConnections:   h.activeConns(),
			ConsecutiveFailures: int(h.failures.Load()),
			HealthChecked:       h.checkers > 0,
			HealthCheckUp:       h.downVotes.Load() == 0,
		}
		if du := h.downUntil.Load(); du > now {
			s.DownUntil = time.Unix(0, du)
		}
		s.Up = s.DownUntil.IsZero() && s.HealthCheckUp
		out = append(out, s)
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Addr, b.Addr) })
	return out
}

// Failed records that connecting to addr failed: the address is skipped
// for a backoff that doubles with each consecutive failure (BackoffBase up
// to BackoffMax) and is tried again after it. Failures while the address
// already backs off (connects that were in flight when it went down) do
// not extend the backoff, and a cancelled context (the client or the proxy
// gave up) is not the target's fault and is ignored.
func (r *Health) Failed(addr string, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	now := time.Now()
	r.mu.Lock()
	h := r.getLocked(addr)
	if du := h.downUntil.Load(); du != 0 && now.UnixNano() < du {
		r.mu.Unlock()
		return
	}
	f := h.failures.Add(1)
	if f == 1 {
		r.failing.Add(1)
	}
	backoff := r.BackoffMax
	if f <= 30 { // beyond, the shift would overflow; the cap applies anyway
		backoff = min(r.BackoffBase<<(f-1), r.BackoffMax)
	}
	h.downUntil.Store(now.Add(backoff).UnixNano())
	r.mu.Unlock()
	if f == 1 { // once per outage; the retries after each backoff stay quiet
		r.log.Warn("target failing: skipping it until it answers again", "target", addr, "backoff", backoff, "err", err)
	} else {
		r.log.Debug("target still failing", "target", addr, "failures", f, "backoff", backoff, "err", err)
	}
}

// Succeeded records a successful connect to addr, which ends its backoff.
// Cheap when the address was not failing, which is the usual case.
func (r *Health) Succeeded(addr string) {
	if r.failing.Load() == 0 {
		return // no address is failing (the usual case): no lookup
	}
	h := r.lookup(addr)
	if h == nil || h.failures.Load() == 0 {
		return
	}
	r.mu.Lock()
	f := h.failures.Swap(0)
	if f > 0 {
		r.failing.Add(-1)
	}
	h.downUntil.Store(0)
	r.pruneLocked(h)
	r.mu.Unlock()
	if f > 0 {
		r.log.Info("target recovered", "target", addr, "failures", f)
	}
}

// Acquire counts a connection (TCP) or request (HTTP) to addr as active
// until l is released, which LeastConnections and PowerOfTwoChoices
// balance on. l must be new or released; callers embed it in what the
// connection or request allocates anyway, and reuse it across attempts,
// so counting allocates nothing.
func (r *Health) Acquire(l *Lease, addr string) {
	r.mu.RLock()
	h := r.m[addr]
	if h != nil {
		// Under the read lock, so that pruneLocked cannot drop h between
		// the lookup and the increment.
		h.active.Add(1)
	}
	r.mu.RUnlock()
	if h == nil {
		r.mu.Lock()
		h = r.getLocked(addr)
		h.active.Add(1)
		r.mu.Unlock()
	}
	l.reg, l.h = r, h
	l.done.Store(false)
}

// Lease is one acquisition of an address ([Health.Acquire]): it counts as
// active until released. The zero Lease is ready for Acquire.
type Lease struct {
	reg  *Health
	h    *addrHealth
	done atomic.Bool
}

// Release ends the count. It is idempotent and safe for concurrent use,
// so every owner of a connection or body may call it on close.
func (l *Lease) Release() {
	if l.done.Swap(true) {
		return
	}
	if l.h.active.Add(-1) == 0 {
		l.reg.mu.Lock()
		l.reg.pruneLocked(l.h)
		l.reg.mu.Unlock()
	}
}

// addrHealth is the state of one address. The atomics are read without
// locks on the selection path; failures, downUntil, pinned and checkers
// are written under the registry's write lock.
type addrHealth struct {
	addr      string
	active    atomic.Int64 // connections and requests in flight
	failures  atomic.Int32 // consecutive failed connects
	downUntil atomic.Int64 // unix nanoseconds; 0: no backoff
	downVotes atomic.Int32 // active checkers that currently see it down

	pinned   bool // named by the running routes (Sync): kept for Status
	checkers int  // active checkers probing it
}

// up reports whether the address may be chosen; *now caches the clock
// across the hosts of one selection.
func (h *addrHealth) up(now *int64) bool {
	if h.downVotes.Load() > 0 {
		return false
	}
	du := h.downUntil.Load()
	if du == 0 {
		return true
	}
	if *now == 0 {
		*now = time.Now().UnixNano()
	}
	return *now >= du
}

// activeConns is nil-safe: an address the registry does not know is idle.
func (h *addrHealth) activeConns() int64 {
	if h == nil {
		return 0
	}
	return h.active.Load()
}

// lookup returns addr's entry, or nil when the registry knows nothing of
// it (it is up and idle).
func (r *Health) lookup(addr string) *addrHealth {
	r.mu.RLock()
	h := r.m[addr]
	r.mu.RUnlock()
	return h
}

// getLocked returns addr's entry, creating it. Caller holds the write lock.
func (r *Health) getLocked(addr string) *addrHealth {
	h := r.m[addr]
	if h == nil {
		h = &addrHealth{addr: addr}
		r.m[addr] = h
	}
	return h
}

// pruneLocked drops h when it says nothing an absent entry would not say,
// so addresses that come and go (per-connection ports and hosts) do not
// grow the registry without bound. Caller holds the write lock.
func (r *Health) pruneLocked(h *addrHealth) {
	if r.m[h.addr] == h && !h.pinned && h.checkers == 0 && h.active.Load() == 0 &&
		h.failures.Load() == 0 && h.downVotes.Load() == 0 {
		delete(r.m, h.addr)
	}
}
