package acme

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// DefaultStaleLockAfter is how long a FileStorage lock file may go
// without its holder's heartbeat before other processes treat it as
// abandoned and take the lock.
const DefaultStaleLockAfter = 30 * time.Second

// FileStorage is a Storage and Locker on a local directory, which several
// processes on one machine (or on a shared file system with atomic rename
// and O_EXCL create) may share.
//
// Each key is a file under Dir; Store writes a temporary file in the same
// directory, syncs it and renames it over the key, so a reader sees the
// old value or the new one and a crash leaves no torn value. Files are
// created 0600 and directories 0700, whatever the umask allows beyond.
//
// Locks are files under Dir/~locks created with O_EXCL. The holder
// rewrites its lock file's modification time every StaleLockAfter/4; a
// lock file older than StaleLockAfter is abandoned (its holder died) and
// is taken over. So a killed holder blocks the others for at most
// StaleLockAfter plus one poll interval (250 ms), and a live holder keeps
// its lock for as long as it holds it.
type FileStorage struct {
	// Dir is the directory that holds the keys; created on first Store.
	Dir string
	// StaleLockAfter is the abandonment bound of locks; 0 means
	// DefaultStaleLockAfter. Every process sharing Dir must use the same.
	StaleLockAfter time.Duration
}

// NewFileStorage returns a FileStorage on dir.
func NewFileStorage(dir string) *FileStorage { return &FileStorage{Dir: dir} }

var (
	_ Storage = (*FileStorage)(nil)
	_ Locker  = (*FileStorage)(nil)
)

// validKey reports an error unless key is a Storage key (see Storage):
// it is what keeps keys inside Dir.
func validKey(key string) error {
	if key == "" {
		return errors.New("acme: empty storage key")
	}
	for seg := range strings.SplitSeq(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("acme: storage key %q: empty, \".\" or \"..\" segment", key)
		}
		for _, r := range seg {
			if !keyRune(r) {
				return fmt.Errorf("acme: storage key %q: character %q not allowed", key, r)
			}
		}
	}
	return nil
}

func keyRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
		r == '.' || r == '_' || r == '@' || r == '+' || r == '-'
}

func (s *FileStorage) path(key string) string {
	return filepath.Join(s.Dir, filepath.FromSlash(key))
}

// Load returns the value of key, or an error wrapping ErrNotExist.
func (s *FileStorage) Load(ctx context.Context, key string) ([]byte, error) {
	if err := validKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(s.path(key))
	if err != nil {
		return nil, fmt.Errorf("acme: load %s: %w", key, err)
	}
	return b, nil
}

// Store writes value under key atomically (temporary file, fsync,
// rename, fsync of the directory).
func (s *FileStorage) Store(ctx context.Context, key string, value []byte) error {
	if err := validKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p := s.path(key)
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("acme: store %s: %w", key, err)
	}
	// "~" is outside the key alphabet, so List never reports a
	// temporary file and no key can collide with one.
	f, err := os.CreateTemp(dir, ".~tmp-*")
	if err != nil {
		return fmt.Errorf("acme: store %s: %w", key, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("acme: store %s: %w", key, err)
	}
	if _, err := f.Write(value); err != nil {
		return fmt.Errorf("acme: store %s: %w", key, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("acme: store %s: %w", key, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("acme: store %s: %w", key, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("acme: store %s: %w", key, err)
	}
	ok = true
	syncDir(dir)
	return nil
}

// syncDir makes a rename in dir durable; best effort (not every file
// system supports syncing a directory).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// Delete removes key; a missing key is not an error.
func (s *FileStorage) Delete(ctx context.Context, key string) error {
	if err := validKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Remove(s.path(key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("acme: delete %s: %w", key, err)
	}
	return nil
}

// List returns the keys that start with prefix.
func (s *FileStorage) List(ctx context.Context, prefix string) ([]string, error) {
	// Walk only the directory the prefix is certainly inside.
	base := ""
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		base = prefix[:i]
		if err := validKey(base); err != nil {
			return nil, err
		}
	}
	root := s.Dir
	if base != "" {
		root = s.path(base)
	}
	var keys []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if strings.ContainsRune(d.Name(), '~') {
			if d.IsDir() && p != root {
				return filepath.SkipDir // the lock directory
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(s.Dir, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if strings.HasPrefix(key, prefix) && validKey(key) == nil {
			keys = append(keys, key)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("acme: list %q: %w", prefix, err)
	}
	return keys, nil
}

func (s *FileStorage) staleAfter() time.Duration {
	if s.StaleLockAfter > 0 {
		return s.StaleLockAfter
	}
	return DefaultStaleLockAfter
}

func (s *FileStorage) lockPath(name string) string {
	return filepath.Join(s.Dir, "~locks", filepath.FromSlash(name)+".lock")
}

// Lock takes the lock called name (see Locker), polling every 250 ms
// while another holder has it.
func (s *FileStorage) Lock(ctx context.Context, name string) (func() error, error) {
	if err := validKey(name); err != nil {
		return nil, err
	}
	p := s.lockPath(name)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return nil, fmt.Errorf("acme: lock %s: %w", name, err)
	}
	var tok [16]byte
	_, _ = rand.Read(tok[:])
	token := hex.EncodeToString(tok[:])
	for {
		err := s.tryLock(p, token)
		if err == nil {
			return s.hold(p, token), nil
		}
		if !errors.Is(err, ErrLockHeld) {
			return nil, fmt.Errorf("acme: lock %s: %w", name, err)
		}
		t := time.NewTimer(250 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// tryLock creates the lock file, or takes over an abandoned one; it
// returns ErrLockHeld when a live holder has it.
func (s *FileStorage) tryLock(p, token string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		_, werr := f.WriteString(token)
		cerr := f.Close()
		if werr != nil || cerr != nil {
			_ = os.Remove(p)
			return errors.Join(werr, cerr)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrExist) {
		return err
	}
	fi, err := os.Stat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return ErrLockHeld // released just now: try again at once next poll
		}
		return err
	}
	if time.Since(fi.ModTime()) < s.staleAfter() {
		return ErrLockHeld
	}
	// Abandoned. Move it aside under a unique name rather than deleting
	// it, and check that what was moved is the stale file: another
	// waiter may have replaced it with its own fresh lock in between,
	// which is then put back (link fails if yet another appeared).
	aside := p + ".~stale-" + token
	if err := os.Rename(p, aside); err != nil {
		return ErrLockHeld
	}
	if fi2, err := os.Stat(aside); err == nil && time.Since(fi2.ModTime()) < s.staleAfter() {
		_ = os.Link(aside, p)
	}
	_ = os.Remove(aside)
	return ErrLockHeld // the next poll creates it
}

// hold keeps the lock file fresh until the returned unlock is called.
func (s *FileStorage) hold(p, token string) func() error {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(s.staleAfter() / 4)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				now := time.Now()
				_ = os.Chtimes(p, now, now)
			}
		}
	}()
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() {
			close(stop)
			<-done
			// Remove only our own lock: after a takeover (we were too
			// slow) the file belongs to someone else.
			b, rerr := os.ReadFile(p)
			switch {
			case rerr != nil && errors.Is(rerr, fs.ErrNotExist):
			case rerr != nil:
				err = fmt.Errorf("acme: unlock: %w", rerr)
			case string(b) == token:
				if rerr := os.Remove(p); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
					err = fmt.Errorf("acme: unlock: %w", rerr)
				}
			}
		})
		return err
	}
}
