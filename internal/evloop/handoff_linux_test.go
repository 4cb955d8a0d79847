//go:build linux

package evloop

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"
)

// A handed-off connection leaves the loop: OnHandOff gets a working socket and the client
// talks to whoever serves it there.
func TestHandOff(t *testing.T) {
	t.Parallel()
	served := make(chan error, 1)
	s := startCfg(t, Config{Loops: 1,
		OnOpen: func(*Conn) Decision { return Decision{HandOff: true} },
		OnHandOff: func(fd int, peer netip.AddrPort, _ []byte) {
			f := os.NewFile(uintptr(fd), "handed-off")
			c, err := net.FileConn(f)
			_ = f.Close()
			if err != nil {
				served <- err
				return
			}
			go func() {
				defer c.Close()
				if got := c.RemoteAddr().(*net.TCPAddr).AddrPort(); got != peer {
					served <- errors.New("peer address differs from the socket's")
					return
				}
				_, err := c.Write([]byte("served elsewhere"))
				served <- err
			}()
		}})
	c := dial(t, s)
	defer c.Close()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "served elsewhere" {
		t.Fatalf("got %q, %v", got, err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if active, _, _ := s.Stats(); active != 0 {
		t.Fatalf("%d connections counted for a handed-off socket", active)
	}
}

// A refused connect goes to OnDialError, whose next target is dialed; the reason reaches it.
func TestDialRetry(t *testing.T) {
	t.Parallel()
	dead := deadAddr(t)
	good := backend(t, echo)
	dialErrs := make(chan error, 4)
	s := startCfg(t, Config{Loops: 1,
		OnOpen: func(*Conn) Decision { return Decision{Target: dead} },
		OnDialError: func(c *Conn, err error) (netip.AddrPort, bool) {
			dialErrs <- err
			return good, c.Target() == dead
		}})
	c := dial(t, s)
	defer c.Close()
	if _, err := c.Write([]byte("again")); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	if got, err := io.ReadAll(c); err != nil || string(got) != "again" {
		t.Fatalf("echo through the second target: %q, %v", got, err)
	}
	if err := <-dialErrs; !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("OnDialError got %v, want ECONNREFUSED", err)
	}
}

// Shutdown stops accepting, lets an open connection finish, and Done closes after it.
func TestShutdown(t *testing.T) {
	t.Parallel()
	s := startCfg(t, Config{Target: backend(t, echo), Loops: 2})
	c := dial(t, s)
	defer c.Close()
	if _, err := c.Write([]byte("1")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	s.Shutdown()
	deadline := time.Now().Add(5 * time.Second)
	for {
		nc, err := net.DialTimeout("tcp", s.Addr().String(), time.Second)
		if err != nil {
			break // no longer accepting
		}
		nc.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting after Shutdown")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := c.Write([]byte("2")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal("open connection cut by Shutdown:", err)
	}
	select {
	case <-s.Done():
		t.Fatal("Done before the open connection ended")
	default:
	}
	_ = c.CloseWrite()
	_, _ = io.ReadAll(c)
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the last connection ended")
	}
}

// A Conn.Close that arrives for a connection OnOpen refused (a connection manager's kill
// racing the refusal) does nothing: the refused socket's fd number, which the next accept may
// reuse, is not closed again, and the counts stay right.
func TestCloseAfterRefusal(t *testing.T) {
	t.Parallel()
	target := backend(t, echo)
	first := true
	s := startCfg(t, Config{Loops: 1, OnOpen: func(c *Conn) Decision {
		if first {
			first = false
			c.Close()
			return Decision{}
		}
		return Decision{Target: target}
	}})
	refused := dial(t, s)
	defer refused.Close()
	_, _ = refused.Read(make([]byte, 1))
	c := dial(t, s)
	defer c.Close()
	for i := range 3 {
		if _, err := c.Write([]byte{byte('a' + i)}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal("second connection broken after the late close:", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if active, _, _ := s.Stats(); active != 1 {
		t.Fatalf("active = %d, want 1", active)
	}
}
