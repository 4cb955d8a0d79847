//go:build linux

package evloop

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// A request that comes in pieces (its head, then its held body) is reported to OnHTTPReading
// at each piece that leaves it waiting, before any of it is counted; OnData counts its bytes
// once, when it is served.
func TestHTTPReadingReportsPieces(t *testing.T) {
	t.Parallel()
	be, _ := httpBackend(t)
	var reading, counted atomic.Int64
	closed := make(chan int64, 1)
	s := startRelay(t, be, Config{
		OnHTTPReading: func(*Conn) { reading.Add(1) },
		OnData: func(_ *Conn, clientToBackend bool, n int) {
			if clientToBackend {
				counted.Add(int64(n))
			}
		},
		OnClose: func(_ *Conn, in, _ int64, _ error) { closed <- in },
	})
	c, br := dialHTTP(t, s)
	body := pattern(3000)
	head := fmt.Sprintf("POST /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: %d\r\n\r\n", len(body))
	pieces := [][]byte{[]byte(head[:10]), []byte(head[10:]), body[:1000], body[1000:2000]}
	for i, p := range pieces {
		before := reading.Load()
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
		// Each piece leaves the request waiting: the loop says so once it has read it.
		for deadline := time.Now().Add(5 * time.Second); reading.Load() == before; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("piece %d: no OnHTTPReading", i)
			}
		}
		if n := counted.Load(); n != 0 {
			t.Fatalf("piece %d: %d bytes counted before the request was served", i, n)
		}
	}
	if _, err := c.Write(body[2000:]); err != nil {
		t.Fatal(err)
	}
	if resp, b := readResponse(t, br, "POST"); resp.StatusCode != 200 || !bytes.Equal(b, body) {
		t.Fatalf("status %d, %d bytes back", resp.StatusCode, len(b))
	}
	select {
	case in := <-closed:
		if want := int64(len(head) + len(body)); in != want || counted.Load() != want {
			t.Fatalf("client bytes: OnClose %d, OnData %d, want %d each", in, counted.Load(), want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the connection did not close")
	}
}
