package smartproxy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// A TS config with acceptProxyProtocol, proxyIPs and sendProxyProtocol
// (top level and on the action) runs unchanged: the client a trusted
// sender names reaches the backend in the header the proxy sends on.
func TestProxyProtocolConfigFile(t *testing.T) {
	t.Parallel()
	lp := newListenerPool(t)
	port := lp.port(t)
	be := startPPBackend(t)
	doc := fmt.Sprintf(`{
  "acceptProxyProtocol": true,
  "proxyIPs": ["127.0.0.1", "10.0.0.0/8"],
  "sendProxyProtocol": true,
  "routes": [
    {"name": "tcp", "match": {"ports": %d},
     "action": {"type": "forward", "sendProxyProtocol": true,
                "targets": [{"host": "127.0.0.1", "port": %d}]}}
  ]
}`, port, be.port)
	file := filepath.Join(t.TempDir(), "smartproxy.json")
	require.NoError(t, os.WriteFile(file, []byte(doc), 0o600))
	cfg, err := LoadConfig(file)
	require.NoError(t, err)
	opts := cfg.Options()
	opts.Listen, opts.Logger = lp.listen, testLogger()
	p, err := New(opts)
	require.NoError(t, err)
	require.NoError(t, p.Start(context.Background()))
	t.Cleanup(func() { _ = p.Stop(context.Background()) })
	c := dial(t, port)
	_, err = c.Write(append(ppHeader(t, 1, "203.0.113.7:40000", "192.0.2.1:25"), "x\n"...))
	require.NoError(t, err)
	require.Equal(t, "v1 src=203.0.113.7:40000 dst=192.0.2.1:25", ppLine(t, c))
	require.Equal(t, "x", ppLine(t, c))
}

func TestProxyProtocolConfigErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ doc, path, want string }{
		{`{"acceptProxyProtocol": true, "routes": []}`, "acceptProxyProtocol", "needs proxyIPs"},
		{`{"proxyIPs": ["10.0.0.1", "10.0.0.300"], "routes": []}`, "proxyIPs[1]", `ip pattern "10.0.0.300"`},
		{`{"proxyIPs": ["10.0.0.1"], "proxyProtocol": "sometimes", "routes": []}`, "proxyProtocol", `must be "required" or "optional"`},
		{`{"proxyProtocol": "optional", "routes": []}`, "proxyProtocol", "needs acceptProxyProtocol"},
		{`{"proxyIPs": "10.0.0.1", "routes": []}`, "proxyIPs", "want a list"},
		{`{"routes": [{"name": "r", "match": {"ports": 1}, "action": {"type": "forward", "proxyProtocolVersion": "two", "targets": [{"host": "h", "port": 1}]}}]}`,
			"routes[0].action.proxyProtocolVersion", "want a whole number"},
	} {
		_, err := ParseConfig([]byte(tc.doc), FormatJSON)
		var ces ConfigErrors
		require.True(t, errors.As(err, &ces), "%s: %v", tc.doc, err)
		require.Equal(t, tc.path, ces[0].Path, "%v", err)
		require.True(t, strings.Contains(err.Error(), tc.want), "%v", err)
	}
}
