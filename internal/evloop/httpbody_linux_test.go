//go:build linux

package evloop

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/h1parse"
)

// slowEchoBackend accepts on a socket with a small receive buffer and waits before reading
// each request, so that a request with a large body goes out in several sends (EAGAIN, then
// EPOLLOUT) whatever the split between head and body; it answers each request with its
// body. got receives every request as the backend read it (head and body).
func slowEchoBackend(t *testing.T, got chan<- []byte) netip.AddrPort {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		_ = rc.Control(func(fd uintptr) { err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return err
	}}
	ln, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					time.Sleep(50 * time.Millisecond) // the proxy's sends fill the window meanwhile
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					var head bytes.Buffer
					_ = req.Header.Write(&head)
					body, err := io.ReadAll(req.Body)
					if err != nil {
						return
					}
					got <- append([]byte(req.Method+" "+req.RequestURI+"\n"), body...)
					if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body); err != nil {
						return
					}
				}
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// TestHTTPPlanBody: a request planned as its head (Out) and the held body the loop passed
// (Body) reaches the backend as head then body, whole and in order, also when the backend
// takes it in pieces (a send that ends in the head, in the body), and a keep-alive connection's requests of every body size (none, small,
// the held maximum) each carry their own body.
func TestHTTPPlanBody(t *testing.T) {
	t.Parallel()
	got := make(chan []byte, 16)
	target := slowEchoBackend(t, got)
	const big = 12 << 20 // more than the backend's window and the proxy's send buffer (4 MiB at most) hold: sent in pieces
	srv := startRelay(t, target, Config{HTTPMaxHeld: big, OnRequest: func(c *Conn, req *h1parse.Request, raw []byte) HTTPPlan {
		out := append([]byte(nil), raw[:req.HeadLen-2]...)
		out = append(out, "X-Relay: 1\r\n\r\n"...)
		return HTTPPlan{Target: target, Out: out, Body: raw[req.HeadLen:]}
	}})
	c, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i, n := range []int{DefaultHTTPMaxHeld, 0, big, 1000, big - 7, 1} {
		body := bytes.Repeat([]byte{byte('a' + i)}, n)
		for j := range body {
			body[j] += byte(j % 7) // no two positions alike in a short period: order shows
		}
		if _, err := fmt.Fprintf(c, "POST /p%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", i, n, body); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		echo, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 || !bytes.Equal(echo, body) {
			t.Fatalf("request %d (%d bytes): status %d, %d bytes echoed (equal: %v), err %v", i, n, resp.StatusCode,
				len(echo), bytes.Equal(echo, body), err)
		}
		select {
		case b := <-got:
			if want := append([]byte("POST /p"+strconv.Itoa(i)+"\n"), body...); !bytes.Equal(b, want) {
				t.Fatalf("request %d: the backend read %d bytes, not the request's %d", i, len(b), len(want))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("request %d: the backend read no request", i)
		}
	}
}
