package smartproxy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/gosmartproxy/smartproxy/internal/balance"
)

// Load balancing of forward routes. A route forwards to the hosts of its
// first target (by priority), or of the target an HTTP sub-match chose;
// action.loadBalancing chooses among them with one of internal/balance's
// selectors, and the proxy's health registry (a balance.Health) takes
// failing hosts out. This file turns routes into balance's inputs: the
// compiled policy and addresses, and per connection a balance.Pool.

// ErrNoHealthyTarget is returned by target selection when every host of
// the route's target is excluded: down for active health checks, in the
// backoff after failed connects, or already tried for this connection. A
// TCP client then is closed at once; the HTTP layer answers 502/503.
var ErrNoHealthyTarget = errors.New("smartproxy: no healthy target")

// loadBalancer is a route's compiled load balancing.
type loadBalancer struct {
	// sel is the route's policy, shared by all its targets and
	// connections (its round-robin position is the route's).
	sel   balance.Selector
	check *balance.CheckConfig // nil: passive health only
	// addrs holds, per target, the addresses known before any
	// connection, so that selection joins no strings per connection.
	addrs []targetAddrs
}

// targetAddrs are a target's "host:port" addresses, one per host, as far
// as they are known at compile time: none when a function chooses the
// host or port per connection.
type targetAddrs struct {
	fixed  []string         // for a fixed port
	byPort map[int][]string // for PreservePort: per route port, the first maxPreservedPorts
}

// maxPreservedPorts bounds the ports a PreservePort target's addresses
// are precomputed and health-checked for: a route over a wide range gets
// its first ports precomputed and checked, not tens of thousands of
// addresses and goroutines; its other ports join addresses per connection.
const maxPreservedPorts = 256

// compileLB validates r's action.loadBalancing and precomputes the
// addresses of targets, r's compiled targets (sorted, defaults applied).
// Every route gets a balancer (round-robin by default), so selection needs
// no nil checks.
func (v *routeValidator) compileLB(r *Route, targets []Target) *loadBalancer {
	a := &r.Action
	lb := &loadBalancer{addrs: make([]targetAddrs, len(targets))}
	for i, t := range targets {
		switch {
		case t.HostFunc != nil || t.PortFunc != nil:
			// chosen per connection: nothing to precompute
		case t.Port != PreservePort:
			lb.addrs[i].fixed = balance.JoinAll(t.Host, strconv.Itoa(int(t.Port)))
		default:
			byPort := make(map[int][]string)
			r.Match.Ports.Each(func(port int) bool {
				byPort[port] = balance.JoinAll(t.Host, strconv.Itoa(port))
				return len(byPort) < maxPreservedPorts
			})
			lb.addrs[i].byPort = byPort
		}
	}
	algorithm := ""
	if a.LoadBalancing != nil {
		algorithm = string(a.LoadBalancing.Algorithm)
	}
	sel, ok := balance.NewSelector(algorithm)
	if !ok {
		v.fail("action.loadBalancing.algorithm", fmt.Errorf("unknown algorithm %q (want round-robin, least-connections, ip-hash or random)", algorithm))
		sel = new(balance.RoundRobin) // keeps the rest of validation going
	}
	lb.sel = sel
	if a.LoadBalancing == nil || a.LoadBalancing.HealthCheck == nil {
		return lb
	}
	hc := a.LoadBalancing.HealthCheck
	if a.Type == ActionSocketHandler {
		v.fail("action.loadBalancing.healthCheck", errors.New("needs a forward action: a socket-handler route has no targets to check"))
	}
	c := balance.CheckConfig{
		Path:           hc.Path,
		Interval:       hc.Interval.Duration(),
		Timeout:        hc.Timeout.Duration(),
		UnhealthyAfter: hc.UnhealthyThreshold,
		HealthyAfter:   hc.HealthyThreshold,
	}
	const f = "action.loadBalancing.healthCheck."
	if c.Path != "" && (!strings.HasPrefix(c.Path, "/") || strings.ContainsAny(c.Path, " \t\r\n")) {
		v.fail(f+"path", fmt.Errorf("must be an absolute request path such as /health, got %q", c.Path))
	}
	check := func(field string, bad bool, val any) {
		if bad {
			v.fail(f+field, fmt.Errorf("must not be negative, got %v", val))
		}
	}
	check("interval", c.Interval < 0, hc.Interval)
	check("timeout", c.Timeout < 0, hc.Timeout)
	check("unhealthyThreshold", c.UnhealthyAfter < 0, c.UnhealthyAfter)
	check("healthyThreshold", c.HealthyAfter < 0, c.HealthyAfter)
	c = c.WithDefaults() // a negative value stays, but its route set is refused
	lb.check = &c
	return lb
}

// pick chooses the backend "host:port" for one connection (TCP) or one
// attempt of a request (HTTP) on route: among the hosts of its target
// number target (0, or the one an HTTP sub-match chose), or the one host
// its HostFunc returns, with the port from PortFunc, Port or, for
// PreservePort, the port the client connected to. Addresses in tried
// (earlier attempts of the same connection or request) and those reg has
// down are skipped; reg nil counts every host up and idle. It returns
// ErrNoHealthyTarget when none is left. It allocates nothing for a target
// whose addresses were precomputed: a host list with a fixed port, or with
// PreservePort on the route's first maxPreservedPorts ports.
func pick(route *Route, target int, rc *RouteContext, tried []string, reg *balance.Health) (string, error) {
	st := route.state
	if target >= len(st.targets) {
		return "", fmt.Errorf("route %q has no target %d", route.Name, target)
	}
	t, known := &st.targets[target], &st.lb.addrs[target]
	sel := st.lb.sel
	pool := balance.Pool{Hosts: t.Host, Addrs: known.fixed, Tried: tried, Client: rc.ClientIP}
	if known.byPort != nil {
		pool.Addrs = known.byPort[rc.Port]
	}
	if pool.Addrs == nil {
		port := int(t.Port)
		switch {
		case t.PortFunc != nil:
			port = t.PortFunc(rc)
		case t.Port == PreservePort:
			port = rc.Port
		}
		if port < 1 || port > 65535 {
			return "", fmt.Errorf("route %q: target resolved to invalid port %d", route.Name, port)
		}
		pool.Port = strconv.Itoa(port)
	}
	if t.HostFunc != nil {
		host := t.HostFunc(rc)
		if host == "" {
			return "", fmt.Errorf("route %q: target HostFunc returned no host", route.Name)
		}
		// One host: nothing for the route's policy to choose.
		pool.Hosts, sel = []string{host}, balance.First{}
	}
	addr, ok := balance.Pick(sel, &pool, reg)
	if !ok {
		return "", ErrNoHealthyTarget
	}
	return addr, nil
}

// hostCount is how many distinct attempts a connection or request to the
// route's target number target may make: one per host (a HostFunc names
// one).
func hostCount(route *Route, target int) int {
	if target >= len(route.state.targets) || route.state.targets[target].HostFunc != nil {
		return 1
	}
	return max(1, len(route.state.targets[target].Host))
}
