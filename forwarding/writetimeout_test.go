package forwarding

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// TestPipeWriteTimeout: a client that reads steadily is not cut, and once it stops reading
// while the backend keeps sending, the pipe ends with a deadline error after about the write
// timeout, on the splice path (bare TCP) and on the buffered one (an opaque conn).
func TestPipeWriteTimeout(t *testing.T) {
	const timeout = 500 * time.Millisecond
	for _, tc := range []struct {
		name string
		wrap func(net.Conn) net.Conn
	}{
		{"splice", nil},
		{"buffered", func(c net.Conn) net.Conn { return opaqueConn{c} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startPipe(t, context.Background(), PipeOptions{WriteTimeout: timeout}, tc.wrap)
			go func() { // the backend streams until the pipe is cut
				chunk := make([]byte, 32<<10)
				for {
					if _, err := p.backend.Write(chunk); err != nil {
						return
					}
				}
			}()
			buf := make([]byte, 128<<10)
			var got int64
			for end := time.Now().Add(time.Second); time.Now().Before(end); {
				n, err := io.ReadFull(p.client, buf)
				got += int64(n)
				if err != nil {
					t.Fatalf("cut while reading steadily after %d bytes: %v", got, err)
				}
				time.Sleep(5 * time.Millisecond)
			}
			stalled := time.Now()
			r := p.wait(t, 5*time.Second) // without the timeout the pipe never ends
			if d := time.Since(stalled); d < timeout*7/8 {
				t.Fatalf("cut %v after the client stopped reading, before the timeout", d)
			}
			if !errors.Is(r.Err, os.ErrDeadlineExceeded) {
				t.Fatalf("pipe error %v, want a write deadline", r.Err)
			}
			t.Logf("read %d bytes steadily; cut %v after the stall: %v", got, time.Since(stalled), r.Err)
		})
	}
}
