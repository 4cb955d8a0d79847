package connection

import (
	"errors"
	"testing"
	"time"
)

// The window's retryAfter is exact to its 1 ms slack: one hit at
// now+retryAfter is within the limit, one 2 ms earlier is not, whatever the counts and the
// position in the window (prev and cur as after refused attempts too).
func TestWindowRetryAfterIsExact(t *testing.T) {
	const size = int64(time.Minute)
	for _, limit := range []int{1, 2, 5, 300} {
		for _, prev := range []uint32{0, 1, 4, 5, 17, 300, 900} {
			for _, cur := range []uint32{0, 1, 4, 5, 6, 50, 301, 1000} {
				for _, at := range []int64{0, size / 7, size / 2, size - 1} {
					w := slidingWindow{start: 0, prev: prev, cur: cur}
					ra := w.retryAfter(at, size, limit)
					if ra < 0 || ra > 2*size+retrySlack {
						t.Fatalf("limit %d prev %d cur %d at %d: retryAfter %d", limit, prev, cur, at, ra)
					}
					admitted := func(after int64) bool {
						w2 := w
						return w2.hit(at+after, size) <= float64(limit)
					}
					if !admitted(ra) {
						t.Errorf("limit %d prev %d cur %d at %v: refused at retryAfter %v", limit, prev, cur, time.Duration(at), time.Duration(ra))
					}
					if ra > 2*int64(time.Millisecond) && admitted(ra-2*int64(time.Millisecond)) {
						t.Errorf("limit %d prev %d cur %d at %v: admitted 2 ms before retryAfter %v", limit, prev, cur, time.Duration(at), time.Duration(ra))
					}
				}
			}
		}
	}
}

// A client refused by the per-IP rate is told when to come back, counting
// its refused attempts: retrying then succeeds, retrying earlier does not.
func TestRetryAfterRateLimit(t *testing.T) {
	clk := newFakeClock()
	m := newTestManager(t, Config{ConnectionRateLimitPerMinute: 3, Now: clk.Now})
	ipA := v4(1)
	for range 3 {
		m.Close(mustOpen(t, m, ipA))
	}
	var le *LimitError
	for range 4 { // hammering: every refused attempt counts
		_, err := m.Open(ap(ipA, 1), 80, newCloser())
		if !errors.As(err, &le) || le.Reason != ReasonRateLimit {
			t.Fatalf("want a rate-limit refusal, got %v", err)
		}
	}
	if le.RetryAfter <= time.Minute/3 {
		t.Fatalf("RetryAfter %v: no more than one attempt's share of the minute, though 7 attempts count", le.RetryAfter)
	}
	clk.Advance(le.RetryAfter - time.Second)
	_, err := m.Open(ap(ipA, 1), 80, newCloser())
	if !errors.As(err, &le) || le.RetryAfter <= 0 {
		t.Fatalf("a second before RetryAfter: %v, want a refusal with a new RetryAfter", err)
	}
	clk.Advance(le.RetryAfter) // the early attempt counted: wait what it was told
	var r *Record
	r, err = m.Open(ap(ipA, 1), 80, newCloser())
	if err != nil {
		t.Fatalf("refused at RetryAfter: %v", err)
	}
	m.Close(r)
}
