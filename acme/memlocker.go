package acme

import (
	"context"
	"sync"
)

// processLocks is the Locker of a Storage that has none: it excludes
// the Managers of this process (lock names carry the directory and the
// name), not other processes.
var processLocks = &memLocker{}

// memLocker is a Locker within one process.
type memLocker struct {
	mu    sync.Mutex
	locks map[string]chan struct{}
}

func (l *memLocker) Lock(ctx context.Context, name string) (func() error, error) {
	for {
		l.mu.Lock()
		if l.locks == nil {
			l.locks = map[string]chan struct{}{}
		}
		held, ok := l.locks[name]
		if !ok {
			ch := make(chan struct{})
			l.locks[name] = ch
			l.mu.Unlock()
			var once sync.Once
			return func() error {
				once.Do(func() {
					l.mu.Lock()
					delete(l.locks, name)
					l.mu.Unlock()
					close(ch)
				})
				return nil
			}, nil
		}
		l.mu.Unlock()
		select {
		case <-held:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
