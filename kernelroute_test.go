package smartproxy

import (
	"errors"
	"strings"
	"testing"
)

// Kernel routes are validated up front, each mistake a RouteError naming
// the field; no kernel is needed.
func TestKernelRouteValidation(t *testing.T) {
	t.Parallel()
	base := func() Route { return NfTablesRoute("k", Ports(8000), "10.0.0.1:80", nil) }
	tests := []struct {
		name  string
		edit  func(r *Route)
		field string
		msg   string
	}{
		{"domains", func(r *Route) { r.Match.Domains = StringList{"a.example"} }, "match.domains", "not supported by the nftables engine"},
		{"tls", func(r *Route) { r.Action.TLS = &RouteTLS{Mode: TLSPassthrough} }, "action.tls", "not supported"},
		{"host name", func(r *Route) { r.Action.Targets[0].Host = StringList{"backend.example"} }, "action.targets[0].host[0]", "not an IP address"},
		{"protocol", func(r *Route) { r.Action.NfTables = &NfTablesOptions{Protocol: "sctp"} }, "action.nftables.protocol", `"sctp"`},
		{"rate", func(r *Route) { r.Action.NfTables = &NfTablesOptions{MaxRate: "fast"} }, "action.nftables.maxRate", `"fast"`},
		{"glob", func(r *Route) { r.Security = &RouteSecurity{IPBlockList: []string{"10.*.*.1"}} }, "security.ipBlockList", `"10.*.*.1"`},
		{"limits", func(r *Route) { r.Security = &RouteSecurity{MaxConnections: 5} }, "security.maxConnections", "not enforced"},
		{"two targets", func(r *Route) { r.Action.Targets = append(r.Action.Targets, r.Action.Targets[0]) }, "action.targets", "one target"},
		{"algorithm", func(r *Route) { r.Action.LoadBalancing = &LoadBalancing{Algorithm: AlgorithmIPHash} }, "action.loadBalancing.algorithm", "ip-hash"},
		{"engine", func(r *Route) { r.Action.ForwardingEngine = "ebpf" }, "action.forwardingEngine", `"ebpf"`},
		{"options without engine", func(r *Route) { r.Action.ForwardingEngine = "" }, "action.nftables", "needs forwardingEngine"},
		{"udp fallback", func(r *Route) {
			r.Action.NfTables = &NfTablesOptions{Protocol: "udp"}
			r.Action.ForwardingEngineFallback = true
		}, "action.forwardingEngineFallback", "TCP only"},
		{"maxRate fallback", func(r *Route) {
			r.Action.NfTables = &NfTablesOptions{MaxRate: "100/second"}
			r.Action.ForwardingEngineFallback = true
		}, "action.forwardingEngineFallback", "maxRate"},
		{"preserveSourceIP fallback", func(r *Route) {
			yes := true
			r.Action.NfTables = &NfTablesOptions{PreserveSourceIP: &yes}
			r.Action.ForwardingEngineFallback = true
		}, "action.forwardingEngineFallback", "preserveSourceIP"},
	}
	for _, tc := range tests {
		r := base()
		if tc.name == "options without engine" {
			r.Action.NfTables = &NfTablesOptions{}
		}
		tc.edit(&r)
		_, err := CompileRoutes([]Route{r}, Defaults{})
		var re *RouteError
		if !errors.As(err, &re) || re.Field != tc.field || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: err = %v, want a RouteError on %s saying %q", tc.name, err, tc.field, tc.msg)
		}
	}
	r := base()
	r.Security = &RouteSecurity{IPAllowList: []string{"192.168.1.*", "10.0.0.0/8"}}
	r.Action.NfTables = &NfTablesOptions{Protocol: "all", MaxRate: "10mbps"}
	if _, err := CompileRoutes([]Route{r, PortMappingRoute("m", PortSpec{{From: 9000, To: 9009}}, "10.0.0.2", func(p int) int { return p + 1000 })}, Defaults{}); err != nil {
		t.Errorf("valid kernel route: %v", err)
	}
}

// The config file names of the TS schema reach the route.
func TestKernelRouteConfig(t *testing.T) {
	t.Parallel()
	cfg, err := ParseConfig([]byte(`{"defaults": {"preserveSourceIP": true}, "routes": [{"name": "k", "match": {"ports": [{"from": 5000, "to": 5010}]},
		"action": {"type": "forward", "forwardingEngine": "nftables", "targets": [{"host": ["10.0.0.1", "10.0.0.2"], "port": "preserve"}],
		"nftables": {"protocol": "udp", "maxRate": "100/second"}}}]}`), FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	opts := cfg.Options()
	routes, err := CompileRoutes(opts.Routes, opts.Defaults)
	if err != nil {
		t.Fatal(err)
	}
	k := routes[0].state.kernel
	if k == nil || k.Protocol != "udp" || !k.PreserveSourceIP || len(k.Hosts) != 2 || k.Port != 0 || k.MaxRate.Count != 100 {
		t.Errorf("kernel route %+v", k)
	}
	_, err = ParseConfig([]byte(`{"routes": [{"name": "k", "match": {"ports": 1}, "action": {"type": "forward", "nftables": {"tableName": "x"}}}]}`), FormatJSON)
	if err == nil || !strings.Contains(err.Error(), "Options.NftablesTable") {
		t.Errorf("tableName: err = %v, want it explained", err)
	}
}
