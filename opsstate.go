package smartproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/gosmartproxy/smartproxy/forwarding"
)

// opsState holds the few counters that the Prometheus collector, the
// admin API and the access logs need and that connection.Manager does not
// keep. Everything else they report is read from the existing sources
// (Proxy.Metrics, TargetHealth, the reject log) when asked. The counters
// are atomics bumped once per connection, handshake, dial failure or
// request; per-request accounting (status, latency) is only switched on
// once someone reads it (Proxy.Collector, AdminSource) or access logs are
// on, so a proxy nobody observes pays nothing per request.
type opsState struct {
	routes  labelSet[string, routeOps]
	ports   labelSet[int, portOps]
	targets labelSet[string, atomic.Uint64] // connect failures per backend address
	tls     tlsOps
	// requests switches on per-request accounting in the HTTP layer.
	requests atomic.Bool
	// access writes the access log lines; nil when access logs are off.
	access *accessLog
	// parker is Proxy.parker once the runner started it, for the collector.
	parker atomic.Pointer[forwarding.IdleParker]
}

// Bounds on label values: route names and ports come from the
// configuration, target addresses too, except where a HostFunc or
// PortFunc computes them per connection. Past the bound, new values are
// counted under the overflow value, so a hostile or buggy HostFunc cannot
// make a scrape grow without end.
const (
	maxRouteLabels  = 1024
	maxTargetLabels = 1024
	maxPortLabels   = 1024
	// overflowLabel is the route and target label of everything past the
	// bound; port 0 is the port's.
	overflowLabel = "_other"
)

func newOpsState(access *accessLog) *opsState {
	o := &opsState{access: access}
	o.routes.init(maxRouteLabels, overflowLabel)
	o.targets.init(maxTargetLabels, overflowLabel)
	o.ports.init(maxPortLabels, 0)
	if access != nil {
		o.requests.Store(true)
	}
	return o
}

// routeOps counts what ended on one route.
type routeOps struct {
	closed            atomic.Uint64 // connections finished with this route
	bytesIn, bytesOut atomic.Uint64 // bytes of those connections
	// requests counts HTTP requests by status class: index 1-5 for
	// 1xx-5xx, 0 for anything else (no response written).
	requests [6]atomic.Uint64
	latency  histogram // HTTP request duration
}

// portOps counts connections admitted on one listener port.
type portOps struct{ opened, closed atomic.Uint64 }

// tlsOps counts terminated TLS handshakes.
type tlsOps struct {
	full, resumed atomic.Uint64
	failed        [len(tlsFailReasons)]atomic.Uint64
	duration      histogram
}

// tlsFailReasons label smartproxy_tls_handshake_failures_total; a fixed
// set, so the label stays bounded whatever clients send.
var tlsFailReasons = [...]string{"timeout", "client_closed", "client_alert", "no_certificate", "shutdown", "protocol"}

// tlsFailReason classifies a failed server handshake.
func tlsFailReason(err error) int {
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return 0
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed):
		return 1
	case errors.As(err, &oe) && oe.Op == "remote error":
		return 2
	case errors.Is(err, ErrNoCertificate):
		return 3
	case errors.Is(err, context.Canceled):
		return 4
	}
	return 5
}

// handshake records one server handshake of a terminating route.
func (o *opsState) handshake(err error, state *tls.ConnectionState, took time.Duration) {
	if err != nil {
		o.tls.failed[tlsFailReason(err)].Add(1)
		return
	}
	o.tls.duration.observe(took)
	if state.DidResume {
		o.tls.resumed.Add(1)
	} else {
		o.tls.full.Add(1)
	}
}

// dialFailed counts a failed connect to a backend address.
func (o *opsState) dialFailed(addr string) { o.targets.get(addr).Add(1) }

// backendFailed reports a failed connect to a backend address: to the
// health tracker and to the connect-error metric. Every data path that
// dials (forwarding, the HTTP layer, the event-loop engine) reports
// through it, so the two cannot disagree.
func (p *Proxy) backendFailed(addr string, err error) {
	p.health.Failed(addr, err)
	p.ops.dialFailed(addr)
}

// opened counts a connection admitted on port.
func (o *opsState) opened(port int) { o.ports.get(port).opened.Add(1) }

// backendNamer is a connection's owner that can name its backend for
// the access log: *proxiedConn on the goroutine path (the event-loop
// engine's connection can be one too).
type backendNamer interface{ backendAddr() string }

// connDone accounts a finished connection (after the manager closed its
// record) and writes its access log line. Every data path that opened
// the connection (opened) must call it, or the listener's open gauge
// never comes down and the route's totals miss the connection.
func (o *opsState) connDone(rec *connection.Record, owner backendNamer) {
	info := rec.Info()
	o.ports.get(info.LocalPort).closed.Add(1)
	r := o.routes.get(info.Route)
	r.bytesIn.Add(info.BytesIn)
	r.bytesOut.Add(info.BytesOut)
	r.closed.Add(1)
	if o.access != nil {
		o.access.conn(info, owner.backendAddr(), rec.KilledBy())
	}
}

// backendAddr returns the address of the connection's backend, "" when
// it has none (the HTTP layer dials per request; a handler has none).
func (pc *proxiedConn) backendAddr() string {
	pc.mu.Lock()
	b := pc.backend
	pc.mu.Unlock()
	if b == nil {
		return ""
	}
	if a := b.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}

// request accounts one HTTP request. route is "" when no route took it.
func (o *opsState) request(route string, status int, took time.Duration) {
	r := o.routes.get(route)
	class := status / 100
	if class < 1 || class > 5 {
		class = 0
	}
	r.requests[class].Add(1)
	r.latency.observe(took)
}

// finish ends an admitted connection (finishConn) and accounts it.
func (p *Proxy) finish(rec *connection.Record, pc *proxiedConn) {
	finishConn(p.conns, rec, pc)
	p.ops.connDone(rec, pc)
}

// labelSet maps a label value to its counters, creating them on first
// use, up to max values; later values share the overflow value's
// counters. Lookups of known values are lock-free (sync.Map).
type labelSet[K comparable, V any] struct {
	m        sync.Map
	n        atomic.Int64
	max      int64
	overflow K
}

func (s *labelSet[K, V]) init(max int64, overflow K) { s.max, s.overflow = max, overflow }

func (s *labelSet[K, V]) get(k K) *V {
	if v, ok := s.m.Load(k); ok {
		return v.(*V)
	}
	if s.n.Load() >= s.max {
		k = s.overflow
	}
	v, loaded := s.m.LoadOrStore(k, new(V))
	if !loaded {
		s.n.Add(1)
	}
	return v.(*V)
}

// each calls fn for every value, in no particular order.
func (s *labelSet[K, V]) each(fn func(K, *V)) {
	s.m.Range(func(k, v any) bool {
		fn(k.(K), v.(*V))
		return true
	})
}

// histogram is a lock-free fixed-bucket latency histogram: one atomic
// add per bucket hit and one for the sum.
type histogram struct {
	counts [len(latencyBuckets) + 1]atomic.Uint64
	sumNs  atomic.Uint64
}

// latencyBuckets are the upper bounds, in seconds, of the TLS handshake
// and HTTP request duration histograms.
var latencyBuckets = [...]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

func (h *histogram) observe(d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < len(latencyBuckets) && s > latencyBuckets[i] {
		i++
	}
	h.counts[i].Add(1)
	if d > 0 {
		h.sumNs.Add(uint64(d))
	}
}

// snapshot returns the count, the sum in seconds and the cumulative
// bucket counts, as prometheus.NewConstHistogram takes them. The count is
// the buckets' sum, so the three agree even while observations go on.
func (h *histogram) snapshot() (count uint64, sum float64, buckets map[float64]uint64) {
	buckets = make(map[float64]uint64, len(latencyBuckets))
	for i, ub := range latencyBuckets {
		count += h.counts[i].Load()
		buckets[ub] = count
	}
	count += h.counts[len(latencyBuckets)].Load()
	return count, float64(h.sumNs.Load()) / 1e9, buckets
}
