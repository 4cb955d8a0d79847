package smartproxy

import (
	"io"
	"net"
	"testing"
	"time"
)

// BenchmarkH2GuardInspect is what the HTTP/2 guard adds per frame of normal
// traffic: reading a request (HEADERS, then 16 KiB DATA frames) the way the
// server reads, header and payload separately, and tracking a response.
func BenchmarkH2GuardInspect(b *testing.B) {
	g := newH2Guard(nil, true, func(string, ...any) {})
	hdr := h2Frame(h2FrameHeaders, 0x4, 1, h2RequestBlock(true))
	data := h2Frame(h2FrameData, 0, 1, make([]byte, 16<<10))
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for i := 0; b.Loop(); i++ {
		if i%64 == 0 { // a new stream every 64 frames
			_ = g.inspect(hdr[:h2FrameHeaderLen])
			_ = g.inspect(hdr[h2FrameHeaderLen:])
		}
		_ = g.inspect(data[:h2FrameHeaderLen])
		_ = g.inspect(data[h2FrameHeaderLen:])
		g.track(data)
	}
}

// BenchmarkMeterConnWrite compares a client write through the meter with
// and without the write-progress timeout, over loopback TCP with a reader
// draining the other end: the timeout's cost is a clock read per write and
// a deadline update about every timeout/8.
func BenchmarkMeterConnWrite(b *testing.B) {
	for _, bc := range []struct {
		name string
		wt   time.Duration
	}{{"off", 0}, {"60s", DefaultWriteTimeout}} {
		b.Run(bc.name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			done := make(chan struct{})
			go func() {
				defer close(done)
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, c)
				c.Close()
			}()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			m := &meterConn{Conn: c, wt: bc.wt}
			buf := make([]byte, 4<<10)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			c.Close()
			<-done
		})
	}
}
