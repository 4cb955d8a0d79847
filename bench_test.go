package smartproxy

import (
	"io"
	"net"
	"strconv"
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

// BenchmarkConnectEcho is connrate in process: connect through the proxy,
// echo one byte, close. It shows the per-connection setup cost (the
// keep-alive options, set once on the listener on Linux). The client
// dials without keep-alive so that it adds no setsockopt of its own.
func BenchmarkConnectEcho(b *testing.B) {
	be := startBackend(b, "127.0.0.1:0", echo)
	port := closedPort(b)
	// The proxy's own listener (no Options.Listen), so its keep-alive
	// settings are part of what is measured.
	startTestProxy(b, nil, Options{ListenAddress: "127.0.0.1", Routes: []Route{plainRoute("bench", port, be.addr())}})
	connectEchoLoop(b, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
}

// connectEchoLoop is the benchmark loop of a connection rate: connect to
// addr (an echo through the proxy), send a byte, read it back, close.
func connectEchoLoop(b *testing.B, addr string) {
	b.ReportAllocs()
	one := make([]byte, 1)
	d := net.Dialer{KeepAlive: -1}
	for b.Loop() {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write([]byte{'x'}); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, one); err != nil {
			b.Fatal(err)
		}
		_ = c.Close()
	}
}
