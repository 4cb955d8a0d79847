package connection

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// TestLimitsReject drives each admission limit to refusal and checks the
// Reason, the error text, the LimitError fields and the Rejected counter.
func TestLimitsReject(t *testing.T) {
	ipA, ipB := v4(1), v4(2)
	tests := []struct {
		name   string
		cfg    Config
		run    func(t *testing.T, m *Manager) error // returns the refusal
		reason Reason
		limit  int
		ip     netip.Addr
		route  string
	}{
		{
			name: "global",
			cfg:  Config{MaxConnections: 2},
			run: func(t *testing.T, m *Manager) error {
				mustOpen(t, m, ipA)
				mustOpen(t, m, ipB)
				_, err := m.Open(ap(v4(3), 1), 80, newCloser())
				return err
			},
			reason: ReasonGlobalLimit, limit: 2, ip: v4(3),
		},
		{
			name: "per IP",
			cfg:  Config{MaxConnectionsPerIP: 2},
			run: func(t *testing.T, m *Manager) error {
				mustOpen(t, m, ipA)
				mustOpen(t, m, ipA)
				mustOpen(t, m, ipB) // other IPs unaffected
				_, err := m.Open(ap(ipA, 1), 80, newCloser())
				return err
			},
			reason: ReasonIPLimit, limit: 2, ip: ipA,
		},
		{
			name: "rate",
			cfg:  Config{ConnectionRateLimitPerMinute: 5},
			run: func(t *testing.T, m *Manager) error {
				for range 5 { // closing does not refund the rate budget
					m.Close(mustOpen(t, m, ipA))
				}
				mustOpen(t, m, ipB)
				_, err := m.Open(ap(ipA, 1), 80, newCloser())
				return err
			},
			reason: ReasonRateLimit, limit: 5, ip: ipA,
		},
		{
			name: "route",
			cfg:  Config{},
			run: func(t *testing.T, m *Manager) error {
				r1, r2 := mustOpen(t, m, ipA), mustOpen(t, m, ipB)
				if err := m.AssignRoute(r1, "web", "a.example", 1); err != nil {
					t.Fatalf("first AssignRoute: %v", err)
				}
				err := m.AssignRoute(r2, "web", "b.example", 1)
				// Refused record is unchanged and still open.
				if r2.Route() != "" || r2.Domain() != "" || m.RouteActive("web") != 1 || m.Active() != 2 {
					t.Errorf("after refusal: route=%q domain=%q RouteActive=%d Active=%d",
						r2.Route(), r2.Domain(), m.RouteActive("web"), m.Active())
				}
				if err := m.AssignRoute(r2, "api", "", 1); err != nil {
					t.Errorf("other route: %v", err)
				}
				return err
			},
			reason: ReasonRouteLimit, limit: 1, ip: ipB, route: "web",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newTestManager(t, tt.cfg)
			err := tt.run(t, m)
			var le *LimitError
			if !errors.As(err, &le) {
				t.Fatalf("error = %v, want *LimitError", err)
			}
			want := LimitError{Reason: tt.reason, IP: tt.ip, Route: tt.route, Limit: tt.limit}
			if (le.RetryAfter > 0) != (tt.reason == ReasonRateLimit) {
				t.Errorf("RetryAfter = %v for %s", le.RetryAfter, tt.reason)
			}
			got := *le
			got.RetryAfter = 0 // checked above; its value in TestRetryAfter*
			if got != want {
				t.Errorf("LimitError = %+v, want %+v", *le, want)
			}
			msg := err.Error()
			for _, part := range []string{string(tt.reason), tt.ip.String(), tt.route} {
				if !strings.Contains(msg, part) {
					t.Errorf("Error() = %q, missing %q", msg, part)
				}
			}
			s := m.Snapshot()
			if s.Rejected[tt.reason] != 1 || len(s.Rejected) != 1 {
				t.Errorf("Rejected = %v, want only %s:1", s.Rejected, tt.reason)
			}
		})
	}
}

// TestLimitsFreeUp checks that closing releases each concurrent limit.
func TestLimitsFreeUp(t *testing.T) {
	m := newTestManager(t, Config{MaxConnections: 1, MaxConnectionsPerIP: 1})
	r := mustOpen(t, m, v4(1))
	if err := m.AssignRoute(r, "web", "", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Open(ap(v4(2), 1), 80, newCloser()); err == nil {
		t.Fatal("second Open admitted past MaxConnections=1")
	}
	m.Close(r)
	r2 := mustOpen(t, m, v4(1))
	if err := m.AssignRoute(r2, "web", "", 1); err != nil {
		t.Fatalf("route slot not released: %v", err)
	}
	m.Close(r2)
	checkZero(t, m, v4(1), v4(2))
}

// TestRateCountsRefusedAttempts: attempts refused by another limit still
// consume the rate budget, as the brief requires.
func TestRateCountsRefusedAttempts(t *testing.T) {
	m := newTestManager(t, Config{MaxConnectionsPerIP: 1, ConnectionRateLimitPerMinute: 3})
	ip := v4(9)
	r := mustOpen(t, m, ip) // attempt 1
	for range 2 {           // attempts 2, 3
		if _, err := m.Open(ap(ip, 1), 80, newCloser()); !isReason(err, ReasonIPLimit) {
			t.Fatalf("want ip-limit, got %v", err)
		}
	}
	m.Close(r)
	if _, err := m.Open(ap(ip, 1), 80, newCloser()); !isReason(err, ReasonRateLimit) { // attempt 4
		t.Fatalf("want rate-limit, got %v", err)
	}
}

func isReason(err error, want Reason) bool {
	var le *LimitError
	return errors.As(err, &le) && le.Reason == want
}

func TestMappedV6CountsAsV4(t *testing.T) {
	m := newTestManager(t, Config{MaxConnectionsPerIP: 1})
	v4a := netip.MustParseAddr("192.0.2.7")
	mapped := netip.MustParseAddr("::ffff:192.0.2.7")
	r, err := m.Open(ap(mapped, 5555), 443, newCloser())
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Client(); got != ap(v4a, 5555) {
		t.Errorf("Client() = %v, want unmapped %v", got, ap(v4a, 5555))
	}
	if m.IPActive(v4a) != 1 || m.IPActive(mapped) != 1 {
		t.Errorf("IPActive v4=%d mapped=%d, want 1 and 1", m.IPActive(v4a), m.IPActive(mapped))
	}
	if _, err := m.Open(ap(v4a, 5556), 443, newCloser()); !isReason(err, ReasonIPLimit) {
		t.Fatalf("plain v4 after mapped: got %v, want ip-limit", err)
	}
	if ip := m.Snapshot().TopIPs[0].IP; ip != "192.0.2.7" {
		t.Errorf("TopIPs[0].IP = %q, want unmapped", ip)
	}
	m.Close(r)
	checkZero(t, m, v4a)
}

func TestOpenInvalidArgs(t *testing.T) {
	m := newTestManager(t, Config{})
	if _, err := m.Open(ap(v4(1), 1), 80, nil); !errors.Is(err, ErrNilCloser) {
		t.Errorf("nil closer: %v, want ErrNilCloser", err)
	}
	if m.Active() != 0 || m.TrackedIPs() != 0 {
		t.Errorf("invalid Open left state: Active=%d Tracked=%d", m.Active(), m.TrackedIPs())
	}
}

// Connections without an IP address (net.Pipe) are admitted beyond the
// per-IP caps, since there is no client to attribute them to.
func TestOpenWithoutAddressSkipsPerIPLimits(t *testing.T) {
	m := newTestManager(t, Config{MaxConnectionsPerIP: 2, ConnectionRateLimitPerMinute: 2})
	var recs []*Record
	for range 10 {
		r, err := m.Open(netip.AddrPort{}, 80, newCloser())
		if err != nil {
			t.Fatalf("open without address: %v", err)
		}
		recs = append(recs, r)
	}
	if m.Active() != 10 {
		t.Errorf("Active = %d, want 10", m.Active())
	}
	for _, r := range recs {
		m.Close(r)
	}
	if m.Active() != 0 {
		t.Errorf("Active after close = %d", m.Active())
	}
}

func TestAssignRoute(t *testing.T) {
	m := newTestManager(t, Config{})
	r := mustOpen(t, m, v4(1))
	if err := m.AssignRoute(r, "", "x", 0); !errors.Is(err, ErrEmptyRoute) {
		t.Errorf("empty route: %v", err)
	}
	if err := m.AssignRoute(r, "a", "a.example", 0); err != nil {
		t.Fatal(err)
	}
	if r.Route() != "a" || r.Domain() != "a.example" {
		t.Errorf("Route/Domain = %q/%q", r.Route(), r.Domain())
	}
	// Re-assigning moves the slot; same route only updates the domain.
	if err := m.AssignRoute(r, "b", "", 1); err != nil {
		t.Fatal(err)
	}
	if err := m.AssignRoute(r, "b", "b.example", 1); err != nil {
		t.Fatalf("same route at its cap must not count twice: %v", err)
	}
	if m.RouteActive("a") != 0 || m.RouteActive("b") != 1 || r.Domain() != "b.example" {
		t.Errorf("RouteActive a=%d b=%d domain=%q", m.RouteActive("a"), m.RouteActive("b"), r.Domain())
	}
	if !m.Close(r) {
		t.Fatal("Close returned false")
	}
	if err := m.AssignRoute(r, "c", "", 0); !errors.Is(err, ErrClosed) {
		t.Errorf("AssignRoute after Close: %v, want ErrClosed", err)
	}
	checkZero(t, m)
	if m.RouteActive("c") != 0 {
		t.Error("closed record counted on route c")
	}
}

func TestForeignRecordPanics(t *testing.T) {
	m1, m2 := newTestManager(t, Config{}), newTestManager(t, Config{})
	r := mustOpen(t, m1, v4(1))
	defer func() {
		if recover() == nil {
			t.Fatal("Close of a foreign record did not panic")
		}
	}()
	m2.Close(r)
}
