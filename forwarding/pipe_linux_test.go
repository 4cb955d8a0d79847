//go:build linux

package forwarding

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/tlstest"
)

func spliceCount() int64 { return spliceCopies.Load() }

func TestPipeUsesSpliceForTCP(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(net.Conn) net.Conn
		want int64
	}{
		{"tcp", nil, 2},
		{"peekconn", func(c net.Conn) net.Conn { return NewPeekConn(c) }, 2},
		{"unwrapper", func(c net.Conn) net.Conn { return unwrapper{c} }, 2},
		{"opaque", func(c net.Conn) net.Conn { return opaqueConn{c} }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := spliceCount()
			p := startPipe(t, context.Background(), PipeOptions{}, tc.wrap)
			bulkBothWays(t, p, 100<<10, 100<<10)
			p.wait(t, 5*time.Second)
			if got := spliceCount() - before; got != tc.want {
				t.Fatalf("%d directions spliced, want %d", got, tc.want)
			}
		})
	}
}

// unwrapper is a wrapper that exposes its conn through Unwrap.
type unwrapper struct{ net.Conn }

func (u unwrapper) Unwrap() net.Conn { return u.Conn }

// A PeekConn that still buffers the sniffed hello is replayed first, then spliced.
func TestPipeReplaysSniffedHelloThenSplices(t *testing.T) {
	hello := tlstest.CaptureHello(t, tls13Config())
	client, proxyClient := tcpPair(t)
	proxyBackend, backend := tcpPair(t)
	client.Write(hello)
	pc := NewPeekConn(proxyClient)
	info, err := SniffClientHello(pc, 64<<10)
	if err != nil || string(info.ServerName) != "Example.COM" {
		t.Fatalf("sniff: %q %v", info.ServerName, err)
	}
	before := spliceCount()
	res := make(chan PipeResult, 1)
	go func() { res <- Pipe(context.Background(), pc, proxyBackend, PipeOptions{}) }()
	client.Write([]byte("after-hello"))
	client.CloseWrite()
	got, err := io.ReadAll(backend)
	if err != nil || string(got) != string(hello)+"after-hello" {
		t.Fatalf("backend got %d bytes, %v", len(got), err)
	}
	backend.Close()
	r := <-res
	if r.Err != nil || r.ClientToBackend != int64(len(hello)+11) {
		t.Fatalf("result %+v", r)
	}
	if spliceCount()-before != 2 {
		t.Fatalf("spliced %d directions, want 2", spliceCount()-before)
	}
	if pc.buf != nil {
		t.Fatal("PeekConn still holds its buffer")
	}
}

// Idle proxied connections must hold no kernel pipe: only goroutines and sockets.
func TestPipeIdleHoldsNoPipe(t *testing.T) {
	const n = 50
	chains := make([]*proxied, n)
	for i := range chains {
		p := startPipe(t, context.Background(), PipeOptions{}, nil)
		p.client.Write([]byte{1})
		io.ReadFull(p.backend, make([]byte, 1))
		p.backend.Write([]byte{2})
		io.ReadFull(p.client, make([]byte, 1))
		chains[i] = p
	}
	// The last splice call of each direction (EAGAIN) returns the pipe just after the byte
	// was delivered; give the goroutines a moment to park.
	deadline := time.Now().Add(2 * time.Second)
	for pipesInUse.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := pipesInUse.Load(); got != 0 {
		t.Fatalf("%d pipes held by %d idle connections, want 0", got, n)
	}
	if f := freePipes(); f > maxFreePipes {
		t.Fatalf("free list holds %d pipes, cap is %d", f, maxFreePipes)
	}
	// Still working after idling.
	chains[0].client.Write([]byte("again"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(chains[0].backend, buf); err != nil || string(buf) != "again" {
		t.Fatalf("after idle: %q %v", buf, err)
	}
}

func TestPipeFreeListBounded(t *testing.T) {
	var held []kpipe
	for range maxFreePipes + 10 {
		p, err := getPipe()
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, p)
	}
	for _, p := range held {
		putPipe(p, true)
	}
	if f := freePipes(); f != maxFreePipes {
		t.Fatalf("free list has %d, want %d", f, maxFreePipes)
	}
	// A dirty pipe is never pooled.
	p, _ := getPipe()
	before := freePipes()
	putPipe(p, false)
	if freePipes() != before {
		t.Fatal("dirty pipe went back to the free list")
	}
}
