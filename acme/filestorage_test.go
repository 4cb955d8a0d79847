package acme_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/acme"
)

func TestFileStorageContract(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "store")
	s := acme.NewFileStorage(dir)
	ctx := context.Background()

	if _, err := s.Load(ctx, "certificates/x/a.pem"); !errors.Is(err, acme.ErrNotExist) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load missing: %v, want ErrNotExist", err)
	}
	if err := s.Delete(ctx, "certificates/x/missing"); err != nil {
		t.Fatalf("Delete missing: %v", err)
	}
	keys := []string{"certificates/dir/a.example/a.example.pem", "certificates/dir/b.example/b.example.pem", "accounts/dir/ops@example.com/account.key", "top"}
	for _, k := range keys {
		if err := s.Store(ctx, k, []byte("value of "+k)); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range keys {
		b, err := s.Load(ctx, k)
		if err != nil || string(b) != "value of "+k {
			t.Fatalf("Load %s: %q %v", k, b, err)
		}
		fi, err := os.Stat(filepath.Join(dir, filepath.FromSlash(k)))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v %v, want 0600", k, fi.Mode(), err)
		}
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			if fi, _ := d.Info(); fi.Mode().Perm() != 0o700 {
				t.Errorf("dir %s: mode %v, want 0700", p, fi.Mode().Perm())
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for prefix, want := range map[string][]string{
		"":                      keys,
		"certificates/":         keys[:2],
		"certificates/dir/a":    keys[:1],
		"accounts/dir/ops@":     keys[2:3],
		"nothing/here/":         nil,
		"certificates/dir/b.ex": keys[1:2],
	} {
		got, err := s.List(ctx, prefix)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		w := slices.Clone(want)
		slices.Sort(w)
		if !slices.Equal(got, w) {
			t.Errorf("List(%q) = %v, want %v", prefix, got, w)
		}
	}
	if err := s.Delete(ctx, keys[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx, keys[0]); !errors.Is(err, acme.ErrNotExist) {
		t.Fatalf("Load after Delete: %v", err)
	}

	// Keys that could leave the directory, or are not keys, are refused.
	for _, bad := range []string{"", "../x", "a/../../x", "/etc/passwd", "a//b", "a/./b", "a/b/", "a\\b", "a b", "~locks/x", "a/.~tmp-1", "é"} {
		if err := s.Store(ctx, bad, []byte("x")); err == nil {
			t.Errorf("Store(%q) accepted", bad)
		}
		if _, err := s.Load(ctx, bad); err == nil || errors.Is(err, acme.ErrNotExist) {
			t.Errorf("Load(%q): %v, want a key error", bad, err)
		}
		if err := s.Delete(ctx, bad); err == nil {
			t.Errorf("Delete(%q) accepted", bad)
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "x")); err == nil {
		t.Fatal("a key escaped the directory")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Store(cctx, "k", nil); err == nil {
		t.Fatal("Store with a done context succeeded")
	}
}

// TestFileStorageAtomic: readers racing a writer that alternates two
// large values only ever see one of them whole, and no temporary file
// is left or listed.
func TestFileStorageAtomic(t *testing.T) {
	t.Parallel()
	s := acme.NewFileStorage(t.TempDir())
	ctx := context.Background()
	a, b := bytes.Repeat([]byte("a"), 256<<10), bytes.Repeat([]byte("b"), 128<<10)
	if err := s.Store(ctx, "k", a); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var bad atomic.Int32
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				v, err := s.Load(ctx, "k")
				if err != nil || !(bytes.Equal(v, a) || bytes.Equal(v, b)) {
					bad.Add(1)
				}
			}
		}()
	}
	for i := range 30 {
		v := a
		if i%2 == 0 {
			v = b
		}
		if err := s.Store(ctx, "k", v); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if n := bad.Load(); n > 0 {
		t.Fatalf("%d loads saw a torn or missing value", n)
	}
	ents, _ := os.ReadDir(s.Dir)
	if len(ents) != 1 {
		t.Fatalf("directory holds %d entries, want only the key", len(ents))
	}
}

// TestFileStorageLock: the lock excludes within a process and across
// FileStorage values on one directory (as processes would), release is
// idempotent, a waiter gives up with its context, and a lock file whose
// holder died is taken over after StaleLockAfter, not before.
func TestFileStorageLock(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	stale := 600 * time.Millisecond
	s1 := &acme.FileStorage{Dir: dir, StaleLockAfter: stale}
	s2 := &acme.FileStorage{Dir: dir, StaleLockAfter: stale}
	ctx := context.Background()

	unlock, err := s1.Lock(ctx, "certificates/d/example.com")
	if err != nil {
		t.Fatal(err)
	}
	// Held well past StaleLockAfter: the heartbeat keeps it.
	wctx, cancel := context.WithTimeout(ctx, 3*stale)
	_, err = s2.Lock(wctx, "certificates/d/example.com")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Lock while held: %v, want its context's error", err)
	}
	var got atomic.Bool
	done := make(chan error)
	go func() {
		u, err := s2.Lock(ctx, "certificates/d/example.com")
		got.Store(true)
		if err == nil {
			err = u()
		}
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	if got.Load() {
		t.Fatal("lock taken while held")
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	if err := unlock(); err != nil {
		t.Fatalf("second unlock: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Mutual exclusion under contention: a counter that two holders at
	// once would see above 1.
	var inside, maxInside atomic.Int32
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := s1
			if i%2 == 1 {
				s = s2
			}
			u, err := s.Lock(ctx, "shared")
			if err != nil {
				t.Error(err)
				return
			}
			if n := inside.Add(1); n > maxInside.Load() {
				maxInside.Store(n)
			}
			time.Sleep(20 * time.Millisecond)
			inside.Add(-1)
			_ = u()
		}()
	}
	wg.Wait()
	if maxInside.Load() != 1 {
		t.Fatalf("%d holders at once", maxInside.Load())
	}

	// A dead holder: its lock file stays and is no longer refreshed.
	lockFile := filepath.Join(dir, "~locks", "dead.lock")
	if err := os.WriteFile(lockFile, []byte("dead holder"), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	u, err := s2.Lock(ctx, "dead")
	if err != nil {
		t.Fatal(err)
	}
	waited := time.Since(start)
	_ = u()
	if waited < stale-100*time.Millisecond || waited > stale+2*time.Second {
		t.Fatalf("took over a dead lock after %v, want about StaleLockAfter %v", waited, stale)
	}
	if keys, _ := s1.List(ctx, ""); len(keys) != 0 {
		t.Fatalf("List shows lock files: %v", keys)
	}
	if _, err := s1.Lock(ctx, "../escape"); err == nil || !strings.Contains(err.Error(), "..") {
		t.Fatalf("Lock(../escape): %v", err)
	}
}
