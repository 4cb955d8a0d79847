package connection

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock is a manually advanced clock for Config.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// testCloser counts Close calls and signals the first one on done.
type testCloser struct {
	calls atomic.Int32
	done  chan struct{}
	once  sync.Once
	// onClose, if set, runs on every call (e.g. the owner releasing the record).
	onClose func()
}

func newCloser() *testCloser { return &testCloser{done: make(chan struct{})} }

func (c *testCloser) Close() error {
	c.calls.Add(1)
	c.once.Do(func() { close(c.done) })
	if c.onClose != nil {
		c.onClose()
	}
	return nil
}

func (c *testCloser) wait(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(d):
		t.Fatalf("closer not called within %v", d)
	}
}

// v4 returns a distinct address in 127.0.0.0/8 for i < 2^24.
func v4(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, byte(i >> 16), byte(i >> 8), byte(i)})
}

// v6 returns a distinct address in fc00::/7 for any i.
func v6(i int) netip.Addr {
	var b [16]byte
	b[0] = 0xfd
	// i goes in the /64 part: IPv6 clients are limited per /64 by default,
	// so distinct test clients need distinct /64s.
	b[4], b[5], b[6], b[7] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
	b[15] = 1
	return netip.AddrFrom16(b)
}

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

func newTestManager(t testing.TB, cfg Config) *Manager {
	t.Helper()
	m, err := NewManager(cfg)
	if err != nil {
		t.Fatalf("NewManager: %v", err)
	}
	return m
}

func mustOpen(t testing.TB, m *Manager, a netip.Addr) *Record {
	t.Helper()
	r, err := m.Open(ap(a, 40000), 443, newCloser())
	if err != nil {
		t.Fatalf("Open(%s): %v", a, err)
	}
	return r
}

// checkZero asserts every counter of m is back to zero.
func checkZero(t *testing.T, m *Manager, ips ...netip.Addr) {
	t.Helper()
	if n := m.Active(); n != 0 {
		t.Errorf("Active = %d, want 0", n)
	}
	if recs := m.Records(); len(recs) != 0 {
		t.Errorf("Records has %d entries, want 0", len(recs))
	}
	s := m.Snapshot()
	if len(s.ByRoute) != 0 || len(s.ByIP) != 0 || len(s.TopIPs) != 0 {
		t.Errorf("snapshot not empty: ByRoute=%v ByIP=%v TopIPs=%v", s.ByRoute, s.ByIP, s.TopIPs)
	}
	for _, ip := range ips {
		if n := m.IPActive(ip); n != 0 {
			t.Errorf("IPActive(%s) = %d, want 0", ip, n)
		}
	}
}
