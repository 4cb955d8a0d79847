//go:build linux

package evloop

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// listenerFD is a dup of a fresh loopback listener's socket (the listener itself closed), as a
// caller hands an inherited listener to Config.ListenFD.
func listenerFD(t *testing.T) (int, *net.TCPAddr) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(loopback))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rc, err := ln.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	if err := rc.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || fd < 0 {
		t.Fatal(err)
	}
	return fd, ln.Addr().(*net.TCPAddr)
}

// Loops sharing one listening socket (SharedListen) serve every connection, each byte counted,
// and after Shutdown the socket is closed: nothing accepts on the port any more.
func TestSharedListener(t *testing.T) {
	t.Parallel()
	fd, addr := listenerFD(t)
	s, err := Start(Config{Listen: addr.AddrPort(), SharedListen: true, ListenFD: fd, Target: backend(t, echo), Loops: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const conns, size = 60, 3000
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTCP("tcp", nil, addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			msg := bytes.Repeat([]byte{byte(i)}, size)
			if _, err := c.Write(msg); err != nil {
				errs <- err
				return
			}
			_ = c.CloseWrite()
			if got, err := io.ReadAll(c); err != nil || !bytes.Equal(got, msg) {
				errs <- fmt.Errorf("conn %d: %d bytes back, want %d (%v)", i, len(got), size, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitIdle(t, s)
	if _, in, out := s.Stats(); in != conns*size || out != conns*size {
		t.Fatalf("moved %d in, %d out; want %d each", in, out, conns*size)
	}
	s.Shutdown()
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("loops still running after Shutdown with no connection")
	}
	if c, err := net.DialTimeout("tcp", addr.String(), time.Second); err == nil {
		c.Close()
		t.Fatal("the shared socket still accepts after Shutdown")
	}
}

// A Start that fails still closes the socket it was given.
func TestSharedListenerClosedOnFailedStart(t *testing.T) {
	t.Parallel()
	fd, addr := listenerFD(t)
	if _, err := Start(Config{SharedListen: true, ListenFD: fd}); err == nil {
		t.Fatal("Start without a target succeeded")
	}
	if c, err := net.DialTimeout("tcp", addr.String(), time.Second); err == nil {
		c.Close()
		t.Fatal("the socket given to a failed Start still accepts")
	}
}
