//go:build linux

package netnstest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// Backend accepts in ns on addr and answers each connection with
// "<port> <client address>\n", then echoes. Seen receives each client.
type Backend struct {
	mu   sync.Mutex
	seen []string
}

// Clients returns the client addresses seen, in order.
func (b *Backend) Clients() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.seen...)
}

// ServeTCP starts a Backend.
func ServeTCP(t testing.TB, ns, addr string) *Backend {
	t.Helper()
	l := Listen(t, ns, "tcp", addr)
	b := &Backend{}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			ra := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap().String()
			b.mu.Lock()
			b.seen = append(b.seen, ra)
			b.mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				fmt.Fprintf(c, "%d %s\n", l.Addr().(*net.TCPAddr).Port, ra)
				_, _ = io.Copy(c, c)
			})
		}
	})
	return b
}

// ServeUDP answers each datagram with "<port> <client address> <data>".
func ServeUDP(t testing.TB, ns, addr string) *Counter {
	t.Helper()
	pc := ListenPacket(t, ns, "udp", addr)
	n := &Counter{}
	done := make(chan struct{})
	t.Cleanup(func() { _ = pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			n.add(int64(k))
			ra := from.(*net.UDPAddr).AddrPort().Addr().Unmap().String()
			_, _ = pc.WriteTo(fmt.Appendf(nil, "%d %s %s", pc.LocalAddr().(*net.UDPAddr).Port, ra, buf[:min(k, 64)]), from)
		}
	}()
	return n
}

// Counter counts bytes received.
type Counter struct {
	mu sync.Mutex
	n  int64
}

func (c *Counter) add(v int64) { c.mu.Lock(); c.n += v; c.mu.Unlock() }

// Get returns the count.
func (c *Counter) Get() int64 { c.mu.Lock(); defer c.mu.Unlock(); return c.n }

// AskTCP connects from the client namespace and returns the backend's
// greeting line, after checking that bytes echo.
func AskTCP(ns, addr string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := Dial(ctx, ns, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return "", err
	}
	if echo, err := r.ReadString('\n'); err != nil || echo != "ping\n" {
		return "", fmt.Errorf("echo %q: %v", echo, err)
	}
	return strings.TrimSpace(line), nil
}

// AskUDP sends one datagram from the client namespace and returns the
// answer.
func AskUDP(ns, addr string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := Dial(ctx, ns, "udp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("hello")); err != nil {
		return "", err
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// IsTimeout reports whether err is a timeout (a dropped packet).
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)
}
