package smartproxy

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/gosmartproxy/smartproxy/connection"
)

// AccessLogOptions turns on access logs (Options.AccessLog): one
// structured line per finished connection ("access" with type=connection:
// id, client, port, route, domain, target, bytesIn, bytesOut, duration,
// close) and one per HTTP request on the HTTP layer (type=request: id,
// client, route, target, method, host, path, proto, status, bytesOut,
// duration).
//
// Lines go through a bounded queue to one writer goroutine, so a slow log
// handler or a flood of connections never slows the data path: a line
// that finds the queue full is dropped and counted
// (smartproxy_access_log_dropped_total{reason="queue_full"}).
type AccessLogOptions struct {
	// Logger receives the lines at Info level; nil means Options.Logger.
	Logger *slog.Logger
	// SampleEvery logs one line of every N (0 or 1: every line).
	SampleEvery int
	// MaxPerSecond caps the lines written per second; the rest are
	// dropped and counted (reason="rate_limited"). 0: no cap.
	MaxPerSecond int
	// QueueSize is the number of lines that may wait for the writer
	// (default 4096).
	QueueSize int
}

// defaultAccessQueue is AccessLogOptions.QueueSize's default.
const defaultAccessQueue = 4096

// accessLog is the bounded, drop-counting access log writer.
type accessLog struct {
	log    *slog.Logger
	sample uint64
	max    int64
	q      chan accessEntry

	seq                  atomic.Uint64
	win, inWin           atomic.Int64 // current second and lines in it
	written              atomic.Uint64
	droppedFull, limited atomic.Uint64
}

// accessEntry is one line, queued by value (no allocation per line
// beyond what the queue holds).
type accessEntry struct {
	request            bool
	id                 uint64
	client             netip.AddrPort
	port               int
	route, target      string
	domain, closed     string // connections
	method, host, path string // requests
	proto              string
	status             int
	bytesIn, bytesOut  uint64
	took               time.Duration
}

func newAccessLog(o *AccessLogOptions, fallback *slog.Logger) *accessLog {
	if o == nil {
		return nil
	}
	a := &accessLog{log: o.Logger, sample: uint64(max(o.SampleEvery, 1)), max: int64(o.MaxPerSecond)}
	if a.log == nil {
		a.log = fallback
	}
	a.q = make(chan accessEntry, cmpOr(o.QueueSize, defaultAccessQueue))
	return a
}

func cmpOr(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// conn queues a finished connection's line.
func (a *accessLog) conn(info connection.RecordInfo, target string, killed connection.Reason) {
	closed := "closed"
	if killed != "" {
		closed = string(killed)
	}
	a.enqueue(accessEntry{
		id: info.ID, client: info.Client, port: info.LocalPort, route: info.Route, domain: info.Domain,
		target: target, bytesIn: info.BytesIn, bytesOut: info.BytesOut, took: time.Since(info.Start), closed: closed,
	})
}

// enqueue applies sampling and the rate cap, then queues e without ever
// blocking.
func (a *accessLog) enqueue(e accessEntry) {
	if a.sample > 1 && a.seq.Add(1)%a.sample != 0 {
		return
	}
	if a.max > 0 {
		now := time.Now().Unix()
		if w := a.win.Load(); w != now && a.win.CompareAndSwap(w, now) {
			a.inWin.Store(0)
		}
		if a.inWin.Add(1) > a.max {
			a.limited.Add(1)
			return
		}
	}
	select {
	case a.q <- e:
	default:
		a.droppedFull.Add(1)
	}
}

// run writes queued lines until ctx ends, then what is left.
func (a *accessLog) run(ctx context.Context) {
	for {
		select {
		case e := <-a.q:
			a.write(e)
		case <-ctx.Done():
			for {
				select {
				case e := <-a.q:
					a.write(e)
				default:
					return
				}
			}
		}
	}
}

func (a *accessLog) write(e accessEntry) {
	attrs := make([]slog.Attr, 0, 12)
	if e.request {
		attrs = append(attrs, slog.String("type", "request"), slog.Uint64("id", e.id),
			slog.String("client", e.client.String()), slog.String("route", e.route), slog.String("target", e.target),
			slog.String("method", e.method), slog.String("host", e.host), slog.String("path", e.path),
			slog.String("proto", e.proto), slog.Int("status", e.status), slog.Uint64("bytesOut", e.bytesOut),
			slog.Duration("duration", e.took))
	} else {
		attrs = append(attrs, slog.String("type", "connection"), slog.Uint64("id", e.id),
			slog.String("client", e.client.String()), slog.Int("port", e.port), slog.String("route", e.route),
			slog.String("domain", e.domain), slog.String("target", e.target), slog.Uint64("bytesIn", e.bytesIn),
			slog.Uint64("bytesOut", e.bytesOut), slog.Duration("duration", e.took), slog.String("close", e.closed))
	}
	a.log.LogAttrs(context.Background(), slog.LevelInfo, "access", attrs...)
	a.written.Add(1)
}

func (o *AccessLogOptions) validate() error {
	if o == nil {
		return nil
	}
	if o.SampleEvery < 0 || o.MaxPerSecond < 0 || o.QueueSize < 0 {
		return fmt.Errorf("AccessLog: SampleEvery, MaxPerSecond and QueueSize must not be negative, got %d, %d, %d",
			o.SampleEvery, o.MaxPerSecond, o.QueueSize)
	}
	return nil
}
