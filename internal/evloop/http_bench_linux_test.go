//go:build linux

package evloop

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/gosmartproxy/smartproxy/internal/h1parse"
)

// BenchmarkHTTPKeepAliveGET relays keep-alive GETs, one at a time over one client
// connection, through HTTP mode to a raw backend that answers each with a fixed response.
// Client and backend read and write fixed buffers, so -benchmem's allocs/op are the loop's
// (and the callbacks', which allocate nothing here) per request.
func BenchmarkHTTPKeepAliveGET(b *testing.B) {
	const resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(loopback))
	if err != nil {
		b.Fatal(err)
	}
	answer := []byte(resp)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the backend: one answer per read (the client sends one request at a time)
		defer wg.Done()
		c, err := ln.AcceptTCP()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if !bytes.HasSuffix(buf[:n], []byte("\r\n\r\n")) {
				b.Error("backend: partial request read")
				return
			}
			if _, err := c.Write(answer); err != nil {
				return
			}
		}
	}()
	target := ln.Addr().(*net.TCPAddr).AddrPort()
	s, err := Start(Config{
		Listen: loopback,
		Loops:  1,
		OnOpen: func(c *Conn) Decision { return Decision{HTTP: true} },
		OnRequest: func(c *Conn, req *h1parse.Request, raw []byte) HTTPPlan {
			return HTTPPlan{Target: target, Out: raw, Replayable: true}
		},
		OnResponse: func(c *Conn, r *h1parse.Response, dst []byte) ([]byte, bool) {
			return append(dst, resp[:len(resp)-2]...), true // the head as it came
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	req := []byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	buf := make([]byte, len(resp))
	for b.Loop() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
	if string(buf) != resp {
		b.Fatalf("response %q", buf)
	}
	_ = c.Close()
	_ = s.Close()
	_ = ln.Close()
	wg.Wait()
}
