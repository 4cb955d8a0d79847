package smartproxy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// badYAML holds one mistake of each kind, on known lines.
const badYAML = `routes:
  - name: web
    match:
      portz: 80
      ports: [80, {from: 8000, to: eighty}]
    action:
      type: forward
      targets:
        - host: b
          port: "keep"
  - name: web
    match: {ports: 81}
    action: {type: forward, targets: [{host: c, port: 1.5}]}
maxConectionsPerIP: 5
maxConnections: many
inactivityTimeout: 5s
socketTimeout: -5
noDelay: yes
`

// TestConfigErrorsYAMLEveryMistakeWithPosition: a YAML document's
// mistakes are all reported, in document order, each with its line and
// column and its JSON path, in words rather than Go type names.
func TestConfigErrorsYAMLEveryMistakeWithPosition(t *testing.T) {
	t.Parallel()
	_, err := ParseConfig([]byte(badYAML), FormatYAML)
	require.Error(t, err)
	require.Equal(t, strings.Join([]string{
		`line 4 col 7: routes[0] ("web").match: unknown field "portz" (did you mean "ports"?)`,
		`line 5 col 36: routes[0] ("web").match.ports[1].to: want a whole number, got a string "eighty"`,
		`line 10 col 17: routes[0] ("web").action.targets[0].port: port must be a number or "preserve", got "keep"`,
		`line 11 col 11: routes[1] ("web").name: duplicate name: routes[0] is also "web" (route names must be unique)`,
		`line 13 col 55: routes[1] ("web").action.targets[0].port: 1.5 is not a whole number`,
		`line 14 col 1: unknown field "maxConectionsPerIP" (did you mean "maxConnectionsPerIP"?)`,
		`line 15 col 17: maxConnections: want a whole number, got a string "many"`,
		`line 16 col 20: inactivityTimeout: want milliseconds as a number, got a string "5s"`,
		`line 17 col 16: socketTimeout: duration must not be negative, got -5`,
		`line 18 col 10: noDelay: want true or false, got a string "yes"`,
	}, "\n"), err.Error())

	var ces ConfigErrors
	require.True(t, errors.As(err, &ces))
	require.Len(t, ces, 10)
	require.Equal(t, "routes[0].action.targets[0].port", ces[2].Path)
	require.Equal(t, "web", ces[2].Route)
	require.Equal(t, 10, ces[2].Line)
	require.Equal(t, 17, ces[2].Column)
}

// TestConfigErrorsNoGoTypeNames: a value of the wrong kind is described
// by what was wanted and what was given, with its path; every one is
// reported, in JSON as in YAML.
func TestConfigErrorsNoGoTypeNames(t *testing.T) {
	t.Parallel()
	doc := `{"routes": [{"name": "a", "priority": "high", "enabled": "yes", "tags": "t",
	   "match": {"ports": 80, "domains": 5, "headers": ["x"]},
	   "action": {"type": "forward", "targets": {"host": "h", "port": 1}, "tls": "terminate"},
	   "security": {"ipAllowList": "10.0.0.0/8", "basicAuth": {"users": [{"username": 1, "password": "p"}]}}}],
	 "maxConnectionsPerIP": "10", "keepAliveInactivityMultiplier": "6", "defaults": [], "listenAddress": 0}`
	_, err := ParseConfig([]byte(doc), FormatJSON)
	require.Error(t, err)
	for _, want := range []string{
		`routes[0] ("a").priority: want a whole number, got a string "high"`,
		`routes[0] ("a").enabled: want true or false, got a string "yes"`,
		`routes[0] ("a").tags: want a list, got a string "t"`,
		`routes[0] ("a").match.domains: want a string or a list of strings, got the number 5`,
		`routes[0] ("a").match.headers: want an object, got a list`,
		`routes[0] ("a").action.targets: want a list, got an object`,
		`routes[0] ("a").action.tls: want an object, got a string "terminate"`,
		`routes[0] ("a").security.ipAllowList: want a list, got a string "10.0.0.0/8"`,
		`routes[0] ("a").security.basicAuth.users[0].username: want a string, got the number 1`,
		`maxConnectionsPerIP: want a whole number, got a string "10"`,
		`keepAliveInactivityMultiplier: want a number, got a string "6"`,
		`defaults: want an object, got a list`,
		`listenAddress: want a string, got the number 0`,
	} {
		require.ErrorContains(t, err, want)
	}
	for _, never := range []string{"Go struct", "of type", "json:", "unmarshal"} {
		require.NotContains(t, err.Error(), never)
	}
}

// TestConfigErrorsTSFields: fields of the TS schema this library does not
// implement are refused as such, with why or what to use instead, all of
// them at once; the fields that arrive later keep their message.
func TestConfigErrorsTSFields(t *testing.T) {
	t.Parallel()
	doc := `{"routes": [
	    {"name": "old", "match": {"ports": 80}, "action": {"type": "forward", "target": {"host": "h", "port": 1}}},
	    {"name": "redir", "match": {"ports": 80}, "action": {"type": "redirect"}},
	    {"name": "sock", "match": {"ports": 81}, "action": {"type": "socket-handler", "socketHandler": "echo", "advanced": {}}}],
	  "useHttpProxy": [80], "httpProxyPort": 8080, "metrics": {"enabled": true}, "globalPortRanges": [80],
	  "advanced": {}, "certProvisionFunction": "provision"}`
	_, err := ParseConfig([]byte(doc), FormatJSON)
	require.Error(t, err)
	for _, want := range []string{
		"useHttpProxy: TS field, not supported (this library proxies HTTP itself",
		"httpProxyPort: TS field, not supported (",
		"metrics: TS field, not supported (Prometheus metrics are served by the admin API",
		"globalPortRanges: TS field, not supported (list the ports in each route's match.ports)",
		"advanced: TS field, not supported (the TS-only tuning block; use the top-level timeouts and limits)",
		"certProvisionFunction: TS field, not supported (a config file cannot hold code",
		`routes[0] ("old").action.target: TS field, not supported (renamed to ` + "`targets`" + ` in TS v20`,
		`routes[1] ("redir").action.type: TS value "redirect", not supported (write the redirect in action.redirect`,
		`routes[2] ("sock").action.socketHandler: TS field, not supported (socket handlers are Go functions: set Route.Action.SocketHandler in code)`,
		`routes[2] ("sock").action.advanced: TS field, not supported (`,
	} {
		require.ErrorContains(t, err, want)
	}
	require.NotContains(t, err.Error(), "unknown field")
	var ces ConfigErrors
	require.True(t, errors.As(err, &ces))
	require.Len(t, ces, 10)

	// In YAML, each is located at its key.
	_, err = ParseConfig([]byte("routes: []\nmetrics:\n  enabled: true\n"), FormatYAML)
	require.EqualError(t, err, "line 2 col 1: metrics: TS field, not supported (Prometheus metrics are served by the admin API (our extension): admin: {listen: 127.0.0.1:9900}, or Proxy.Collector from Go code)")
}

// TestConfigErrorsDidYouMean: an unknown field names the nearest known
// field at its level when there is a close one, and only then.
func TestConfigErrorsDidYouMean(t *testing.T) {
	t.Parallel()
	for doc, want := range map[string]string{
		`{"routes": [], "maxConectionsPerIP": 5}`:                                                                        `unknown field "maxConectionsPerIP" (did you mean "maxConnectionsPerIP"?)`,
		`{"routes": [], "inactivtyTimeout": 5}`:                                                                          `unknown field "inactivtyTimeout" (did you mean "inactivityTimeout"?)`,
		`{"routes": [], "defaults": {"securty": {}}}`:                                                                    `defaults: unknown field "securty" (did you mean "security"?)`,
		`{"routes": [{"name": "a", "match": {"port": 80}, "action": {"type": "forward"}}]}`:                              `routes[0] ("a").match: unknown field "port" (did you mean "ports"?)`,
		`{"routes": [{"name": "a", "match": {"ports": 80}, "action": {"type": "forward", "targets": [{"hots": "h"}]}}]}`: `routes[0] ("a").action.targets[0]: unknown field "hots" (did you mean "host"?)`,
		`{"routes": [{"name": "a", "match": {"ports": {"from": 1, "too": 2}}, "action": {"type": "forward"}}]}`:          `routes[0] ("a").match.ports: unknown field "too" (did you mean "to"?)`,
		`{"routes": [], "colour": "blue"}`:                                                                               `unknown field "colour"`,
	} {
		_, err := ParseConfig([]byte(doc), FormatJSON)
		require.ErrorContains(t, err, want, doc)
		if !strings.Contains(want, "did you mean") {
			require.NotContains(t, err.Error(), "did you mean", doc)
		}
	}
}

// TestConfigErrorsDuplicateRouteNames: two routes of the same name are
// refused naming both indices, and every message tells them apart by
// index.
func TestConfigErrorsDuplicateRouteNames(t *testing.T) {
	t.Parallel()
	doc := `{"routes": [
	  {"name": "web", "match": {"ports": 80}, "action": {"type": "forward", "targets": [{"host": "a", "port": 1}]}},
	  {"name": "api", "match": {"ports": 81}, "action": {"type": "forward", "targets": [{"host": "a", "port": 1}]}},
	  {"name": "web", "match": {"ports": "x"}, "action": {"type": "forward", "targets": [{"host": "a", "port": 1}]}},
	  {"name": "web", "match": {"ports": 83}, "action": {"type": "forward", "targets": [{"host": "a", "port": 1}]}}]}`
	_, err := ParseConfig([]byte(doc), FormatJSON)
	require.ErrorContains(t, err, `routes[2] ("web").name: duplicate name: routes[0] is also "web"`)
	require.ErrorContains(t, err, `routes[3] ("web").name: duplicate name: routes[0] is also "web"`)
	require.ErrorContains(t, err, `routes[2] ("web").match.ports: port must be an integer or {from,to}, got a string "x"`)
}

// TestConfigYAMLFeaturesKept: anchors, aliases and merge keys read as
// before the YAML decoding went through yaml.Node; a repeated key and an
// alias bomb are refused.
func TestConfigYAMLFeaturesKept(t *testing.T) {
	t.Parallel()
	doc := `
x-target: &backend {host: 10.0.0.1, port: 8080}
x-route: &base
  match: {ports: 80}
  action: {type: forward, targets: [*backend]}
routes:
  - <<: *base
    name: a
  - <<: *base
    name: b
    match: {ports: 81}
`
	// x-… keys are not in the schema: they are refused as unknown, as
	// encoding/json did. Put the anchors inside a known field instead.
	_, err := ParseConfig([]byte(doc), FormatYAML)
	require.ErrorContains(t, err, `line 2 col 1: unknown field "x-target"`)

	doc = `
routes:
  - &base
    name: a
    match: {ports: 80}
    action: {type: forward, targets: [&backend {host: 10.0.0.1, port: 8080}]}
  - <<: *base
    name: b
    match: {ports: 81}
  - name: c
    match: {ports: 82}
    action: {type: forward, targets: [*backend]}
`
	c, err := ParseConfig([]byte(doc), FormatYAML)
	require.NoError(t, err)
	require.Len(t, c.Routes, 3)
	require.Equal(t, "b", c.Routes[1].Name)
	require.Equal(t, Ports(81), c.Routes[1].Match.Ports)
	require.Equal(t, StringList{"10.0.0.1"}, c.Routes[1].Action.Targets[0].Host)
	require.Equal(t, TargetPort(8080), c.Routes[2].Action.Targets[0].Port)

	_, err = ParseConfig([]byte("routes: []\nmaxConnections: 1\nnoDelay: true\nmaxConnections: 2\n"), FormatYAML)
	require.EqualError(t, err, `line 4 col 1: maxConnections: key "maxConnections" already given at line 2`)

	bomb := "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
	for i, prev := 'b', 'a'; i <= 'h'; i, prev = i+1, i {
		bomb += string(i) + ": &" + string(i) + " [" + strings.Repeat("*"+string(prev)+", ", 9) + "*" + string(prev) + "]\n"
	}
	_, err = ParseConfig([]byte("routes: []\n"+bomb), FormatYAML)
	require.ErrorContains(t, err, "aliases expand to more than")
}

// TestLoadConfigFormatByExtensionOrGiven: a file not named .json, .yaml
// or .yml is refused unless the format is given; the errors of a loaded
// file name the file.
func TestLoadConfigFormatByExtensionOrGiven(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	conf := filepath.Join(dir, "proxy.conf")
	require.NoError(t, os.WriteFile(conf, []byte(sampleYAML), 0o600))
	_, err := LoadConfig(conf)
	require.ErrorContains(t, err, conf+": cannot tell the config format from the file name: name it .json, .yaml or .yml, or give the format (smartproxy -format json|yaml)")
	c, err := LoadConfigFormat(conf, FormatYAML)
	require.NoError(t, err)
	require.Len(t, c.Routes, 3)
	_, err = LoadConfigFormat(conf, FormatJSON)
	require.ErrorContains(t, err, conf+": parsing JSON")

	upper := filepath.Join(dir, "PROXY.JSON")
	require.NoError(t, os.WriteFile(upper, []byte(sampleJSON), 0o600))
	_, err = LoadConfig(upper)
	require.NoError(t, err)

	bad := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte(badYAML), 0o600))
	_, err = LoadConfig(bad)
	lines := strings.Split(err.Error(), "\n")
	require.Len(t, lines, 10)
	for _, l := range lines {
		require.True(t, strings.HasPrefix(l, bad+": line "), l)
	}
}

// TestConfigPosition: a YAML config knows where each value was, so that
// errors found later (validation) can be located; the nearest enclosing
// value answers for a path with no value of its own; JSON and configs
// built in code know nothing.
func TestConfigPosition(t *testing.T) {
	t.Parallel()
	c, err := ParseConfig([]byte(sampleYAML), FormatYAML)
	require.NoError(t, err)
	for path, want := range map[string][2]int{
		"routes[1].match.ports[1].to":         {12, 36},
		"routes[0].action.targets[0].host":    {9, 24},
		"routes[0].action.targets[0].port":    {9, 52},
		"routes[0].action.targets[0].host[1]": {9, 35},
		"routes[0].action.targets[0].host[7]": {9, 24}, // none: its list
		"maxConnectionsPerIP":                 {25, 22},
		"routes[2]":                           {16, 5},
		"nowhere":                             {0, 0},
	} {
		line, col := c.Position(path)
		require.Equal(t, want, [2]int{line, col}, path)
	}
	c, err = ParseConfig([]byte(sampleJSON), FormatJSON)
	require.NoError(t, err)
	line, col := c.Position("routes[0].name")
	require.Zero(t, line+col)
	line, col = (&Config{}).Position("routes")
	require.Zero(t, line+col)
}
