package connection

import (
	"cmp"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Manager tracks proxied connections, enforces admission limits and
// timeouts, and collects metrics. Create it with NewManager; all methods are
// safe for concurrent use.
type Manager struct {
	cfg   settings
	clock func() time.Time // nil => monotonic time.Since(base)
	base  time.Time

	ips  ipTable
	rips routeIPTable // per-route per-IP state (RouteLimits)

	active   atomic.Int64
	total    atomic.Uint64
	nextID   atomic.Uint64
	counts   [numReasons]atomic.Uint64 // rejections and kills by reason
	sweeps   atomic.Uint64             // completed sweeps, lets tests sync with Run
	bytesIn  paddedUint64
	bytesOut paddedUint64

	routeMu sync.Mutex
	routes  map[string]int // active per route; zero entries deleted

	sampler sampler
}

// paddedUint64 gives each global byte counter its own cache line, so the
// inbound and outbound pumps do not false-share.
type paddedUint64 struct {
	_ [64]byte
	v atomic.Uint64
	_ [56]byte
}

// NewManager validates cfg and returns a manager; call Run to start timeouts
// and sampling.
func NewManager(cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new manager: %w", err)
	}
	s := cfg.resolve()
	m := &Manager{
		cfg:    s,
		clock:  cfg.Now,
		ips:    newIPTable(s.maxTracked),
		rips:   newRouteIPTable(s.maxTracked),
		routes: make(map[string]int),
	}
	if m.clock != nil {
		m.base = m.clock()
	} else {
		m.base = time.Now()
	}
	return m, nil
}

// offset is the current time as nanoseconds since m.base. With the real
// clock it uses the monotonic reading, so wall-clock steps cannot trigger or
// suppress timeouts.
func (m *Manager) offset() int64 {
	if m.clock != nil {
		return int64(m.clock().Sub(m.base))
	}
	return int64(time.Since(m.base))
}

func (m *Manager) timeAt(off int64) time.Time { return m.base.Add(time.Duration(off)) }

// Open admits a new client connection and creates its record. It checks, in
// this order, the global cap, the per-IP concurrent cap and the per-IP rate
// limit; the rate counter counts every Open attempt of the IP, refused ones
// included, so a client hammering at a limit stays refused. IPv4-mapped IPv6
// addresses are unmapped first. closer is called by the manager (at most once)
// to kill the connection on timeout or CloseAll, so it must be safe to call
// concurrently with anything. A refusal is a *LimitError. A client without
// a valid address is admitted without per-IP limits.
func (m *Manager) Open(client netip.AddrPort, localPort int, closer io.Closer) (*Record, error) {
	if closer == nil {
		return nil, fmt.Errorf("open %s: %w", client, ErrNilCloser)
	}
	addr := client.Addr().Unmap()
	// A connection without an IP address (net.Pipe in tests, a custom
	// transport) is tracked under the zero address but exempt from the
	// per-IP limits: there is no client to attribute it to.
	perIP := addr.IsValid()
	client = netip.AddrPortFrom(addr, client.Port())
	now := m.offset()
	keepHistory := perIP && m.cfg.ratePerMin > 0

	key := m.ipKey(addr)
	s := m.ips.shardFor(key)
	s.Lock()
	e := getOrCreateIP(s, key, now)
	rateExceeded := keepHistory &&
		e.Value.win.hit(now, int64(rateWindow)) > float64(m.cfg.ratePerMin)

	reason, limit := reasonIndex(-1), 0
	switch {
	case !m.reserveGlobal():
		reason, limit = idxGlobal, int(m.cfg.maxConns)
	case perIP && m.cfg.maxPerIP > 0 && e.Value.active >= m.cfg.maxPerIP:
		reason, limit = idxIP, m.cfg.maxPerIP
	case rateExceeded:
		reason, limit = idxRate, m.cfg.ratePerMin
	}
	if reason >= 0 {
		if reason != idxGlobal {
			m.active.Add(-1) // undo reserveGlobal
		}
		le := &LimitError{Reason: reasonByIndex[reason], IP: addr, Limit: limit}
		if reason == idxRate {
			le.RetryAfter = time.Duration(e.Value.win.retryAfter(now, int64(rateWindow), limit))
		}
		if e.Value.active == 0 {
			setIPIdle(s, e, now, keepHistory)
		}
		s.Unlock() // also evicts from other shards if over the cap
		m.counts[reason].Add(1)
		return nil, le
	}

	r := &Record{
		m:         m,
		id:        m.nextID.Add(1),
		client:    client,
		localPort: localPort,
		start:     m.timeAt(now),
		startOff:  now,
		closer:    closer,
		entry:     e,
	}
	r.lastActivity.Store(now)
	e.Value.active++
	e.Value.records.push(r)
	s.SetActive(e)
	s.Unlock()
	m.total.Add(1)
	return r, nil
}

// reserveGlobal takes one slot of the global cap, or reports the cap is full.
func (m *Manager) reserveGlobal() bool {
	if m.cfg.maxConns <= 0 {
		m.active.Add(1)
		return true
	}
	for {
		n := m.active.Load()
		if n >= m.cfg.maxConns {
			return false
		}
		if m.active.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// AssignRoute attaches the route name and domain (may be "") to r and
// enforces the route's concurrent cap (maxConns <= 0: unlimited). It is
// AssignRouteLimits with only RouteLimits.MaxConnections set.
func (m *Manager) AssignRoute(r *Record, route, domain string, maxConns int) error {
	return m.AssignRouteLimits(r, route, domain, RouteLimits{MaxConnections: maxConns})
}

// leaveRoute releases what a record holds on its route: its slot in the
// route's concurrent count and its per-route per-IP entry.
func (m *Manager) leaveRoute(ri *routeInfo, now int64) {
	m.routeMu.Lock()
	m.releaseRouteLocked(ri.route)
	m.routeMu.Unlock()
	if ri.rip != nil {
		m.rips.release(ri.rip, now)
	}
}

func (m *Manager) releaseRouteLocked(route string) {
	if n := m.routes[route] - 1; n > 0 {
		m.routes[route] = n
	} else {
		delete(m.routes, route) // keep the map sized by routes in use
	}
}

// Close releases r: counters go down and it leaves the table. It does not
// call the closer (the caller closes its own sockets). Idempotent and safe
// concurrently; only the first call returns true.
func (m *Manager) Close(r *Record) bool {
	m.mustOwn(r)
	if !r.closed.CompareAndSwap(false, true) {
		return false
	}
	// After closed is set, AssignRoute (which checks it under r.mu) can no
	// longer change the route, so the route read here is final.
	r.mu.Lock()
	ri := r.route.Load()
	r.mu.Unlock()
	now := m.offset()
	if ri != nil {
		m.leaveRoute(ri, now)
	}

	s := m.ips.shardFor(m.ipKey(r.client.Addr()))
	s.Lock()
	e := r.entry
	e.Value.records.remove(r)
	r.entry = nil
	e.Value.active--
	if e.Value.active == 0 {
		setIPIdle(s, e, now, m.cfg.ratePerMin > 0)
	}
	s.Unlock()
	m.active.Add(-1)
	return true
}

// mustOwn panics on a record from another manager or a nil record: mixing
// them would corrupt both managers' counters, which is a programming error.
func (m *Manager) mustOwn(r *Record) {
	if r == nil || r.m != m {
		panic("connection: record does not belong to this manager")
	}
}

// CloseAll calls every open record's closer (counted as ReasonShutdown).
// Records stay until their owners Close them.
func (m *Manager) CloseAll() {
	m.killAll(func(*Record, int64) (reasonIndex, bool) { return idxShutdown, true })
}

// Active returns the number of open connections.
func (m *Manager) Active() int { return int(m.active.Load()) }

// ipKey is the per-IP table key of a client address (see LimitKey).
func (m *Manager) ipKey(a netip.Addr) netip.Addr { return LimitKey(a, m.cfg.v6Bits) }

// nat64 is the well-known NAT64 prefix (RFC 6052): its addresses carry
// an IPv4 client each in their last 32 bits.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// LimitKey is the address per-IP limits count client a under, with IPv6
// clients grouped per /bits (0 means DefaultIPv6PrefixLen; 128 or more
// counts per address): the address itself for IPv4, its /bits prefix for
// IPv6, since one host usually owns a whole /64. IPv6 addresses whose
// /64 does not stand for one host are counted per address: link-local
// (every LAN client shares fe80::/64), loopback, and NAT64 (64:ff9b::/96,
// one IPv4 client per address). a should be unmapped.
func LimitKey(a netip.Addr, bits int) netip.Addr {
	bits = cmp.Or(bits, DefaultIPv6PrefixLen)
	if perAddress(a, bits) {
		return a
	}
	if p, err := a.Prefix(bits); err == nil {
		return p.Addr()
	}
	return a
}

// perAddress reports whether LimitKey counts a on its own.
func perAddress(a netip.Addr, bits int) bool {
	return !a.Is6() || bits >= 128 || a.IsLinkLocalUnicast() || a.IsLoopback() || nat64.Contains(a)
}

// ipKeyString renders a table key for ByIP and TopIPs: an IPv6 key is
// shown as its prefix ("2001:db8::/64"), since it stands for all of it.
func (m *Manager) ipKeyString(a netip.Addr) string {
	if !perAddress(a, m.cfg.v6Bits) {
		return netip.PrefixFrom(a, m.cfg.v6Bits).String()
	}
	return a.String()
}
