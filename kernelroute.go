package smartproxy

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/gosmartproxy/smartproxy/nftables"
)

// ForwardingEngine says who forwards a route's connections: this process
// ("node", the TS name, or "") or the kernel ("nftables").
type ForwardingEngine string

// The forwarding engines.
const (
	// EngineUserSpace forwards in this process (the TS "node" engine).
	EngineUserSpace ForwardingEngine = "node"
	// EngineNftables has the kernel DNAT the route's packets (package
	// nftables): TCP and UDP, no TLS, HTTP or domain matching.
	EngineNftables ForwardingEngine = "nftables"
)

// NfTablesOptions tune a route forwarded by the kernel (action.nftables).
type NfTablesOptions struct {
	// PreserveSourceIP leaves the client's address on forwarded packets
	// instead of masquerading them; nil means Defaults.PreserveSourceIP.
	// The backend's replies must be routed back through this host (it is
	// the backend's default gateway, or has a route to the clients'
	// networks via this host), or its connections fail.
	PreserveSourceIP *bool `json:"preserveSourceIP,omitempty"`
	// Protocol is "tcp" (default), "udp" or "all" (both).
	Protocol string `json:"protocol,omitempty"`
	// MaxRate limits the route: "N/second" or "N/minute" caps new
	// connections, "N mbytes/second" (also bytes, kbytes) or "10mbps"
	// (megabits; also kbps, gbps) caps bandwidth. See nftables.ParseRate.
	MaxRate string `json:"maxRate,omitempty"`
}

// NfTablesRoute forwards ports to target ("host:port", or an address
// without a port to keep the port the client connected to) in the kernel,
// like the TS createNfTablesRoute. opts may be nil. Restrict clients with
// the route's Security (ipAllowList, ipBlockList).
func NfTablesRoute(name string, ports PortSpec, target string, opts *NfTablesOptions) Route {
	r := NewRoute(name).PortSpec(ports).ForwardTo(target).Route()
	r.Action.ForwardingEngine = EngineNftables
	r.Action.NfTables = opts
	return r
}

// compileKernel checks a route for the nftables engine and converts it;
// nil when the route is a user-space one.
func (v *routeValidator) compileKernel(r *Route, st *routeState, defaults Defaults) *nftables.Route {
	a := &r.Action
	switch a.ForwardingEngine {
	case "", EngineUserSpace:
		if a.NfTables != nil {
			v.fail("action.nftables", errors.New(`needs forwardingEngine "nftables"`))
		}
		if a.ForwardingEngineFallback {
			v.fail("action.forwardingEngineFallback", errors.New(`needs forwardingEngine "nftables"`))
		}
		return nil
	case EngineNftables:
	default:
		v.fail("action.forwardingEngine", fmt.Errorf("unknown engine %q (want node or nftables)", a.ForwardingEngine))
		return nil
	}
	unsupported := func(field string, set bool) {
		if set {
			v.fail(field, errors.New("not supported by the nftables engine (the kernel sees packets, not TLS or HTTP)"))
		}
	}
	m := &r.Match
	unsupported("match.domains", len(m.Domains) > 0)
	unsupported("match.clientIp", len(m.ClientIP) > 0)
	unsupported("match.tlsVersion", len(m.TLSVersion) > 0)
	unsupported("match.path", m.Path != "")
	unsupported("match.headers", len(m.Headers) > 0)
	unsupported("match.method", len(m.Method) > 0)
	unsupported("action.tls", a.TLS != nil)
	unsupported("action.options", a.Options != nil)
	unsupported("action.headers", a.Headers != nil)
	unsupported("action.rewrite", a.Rewrite != nil)
	unsupported("action.redirect", a.Redirect != nil)
	unsupported("action.websocket", a.WebSocket != nil)
	for _, s := range []struct {
		where string
		sec   *RouteSecurity
	}{{"", r.Security}, {" (from defaults)", defaults.Security}} {
		if s.sec == nil {
			continue
		}
		for _, f := range []struct {
			name string
			set  bool
		}{
			{"maxConnections", s.sec.MaxConnections != 0}, {"maxConnectionsPerIP", s.sec.MaxConnectionsPerIP != 0},
			{"connectionRateLimitPerMinute", s.sec.ConnectionRateLimitPerMinute != 0},
			{"basicAuth", s.sec.BasicAuth != nil}, {"jwtAuth", s.sec.JWTAuth != nil}, {"rateLimit", s.sec.RateLimit != nil},
		} {
			if f.set {
				v.fail("security."+f.name, fmt.Errorf("not enforced by the nftables engine%s: use action.nftables.maxRate or a user-space route", s.where))
			}
		}
	}
	if a.Type != ActionForward {
		v.fail("action.type", errors.New(`the nftables engine forwards: want "forward"`))
		return nil
	}
	kr := &nftables.Route{Name: r.Name, Protocol: nftables.Protocol(orDefault(kernelOpts(a).Protocol, "tcp"))}
	switch kr.Protocol {
	case nftables.TCP, nftables.UDP, nftables.All:
	default:
		v.fail("action.nftables.protocol", fmt.Errorf("unknown protocol %q (want tcp, udp or all)", kr.Protocol))
	}
	if a.ForwardingEngineFallback && kr.Protocol == nftables.UDP {
		v.fail("action.forwardingEngineFallback", errors.New("the user-space engine forwards TCP only, not a udp route"))
	}
	for _, p := range r.Match.Ports {
		if p.From >= 1 && p.To <= 65535 && p.From <= p.To {
			kr.Ports = append(kr.Ports, nftables.PortRange{From: uint16(p.From), To: uint16(p.To)})
		}
	}
	v.kernelTarget(r, st, kr)
	kr.PreserveSourceIP = boolOr(kernelOpts(a).PreserveSourceIP, boolOr(defaults.PreserveSourceIP, false))
	if a.ForwardingEngineFallback && kr.PreserveSourceIP {
		// Served in user space, the backend would see the proxy's address
		// where it expects the client's: a backend that trusts the proxy
		// host would widen its access unnoticed.
		v.fail("action.forwardingEngineFallback", errors.New("the user-space engine cannot preserve the source IP (preserveSourceIP): drop one of them"))
	}
	rate, err := nftables.ParseRate(kernelOpts(a).MaxRate)
	if err != nil {
		v.fail("action.nftables.maxRate", err)
	}
	kr.MaxRate = rate
	if a.ForwardingEngineFallback && rate.Kind != nftables.NoRate {
		// Served in user space, the route would lose its cap unnoticed.
		v.fail("action.forwardingEngineFallback", fmt.Errorf("the user-space engine cannot enforce action.nftables.maxRate %q: drop one of them", rate.Text))
	}
	kr.Allow, kr.Block = st.allow, st.block
	if _, err := st.allow.Ranges(); err != nil {
		v.fail("security.ipAllowList", fmt.Errorf("%w: nftables sets hold address intervals", err))
	}
	if _, err := st.block.Ranges(); err != nil {
		v.fail("security.ipBlockList", fmt.Errorf("%w: nftables sets hold address intervals", err))
	}
	return kr
}

// kernelTarget fills in the hosts, port and balancing of a kernel route.
func (v *routeValidator) kernelTarget(r *Route, st *routeState, kr *nftables.Route) {
	if len(st.targets) != 1 {
		v.fail("action.targets", fmt.Errorf("the nftables engine takes one target (with one or more hosts), got %d", len(st.targets)))
		return
	}
	t := st.targets[0]
	field := "action.targets[0]"
	if t.HostFunc != nil {
		v.fail(field+".host", errors.New("a HostFunc cannot run in the kernel: list the hosts"))
	}
	if t.Match != nil {
		v.fail(field+".match", errors.New("not supported by the nftables engine"))
	}
	for i, h := range t.Host {
		a, err := netip.ParseAddr(h)
		if err != nil || a.Zone() != "" {
			v.fail(fmt.Sprintf("%s.host[%d]", field, i), fmt.Errorf("%q is not an IP address: the kernel forwards to addresses, not names", h))
			continue
		}
		kr.Hosts = append(kr.Hosts, a.Unmap())
	}
	switch {
	case t.PortFunc != nil:
		// Evaluated once per port now: the kernel maps ports, it cannot
		// call code per connection. Only Port and RouteName are set.
		kr.PortMap = map[uint16]uint16{}
		r.Match.Ports.Each(func(p int) bool {
			to := t.PortFunc(&RouteContext{Port: p, RouteName: r.Name})
			if to < 1 || to > 65535 {
				v.fail(field+".port", fmt.Errorf("the port function maps port %d to %d, out of range 1-65535", p, to))
				return false
			}
			kr.PortMap[uint16(p)] = uint16(to)
			return true
		})
	case t.Port != PreservePort && t.Port >= 1 && t.Port <= 65535:
		kr.Port = uint16(t.Port)
	}
	if lb := r.Action.LoadBalancing; lb != nil {
		switch lb.Algorithm {
		case "", AlgorithmRoundRobin:
			kr.Balance = nftables.RoundRobin
		case AlgorithmRandom:
			kr.Balance = nftables.Random
		default:
			v.fail("action.loadBalancing.algorithm", fmt.Errorf("%q is not supported by the nftables engine (want round-robin or random)", lb.Algorithm))
		}
		if lb.HealthCheck != nil {
			v.fail("action.loadBalancing.healthCheck", errors.New("not supported by the nftables engine: the kernel does not check targets"))
		}
	}
}

func kernelOpts(a *RouteAction) NfTablesOptions {
	if a.NfTables == nil {
		return NfTablesOptions{}
	}
	return *a.NfTables
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func boolOr(b *bool, def bool) bool {
	if b == nil {
		return def
	}
	return *b
}
