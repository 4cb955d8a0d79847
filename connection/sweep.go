package connection

import (
	"context"
	"time"
)

// Run runs the timeout sweeper, the per-second throughput sampler and the
// per-IP state pruning until ctx is done. Call it once per manager, usually
// in its own goroutine; it returns when ctx is done.
//
// The sweep interval is min(timeout/4, 1s), at least 10ms, where timeout is
// the shortest enabled of the effective inactivity timeout and MaxLifetime.
// Closers are called synchronously from the sweeper, so they should not block.
func (m *Manager) Run(ctx context.Context) {
	sweepT := time.NewTicker(m.cfg.sweepPeriod)
	defer sweepT.Stop()
	sampleT := time.NewTicker(time.Second)
	defer sampleT.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sweepT.C:
			m.sweep()
			m.prune()
			m.sweeps.Add(1)
		case <-sampleT.C:
			m.sample()
		}
	}
}

// sweep kills records past their lifetime or inactivity timeout. The
// lifetime check comes first so a connection that is both idle and too old
// is reported as a lifetime close (the harder limit).
func (m *Manager) sweep() {
	inact, life := int64(m.cfg.inactivity), int64(m.cfg.lifetime)
	if inact <= 0 && life <= 0 {
		return
	}
	m.killAll(func(r *Record, now int64) (reasonIndex, bool) {
		switch {
		case life > 0 && now-r.startOff >= life:
			return idxLifetime, true
		case inact > 0 && now-r.lastActivity.Load() >= inact:
			return idxInactivity, true
		}
		return 0, false
	})
}

// prune drops per-IP entries that have no open connection and whose rate
// window holds nothing any more. An attempt at t still weighs on the estimate
// until the fixed window after t's has passed, i.e. at most 2 windows later.
func (m *Manager) prune() {
	now := m.offset()
	m.ips.Prune(now, 2*int64(rateWindow))
	m.rips.Prune(now, 2*int64(rateWindow))
}

type victim struct {
	r      *Record
	reason reasonIndex
}

// killAll calls the closer of every open record selected by pick and counts
// the reason. Victims are collected under the shard locks but killed after
// releasing them, because a closer may well call Manager.Close.
func (m *Manager) killAll(pick func(r *Record, now int64) (reasonIndex, bool)) {
	now := m.offset()
	var victims []victim
	m.ips.forEachRecord(func(r *Record) {
		if r.killed.Load() || r.closed.Load() {
			return
		}
		if reason, ok := pick(r, now); ok {
			victims = append(victims, victim{r, reason})
		}
	})
	for _, v := range victims {
		if v.r.kill(v.reason) {
			m.counts[v.reason].Add(1)
		}
	}
}
