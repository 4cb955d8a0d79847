//go:build linux

package evloop

import (
	"bytes"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"
)

// A sniffing connection is routed on its first line, which may arrive in pieces; the bytes
// read for the decision reach the chosen backend first and exactly once.
func TestSniffRoutesOnFirstBytes(t *testing.T) {
	t.Parallel()
	a, b := backend(t, echo), backend(t, echo)
	var calls atomic.Int32
	s := startCfg(t, Config{Loops: 1,
		OnOpen: func(*Conn) Decision { return Decision{Sniff: true} },
		OnHello: func(_ *Conn, data []byte) Decision {
			calls.Add(1)
			line, _, ok := bytes.Cut(data, []byte("\n"))
			switch {
			case !ok:
				return Decision{Sniff: true}
			case string(line) == "to-a":
				return Decision{Target: a}
			case string(line) == "to-b":
				return Decision{Target: b}
			}
			return Decision{}
		}})
	c := dial(t, s)
	defer c.Close()
	for _, part := range []string{"to", "-b", "\nrest"} {
		if _, err := c.Write([]byte(part)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // separate reads
	}
	_ = c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "to-b\nrest" {
		t.Fatalf("echo %q, %v; want the sniffed bytes once, then the rest", got, err)
	}
	if n := calls.Load(); n < 2 {
		t.Fatalf("OnHello called %d times for a line sent in pieces", n)
	}
}

// A client that sends nothing usable in time is closed with ErrSniffTimeout; one OnHello
// refuses is closed with ErrRefused.
func TestSniffTimeoutAndRefusal(t *testing.T) {
	t.Parallel()
	e := newEnded()
	s := startCfg(t, Config{Loops: 1, SniffTimeout: 150 * time.Millisecond, OnClose: e.onClose,
		OnOpen: func(*Conn) Decision { return Decision{Sniff: true} },
		OnHello: func(_ *Conn, data []byte) Decision {
			if data[0] == 'x' {
				return Decision{}
			}
			return Decision{Sniff: true}
		}})
	silent := dial(t, s)
	defer silent.Close()
	if err := e.wait(t); !errors.Is(err, ErrSniffTimeout) {
		t.Fatalf("silent client: %v, want ErrSniffTimeout", err)
	}
	refused := dial(t, s)
	defer refused.Close()
	if _, err := refused.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := e.wait(t); !errors.Is(err, ErrRefused) {
		t.Fatalf("refused client: %v, want ErrRefused", err)
	}
	if _, err := refused.Read(make([]byte, 1)); err == nil {
		t.Fatal("refused client still open")
	}
}

// A client whose further bytes and FIN are all queued when the sniffing cap stops the reading
// (here: the loop is held up in OnHello meanwhile) is still read to its end once the backend
// connected: those bytes raise no new edge.
func TestSniffCapWithBytesQueued(t *testing.T) {
	t.Parallel()
	a := backend(t, echo)
	var calls atomic.Int32
	s := startCfg(t, Config{Loops: 1, SniffMax: 1000,
		OnOpen: func(*Conn) Decision { return Decision{Sniff: true} },
		OnHello: func(_ *Conn, data []byte) Decision {
			if calls.Add(1) == 1 {
				time.Sleep(100 * time.Millisecond) // the client sends everything meanwhile
			}
			if bytes.IndexByte(data, '\n') < 0 {
				return Decision{Sniff: true}
			}
			return Decision{Target: a}
		}})
	c := dial(t, s)
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // read alone: OnHello holds the loop
	rest := append([]byte("\n"), bytes.Repeat([]byte("0123456789"), 20<<10)...)
	go func() {
		_, _ = c.Write(rest)
		_ = c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || len(got) != 1+len(rest) {
		t.Fatalf("echoed %d bytes, %v; want %d", len(got), err, 1+len(rest))
	}
}
