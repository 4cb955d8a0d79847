package h1client

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// slowBody gives its pieces one Read each, pausing before all but the
// first (a client's upload arriving over time).
type slowBody struct {
	pieces []string
	pause  time.Duration
	n      int
}

func (b *slowBody) Read(p []byte) (int, error) {
	if b.n >= len(b.pieces) {
		return 0, io.EOF
	}
	if b.n > 0 {
		time.Sleep(b.pause)
	}
	n := copy(p, b.pieces[b.n])
	b.n++
	return n, nil
}

// TestEarlyResponseLastWrite: a backend that answers as soon as
// it has the head (a 403, as nginx's "return 403" does for a POST) and
// then discards the body and keeps the connection open. The answer is
// in the socket before Send's last body write, which writeAwait makes
// inside a RawConn read whose start cleared the poller's readiness: no
// later edge comes, so the wait lasts the whole HeadTimeout and the
// read after it fails on the expired deadline, although the 403 sat in
// the socket all along (a 504 where the backend answered 403 at once).
func TestEarlyResponseLastWrite(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		r, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = http.ReadRequest(br) // keep-alive: waits for the next request
	})
	c := newTestClient(t, Config{HeadTimeout: 2 * time.Second})
	body := &slowBody{pieces: []string{"aaaaa", "bbbbb"}, pause: 100 * time.Millisecond}
	start := time.Now()
	ex, err := c.Send(t.Context(), ln.Addr().String(), Outgoing{
		Head: []byte("POST / HTTP/1.1\r\nHost: b\r\nContent-Length: 10\r\n\r\n"), Body: body})
	took := time.Since(start)
	require.NoError(t, err, "after %v", took)
	defer ex.Close()
	require.Equal(t, 403, ex.Resp.Status)
	require.Less(t, took, time.Second, "the 403 was there after ~100ms")
}
