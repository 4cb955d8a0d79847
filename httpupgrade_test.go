package smartproxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/connection"
	"github.com/stretchr/testify/require"
)

// Upgraded streams (a 101 exchange: WebSocket and the like) on both HTTP
// stacks, with raw loopback clients and backends: half-close in either
// direction, the half-close timeout, a kill by the connection manager,
// and the bytes either side sent right behind its head.

// upgradeHead is an upgrade request; the raw backends answer it with
// switched101.
var upgradeHead = rawReq("GET", "/ws", "a.test", "", "Connection: Upgrade", "Upgrade: websocket")

const switched101 = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"

// upgradeBackend starts a backend that reads one request and runs
// stream on the connection (br holds what came behind the head).
func upgradeBackend(t *testing.T, stream func(c *net.TCPConn, br *bufio.Reader)) *backend {
	t.Helper()
	return startBackend(t, "127.0.0.1:0", func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second)) // a broken proxy must not hang the test
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		stream(c.(*net.TCPConn), br)
	})
}

// upgradeClient sends upgradeHead and early (in one write) to port and
// reads the 101's head, whose length it returns; the reader holds what
// came behind it.
func upgradeClient(t *testing.T, port int, early string) (*net.TCPConn, *bufio.Reader, int) {
	t.Helper()
	c := dial(t, port)
	br, headLen := upgradeOn(t, c, early)
	return c, br, headLen
}

// upgradeOn is upgradeClient on a connection of the caller's.
func upgradeOn(t *testing.T, c net.Conn, early string) (*bufio.Reader, int) {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err := io.WriteString(c, upgradeHead+early)
	require.NoError(t, err)
	br := bufio.NewReader(c)
	var head strings.Builder
	for !strings.HasSuffix(head.String(), "\r\n\r\n") {
		line, err := br.ReadString('\n')
		require.NoError(t, err, "the head so far: %q", head.String()+line)
		head.WriteString(line)
	}
	require.True(t, strings.HasPrefix(head.String(), "HTTP/1.1 101 "), "%q", head.String())
	return br, head.Len()
}

// bothStacks runs test on net/http's server and on the fast path, each
// with its own proxy built from opts and the route that route builds for
// its port.
func bothStacks(t *testing.T, opts Options, route func(port int) Route, test func(t *testing.T, p *Proxy, port int)) {
	for _, fast := range []bool{false, true} {
		t.Run(map[bool]string{false: "nethttp", true: "fast"}[fast], func(t *testing.T) {
			t.Parallel()
			lp := newListenerPool(t)
			port := lp.port(t)
			o := opts
			o.Routes = []Route{route(port)}
			test(t, startStackTestProxy(t, lp, o, fast), port)
		})
	}
}

// plainTo is the HTTP route for a.test to addr.
func plainTo(addr string) func(port int) Route {
	return func(port int) Route { return httpRouteOn("ws", port, addr, "a.test") }
}

// TestUpgradeClientHalfClose: the client sends 1 MiB after the 101 and
// half-closes; the backend, which sent bytes in the write of its 101
// head, answers with all it read only once it read the EOF. The client
// gets the backend's early bytes, then the whole answer byte for byte,
// then EOF; the proxy counted exactly what the client sent and received.
func TestUpgradeClientHalfClose(t *testing.T) {
	t.Parallel()
	payload := make([]byte, 1<<20)
	_, _ = io.ReadFull(&patternReader{n: int64(len(payload))}, payload)
	be := upgradeBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
		if _, err := io.WriteString(c, switched101+"hello"); err != nil {
			return
		}
		got, err := io.ReadAll(br) // to the client's half-close
		if err != nil {
			return
		}
		_, _ = c.Write(got)
	})
	bothStacks(t, Options{}, plainTo(be.addr()), func(t *testing.T, p *Proxy, port int) {
		c, br, headLen := upgradeClient(t, port, "")
		_, err := c.Write(payload)
		require.NoError(t, err)
		require.NoError(t, c.CloseWrite())
		got, err := io.ReadAll(br)
		require.NoError(t, err, "the answer, then EOF")
		require.Equal(t, "hello", string(got[:min(len(got), 5)]))
		require.True(t, bytes.Equal(payload, got[min(len(got), 5):]), "the answer is the payload byte for byte (got %d bytes)", len(got))
		requireNoRecords(t, p)
		m := p.Metrics()
		require.Equal(t, uint64(len(upgradeHead)+len(payload)), m.BytesIn)
		require.Equal(t, uint64(headLen+len(got)), m.BytesOut)
	})
}

// TestUpgradeEarlyBytes: bytes the client sent in the write of its
// upgrade head (read by the proxy with the head) reach the backend first,
// and bytes the backend sent in the write of its 101 head reach the
// client right behind it.
func TestUpgradeEarlyBytes(t *testing.T) {
	t.Parallel()
	be := upgradeBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
		if _, err := io.WriteString(c, switched101+"hello "); err == nil {
			_, _ = io.Copy(c, br) // echo
		}
	})
	bothStacks(t, Options{}, plainTo(be.addr()), func(t *testing.T, p *Proxy, port int) {
		c, br, _ := upgradeClient(t, port, "early ")
		_, err := io.WriteString(c, "later")
		require.NoError(t, err)
		got := make([]byte, len("hello early later"))
		_, err = io.ReadFull(br, got)
		require.NoError(t, err, "got %q", got)
		require.Equal(t, "hello early later", string(got))
		require.NoError(t, c.Close())
		requireNoRecords(t, p)
	})
}

// TestUpgradeBackendHalfClose: the backend says its last word and
// half-closes; the client reads it and EOF, and can still send: the
// backend reads that to the client's own half-close.
func TestUpgradeBackendHalfClose(t *testing.T) {
	t.Parallel()
	got := make(chan string, 2)
	be := upgradeBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
		if _, err := io.WriteString(c, switched101+"bye"); err != nil || c.CloseWrite() != nil {
			return
		}
		b, err := io.ReadAll(br)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(b)
	})
	bothStacks(t, Options{}, plainTo(be.addr()), func(t *testing.T, p *Proxy, port int) {
		c, br, _ := upgradeClient(t, port, "")
		last, err := io.ReadAll(br)
		require.NoError(t, err, "the backend's last bytes, then EOF")
		require.Equal(t, "bye", string(last))
		_, err = io.WriteString(c, "still sending")
		require.NoError(t, err)
		require.NoError(t, c.CloseWrite())
		require.Equal(t, "still sending", <-got)
		requireNoRecords(t, p)
	})
}

// silentBackend switches protocols, reads to the client's half-close and
// then neither sends nor closes until the test ends.
func silentBackend(t *testing.T) *backend {
	t.Helper()
	release := make(chan struct{})
	be := upgradeBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
		if _, err := io.WriteString(c, switched101); err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, br)
		<-release
	})
	t.Cleanup(func() { close(release) }) // before the backend's cleanup joins its handler
	return be
}

// requireNoLease: nothing holds addr any more (least-connections' count),
// so the upgraded stream's backend side was closed.
func requireNoLease(t *testing.T, p *Proxy, addr string) {
	t.Helper()
	require.Eventually(t, func() bool { return statusOf(t, p, addr).ActiveConnections == 0 }, 5*time.Second, 5*time.Millisecond)
}

// TestUpgradeHalfCloseTimeout: once the client has half-closed, a backend
// that neither answers nor closes is cut after HalfCloseTimeout, as a
// forwarded TCP connection is (TestHalfCloseTimeout), not at once.
func TestUpgradeHalfCloseTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	be := silentBackend(t)
	bothStacks(t, Options{HalfCloseTimeout: timeout}, plainTo(be.addr()), func(t *testing.T, p *Proxy, port int) {
		c, _, _ := upgradeClient(t, port, "")
		_, err := io.WriteString(c, "last words")
		require.NoError(t, err)
		require.NoError(t, c.CloseWrite())
		el, got := awaitClose(t, c, 5*time.Second)
		require.Empty(t, got)
		require.Greater(t, el, timeout*3/4, "the half-closed stream waits for the backend's answer")
		requireNoRecords(t, p)
		requireNoLease(t, p, be.addr())
	})
}

// TestUpgradeKill: a half-closed upgraded stream waiting on a silent
// backend (half-close timeout far away) ends when the connection manager
// kills it for inactivity, backend side included.
func TestUpgradeKill(t *testing.T) {
	t.Parallel()
	opts := Options{HalfCloseTimeout: time.Minute, InactivityTimeout: 400 * time.Millisecond}
	be := silentBackend(t)
	bothStacks(t, opts, plainTo(be.addr()), func(t *testing.T, p *Proxy, port int) {
		c, _, _ := upgradeClient(t, port, "")
		require.EqualValues(t, 1, statusOf(t, p, be.addr()).ActiveConnections, "the stream holds its target")
		require.NoError(t, c.CloseWrite())
		awaitClose(t, c, 5*time.Second)
		requireNoRecords(t, p)
		require.Equal(t, uint64(1), p.Metrics().Closed[connection.ReasonInactivity], "killed, not ended by the proxy's own means")
		requireNoLease(t, p, be.addr())
	})
}

// TestUpgradeTLSHalfClose: on a terminated TLS connection, the client's
// half-close (close_notify) reaches the backend as EOF, cleartext or
// re-encrypted (close_notify again), and the backend's answer written
// after it reaches the client, then its close_notify.
func TestUpgradeTLSHalfClose(t *testing.T) {
	t.Parallel()
	answer := func(c net.Conn, br *bufio.Reader) {
		if _, err := io.WriteString(c, switched101); err != nil {
			return
		}
		got, err := io.ReadAll(br)
		if err == nil {
			_, _ = io.WriteString(c, "answer to "+string(got))
		}
	}
	plain := upgradeBackend(t, func(c *net.TCPConn, br *bufio.Reader) { answer(c, br) })
	cert := testCert()
	sealed := startTLSEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err == nil {
			defer c.Close()
			answer(c, brw.Reader)
		}
	}), &cert)
	for name, route := range map[string]func(port int) Route{
		"terminate": func(port int) Route { return terminateRouteOn("ws", port, plain.addr(), "a.test") },
		"reencrypt": func(port int) Route {
			r := terminateRouteOn("ws", port, sealed.addr(), "a.test")
			r.Action.TLS.Mode = TLSTerminateAndReencrypt
			r.Action.TLS.Backend = &BackendTLS{InsecureSkipVerify: true}
			return r
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			bothStacks(t, Options{Certificates: testCertStore(t)}, route, func(t *testing.T, p *Proxy, port int) {
				c := tls.Client(dial(t, port), insecureTLS("a.test", "http/1.1"))
				br, _ := upgradeOn(t, c, "")
				_, err := io.WriteString(c, "question")
				require.NoError(t, err)
				require.NoError(t, c.CloseWrite())
				got, err := io.ReadAll(br)
				require.NoError(t, err, "the answer, then close_notify")
				require.Equal(t, "answer to question", string(got))
				requireNoRecords(t, p)
			})
		})
	}
}

// TestUpgradeSwitchChecked: a 101 that switches to a protocol the request
// did not ask for is a bad response, 502, on both stacks, and nothing of
// the stream behind it is relayed: to a request that asked for no upgrade
// (a POST: http.Transport carries it on net/http's stack, the fast
// forward on the fast path), or to another protocol than the one asked.
// ReverseProxy made these checks before the proxy relayed upgrades
// itself (takeUpgrade).
func TestUpgradeSwitchChecked(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "127.0.0.1:0", func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+
			req.Header.Get("X-Switch-To")+"\r\n\r\nraw stream")
		_, _ = io.Copy(io.Discard, br)
	})
	for name, req := range map[string]string{
		"unasked": rawReq("POST", "/", "a.test", "body", "Content-Length: 4", "X-Switch-To: websocket"),
		"other":   rawReq("GET", "/ws", "a.test", "", "Connection: Upgrade", "Upgrade: websocket", "X-Switch-To: h2c"),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			bothStacks(t, Options{}, plainTo(be.addr()), func(t *testing.T, p *Proxy, port int) {
				c := dial(t, port)
				require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
				_, err := io.WriteString(c, req)
				require.NoError(t, err)
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				require.NoError(t, err)
				require.Equal(t, http.StatusBadGateway, resp.StatusCode)
			})
		})
	}
}
