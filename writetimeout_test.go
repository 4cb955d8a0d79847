package smartproxy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Tests of Options.WriteTimeout (the write-progress timeout) on the HTTP
// layer and on forwarded TCP, with real loopback sockets.

const (
	wtTimeout  = time.Second
	wtResponse = 64 << 20 // more than loopback socket buffers hold
)

// bigWriter writes wtResponse bytes in 32 KiB chunks until the write fails.
func bigWriter(w io.Writer) {
	chunk := make([]byte, 32<<10)
	for n := 0; n < wtResponse; n += len(chunk) {
		if _, err := w.Write(chunk); err != nil {
			return
		}
	}
}

// readThenStall reads r steadily (128 KiB every 10 ms, far faster than a
// 1 s timeout needs) for progressFor, which must not end the connection,
// then stops reading for 3 timeouts, then reads what is left. It returns
// the bytes read while progressing and in all; a connection closed for
// the stall ends the last read early, one left open delivers everything.
func readThenStall(t *testing.T, c net.Conn, r io.Reader, progressFor time.Duration) (progress, total int64) {
	t.Helper()
	buf := make([]byte, 128<<10)
	for end := time.Now().Add(progressFor); time.Now().Before(end); {
		n, err := io.ReadFull(r, buf)
		progress += int64(n)
		require.NoError(t, err, "cut while reading steadily, after %d bytes", progress)
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(3 * wtTimeout)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	n, err := io.Copy(io.Discard, r)
	require.False(t, errors.Is(err, os.ErrDeadlineExceeded), "neither closed nor complete: %v", err)
	return progress, progress + n
}

// TestWriteTimeoutHTTP: an HTTP client that reads a large response steadily
// is served; once it stops reading, the proxy closes its connection after
// about WriteTimeout instead of holding it forever.
func TestWriteTimeoutHTTP(t *testing.T) {
	t.Parallel()
	be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { bigWriter(w) }))
	lp := newListenerPool(t)
	port := lp.port(t)
	r := httpRouteOn("web", port, be.addr())
	r.Match.Path = "/*" // HTTP layer, not TCP forwarding
	startTestProxy(t, lp, Options{Routes: []Route{r}, WriteTimeout: wtTimeout})

	c := dial(t, port)
	defer c.Close()
	_, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	require.NoError(t, err)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	progress, total := readThenStall(t, c, resp.Body, 1500*time.Millisecond)
	t.Logf("read %d bytes steadily, %d in all of %d", progress, total, wtResponse)
	require.Less(t, total, int64(wtResponse), "the stalled client was not cut")
}

// TestWriteTimeoutTCP: the same on a forwarded TCP connection (the splice
// path): a backend streaming to a client that stops reading is cut.
func TestWriteTimeoutTCP(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "127.0.0.1:0", func(c net.Conn) { bigWriter(c) })
	lp := newListenerPool(t)
	port := lp.port(t)
	startTestProxy(t, lp, Options{Routes: []Route{httpRouteOn("tcp", port, be.addr())}, WriteTimeout: wtTimeout})

	c := dial(t, port)
	defer c.Close()
	progress, total := readThenStall(t, c, c, 1500*time.Millisecond)
	t.Logf("read %d bytes steadily, %d in all of %d", progress, total, wtResponse)
	require.Less(t, total, int64(wtResponse), "the stalled client was not cut")
}

// TestWriteTimeoutH2: an h2c client that opens its flow-control windows,
// asks for a large response and never reads is cut (the timeout sits
// beneath the HTTP/2 server, in the connection's meter).
func TestWriteTimeoutH2(t *testing.T) {
	t.Parallel()
	be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { bigWriter(w) }))
	lp := newListenerPool(t)
	port := lp.port(t)
	r := httpRouteOn("web", port, be.addr())
	r.Match.Path = "/*"
	startTestProxy(t, lp, Options{Routes: []Route{r}, WriteTimeout: wtTimeout})

	window := make([]byte, 6) // SETTINGS_INITIAL_WINDOW_SIZE = 2^31-1
	binary.BigEndian.PutUint16(window, 0x4)
	binary.BigEndian.PutUint32(window[2:], 1<<31-1)
	grow := make([]byte, 4) // the connection window to 2^31-1 too
	binary.BigEndian.PutUint32(grow, 1<<31-1-65535)
	c := startH2Raw(t, dial(t, port), [][]byte{
		h2Frame(h2FrameSettings, 0, 0, window),
		h2Frame(h2FrameWindowUpdate, 0, 0, grow),
		h2Frame(h2FrameHeaders, 0x4|h2FlagEndStream, 1, h2RequestBlock(false)),
	}, false)
	// Read nothing: the proxy's writes stall once the socket buffers are
	// full, which takes a while from a cold start on a loaded machine.
	time.Sleep(5 * wtTimeout)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	n, err := io.Copy(io.Discard, c)
	require.False(t, errors.Is(err, os.ErrDeadlineExceeded), "neither closed nor complete after %d bytes: %v", n, err)
	t.Logf("read %d bytes after the stall", n)
	require.Less(t, n, int64(wtResponse), "the stalled client was not cut")
}
