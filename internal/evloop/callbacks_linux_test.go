//go:build linux

package evloop

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// ended collects OnClose reports.
type ended struct {
	mu      sync.Mutex
	in, out int64
	errs    []error
	ch      chan struct{}
}

func newEnded() *ended { return &ended{ch: make(chan struct{}, 100)} }

func (e *ended) onClose(_ *Conn, in, out int64, err error) {
	e.mu.Lock()
	e.in += in
	e.out += out
	e.errs = append(e.errs, err)
	e.mu.Unlock()
	e.ch <- struct{}{}
}

func (e *ended) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-e.ch:
	case <-time.After(10 * time.Second):
		t.Fatal("no OnClose")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.errs[len(e.errs)-1]
}

func startCfg(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.Listen = loopback
	s, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// OnOpen sees the client's address and can refuse; OnData and OnClose count exactly what
// was written each way, and a clean end reports no error.
func TestCallbacks(t *testing.T) {
	t.Parallel()
	e := newEnded()
	var mu sync.Mutex
	var data [2]int64
	var peers []netip.AddrPort
	refuse := true
	target := backend(t, echo)
	s := startCfg(t, Config{Loops: 1,
		OnOpen: func(c *Conn) Decision {
			mu.Lock()
			defer mu.Unlock()
			peers = append(peers, c.Peer())
			if refuse {
				refuse = false
				return Decision{}
			}
			return Decision{Target: target}
		},
		OnData: func(_ *Conn, c2b bool, n int) {
			mu.Lock()
			defer mu.Unlock()
			if c2b {
				data[0] += int64(n)
			} else {
				data[1] += int64(n)
			}
		},
		OnClose: e.onClose,
	})
	refused := dial(t, s)
	defer refused.Close()
	if _, err := refused.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection OnOpen refused got data")
	}
	c := dial(t, s)
	defer c.Close()
	if _, err := c.Write([]byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	if got, err := io.ReadAll(c); err != nil || string(got) != "0123456789" {
		t.Fatalf("echo %q, %v", got, err)
	}
	if err := e.wait(t); err != nil {
		t.Fatalf("clean end reported %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if e.in != 10 || e.out != 10 || data != [2]int64{10, 10} {
		t.Fatalf("OnClose counted %d/%d, OnData %v; want 10 each way", e.in, e.out, data)
	}
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	if len(peers) != 2 || peers[1] != local {
		t.Fatalf("OnOpen saw peers %v, want the second to be %v", peers, local)
	}
}

// Conn.Close from another goroutine closes both sides and reports ErrClosed.
func TestConnCloseFromAnotherGoroutine(t *testing.T) {
	t.Parallel()
	e := newEnded()
	opened := make(chan *Conn, 1)
	target := backend(t, echo)
	s := startCfg(t, Config{Loops: 1, OnClose: e.onClose,
		OnOpen: func(c *Conn) Decision { opened <- c; return Decision{Target: target} }})
	c := dial(t, s)
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	(<-opened).Close()
	if err := e.wait(t); !errors.Is(err, ErrClosed) {
		t.Fatalf("OnClose reported %v, want ErrClosed", err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("client still open after Conn.Close")
	}
}

// A half-closed connection whose remaining direction stays idle is cut after the
// half-close timeout, and one that keeps moving is not.
func TestHalfCloseTimeout(t *testing.T) {
	t.Parallel()
	e := newEnded()
	// The backend answers slowly after the client's EOF: a byte every 50 ms for 400 ms
	// (active, 8 × the gap: must not be cut by a 500 ms timeout, which the gaps never reach
	// even on a loaded machine), then nothing (idle: must be cut).
	s := startCfg(t, Config{Target: backend(t, func(c *net.TCPConn) {
		_, _ = io.ReadAll(c)
		for range 8 {
			if _, err := c.Write([]byte("b")); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		// Stay open, idle: reading would see the EOF passed on and end the handler.
		time.Sleep(2 * time.Second)
	}), Loops: 1, HalfCloseTimeout: 500 * time.Millisecond, OnClose: e.onClose})
	c := dial(t, s)
	defer c.Close()
	start := time.Now()
	_ = c.CloseWrite()
	got, _ := io.ReadAll(c)
	if len(got) != 8 {
		t.Fatalf("got %d bytes of the slow answer, want all 8 (an active half-closed stream was cut)", len(got))
	}
	if err := e.wait(t); !errors.Is(err, ErrHalfCloseTimeout) {
		t.Fatalf("OnClose reported %v, want ErrHalfCloseTimeout", err)
	}
	if d := time.Since(start); d < 750*time.Millisecond {
		t.Fatalf("cut after %v, before the idle period could pass", d)
	}
}

// A client that stops reading is cut after the write timeout once its socket buffers are
// full; the loop keeps serving others meanwhile.
func TestWriteTimeout(t *testing.T) {
	t.Parallel()
	e := newEnded()
	s := startCfg(t, Config{Target: backend(t, func(c *net.TCPConn) {
		buf := make([]byte, 64<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}), Loops: 1, WriteTimeout: 200 * time.Millisecond, OnClose: e.onClose})
	stalled := dial(t, s)
	defer stalled.Close()
	if err := stalled.SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	if err := e.wait(t); !errors.Is(err, ErrWriteTimeout) {
		t.Fatalf("OnClose reported %v, want ErrWriteTimeout", err)
	}
	_, _, out := s.Stats()
	if out == 0 {
		t.Fatal("nothing was written before the stall")
	}
}
