package forwarding

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"
)

func TestPeekConnReplay(t *testing.T) {
	a, b := tcpPair(t)
	pc := NewPeekConn(b)
	if _, err := a.Write([]byte("hello world")); err != nil {
		t.Fatal(err)
	}
	if err := pc.Fill(5); err != nil {
		t.Fatal(err)
	}
	if got := pc.Buffered(); len(got) < 5 || !bytes.HasPrefix([]byte("hello world"), got) {
		t.Fatalf("Buffered = %q", got)
	}
	if err := pc.Fill(11); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Write([]byte("!")); err != nil {
		t.Fatal(err)
	}
	a.CloseWrite()
	got, err := io.ReadAll(pc)
	if err != nil || string(got) != "hello world!" {
		t.Fatalf("ReadAll = %q, %v", got, err)
	}
	if pc.buf != nil {
		t.Fatal("buffer still held after everything was read")
	}
	if pc.Unwrap() != b {
		t.Fatal("Unwrap")
	}
}

func TestPeekConnFillEOFAndDeadline(t *testing.T) {
	a, b := tcpPair(t)
	pc := NewPeekConn(b)
	a.Write([]byte("abc"))
	pc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if err := pc.Fill(10); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Fill past deadline: %v", err)
	}
	if string(pc.Buffered()) != "abc" {
		t.Fatalf("bytes read before the timeout were lost: %q", pc.Buffered())
	}
	pc.SetReadDeadline(time.Time{})
	a.Close()
	if err := pc.Fill(10); !errors.Is(err, io.EOF) {
		t.Fatalf("Fill at EOF: %v", err)
	}
	if string(pc.Buffered()) != "abc" {
		t.Fatalf("Buffered after EOF = %q", pc.Buffered())
	}
	pc.Release() // no-op: bytes are still buffered
	if string(pc.Buffered()) != "abc" {
		t.Fatal("Release dropped buffered bytes")
	}
}

func TestPeekConnGrowsBeyondPoolSize(t *testing.T) {
	a, b := tcpPair(t)
	pc := NewPeekConn(b)
	want := bytes.Repeat([]byte("0123456789abcdef"), 3000) // 48000 bytes
	go func() { a.Write(want) }()
	if err := pc.Fill(len(want)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(pc, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("replay mismatch: %v", err)
	}
}

func TestPeekConnCloseWrite(t *testing.T) {
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	if err := NewPeekConn(c1).CloseWrite(); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("CloseWrite on net.Pipe: %v", err)
	}
	a, b := tcpPair(t)
	if err := NewPeekConn(a).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("peer read after CloseWrite: %d %v", n, err)
	}
}

// TestPeekConnSilentClientsHoldNoBuffer: a client that connects and says nothing must not pin
// a read-ahead buffer while Fill (or SniffClientHello) waits for its first byte.
func TestPeekConnSilentClientsHoldNoBuffer(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("readiness wait without a buffer is Linux-only")
	}
	const n = 32
	base := peekBufsHeld.Load()
	clients := make([]*net.TCPConn, n)
	pcs := make([]*PeekConn, n)
	errs := make(chan error, n)
	for i := range n {
		a, b := tcpPair(t)
		clients[i], pcs[i] = a, NewPeekConn(b)
		pcs[i].SetReadDeadline(time.Now().Add(10 * time.Second))
		go func(pc *PeekConn, sniff bool) {
			if sniff {
				_, err := SniffClientHello(pc, 64<<10)
				errs <- err
				return
			}
			errs <- pc.Fill(1)
		}(pcs[i], i%2 == 0)
	}
	time.Sleep(200 * time.Millisecond) // let every goroutine block in its wait
	if held := peekBufsHeld.Load() - base; held != 0 {
		t.Fatalf("%d silent clients hold %d buffers, want 0", n, held)
	}
	for _, a := range clients {
		a.Write([]byte("G")) // not TLS: SniffClientHello fails at once, Fill succeeds
	}
	for range n {
		if err := <-errs; err != nil && !errors.Is(err, ErrNotTLS) {
			t.Fatal(err)
		}
	}
	if held := peekBufsHeld.Load() - base; held != n {
		t.Fatalf("after the first byte %d buffers are held, want %d", held, n)
	}
	for _, pc := range pcs {
		if b, err := pc.Read(make([]byte, 8)); b != 1 || err != nil {
			t.Fatalf("Read = %d, %v", b, err)
		}
	}
	if held := peekBufsHeld.Load() - base; held != 0 {
		t.Fatalf("%d buffers still held after draining", held)
	}
}

// TestPeekConnWaitKeepsReadErrors: the readiness wait must not change what Fill reports.
func TestPeekConnWaitKeepsReadErrors(t *testing.T) {
	a, b := tcpPair(t)
	pc := NewPeekConn(b)
	pc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	err := pc.Fill(1)
	var op *net.OpError
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &op) || op.Op != "read" {
		t.Fatalf("Fill past deadline: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("deadline not honoured: %v", d)
	}
	if pc.buf != nil {
		t.Fatal("buffer held after a failed Fill")
	}
	pc.SetReadDeadline(time.Time{})
	a.Close()
	if err := pc.Fill(1); !errors.Is(err, io.EOF) {
		t.Fatalf("Fill at EOF: %v", err)
	}
	if pc.buf != nil {
		t.Fatal("buffer held after EOF")
	}
}
