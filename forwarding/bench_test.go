package forwarding

import (
	"context"
	"io"
	"net"
	"testing"
)

// BenchmarkPipeLoopback measures one-way bulk throughput client->backend over loopback:
// directly, through Pipe on the splice path, and through Pipe's buffered fallback (TCP
// hidden behind an opaque wrapper).
func BenchmarkPipeLoopback(b *testing.B) {
	run := func(b *testing.B, client, backend *net.TCPConn) {
		const chunk = 1 << 20
		buf := make([]byte, chunk)
		got := make(chan int64, 1)
		go func() {
			n, _ := io.CopyBuffer(io.Discard, struct{ io.Reader }{backend}, make([]byte, 256<<10))
			got <- n
		}()
		b.SetBytes(chunk)
		b.ResetTimer()
		for b.Loop() {
			if _, err := client.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		client.CloseWrite()
		if n := <-got; n != int64(b.N)*chunk {
			b.Fatalf("backend got %d bytes, want %d", n, int64(b.N)*chunk)
		}
	}
	b.Run("direct", func(b *testing.B) {
		client, backend := tcpPair(b)
		run(b, client, backend)
	})
	b.Run("pipe-splice", func(b *testing.B) {
		p := startPipe(b, context.Background(), PipeOptions{}, nil)
		run(b, p.client, p.backend)
	})
	b.Run("stdlib-io.Copy", func(b *testing.B) { // reference: Go's own splice, pipe held always
		client, proxyClient := tcpPair(b)
		proxyBackend, backend := tcpPair(b)
		done := make(chan struct{})
		go func() {
			defer close(done)
			io.Copy(proxyBackend, proxyClient)
			proxyBackend.CloseWrite()
		}()
		run(b, client, backend)
		<-done
	})
	b.Run("pipe-copy", func(b *testing.B) {
		p := startPipe(b, context.Background(), PipeOptions{}, func(c net.Conn) net.Conn { return opaqueConn{c} })
		run(b, p.client, p.backend)
	})
}
