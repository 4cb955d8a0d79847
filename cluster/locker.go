package cluster

import (
	"context"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/gosmartproxy/smartproxy/acme"
)

// Locker is an acme.Locker on etcd: each Lock takes an etcd
// concurrency.Mutex under <prefix>/locks/<name> in a session of its own,
// a lease of Config.LockTTL that the holder keeps renewing while it
// holds the lock, however long that is.
//
// A holder that dies (process killed, machine lost, cut from etcd) stops
// renewing, and etcd deletes its lock key when the lease runs out: the
// next waiter gets the lock at most LockTTL after the last renewal
// (renewals run every third of the TTL), plus an etcd leader election
// if the leader changes meanwhile (etcd then restarts the lease's
// countdown). A live holder cut from etcd for longer than LockTTL loses
// the lock the same way; it logs so, and the Manager's re-check of the
// store after locking keeps two orders of one certificate harmless.
//
// Waiters are served in the order they asked (etcd's mutex is a queue).
// Two Lock calls of one process exclude each other like two processes:
// each has its own session.
type Locker struct{ c *Client }

var _ acme.Locker = (*Locker)(nil)

// Locker returns the fleet's ACME order lock.
func (c *Client) Locker() *Locker { return &Locker{c: c} }

// Lock blocks until the caller holds the lock called name or ctx is
// done.
func (l *Locker) Lock(ctx context.Context, name string) (func() error, error) {
	if err := checkName("lock name", name); err != nil {
		return nil, err
	}
	c := l.c
	ttl := int64((c.cfg.LockTTL + 999_999_999) / 1_000_000_000) // whole seconds, rounded up
	gctx, cancel := c.opContext(ctx)
	lease, err := c.etcd.Grant(gctx, ttl)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("cluster: lock %s: lease: %w", name, err)
	}
	// The session outlives ctx (which only bounds the wait): it is
	// ended by unlock.
	s, err := concurrency.NewSession(c.etcd, concurrency.WithLease(lease.ID), concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		_ = l.revoke(lease.ID, c.cfg.OpTimeout)
		return nil, fmt.Errorf("cluster: lock %s: session: %w", name, err)
	}
	m := concurrency.NewMutex(s, c.prefix+"/locks/"+name)
	if err := m.Lock(ctx); err != nil {
		// Revoking the lease removes the queued key; bounded, since ctx
		// is done: a lease not revoked expires by itself.
		s.Orphan()
		l.revoke(lease.ID, time.Second)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("cluster: lock %s: %w", name, err)
	}
	released := make(chan struct{})
	go func() {
		select {
		case <-s.Done():
			select {
			case <-released:
			default:
				c.log.Warn("etcd lease of a held lock ended (etcd unreachable for longer than the lock TTL); another instance may take it", "lock", name, "ttl", c.cfg.LockTTL)
			}
		case <-released:
		}
	}()
	var once sync.Once
	var uerr error
	unlock := func() error {
		once.Do(func() {
			close(released)
			// Revoking the lease deletes the lock key with it: one
			// round trip, bounded by the operation timeout.
			s.Orphan()
			if err := l.revoke(lease.ID, c.cfg.OpTimeout); err != nil {
				uerr = fmt.Errorf("cluster: unlock %s (the lock still expires within %v): %w", name, c.cfg.LockTTL, err)
			}
		})
		return uerr
	}
	return unlock, nil
}

// revoke ends a lease within timeout.
func (l *Locker) revoke(id clientv3.LeaseID, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := l.c.etcd.Revoke(ctx, id)
	return err
}
