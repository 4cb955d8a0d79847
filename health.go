package smartproxy

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Health of backend targets, per address ("host:port") and shared by every
// route and connection of a proxy: passive state from connect results
// (backendFailed/backendSucceeded), active state from health checkers
// (healthcheck.go) and the count of connections in flight, which
// least-connections and random balance on.

// Passive backoff after failed connects: doubling from the base per
// consecutive failure, capped, reset by a successful connect.
const (
	defaultBackoffBase = time.Second
	defaultBackoffMax  = 30 * time.Second
)

// TargetStatus is the health of one backend target address, as reported
// by [Proxy.TargetHealth].
type TargetStatus struct {
	// Addr is the target's "host:port".
	Addr string
	// Up reports whether new connections may go to the target: it is not
	// in a connect-failure backoff and no active health check sees it down.
	Up bool
	// ActiveConnections counts the connections (TCP) and requests (HTTP)
	// currently forwarded to the target, including those still connecting.
	ActiveConnections int64
	// ConsecutiveFailures counts failed connects since the last success.
	ConsecutiveFailures int
	// DownUntil is when the current connect-failure backoff ends; the zero
	// time when there is none. After it the target is tried again, and a
	// successful connect resets the backoff.
	DownUntil time.Time
	// HealthChecked reports whether an active health check probes the
	// target; HealthCheckUp is that check's verdict (true when unchecked).
	HealthChecked bool
	HealthCheckUp bool
}

// TargetHealth returns the health of every target the proxy knows of,
// sorted by address: the fixed addresses of the running routes' targets,
// and any other address with connections in flight or failing connects.
func (p *Proxy) TargetHealth() []TargetStatus {
	reg := p.health
	now := time.Now().UnixNano()
	reg.mu.RLock()
	out := make([]TargetStatus, 0, len(reg.m))
	for _, h := range reg.m {
		s := TargetStatus{
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
	reg.mu.RUnlock()
	slices.SortFunc(out, func(a, b TargetStatus) int { return strings.Compare(a.Addr, b.Addr) })
	return out
}

// backendFailed records that connecting to addr failed: the target is
// skipped for a backoff that doubles with each consecutive failure (1 s up
// to 30 s) and is tried again after it. Failures while the target already
// backs off (connects that were in flight when it went down) do not extend
// the backoff, and a cancelled context (the client or the proxy gave up)
// is not the target's fault and is ignored.
func (p *Proxy) backendFailed(addr string, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	reg := p.health
	now := time.Now()
	reg.mu.Lock()
	h := reg.getLocked(addr)
	if du := h.downUntil.Load(); du != 0 && now.UnixNano() < du {
		reg.mu.Unlock()
		return
	}
	f := h.failures.Add(1)
	backoff := reg.backoffMax
	if f <= 30 {
		backoff = min(reg.backoffBase<<(f-1), reg.backoffMax)
	}
	h.downUntil.Store(now.Add(backoff).UnixNano())
	reg.mu.Unlock()
	if f == 1 { // once per outage; the retries after each backoff stay quiet
		reg.log.Warn("target failing: skipping it until it answers again", "target", addr, "backoff", backoff, "err", err)
	} else {
		reg.log.Debug("target still failing", "target", addr, "failures", f, "backoff", backoff, "err", err)
	}
}

// backendSucceeded records a successful connect to addr, which ends its
// backoff. Cheap when the target was not failing, which is the usual case.
func (p *Proxy) backendSucceeded(addr string) {
	reg := p.health
	h := reg.lookup(addr)
	if h == nil || h.failures.Load() == 0 {
		return
	}
	reg.mu.Lock()
	f := h.failures.Swap(0)
	h.downUntil.Store(0)
	reg.pruneLocked(h)
	reg.mu.Unlock()
	if f > 0 {
		reg.log.Info("target recovered", "target", addr, "failures", f)
	}
}

// backendAcquire counts a connection (TCP) or request (HTTP) to addr as
// active until release is called, which least-connections and random
// balance on. Call release exactly once, when the connection or request is
// over (extra calls are ignored).
func (p *Proxy) backendAcquire(addr string) (release func()) {
	l := new(lease)
	p.acquireLease(l, addr)
	return l.release
}

// acquireLease is backendAcquire into a lease the caller holds (the HTTP
// path embeds it in the response body, saving the allocations of a
// closure per request). l must be new or released; it can be reused
// once released.
func (p *Proxy) acquireLease(l *lease, addr string) {
	reg := p.health
	reg.mu.RLock()
	h := reg.m[addr]
	if h != nil {
		// Under the read lock, so that pruneLocked cannot drop h between
		// the lookup and the increment.
		h.active.Add(1)
	}
	reg.mu.RUnlock()
	if h == nil {
		reg.mu.Lock()
		h = reg.getLocked(addr)
		h.active.Add(1)
		reg.mu.Unlock()
	}
	l.reg, l.h = reg, h
	l.done.Store(false)
}

// lease is one acquisition of a target: it counts as active until
// release, which is idempotent and safe for concurrent use.
type lease struct {
	reg  *healthRegistry
	h    *targetHealth
	done atomic.Bool
}

func (l *lease) release() {
	if l.done.Swap(true) {
		return
	}
	if l.h.active.Add(-1) == 0 {
		l.reg.mu.Lock()
		l.reg.pruneLocked(l.h)
		l.reg.mu.Unlock()
	}
}

// healthRegistry holds the health of every target address a proxy knows.
type healthRegistry struct {
	log         *slog.Logger
	backoffBase time.Duration // tests shorten these
	backoffMax  time.Duration

	mu sync.RWMutex
	m  map[string]*targetHealth

	// checkers are the running active health checks. Guarded by the
	// proxy's mu: only Start, UpdateRoutes and Stop change them.
	checkers map[checkKey]*healthChecker
}

func newHealthRegistry(log *slog.Logger) *healthRegistry {
	return &healthRegistry{
		log:         log,
		backoffBase: defaultBackoffBase,
		backoffMax:  defaultBackoffMax,
		m:           make(map[string]*targetHealth),
		checkers:    make(map[checkKey]*healthChecker),
	}
}

// targetHealth is the state of one target address. The atomics are read
// without locks on the selection path; failures, downUntil, pinned and
// checkers are written under the registry's write lock.
type targetHealth struct {
	addr      string
	active    atomic.Int64 // connections and requests in flight
	failures  atomic.Int32 // consecutive failed connects
	downUntil atomic.Int64 // unix nanoseconds; 0: no backoff
	downVotes atomic.Int32 // active checkers that currently see it down

	pinned   bool // a fixed address of the running routes: kept for TargetHealth
	checkers int  // active checkers probing it
}

// up reports whether the target may be chosen; *now caches the clock
// across the hosts of one selection.
func (h *targetHealth) up(now *int64) bool {
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

// activeConns is nil-safe: a target the registry does not know is idle.
func (h *targetHealth) activeConns() int64 {
	if h == nil {
		return 0
	}
	return h.active.Load()
}

// lookup returns addr's entry, or nil when the registry knows nothing of
// it (it is up and idle).
func (reg *healthRegistry) lookup(addr string) *targetHealth {
	reg.mu.RLock()
	h := reg.m[addr]
	reg.mu.RUnlock()
	return h
}

// getLocked returns addr's entry, creating it. Caller holds the write lock.
func (reg *healthRegistry) getLocked(addr string) *targetHealth {
	h := reg.m[addr]
	if h == nil {
		h = &targetHealth{addr: addr}
		reg.m[addr] = h
	}
	return h
}

// pruneLocked drops h when it says nothing an absent entry would not say,
// so addresses that come and go (PortFunc, PreservePort, HostFunc) do not
// grow the registry without bound. Caller holds the write lock.
func (reg *healthRegistry) pruneLocked(h *targetHealth) {
	if reg.m[h.addr] == h && !h.pinned && h.checkers == 0 && h.active.Load() == 0 &&
		h.failures.Load() == 0 && h.downVotes.Load() == 0 {
		delete(reg.m, h.addr)
	}
}
