//go:build linux

package evloop

import (
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// An accept that fails for want of file descriptors must not make the loop spin on its
// level-triggered listening socket: the socket leaves the epoll set until the next sweep, and
// the connection waiting in the backlog is served once accepts succeed again.
func TestAcceptShortagePausesListener(t *testing.T) {
	t.Parallel()
	var calls, reported atomic.Int64
	var failUntil atomic.Int64 // monoNow until which accepts fail with EMFILE; 0: not started
	const shortage = 300 * time.Millisecond
	s, err := Start(Config{Listen: loopback, Target: backend(t, echo), Loops: 1,
		HalfCloseTimeout: 400 * time.Millisecond, // a 50 ms tick
		OnAcceptError: func(err error) {
			if errors.Is(err, unix.EMFILE) {
				reported.Add(1)
			}
		},
		accept: func(lfd int) (int, netip.AddrPort, error) {
			calls.Add(1)
			failUntil.CompareAndSwap(0, monoNow()+int64(shortage))
			if monoNow() < failUntil.Load() {
				return -1, netip.AddrPort{}, unix.EMFILE
			}
			return accept4(lfd)
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	c := dial(t, s)
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := c.Read(got); err != nil || string(got) != "ping" {
		t.Fatalf("echo after the shortage: %q, %v", got, err)
	}
	// One failed accept per tick (about 6 in 300 ms) and the ones that succeed; a loop that
	// retried at once would have made thousands.
	if n := calls.Load(); n > 30 {
		t.Fatalf("%d accept calls during a %v shortage: the loop spun on the listening socket", n, shortage)
	}
	if n := reported.Load(); n == 0 || n > calls.Load() {
		t.Fatalf("%d failed accepts reported to OnAcceptError, of %d calls", n, calls.Load())
	}
}
