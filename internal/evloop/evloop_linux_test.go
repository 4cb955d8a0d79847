//go:build linux

package evloop

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"
)

var loopback = netip.MustParseAddrPort("127.0.0.1:0")

// backend runs handle for every connection accepted on a loopback listener until the test
// ends.
func backend(t *testing.T, handle func(*net.TCPConn)) netip.AddrPort {
	t.Helper()
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(loopback))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// echo copies everything back and half-closes after the client's EOF.
func echo(c *net.TCPConn) {
	_, _ = io.Copy(c, c)
	_ = c.CloseWrite()
}

// deadAddr is a loopback address where nothing listens (a port just closed).
func deadAddr(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(loopback))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

func start(t *testing.T, target netip.AddrPort, loops int) *Server {
	t.Helper()
	s, err := Start(Config{Listen: loopback, Target: target, Loops: loops})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func dial(t *testing.T, s *Server) *net.TCPConn {
	t.Helper()
	c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(s.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return c
}

// waitIdle waits until the server has no connection open.
func waitIdle(t *testing.T, s *Server) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		active, _, _ := s.Stats()
		if active == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open", active)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Many short connections through several loops: every byte comes back, the byte counts are
// exact, and every connection is closed once both sides ended.
func TestEchoManyConnections(t *testing.T) {
	t.Parallel()
	s := start(t, backend(t, echo), 2)
	const conns, size = 200, 1000
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(s.Addr()))
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
			got, err := io.ReadAll(c)
			if err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(got, msg) {
				errs <- fmt.Errorf("conn %d: got %d bytes back, want %d", i, len(got), size)
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
		t.Fatalf("counted in %d out %d, want %d each", in, out, conns*size)
	}
}

// A half-closed client still gets the backend's whole answer, which the backend only sends
// after it saw the client's EOF; the backend's EOF then ends the connection.
func TestHalfClose(t *testing.T) {
	t.Parallel()
	answer := bytes.Repeat([]byte("answer"), 50000) // 300 KB: more than a socket buffer
	s := start(t, backend(t, func(c *net.TCPConn) {
		req, err := io.ReadAll(c)
		if err != nil || string(req) != "request" {
			return
		}
		_, _ = c.Write(answer)
	}), 1)
	c := dial(t, s)
	defer c.Close()
	if _, err := c.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, answer) {
		t.Fatalf("got %d bytes, want %d", len(got), len(answer))
	}
	waitIdle(t, s)
}

// A bulk echo larger than the socket buffers runs through back-pressure (pending bytes,
// reads paused and resumed) without losing or reordering a byte.
func TestBulkEchoBackPressure(t *testing.T) {
	t.Parallel()
	s := start(t, backend(t, echo), 1)
	c := dial(t, s)
	defer c.Close()
	want := make([]byte, 8<<20)
	for i := range want {
		want[i] = byte(i*7 + i/4099) // no period that a lost chunk could realign with
	}
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("echo differs: got %d bytes, want %d", len(got), len(want))
	}
	waitIdle(t, s)
}

// A backend that refuses the connection closes the client's; nothing stays open.
func TestBackendRefused(t *testing.T) {
	t.Parallel()
	s := start(t, deadAddr(t), 1)
	c := dial(t, s)
	defer c.Close()
	_, _ = c.Write([]byte("x"))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read succeeded through a refused backend")
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("client left open after the backend refused:", err)
	}
	waitIdle(t, s)
}

// Close ends connections that are still open and returns once the loops have ended (goleak
// in TestMain checks that nothing is left).
func TestCloseWithOpenConnections(t *testing.T) {
	t.Parallel()
	s, err := Start(Config{Listen: loopback, Target: backend(t, echo), Loops: 2})
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, s)
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after Close")
	}
}
