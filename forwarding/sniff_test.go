package forwarding

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/tlstest"
)

// writeSlowly writes data in small TCP segments with pauses, like a slow or evasive client.
func writeSlowly(w io.Writer, data []byte, chunk int, pause time.Duration) {
	for len(data) > 0 {
		n := min(chunk, len(data))
		if _, err := w.Write(data[:n]); err != nil {
			return
		}
		data = data[n:]
		time.Sleep(pause)
	}
}

func TestSniffClientHelloSlowFragmented(t *testing.T) {
	hello := tlstest.CaptureHello(t, tls13Config())
	for _, records := range [][]byte{hello, tlstest.Refragment(hello, 100)} {
		a, b := tcpPair(t)
		a.SetNoDelay(true)
		done := make(chan struct{})
		go func() {
			defer close(done)
			writeSlowly(a, records, 37, time.Millisecond)
		}()
		pc := NewPeekConn(b)
		pc.SetReadDeadline(time.Now().Add(10 * time.Second))
		info, err := SniffClientHello(pc, 64<<10)
		<-done
		if err != nil {
			t.Fatal(err)
		}
		if string(info.ServerName) != "Example.COM" || info.MaxVersion != 0x0304 {
			t.Fatalf("got %q %#x", info.ServerName, info.MaxVersion)
		}
		// The hello stays buffered for replay, byte for byte.
		a.CloseWrite()
		got, err := io.ReadAll(pc)
		if err != nil || !bytes.Equal(got, records) {
			t.Fatalf("replay: %d bytes (want %d), %v", len(got), len(records), err)
		}
	}
}

func TestSniffClientHelloNotTLSImmediately(t *testing.T) {
	for _, first := range []string{"G", "GET / HTTP/1.1\r\n", "\x16\x03\x09"} {
		a, b := tcpPair(t)
		a.Write([]byte(first)) // and then nothing more: the client waits for us
		pc := NewPeekConn(b)
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		_, err := SniffClientHello(pc, 64<<10)
		if !errors.Is(err, ErrNotTLS) {
			t.Fatalf("%q: err = %v, want ErrNotTLS", first, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("%q: took %v: waited for bytes that were not needed", first, d)
		}
		if string(pc.Buffered()) != first {
			t.Fatalf("buffered %q, want %q kept for replay", pc.Buffered(), first)
		}
	}
}

func TestSniffClientHelloLimitsAndErrors(t *testing.T) {
	hello := tlstest.CaptureHello(t, tls13Config())

	t.Run("over cap", func(t *testing.T) {
		a, b := tcpPair(t)
		go a.Write(hello)
		pc := NewPeekConn(b)
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := SniffClientHello(pc, len(hello)-1); !errors.Is(err, ErrHelloTooLarge) {
			t.Fatalf("err = %v, want ErrHelloTooLarge", err)
		}
	})
	t.Run("eof mid-hello", func(t *testing.T) {
		a, b := tcpPair(t)
		a.Write(hello[:len(hello)/2])
		a.Close()
		pc := NewPeekConn(b)
		if _, err := SniffClientHello(pc, 64<<10); !errors.Is(err, io.EOF) {
			t.Fatalf("err = %v, want io.EOF", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		a, b := tcpPair(t)
		a.Write(hello[:100])
		pc := NewPeekConn(b)
		pc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := SniffClientHello(pc, 64<<10); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("err = %v, want deadline exceeded", err)
		}
	})
	t.Run("no sni", func(t *testing.T) {
		a, b := tcpPair(t)
		go a.Write(tlstest.ToRecords(tlstest.BuildHello(tlstest.HelloSpec{}), 16384))
		pc := NewPeekConn(b)
		info, err := SniffClientHello(pc, 64<<10)
		if err != nil || len(info.ServerName) != 0 || info.MaxVersion != 0x0303 {
			t.Fatalf("got %q %#x %v", info.ServerName, info.MaxVersion, err)
		}
	})
	t.Run("large two-record hello", func(t *testing.T) {
		a, b := tcpPair(t)
		data := tlstest.ToRecords(tlstest.BuildHello(tlstest.HelloSpec{SNI: "pq.example", Padding: 18000}), 16384)
		go a.Write(data)
		pc := NewPeekConn(b)
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		info, err := SniffClientHello(pc, 64<<10)
		if err != nil || string(info.ServerName) != "pq.example" {
			t.Fatalf("got %q %v", info.ServerName, err)
		}
		if len(pc.Buffered()) != len(data) {
			t.Fatalf("buffered %d, want %d", len(pc.Buffered()), len(data))
		}
	})
}
