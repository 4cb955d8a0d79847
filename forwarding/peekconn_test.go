package forwarding

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
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
