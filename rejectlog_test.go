package smartproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy/auth"
	"github.com/gosmartproxy/smartproxy/connection"
)

// recordHandler keeps every record logged through it.
type recordHandler struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordHandler) records() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]slog.Record(nil), h.recs...)
}

func attr(r slog.Record, key string) slog.Value {
	var v slog.Value
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value
			return false
		}
		return true
	})
	return v
}

type stepClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// TestRejectLogSummarises: 10,000 rejections spread over 3 seconds and two
// (reason, route) pairs produce one line per pair and second plus one
// summary each, and the counts and summaries add up.
func TestRejectLogSummarises(t *testing.T) {
	t.Parallel()
	h := &recordHandler{}
	clk := &stepClock{now: testNow}
	l := newRejectLog(slog.New(h), time.Second)
	l.now = clk.Now
	ip := netip.MustParseAddr("203.0.113.9")
	cause := errors.New("boom")
	for i := range 10000 {
		if i > 0 && i%3334 == 0 {
			clk.Advance(time.Second)
		}
		reason, route := "ip-blocked", "web"
		if i%4 == 0 {
			reason, route = "route-rate-limit", "api"
		}
		l.reject(reason, route, ip, cause)
	}
	clk.Advance(time.Second)
	l.flush()

	recs := h.records()
	require.LessOrEqual(t, len(recs), 12, "a handful of lines")
	var firsts, summarised uint64
	for _, r := range recs {
		switch {
		case r.Message == "rejected":
			firsts++
			require.Equal(t, "boom", attr(r, "err").String())
			require.Equal(t, ip.String(), attr(r, "client").String())
		case strings.Contains(r.Message, "more rejections of reason"):
			summarised += attr(r, "count").Uint64()
			require.Contains(t, r.Message, attr(r, "reason").String())
		default:
			t.Fatalf("unexpected log line %q", r.Message)
		}
	}
	require.Equal(t, uint64(6), firsts, "2 pairs x 3 intervals")
	require.Equal(t, uint64(10000), firsts+summarised, "every rejection logged or summarised")
	require.Equal(t, map[string]uint64{"ip-blocked": 7500, "route-rate-limit": 2500}, l.counts())
	l.mu.Lock()
	require.Empty(t, l.bursts, "finished intervals are forgotten")
	l.mu.Unlock()
}

func TestRejectLogConcurrent(t *testing.T) {
	t.Parallel()
	h := &recordHandler{}
	l := newRejectLog(slog.New(h), time.Hour)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for range 1000 {
				l.reject("no-route", "", netip.AddrFrom4([4]byte{10, 0, 0, byte(g)}), nil)
			}
		})
	}
	wg.Wait()
	require.Len(t, h.records(), 1)
	require.Equal(t, uint64(8000), l.counts()["no-route"])
}

func TestRejectLogRunFlushes(t *testing.T) {
	t.Parallel()
	h := &recordHandler{}
	l := newRejectLog(slog.New(h), 10*time.Millisecond)
	for range 5 {
		l.reject("ip-blocked", "r", netip.Addr{}, nil)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.run(ctx) }()
	require.Eventually(t, func() bool { return len(h.records()) == 2 }, 2*time.Second, 5*time.Millisecond)
	cancel()
	<-done
	require.Equal(t, uint64(4), attr(h.records()[1], "count").Uint64())
}

func TestRejectReasonAndMetricsMerge(t *testing.T) {
	t.Parallel()
	require.Equal(t, "ip-blocked", rejectReasonOf(&RejectError{Reason: RejectBlocked}))
	require.Equal(t, "route-ip-limit", rejectReasonOf(&connection.LimitError{Reason: connection.ReasonRouteIPLimit}))
	require.Equal(t, "error", rejectReasonOf(errors.New("x")))

	l := newRejectLog(slog.New(&recordHandler{}), time.Second)
	l.reject("ip-blocked", "a", netip.Addr{}, nil)
	l.reject("route-ip-limit", "a", netip.Addr{}, nil) // the manager counts these itself
	m := map[connection.Reason]uint64{connection.ReasonRouteIPLimit: 1}
	l.addTo(m)
	require.Equal(t, map[connection.Reason]uint64{"ip-blocked": 1, connection.ReasonRouteIPLimit: 1}, m)
}

// geoRejection is a custom checker's refusal with a reason of its own.
type geoRejection struct{}

func (geoRejection) Error() string        { return "geo" }
func (geoRejection) RejectReason() string { return "geo-blocked" }

// TestRejectReasonOf: every kind of refusal is named through Rejection,
// wrapped or not; other errors count as "error".
func TestRejectReasonOf(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		err  error
		want string
	}{
		{&RejectError{Reason: RejectBlocked}, "ip-blocked"},
		{fmt.Errorf("wrapped: %w", &connection.LimitError{Reason: connection.ReasonIPLimit}), "ip-limit"},
		{&auth.Error{Reason: auth.ReasonJWT}, "jwt-invalid"},
		{fmt.Errorf("checker: %w", geoRejection{}), "geo-blocked"},
		{errors.New("plain"), "error"},
	} {
		require.Equal(t, c.want, rejectReasonOf(c.err), "%v", c.err)
	}
}
