package smartproxy

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The config key engine picks the data path by name; absent, the default is the event loop.
func TestEngineConfigKey(t *testing.T) {
	for in, want := range map[string]Engine{``: EngineEventLoop, `"engine": "eventloop",`: EngineEventLoop, `"engine": "goroutines",`: EngineGoroutines} {
		cfg, err := ParseConfig([]byte(`{`+in+` "routes": []}`), FormatJSON)
		require.NoError(t, err, in)
		require.Equal(t, want, cfg.Options().Engine, in)
	}
	for _, e := range []Engine{EngineEventLoop, EngineGoroutines} {
		require.Equal(t, e, engineNames[e.String()], "String names the config value")
	}
	_, err := ParseConfig([]byte(`{"engine": "threads", "routes": []}`), FormatJSON)
	require.Error(t, err)
}
