package smartproxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestHeadTap: a tap keeps what is read only between start and stop, at
// most tapSize bytes, and half-closes the connection beneath (which
// http.Transport's upgraded bodies ask of it for ReverseProxy).
func TestHeadTap(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = ln.Close() }()
	peerc := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(peerc)
			return
		}
		peerc <- c
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	peer := <-peerc
	require.NotNil(t, peer)
	defer func() { _ = peer.Close() }()
	tap := &headTap{Conn: raw}
	defer func() { _ = tap.Close() }()
	require.NoError(t, peer.SetDeadline(time.Now().Add(5*time.Second)))
	require.NoError(t, tap.SetDeadline(time.Now().Add(5*time.Second)))

	read := func(n int) string {
		b := make([]byte, n)
		_, err := io.ReadFull(tap, b)
		require.NoError(t, err)
		return string(b)
	}
	_, err = io.WriteString(peer, "before")
	require.NoError(t, err)
	require.Equal(t, "before", read(6))
	tap.start()
	big := strings.Repeat("h", tapSize+100)
	go func() { _, _ = io.WriteString(peer, big) }()
	require.Equal(t, big, read(len(big)))
	rec, n := tap.stop()
	require.Equal(t, tapSize, n, "kept up to tapSize")
	require.Equal(t, big[:tapSize], string(rec[:n]))
	tapPool.Put(rec)
	rec, n = tap.stop()
	require.Nil(t, rec, "nothing kept after stop")
	require.Zero(t, n)

	require.NoError(t, tap.CloseWrite())
	got, err := io.ReadAll(peer)
	require.NoError(t, err, "the peer reads EOF")
	require.Empty(t, got)
	_, err = io.WriteString(peer, "still")
	require.NoError(t, err)
	require.Equal(t, "still", read(5), "the tap still reads")
}

// TestBackendTapUpgrade: an upgraded connection (WebSocket), which both
// stacks relay (relayUpgrade) over http.Transport's HTTP/1.1
// connections (headTaps), carries the client's bytes and its half-close
// to the backend.
func TestBackendTapUpgrade(t *testing.T) {
	t.Parallel()
	got := make(chan string, 2)
	be := startBackend(t, "127.0.0.1:0", func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(br) // to the client's half-close
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(b)
	})
	lp := newListenerPool(t)
	for _, fast := range []bool{false, true} {
		port := lp.port(t)
		startStackTestProxy(t, lp, Options{Routes: []Route{httpRouteOn("ws", port, be.addr(), "a.test")}}, fast)
		c := dial(t, port)
		require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
		_, err := io.WriteString(c, rawReq("GET", "/ws", "a.test", "", "Connection: Upgrade", "Upgrade: websocket",
			"Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="))
		require.NoError(t, err)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		require.NoError(t, err)
		require.Equal(t, 101, resp.StatusCode)
		_, err = io.WriteString(c, "hi")
		require.NoError(t, err)
		require.NoError(t, c.CloseWrite())
		require.Equal(t, "hi", <-got, "fast %v", fast)
		_ = c.Close()
	}
}
