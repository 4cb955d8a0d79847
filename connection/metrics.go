package connection

import (
	"net/netip"
	"sort"
	"sync"
)

// Metrics is a point-in-time snapshot of the manager's counters.
type Metrics struct {
	Active   int               // open connections
	Total    uint64            // connections admitted since start
	Rejected map[Reason]uint64 // refusals by limit (only non-zero reasons)
	Closed   map[Reason]uint64 // kills by the manager: timeouts and shutdown (only non-zero)
	ByRoute  map[string]int    // open connections per route (only routes with any)
	// ByIP counts open connections per client as the per-IP limits see
	// it (only clients with any): an IPv4 address, or an IPv6 /64 as
	// "2001:db8::/64" (see Config.IPv6PrefixLen and LimitKey).
	ByIP   map[string]int
	TopIPs []IPCount // up to 10 ByIP keys by open connections, desc (ties by key)
	// TrackedIPs and TrackedRouteIPs count the per-IP and per-route per-IP
	// entries held: bounded by Config.MaxTrackedIPs, pruned when idle.
	TrackedIPs, TrackedRouteIPs int
	BytesIn                     uint64 // client->backend bytes, all connections ever
	BytesOut                    uint64 // backend->client bytes
	// Throughput is bytes/second averaged over the last 1s, 10s and 60s of
	// per-second samples taken by Run; while fewer samples exist, the
	// average is over those that do (0 before the first).
	Throughput struct{ In, Out Rates }
	// Kernel counts the routes the kernel forwards, by route name (filled
	// in by smartproxy; nil when there are none).
	Kernel map[string]KernelRoute
}

// IPCount is a client (a ByIP key) with its number of open connections.
type IPCount struct {
	IP     string // an address, or an IPv6 prefix
	Active int
}

// Rates are bytes/second averaged over three trailing windows.
type Rates struct{ Last1s, Last10s, Last60s float64 }

// topIPCount is how many entries Metrics.TopIPs holds.
const topIPCount = 10

// Snapshot collects the current metrics. It walks the IPs with open
// connections, so it costs O(open IPs); meant for periodic inspection.
// Counters are read one by one without a global lock, so under concurrent
// traffic the fields are individually accurate but not one consistent cut.
func (m *Manager) Snapshot() Metrics {
	s := Metrics{
		Active:          m.Active(),
		Total:           m.total.Load(),
		Rejected:        make(map[Reason]uint64),
		Closed:          make(map[Reason]uint64),
		ByRoute:         make(map[string]int),
		ByIP:            make(map[string]int),
		BytesIn:         m.bytesIn.v.Load(),
		TrackedIPs:      m.ips.Len(),
		TrackedRouteIPs: m.rips.Len(),
		BytesOut:        m.bytesOut.v.Load(),
	}
	for i := range numReasons {
		n := m.counts[i].Load()
		if n == 0 {
			continue
		}
		if i < idxInactivity {
			s.Rejected[reasonByIndex[i]] = n
		} else {
			s.Closed[reasonByIndex[i]] = n
		}
	}
	m.routeMu.Lock()
	for k, v := range m.routes {
		s.ByRoute[k] = v
	}
	m.routeMu.Unlock()

	var all []IPCount
	m.ips.forEachActiveIP(func(a netip.Addr, n int) {
		all = append(all, IPCount{IP: m.ipKeyString(a), Active: n})
	})
	for _, c := range all {
		s.ByIP[c.IP] = c.Active
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].Active != all[j].Active {
			return all[i].Active > all[j].Active
		}
		return all[i].IP < all[j].IP
	})
	s.TopIPs = all[:min(len(all), topIPCount)]
	s.Throughput.In, s.Throughput.Out = m.sampler.rates()
	return s
}

// sampleRing is the number of per-second samples kept (the 60s window).
const sampleRing = 60

// sampler turns the monotonically growing byte totals into per-interval
// deltas, so throughput windows cost O(60) memory regardless of traffic.
type sampler struct {
	mu      sync.Mutex
	lastIn  uint64
	lastOut uint64
	lastAt  int64 // manager offset of the previous sample
	ring    [sampleRing]sample
	head, n int // next write index, samples held
}

type sample struct {
	in, out uint64
	dur     int64 // ns covered by the sample
}

// sample records the bytes moved since the previous sample. Durations come
// from the manager clock so a late ticker does not skew the rate.
func (m *Manager) sample() {
	now := m.offset()
	in, out := m.bytesIn.v.Load(), m.bytesOut.v.Load()
	sp := &m.sampler
	sp.mu.Lock()
	defer sp.mu.Unlock()
	dur := now - sp.lastAt
	if dur <= 0 {
		return
	}
	sp.ring[sp.head] = sample{in: in - sp.lastIn, out: out - sp.lastOut, dur: dur}
	sp.head = (sp.head + 1) % sampleRing
	sp.n = min(sp.n+1, sampleRing)
	sp.lastIn, sp.lastOut, sp.lastAt = in, out, now
}

func (sp *sampler) rates() (in, out Rates) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	in.Last1s, out.Last1s = sp.avg(1)
	in.Last10s, out.Last10s = sp.avg(10)
	in.Last60s, out.Last60s = sp.avg(60)
	return in, out
}

// avg averages the newest k samples (fewer if fewer exist). Caller holds mu.
func (sp *sampler) avg(k int) (in, out float64) {
	k = min(k, sp.n)
	var bi, bo uint64
	var d int64
	for i := 1; i <= k; i++ {
		s := sp.ring[(sp.head-i+sampleRing)%sampleRing]
		bi += s.in
		bo += s.out
		d += s.dur
	}
	if d == 0 {
		return 0, 0
	}
	secs := float64(d) / 1e9
	return float64(bi) / secs, float64(bo) / secs
}
