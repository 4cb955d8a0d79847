package connection

import (
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Record is the manager's state for one admitted connection. Its methods are
// safe for concurrent use; AddIn, AddOut and Touch are lock-free because the
// data pumps call them for every chunk.
type Record struct {
	m         *Manager
	id        uint64
	client    netip.AddrPort // address unmapped
	localPort int
	start     time.Time
	startOff  int64 // start as manager offset, for the lifetime check
	closer    io.Closer

	lastActivity atomic.Int64 // manager offset (ns)
	bytesIn      atomic.Uint64
	bytesOut     atomic.Uint64

	closed atomic.Bool // set once by Manager.Close
	killed atomic.Bool // set once when the manager calls closer
	// killReason is the reasonIndex+1 the manager killed the record for
	// (0: not killed); see KilledBy.
	killReason atomic.Int32

	// mu serialises AssignRoute with the route release in Close so a route
	// slot can be neither leaked nor released twice. route is written under
	// mu but read lock-free by the getters.
	mu    sync.Mutex
	route atomic.Pointer[routeInfo]
	// charged holds the routes whose RouteLimits.RatePerMinute this record
	// was already charged to; guarded by mu.
	charged chargedRoutes

	// Links in the IP entry's record list; guarded by the IP shard mutex.
	entry      *ipEntry
	prev, next *Record
}

// routeInfo is what AssignRouteLimits attached to a record; immutable once
// stored. rip is the per-route per-IP entry the record holds a slot of, nil
// when the route has no per-IP limits.
type routeInfo struct {
	route, domain string
	rip           *routeIPEntry
}

// RecordInfo is a point-in-time copy of a Record, for inspection.
type RecordInfo struct {
	ID                uint64
	Client            netip.AddrPort
	LocalPort         int
	Route, Domain     string
	Start             time.Time
	LastActivity      time.Time
	BytesIn, BytesOut uint64
}

// ID returns the record's unique identifier; IDs increase in admission order.
func (r *Record) ID() uint64 { return r.id }

// Client returns the client address, with an IPv4-mapped IPv6 address unmapped.
func (r *Record) Client() netip.AddrPort { return r.client }

// LocalPort returns the proxy port the client connected to.
func (r *Record) LocalPort() int { return r.localPort }

// Route returns the assigned route name, or "" before AssignRoute.
func (r *Record) Route() string {
	if ri := r.route.Load(); ri != nil {
		return ri.route
	}
	return ""
}

// Domain returns the domain (SNI / Host) given to AssignRoute, or "".
func (r *Record) Domain() string {
	if ri := r.route.Load(); ri != nil {
		return ri.domain
	}
	return ""
}

// Start returns the admission time (from Config.Now).
func (r *Record) Start() time.Time { return r.start }

// AddIn accounts n bytes sent client->backend and marks activity.
// Non-positive n only marks activity.
func (r *Record) AddIn(n int) {
	if n > 0 {
		r.bytesIn.Add(uint64(n))
		r.m.bytesIn.v.Add(uint64(n))
	}
	r.lastActivity.Store(r.m.offset())
}

// AddOut accounts n bytes sent backend->client and marks activity.
// Non-positive n only marks activity.
func (r *Record) AddOut(n int) {
	if n > 0 {
		r.bytesOut.Add(uint64(n))
		r.m.bytesOut.v.Add(uint64(n))
	}
	r.lastActivity.Store(r.m.offset())
}

// Touch marks activity without bytes (e.g. a keep-alive probe), postponing
// the inactivity timeout.
func (r *Record) Touch() { r.lastActivity.Store(r.m.offset()) }

// Info returns a copy of the record's current state.
func (r *Record) Info() RecordInfo {
	ri := RecordInfo{
		ID:           r.id,
		Client:       r.client,
		LocalPort:    r.localPort,
		Start:        r.start,
		LastActivity: r.m.timeAt(r.lastActivity.Load()),
		BytesIn:      r.bytesIn.Load(),
		BytesOut:     r.bytesOut.Load(),
	}
	if p := r.route.Load(); p != nil {
		ri.Route, ri.Domain = p.route, p.domain
	}
	return ri
}

// kill calls the closer unless the manager already did or the owner already
// closed the record; it reports whether it called it.
func (r *Record) kill(reason reasonIndex) bool {
	if r.closed.Load() || !r.killed.CompareAndSwap(false, true) {
		return false
	}
	r.killReason.Store(int32(reason) + 1)
	_ = r.closer.Close() // the socket is being torn down; nothing useful to do with the error
	return true
}
