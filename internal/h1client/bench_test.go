package h1client

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"testing"
)

// cannedBackend answers every bodyless request on a connection with
// resp, reading heads without allocating, so that -benchmem counts the
// client's allocations.
func cannedBackend(b *testing.B, resp string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReaderSize(c, 16<<10)
		out := []byte(resp)
		for {
			// A head ends with an empty line.
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				if bytes.Equal(line, []byte("\r\n")) {
					break
				}
			}
			if _, err := c.Write(out); err != nil {
				return
			}
		}
	}()
	b.Cleanup(func() { _ = ln.Close(); <-done })
	return ln.Addr().String()
}

const benchResp = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: Thu, 03 Dec 2026 08:00:00 GMT\r\nServer: bench\r\nContent-Length: 5\r\n\r\nhello"

// BenchmarkRoundTrip is a keep-alive GET through RoundTrip, body read
// to its end.
func BenchmarkRoundTrip(b *testing.B) {
	addr := cannedBackend(b, benchResp)
	c := New(Config{Dial: (&net.Dialer{}).DialContext})
	b.Cleanup(c.CloseIdleConnections)
	out, err := http.NewRequestWithContext(b.Context(), "GET", "http://"+addr+"/x", nil)
	if err != nil {
		b.Fatal(err)
	}
	out.Header.Set("User-Agent", "")
	out.Header.Set("Accept", "*/*")
	var buf [64]byte
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.RoundTrip(out)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(resp.Body, buf[:5]); err != nil {
			b.Fatal(err)
		}
		if n, err := resp.Body.Read(buf[:]); n != 0 || err != io.EOF {
			b.Fatal(n, err)
		}
		_ = resp.Body.Close()
	}
}

// BenchmarkSend is the same exchange through Send.
func BenchmarkSend(b *testing.B) {
	addr := cannedBackend(b, benchResp)
	c := New(Config{Dial: (&net.Dialer{}).DialContext})
	b.Cleanup(c.CloseIdleConnections)
	head := []byte("GET /x HTTP/1.1\r\nHost: " + addr + "\r\nAccept: */*\r\n\r\n")
	var buf [64]byte
	b.ReportAllocs()
	for b.Loop() {
		ex, err := c.Send(b.Context(), addr, Outgoing{Head: head, Replayable: true})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(ex, buf[:5]); err != nil {
			b.Fatal(err)
		}
		if n, err := ex.Read(buf[:]); n != 0 || err != io.EOF {
			b.Fatal(n, err)
		}
		_ = ex.Close()
	}
}
