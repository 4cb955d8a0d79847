//go:build linux

package forwarding

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
	"time"
)

// readNow takes bytes a TCP connection already received in one read, and leaves everything
// as it was when there are none, so that Fill waits for them without a buffer.
func TestPeekConnReadNow(t *testing.T) {
	t.Parallel()
	client, server := tcpPair(t)
	pc := NewPeekConn(server)
	defer pc.Release()
	if pc.readNow(1) {
		t.Fatal("readNow reported bytes on a connection that has received none")
	}
	if b := pc.Buffered(); len(b) != 0 {
		t.Fatalf("buffered %q after an empty readNow", b)
	}
	want := []byte("\x16\x03\x01hello")
	if _, err := client.Write(want); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !pc.readNow(len(want)) {
		if time.Now().After(deadline) {
			t.Fatal("readNow never saw the bytes written")
		}
		time.Sleep(time.Millisecond)
	}
	// Loopback delivers one small write at once; collect any rest through Fill as usual.
	if err := pc.Fill(len(want)); err != nil {
		t.Fatal(err)
	}
	if got := pc.Buffered(); !bytes.Equal(got, want) {
		t.Fatalf("buffered %q, want %q", got, want)
	}
}

// Fill on a connection that ends before sending anything reports EOF as a plain Read does,
// and one whose read deadline has passed reports the timeout: readNow leaves both to Read.
func TestPeekConnReadNowLeavesEOFAndDeadlineToRead(t *testing.T) {
	t.Parallel()
	client, server := tcpPair(t)
	pc := NewPeekConn(server)
	if err := client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := pc.Fill(1); !errors.Is(err, io.EOF) {
		t.Fatalf("Fill after the peer's FIN: %v, want EOF", err)
	}
	_, server2 := tcpPair(t)
	pc2 := NewPeekConn(server2)
	_ = server2.SetReadDeadline(time.Now().Add(-time.Second))
	if err := pc2.Fill(1); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Fill past the read deadline: %v, want a deadline error", err)
	}
	if held := len(pc.Buffered()) + len(pc2.Buffered()); held != 0 {
		t.Fatalf("%d bytes buffered after failed Fills", held)
	}
}
