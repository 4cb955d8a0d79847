package smartproxy

import (
	"github.com/gosmartproxy/smartproxy/connection"

	"bufio"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Streaming through the HTTP layer: server-sent events, large bodies and
// WebSockets (with a minimal hand-written frame codec).

func TestHTTPServerSentEventsFlushAtOnce(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	second := make(chan struct{})
	be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-second:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "data: two\n\n")
	}))
	startTestProxy(t, lp, Options{Routes: []Route{httpRouteOn("sse", port, be.addr(), "sse.test")}})
	c, _ := proxyClient(t, port, nil, false)
	resp, err := c.Get("http://sse.test/events")
	require.NoError(t, err)
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	require.NoError(t, err, "the first event arrives before the second is written")
	require.Equal(t, "data: one\n", line)
	close(second)
	rest, err := io.ReadAll(br)
	require.NoError(t, err)
	require.Equal(t, "\ndata: two\n\n", string(rest))
}

// patternReader yields n bytes of a deterministic stream without holding
// them in memory.
type patternReader struct {
	n, off int64
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	m := min(int64(len(p)), r.n-r.off)
	for i := range m {
		p[i] = byte((r.off + i) * 7 % 251)
	}
	r.off += m
	return int(m), nil
}

func TestHTTPLargeBodiesStream(t *testing.T) {
	// Not parallel: runtime.ReadMemStats counts the allocations of the whole process.
	const size = 32 << 20
	lp := newListenerPool(t)
	port := lp.port(t)
	be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			h := sha256.New()
			n, _ := io.Copy(h, r.Body)
			_, _ = fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
			return
		}
		_, _ = io.Copy(w, &patternReader{n: size})
	}))
	startTestProxy(t, lp, Options{Routes: []Route{httpRouteOn("big", port, be.addr(), "big.test")}})
	c, _ := proxyClient(t, port, nil, false)

	want := sha256.New()
	_, _ = io.Copy(want, &patternReader{n: size})
	wantSum := hex.EncodeToString(want.Sum(nil))

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	resp, body := do(t, c, "POST", "http://big.test/up", nil, &patternReader{n: size})
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, fmt.Sprintf("%d %s", size, wantSum), body)

	resp2, err := c.Get("http://big.test/down")
	require.NoError(t, err)
	got := sha256.New()
	n, err := io.Copy(got, resp2.Body)
	_ = resp2.Body.Close()
	require.NoError(t, err)
	require.Equal(t, int64(size), n)
	require.Equal(t, wantSum, hex.EncodeToString(got.Sum(nil)))
	runtime.ReadMemStats(&after)
	// 64 MiB went through client, proxy and backend: buffering either
	// body anywhere would allocate at least 32 MiB.
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(16<<20), "bodies are streamed, not buffered")
}

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// wsEchoBackend accepts WebSocket upgrades and echoes every data frame.
func wsEchoBackend(t testing.TB) *echoServer {
	return startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "websocket only", http.StatusBadRequest)
			return
		}
		sum := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + wsGUID))
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			base64.StdEncoding.EncodeToString(sum[:]))
		_ = brw.Flush()
		for {
			op, payload, err := wsRead(brw.Reader)
			if err != nil {
				return
			}
			if err := wsWrite(conn, op, payload, false); err != nil || op == 0x8 {
				return
			}
		}
	}))
}

// wsDial opens a WebSocket through the proxy on port for host.
func wsDial(t testing.TB, port int, host, path string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	c := dial(t, port)
	_, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", path, host)
	require.NoError(t, err)
	br := bufio.NewReader(c)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Time{}))
	return c, br, resp
}

func wsWrite(w io.Writer, op byte, payload []byte, mask bool) error {
	hdr := []byte{0x80 | op, 0}
	var mb byte
	if mask {
		mb = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		hdr[1] = mb | byte(n)
	case n < 1<<16:
		hdr[1] = mb | 126
		hdr = binary.BigEndian.AppendUint16(hdr, uint16(n))
	default:
		hdr[1] = mb | 127
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	body := payload
	if mask {
		key := []byte{1, 2, 3, 4}
		hdr = append(hdr, key...)
		body = make([]byte, len(payload))
		for i := range payload {
			body[i] = payload[i] ^ key[i%4]
		}
	}
	_, err := w.Write(append(hdr, body...))
	return err
}

func wsRead(r *bufio.Reader) (byte, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	var key [4]byte
	masked := h[1]&0x80 != 0
	if masked {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return 0, nil, err
		}
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, nil, err
	}
	if masked {
		for i := range p {
			p[i] ^= key[i%4]
		}
	}
	return h[0] & 0x0f, p, nil
}

func wsEcho(t testing.TB, c net.Conn, br *bufio.Reader, msg string) {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(3*time.Second)))
	require.NoError(t, wsWrite(c, 0x1, []byte(msg), true))
	op, p, err := wsRead(br)
	require.NoError(t, err)
	require.Equal(t, byte(0x1), op)
	require.Equal(t, msg, string(p))
	require.NoError(t, c.SetDeadline(time.Time{}))
}

func TestHTTPWebSocketSurvivesIdle(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := wsEchoBackend(t)
	p := newTestProxy(t, lp, Options{
		InitialDataTimeout: 500 * time.Millisecond, // the HTTP read-header timeout
		InactivityTimeout:  20 * time.Second,
		Routes:             []Route{WebSocketRouteOn("ws", port, "/ws", be.addr())},
	})
	p.http.idleTimeout = 300 * time.Millisecond // the keep-alive idle timeout
	require.NoError(t, p.Start(t.Context()))

	c, br, resp := wsDial(t, port, "ws.test", "/ws")
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	wsEcho(t, c, br, "hello")
	wsEcho(t, c, br, strings.Repeat("x", 70000)) // a 64-bit length frame
	time.Sleep(2 * time.Second)                  // idle: no HTTP timeout may cut it
	wsEcho(t, c, br, "still here")
	m := p.Metrics()
	require.Equal(t, 1, m.Active)
	require.Positive(t, m.BytesIn)
	require.NoError(t, wsWrite(c, 0x8, nil, true))
	op, _, err := wsRead(br)
	require.NoError(t, err)
	require.Equal(t, byte(0x8), op)
	_ = c.Close()
	requireNoRecords(t, p)
}

func TestHTTPWebSocketInactivityStillApplies(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := wsEchoBackend(t)
	p := startTestProxy(t, lp, Options{
		InactivityTimeout: 600 * time.Millisecond,
		Routes:            []Route{WebSocketRouteOn("ws", port, "/ws", be.addr())},
	})
	c, br, resp := wsDial(t, port, "ws.test", "/ws")
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	wsEcho(t, c, br, "hello")
	el, _ := awaitClose(t, c, 5*time.Second)
	require.Greater(t, el, 400*time.Millisecond)
	requireNoRecords(t, p)
}

func TestHTTPWebSocketDisabled(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := wsEchoBackend(t)
	r := WebSocketRouteOn("ws", port, "/ws", be.addr())
	off := false
	r.Action.WebSocket.Enabled = &off
	startTestProxy(t, lp, Options{Routes: []Route{r}})
	c, _, resp := wsDial(t, port, "ws.test", "/ws")
	defer c.Close()
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
}

// WebSocketRouteOn is WebSocketRoute on a test port.
func WebSocketRouteOn(name string, port int, path, target string) Route {
	r := WebSocketRoute(name, []string{"ws.test"}, path, target)
	r.Match.Ports = Ports(port)
	return r
}

// TestHTTPWebSocketKeepAliveTreatment: with a short inactivity timeout,
// "extended" (timeout x multiplier) and "immortal" keep an idle WebSocket
// open well past the timeout, where "standard" closes it
// (TestHTTPWebSocketInactivityStillApplies).
func TestHTTPWebSocketKeepAliveTreatment(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		treatment  connection.KeepAliveTreatment
		multiplier float64
	}{
		{connection.KeepAliveExtended, 20},
		{connection.KeepAliveImmortal, 0},
	} {
		t.Run(string(tc.treatment), func(t *testing.T) {
			lp := newListenerPool(t)
			port := lp.port(t)
			be := wsEchoBackend(t)
			p := startTestProxy(t, lp, Options{
				InactivityTimeout:             300 * time.Millisecond,
				KeepAliveTreatment:            tc.treatment,
				KeepAliveInactivityMultiplier: tc.multiplier,
				Routes:                        []Route{WebSocketRouteOn("ws", port, "/ws", be.addr())},
			})
			c, br, resp := wsDial(t, port, "ws.test", "/ws")
			require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
			wsEcho(t, c, br, "hello")
			time.Sleep(1500 * time.Millisecond) // five inactivity timeouts
			wsEcho(t, c, br, "still here")
			require.Equal(t, 1, p.Metrics().Active)
			_ = c.Close()
			requireNoRecords(t, p)
		})
	}
}
