package cluster

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Watcher follows the configuration document and hands each new version
// to its apply function, in revision order and one at a time. A version
// that apply refuses is logged and remembered (LastError) and not
// offered again; the instance keeps what it runs, as after a refused
// SIGHUP reload.
//
// Two paths feed it: an etcd watch, which delivers a publish within
// milliseconds, and a probe every Config.ProbeInterval, a linearizable
// read of the document that tells whether etcd answers (Connected) and
// catches any version the watch missed. After an outage the watch
// resumes from the last revision it saw; if etcd compacted those
// revisions meanwhile, the watcher re-reads the document instead.
type Watcher struct {
	c     *Client
	apply func(Document) error

	mu      sync.Mutex // serialises apply and the fields below
	seen    int64      // last revision handed to apply (applied or refused)
	deleted bool       // the document was deleted after seen

	applied   atomic.Int64
	connected atomic.Bool
	lastErr   atomic.Pointer[error]
	refresh   chan struct{}
}

// NewWatcher returns a watcher that calls apply for every version of the
// document newer than applied (the revision the caller already runs, 0
// for none). Run starts it.
func (c *Client) NewWatcher(applied int64, apply func(Document) error) *Watcher {
	w := &Watcher{c: c, apply: apply, seen: applied, refresh: make(chan struct{}, 1)}
	w.applied.Store(applied)
	return w
}

// Revision is the revision of the document last applied: the version of
// the configuration this instance runs.
func (w *Watcher) Revision() int64 { return w.applied.Load() }

// Connected reports whether etcd answered the last probe (or watch). An
// instance that is not connected runs its last good configuration and
// may miss changes: it is not ready in the fleet's sense.
func (w *Watcher) Connected() bool { return w.connected.Load() }

// LastError is the last refused document's or failed probe's error, nil
// once a later probe found etcd answering and the current document
// applied.
func (w *Watcher) LastError() error {
	if p := w.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Refresh asks for a probe now (the CLI does it on SIGHUP).
func (w *Watcher) Refresh() {
	select {
	case w.refresh <- struct{}{}:
	default:
	}
}

// Run follows the document until ctx is done; it returns ctx's error.
func (w *Watcher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { w.probeLoop(ctx) })
	w.watchLoop(ctx)
	wg.Wait()
	return ctx.Err()
}

func (w *Watcher) probeLoop(ctx context.Context) {
	t := time.NewTicker(w.c.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-w.refresh:
		}
		_ = w.sync(ctx)
	}
}

// sync reads the document, applies it if it is newer than what was seen,
// and returns the store's revision at the read (0 when etcd did not
// answer).
func (w *Watcher) sync(ctx context.Context) int64 {
	doc, storeRev, err := w.c.config(ctx)
	if err != nil && !errors.Is(err, ErrNoConfig) {
		if ctx.Err() != nil {
			return 0
		}
		w.setErr(err)
		if w.connected.Swap(false) {
			w.c.log.Warn("etcd unreachable; keeping the current routes and certificates", "revision", w.Revision(), "err", err)
		}
		return 0
	}
	if !w.connected.Swap(true) {
		w.c.log.Info("etcd connected", "key", w.c.ConfigKey(), "storeRevision", storeRev)
	}
	if errors.Is(err, ErrNoConfig) {
		w.gone(storeRev)
	} else if !w.offer(doc) {
		w.lastErr.Store(nil) // reachable and current
	}
	return storeRev
}

// watchLoop keeps an etcd watch on the document, re-establishing it
// after errors, from the revision after the last one seen.
func (w *Watcher) watchLoop(ctx context.Context) {
	next := int64(0)
	for ctx.Err() == nil {
		if next == 0 {
			if rev := w.sync(ctx); rev > 0 {
				next = rev + 1
			} else {
				sleep(ctx, w.c.cfg.ProbeInterval)
				continue
			}
		}
		next = w.watch(ctx, next)
		sleep(ctx, 100*time.Millisecond) // a watch that fails at once must not spin
	}
}

// watch delivers events from revision from until the watch ends, and
// returns the revision to continue from (0: re-read first).
func (w *Watcher) watch(ctx context.Context, from int64) int64 {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range w.c.etcd.Watch(wctx, w.c.ConfigKey(), clientv3.WithRev(from)) {
		if resp.CompactRevision != 0 {
			w.c.log.Info("etcd compacted the revisions this watch needed; re-reading the configuration", "from", from, "compactRevision", resp.CompactRevision)
			return 0
		}
		if err := resp.Err(); err != nil {
			if ctx.Err() == nil {
				w.c.log.Debug("etcd watch ended; resuming", "from", from, "err", err)
			}
			if errors.Is(err, rpctypes.ErrCompacted) {
				return 0
			}
			return from
		}
		for _, ev := range resp.Events {
			if ev.Type == clientv3.EventTypeDelete {
				w.gone(ev.Kv.ModRevision)
			} else {
				w.offer(Document{Revision: ev.Kv.ModRevision, Data: ev.Kv.Value})
			}
		}
		if resp.Header.Revision >= from {
			from = resp.Header.Revision + 1
		}
	}
	return from
}

// offer hands doc to apply if it is newer than what was seen, and
// reports whether it was refused.
func (w *Watcher) offer(doc Document) (refused bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if doc.Revision <= w.seen {
		return w.refusedSeen()
	}
	w.seen, w.deleted = doc.Revision, false
	if err := w.apply(doc); err != nil {
		w.setErr(err)
		w.c.log.Error("configuration refused; keeping the current routes", "revision", doc.Revision, "running", w.Revision(), "err", err)
		return true
	}
	w.applied.Store(doc.Revision)
	w.lastErr.Store(nil)
	w.c.log.Info("configuration applied", "revision", doc.Revision)
	return false
}

// refusedSeen reports whether the version last seen was refused (the
// caller holds mu).
func (w *Watcher) refusedSeen() bool { return w.seen != w.applied.Load() }

// gone notes that the document was deleted: the running routes stay, as
// an empty fleet is never what a deletion by mistake means.
func (w *Watcher) gone(rev int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.deleted || rev <= w.seen && w.seen > 0 {
		return
	}
	w.deleted = true
	if w.seen > 0 {
		w.seen = rev
	}
	w.c.log.Warn("no configuration published; keeping the current routes", "key", w.c.ConfigKey(), "running", w.Revision())
}

func (w *Watcher) setErr(err error) { w.lastErr.Store(&err) }

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
