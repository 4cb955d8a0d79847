package acme

import (
	"context"
	"errors"
	"io/fs"
)

// ErrNotExist is returned by Storage.Load for a key that is not stored.
// It is fs.ErrNotExist, so errors.Is(err, fs.ErrNotExist) works too.
var ErrNotExist = fs.ErrNotExist

// ErrLockHeld may be returned by Locker.TryLock when another holder has
// the lock.
var ErrLockHeld = errors.New("acme: lock held by another holder")

// Storage keeps what the Manager must not lose: account keys,
// certificates, their private keys and metadata. Keys are slash-separated
// paths of non-empty segments made of [A-Za-z0-9._@+-] (never "." or
// ".."), for example "certificates/acme-v02.api.letsencrypt.org/example.com/example.com.crt".
//
// Contract, which every implementation must keep (the Manager's
// correctness across restarts and across processes rests on it):
//
//   - Safe for concurrent use by several goroutines, and by several
//     processes or machines sharing the same backing store.
//   - Store is atomic per key: a concurrent or later Load sees the old
//     value or the new one, never a mix or a truncation, also when the
//     process dies in the middle of Store.
//   - Load of a key that was never stored (or was deleted) returns an
//     error for which errors.Is(err, ErrNotExist) holds; any other error
//     means the store could not answer, and the Manager retries rather
//     than ordering a new certificate.
//   - Store, once it returns nil, is durable: a Load from any process
//     sharing the store returns the value (read-your-writes).
//   - Delete of a missing key returns nil.
//   - List returns every stored key that starts with prefix, at any
//     depth, in no particular order; an empty prefix lists everything.
//   - Values may hold private keys: implementations must not make them
//     readable to others (the file store writes 0600 files in 0700
//     directories).
//   - Every method returns promptly once ctx is done.
type Storage interface {
	Load(ctx context.Context, key string) ([]byte, error)
	Store(ctx context.Context, key string, value []byte) error
	Delete(ctx context.Context, key string) error
	List(ctx context.Context, prefix string) ([]string, error)
}

// Locker coordinates the processes sharing a Storage so that each
// certificate is ordered by one of them at a time; the others wait and
// then load what it stored.
//
// Contract:
//
//   - Lock blocks until the caller holds the lock called name or ctx is
//     done (then it returns ctx's error and holds nothing). Names use the
//     same alphabet as Storage keys.
//   - At most one holder at a time per name, across every process that
//     shares the locker; within one process, two Lock calls for one name
//     exclude each other too.
//   - The returned unlock releases the lock; it is safe to call more than
//     once (later calls do nothing) and returns an error only when the
//     release could not be confirmed, in which case the lock still
//     expires as below.
//   - A holder that dies (process killed, machine lost) loses the lock
//     after a bounded time, documented by the implementation (a lease in
//     a distributed store, a stale-lock timeout for files), so the
//     others are never blocked forever. A live holder keeps its lock for
//     as long as it holds it, however long the order takes.
//   - After Lock returns, the caller must re-read Storage before acting:
//     the previous holder may have finished the work.
type Locker interface {
	Lock(ctx context.Context, name string) (unlock func() error, err error)
}
