package smartproxy

import (
	"io"
	"net"
	"testing"
	"time"
)

// benchTransfer is the size of one benchmark operation.
const benchTransfer = 4 << 20

// sinkAck reads transfers of benchTransfer bytes and acknowledges each with
// one byte, so the client measures delivery, not just its socket buffer.
func sinkAck(c net.Conn) {
	buf := make([]byte, 256<<10)
	for {
		for left := benchTransfer; left > 0; {
			n, err := c.Read(buf[:min(len(buf), left)])
			if err != nil {
				return
			}
			left -= n
		}
		if _, err := c.Write([]byte{1}); err != nil {
			return
		}
	}
}

// BenchmarkForwardThroughput moves 4 MiB per operation over loopback,
// directly and through the proxy (TCP on both sides: the splice path), so
// the two numbers show the proxy's cost.
func BenchmarkForwardThroughput(b *testing.B) {
	be := startBackend(b, "127.0.0.1:0", sinkAck)
	lp := newListenerPool(b)
	port := lp.port(b)
	startTestProxy(b, lp, Options{Routes: []Route{plainRoute("bench", port, be.addr())}})

	run := func(b *testing.B, c net.Conn) {
		data := pattern(benchTransfer, 1)
		ack := make([]byte, 1)
		_ = c.SetDeadline(time.Now().Add(time.Minute))
		b.SetBytes(benchTransfer)
		b.ResetTimer()
		for b.Loop() {
			if _, err := c.Write(data); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, ack); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("direct", func(b *testing.B) {
		c, err := net.Dial("tcp", be.addr())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		run(b, c)
	})
	b.Run("proxy", func(b *testing.B) {
		c := dial(b, port)
		defer c.Close()
		run(b, c)
	})
}
