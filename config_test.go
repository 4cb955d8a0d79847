package smartproxy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const sampleJSON = `{
  "routes": [
    {"name": "api", "priority": 5,
     "match": {"ports": 443, "domains": "api.example.com"},
     "action": {"type": "forward", "tls": {"mode": "passthrough"},
                "targets": [{"host": ["10.0.0.5", "10.0.0.6"], "port": 443}]}},
    {"name": "ranges",
     "match": {"ports": [80, {"from": 8000, "to": 8010}], "clientIp": ["10.0.0.0/8"]},
     "action": {"type": "forward", "targets": [{"host": "backend", "port": "preserve"}]},
     "security": {"ipBlockList": ["10.9.9.9"], "maxConnections": 50}},
    {"name": "off", "enabled": false, "match": {"ports": {"from": 9000, "to": 9001}},
     "action": {"type": "forward", "targets": [{"host": "x", "port": 1}]}}
  ],
  "initialDataTimeout": 5000,
  "inactivityTimeout": 60000,
  "maxConnectionLifetime": 3600000,
  "gracefulShutdownTimeout": 1500,
  "keepAliveTreatment": "extended",
  "maxConnectionsPerIP": 20,
  "connectionRateLimitPerMinute": 600,
  "noDelay": false,
  "defaults": {"security": {"ipAllowList": ["*"]}}
}`

const sampleYAML = `
routes:
  - name: api
    priority: 5
    match: {ports: 443, domains: api.example.com}
    action:
      type: forward
      tls: {mode: passthrough}
      targets: [{host: [10.0.0.5, 10.0.0.6], port: 443}]
  - name: ranges
    match:
      ports: [80, {from: 8000, to: 8010}]
      clientIp: [10.0.0.0/8]
    action: {type: forward, targets: [{host: backend, port: preserve}]}
    security: {ipBlockList: [10.9.9.9], maxConnections: 50}
  - name: "off"
    enabled: false
    match: {ports: {from: 9000, to: 9001}}
    action: {type: forward, targets: [{host: x, port: 1}]}
initialDataTimeout: 5000
inactivityTimeout: 60000
maxConnectionLifetime: 3600000
gracefulShutdownTimeout: 1500
keepAliveTreatment: extended
maxConnectionsPerIP: 20
connectionRateLimitPerMinute: 600
noDelay: false
defaults: {security: {ipAllowList: ["*"]}}
`

func TestParseConfigJSONAndYAMLAgree(t *testing.T) {
	t.Parallel()
	fromJSON, err := ParseConfig([]byte(sampleJSON), FormatJSON)
	require.NoError(t, err)
	fromYAML, err := ParseConfig([]byte(sampleYAML), FormatYAML)
	require.NoError(t, err)
	require.NotZero(t, fromYAML.pos) // the positions, for errors
	fromYAML.pos = nil
	require.Equal(t, fromJSON, fromYAML)

	c := fromJSON
	require.Len(t, c.Routes, 3)
	api := c.Routes[0]
	require.Equal(t, PortSpec{{443, 443}}, api.Match.Ports)
	require.Equal(t, StringList{"api.example.com"}, api.Match.Domains)
	require.Equal(t, StringList{"10.0.0.5", "10.0.0.6"}, api.Action.Targets[0].Host)
	require.Equal(t, TLSPassthrough, api.Action.TLS.Mode)
	ranges := c.Routes[1]
	require.Equal(t, PortSpec{{80, 80}, {8000, 8010}}, ranges.Match.Ports)
	require.Equal(t, PreservePort, ranges.Action.Targets[0].Port)
	require.Equal(t, 50, ranges.Security.MaxConnections)
	require.False(t, c.Routes[2].IsEnabled())

	o := c.Options()
	require.Equal(t, 5*time.Second, o.InitialDataTimeout)
	require.Equal(t, time.Minute, o.InactivityTimeout)
	require.Equal(t, time.Hour, o.MaxConnectionLifetime)
	require.Equal(t, 1500*time.Millisecond, o.GracefulShutdownTimeout)
	require.Equal(t, 20, o.MaxConnectionsPerIP)
	require.False(t, o.noDelay())
	p, err := New(o)
	require.NoError(t, err)
	require.Equal(t, []int{80, 443, 8000, 8001, 8002, 8003, 8004, 8005, 8006, 8007, 8008, 8009, 8010}, p.Ports())
}

func TestParseConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, doc, want string }{
		{"unknown route field", `{"routes":[{"name":"a","match":{"ports":1},"action":{"type":"forward"},"colour":1}]}`, `routes[0] ("a"): unknown field "colour"`},
		{"unknown nested field", `{"routes":[{"name":"a","match":{"ports":1,"domain":"x"},"action":{"type":"forward"}}]}`, `unknown field "domain"`},
		{"unknown top field", `{"routes":[],"bogus":1}`, `unknown field "bogus"`},
		{"bad port", `{"routes":[{"name":"a","match":{"ports":"eighty"},"action":{"type":"forward"}}]}`, `port must be an integer or {from,to}`},
		{"bad range field", `{"routes":[{"name":"a","match":{"ports":{"from":1,"upto":2}},"action":{"type":"forward"}}]}`, `unknown field "upto"`},
		{"half range", `{"routes":[{"name":"a","match":{"ports":{"from":1}},"action":{"type":"forward"}}]}`, `needs both "from" and "to"`},
		{"bad target port", `{"routes":[{"name":"a","match":{"ports":1},"action":{"type":"forward","targets":[{"host":"h","port":"keep"}]}}]}`, `port must be a number or "preserve"`},
		{"PROXY field", `{"routes":[{"name":"a","match":{"ports":1},"action":{"type":"forward","sendProxyProtocol":"yes"}}]}`, `routes[0] ("a").action.sendProxyProtocol: want true or false, got a string "yes"`},
		{"basicAuth validated", `{"routes":[{"name":"a","match":{"ports":80},"action":{"type":"forward","targets":[{"host":"h","port":1}]},"security":{"basicAuth":{"users":[{"username":"u","password":"p"}]},"jwtAuth":{"secret":"s","algorithm":"HS256"},"rateLimit":{"maxRequests":5,"window":60},"maxConnectionsPerIP":3}}]}`, ""},
		{"route acme field", `{"routes":[{"name":"a","match":{"ports":1},"action":{"type":"forward","tls":{"mode":"terminate","acme":{"renewBeforDays":3}}}}]}`, `routes[0] ("a").action.tls.acme: unknown field "renewBeforDays" (did you mean "renewBeforeDays"?)`},
		{"bad certificate", `{"routes":[{"name":"a","match":{"ports":1},"action":{"type":"forward","tls":{"mode":"terminate","certificate":"manual"}}}]}`, `certificate must be "auto" or an object`},
		{"acme field", `{"routes":[],"acme":{"renewThresholdDay":3}}`, `acme: unknown field "renewThresholdDay" (did you mean "renewThresholdDays"?)`},
		{"negative ms", `{"routes":[],"inactivityTimeout":-1}`, `duration must not be negative`},
		{"not an object", `[1,2]`, `config must be an object`},
		{"syntax", `{"routes":[`, `parsing JSON`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.doc), FormatJSON)
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestLoadConfigByExtension(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	y := filepath.Join(dir, "p.yml")
	require.NoError(t, os.WriteFile(y, []byte(sampleYAML), 0o600))
	c, err := LoadConfig(y)
	require.NoError(t, err)
	require.Len(t, c.Routes, 3)
	bad := filepath.Join(dir, "bad.json")
	require.NoError(t, os.WriteFile(bad, []byte(`{"routes":[{"name":"a","match":{"ports":70000},"action":{"type":"forward","targets":[{"host":"h","port":1}]}}]}`), 0o600))
	c, err = LoadConfig(bad)
	require.NoError(t, err) // parses; validation is New's job
	_, err = New(c.Options())
	require.ErrorContains(t, err, `route "a": match.ports[0]: port 70000 out of range`)
}

func TestRouteJSONRoundTrip(t *testing.T) {
	t.Parallel()
	c, err := ParseConfig([]byte(sampleJSON), FormatJSON)
	require.NoError(t, err)
	for _, r := range c.Routes {
		data, err := jsonMarshal(r)
		require.NoError(t, err)
		back, err := ParseConfig([]byte(`{"routes":[`+string(data)+`]}`), FormatJSON)
		require.NoError(t, err, string(data))
		require.Equal(t, r, back.Routes[0])
	}
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

func TestParseConfigHTTPFields(t *testing.T) {
	t.Parallel()
	doc := `{"routes":[{"name":"api","match":{"ports":80,"domains":"a.test","path":"/api/*","headers":{"x-env":"prod*"},"method":["GET"]},
	  "action":{"type":"forward","targets":[{"host":"b","port":8080,"match":{"path":"/api/v2/*","ports":[80]},"priority":2},{"host":"c","port":8080}],
	    "options":{"rewriteHostHeader":false,"backendProtocol":"h2c"},
	    "headers":{"request":{"X-Client":"{clientIp}"},"response":{"X-Route":"{routeName}"}},
	    "rewrite":{"pattern":"^/api/(.*)","target":"/$1"},
	    "websocket":{"enabled":true,"pingInterval":30000}}},
	  {"name":"redirect","match":{"ports":80,"domains":"*"},"action":{"type":"forward","redirect":{"to":"https://{domain}{path}","status":308}}}]}`
	c, err := ParseConfig([]byte(doc), FormatJSON)
	require.NoError(t, err)
	r := c.Routes[0]
	require.Equal(t, "/api/*", r.Match.Path)
	require.Equal(t, "prod*", r.Match.Headers["x-env"])
	require.Equal(t, "/api/v2/*", r.Action.Targets[0].Match.Path)
	require.Equal(t, BackendH2C, r.Action.Options.BackendProtocol)
	require.Equal(t, 308, c.Routes[1].Action.Redirect.Status)
	_, err = New(c.Options())
	require.NoError(t, err)
}

// idleParkAfter: absent means the default, a number of ms sets it, 0 turns
// parking off (Options takes a negative value for that).
func TestParseConfigIdleParkAfter(t *testing.T) {
	t.Parallel()
	for doc, want := range map[string]time.Duration{
		`{"routes":[]}`:                     0,
		`{"routes":[],"idleParkAfter":250}`: 250 * time.Millisecond,
		`{"routes":[],"idleParkAfter":0}`:   -1,
	} {
		c, err := ParseConfig([]byte(doc), FormatJSON)
		require.NoError(t, err, doc)
		require.Equal(t, want, c.Options().IdleParkAfter, doc)
	}
}

func TestParseConfigRoutesMustBeAList(t *testing.T) {
	t.Parallel()
	_, err := ParseConfig([]byte("routes:\n  name: a\n  match: {ports: 80}\n"), FormatYAML)
	require.EqualError(t, err, `line 2 col 3: routes: want a list, got an object (in YAML, each route starts with "- ")`)
	_, err = ParseConfig([]byte(`{}`), FormatJSON)
	require.ErrorContains(t, err, `config has no "routes" list`)
	c, err := ParseConfig([]byte(`{"routes": []}`), FormatJSON)
	require.NoError(t, err)
	require.Empty(t, c.Routes)
}
