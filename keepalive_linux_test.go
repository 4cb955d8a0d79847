//go:build linux

package smartproxy

import (
	"context"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// recordingListener hands every accepted TCP conn to the test as well.
type recordingListener struct {
	net.Listener
	accepted chan *net.TCPConn
}

func (l recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		select {
		case l.accepted <- tc:
		default:
		}
	}
	return c, err
}

func sockoptInt(t *testing.T, c *net.TCPConn, level, opt int) int {
	t.Helper()
	rc, err := c.SyscallConn()
	require.NoError(t, err)
	var v int
	var gerr error
	require.NoError(t, rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), level, opt) }))
	require.NoError(t, gerr)
	return v
}

// TestListenerKeepAliveInherited: keep-alive is set once on the listening
// socket (listenConfig, KeepAlive -1 so Go sets nothing per accept), and
// the connections the proxy accepts and forwards have it: SO_KEEPALIVE on
// and TCP_KEEPIDLE = Options.KeepAliveInitialDelay (rounded up to
// seconds), or SO_KEEPALIVE off with Options.KeepAlive false.
func TestListenerKeepAliveInherited(t *testing.T) {
	t.Parallel()
	no, yes := false, true
	tests := []struct {
		name     string
		keep     *bool
		delay    time.Duration
		wantKA   int
		wantIdle int // checked when wantKA is 1
	}{
		{"default on", nil, 37 * time.Second, 1, 37},
		{"on, rounded up", &yes, 1500 * time.Millisecond, 1, 2},
		{"default delay", nil, 0, 1, int(DefaultKeepAliveInitialDelay / time.Second)},
		{"off", &no, 37 * time.Second, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			be := startBackend(t, "127.0.0.1:0", echo)
			lp := newListenerPool(t)
			port := lp.port(t) // the route's port; the real one is ephemeral
			accepted := make(chan *net.TCPConn, 1)
			realAddr := make(chan string, 1)
			var p *Proxy
			listen := func(ctx context.Context, network, _ string) (net.Listener, error) {
				ln, err := p.listenTCP(ctx, network, "127.0.0.1:0")
				if err != nil {
					return nil, err
				}
				realAddr <- ln.Addr().String()
				return recordingListener{Listener: ln, accepted: accepted}, nil
			}
			p = newTestProxy(t, nil, Options{
				Routes:                []Route{plainRoute("ka", port, be.addr())},
				Listen:                listen,
				KeepAlive:             tc.keep,
				KeepAliveInitialDelay: tc.delay,
			})
			require.NoError(t, p.Start(context.Background()))
			lc := p.listenConfig()
			require.Equal(t, time.Duration(-1), lc.KeepAlive, "Go sets no keep-alive per accepted conn")
			require.False(t, lc.KeepAliveConfig.Enable, "Go sets no keep-alive per accepted conn")

			addr := <-realAddr
			_, ps, _ := net.SplitHostPort(addr)
			realPort, _ := strconv.Atoi(ps)
			c := dial(t, realPort)
			require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
			_, err := c.Write([]byte("ping"))
			require.NoError(t, err)
			got := make([]byte, 4)
			_, err = io.ReadFull(c, got)
			require.NoError(t, err)
			require.Equal(t, "ping", string(got), "the connection is proxied")

			var sc *net.TCPConn
			select {
			case sc = <-accepted:
			case <-time.After(5 * time.Second):
				t.Fatal("no accepted connection recorded")
			}
			require.Equal(t, tc.wantKA, sockoptInt(t, sc, unix.SOL_SOCKET, unix.SO_KEEPALIVE), "SO_KEEPALIVE of the accepted conn")
			if tc.wantKA == 1 {
				require.Equal(t, tc.wantIdle, sockoptInt(t, sc, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE), "TCP_KEEPIDLE of the accepted conn")
			}
		})
	}
}
