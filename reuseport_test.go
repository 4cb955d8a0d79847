package smartproxy

import (
	"context"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// tagBackend answers every connection with tag and closes it, so a client
// can tell which proxy (each with its own backend) carried its connection.
func tagBackend(t *testing.T, tag string) *backend {
	t.Helper()
	return startBackend(t, "127.0.0.1:0", func(c net.Conn) { _, _ = io.WriteString(c, tag) })
}

// newPortProxy builds a proxy that opens 127.0.0.1:port itself (no
// Options.Listen) and forwards it to be.
func newPortProxy(t *testing.T, opts Options, port int, be *backend) *Proxy {
	t.Helper()
	opts.ListenAddress = "127.0.0.1"
	opts.Routes = []Route{plainRoute("tag", port, be.addr())}
	p := newTestProxy(t, nil, opts)
	p.opts.Engine = opts.Engine // as asked, whatever SMARTPROXY_TEST_ENGINE says
	return p
}

// tagsSeen dials port n times (each from a new source port, which the
// kernel hashes to pick among the sockets sharing the port) and counts
// the tags the connections answered with. Every dial must be answered.
func tagsSeen(t *testing.T, port, n int) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for range n {
		c := dial(t, port)
		_, got := awaitClose(t, c, 3*time.Second)
		require.NoError(t, c.Close())
		require.NotEmpty(t, got, "a connection got no answer")
		seen[string(got)]++
	}
	return seen
}

// Two proxies with ReusePort serve the same port, the kernel spreading the
// connections over both; when one stops, the other takes every connection.
func TestReusePortTwoProxiesShareAPort(t *testing.T) {
	t.Parallel()
	port := closedPort(t)
	a := newPortProxy(t, Options{ReusePort: true}, port, tagBackend(t, "a"))
	b := newPortProxy(t, Options{ReusePort: true}, port, tagBackend(t, "b"))
	require.NoError(t, a.Start(context.Background()))
	require.NoError(t, b.Start(context.Background()))

	// 64 dials all landing on one of two sockets: chance 2^-63.
	seen := tagsSeen(t, port, 64)
	require.Positive(t, seen["a"], "proxy a got no connection: %v", seen)
	require.Positive(t, seen["b"], "proxy b got no connection: %v", seen)
	require.Equal(t, 64, seen["a"]+seen["b"], "%v", seen)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, a.Stop(ctx))
	require.Equal(t, map[string]int{"b": 32}, tagsSeen(t, port, 32), "after a stopped, b takes every connection")
	requireNoRecords(t, b)
}

// Without ReusePort on both sides a taken port stays an error, whichever
// side asks to share: SO_REUSEPORT binds only beside sockets that set it too.
func TestReusePortOffPortTaken(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		first, again bool // ReusePort of the proxy holding the port, of the second
	}{
		{"neither", false, false},
		{"only the first", true, false},
		{"only the second", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := closedPort(t)
			be := tagBackend(t, "x")
			first := newPortProxy(t, Options{ReusePort: tc.first}, port, be)
			require.NoError(t, first.Start(context.Background()))
			second := newPortProxy(t, Options{ReusePort: tc.again}, port, be)
			err := second.Start(context.Background())
			require.ErrorIs(t, err, syscall.EADDRINUSE)
			require.ErrorContains(t, err, "port")
			require.Equal(t, map[string]int{"x": 4}, tagsSeen(t, port, 4), "the first proxy still serves")
		})
	}
}

// ReusePort applies to the sockets the proxy opens: with Options.Listen it
// could not take effect, and New says so instead of ignoring it.
func TestReusePortWithListenRefused(t *testing.T) {
	t.Parallel()
	_, err := New(Options{
		ReusePort: true,
		Listen: func(context.Context, string, string) (net.Listener, error) {
			return nil, syscall.EADDRINUSE
		},
	})
	require.Error(t, err)
	require.True(t, strings.Contains(err.Error(), "ReusePort"), "error names the option: %v", err)
}

// The config key reusePort reaches Options.ReusePort.
func TestReusePortConfigKey(t *testing.T) {
	t.Parallel()
	cfg, err := ParseConfig([]byte("reusePort: true\nroutes: []\n"), FormatYAML)
	require.NoError(t, err)
	require.True(t, cfg.Options().ReusePort)
	cfg, err = ParseConfig([]byte("routes: []\n"), FormatYAML)
	require.NoError(t, err)
	require.False(t, cfg.Options().ReusePort)
}
