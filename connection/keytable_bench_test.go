package connection

import (
	"net/netip"
	"sync/atomic"
	"testing"
)

// BenchmarkOpenAssignRouteClose is the accept path of a route with per-IP
// limits: the per-IP table and the per-route per-IP table both churn at
// their 100,000 cap.
func BenchmarkOpenAssignRouteClose(b *testing.B) {
	m := newTestManager(b, Config{})
	lim := RouteLimits{MaxConnectionsPerIP: 10, RatePerMinute: 1000}
	var next atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := openAssignClose(m, v4(int(next.Add(1)&(1<<20-1))), lim); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func openAssignClose(m *Manager, a netip.Addr, lim RouteLimits) error {
	r, err := m.Open(ap(a, 1), 443, nopCloser{})
	if err != nil {
		return err
	}
	defer m.Close(r)
	return m.AssignRouteLimits(r, "r", "", lim)
}
