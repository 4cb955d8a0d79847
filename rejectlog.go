package smartproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/gosmartproxy/smartproxy/connection"
)

// DefaultRejectLogInterval is how often at most a rejection of one reason
// on one route is logged individually.
const DefaultRejectLogInterval = time.Second

// rejectLog counts rejections by reason and logs them without flooding:
// per (reason, route) and interval, the first rejection is logged in full
// and the rest are summarised in one line ("N more rejections ...") once
// the interval is over. The summary is written lazily, by the next
// rejection after the interval or by flush (which the Proxy may call from
// a ticker: see run), so the type needs no goroutine of its own. Safe for
// concurrent use.
type rejectLog struct {
	log      *slog.Logger
	level    slog.Level
	interval time.Duration
	now      func() time.Time

	mu        sync.Mutex
	total     map[string]uint64
	bursts    map[burstKey]*burst
	lastSweep time.Time
}

type burstKey struct{ reason, route string }

// burst is the current interval of one (reason, route).
type burst struct {
	start      time.Time
	suppressed uint64     // rejections after the first one
	last       netip.Addr // client of the latest suppressed rejection
}

// newRejectLog logs to log (slog.Default() if nil) at Info level.
// interval <= 0 means DefaultRejectLogInterval.
func newRejectLog(log *slog.Logger, interval time.Duration) *rejectLog {
	if log == nil {
		log = slog.Default()
	}
	if interval <= 0 {
		interval = DefaultRejectLogInterval
	}
	return &rejectLog{
		log:      log,
		level:    slog.LevelInfo,
		interval: interval,
		now:      time.Now,
		total:    make(map[string]uint64),
		bursts:   make(map[burstKey]*burst),
	}
}

// logLine is a record to write once the mutex is released: a slow log
// handler must not serialise every rejecting goroutine.
type logLine struct {
	msg   string
	attrs []slog.Attr
}

// reject counts one rejection and logs it if it is the first of its
// (reason, route) in the current interval. route is "" when no route was
// matched; err may be nil.
func (l *rejectLog) reject(reason, route string, client netip.Addr, err error) {
	now := l.now()
	var out []logLine
	l.mu.Lock()
	l.total[reason]++
	out = l.sweepLocked(now, out)
	k := burstKey{reason, route}
	b := l.bursts[k]
	switch {
	case b == nil:
		l.bursts[k] = &burst{start: now}
	case now.Sub(b.start) >= l.interval:
		out = appendSummary(out, k, b, now)
		*b = burst{start: now}
	default:
		b.suppressed++
		b.last = client
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	attrs := []slog.Attr{slog.String("reason", reason), slog.String("route", route), slog.String("client", client.String())}
	if err != nil {
		attrs = append(attrs, slog.String("err", err.Error()))
	}
	out = append(out, logLine{msg: "rejected", attrs: attrs})
	l.write(out)
}

// flush writes the summaries of intervals that are over. Call it
// periodically (run does) so the tail of a burst is reported even when no
// rejection follows.
func (l *rejectLog) flush() {
	now := l.now()
	l.mu.Lock()
	l.lastSweep = time.Time{} // force a sweep
	out := l.sweepLocked(now, nil)
	l.mu.Unlock()
	l.write(out)
}

// run flushes every interval until ctx is done; the Proxy runs it in the
// goroutine that already runs the connection manager, or in one of its own.
func (l *rejectLog) run(ctx context.Context) {
	t := time.NewTicker(l.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			l.flush()
			return
		case <-t.C:
			l.flush()
		}
	}
}

// sweepLocked summarises and forgets every burst whose interval is over,
// at most once per interval, which also bounds the map to the (reason,
// route) pairs seen in the last two intervals. Caller holds mu.
func (l *rejectLog) sweepLocked(now time.Time, out []logLine) []logLine {
	if now.Sub(l.lastSweep) < l.interval {
		return out
	}
	l.lastSweep = now
	for k, b := range l.bursts {
		if now.Sub(b.start) >= l.interval {
			out = appendSummary(out, k, b, now)
			delete(l.bursts, k)
		}
	}
	return out
}

func appendSummary(out []logLine, k burstKey, b *burst, now time.Time) []logLine {
	if b.suppressed == 0 {
		return out
	}
	return append(out, logLine{
		msg: fmt.Sprintf("%d more rejections of reason %s on route %q in the last %v",
			b.suppressed, k.reason, k.route, now.Sub(b.start).Round(time.Millisecond)),
		attrs: []slog.Attr{
			slog.String("reason", k.reason), slog.String("route", k.route),
			slog.Uint64("count", b.suppressed), slog.String("lastClient", b.last.String()),
			slog.Time("since", b.start),
		},
	})
}

func (l *rejectLog) write(lines []logLine) {
	for _, ln := range lines {
		l.log.LogAttrs(context.Background(), l.level, ln.msg, ln.attrs...)
	}
}

// counts returns the rejections so far by reason (a copy).
func (l *rejectLog) counts() map[string]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]uint64, len(l.total))
	for k, v := range l.total {
		out[k] = v
	}
	return out
}

// addTo adds the counts the connection manager does not keep itself (the
// security and HTTP reasons) to a Metrics.Rejected map, so Proxy.Metrics
// can report every rejection without counting a limit twice.
func (l *rejectLog) addTo(rejected map[connection.Reason]uint64) {
	for reason, n := range l.counts() {
		if !managerReasons[connection.Reason(reason)] {
			rejected[connection.Reason(reason)] += n
		}
	}
}

// managerReasons are counted by connection.Manager in Metrics.Rejected.
var managerReasons = map[connection.Reason]bool{
	connection.ReasonGlobalLimit: true, connection.ReasonIPLimit: true,
	connection.ReasonRateLimit: true, connection.ReasonRouteLimit: true,
	connection.ReasonRouteIPLimit: true, connection.ReasonRouteRateLimit: true,
}

// rejectReasonOf names the reason of a rejection error for rejectLog:
// the reason of the Rejection in err's chain (a RejectError, a
// connection.LimitError or a checker's own), else "error".
func rejectReasonOf(err error) string {
	var r Rejection
	if errors.As(err, &r) {
		return r.RejectReason()
	}
	return "error"
}
