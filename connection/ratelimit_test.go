package connection

import (
	"testing"
	"time"
)

func TestSlidingWindow(t *testing.T) {
	const size = int64(time.Minute)
	sec := int64(time.Second)
	type step struct {
		at   int64 // time of the hit
		want float64
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"fills current window", []step{{0, 1}, {10 * sec, 2}, {59 * sec, 3}}},
		{"previous weighted by overlap", []step{
			{0, 1}, {1, 2}, {2, 3}, {3, 4}, // 4 in window [0,60s)
			{60 * sec, 4*1 + 1},         // at start of next window prev weighs fully
			{90 * sec, 4*0.5 + 2},       // halfway: half of prev
			{119 * sec, 4*(1.0/60) + 3}, // almost gone
		}},
		{"gap of two windows clears", []step{{0, 1}, {1, 2}, {120 * sec, 1}}},
		{"clock stepping back does not inflate", []step{{60 * sec, 1}, {30 * sec, 2}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w slidingWindow
			w.start = tt.steps[0].at
			for i, s := range tt.steps {
				if got := w.hit(s.at, size); !approx(got, s.want) {
					t.Fatalf("step %d at %v: estimate %v, want %v", i, time.Duration(s.at), got, s.want)
				}
			}
		})
	}
}

func approx(a, b float64) bool { d := a - b; return d < 1e-9 && d > -1e-9 }

// TestRateWindowSlides exercises the per-IP limit through Open with a fake
// clock: the budget recovers gradually as the previous minute slides out.
func TestRateWindowSlides(t *testing.T) {
	clk := newFakeClock()
	m := newTestManager(t, Config{ConnectionRateLimitPerMinute: 10, Now: clk.Now})
	ip, other := v4(7), v4(8)
	admitted := func() int {
		n := 0
		for {
			r, err := m.Open(ap(ip, 1), 80, newCloser())
			if err != nil {
				if !isReason(err, ReasonRateLimit) {
					t.Fatalf("unexpected error %v", err)
				}
				return n
			}
			m.Close(r)
			n++
		}
	}
	// t=0: 10 admitted, the 11th attempt refused (and counted).
	if n := admitted(); n != 10 {
		t.Fatalf("t=0: admitted %d, want 10", n)
	}
	// t=90s: previous minute (11 attempts) weighs 0.5 => 5.5; attempts 1..4
	// give 6.5..9.5, the 5th 10.5 > 10.
	clk.Advance(90 * time.Second)
	if n := admitted(); n != 4 {
		t.Fatalf("t=90s: admitted %d, want 4", n)
	}
	// A different IP was never limited.
	m.Close(mustOpen(t, m, other))
	// t=150s: window [60s,120s) held 5 attempts and weighs 0.5 => 2.5;
	// attempts 1..7 give 3.5..9.5, the 8th 10.5.
	clk.Advance(60 * time.Second)
	if n := admitted(); n != 7 {
		t.Fatalf("t=150s: admitted %d, want 7", n)
	}
	// Two idle minutes later everything has slid out.
	clk.Advance(121 * time.Second)
	if n := admitted(); n != 10 {
		t.Fatalf("t=271s: admitted %d, want 10", n)
	}
	if got := m.Snapshot().Rejected[ReasonRateLimit]; got != 4 {
		t.Errorf("Rejected[rate-limit] = %d, want 4", got)
	}
}
