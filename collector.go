package smartproxy

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector returns a Prometheus collector of the proxy's metrics, to be
// registered in the caller's registry (prometheus.MustRegister, or a
// prometheus.NewRegistry of its own). Every scrape reads the proxy's
// existing counters (Metrics, TargetHealth, the reject log) and the few
// that only metrics need; nothing is kept per client, and no label holds
// a client address: routes, listener ports, backend targets, reasons and
// status classes are the only labels, each bounded by the configuration
// (see the README's metric list). The Go runtime and process collectors
// are not included, since a service usually registers them already; the
// admin API adds them to its /metrics.
//
// Asking for a collector switches on per-request accounting of the HTTP
// layer (status and latency), which costs one small allocation per
// request: the benchmark BenchmarkCollectorConnRate measures the whole.
func (p *Proxy) Collector() prometheus.Collector {
	p.ops.requests.Store(true)
	return &promCollector{p: p, last: make(map[string]float64)}
}

// promCollector implements prometheus.Collector over a Proxy.
type promCollector struct {
	p *Proxy
	// mu serialises scrapes; last holds the values of the counters that
	// are sums of an open part and a finished part (see monotonic).
	mu   sync.Mutex
	last map[string]float64
}

// allDescs is every metric's description, for Describe: desc adds each,
// so that no metric can be collected without being described (a registry
// refuses that).
var allDescs []*prometheus.Desc

func desc(name, help string, labels ...string) *prometheus.Desc {
	d := prometheus.NewDesc("smartproxy_"+name, help, labels, nil)
	allDescs = append(allDescs, d)
	return d
}

var (
	descActive       = desc("connections_active", "Open client connections.")
	descTotal        = desc("connections_total", "Client connections admitted since start.")
	descRouteActive  = desc("route_connections_active", "Open client connections by route (\"\": not routed yet).", "route")
	descRouteTotal   = desc("route_connections_total", "Client connections by the route they were served on.", "route")
	descPortActive   = desc("listener_connections_active", "Open client connections by listener port.", "port")
	descPortTotal    = desc("listener_connections_total", "Client connections admitted by listener port.", "port")
	descRejections   = desc("rejections_total", "Refused connections and requests by reason.", "reason")
	descKilled       = desc("connections_killed_total", "Connections the proxy closed by reason (timeouts, shutdown).", "reason")
	descBytesIn      = desc("received_bytes_total", "Bytes received from clients (client to backend).")
	descBytesOut     = desc("sent_bytes_total", "Bytes sent to clients (backend to client).")
	descRouteIn      = desc("route_received_bytes_total", "Bytes received from clients by route.", "route")
	descRouteOut     = desc("route_sent_bytes_total", "Bytes sent to clients by route.", "route")
	descTrackedIPs   = desc("tracked_client_ips", "Client IPs (IPv6 prefixes) with per-IP state held for limits.")
	descHandshakes   = desc("tls_handshakes_total", "Completed TLS handshakes of terminating routes, full or resumed.", "type")
	descHSFailures   = desc("tls_handshake_failures_total", "Failed TLS handshakes of terminating routes by reason.", "reason")
	descHSDuration   = desc("tls_handshake_duration_seconds", "Duration of completed TLS handshakes.")
	descRequests     = desc("http_requests_total", "HTTP requests by route and status class.", "route", "class")
	descReqDuration  = desc("http_request_duration_seconds", "HTTP request duration by route, until the response ends.", "route")
	descBackendUp    = desc("backend_up", "Whether new connections may go to the backend target (1) or not (0).", "target")
	descBackendConns = desc("backend_active_connections", "Connections and requests in flight to the backend target.", "target")
	descDialErrors   = desc("backend_connect_errors_total", "Failed connects to the backend target.", "target")
	descParked       = desc("parked_directions", "Directions of idle forwarded connections parked off their goroutines.")
	descAccessLines  = desc("access_log_lines_total", "Access log lines written.")
	descAccessDrops  = desc("access_log_dropped_total", "Access log lines dropped: queue_full or rate_limited.", "reason")
	descCertExpiry   = desc("certificate_expiry_timestamp_seconds", "When the certificate for the name expires (Unix time).", "name")
)

// Describe sends every metric's description.
func (c *promCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// Collect reads the proxy's counters once.
func (c *promCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, o := c.p, c.p.ops
	m := p.Metrics()
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	counter := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, lv...)
	}
	gauge(descActive, float64(m.Active))
	counter(descTotal, float64(m.Total))
	counter(descBytesIn, float64(m.BytesIn))
	counter(descBytesOut, float64(m.BytesOut))
	gauge(descTrackedIPs, float64(m.TrackedIPs))
	for reason, n := range m.Rejected {
		counter(descRejections, float64(n), string(reason))
	}
	for reason, n := range m.Closed {
		counter(descKilled, float64(n), string(reason))
	}

	for _, r := range routeStatsOf(p, m) {
		gauge(descRouteActive, float64(r.Active), r.Name)
		counter(descRouteTotal, c.monotonic("conns", r.Name, float64(r.Connections)), r.Name)
		counter(descRouteIn, c.monotonic("in", r.Name, float64(r.BytesIn)), r.Name)
		counter(descRouteOut, c.monotonic("out", r.Name, float64(r.BytesOut)), r.Name)
		ops := o.routes.get(r.Name)
		for class := range ops.requests {
			if n := ops.requests[class].Load(); n > 0 {
				counter(descRequests, float64(n), r.Name, statusClass(class))
			}
		}
		if n, sum, buckets := ops.latency.snapshot(); n > 0 {
			ch <- prometheus.MustNewConstHistogram(descReqDuration, n, sum, buckets, r.Name)
		}
	}
	o.ports.each(func(port int, po *portOps) {
		opened := po.opened.Load()
		closed := min(po.closed.Load(), opened) // read second: never above opened
		gauge(descPortActive, float64(opened-closed), strconv.Itoa(port))
		counter(descPortTotal, float64(opened), strconv.Itoa(port))
	})

	counter(descHandshakes, float64(o.tls.full.Load()), "full")
	counter(descHandshakes, float64(o.tls.resumed.Load()), "resumed")
	for i, reason := range tlsFailReasons {
		counter(descHSFailures, float64(o.tls.failed[i].Load()), reason)
	}
	n, sum, buckets := o.tls.duration.snapshot()
	ch <- prometheus.MustNewConstHistogram(descHSDuration, n, sum, buckets)

	for _, t := range targetStatsOf(p) {
		if t.known {
			gauge(descBackendUp, boolFloat(t.Up), t.Addr)
			gauge(descBackendConns, float64(t.ActiveConnections), t.Addr)
		}
		counter(descDialErrors, float64(t.connectErrors), t.Addr)
	}
	if pk := o.parker.Load(); pk != nil {
		gauge(descParked, float64(pk.Parked()))
	}
	if a := o.access; a != nil {
		counter(descAccessLines, float64(a.written.Load()))
		counter(descAccessDrops, float64(a.droppedFull.Load()), "queue_full")
		counter(descAccessDrops, float64(a.limited.Load()), "rate_limited")
	}
	for _, cs := range p.certificateStatus() {
		gauge(descCertExpiry, float64(cs.NotAfter.Unix()), cs.Name)
	}
}

// monotonic keeps a counter that is the sum of a finished part and an
// open part from going down: a connection leaves the open part (the
// manager's record) a moment before it joins the finished part, and a
// scrape in between would see a dip, which Prometheus takes for a
// restart. The counter then holds its last value until the sum passes
// it. Caller holds c.mu.
func (c *promCollector) monotonic(kind, label string, v float64) float64 {
	k := kind + "\x00" + label
	if last := c.last[k]; v < last {
		return last
	}
	c.last[k] = v
	return v
}

func statusClass(i int) string {
	if i == 0 {
		return "other"
	}
	return strconv.Itoa(i) + "xx"
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// routeStats is one route's running totals, for the promCollector and the
// admin API's dashboard.
type routeStats struct {
	Name              string
	Active            int
	Connections       uint64 // finished and open
	Requests          uint64
	BytesIn, BytesOut uint64 // finished and open
}

// routeStatsOf merges, per route, the manager's open connections with the
// finished ones counted in ops: the current routes first (in order),
// then any other route name seen (an old route, "" for unrouted).
func routeStatsOf(p *Proxy, m connection.Metrics) []routeStats {
	idx := make(map[string]int)
	var out []routeStats
	add := func(name string) *routeStats {
		if i, ok := idx[name]; ok {
			return &out[i]
		}
		if len(out) > maxRouteLabels {
			name = overflowLabel
			if i, ok := idx[name]; ok {
				return &out[i]
			}
		}
		idx[name] = len(out)
		out = append(out, routeStats{Name: name})
		return &out[len(out)-1]
	}
	for _, r := range p.set.Load().routes {
		add(r.Name)
	}
	p.ops.routes.each(func(name string, ro *routeOps) {
		s := add(name)
		s.Connections += ro.closed.Load()
		s.BytesIn += ro.bytesIn.Load()
		s.BytesOut += ro.bytesOut.Load()
		for i := range ro.requests {
			s.Requests += ro.requests[i].Load()
		}
	})
	for name, n := range m.ByRoute {
		s := add(name)
		s.Active += n
		s.Connections += uint64(n)
	}
	if lister, ok := p.conns.(interface {
		Records() []connection.RecordInfo
	}); ok {
		for _, ri := range lister.Records() {
			s := add(ri.Route)
			s.BytesIn += ri.BytesIn
			s.BytesOut += ri.BytesOut
		}
	}
	return out
}

// targetStat is a target's health with its connect failures.
type targetStat struct {
	TargetStatus
	known         bool // in TargetHealth
	connectErrors uint64
}

// targetStatsOf merges TargetHealth with the connect failures per
// address, at most maxTargetLabels of them.
func targetStatsOf(p *Proxy) []targetStat {
	health := p.TargetHealth()
	out := make([]targetStat, 0, len(health))
	idx := make(map[string]int, len(health))
	for _, h := range health {
		if len(out) >= maxTargetLabels {
			break
		}
		idx[h.Addr] = len(out)
		out = append(out, targetStat{TargetStatus: h, known: true})
	}
	p.ops.targets.each(func(addr string, n *atomic.Uint64) {
		if i, ok := idx[addr]; ok {
			out[i].connectErrors = n.Load()
		} else if len(out) < maxTargetLabels+1 {
			out = append(out, targetStat{TargetStatus: TargetStatus{Addr: addr}, connectErrors: n.Load()})
		}
	})
	return out
}
