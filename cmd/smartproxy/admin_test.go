package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestAdminReload: POST /reload re-reads the file with SIGHUP's rules: a
// new route goes live, a broken file answers 422 naming the mistake and
// keeps the running routes. The token comes from the config file.
func TestAdminReload(t *testing.T) {
	echo := startEcho(t)
	dir := t.TempDir()
	portA, portB, adminPort := freePort(t), freePort(t), freePort(t)
	const token = "0123456789abcdef-admin"
	adminBlock := `"admin": {"listen": "127.0.0.1:` + strconv.Itoa(adminPort) + `", "token": "` + token + `"}`
	path := writeFile(t, dir, "proxy.json", configJSON(adminBlock, route{"a", portA, echo}))
	c := start(t, "-config", path)
	base := "http://127.0.0.1:" + strconv.Itoa(adminPort)
	post := func(tok string) (int, map[string]any) {
		req, err := http.NewRequest("POST", base+"/reload", nil)
		require.NoError(t, err)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		var v map[string]any
		require.NoError(t, json.Unmarshal(b, &v), string(b))
		return resp.StatusCode, v
	}
	code, _ := post("")
	require.Equal(t, http.StatusUnauthorized, code)

	writeFile(t, dir, "proxy.json", configJSON(adminBlock, route{"a", portA, echo}, route{"b", portB, echo}))
	code, body := post(token)
	require.Equal(t, http.StatusOK, code, body)
	require.Eventually(t, func() bool { return echoes(portB) }, 5*time.Second, 10*time.Millisecond)
	require.Len(t, c.p.Routes(), 2)

	writeFile(t, dir, "proxy.json", `{"routes": [{"name": "a", "match": {"ports": 0}, "action": {"type": "forward", "targets": [{"host": "127.0.0.1", "port": 9}]}}]}`)
	code, body = post(token)
	require.Equal(t, http.StatusUnprocessableEntity, code)
	require.Contains(t, body["error"], "match.ports[0]")
	require.Len(t, c.p.Routes(), 2)

	sendSignal(t, syscall.SIGTERM)
	require.Equal(t, 0, c.waitExit(t, 5*time.Second))
}

// TestAdminFlagRefusesPublicWithoutToken: -admin on a public address with
// no token is refused before anything listens, saying why.
func TestAdminFlagRefusesPublicWithoutToken(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "proxy.json", configJSON("", route{"a", freePort(t), "127.0.0.1:9"}))
	code, stderr := runOnce(t, "-config", path, "-admin", "0.0.0.0:0")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "without a token")
	code, stderr = runOnce(t, "-check", "-config", path, "-admin", ":9900")
	require.Equal(t, 1, code)
	require.True(t, strings.Contains(stderr, "refusing to listen on \":9900\" without a token"), stderr)

	// With a token from the environment, the same address is accepted.
	t.Setenv(adminTokenEnv, "0123456789abcdef-env")
	code, stderr = runOnce(t, "-check", "-config", path, "-admin", ":9900")
	require.Equal(t, 0, code, stderr)
}
