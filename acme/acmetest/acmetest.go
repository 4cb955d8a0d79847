// Package acmetest checks that an acme.Storage or acme.Locker keeps the
// contract written on those interfaces. A store's own tests call
// TestStorage and TestLocker against a real backing store; the checks use
// keys under a random prefix, so a store shared with other data (or with
// other tests) works.
package acmetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy/acme"
)

// unique returns a fresh key segment, so that runs against one store do
// not see each other's keys.
func unique(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return "acmetest-" + hex.EncodeToString(b)
}

// TestStorage checks s against the acme.Storage contract: missing keys,
// overwrite, delete, listing at any depth, binary values, atomic
// concurrent stores, and prompt return on a done context.
func TestStorage(t *testing.T, s acme.Storage) {
	t.Helper()
	ctx := t.Context()
	base := unique(t)

	t.Run("Missing", func(t *testing.T) {
		_, err := s.Load(ctx, base+"/missing/key.crt")
		require.ErrorIs(t, err, acme.ErrNotExist)
		require.NoError(t, s.Delete(ctx, base+"/missing/key.crt"), "deleting a missing key is not an error")
	})

	t.Run("StoreLoadOverwriteDelete", func(t *testing.T) {
		k := base + "/certificates/ca.example/example.com/example.com.crt"
		require.NoError(t, s.Store(ctx, k, []byte("first")))
		got, err := s.Load(ctx, k)
		require.NoError(t, err)
		require.Equal(t, "first", string(got))
		require.NoError(t, s.Store(ctx, k, []byte("second, longer than the first")))
		got, err = s.Load(ctx, k)
		require.NoError(t, err)
		require.Equal(t, "second, longer than the first", string(got))
		require.NoError(t, s.Store(ctx, k, []byte("3")))
		got, err = s.Load(ctx, k)
		require.NoError(t, err)
		require.Equal(t, "3", string(got), "a shorter value must not keep the old tail")
		require.NoError(t, s.Delete(ctx, k))
		_, err = s.Load(ctx, k)
		require.ErrorIs(t, err, acme.ErrNotExist)
	})

	t.Run("BinaryAndEmptyValues", func(t *testing.T) {
		all := make([]byte, 256*1024)
		for i := range all {
			all[i] = byte(i * 7)
		}
		k := base + "/bin/all.key"
		require.NoError(t, s.Store(ctx, k, all))
		got, err := s.Load(ctx, k)
		require.NoError(t, err)
		require.True(t, bytes.Equal(all, got), "256 KiB of every byte value must come back unchanged")
		require.NoError(t, s.Store(ctx, base+"/bin/empty", nil))
		got, err = s.Load(ctx, base+"/bin/empty")
		require.NoError(t, err, "an empty value is stored, not missing")
		require.Empty(t, got)
	})

	t.Run("List", func(t *testing.T) {
		p := base + "/list"
		keys := []string{p + "/a", p + "/b/c", p + "/b/d/e.json", p + "x/other"}
		for _, k := range keys {
			require.NoError(t, s.Store(ctx, k, []byte(k)))
		}
		got, err := s.List(ctx, p+"/")
		require.NoError(t, err)
		require.ElementsMatch(t, keys[:3], got, "every key under the prefix, at any depth")
		got, err = s.List(ctx, p)
		require.NoError(t, err)
		require.ElementsMatch(t, keys, got, "a prefix is a string prefix")
		got, err = s.List(ctx, p+"/b/")
		require.NoError(t, err)
		require.ElementsMatch(t, keys[1:3], got)
		got, err = s.List(ctx, "")
		require.NoError(t, err)
		for _, k := range keys {
			require.Contains(t, got, k, "an empty prefix lists everything")
		}
		got, err = s.List(ctx, base+"/nothing-here/")
		require.NoError(t, err)
		require.Empty(t, got)
		require.NoError(t, s.Delete(ctx, p+"/b/c"))
		got, err = s.List(ctx, p+"/")
		require.NoError(t, err)
		require.ElementsMatch(t, []string{keys[0], keys[2]}, got, "a deleted key is not listed")
	})

	t.Run("ConcurrentStoresAreAtomic", func(t *testing.T) {
		// Writers store whole values of different lengths and bytes while
		// readers load: every load must be one writer's value, entire.
		k := base + "/race/cert.pem"
		values := make([][]byte, 8)
		for i := range values {
			values[i] = bytes.Repeat([]byte{byte('a' + i)}, 1000+i*3000)
		}
		require.NoError(t, s.Store(ctx, k, values[0]))
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for i := range values {
			wg.Go(func() {
				for range 10 {
					if err := s.Store(ctx, k, values[i]); err != nil {
						errs <- err
						return
					}
				}
			})
			wg.Go(func() {
				for range 10 {
					got, err := s.Load(ctx, k)
					if err != nil {
						errs <- err
						return
					}
					if !slices.ContainsFunc(values, func(v []byte) bool { return bytes.Equal(v, got) }) {
						errs <- fmt.Errorf("loaded %d bytes that no writer stored", len(got))
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
	})

	t.Run("DoneContext", func(t *testing.T) {
		done, cancel := context.WithCancel(ctx)
		cancel()
		start := time.Now()
		_, err := s.Load(done, base+"/ctx")
		require.Error(t, err, "Load with a done context")
		require.False(t, errors.Is(err, acme.ErrNotExist), "a done context is not a missing key: the Manager would order a new certificate")
		require.Error(t, s.Store(done, base+"/ctx", []byte("x")), "Store with a done context")
		require.Less(t, time.Since(start), 2*time.Second, "a done context must end the calls promptly")
	})
}

// TestLocker checks the acme.Locker contract. newLocker returns a locker
// on the shared backing store; each call stands for another process (a
// locker of its own, as a second instance would have).
func TestLocker(t *testing.T, newLocker func(t *testing.T) acme.Locker) {
	t.Helper()
	ctx := t.Context()
	name := unique(t)

	t.Run("ExclusiveAcrossLockers", func(t *testing.T) {
		// Holders from three lockers (and two goroutines on one of them)
		// increment a counter non-atomically inside the lock: any overlap
		// shows as two holders at once.
		lockers := []acme.Locker{newLocker(t), newLocker(t), newLocker(t)}
		lockers = append(lockers, lockers[0])
		var holders, maxHolders, rounds int
		var mu sync.Mutex
		var wg sync.WaitGroup
		errs := make(chan error, len(lockers)*5)
		for _, l := range lockers {
			wg.Go(func() {
				for range 5 {
					unlock, err := l.Lock(ctx, name+"/excl")
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					holders++
					maxHolders = max(maxHolders, holders)
					mu.Unlock()
					time.Sleep(2 * time.Millisecond)
					mu.Lock()
					holders--
					rounds++
					mu.Unlock()
					if err := unlock(); err != nil {
						errs <- err
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		require.Equal(t, 1, maxHolders, "two holders of one lock at once")
		require.Equal(t, len(lockers)*5, rounds)
	})

	t.Run("WaitEndsWithContext", func(t *testing.T) {
		a, b := newLocker(t), newLocker(t)
		unlock, err := a.Lock(ctx, name+"/wait")
		require.NoError(t, err)
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err = b.Lock(short, name+"/wait")
		require.ErrorIs(t, err, context.DeadlineExceeded, "a held lock must make Lock wait until ctx ends")
		require.Less(t, time.Since(start), 3*time.Second, "Lock must return promptly once ctx is done")

		// Other names are independent.
		unlockOther, err := b.Lock(ctx, name+"/wait-other")
		require.NoError(t, err)
		require.NoError(t, unlockOther())

		// Released, the lock goes to the next caller; unlock twice is fine.
		require.NoError(t, unlock())
		require.NoError(t, unlock(), "a second unlock does nothing")
		lctx, cancel2 := context.WithTimeout(ctx, 10*time.Second)
		defer cancel2()
		unlockB, err := b.Lock(lctx, name+"/wait")
		require.NoError(t, err, "the released lock must be free (the cancelled wait must not hold it)")
		require.NoError(t, unlockB())
	})

	t.Run("WaiterGetsItOnRelease", func(t *testing.T) {
		a, b := newLocker(t), newLocker(t)
		unlock, err := a.Lock(ctx, name+"/handover")
		require.NoError(t, err)
		got := make(chan error, 1)
		var unlockB func() error
		go func() {
			var err error
			unlockB, err = b.Lock(ctx, name+"/handover")
			got <- err
		}()
		select {
		case err := <-got:
			t.Fatalf("second Lock returned while the first held the lock: %v", err)
		case <-time.After(300 * time.Millisecond):
		}
		require.NoError(t, unlock())
		select {
		case err := <-got:
			require.NoError(t, err)
			require.NoError(t, unlockB())
		case <-time.After(10 * time.Second):
			t.Fatal("the waiter did not get the released lock")
		}
	})
}
