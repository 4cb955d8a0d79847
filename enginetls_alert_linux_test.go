//go:build linux

package smartproxy

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestTLSLoopAlertOnBadRecord: a record that fails to decrypt gets the same bytes before the
// close on the loop as on the goroutine path: the bad_record_mac alert, and no close_notify
// after it (found by review: the loop dropped the alert).
func TestTLSLoopAlertOnBadRecord(t *testing.T) {
	t.Parallel()
	be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	got := map[Engine]int{}
	for _, eng := range []Engine{EngineGoroutines, EngineEventLoop} {
		_, port := terminatingProxy(t, eng, be.addr())
		raw, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		require.NoError(t, err)
		c := tls.Client(raw, insecureTLS("a.test", "http/1.1"))
		br := bufio.NewReader(c)
		_, err = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
		require.NoError(t, err)
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		bad := append([]byte{0x17, 0x03, 0x03, 0x00, 0x20}, make([]byte, 32)...)
		_, err = raw.Write(bad)
		require.NoError(t, err)
		_ = raw.SetReadDeadline(time.Now().Add(3 * time.Second))
		b, _ := io.ReadAll(raw)
		got[eng] = len(b)
		_ = raw.Close()
	}
	t.Log(fmt.Sprint(got))
	require.Equal(t, got[EngineGoroutines], got[EngineEventLoop], "bytes after a bad record (the alert)")
}
