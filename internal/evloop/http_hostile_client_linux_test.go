//go:build linux

package evloop

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/h1parse"
)

// A held body whose request fills the client buffer to its cap (want) must not leave the
// request pipelined after it unread in the socket (no new edge comes for it).
func TestHTTPHostilePipelinedAfterHeldBody(t *testing.T) {
	be, _ := httpBackend(t)
	s := startRelay(t, be, Config{})
	c, br := dialHTTP(t, s)
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	body := pattern(20000)
	fmt.Fprintf(c, "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", len(body))
	time.Sleep(100 * time.Millisecond) // the head alone: want is known before the body comes
	c.Write(append(body, "GET /len/3 HTTP/1.1\r\nHost: a\r\n\r\n"...))
	if resp, b := readResponse(t, br, "POST"); resp.StatusCode != 200 || len(b) != len(body) {
		t.Fatalf("POST: %d, %d bytes", resp.StatusCode, len(b))
	}
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatalf("pipelined GET after the held body: %v (never read by the loop)", err)
	}
	resp.Body.Close()
}

// The same with requests the owner answers itself: more pipelined bytes than the head cap.
func TestHTTPHostilePipelinedOverHeadCap(t *testing.T) {
	s := startRelay(t, netip.AddrPort{}, Config{Loops: 1, OnRequest: func(c *Conn, req *h1parse.Request, raw []byte) HTTPPlan {
		return HTTPPlan{Respond: []byte("HTTP/1.1 204 No Content\r\n\r\n")}
	}})
	c, br := dialHTTP(t, s)
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	req := "GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
	const n = 4000 // 4000*29 bytes: over httpMaxHead
	go c.Write([]byte(strings.Repeat(req, n)))
	for i := range n {
		resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatalf("response %d of %d: %v", i, n, err)
		}
		resp.Body.Close()
	}
}

// A backend that answers before it read the whole request: its connection, with the rest of
// the request unsent, must not be pooled (the next request would be read as the first body).
func TestHTTPHostileHalfSentRequestNotPooled(t *testing.T) {
	var conns atomic.Int64
	const bodyLen = 8 << 20
	be := backend(t, func(c *net.TCPConn) {
		conns.Add(1)
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if req.URL.Path == "/upload" {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly")
				time.Sleep(300 * time.Millisecond) // drains the body later, as servers do
				_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
				if _, err := io.Copy(io.Discard, req.Body); err != nil {
					return
				}
				_ = c.SetReadDeadline(time.Time{})
				continue
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.URL.Path), req.URL.Path)
		}
	})
	s := startRelay(t, be, Config{Loops: 1, HTTPMaxHeld: 16 << 20, HTTPResponseTimeout: time.Second, OnRequest: startRelayPlan(be)})
	c1, br1 := dialHTTP(t, s)
	go func() {
		fmt.Fprintf(c1, "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", bodyLen)
		c1.Write(pattern(bodyLen))
	}()
	if resp, b := readResponse(t, br1, "POST"); string(b) != "early" {
		t.Fatalf("first: %d %q", resp.StatusCode, b)
	}
	c2, br2 := dialHTTP(t, s)
	io.WriteString(c2, "GET /second HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, b := readResponse(t, br2, "GET")
	if string(b) != "/second" {
		t.Fatalf("second client: %d %q (backend conns %d): its request went on a connection whose last request was half sent", resp.StatusCode, b, conns.Load())
	}
}

// A response that ends exactly where a full read of the backend buffer ends, with bytes
// after it: the connection must not be pooled with those bytes unread (no new edge comes),
// or the next request would get them as its response.
func TestHTTPHostileUnreadBytesNotPooled(t *testing.T) {
	var reqs atomic.Int64
	be := backend(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			if reqs.Add(1) == 1 {
				head := "HTTP/1.1 200 OK\r\nContent-Length: XXXXX\r\n\r\n"
				n := httpMaxRespHead - len(head)
				head = strings.Replace(head, "XXXXX", fmt.Sprintf("%05d", n), 1)
				io.WriteString(c, head+string(pattern(n))+"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL")
				continue
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
		}
	})
	s := startRelay(t, be, Config{Loops: 1})
	c, br := dialHTTP(t, s)
	io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
	readResponse(t, br, "GET")
	time.Sleep(100 * time.Millisecond)
	c2, br2 := dialHTTP(t, s) // another client, the same loop and pool
	io.WriteString(c2, "GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
	if _, b := readResponse(t, br2, "GET"); string(b) != "good" {
		t.Fatalf("second client got %q: the first exchange's extra bytes", b[:min(len(b), 40)])
	}
}

// OnExchangeEnd is called for an exchange the client ends (RST) or Server.Close ends.
func TestHTTPHostileExchangeEndOnCut(t *testing.T) {
	hold := make(chan struct{})
	be := backend(t, func(c *net.TCPConn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
			<-hold
		}
	})
	t.Cleanup(func() { close(hold) })
	var ends, closes atomic.Int64
	s := startRelay(t, be, Config{
		OnExchangeEnd: func(c *Conn, status int, body int64, err error) []byte { ends.Add(1); return nil },
		OnClose:       func(c *Conn, in, out int64, err error) { closes.Add(1) },
	})
	c, _ := dialHTTP(t, s)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	time.Sleep(100 * time.Millisecond)
	c.(*net.TCPConn).SetLinger(0)
	c.Close() // RST
	time.Sleep(200 * time.Millisecond)
	if closes.Load() != 1 || ends.Load() != 1 {
		t.Fatalf("OnClose %d, OnExchangeEnd %d: want 1 and 1", closes.Load(), ends.Load())
	}
}

// OnRequest answers a request whose body the loop did not hold (over HTTPMaxHeld) without
// Close: the body must not be parsed as the next request (CL.0 desync); the connection closes.
func TestHTTPHostileUnheldBodyNotARequest(t *testing.T) {
	var seen atomic.Value
	seen.Store("")
	s := startRelay(t, netip.AddrPort{}, Config{OnRequest: func(c *Conn, req *h1parse.Request, raw []byte) HTTPPlan {
		if string(req.Target) != "/deny" {
			seen.Store(string(req.Target))
		}
		return HTTPPlan{Respond: []byte("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")}
	}})
	c, br := dialHTTP(t, s)
	smuggled := "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
	body := smuggled + strings.Repeat("x", DefaultHTTPMaxHeld+1-len(smuggled))
	fmt.Fprintf(c, "POST /deny HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	readResponse(t, br, "POST")
	time.Sleep(200 * time.Millisecond)
	if v := seen.Load().(string); v != "" {
		t.Fatalf("OnRequest saw %q, a request inside the client's body", v)
	}
}

// A backend that stalls mid-body while the client has gone: the response timeout, re-armed
// by every body read, ends it.
func TestHTTPHostileBodyStallTimesOut(t *testing.T) {
	hold := make(chan struct{})
	be := backend(t, func(c *net.TCPConn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
			<-hold
		}
	})
	t.Cleanup(func() { close(hold) })
	closed := make(chan error, 1)
	s := startRelay(t, be, Config{HTTPResponseTimeout: 200 * time.Millisecond, HTTPIdleTimeout: 200 * time.Millisecond,
		HTTPHeadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond,
		OnClose: func(c *Conn, in, out int64, err error) { closed <- err }})
	c, br := dialHTTP(t, s)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if _, err := http.ReadResponse(br, &http.Request{Method: "GET"}); err != nil {
		t.Fatal(err)
	}
	c.Close() // FIN: the client is gone
	select {
	case err := <-closed:
		t.Logf("closed: %v", err)
	case <-time.After(3 * time.Second):
		t.Fatal("3 s after the client left (every timeout 200 ms) the connection and its backend are still open")
	}
}

// An answer with Close to a request whose body the client is still sending (a 413 for a
// body over the cap): the client reads the answer (a close with unread bytes resets the
// connection, which could lose it: RFC 9112 9.6's lingering close).
func TestHTTPHostileAnswerBeforeClose(t *testing.T) {
	s := startRelay(t, netip.AddrPort{}, Config{OnRequest: func(c *Conn, req *h1parse.Request, raw []byte) HTTPPlan {
		return HTTPPlan{Respond: []byte("HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), Close: true}
	}})
	fails := 0
	for range 20 {
		c, br := dialHTTP(t, s)
		go func() {
			fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", 4<<20)
			c.Write(pattern(4 << 20))
		}()
		time.Sleep(20 * time.Millisecond)
		if _, err := http.ReadResponse(br, &http.Request{Method: "POST"}); err != nil {
			fails++
			t.Logf("client: %v", err)
		}
		c.Close()
	}
	if fails > 0 {
		t.Fatalf("%d of 20 clients did not get the 413", fails)
	}
}

// Expect: 100-continue with a body the loop holds: the loop answers 100 Continue while it
// waits for the body (the client would otherwise wait: curl, 1 s per upload).
func TestHTTPHostileExpectContinue(t *testing.T) {
	be, _ := httpBackend(t)
	s := startRelay(t, be, Config{})
	c, br := dialHTTP(t, s)
	io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := br.Peek(1); err != nil {
		t.Fatalf("no 100 Continue nor answer within 1 s: %v", err)
	}
}

// With HTTPExpectUnheld, an Expect: 100-continue request whose body has not come goes to
// OnRequest with its head alone (raw is the head), and the loop sends no 100 Continue: the
// owner's answer is the first the client gets.
func TestHTTPExpectAtHead(t *testing.T) {
	be, _ := httpBackend(t)
	var heads atomic.Int64
	s := startRelay(t, be, Config{HTTPExpectUnheld: true, OnRequest: func(c *Conn, req *h1parse.Request, raw []byte) HTTPPlan {
		if req.Expect && len(raw) == req.HeadLen {
			heads.Add(1)
		}
		return HTTPPlan{Respond: []byte("HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n")}
	}})
	c, br := dialHTTP(t, s)
	io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
	if err != nil || resp.StatusCode != 417 || heads.Load() != 1 {
		t.Fatalf("first answer %v %v, heads alone %d: want the owner's 417 to the head", resp, err, heads.Load())
	}
}
