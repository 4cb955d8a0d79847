//go:build linux

package evloop

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/h1parse"
)

func fdCount(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// No fd is left after Close with pooled connections, an exchange in flight, and Shutdown.
func TestHTTPHostileNoFDLeak(t *testing.T) {
	be, _ := httpBackend(t)
	hold := make(chan struct{})
	slow := backend(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err == nil {
			_, _ = io.Copy(io.Discard, br) // until the loop closes it
		}
	})
	defer close(hold)
	for _, how := range []string{"close", "shutdown"} {
		before := fdCount(t)
		relay := startRelayPlan(be)
		s := startRelay(t, be, Config{OnRequest: func(c *Conn, req *h1parse.Request, raw []byte) HTTPPlan {
			p := relay(c, req, raw)
			if string(req.Target) == "/slow" {
				p.Target = slow
			}
			return p
		}})
		var cs []net.Conn
		for i := range 10 {
			c, br := dialHTTP(t, s)
			cs = append(cs, c)
			if i == 9 {
				io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
				continue
			}
			io.WriteString(c, "GET /len/3 HTTP/1.1\r\nHost: a\r\n\r\n")
			readResponse(t, br, "GET")
		}
		time.Sleep(100 * time.Millisecond)
		if how == "close" {
			s.Close()
		} else {
			s.Shutdown()
			time.Sleep(200 * time.Millisecond)
			cs[9].Close()
			time.Sleep(200 * time.Millisecond)
			s.Close()
		}
		<-s.Done()
		for _, c := range cs {
			c.Close()
		}
		time.Sleep(200 * time.Millisecond)
		if after := fdCount(t); after > before {
			t.Errorf("%s: fds %d before, %d after", how, before, after)
		}
	}
}

// The head deadline must not stay armed while an answer of the owner's waits for a slow
// client: a 400 appended after the answer would be a response to no request.
func TestHTTPHostileNoHeadTimeoutAfterAnswer(t *testing.T) {
	big := append([]byte(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", 8<<20)), pattern(8<<20)...)
	s := startRelay(t, netip.AddrPort{}, Config{HTTPHeadTimeout: 200 * time.Millisecond, WriteTimeout: 5 * time.Second,
		OnRequest: func(c *Conn, req *h1parse.Request, raw []byte) HTTPPlan { return HTTPPlan{Respond: big} }})
	c, br := dialHTTP(t, s)
	io.WriteString(c, "GET / HTTP/1.1\r\n")
	time.Sleep(50 * time.Millisecond)
	io.WriteString(c, "Host: a\r\n\r\n")
	time.Sleep(500 * time.Millisecond) // not reading: the answer waits in out
	readResponse(t, br, "GET")
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if b, _ := br.Peek(12); len(b) > 0 {
		t.Fatalf("after the answer: %q", b)
	}
}

// Bytes after a bodiless or complete response in the same read are dropped and the
// connection is not pooled: the next request gets its own answer.
func TestHTTPHostileExtraAfterResponseNotPooled(t *testing.T) {
	for name, first := range map[string]string{
		"204 with body":  "HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL",
		"304 with body":  "HTTP/1.1 304 Not Modified\r\nContent-Length: 4\r\n\r\nEVIL",
		"CL extra":       "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL",
		"chunked extra":  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL",
		"1xx then final": "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	} {
		t.Run(name, func(t *testing.T) {
			var reqs atomic.Int64
			be := backend(t, func(c *net.TCPConn) {
				br := bufio.NewReader(c)
				for {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					if reqs.Add(1) == 1 {
						io.WriteString(c, first)
						continue
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
				}
			})
			s := startRelay(t, be, Config{Loops: 1})
			c, br := dialHTTP(t, s)
			io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
			for {
				resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode >= 200 {
					io.ReadAll(resp.Body)
					break
				}
			}
			if _, b := readResponse(t, br, "GET"); string(b) != "good" {
				t.Fatalf("second got %q", b)
			}
		})
	}
}

// The cost of one parse of a near-cap head (paid once per request: a held body's reads do
// not parse the head again).
func BenchmarkHTTPParseLargeHead(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 49152\r\n")
	for i := 0; sb.Len() < 60000; i++ {
		fmt.Fprintf(&sb, "X-F%d: %s\r\n", i, strings.Repeat("v", 640))
	}
	sb.WriteString("\r\n")
	buf := []byte(sb.String())
	var r h1parse.Request
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if err := h1parse.Parse(buf, &r); err != nil {
			b.Fatal(err)
		}
	}
}

// An interim response that arrives alone (103 Early Hints, sent before the final one is
// ready) is relayed at once, not held until the final head.
func TestHTTPHostileInterimAloneRelayed(t *testing.T) {
	be := backend(t, func(c *net.TCPConn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
			io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
			time.Sleep(100 * time.Millisecond)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	s := startRelay(t, be, Config{})
	c, br := dialHTTP(t, s)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 103 {
		t.Fatalf("first response %d: the 103 was dropped", resp.StatusCode)
	}
}

// The idle, write and pool-idle timeouts fire.
func TestHTTPHostileTimeoutsFire(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		closed := make(chan error, 1)
		s := startRelay(t, netip.AddrPort{}, Config{HTTPIdleTimeout: 200 * time.Millisecond,
			OnClose: func(c *Conn, in, out int64, err error) { closed <- err }})
		dialHTTP(t, s)
		select {
		case err := <-closed:
			if err != ErrHTTPIdleTimeout {
				t.Fatal(err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("idle timeout did not fire")
		}
	})
	t.Run("write", func(t *testing.T) {
		be, _ := httpBackend(t)
		closed := make(chan error, 1)
		s := startRelay(t, be, Config{WriteTimeout: 200 * time.Millisecond,
			OnClose: func(c *Conn, in, out int64, err error) { closed <- err }})
		c, _ := dialHTTP(t, s)
		io.WriteString(c, "GET /len/50000000 HTTP/1.1\r\nHost: a\r\n\r\n") // never read
		select {
		case err := <-closed:
			if err != ErrWriteTimeout {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second): // the client's buffers fill first: slow under -race and load
			t.Fatal("write timeout did not fire")
		}
	})
	t.Run("pool idle", func(t *testing.T) {
		gone := make(chan struct{}, 1)
		be := backend(t, func(c *net.TCPConn) {
			br := bufio.NewReader(c)
			for {
				if _, err := http.ReadRequest(br); err != nil {
					gone <- struct{}{}
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
		})
		s := startRelay(t, be, Config{HTTPPoolIdleTimeout: 200 * time.Millisecond})
		c, br := dialHTTP(t, s)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		readResponse(t, br, "GET")
		select {
		case <-gone:
		case <-time.After(2 * time.Second):
			t.Fatal("the pooled connection was not closed at its idle timeout")
		}
	})
}

// A backend that refuses a large body early (413, Connection: close) and closes: the send
// that fails must not end the exchange before the answer waiting in the socket is read: the
// client gets the backend's 413, not the owner's 502.
func TestHTTPHostileEarlyRefusalRelayed(t *testing.T) {
	be := backend(t, func(c *net.TCPConn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
			io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			c.SetLinger(0)
		}
	})
	const bodyLen = 8 << 20
	s := startRelay(t, be, Config{HTTPMaxHeld: 16 << 20, OnRequest: startRelayPlan(be)})
	got := map[int]int{}
	for range 10 {
		c, br := dialHTTP(t, s)
		go func() {
			fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", bodyLen)
			c.Write(pattern(bodyLen))
		}()
		resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
		if err != nil {
			got[0]++
			continue
		}
		got[resp.StatusCode]++
		c.Close()
	}
	if got[413] != 10 {
		t.Fatalf("statuses %v, want 10 x 413", got)
	}
}
