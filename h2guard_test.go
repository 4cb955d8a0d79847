package smartproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Tests of the HTTP/2 guard with a raw frame client over h2c (prior
// knowledge) on a loopback socket through a real proxy.

// h2Frame builds one frame.
func h2Frame(typ, flags byte, stream uint32, payload []byte) []byte {
	f := make([]byte, h2FrameHeaderLen, h2FrameHeaderLen+len(payload))
	f[0], f[1], f[2] = byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload))
	f[3], f[4] = typ, flags
	binary.BigEndian.PutUint32(f[5:], stream)
	return append(f, payload...)
}

// h2RequestBlock is an HPACK block for "method http://x/": static-table
// indices for :method (GET 0x82, POST 0x83), :scheme http (0x86) and
// :path / (0x84), and :authority x as a literal without indexing.
func h2RequestBlock(post bool) []byte {
	m := byte(0x82)
	if post {
		m = 0x83
	}
	return []byte{m, 0x86, 0x84, 0x01, 1, 'x'}
}

// h2RawConn is a raw HTTP/2 client connection whose frames from the
// server are read (so that the server is never blocked writing) and
// summarised.
type h2RawConn struct {
	net.Conn
	bw       *bufio.Writer
	closed   chan struct{} // the server closed the connection
	goaway   atomic.Int64  // error code of the GOAWAY received, -1 if none
	received atomic.Int64  // frames received
}

func dialH2C(t *testing.T, port int) *h2RawConn {
	t.Helper()
	return startH2Raw(t, dial(t, port), nil, true)
}

// startH2Raw sends the client preface and settings on conn (with extra
// frames after them) and, if read, starts reading the server's frames.
func startH2Raw(t *testing.T, conn net.Conn, extra [][]byte, read bool) *h2RawConn {
	t.Helper()
	c := &h2RawConn{Conn: conn, closed: make(chan struct{})}
	t.Cleanup(func() { _ = c.Close() })
	c.goaway.Store(-1)
	c.bw = bufio.NewWriterSize(c.Conn, 64<<10)
	_, _ = c.bw.WriteString(h2ClientPreface)
	_, _ = c.bw.Write(h2Frame(h2FrameSettings, 0, 0, nil))
	for _, f := range extra {
		_, _ = c.bw.Write(f)
	}
	require.NoError(t, c.bw.Flush())
	if read {
		go c.readFrames()
	}
	return c
}

func (c *h2RawConn) readFrames() {
	defer close(c.closed)
	r := bufio.NewReader(c.Conn)
	var hdr [h2FrameHeaderLen]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return
		}
		n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			return
		}
		c.received.Add(1)
		if hdr[3] == h2FrameGoAway && n >= 8 {
			c.goaway.Store(int64(binary.BigEndian.Uint32(payload[4:])))
		}
	}
}

// send writes frames, flushing every 64 KiB; false once the connection
// is closed or a GOAWAY came (a flood that went on would only make the
// proxy's close a reset, which can destroy the GOAWAY in the client's
// receive queue before the reader sees it).
func (c *h2RawConn) send(frames ...[]byte) bool {
	select {
	case <-c.closed:
		return false
	default:
	}
	if c.goaway.Load() != -1 {
		return false
	}
	for _, f := range frames {
		if _, err := c.bw.Write(f); err != nil {
			return false
		}
	}
	return true
}

// flood sends up to n rounds of frames(i) and reports how many rounds
// were sent before the proxy closed the connection, and whether it did
// within 5 s of the last round. (The count says little: loopback socket
// buffers take megabytes before the proxy reads any.)
func (c *h2RawConn) flood(n int, frames func(i int) [][]byte) (int, bool) {
	i := 0
	for ; i < n; i++ {
		if !c.send(frames(i)...) {
			break
		}
	}
	_ = c.bw.Flush()
	select {
	case <-c.closed:
		return i, true
	case <-time.After(5 * time.Second):
		return i, false
	}
}

// h2FloodProxy starts a proxy with one HTTP route (a path match keeps it in
// the HTTP layer) whose backend counts the requests it gets.
func h2FloodProxy(t *testing.T) (port int, requests *atomic.Int64) {
	t.Helper()
	requests = new(atomic.Int64)
	be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write([]byte("ok"))
	}))
	lp := newListenerPool(t)
	port = lp.port(t)
	r := httpRouteOn("web", port, be.addr())
	r.Match.Path = "/*"
	startTestProxy(t, lp, Options{Routes: []Route{r}})
	return port, requests
}

// TestH2RapidResetIsCut: streams opened and reset at once (CVE-2023-44487)
// end the connection after a few hundred, with GOAWAY ENHANCE_YOUR_CALM,
// and few of them reach the backend. Without the guard the connection
// takes all 20,000 and hundreds of requests reach the backend.
func TestH2RapidResetIsCut(t *testing.T) {
	t.Parallel()
	port, requests := h2FloodProxy(t)
	rapidReset(t, dialH2C(t, port), requests)
}

// TestH2RapidResetIsCutTLS: the same over h2 on a terminating route, where
// the guard takes the client preface off the stream itself.
func TestH2RapidResetIsCutTLS(t *testing.T) {
	t.Parallel()
	requests := new(atomic.Int64)
	be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		_, _ = w.Write([]byte("ok"))
	}))
	lp := newListenerPool(t)
	port := lp.port(t)
	r := terminateRouteOn("web", port, be.addr(), "www.example.com")
	r.Match.Path = "/*" // offers ALPN h2
	startTestProxy(t, lp, Options{Certificates: testCertStore(t), Routes: []Route{r}})
	conn, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port), insecureTLS("www.example.com", "h2"))
	require.NoError(t, err)
	require.Equal(t, "h2", conn.ConnectionState().NegotiatedProtocol)
	rapidReset(t, startH2Raw(t, conn, nil, true), requests)
}

func rapidReset(t *testing.T, c *h2RawConn, requests *atomic.Int64) {
	t.Helper()
	cancel := make([]byte, 4)
	binary.BigEndian.PutUint32(cancel, 0x8) // CANCEL
	block := h2RequestBlock(false)
	const streams = 20000
	sent, closed := c.flood(streams, func(i int) [][]byte {
		id := uint32(2*i + 1)
		return [][]byte{
			h2Frame(h2FrameHeaders, 0x4|h2FlagEndStream, id, block), // END_HEADERS|END_STREAM
			h2Frame(h2FrameRSTStream, 0, id, cancel),
		}
	})
	require.True(t, closed, "the connection stayed open after %d reset streams", sent)
	require.Equal(t, int64(h2ErrCalm), c.goaway.Load(), "GOAWAY ENHANCE_YOUR_CALM before the close")
	require.LessOrEqual(t, requests.Load(), int64(100), "requests that reached the backend")
	t.Logf("closed; %d of %d streams written, %d reached the backend", sent, streams, requests.Load())
}

// TestH2ControlFloodsAreCut: floods of frames that the server answers or
// processes without doing any request's work end the connection.
func TestH2ControlFloodsAreCut(t *testing.T) {
	t.Parallel()
	port, _ := h2FloodProxy(t)
	ping := make([]byte, 8)
	wu := make([]byte, 4)
	binary.BigEndian.PutUint32(wu, 1)
	prio := []byte{0, 0, 0, 0, 16} // depends on stream 0, weight 17
	for _, tc := range []struct {
		name  string
		open  bool // open a POST stream first (for DATA frames)
		frame func(i int) []byte
	}{
		{"PING", false, func(i int) []byte { return h2Frame(h2FramePing, 0, 0, ping) }},
		{"SETTINGS", false, func(i int) []byte { return h2Frame(h2FrameSettings, 0, 0, nil) }},
		{"WINDOW_UPDATE", false, func(i int) []byte { return h2Frame(h2FrameWindowUpdate, 0, 0, wu) }},
		{"PRIORITY", false, func(i int) []byte { return h2Frame(h2FramePriority, 0, uint32(2*i+101), prio) }},
		{"empty DATA", true, func(i int) []byte { return h2Frame(h2FrameData, 0, 1, nil) }},
		{"unknown type", false, func(i int) []byte { return h2Frame(0xfa, 0, 0, ping) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialH2C(t, port)
			if tc.open {
				require.True(t, c.send(h2Frame(h2FrameHeaders, 0x4, 1, h2RequestBlock(true))))
			}
			const frames = 50000
			sent, closed := c.flood(frames, func(i int) [][]byte { return [][]byte{tc.frame(i)} })
			require.True(t, closed, "the connection stayed open after %d frames", sent)
			require.Equal(t, int64(h2ErrCalm), c.goaway.Load(), "GOAWAY ENHANCE_YOUR_CALM before the close")
			require.Less(t, c.received.Load(), int64(5000), "frames the proxy sent back")
		})
	}
}

// TestH2HeavyClientIsNotCut: a demanding but legitimate client (1,000
// sequential requests, 100 concurrent ones ten times, a 32 MiB upload and
// a 32 MiB download, a burst of 200 requests cancelled in flight) keeps its
// one connection.
func TestH2HeavyClientIsNotCut(t *testing.T) {
	t.Parallel()
	big := bytes.Repeat([]byte("0123456789abcdef"), 2<<20) // 32 MiB
	be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/upload":
			n, _ := io.Copy(io.Discard, r.Body)
			_, _ = w.Write([]byte(strconv.FormatInt(n, 10)))
		case "/download":
			_, _ = w.Write(big)
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		default:
			_, _ = w.Write([]byte("ok"))
		}
	}))
	lp := newListenerPool(t)
	port := lp.port(t)
	r := httpRouteOn("web", port, be.addr())
	r.Match.Path = "/*"
	var logs syncBuffer
	startTestProxy(t, lp, Options{Routes: []Route{r}, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})

	var dials atomic.Int64
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	tr := &http.Transport{
		Protocols: &protos,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, "tcp", "127.0.0.1:"+strconv.Itoa(port))
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	get := func(path string) (string, error) {
		resp, err := client.Get("http://x" + path)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", errors.New(resp.Status)
		}
		return string(b), err
	}
	for range 1000 {
		body, err := get("/")
		require.NoError(t, err)
		require.Equal(t, "ok", body)
	}
	for range 10 {
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		for range 100 {
			wg.Go(func() {
				if _, err := get("/"); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
	}
	resp, err := client.Post("http://x/upload", "application/octet-stream", bytes.NewReader(big))
	require.NoError(t, err)
	n, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, strconv.Itoa(len(big)), string(n))
	body, err := get("/download")
	require.NoError(t, err)
	require.Equal(t, len(big), len(body))

	require.Equal(t, int64(1), dials.Load(), "every request went over the first connection")

	// A client giving up on every request it has in flight. Go's client
	// may open a new connection after that (it counts reset streams
	// against the stream limit until a PING comes back), so what proves
	// the guard left it alone is that it never cut a connection.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://x/slow", nil)
			if resp, err := client.Do(req); err == nil {
				resp.Body.Close()
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	cancel()
	wg.Wait()
	body, err = get("/")
	require.NoError(t, err)
	require.Equal(t, "ok", body)
	require.NotContains(t, logs.String(), "flood", "the guard cut a legitimate client")
}

// TestH2GuardStopKeepsGoAway: when the guard ends a connection while the
// server's output stands inside a frame, the server's next write only
// finishes that frame, the GOAWAY follows it, and the server's Close (it
// closes a connection whose write failed) waits for the guard's.
func TestH2GuardStopKeepsGoAway(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer client.Close()
	server, err := ln.Accept()
	require.NoError(t, err)
	g := newH2Guard(server, true, func(string, ...any) {})

	ack := h2Frame(h2FramePing, h2FlagAck, 0, make([]byte, 8))
	n, err := g.Write(ack[:5]) // the server's output stops inside a frame
	require.NoError(t, err)
	require.Equal(t, 5, n)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		g.stop("test")
	}()
	require.Eventually(t, g.abuse.Load, 5*time.Second, time.Millisecond)
	require.NoError(t, g.Close(), "the server's close waits for the guard's")
	rest := append(append([]byte(nil), ack[5:]...), ack...)
	n, err = g.Write(rest)
	require.ErrorIs(t, err, errH2Flood)
	require.Equal(t, len(ack)-5, n, "only the rest of the frame in progress")
	n, err = g.Write(ack)
	require.ErrorIs(t, err, errH2Flood)
	require.Zero(t, n)

	require.NoError(t, client.SetReadDeadline(time.Now().Add(5*time.Second)))
	got := make([]byte, len(ack))
	_, err = io.ReadFull(client, got)
	require.NoError(t, err)
	require.Equal(t, ack, got, "the frame in progress, whole")
	var hdr [h2FrameHeaderLen]byte
	_, err = io.ReadFull(client, hdr[:])
	require.NoError(t, err)
	require.Equal(t, byte(h2FrameGoAway), hdr[3])
	payload := make([]byte, int(hdr[0])<<16|int(hdr[1])<<8|int(hdr[2]))
	_, err = io.ReadFull(client, payload)
	require.NoError(t, err)
	require.Equal(t, uint32(h2ErrCalm), binary.BigEndian.Uint32(payload[4:]))
	_, err = client.Read(hdr[:])
	require.ErrorIs(t, err, io.EOF, "the guard half-closes after the GOAWAY")
	require.NoError(t, client.Close())
	<-stopped
}

// TestH2StreamResetDuringBodyKeepsConnection: a client that resets a
// stream while its request body is on the way to the backend costs that
// stream alone. The proxy's answer to the failed body once carried
// "Connection: close", on which the standard library's HTTP/2 server
// shuts the whole connection down (GOAWAY NO_ERROR); a CONTINUATION sent
// after the reset then got no GOAWAY PROTOCOL_ERROR of its own (h2spec
// 5.1 #10 failed now and then).
func TestH2StreamResetDuringBodyKeepsConnection(t *testing.T) {
	t.Parallel()
	port, requests := h2FloodProxy(t)
	c := dialH2C(t, port)
	cancel := make([]byte, 4)
	binary.BigEndian.PutUint32(cancel, 0x8) // CANCEL
	require.True(t, c.send(
		h2Frame(h2FrameHeaders, 0x4, 1, h2RequestBlock(true)), // END_HEADERS: a body follows
		h2Frame(h2FrameData, 0, 1, []byte("part of a body"))))
	require.NoError(t, c.bw.Flush())
	require.Eventually(t, func() bool { return requests.Load() == 1 }, 5*time.Second, 5*time.Millisecond,
		"the backend reads the body")
	require.True(t, c.send(h2Frame(h2FrameRSTStream, 0, 1, cancel)))
	require.NoError(t, c.bw.Flush())
	time.Sleep(200 * time.Millisecond) // the handler answers the failed body meanwhile
	require.True(t, c.send(h2Frame(h2FrameHeaders, 0x4|h2FlagEndStream, 3, h2RequestBlock(false))))
	require.NoError(t, c.bw.Flush())
	require.Eventually(t, func() bool { return requests.Load() == 2 }, 5*time.Second, 5*time.Millisecond,
		"a stream opened after the reset reaches the backend")
	require.Equal(t, int64(-1), c.goaway.Load(), "GOAWAY received")
}
