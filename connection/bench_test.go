package connection

import (
	"io"
	"sync/atomic"
	"testing"
)

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

var _ io.Closer = nopCloser{}

// BenchmarkOpenClose measures the accept path with TS defaults. Addresses
// cycle over 2^20 IPs so the rate limit never refuses (b.N per IP stays
// far below 300/min) while the per-IP table churns at its 100,000 cap.
func BenchmarkOpenClose(b *testing.B) {
	m := newTestManager(b, Config{})
	var next atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := int(next.Add(1) & (1<<20 - 1))
			r, err := m.Open(ap(v4(i), 1), 443, nopCloser{})
			if err != nil {
				b.Error(err)
				return
			}
			m.Close(r)
		}
	})
}

// BenchmarkOpenCloseSameIP is the contended case: one shard, one entry.
func BenchmarkOpenCloseSameIP(b *testing.B) {
	m := newTestManager(b, Config{MaxConnectionsPerIP: -1, ConnectionRateLimitPerMinute: -1})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r, err := m.Open(ap(v4(1), 1), 443, nopCloser{})
			if err != nil {
				b.Error(err)
				return
			}
			m.Close(r)
		}
	})
}

// BenchmarkAddIn is the per-chunk data path of one pump.
func BenchmarkAddIn(b *testing.B) {
	m := newTestManager(b, Config{})
	r := mustOpen(b, m, v4(1))
	b.ReportAllocs()
	for b.Loop() {
		r.AddIn(1500)
	}
}

// BenchmarkAddInParallel has one record per goroutine, all sharing the
// global byte counter.
func BenchmarkAddInParallel(b *testing.B) {
	m := newTestManager(b, Config{ConnectionRateLimitPerMinute: -1})
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := mustOpen(b, m, v4(int(next.Add(1))))
		for pb.Next() {
			r.AddIn(1500)
		}
	})
}
