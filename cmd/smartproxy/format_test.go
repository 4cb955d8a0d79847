package main

import (
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestFormatFlag: a file not named .json, .yaml or .yml is refused unless
// -format says what it holds; -format overrides the extension.
func TestFormatFlag(t *testing.T) {
	dir := t.TempDir()
	yamlConf := writeFile(t, dir, "proxy.conf", "listenAddress: 127.0.0.1\nroutes:\n  - name: web\n    match: {ports: 8080}\n    action: {type: forward, targets: [{host: 127.0.0.1, port: 9}]}\n")
	jsonInYAMLName := writeFile(t, dir, "odd.yaml", configJSON("", route{"web", 8080, "127.0.0.1:9"}))

	code, stderr := runOnce(t, "-check", "-config", yamlConf)
	require.Equal(t, 1, code, stderr)
	require.Equal(t, "smartproxy: "+yamlConf+": cannot tell the config format from the file name: name it .json, .yaml or .yml, or give the format (smartproxy -format json|yaml)\n", stderr)

	code, stderr = runOnce(t, "-check", "-config", yamlConf, "-format", "yaml")
	require.Equal(t, 0, code, stderr)
	require.Equal(t, yamlConf+": OK (1 routes)\n", stderr)

	code, stderr = runOnce(t, "-check", "-config", yamlConf, "-format", "json")
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "parsing JSON")

	code, stderr = runOnce(t, "-check", "-config", jsonInYAMLName, "-format", "JSON")
	require.Equal(t, 0, code, stderr)

	code, stderr = runOnce(t, "-check", "-config", yamlConf, "-format", "toml")
	require.Equal(t, 2, code, stderr)
	require.Contains(t, stderr, `-format: want json or yaml, got "toml"`)
}

// TestFormatFlagOnReload: SIGHUP re-reads the file in the -format given.
func TestFormatFlagOnReload(t *testing.T) {
	echo := startEcho(t)
	dir := t.TempDir()
	port := freePort(t)
	host, p, _ := strings.Cut(echo, ":")
	doc := func(name string) string {
		return "listenAddress: 127.0.0.1\nroutes:\n  - name: " + name + "\n    match: {ports: " + strconv.Itoa(port) + "}\n    action: {type: forward, targets: [{host: " + host + ", port: " + p + "}]}\n"
	}
	path := writeFile(t, dir, "proxy.cfg", doc("a"))
	c := start(t, "-config", path, "-format", "yaml")
	require.NoError(t, dialEcho(t, port).Close())
	writeFile(t, dir, "proxy.cfg", doc("b"))
	sendSignal(t, syscall.SIGHUP)
	c.waitLog(t, "reloaded routes")
	require.Equal(t, "b", c.p.Routes()[0].Name)
	sendSignal(t, syscall.SIGTERM)
	require.Equal(t, 0, c.waitExit(t, 5*time.Second))
}

// TestCheckReportsEveryMistake: -check prints every mistake of the file,
// one a line, each naming the file and, for YAML, the line and column.
func TestCheckReportsEveryMistake(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "bad.yaml", `routes:
  - name: web
    match: {portz: 80}
    action: {type: forward, targets: [{host: 127.0.0.1, port: x}]}
  - name: web
    match: {ports: 81}
    action: {type: forward, target: {host: 127.0.0.1, port: 9}}
maxConectionsPerIP: 5
metrics: {enabled: true}
inactivityTimeout: 5s
`)
	code, stderr := runOnce(t, "-check", "-config", path)
	require.Equal(t, 1, code, stderr)
	require.Equal(t, strings.Join([]string{
		`smartproxy: ` + path + `: line 3 col 13: routes[0] ("web").match: unknown field "portz" (did you mean "ports"?)`,
		`smartproxy: ` + path + `: line 4 col 63: routes[0] ("web").action.targets[0].port: port must be a number or "preserve", got "x"`,
		`smartproxy: ` + path + `: line 5 col 11: routes[1] ("web").name: duplicate name: routes[0] is also "web" (route names must be unique)`,
		`smartproxy: ` + path + `: line 7 col 29: routes[1] ("web").action.target: TS field, not supported (renamed to ` + "`targets`" + ` in TS v20: write targets: [{host, port}])`,
		`smartproxy: ` + path + `: line 8 col 1: unknown field "maxConectionsPerIP" (did you mean "maxConnectionsPerIP"?)`,
		`smartproxy: ` + path + `: line 9 col 1: metrics: TS field, not supported (Prometheus metrics are served by the admin API (our extension): admin: {listen: 127.0.0.1:9900}, or Proxy.Collector from Go code)`,
		`smartproxy: ` + path + `: line 10 col 20: inactivityTimeout: want milliseconds as a number, got a string "5s"`,
	}, "\n")+"\n", stderr)
}

// TestCheckLocatesValidationErrors: a YAML file's validation errors (found
// by New, after parsing) carry the line and column of their field; a JSON
// file's read as before.
func TestCheckLocatesValidationErrors(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "invalid.yaml", `routes:
  - name: web
    match:
      ports: [80, 70000]
    action: {type: forward, targets: [{host: "127.0.0.1:80", port: 80}]}
  - match: {ports: 81}
    action: {type: forward, targets: [{host: 10.0.0.1, port: 0}]}
defaults:
  security:
    ipAllowList: [bogus]
`)
	code, stderr := runOnce(t, "-check", "-config", path)
	require.Equal(t, 1, code, stderr)
	prefix := "smartproxy: " + path + ": "
	for _, want := range []string{
		prefix + `line 10 col 18: defaults.security.ipAllowList: ip pattern "bogus"`,
		prefix + `line 4 col 19: route "web": match.ports[1]: port 70000 out of range`,
		prefix + `line 5 col 46: route "web": action.targets[0].host[0]: invalid host "127.0.0.1:80"`,
		prefix + `line 6 col 5: route #1: name: is required`,
		prefix + `line 7 col 62: route #1: action.targets[0].port: port 0 out of range`,
	} {
		require.Contains(t, stderr, want+"")
	}
	require.Equal(t, 5, strings.Count(stderr, "\n"), stderr)

	path = writeFile(t, dir, "invalid.json", `{"routes": [{"name": "web", "match": {"ports": 70000}, "action": {"type": "forward", "targets": [{"host": "127.0.0.1", "port": 80}]}}]}`)
	code, stderr = runOnce(t, "-check", "-config", path)
	require.Equal(t, 1, code, stderr)
	require.Equal(t, prefix[:len("smartproxy: ")]+path+`: invalid routes: route "web": match.ports[0]: port 70000 out of range 1-65535`+"\n", stderr)
}
