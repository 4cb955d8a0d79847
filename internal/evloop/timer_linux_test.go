package evloop

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// TestWakeAfterEndWritesNothing: once a loop has ended, its eventfd is closed and the number
// may belong to another socket of the process; a later wake (Close after Shutdown, a
// Conn.Close from another goroutine) must not write its 8 bytes there. Not parallel: the
// freed numbers must go to this test's sockets (the kernel hands out the lowest free one).
func TestWakeAfterEndWritesNothing(t *testing.T) {
	s, err := Start(Config{Listen: loopback, Target: backend(t, echo), Loops: 1})
	if err != nil {
		t.Fatal(err)
	}
	l := s.loops[0]
	wakefd := l.wakefd
	s.Shutdown()
	<-s.Done() // no connections: the loop ended and closed its descriptors
	var took [2]int
	reused := false
	for i := 0; i < 16 && !reused; i++ {
		p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Close(p[0]); _ = unix.Close(p[1]) })
		if p[0] == wakefd || p[1] == wakefd {
			took, reused = p, true
		}
	}
	if !reused {
		t.Skipf("the eventfd's number %d went elsewhere: nothing to observe", wakefd)
	}
	l.wake()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var b [16]byte
	for _, fd := range took {
		n, err := unix.Read(fd, b[:])
		if !errors.Is(err, unix.EAGAIN) {
			t.Fatalf("fd %d (the old eventfd's number, or its peer) read %d bytes (%v): a wake wrote to it", fd, n, err)
		}
	}
}
