package h1client

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// holdConn batches writes while hold is set, so that several TLS
// records leave in one segment (one read of the peer's tls.Conn).
type holdConn struct {
	net.Conn
	mu   sync.Mutex
	hold bool
	buf  []byte
}

func (h *holdConn) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hold {
		h.buf = append(h.buf, p...)
		return len(p), nil
	}
	return h.Conn.Write(p)
}

func (h *holdConn) flush() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hold = false
	_, err := h.Conn.Write(h.buf)
	h.buf = nil
	return err
}

// startStrayTLS is a TLS backend whose first answer is followed, in the
// same segment but in a TLS record of its own, by a second, unsolicited
// response ("EVIL"); every other answer is "real". tlsOn false: the same
// bytes in cleartext (the control).
func startStrayTLS(t *testing.T, tlsOn bool) string {
	ts := httptest.NewUnstartedServer(http.NotFoundHandler())
	ts.StartTLS()
	cfg := ts.TLS.Clone()
	ts.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	var first atomic.Bool
	first.Store(true)
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				hc := &holdConn{Conn: nc}
				var c net.Conn = hc
				if tlsOn {
					c = tls.Server(hc, cfg)
				}
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					r, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, r.Body)
					if first.Swap(false) {
						hc.mu.Lock()
						hc.hold = true
						hc.mu.Unlock()
						_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
						_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL")
						_ = hc.flush()
						continue
					}
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal")
				}
			})
		}
	})
	return ln.Addr().String()
}

func sendBody(t *testing.T, c *Client, addr string, cfg *tls.Config, replayable bool, head string) string {
	t.Helper()
	ex, err := c.Send(t.Context(), addr, Outgoing{Head: []byte(head), Replayable: replayable, TLS: cfg})
	require.NoError(t, err)
	defer ex.Close()
	b, err := io.ReadAll(ex)
	require.NoError(t, err)
	return string(b)
}

// TestTLSStrayRecordDesync: a backend's unsolicited response that
// arrives with the answer is caught in cleartext (it sits in the read
// buffer: release closes the connection), but on a TLS backend it sits
// in the tls.Conn's raw input buffer, which neither release's
// br.Buffered check nor the prober (it peeks at the socket under the
// tls.Conn) sees: the connection is pooled and the next request, of
// another client, probed or not, is answered with the stray response.
func TestTLSStrayRecordDesync(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		name := map[bool]string{false: "cleartext", true: "tls"}[tlsOn]
		t.Run(name, func(t *testing.T) {
			addr := startStrayTLS(t, tlsOn)
			c := newTestClient(t, Config{HeadTimeout: 5 * time.Second})
			var cfg *tls.Config
			if tlsOn {
				cfg = &tls.Config{InsecureSkipVerify: true}
			}
			require.Equal(t, "ok", sendBody(t, c, addr, cfg, true, "GET /1 HTTP/1.1\r\nHost: b\r\n\r\n"))
			time.Sleep(20 * time.Millisecond) // past probeAfter: the next one is probed
			got := sendBody(t, c, addr, cfg, false, "POST /2 HTTP/1.1\r\nHost: b\r\nContent-Length: 1\r\n\r\nx")
			require.Equal(t, "real", got, "another client's request answered with the stray response")
		})
	}
}
