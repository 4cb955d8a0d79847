package smartproxy

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Load balancing of forward routes. A route forwards to the hosts of its
// first target (by priority); action.loadBalancing chooses among them and
// the proxy's health registry (health.go) takes failing hosts out.

// ErrNoHealthyTarget is returned by target selection when every host of
// the route's target is excluded: down for active health checks, in the
// backoff after failed connects, or already tried for this connection. A
// TCP client then is closed at once; the HTTP layer answers 502/503.
var ErrNoHealthyTarget = errors.New("smartproxy: no healthy target")

// lbAlgorithm is a compiled action.loadBalancing.algorithm.
type lbAlgorithm uint8

const (
	lbRoundRobin lbAlgorithm = iota
	lbLeastConnections
	lbIPHash
	lbRandom
)

var lbAlgorithms = map[Algorithm]lbAlgorithm{
	"":                  lbRoundRobin,
	"round-robin":       lbRoundRobin,
	"least-connections": lbLeastConnections,
	"ip-hash":           lbIPHash,
	"random":            lbRandom,
}

// Health-check defaults, as in the TS library.
const (
	defaultCheckInterval  = 10 * time.Second
	defaultCheckTimeout   = 2 * time.Second
	defaultUnhealthyAfter = 3
	defaultHealthyAfter   = 2
)

// healthCheckConfig is a validated HealthCheck with defaults applied. It
// is comparable: routes whose configs are equal share one checker per
// target address.
type healthCheckConfig struct {
	path      string
	interval  time.Duration
	timeout   time.Duration
	unhealthy int
	healthy   int
}

// loadBalancer is a route's compiled load-balancing state.
type loadBalancer struct {
	algo  lbAlgorithm
	check *healthCheckConfig // nil: passive health only

	// addrs caches "host:port" of every host of the first target when its
	// port is fixed, so that choosing one allocates nothing. The targets
	// are only known after compileLB (defaults apply), hence the lazy fill.
	addrsOnce sync.Once
	addrs     []string
}

// compileLB validates action.loadBalancing. Every route gets a balancer
// (round-robin by default), so selection needs no nil checks.
func (v *routeValidator) compileLB(a *RouteAction) *loadBalancer {
	lb := &loadBalancer{}
	cfg := a.LoadBalancing
	if cfg == nil {
		return lb
	}
	algo, ok := lbAlgorithms[cfg.Algorithm]
	if !ok {
		v.fail("action.loadBalancing.algorithm", fmt.Errorf("unknown algorithm %q (want round-robin, least-connections, ip-hash or random)", cfg.Algorithm))
	}
	lb.algo = algo
	hc := cfg.HealthCheck
	if hc == nil {
		return lb
	}
	if a.Type == ActionSocketHandler {
		v.fail("action.loadBalancing.healthCheck", errors.New("needs a forward action: a socket-handler route has no targets to check"))
	}
	c := &healthCheckConfig{
		path:      hc.Path,
		interval:  hc.Interval.Duration(),
		timeout:   hc.Timeout.Duration(),
		unhealthy: hc.UnhealthyThreshold,
		healthy:   hc.HealthyThreshold,
	}
	const f = "action.loadBalancing.healthCheck."
	if c.path != "" && (!strings.HasPrefix(c.path, "/") || strings.ContainsAny(c.path, " \t\r\n")) {
		v.fail(f+"path", fmt.Errorf("must be an absolute request path such as /health, got %q", c.path))
	}
	check := func(field string, bad bool, val any) {
		if bad {
			v.fail(f+field, fmt.Errorf("must not be negative, got %v", val))
		}
	}
	check("interval", c.interval < 0, hc.Interval)
	check("timeout", c.timeout < 0, hc.Timeout)
	check("unhealthyThreshold", c.unhealthy < 0, c.unhealthy)
	check("healthyThreshold", c.healthy < 0, c.healthy)
	c.interval = cmpOr(c.interval, defaultCheckInterval)
	c.timeout = cmpOr(c.timeout, defaultCheckTimeout)
	c.unhealthy = cmpOr(c.unhealthy, defaultUnhealthyAfter)
	c.healthy = cmpOr(c.healthy, defaultHealthyAfter)
	lb.check = c
	return lb
}

// cmpOr returns v, or def when v is zero or negative (negative values were
// reported already; the default keeps the rest of validation going).
func cmpOr[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// pickBackend chooses the backend "host:port" for one connection or
// request on route: among the hosts of its first target (by priority), or
// the one host its HostFunc returns, with the port from PortFunc, Port or,
// for PreservePort, the port the client connected to. Addresses in tried
// (earlier attempts of the same connection or request) and targets that
// are down, for active health checks or in a backoff after failed
// connects, are skipped. It returns ErrNoHealthyTarget when none is left.
// It allocates nothing for a fixed port and round-robin, least-connections
// or ip-hash.
func (p *Proxy) pickBackend(route *Route, rc *RouteContext, tried []string) (string, error) {
	return selectBackend(route, 0, rc, tried, p.health)
}

// pickBackendFor is pickBackend for the route's target number target (a
// target chosen by an HTTP sub-match): same algorithm and health.
func (p *Proxy) pickBackendFor(route *Route, target int, rc *RouteContext, tried []string) (string, error) {
	return selectBackend(route, target, rc, tried, p.health)
}

// candidates describes the hosts one selection chooses among.
type candidates struct {
	hosts []string // the target's hosts, or the one HostFunc returned
	addrs []string // cached addresses (fixed port), else nil
	port  string   // the resolved port when addrs is nil
	tried []string
	reg   *healthRegistry // nil: everything is up and idle
	now   int64           // unix nanoseconds, read once when needed
}

// addr returns host i's "host:port".
func (c *candidates) addr(i int) string {
	if c.addrs != nil {
		return c.addrs[i]
	}
	return net.JoinHostPort(c.hosts[i], c.port)
}

// usable reports whether host i may be chosen, with its address and its
// health entry (nil when the registry knows nothing of it: up and idle).
func (c *candidates) usable(i int) (string, *targetHealth, bool) {
	a := c.addr(i)
	for _, t := range c.tried {
		if t == a {
			return a, nil, false
		}
	}
	if c.reg == nil {
		return a, nil, true
	}
	h := c.reg.lookup(a)
	if h == nil {
		return a, nil, true
	}
	return a, h, h.up(&c.now)
}

func selectBackend(route *Route, target int, rc *RouteContext, tried []string, reg *healthRegistry) (string, error) {
	st := route.state
	if target >= len(st.targets) {
		return "", fmt.Errorf("route %q has no target %d", route.Name, target)
	}
	t := &st.targets[target]
	lb := st.lb
	c := candidates{hosts: t.Host, tried: tried, reg: reg}
	fixedPort := t.PortFunc == nil && t.Port != PreservePort
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
	if t.HostFunc != nil {
		host := t.HostFunc(rc)
		if host == "" {
			return "", fmt.Errorf("route %q: target HostFunc returned no host", route.Name)
		}
		c.hosts, c.port = []string{host}, strconv.Itoa(port)
		a, _, ok := c.usable(0)
		if !ok {
			return "", ErrNoHealthyTarget
		}
		return a, nil
	}
	if fixedPort && lb != nil && target == 0 { // the cache holds the first target's
		c.addrs = lb.hostAddrs(t)
	} else {
		c.port = strconv.Itoa(port)
	}
	algo := lbRoundRobin
	if lb != nil {
		algo = lb.algo
	}
	n := uint64(len(c.hosts))
	best := -1
	var bestAddr string
	switch algo {
	case lbRoundRobin:
		start := st.rr.Add(1) - 1
		for k := range n {
			if a, _, ok := c.usable(int((start + k) % n)); ok {
				return a, nil
			}
		}
	case lbLeastConnections:
		// Scanning from a rotating start makes ties (idle hosts above all)
		// go round-robin instead of all to the first host.
		start := st.rr.Add(1) - 1
		var least int64
		for k := range n {
			i := int((start + k) % n)
			a, h, ok := c.usable(i)
			if !ok {
				continue
			}
			if act := h.activeConns(); best < 0 || act < least {
				best, bestAddr, least = i, a, act
			}
		}
	case lbIPHash:
		// Rendezvous hashing: each host scores hash(client IP, host) and the
		// highest usable score wins. A client keeps its host while that host
		// is up, falls to its next-highest (deterministic) when it is down,
		// and adding or removing a host moves only the clients it wins or
		// loses. Hashing the host name, not its position, keeps choices
		// stable when the list is reordered.
		seed := hashIP(rc.ClientIP)
		var bestScore uint64
		for i := range c.hosts {
			a, _, ok := c.usable(i)
			if !ok {
				continue
			}
			if s := hashString(seed, c.hosts[i]); best < 0 || s > bestScore {
				best, bestAddr, bestScore = i, a, s
			}
		}
	case lbRandom:
		return c.powerOfTwo()
	}
	if best < 0 {
		return "", ErrNoHealthyTarget
	}
	return bestAddr, nil
}

// powerOfTwo samples two distinct hosts and takes the one with fewer
// active connections: nearly least-connections' balance without scanning
// every host, and no herd on the single least-loaded host.
func (c *candidates) powerOfTwo() (string, error) {
	n := len(c.hosts)
	i := rand.IntN(n)
	ai, hi, oki := c.usable(i)
	if n > 1 {
		j := rand.IntN(n - 1)
		if j >= i {
			j++
		}
		aj, hj, okj := c.usable(j)
		switch {
		case oki && okj:
			if hj.activeConns() < hi.activeConns() {
				return aj, nil
			}
			return ai, nil
		case okj:
			return aj, nil
		}
	}
	if oki {
		return ai, nil
	}
	// Both samples are out: take the first usable host after i.
	for k := 1; k < n; k++ {
		if a, _, ok := c.usable((i + k) % n); ok {
			return a, nil
		}
	}
	return "", ErrNoHealthyTarget
}

// hostAddrs returns the cached addresses of a fixed-port target's hosts.
func (lb *loadBalancer) hostAddrs(t *Target) []string {
	lb.addrsOnce.Do(func() {
		port := strconv.Itoa(int(t.Port))
		lb.addrs = make([]string, len(t.Host))
		for i, h := range t.Host {
			lb.addrs[i] = net.JoinHostPort(h, port)
		}
	})
	return lb.addrs
}

// targetHostCount is how many distinct attempts a connection may make:
// one per host of the first target (a HostFunc names one).
func targetHostCount(route *Route) int {
	if len(route.state.targets) == 0 || route.state.targets[0].HostFunc != nil {
		return 1
	}
	return max(1, len(route.state.targets[0].Host))
}

// FNV-1a, written out so hashing a client allocates nothing, followed by a
// 64-bit finaliser so that hosts differing in one character get unrelated
// scores. Deterministic across processes: proxies behind the same DNS name
// send a client to the same backend.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func hashIP(ip netip.Addr) uint64 {
	h := uint64(fnvOffset)
	b := ip.Unmap().As16()
	for _, c := range b {
		h = (h ^ uint64(c)) * fnvPrime
	}
	return h
}

func hashString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * fnvPrime
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}
