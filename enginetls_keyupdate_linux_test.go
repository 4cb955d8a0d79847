//go:build linux

package smartproxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestTLSLoopKeyUpdateAnswered: a TLS 1.3 client's KeyUpdate(update_requested) sent while its
// request head is incomplete is answered at once, on the loop as on the goroutine path (where
// the tls.Conn writes the answer to the socket). Held until the next response, the answers
// would pile up with no bound (16 KeyUpdates per 1-byte record: ~28 MB over a 64 KiB head)
// and no back-pressure (found by review). Needs openssl s_client (3.x: its 'K' command).
func TestTLSLoopKeyUpdateAnswered(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("no openssl")
	}
	be := startEchoServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	for _, eng := range []Engine{EngineGoroutines, EngineEventLoop} {
		t.Run(fmt.Sprint(eng), func(t *testing.T) {
			t.Parallel()
			_, port := terminatingProxy(t, eng, be.addr())
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "openssl", "s_client", "-connect", "127.0.0.1:"+strconv.Itoa(port),
				"-servername", "a.test", "-tls1_3", "-crlf", "-msg")
			stdin, err := cmd.StdinPipe()
			require.NoError(t, err)
			var out syncBuffer
			cmd.Stdout, cmd.Stderr = &out, &out
			require.NoError(t, cmd.Start())
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			time.Sleep(700 * time.Millisecond) // handshake
			for _, line := range []string{"GET / HTTP/1.1", "Host: a.test", "X-A: b"} {
				_, _ = io.WriteString(stdin, line+"\n")
				time.Sleep(150 * time.Millisecond)
			}
			const n = 5
			for range n {
				_, _ = io.WriteString(stdin, "K\n")
				time.Sleep(150 * time.Millisecond)
			}
			time.Sleep(500 * time.Millisecond)
			got := 0
			for _, l := range strings.Split(out.String(), "\n") {
				if strings.HasPrefix(l, "<<<") && strings.Contains(l, "KeyUpdate") {
					got++
				}
			}
			require.Equal(t, n, got, "KeyUpdate answers received before the head ends\n%s", out.String())
		})
	}
}
